"""Does the lab measure what the kernel's own selftest measures? simult_flows.sh against the five simult-* cases.

On each kernel, in a QEMU guest, interleaved round by round (the order of the
two sides alternates): one run of the kernel's simult_flows.sh (`mptcplab
selftest simult_flows`, its ten transfers), and the lab's five simult-* cases
in both directions (`mptcplab run --kernel`, the selftest's forward lines are
the lab's downloads: `--set workload.direction=download`). Prints per case and
direction the median time of each side, lab / selftest raw, and lab /
(selftest - 200 ms): `mptcp_connect -j` writes 100 bytes and sleeps 200 ms
inside the interval the script times, which the lab's transfer does not have.

Everything is stored in --db (a fresh SQLite file by default), so the table
can be re-read with `mptcplab compare`/`history`. Holds
/tmp/mptcplab-heavy.lock while a kernel is measured.
Usage: python bench/selftest_parity.py --kernel 6.12.117 [--kernel 7.2] [--rounds 3] [--db PATH] [--no-lock]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heavy import heavy_lock  # bench/heavy.py: the shared heavy-work lock

from mptcplab.selftests.simult_flows import CASES, JOIN_PAUSE_MS

CLI = str(Path(sys.executable).parent / "mptcplab")


def cli_json(*args: str) -> dict:
    """Run one mptcplab command with --json; its document (exit 1, a failed repetition, still has one)."""
    proc = subprocess.run([CLI, *args, "--json"], capture_output=True, text=True)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"error: mptcplab {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def runs_of(doc: dict) -> list[dict]:
    return doc["runs"] if "runs" in doc else [doc]


def completed_s(run: dict) -> list[float]:
    return [r["completion_s"] for r in run["repetitions"] if r["status"] == "completed" and not r.get("baseline_path")]


def measure(kernel: str, rounds: int, db: str, say) -> dict[tuple[str, str], dict[str, list[float]]]:
    """{(lab scenario, direction): {"selftest": [s...], "lab": [s...]}} over `rounds` interleaved rounds."""
    times: dict[tuple[str, str], dict[str, list[float]]] = {
        (c.scenario, d): {"selftest": [], "lab": []} for c in CASES for d in ("download", "upload")}
    scenarios = [c.scenario for c in CASES]
    for r in range(rounds):
        def selftest() -> None:
            t0 = time.monotonic()
            for run in runs_of(cli_json("selftest", "simult_flows", "--kernel", kernel, "--repeat", "1", "--db", db)):
                sel = run["environment"]["selftest"]
                times[(sel["scenario"], sel["direction"])]["selftest"] += completed_s(run)
            say(f"  round {r + 1}: selftest run in {time.monotonic() - t0:.0f} s")

        def lab() -> None:
            t0 = time.monotonic()
            for direction in ("upload", "download"):
                extra = ["--set", "workload.direction=download"] if direction == "download" else []
                doc = cli_json("run", *scenarios, "--kernel", kernel, "--repeat", "1", "--db", db, *extra)
                for run in runs_of(doc):
                    times[(run["scenario"], direction)]["lab"] += completed_s(run)
            say(f"  round {r + 1}: lab's 10 transfers in {time.monotonic() - t0:.0f} s")

        for side in ((selftest, lab) if r % 2 == 0 else (lab, selftest)):
            side()
    return times


def from_store(db: str) -> dict[str, dict[tuple[str, str], dict[str, list[float]]]]:
    """What a store holds, as `measure` returns it per kernel release: the selftest runs (environment.selftest) and
    the lab's simult-* runs (their stored content says the direction)."""
    from mptcplab.store import open_store
    from mptcplab.store.store import RunFilter

    store = open_store(db, create=False)
    out: dict[str, dict[tuple[str, str], dict[str, list[float]]]] = {}
    for summary in store.list_runs(RunFilter()):
        uid = getattr(summary, "run_id", None) or getattr(summary, "uid")
        result = store.load_result(uid)
        sel = result.environment.get("selftest")
        if sel:
            key, side = (sel["scenario"], sel["direction"]), "selftest"
        elif result.scenario in {c.scenario for c in CASES}:
            content = store.scenario_content(uid) or {}
            key, side = (result.scenario, (content.get("workload") or {}).get("direction", "upload")), "lab"
        else:
            continue
        cell = out.setdefault(result.kernel, {(c.scenario, d): {"selftest": [], "lab": []} for c in CASES for d in ("download", "upload")})
        cell[key][side] += completed_s(result.to_json(timeseries=False))
    return out


def table(kernel: str, times: dict[tuple[str, str], dict[str, list[float]]]) -> str:
    rows = [f"kernel {kernel}: median ms [min-max] (n), lab / selftest raw and with the selftest's {JOIN_PAUSE_MS} ms pause "
            "taken off", "",
            "| case | direction | selftest ms | lab ms | lab / selftest | lab / (selftest - 200 ms) |",
            "|---|---|---|---|---|---|"]
    for (scenario, direction), sides in times.items():
        st, lab = sides["selftest"], sides["lab"]
        if not st or not lab:
            rows.append(f"| {scenario} | {direction} | {len(st)} done | {len(lab)} done | - | - |")
            continue
        s, b = statistics.median(st) * 1000, statistics.median(lab) * 1000
        rows.append(f"| {scenario} | {direction} | {s:.0f} [{min(st) * 1000:.0f}-{max(st) * 1000:.0f}] (n={len(st)}) | "
                    f"{b:.0f} [{min(lab) * 1000:.0f}-{max(lab) * 1000:.0f}] (n={len(lab)}) | {b / s:.3f} | "
                    f"{b / (s - JOIN_PAUSE_MS):.3f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append", default=[], help="a kernel (cached or fetched); repeatable")
    ap.add_argument("--table-only", action="store_true", help="measure nothing: print the tables of what --db holds")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per kernel (default 3)")
    ap.add_argument("--db", help="the results store (default: a new SQLite file)")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds /tmp/mptcplab-heavy.lock already")
    args = ap.parse_args()
    if args.table_only:
        if not args.db:
            raise SystemExit("error: --table-only reads --db: give the store a measurement wrote")
        for release, times in sorted(from_store(args.db).items()):
            print(table(release, times) + "\n")
        return
    if not args.kernel:
        raise SystemExit("error: say which kernels: --kernel 6.12.117 [--kernel 7.3.4]")
    db = args.db or str(Path(tempfile.mkdtemp(prefix="selftest-parity-")) / "parity.db")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    say(f"storing in {db}")
    for kernel in args.kernel:
        t0 = time.monotonic()
        with heavy_lock() if not args.no_lock else contextlib.nullcontext():
            say(f"kernel {kernel}: {args.rounds} rounds")
            times = measure(kernel, args.rounds, db, say)
        print(table(kernel, times))
        print(f"\nwall time on {kernel}: {time.monotonic() - t0:.0f} s\n", flush=True)


if __name__ == "__main__":
    main()
