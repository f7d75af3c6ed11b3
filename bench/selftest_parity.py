"""Does the lab measure what the kernel's own selftest measures? simult_flows.sh against the five simult-* cases.

On each kernel (a QEMU guest or a UML kernel, whichever executor takes it),
round by round (the order of the two sides alternates): one run of the
kernel's simult_flows.sh (`mptcplab selftest simult_flows`, its ten
transfers), and the lab's five simult-* cases in both directions (`mptcplab
run --kernel`; the selftest's forward lines are the lab's downloads: `--set
workload.direction=download`). Prints per case and direction the median time
of each side, lab / selftest raw, and lab / (selftest - 200 ms):
`mptcp_connect -j` writes 100 bytes and sleeps 200 ms inside the interval the
script times, which the lab's transfer does not have. Beside each lab time,
its evidence: median TCP retransmissions over both subflows and the MPRstTx
count over all its repetitions (a reset join, issue 22).

Link emulation: simult_flows.sh shapes every path with netem in the kernel under
test (`netem rate R delay D limit 50`, on both ends of each path), so the lab
side defaults to `--link-backend netem` (netem's delay with a tbf child for the
rate and queue): the same kind of in-kernel qdisc emulation on both sides,
whatever the executor. In a QEMU guest that is what `auto` picks anyway; under
UML `auto` means `wire` (userspace forwarders), which the lab prefers there
because netem without processing delay keeps packets in exact step and shifts
MPTCP's retransmission timing (docs: NETEM_NOTE); but the script has exactly
that artefact too, so comparing the lab's wire with the script's netem would
mix an emulator difference into the parity. The two still differ in how they
shape the rate (a token bucket against netem's own `rate`) and in the queue
(the lab's 100 ms at the rate against the script's packet limits): the
README's UML parity section names the cases where that shows. `--link-backend
wire` (repeatable, one table per backend) measures the lab's UML default as well.

Rounds and seeds: round r (0-based) runs both sides with seed `--seed + r`
(`selftest simult_flows --seed`, the lab's `--set run.seed`). Under UML's
deterministic time a repetition with the same seed is the same to the
nanosecond, so rounds differ only by their seeds, and the same command gives
the same table again; in a QEMU guest the seed is ignored and rounds differ by
the host's noise. What a seed changes differs between the sides: the
script's `mptcp_connect` draws every write and read size with rand() (up to
64 KiB, do_rnd_write/do_rnd_read), seeded from getrandom(), so each round is
another draw and the script's median is over those draws; the lab's sender
writes fixed-size chunks, and on these lossless paths nothing random (ports,
MPTCP keys, ISNs) changes its timing, so every round gives the lab the same
time to the nanosecond (measured: 8 seeds, one value per case and backend).
Under UML interleaving changes nothing (results do not depend on load); it is
kept for QEMU.

Everything is stored in --db (a fresh SQLite file by default), so the table
can be re-read with `--table-only` or `mptcplab compare`/`history`. Holds
/tmp/mptcplab-heavy.lock while a kernel is measured.
Usage: python bench/selftest_parity.py --kernel 6.12.117 [--kernel 7.3.4-uml] [--rounds 3] [--seed 1]
       [--link-backend netem] [--link-backend wire] [--db PATH] [--no-lock] [--table-only]
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


def completed(run: dict) -> list[dict]:
    """The MPTCP repetitions of a run document that completed."""
    return [r for r in run["repetitions"] if r["status"] == "completed" and not r.get("baseline_path")]


def evidence(rep: dict) -> tuple[int, int]:
    """(TCP retransmissions over every subflow, MPRstTx) of one lab repetition."""
    return (sum(int(sf.get("retransmits") or 0) for sf in rep.get("subflows") or []),
            int((rep.get("metrics") or {}).get("mp_rst_tx") or 0))


Times = dict[tuple[str, str], dict[str, list]]


def empty(backends: list[str]) -> Times:
    return {(c.scenario, d): {side: [] for side in ("selftest", *(f"lab {b}" for b in backends))}
            for c in CASES for d in ("download", "upload")}


def measure(kernel: str, rounds: int, seed: int, backends: list[str], db: str, say) -> tuple[Times, dict[str, float]]:
    """({(lab scenario, direction): {"selftest": [s...], "lab BACKEND": [(s, retransmits, mp_rst_tx)...]}}, wall
    seconds per side) over `rounds` interleaved rounds, round r with seed `seed + r`."""
    times = empty(backends)
    walls = {side: 0.0 for side in ("selftest", *(f"lab {b}" for b in backends))}
    scenarios = [c.scenario for c in CASES]
    for r in range(rounds):
        def selftest() -> None:
            t0 = time.monotonic()
            for run in runs_of(cli_json("selftest", "simult_flows", "--kernel", kernel, "--repeat", "1", "--seed", str(seed + r),
                                        "--db", db)):
                sel = run["environment"]["selftest"]
                times[(sel["scenario"], sel["direction"])]["selftest"] += [x["completion_s"] for x in completed(run)]
            walls["selftest"] += time.monotonic() - t0
            say(f"  round {r + 1} (seed {seed + r}): selftest run in {time.monotonic() - t0:.0f} s")

        def lab(backend: str) -> None:
            t0 = time.monotonic()
            for direction in ("upload", "download"):
                extra = ["--set", "workload.direction=download"] if direction == "download" else []
                doc = cli_json("run", *scenarios, "--kernel", kernel, "--repeat", "1", "--db", db, "--no-timeseries",
                               "--link-backend", backend, "--set", f"run.seed={seed + r}", *extra)
                for run in runs_of(doc):
                    times[(run["scenario"], direction)][f"lab {backend}"] += [(x["completion_s"], *evidence(x)) for x in completed(run)]
            walls[f"lab {backend}"] += time.monotonic() - t0
            say(f"  round {r + 1} (seed {seed + r}): lab's 10 transfers ({backend}) in {time.monotonic() - t0:.0f} s")

        sides = [selftest, *(lambda b=b: lab(b) for b in backends)]
        for side in (sides if r % 2 == 0 else sides[::-1]):
            side()
    return times, walls


def from_store(db: str) -> dict[str, Times]:
    """What a store holds, as `measure` returns it per kernel release: the selftest runs (environment.selftest) and
    the lab's simult-* runs per link backend (their stored content says the direction)."""
    from mptcplab.store import open_store
    from mptcplab.store.store import RunFilter

    store = open_store(db, create=False)
    out: dict[str, Times] = {}
    loaded = []
    for summary in store.list_runs(RunFilter()):
        uid = getattr(summary, "run_id", None) or getattr(summary, "uid")
        loaded.append((uid, store.load_result(uid)))
    backends = sorted({str(r.environment.get("link_backend")) for _, r in loaded
                       if not r.environment.get("selftest") and r.scenario in {c.scenario for c in CASES}})
    for uid, result in loaded:
        sel = result.environment.get("selftest")
        doc = result.to_json(timeseries=False)
        if sel:
            cell = out.setdefault(result.kernel, empty(backends))
            cell[(sel["scenario"], sel["direction"])]["selftest"] += [x["completion_s"] for x in completed(doc)]
        elif result.scenario in {c.scenario for c in CASES}:
            content = store.scenario_content(uid) or {}
            key = (result.scenario, (content.get("workload") or {}).get("direction", "upload"))
            cell = out.setdefault(result.kernel, empty(backends))
            cell[key][f"lab {result.environment.get('link_backend')}"] += [(x["completion_s"], *evidence(x)) for x in completed(doc)]
    return out


def table(kernel: str, times: Times, backend: str) -> str:
    """The parity table of one kernel and the lab's link backend `backend`, as Markdown."""
    lab_side = f"lab {backend}"
    rows = [f"kernel {kernel}, lab on {backend}: median ms [min-max] (n), lab / selftest raw and with the selftest's "
            f"{JOIN_PAUSE_MS} ms pause taken off; the lab's median TCP retransmissions and its MPRstTx in all repetitions", "",
            "| case | direction | selftest ms | lab ms | lab / selftest | lab / (selftest - 200 ms) | lab retrans | lab MPRstTx |",
            "|---|---|---|---|---|---|---|---|"]
    for (scenario, direction), sides in times.items():
        st, lab = sides["selftest"], [x[0] for x in sides.get(lab_side, [])]
        if not st or not lab:
            rows.append(f"| {scenario} | {direction} | {len(st)} done | {len(lab)} done | - | - | - | - |")
            continue
        s, b = statistics.median(st) * 1000, statistics.median(lab) * 1000
        retrans = statistics.median(x[1] for x in sides[lab_side])
        rst = sum(x[2] for x in sides[lab_side])
        rows.append(f"| {scenario} | {direction} | {s:.0f} [{min(st) * 1000:.0f}-{max(st) * 1000:.0f}] (n={len(st)}) | "
                    f"{b:.0f} [{min(lab) * 1000:.0f}-{max(lab) * 1000:.0f}] (n={len(lab)}) | {b / s:.3f} | "
                    f"{b / (s - JOIN_PAUSE_MS):.3f} | {retrans:g} | {rst} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append", default=[], help="a kernel (cached or fetched; QEMU or UML); repeatable")
    ap.add_argument("--table-only", action="store_true", help="measure nothing: print the tables of what --db holds")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per kernel (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="round r runs both sides with seed SEED + r (UML; default 1)")
    ap.add_argument("--link-backend", action="append", default=[], help="the lab's link backend (default netem); repeatable")
    ap.add_argument("--db", help="the results store (default: a new SQLite file)")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds /tmp/mptcplab-heavy.lock already")
    args = ap.parse_args()
    backends = args.link_backend or ["netem"]
    if args.table_only:
        if not args.db:
            raise SystemExit("error: --table-only reads --db: give the store a measurement wrote")
        for release, times in sorted(from_store(args.db).items()):
            for backend in sorted({side[4:] for cell in times.values() for side in cell if side.startswith("lab ")}):
                print(table(release, times, backend) + "\n")
        return
    if not args.kernel:
        raise SystemExit("error: say which kernels: --kernel 6.12.117 [--kernel 7.3.4-uml]")
    db = args.db or str(Path(tempfile.mkdtemp(prefix="selftest-parity-")) / "parity.db")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    say(f"storing in {db}")
    for kernel in args.kernel:
        with heavy_lock() if not args.no_lock else contextlib.nullcontext():
            t0 = time.monotonic()
            say(f"kernel {kernel}: {args.rounds} rounds, seeds {args.seed}-{args.seed + args.rounds - 1}, lab on {', '.join(backends)}")
            times, walls = measure(kernel, args.rounds, args.seed, backends, db, say)
            wall = time.monotonic() - t0
        for backend in backends:
            print(table(kernel, times, backend) + "\n")
        print(f"wall time on {kernel}: {wall:.0f} s under the lock (" + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
              + ")\n", flush=True)


if __name__ == "__main__":
    main()
