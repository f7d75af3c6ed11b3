"""The rr workload's own cost: its median latency against sockperf's on the same topology.

Both sides do closed-loop ping-pong with one message outstanding, 200-byte
requests and 200-byte responses, over MPTCP on two undelayed 1 gbit paths
(tbf, the kernel's own shaper: no userspace forwarder in the path):

- the lab: `mptcplab run` of an rr scenario (`count` transactions, fresh lab);
- sockperf: `sockperf server` / `sockperf ping-pong --tcp --full-rtt` under
  `mptcpize run` (Debian packages sockperf and mptcpd), in a topology built
  the same way; the MPTcpExt MIB of the client namespace confirms MPTCP was used.

Rounds alternate (lab, sockperf, lab, ...) so drift hits both alike. Prints
each side's median of per-round p50s and the ratio lab / sockperf, and whether
the lab is within 50 us or 10% of sockperf, whichever is larger (issue 12).
Run as root, alone: flock /tmp/mptcplab-heavy.lock .venv/bin/python bench/rr_latency.py
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time

from mptcplab import RunOptions, run_scenario
from mptcplab.lab import Lab
from mptcplab.links import select_backend
from mptcplab.probes import mib_delta, mib_snapshot
from mptcplab.scenario import parse_scenario
from mptcplab.topology import build

MSG = 200
PORT = 11111


def scenario(count: int):
    return parse_scenario({
        "name": "bench-rr",
        "path": [{"name": "a", "rate": "1gbit"}, {"name": "b", "rate": "1gbit"}],
        "workload": {"kind": "rr", "request": f"{MSG}B", "response": f"{MSG}B", "count": count},
        "run": {"repeat": 1, "timeout": "60s", "link_backend": "tbf"},
    })


def lab_p50_us(count: int) -> float:
    result = run_scenario(scenario(count), RunOptions(repeat=1))
    rep = result.repetitions[0]
    if rep.status != "completed":
        sys.exit(f"error: the lab's rr run did not complete: {rep.error}")
    return rep.metrics["latency_p50_ms"] * 1000


def sockperf_p50_us(seconds: float) -> float:
    sc = scenario(1)
    backend_cls = select_backend("tbf", sc)
    with Lab() as lab:
        topo = build(lab, sc)
        backend = backend_cls(lab, topo, sc)
        backend.start()
        lab.on_close(backend.stop)
        server = subprocess.Popen(["ip", "netns", "exec", topo.server, "mptcpize", "run", "sockperf", "server", "--tcp",
                                   "-i", topo.server_addr, "-p", str(PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            before = mib_snapshot(topo.client)
            out = subprocess.run(["ip", "netns", "exec", topo.client, "mptcpize", "run", "sockperf", "ping-pong", "--tcp",
                                  "--full-rtt", "-i", topo.server_addr, "-p", str(PORT), "-m", str(MSG), "-t", f"{seconds:g}"],
                                 capture_output=True, text=True, timeout=seconds + 30)
            delta = mib_delta(before, mib_snapshot(topo.client))
        finally:
            server.terminate()
            server.wait(timeout=10)
    if not delta.get("MPTcpExtMPCapableSYNACKRX"):
        sys.exit("error: sockperf's connection was not MPTCP (no MP_CAPABLE SYN-ACK received): is mptcpize working?")
    m = re.search(r"percentile 50\.000 =\s*([0-9.]+)", out.stdout + out.stderr)
    if not m:
        sys.exit(f"error: no median in sockperf's output: {(out.stdout + out.stderr)[-300:]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", "--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=20000, help="lab transactions per round")
    ap.add_argument("--seconds", type=float, default=3.0, help="sockperf seconds per round")
    args = ap.parse_args()
    for tool in ("sockperf", "mptcpize"):
        if not shutil.which(tool):
            sys.exit(f"error: {tool} is not installed — apt-get install sockperf mptcpd")
    lab, sp = [], []
    for _ in range(args.rounds):
        lab.append(lab_p50_us(args.count))
        sp.append(sockperf_p50_us(args.seconds))
    ml, ms = statistics.median(lab), statistics.median(sp)
    print(f"{'rr p50, 200 B ping-pong, MPTCP, 2 x 1 gbit tbf':<48} {'median us':>10} {'rounds':>30}")
    print(f"{'mptcplab rr (Python, one thread)':<48} {ml:>10.1f} {', '.join(f'{x:.1f}' for x in lab):>30}")
    print(f"{'sockperf ping-pong --tcp under mptcpize':<48} {ms:>10.1f} {', '.join(f'{x:.1f}' for x in sp):>30}")
    allowed = max(50.0, 0.10 * ms)
    print(f"ratio lab/sockperf: {ml / ms:.2f}; difference {ml - ms:+.1f} us "
          f"({'within' if ml - ms <= allowed else 'over'} the allowed {allowed:.0f} us)")


if __name__ == "__main__":
    main()
