"""Detection power of the change-point search on a stored kernel history: inject steps, count what is found.

For every case of a stored history (bench/kernel_history.py's database and
label) and each metric it reads, a step of s for the worse is multiplied into
the stored values of every kernel from boundary k on, for each boundary k of
the series, and the change-point search of `mptcplab history --by kernel`
(analysis.changepoints.change_points, the compare rule; paired by repetition
when the runs are seeded and deterministic) is run on the result. A step is
found when a change point lands exactly at k with the verdict "regressed";
change points elsewhere that the untouched series does not have are counted
as false ones.

Repetition i of every kernel keeps its random draws (seed), so with UML
kernels the paired rule judges the injected series as it would judge real
ones. The threshold is the rule's smallest change worth reporting: 5% by
default in the lab; steps of 1-2% need a lower one (`--threshold 0.005`).

Usage: python bench/history_power.py --db /var/cache/mptcplab/kernel-history-uml.db [--label kernel-history]
           [--case C]... [--steps 0.01 0.02 0.05] [--threshold 0.005] [--alpha 0.01]
Prints a Markdown table; reads the store only (no lock, nothing measured).
"""
from __future__ import annotations

import argparse
import statistics
import sys

from kernel_history import metrics_for  # bench/kernel_history.py: the metrics read per case

from mptcplab.analysis.changepoints import SeriesPoint, change_points
from mptcplab.analysis.compare import DEFAULT_ALPHA
from mptcplab.analysis.kernel_history import history_by_kernel
from mptcplab.errors import UsageError
from mptcplab.store import RunFilter, open_store


def injected(points: list[SeriesPoint], k: int, step: float, better: str) -> list[SeriesPoint]:
    """`points` with every value from position k on made `step` worse (x (1 - step) when higher is better,
    x (1 + step) when lower is); names, versions, runs and random draws kept."""
    factor = 1 - step if better == "higher" else 1 + step
    return [SeriesPoint(name=p.name, version=p.version, values=[v * factor for v in p.values] if i >= k else list(p.values),
                        runs=list(p.runs), draws=list(p.draws)) for i, p in enumerate(points)]


def spread(points: list[SeriesPoint]) -> tuple[float, float]:
    """Median and max over kernels of (max - min) / median of a kernel's repetitions (relative, 0.01 = 1%)."""
    s = [(max(p.values) - min(p.values)) / statistics.median(p.values) for p in points if p.values]
    return statistics.median(s), max(s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--label", default="kernel-history")
    ap.add_argument("--case", action="append", help="cases (default: every scenario stored under the label)")
    ap.add_argument("--steps", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    ap.add_argument("--threshold", type=float, default=0.005)
    ap.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    a = ap.parse_args()
    store = open_store(a.db)
    cases = a.case or sorted({r.scenario for r in store.list_runs(RunFilter(label=a.label))})
    steps = " | ".join(f"{s:.0%} step found" if s >= 0.01 else f"{s:.1%} step found" for s in a.steps)
    print(f"Threshold {a.threshold:.1%}, alpha {a.alpha:g}; store `{a.db}`, label `{a.label}`.\n")
    print(f"| case | metric | kernels | spread within a kernel: median (max) | test | {steps} | false change points |")
    print("|---|---|---|---|---|" + "---|" * len(a.steps) + "---|")
    for case in cases:
        for metric in metrics_for(case):
            try:
                hist = history_by_kernel(store, case, metric, RunFilter(label=a.label), threshold=a.threshold,
                                         alpha=a.alpha)
            except UsageError as e:
                print(f"| {case} | {metric} | {getattr(e, 'message', e)} | | |" + " |" * len(a.steps) + " |")
                continue
            pts = [p for p in hist.points if p.values]
            if len(pts) < 2:
                continue
            real = {c.index for c in hist.change_points}
            found_cells, false = [], []
            tests = set()
            for step in a.steps:
                found = 0
                for k in range(1, len(pts)):
                    cps = change_points(injected(pts, k, step, hist.better), metric=metric, better=hist.better,
                                        threshold=a.threshold, alpha=a.alpha)
                    tests.update(c.test for c in cps)
                    found += any(c.index == k and c.verdict == "regressed" for c in cps)
                    false.append(sum(1 for c in cps if c.index != k and c.index not in real))
                found_cells.append(f"{found}/{len(pts) - 1}")
            med, mx = spread(pts)
            real_txt = f" (the series' own: {', '.join(f'{pts[i - 1].name} -> {pts[i].name}' for i in sorted(real))})" if real else ""
            print(f"| {case} | {metric} | {len(pts)} | {med:.2%} ({mx:.2%}) | {', '.join(sorted(tests)) or '-'} | "
                  f"{' | '.join(found_cells)} | {min(false)}-{max(false)}{real_txt} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
