"""Dispatch overhead of the fleet: what a job costs beyond its own repetition, with 2 workers and 100 short jobs.

Starts a throwaway PostgreSQL cluster (as the tests do; or --db URL), submits
one campaign of a ~1 s scenario x 100 repetitions (100 jobs), runs two
`mptcplab worker --exit-when-empty` processes on this machine and reads the
attempts table back:

- enqueue -> start: the first job of each worker (the queue's own latency,
  nothing queued ahead of it), and the median over all jobs (mostly waiting
  behind other jobs: not overhead);
- per job, start -> stored minus the repetition's own run time: loading
  the scenario, the executor, storing the repetition;
- per worker, stored -> the next job's start: fetching the next job;
- overhead per job = the last two; as a ratio of the job's own duration, and
  extrapolated to a 10 s job (the overhead does not grow with the job).

Run it alone: `flock /tmp/mptcplab-heavy.lock .venv/bin/python bench/fleet_dispatch.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = str(Path(sys.executable).parent / "mptcplab")

SCENARIO = """
name = "fleet-dispatch"
description = "a ~1 s repetition: two 20 mbit tbf paths, 1 s bulk upload"
[[path]]
name = "a"
rate = "20mbit"
[[path]]
name = "b"
rate = "20mbit"
[workload]
duration = "1s"
[run]
timeout = "20s"
link_backend = "tbf"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="a PostgreSQL URL (default: a throwaway cluster)")
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cluster = None
    db = args.db
    if db is None:
        from tests.pg import Cluster, create_database

        cluster = Cluster()
        cluster.start()
        db = create_database(cluster.url)
    try:
        run(db, args.jobs, args.workers)
    finally:
        if cluster is not None:
            cluster.remove()


def run(db: str, n: int, workers: int) -> None:
    from mptcplab.fleet.queue import database, dispatch_times

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet-dispatch.toml"
        path.write_text(SCENARIO)
        sub = subprocess.run([CLI, "submit", str(path), "--repeat", str(n), "--db", db], capture_output=True, text=True, check=True)
        cid = sub.stdout.strip()
        t0 = time.monotonic()
        procs = [subprocess.Popen([CLI, "worker", "--db", db, "--name", f"w{i + 1}", "--exit-when-empty"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(workers)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"worker failed ({p.returncode}): {err.strip().splitlines()[-1:]}")
        wall = time.monotonic() - t0
    rows = dispatch_times(database(db), cid)
    if len(rows) != n:
        sys.exit(f"only {len(rows)} of {n} jobs stored")
    ran = [r["ran_s"] for r in rows]
    in_job = [r["stored"] - r["started"] - r["ran_s"] for r in rows]
    queued = [r["started"] - r["deferred"] for r in rows]
    gaps: list[float] = []
    first: list[float] = []
    for w in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == w]
        first.append(mine[0]["started"] - mine[0]["deferred"])
        gaps += [b["started"] - a["stored"] for a, b in zip(mine, mine[1:])]
    overhead = statistics.median(in_job) + statistics.median(gaps)
    job = statistics.median(ran)
    doc = {
        "jobs": n, "workers": workers, "wall_s": round(wall, 2),
        "job_run_s_median": round(job, 3),
        "enqueue_to_start_first_job_s": [round(x, 3) for x in first],
        "enqueue_to_start_median_s": round(statistics.median(queued), 3),
        "start_to_stored_minus_run_s": {"median": round(statistics.median(in_job), 4), "p90": round(sorted(in_job)[int(0.9 * n)], 4)},
        "stored_to_next_start_s": {"median": round(statistics.median(gaps), 4), "p90": round(sorted(gaps)[int(0.9 * len(gaps))], 4)},
        "overhead_per_job_s": round(overhead, 4),
        "overhead_ratio_this_job": round(overhead / job, 4),
        "overhead_ratio_10s_job": round(overhead / 10.0, 4),
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (the workers build namespaces)")
    main()
