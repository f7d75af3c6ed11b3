"""Build and remove the 3-namespace, 2-path topology: the lab vs an ip/tc shell script.

Both build the same thing: client/router/server namespaces, two shaped paths
(tbf both directions), addresses, source routing, forwarding, offloads off,
MPTCP limits and a subflow endpoint, then remove it all. The lab is timed
in-process (after imports); the script as one `bash` process, which is how
such setups are usually written (the kernel selftests' simult_flows.sh).
Prints per-iteration medians and the ratio lab / script (goal: <= 0.5).
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time

from mptcplab.lab import Lab
from mptcplab.links.tbf import TbfLink
from mptcplab.scenario import parse_scenario
from mptcplab.topology import build

SCENARIO = parse_scenario({
    "name": "bench",
    "path": [{"name": "a", "rate": "10mbit"}, {"name": "b", "rate": "10mbit"}],
    "workload": {"size": "1MiB"},
})

SCRIPT = r"""
set -e
p={prefix}
c=$p-cli; r=$p-rtr; s=$p-srv
trap 'for n in $c $r $s; do ip netns del $n 2>/dev/null; done' EXIT
ip netns add $c; ip netns add $r; ip netns add $s
for i in 0 1; do
  n=$((i+1))
  ip -n $c link add p$i type veth peer name p$i netns $r
  ip -n $c addr add 10.0.$n.1/24 dev p$i; ip -n $c link set p$i up
  ip -n $r addr add 10.0.$n.2/24 dev p$i; ip -n $r link set p$i up
  ip netns exec $c ethtool -K p$i tso off gso off gro off tx off >/dev/null
  ip netns exec $r ethtool -K p$i tso off gso off gro off tx off >/dev/null
  ip -n $c route add default via 10.0.$n.2 dev p$i metric $((100+i))
  ip -n $c route add default via 10.0.$n.2 dev p$i table $((100+i))
  ip -n $c rule add from 10.0.$n.1 table $((100+i)) pref $((1000+i))
  tc -n $c qdisc add dev p$i root handle 1: tbf rate 10mbit burst 6514 limit 131514
  tc -n $r qdisc add dev p$i root handle 1: tbf rate 10mbit burst 6514 limit 131514
  mc=$(ip -n $c -br link show p$i | awk '{{print $3}}'); mr=$(ip -n $r -br link show p$i | awk '{{print $3}}')
  ip -n $c neigh add 10.0.$n.2 lladdr $mr dev p$i nud permanent
  ip -n $r neigh add 10.0.$n.1 lladdr $mc dev p$i nud permanent
done
ip -n $r link add srv type veth peer name eth0 netns $s
ip -n $r addr add 10.0.100.1/24 dev srv; ip -n $r link set srv up
ip -n $s addr add 10.0.100.2/24 dev eth0; ip -n $s link set eth0 up
mr=$(ip -n $r -br link show srv | awk '{{print $3}}'); ms=$(ip -n $s -br link show eth0 | awk '{{print $3}}')
ip -n $r neigh add 10.0.100.2 lladdr $ms dev srv nud permanent
ip -n $s neigh add 10.0.100.1 lladdr $mr dev eth0 nud permanent
for ns in $c $r $s; do ip -n $ns link set lo up; done
ip netns exec $r sysctl -qw net.ipv4.ip_forward=1
ip -n $s route add default via 10.0.100.1
for ns in $c $s; do
  ip netns exec $ns sysctl -qw net.mptcp.enabled=1
  ip netns exec $ns sysctl -qw net.mptcp.scheduler=default
  ip -n $ns mptcp limits set subflow 1 add_addr_accepted 1
done
ip -n $c mptcp endpoint add 10.0.2.1 subflow

"""


def time_lab() -> float:
    t = time.perf_counter()
    with Lab() as lab:
        topo = build(lab, SCENARIO)
        TbfLink(lab, topo, SCENARIO).start()
    return time.perf_counter() - t


def time_script() -> float:
    script = SCRIPT.format(prefix=f"mptl-benchsh{secrets.token_hex(2)}")
    t = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", "--iterations", type=int, default=15)
    args = ap.parse_args()
    time_lab(), time_script()  # warm caches on both sides
    lab, sh = [], []
    for _ in range(args.iterations):  # interleaved so drift hits both alike
        lab.append(time_lab())
        sh.append(time_script())
    ml, ms = statistics.median(lab), statistics.median(sh)
    print(f"{'build + remove, 3 netns, 2 paths':<36} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    print(f"{'mptcplab (pyroute2, in-process)':<36} {ml * 1e3:>10.1f} {min(lab) * 1e3:>8.1f} {max(lab) * 1e3:>8.1f}")
    print(f"{'ip/tc/ethtool shell script':<36} {ms * 1e3:>10.1f} {min(sh) * 1e3:>8.1f} {max(sh) * 1e3:>8.1f}")
    print(f"ratio lab/script: {ml / ms:.2f}  (goal <= 0.50, {args.iterations} interleaved iterations)")
    sys.exit(0)


if __name__ == "__main__":
    main()
