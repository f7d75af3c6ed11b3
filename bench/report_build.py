"""How long `mptcplab report` takes for 1,000 stored runs: a full build, an incremental one, and a reference.

The store is a temporary SQLite file filled through `Store.save_result` with
synthetic runs shaped like a real one: `bench/data/two-paths-run.json` is a
real `mptcplab run two-paths --repeat 5 --json` (5 repetitions, 20 Hz time
series, MIB deltas, the wire emulator's counters) from this machine. Each
synthetic run copies it with another scenario (the built-in scenarios'
stored content, their path names), kernel, label, tags and start time, its
values and time series scaled by a per-(scenario, kernel) factor (one
kernel regresses one scenario by 10%) and 2% noise, and a cwnd series per
path (the shape predates it: rate x RTT / MSS); about 3% of runs carry a
failed repetition. The report searches every index row for change points.

Timed, as a user runs them (the CLI in a subprocess, imports included):
  full         `mptcplab report OUT` into an empty OUT
  incremental  the same after one new run was stored (its run page, its scenario's history pages, the index pages)
  unchanged    the same again with nothing new
  reference    `mptcplab export --format json` of the same store (reads every run whole once)
and prints each with its ratio to the reference.

    python bench/report_build.py [--runs 1000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mptcplab.result import RunResult
from mptcplab.scenario import load_scenario
from mptcplab.store import open_store

SHAPE = Path(__file__).with_name("data") / "two-paths-run.json"
SCENARIOS = ["two-paths", "rtt-mismatch", "download", "failover", "cellular", "demo"]
KERNELS = ["6.1.0-50-cloud-amd64", "6.12.117+deb13-cloud-amd64", "6.18.44-fc-v669", "7.2.0-1-cloud-amd64"]
#: (scenario, kernel) -> factor on goodput: the regression the index should show in red
FACTORS = {("rtt-mismatch", "7.2.0-1-cloud-amd64"): 0.90, ("download", "6.18.44-fc-v669"): 1.08}


def _rename(mapping: dict, names: dict[str, str]) -> dict:
    return {names.get(k, k): v for k, v in mapping.items()}


def synthetic_run(shape: dict, scenario: str, content: dict, kernel: str, i: int, rng: random.Random,
                  t0: float) -> RunResult:
    """One run copied from the real shape, moved to another scenario, kernel and time, values varied."""
    doc = json.loads(json.dumps(shape))
    paths = [p["name"] for p in content["path"]][:2]
    names = dict(zip(["a", "b"], paths + ["a", "b"][len(paths):]))
    factor = FACTORS.get((scenario, kernel), 1.0)
    doc.update(run_id=secrets.token_hex(5), scenario=scenario, kernel=kernel,
               scenario_hash=hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16], label=f"ci-{i // 25}",
               started_at=t0 + i * 90, ended_at=t0 + i * 90 + 25, status="completed", errors=[])
    env = doc["environment"]
    env.update(kernel_release=kernel, tags={"suite": "quick" if i % 3 else "full", "host": f"lab{i % 2 + 1}"})
    for stats in env.get("link_stats") or []:
        stats["paths"] = _rename(stats.get("paths") or {}, names)
    for rep in doc["repetitions"]:
        noise = factor * rng.gauss(1.0, 0.02)
        rep["goodput_mbps"] = round(rep["goodput_mbps"] * noise, 3)
        rep["completion_s"] = round(rep["completion_s"] / noise, 4)
        rep["started_at"] = doc["started_at"] + 4 * rep["index"]
        for sf in rep["subflows"]:
            sf["path"] = names.get(sf["path"], sf["path"])
            sf["retransmits"] = max(0, int(sf["retransmits"] * rng.uniform(0.5, 1.5)))
        ts = rep.get("timeseries")
        if ts:
            ts["throughput_mbps"] = {names.get(p, p): [round(v * noise, 3) for v in vs] for p, vs in ts["throughput_mbps"].items()}
            ts["rtt_ms"] = _rename(ts["rtt_ms"], names)
            if not ts.get("cwnd"):  # the shape is from before cwnd was kept: a window that carries the rate at the RTT
                ts["cwnd"] = {p: [max(2, round(r * 1e6 / 8 * rtt / 1000 / 1448)) if rtt else 0
                                  for r, rtt in zip(ts["throughput_mbps"][p], ts["rtt_ms"].get(p, []))]
                              for p in ts["throughput_mbps"]}
    if rng.random() < 0.03:
        rep = doc["repetitions"][-1]
        rep.update(status="failed", error="the transfer made no progress for 10 s (path blackholed?)")
        doc["status"] = "failed"
        doc["errors"] = [f"repetition {rep['index'] + 1}: {rep['error']}"]
    return RunResult.model_validate(doc)


def fill(db: Path, n: int, seed: int = 1) -> None:
    shape = json.loads(SHAPE.read_text())
    contents = {name: load_scenario(name).normalized() for name in SCENARIOS}
    store = open_store(str(db))
    rng = random.Random(seed)
    t0 = time.time() - n * 90
    for i in range(n):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        kernel = KERNELS[(i // len(SCENARIOS)) % len(KERNELS)]
        content = dict(contents[scenario])
        if scenario == "two-paths" and i > n // 2:
            content["description"] = "two equal 10 mbit paths (edited)"  # a new scenario version half-way
        store.save_result(synthetic_run(shape, scenario, content, kernel, i, rng, t0), content)
    store.engine.dispose()


def cli(*args: str) -> float:
    """Seconds one `mptcplab` command takes, as a subprocess (imports included)."""
    t = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "mptcplab"), *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"mptcplab {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="keep the store and the report in this directory")
    args = ap.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="mptcplab-report-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db, out = tmp / "bench.db", tmp / "report"
    if db.exists():
        db.unlink()
    t = time.perf_counter()
    fill(db, args.runs)
    print(f"filled {db} with {args.runs} runs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    full = cli("report", str(out), "--db", str(db))
    pages = len(json.loads((out / "manifest.json").read_text())["pages"])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    store = open_store(str(db))
    shape = json.loads(SHAPE.read_text())
    content = load_scenario("rtt-mismatch").normalized()
    store.save_result(synthetic_run(shape, "rtt-mismatch", content, KERNELS[-1], args.runs, random.Random(2), time.time()),
                      content)
    store.engine.dispose()
    incremental = cli("report", str(out), "--db", str(db))
    unchanged = cli("report", str(out), "--db", str(db))
    reference = cli("export", "--format", "json", "--db", str(db), "-o", str(tmp / "export.json"))
    print(f"report of {args.runs} runs ({pages} pages, {size / 1e6:.0f} MB incl. plotly.js) on {os.cpu_count()} CPUs")
    print(f"{'build':<14}{'seconds':>9}{'vs export':>11}")
    for name, secs in (("full", full), ("incremental", incremental), ("unchanged", unchanged), ("reference", reference)):
        print(f"{name:<14}{secs:>9.2f}{secs / reference:>11.2f}")
    print(f"reference = `mptcplab export --format json` of the same store; incremental / full = {incremental / full:.2f}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=True)


if __name__ == "__main__":
    main()
