"""What a QEMU guest costs: boot time, run overhead, goodput ceiling, and a small matrix.

1. boot time per cached kernel: QEMU launch to the lab answering inside the
   guest and to the first repetition of a tiny job starting (host clock), and
   the guest's own clock at the virtiofs mount, at Python's start and at ready;
2. per-scenario overhead: wall time of the same short run on the host and
   in an already booted guest;
3. guest/host goodput ratio on two tbf-shaped paths at 20, 50 and 100 mbit
   each (tbf: the host has no netem), with the guest's CPU load, to show
   where emulation (TCG) and not the kernel becomes the limit;
4. wall time of a 2-kernel x 1-scenario matrix with 3 repetitions (goal < 120 s).

Each part holds /tmp/mptcplab-heavy.lock while it runs (the machine is shared).
Usage: python bench/guest_overhead.py [--kernels 6.1,6.12] [--boots N] [--skip-matrix | --only-boot]
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from heavy import heavy_lock  # bench/heavy.py: the shared heavy-work lock

from mptcplab.kernels.catalog import cached, resolve
from mptcplab.executors.qemu.accel import choose
from mptcplab.executors.qemu.session import GuestSession
from mptcplab.kernels.matrix import run_matrix
from mptcplab.protocols import Progress
from mptcplab.runner import RunOptions, run_scenario
from mptcplab.scenario import Scenario, parse_scenario


def two_paths(rate: str, backend: str, workload: dict, delay: str | None = None) -> Scenario:
    path = {"rate": rate, **({"delay": delay} if delay else {})}
    return parse_scenario({
        "name": f"bench-{rate}-{backend}",
        "path": [{"name": "a", **path}, {"name": "b", **path}],
        "workload": workload,
        "run": {"repeat": 1, "timeout": "60s", "link_backend": backend},
    })


def mounted_at(console: Path) -> float:
    """Guest uptime when init had the host filesystem mounted (its console line)."""
    m = re.search(r"host filesystem mounted at ([\d.]+) s", console.read_text(errors="replace"))
    return float(m.group(1)) if m else float("nan")


class FirstStart(Progress):
    """Notes when the first repetition of a job starts (host clock, from QEMU's launch)."""

    def __init__(self, t0: float) -> None:
        self.t0, self.at = t0, float("nan")

    def repetition_started(self, index: int, total: int) -> None:
        if self.at != self.at:
            self.at = time.monotonic() - self.t0


def boot_times(kernels: list[str], boots: int) -> None:
    print(f"\n## boot time ({choose().accel}), {boots} boots each: QEMU launch -> lab ready and -> first repetition "
          "of a tiny job started (host clock); guest clock at the virtiofs mount, Python's start and ready")
    tiny = two_paths("50mbit", "tbf", {"size": "256KiB"})
    for name in kernels:
        k = resolve(name)
        host, first, guest, kernel_only, python = [], [], [], [], []
        for _ in range(boots):
            with heavy_lock(), GuestSession(k) as g:
                host.append(g.wait_ready())
                guest.append(g.uptime_at_ready or 0.0)
                python.append(g.ready_info.get("python_started_s", float("nan")))
                started = FirstStart(g._t0)
                g.run(tiny, RunOptions(repeat=1, progress=started), timeseries=False)
                first.append(started.at)
            kernel_only.append(mounted_at(k.dir / "last-console.log"))
        med = statistics.median
        print(f"{k.release:<30} ready median {med(host):6.2f} s (min {min(host):.2f}, max {max(host):.2f}), "
              f"first repetition started {med(first):.2f} s; guest clock: host filesystem mounted {med(kernel_only):.2f} s "
              f"(kernel, modules, virtiofs), Python started {med(python):.2f} s, ready {med(guest):.2f} s "
              f"(the rest: importing the lab over virtiofs)")


def overhead_and_ceiling(kernel: str, rates: list[int], seconds: float) -> None:
    k = resolve(kernel)
    print(f"\n## guest {k.release} vs host, two tbf paths each, {seconds:g} s transfers")
    short = two_paths("20mbit", "tbf", {"size": "4MiB"})
    with heavy_lock(), GuestSession(k) as g:
        g.wait_ready()
        t = time.monotonic()
        run_scenario(short, RunOptions(repeat=1))
        host_wall = time.monotonic() - t
        t = time.monotonic()
        g.run(short, RunOptions(repeat=1), timeseries=False)
        guest_wall = time.monotonic() - t
        print(f"per-run wall time, 4 MiB at 2x20 mbit: host {host_wall:.2f} s, booted guest {guest_wall:.2f} s "
              f"(+{guest_wall - host_wall:.2f} s; boot adds {g.boot_s:.1f} s once per kernel)")
        print(f"{'rate/path':>10} {'host mbit/s':>12} {'guest mbit/s':>13} {'guest/host':>10} {'CPU busy all/max':>17} {'saturated':>9}")
        for rate in rates:
            scn = two_paths(f"{rate}mbit", "tbf", {"duration": f"{seconds}s"})
            host = run_scenario(scn, RunOptions(repeat=1)).repetitions[0].goodput_mbps
            res = g.run(scn, RunOptions(repeat=1), timeseries=False)
            guest = res.repetitions[0].goodput_mbps
            cpu = res.environment["guest_cpu"]
            busiest = max(r['busiest_cpu'] for r in cpu['per_repetition'])
            print(f"{rate:>10} {host:>12.2f} {guest:>13.2f} {guest / host:>10.3f} {cpu['max_busy']:>9.2f} / {busiest:.2f} {str(cpu['saturated']):>9} qemu {cpu['qemu_host_cpu']}")


def matrix_time(kernels: list[str]) -> None:
    ks = [resolve(k) for k in kernels]
    scn = two_paths("20mbit", "netem", {"size": "4MiB"}, delay="10ms")
    print(f"\n## matrix: {len(ks)} kernels x 1 scenario (2x20 mbit, 10 ms, netem, 4 MiB) x 3 repetitions")
    with heavy_lock():
        t = time.monotonic()
        cells = run_matrix([scn], ks, 3, RunOptions(), timeseries=False)
        wall = time.monotonic() - t
    for c in cells:
        est = c.result.summary["goodput_mbps"]
        print(f"{c.kernel:<30} goodput median {est.median:.2f} mbit/s [{est.ci95[0]:.2f}, {est.ci95[1]:.2f}]")
    print(f"wall time {wall:.1f} s (goal < 120 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="6.1,6.12", help="cached kernels to use (mptcplab kernel fetch first)")
    ap.add_argument("--boots", type=int, default=2)
    ap.add_argument("--rates", default="20,50,100")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--only-matrix", action="store_true")
    ap.add_argument("--only-boot", action="store_true", help="part 1 only: boot and ready times")
    args = ap.parse_args()
    kernels = [k for k in args.kernels.split(",") if k]
    if not cached():
        raise SystemExit("no cached kernels: mptcplab kernel fetch 6.1; mptcplab kernel fetch 6.12")
    if args.only_matrix:
        matrix_time(kernels[:2])
        return
    boot_times(kernels, args.boots)
    if args.only_boot:
        return
    overhead_and_ceiling(kernels[-1], [int(r) for r in args.rates.split(",")], args.seconds)
    if not args.skip_matrix:
        matrix_time(kernels[:2])


if __name__ == "__main__":
    main()
