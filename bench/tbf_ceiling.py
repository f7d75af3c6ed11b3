"""The tbf backend's rate ceiling: TCP uploads through tbf, rate from tc's own byte counter while backlogged.

One plain TCP flow per path (bench/link_accuracy.py's Bulk), 1.5 s to fill
the queue, then tc's byte counter of each path's tbf over 4 s. Where the
achieved rate falls short of the asked one, the senders' CPU (not tbf) is
the limit on this machine. docs/scenario.md, "Rate ceilings", has one run's table.

Run as root, alone (flock /tmp/mptcplab-heavy.lock):
    .venv/bin/python bench/tbf_ceiling.py --paths 1 500 1000 2000 3000 5000
    .venv/bin/python bench/tbf_ceiling.py --paths 2 500 1000 1500
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from link_accuracy import Bulk  # noqa: E402

from mptcplab.lab import Lab  # noqa: E402
from mptcplab.links.tbf import TbfLink  # noqa: E402
from mptcplab.scenario import parse_scenario  # noqa: E402
from mptcplab.topology import build  # noqa: E402


def tbf_bytes(ns: str, dev: str) -> int:
    """Bytes the tbf on `dev` has sent (tc -s), Ethernet headers included."""
    out = subprocess.run(["ip", "netns", "exec", ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return next(q["bytes"] for q in json.loads(out) if q["kind"] == "tbf")


def measure(paths: int, mbit: int, seconds: float = 4.0) -> float:
    """Achieved mbit/s summed over `paths` paths of `mbit` each."""
    scn = parse_scenario({"name": "tbf-ceiling", "path": [{"name": f"p{i}", "rate": f"{mbit}mbit"} for i in range(paths)],
                          "workload": {"size": "1MiB"}, "run": {"link_backend": "tbf"}})
    with Lab() as lab:
        topo = build(lab, scn)
        TbfLink(lab, topo, scn).start()  # directly: the ceiling check would refuse what this measures
        bulk = Bulk(topo).start()
        time.sleep(1.5)
        devs = [p.client_if for p in topo.paths]
        b0, t0 = sum(tbf_bytes(topo.client, d) for d in devs), time.monotonic()
        time.sleep(seconds)
        b1, t1 = sum(tbf_bytes(topo.client, d) for d in devs), time.monotonic()
        bulk.close()
    return (b1 - b0) * 8 / (t1 - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1)
    ap.add_argument("mbit", type=int, nargs="+", help="rates per path to try")
    args = ap.parse_args()
    print("| paths × asked | achieved | error |\n|---|---|---|")
    for mbit in args.mbit:
        achieved = measure(args.paths, mbit)
        asked = args.paths * mbit
        print(f"| {args.paths} × {mbit} mbit | {achieved:.1f} mbit | {(achieved / asked - 1) * 100:+.2f}% |", flush=True)


if __name__ == "__main__":
    main()
