"""Deterministic time in numbers: a UML kernel's boot, its speed against real time, the quick suite's wall time,
and the determinism check, as ratios against the issue's targets (no thresholds: this prints, it does not judge).

    flock /tmp/mptcplab-heavy.lock .venv/bin/python bench/uml_time.py [--kernel 6.12.117-uml] [--repeat 3]

References: boot to lab ready 1 s; the quick suite on one UML kernel 3 min wall (8.5 min on the host in real
time); the same seed gives byte-identical repetitions in two runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "mptcplab")
BOOT_TARGET_S, SUITE_TARGET_S = 1.0, 180.0


def run(*args: str, timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - t0, proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="6.12.117-uml")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenario", default="loss-1pct", help="the determinism check's scenario")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-uml-"))

    # determinism and speed: one scenario twice
    docs, walls = [], []
    for _ in range(2):
        wall, proc = run("run", args.scenario, "--kernel", args.kernel, "--repeat", str(args.repeat), "--json", "--no-timeseries",
                         "--no-store")
        if proc.returncode != 0:
            print(f"error: {args.scenario} on {args.kernel}: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        docs.append(json.loads(proc.stdout))
        walls.append(wall)
    same = json.dumps(docs[0]["repetitions"], sort_keys=True) == json.dumps(docs[1]["repetitions"], sort_keys=True)
    simulated = sum(r["completion_s"] for r in docs[0]["repetitions"])
    boot = docs[0]["environment"]["guest"]["boot_s"]
    print(f"## {args.kernel}: {args.scenario}, {args.repeat} repetitions (one boot each), twice")
    print(f"- byte-identical repetitions in both runs: {'yes' if same else 'NO'}")
    goodputs = ", ".join(f"{r['goodput_mbps']:.4f}" for r in docs[0]["repetitions"])
    print(f"- goodput per repetition: {goodputs} mbit/s")
    print(f"- boot to lab ready (median of the boots): {boot:.2f} s = {boot / BOOT_TARGET_S:.2f} x the 1 s target")
    print(f"- wall {walls[0]:.1f} s and {walls[1]:.1f} s for {simulated:.1f} s of simulated transfers: "
          f"{simulated / min(walls):.1f} x faster than real time (whole command, Python's start included)")

    # the quick suite on one UML kernel
    wall, proc = run("suite", "run", "--tag", "quick", "--kernels", args.kernel, "--repeat", str(args.repeat),
                     "--db", str(tmp / "suite.db"), timeout=7200)
    status = "ok" if proc.returncode in (0, 1) else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    print(f"\n## the quick suite on {args.kernel}, {args.repeat} repetitions per case ({status})")
    print(f"- wall {wall:.0f} s = {wall / SUITE_TARGET_S:.2f} x the 3 min target")
    print(proc.stdout[-4000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
