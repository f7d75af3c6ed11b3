"""How far can a `mptcplab compare` verdict be trusted? Measure its false-alarm and detection rates.

Three pools of real repetitions are measured once, interleaved round by round
(baseline, identical, degraded, baseline, ...) so that machine drift hits all
alike:

  baseline   2 paths of 20 mbit (tbf), 8 MiB upload, default scheduler
  identical  the very same scenario, measured as a second, independent pool
  degraded   the same scenario with path b at 16 mbit: 20% less rate on one
             path, 10% less capacity in total (the injected regression)

Then K baseline/candidate pairs are drawn by resampling (each side: n
repetitions without replacement from its pool) and judged with the decision
rule of `mptcplab compare` (analysis.compare.compare_samples):
identical pairs give the false-alarm rate, degraded pairs the detection rate,
each with its exact (Clopper-Pearson) 95% binomial CI. Those CIs describe the
resampling only: the pools are finite, so they say how well the rule does on
*these* measurements; docs/statistics.md discusses what that means.

--paired adds the paired rule (deterministic runs, common random numbers):
its detection power for 1% and 2% steps against the unpaired rule's, on
simulated pairs with the within-run spread measured on a UML kernel with time
travel (30 seeded repetitions of simult-opposed-delay: 11.16-11.90 s, sd
1.89%; ../shared/notes/uml-time-travel.md). Repetition i of the baseline is
mu (1 + sd z_i), of the candidate (1 + step) mu (1 + sd (rho z_i +
sqrt(1 - rho^2) w_i)): rho is how much of a repetition's deviation the two
kernels share through their common seed (1 measured for identical kernels:
byte-identical repetitions; less when a change alters which random draws the
kernel consumes). Both rules judge the same values; the ratio of detection
rates is printed. --paired-only skips the real pools.

The pools are stored (labels bench-baseline, bench-identical, bench-degraded)
in --db, so `mptcplab compare --db FILE --baseline bench-baseline --candidate
bench-degraded` shows the same data; --reuse judges stored pools again
without measuring. Measuring takes the shared heavy lock in chunks of a few
rounds (never for more than ~2 minutes at a time).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from scipy.stats import binomtest

from heavy import heavy_lock  # bench/heavy.py: the shared heavy-work lock

from mptcplab.analysis.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Draw, compare_samples
from mptcplab.runner import RunOptions, run_scenarios
from mptcplab.scenario import Scenario, parse_scenario
from mptcplab.store import open_store

ROLES = ("bench-baseline", "bench-identical", "bench-degraded")


def scenario(rate_b: str) -> Scenario:
    return parse_scenario({
        "name": "verdict-2x20",
        "description": "two equal paths; the degraded version has 20% less rate on path b",
        "path": [{"name": "a", "rate": "20mbit"}, {"name": "b", "rate": rate_b}],
        "workload": {"size": "8MiB"},
        "run": {"link_backend": "tbf"},
    })


def measure(db: str, pool: int, chunk: int) -> None:
    """Measure `pool` repetitions of each role, interleaved, and store them with their role as label."""
    base, worse = scenario("20mbit"), scenario("16mbit")
    store = open_store(db)
    done = 0
    while done < pool:
        n = min(chunk, pool - done)
        t0 = time.monotonic()
        with heavy_lock():
            results = run_scenarios([base, base, worse], RunOptions(repeat=n))
        for result, role, scn in zip(results, ROLES, (base, base, worse)):
            result.label = role
            store.save_result(result, scn.normalized())
        done += n
        print(f"measured {done}/{pool} rounds ({time.monotonic() - t0:.0f}s for this chunk)", file=sys.stderr, flush=True)


def pools(db: str) -> dict[str, list[float]]:
    store = open_store(db)
    out = {}
    for role in ROLES:
        samples = store.samples(store.select_runs(f"label:{role}"), "goodput_mbps")
        out[role] = samples["verdict-2x20"].values if "verdict-2x20" in samples else []
    return out


def rate(hits: int, k: int) -> str:
    ci = binomtest(hits, k).proportion_ci(confidence_level=0.95, method="exact")
    return f"{hits / k * 100:6.2f}% ({hits}/{k}; 95% CI {ci.low * 100:.2f}-{ci.high * 100:.2f}%)"


def judge(p: dict[str, list[float]], k: int, reps: int, threshold: float, alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    false_alarms = improved = detected = 0
    for _ in range(k):
        b = list(rng.choice(p["bench-baseline"], reps, replace=False))
        same = list(rng.choice(p["bench-identical"], reps, replace=False))
        worse = list(rng.choice(p["bench-degraded"], reps, replace=False))
        v_same = compare_samples(b, same, threshold=threshold, alpha=alpha).verdict
        false_alarms += v_same == "regressed"
        improved += v_same == "improved"
        detected += compare_samples(b, worse, threshold=threshold, alpha=alpha).verdict == "regressed"
    print(f"{reps} repetitions per side, K = {k} resampled pairs of each kind:")
    print(f"  false alarms (identical pairs judged regressed): {rate(false_alarms, k)}")
    print(f"  identical pairs judged improved:                  {rate(improved, k)}")
    print(f"  detection (degraded pairs judged regressed):      {rate(detected, k)}")


#: the within-run spread of a deterministic (UML, time travel) kernel: 30 seeded repetitions of simult-opposed-delay
UML_MEDIAN_S, UML_SD = 11.5, 0.0189


def judge_paired(k: int, reps: int, threshold: float, alpha: float, seed: int,
                 steps: tuple[float, ...] = (0.0, -0.01, -0.02), rhos: tuple[float, ...] = (1.0, 0.9, 0.5, 0.0)) -> None:
    """Detection (and at step 0 false-alarm) rates of the paired and the unpaired rule on the same simulated pairs.

    Metric: completion_s (lower is better), so a step of -1% in goodput is a completion time (1 / 0.99) longer.
    """
    rng = np.random.default_rng(seed)
    draws = [Draw(index=i, seed=1, executor="uml", time_mode="travel") for i in range(reps)]
    print(f"paired rule, {reps} repetitions per side (pairs), K = {k} simulated pairs per cell; completion time, "
          f"median {UML_MEDIAN_S} s, within-run sd {UML_SD * 100:.2f}%, threshold {threshold * 100:g}%, alpha {alpha:g}:")
    print(f"  {'goodput step':>12} {'rho':>4}  {'paired: regressed':>34}  {'unpaired: regressed':>34}  ratio")
    for step in steps:
        for rho in rhos:
            hits = {"paired": 0, "unpaired": 0}
            for _ in range(k):
                z, w = rng.standard_normal(reps), rng.standard_normal(reps)
                b = UML_MEDIAN_S * (1 + UML_SD * z)
                c = UML_MEDIAN_S / (1 + step) * (1 + UML_SD * (rho * z + np.sqrt(1 - rho ** 2) * w))
                kw = dict(metric="completion_s", better="lower", threshold=threshold, alpha=alpha)
                hits["paired"] += compare_samples(list(b), list(c), baseline_draws=draws, candidate_draws=draws, **kw).verdict == "regressed"
                hits["unpaired"] += compare_samples(list(b), list(c), **kw).verdict == "regressed"
            ratio = f"{hits['paired'] / hits['unpaired']:.1f}x" if hits["unpaired"] else ("-" if not hits["paired"] else "inf")
            print(f"  {step * 100:+11.0f}% {rho:4.1f}  {rate(hits['paired'], k):>34}  {rate(hits['unpaired'], k):>34}  {ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="bench-verdict.db", help="where the pools are stored (SQLite path or URL)")
    ap.add_argument("--pool", type=int, default=30, help="repetitions measured per role")
    ap.add_argument("--chunk", type=int, default=8, help="rounds per hold of the heavy lock")
    ap.add_argument("--reuse", action="store_true", help="judge the pools already in --db, measure nothing")
    ap.add_argument("-k", type=int, default=4000, help="resampled pairs of each kind")
    ap.add_argument("--reps", type=int, nargs="+", default=[5], help="repetitions per side to judge with")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--paired", action="store_true", help="also the paired rule's detection power (simulated pairs)")
    ap.add_argument("--paired-only", action="store_true", help="only the paired rule's detection power, no pools")
    ap.add_argument("--paired-reps", type=int, nargs="+", default=[10], help="pairs per comparison for --paired")
    ap.add_argument("--paired-threshold", type=float, default=0.005, help="threshold for --paired (1%% steps need < 1%%)")
    args = ap.parse_args()
    if args.paired_only:
        for reps in args.paired_reps:
            judge_paired(args.k, reps, args.paired_threshold, args.alpha, args.seed)
        return
    if not args.reuse:
        measure(args.db, args.pool, args.chunk)
    p = pools(args.db)
    if min(len(v) for v in p.values()) < max(args.reps):
        sys.exit(f"error: the pools in {args.db} are too small ({', '.join(f'{r}: {len(v)}' for r, v in p.items())})")
    print(f"pools of real repetitions in {args.db} (goodput, mbit/s), measured interleaved; "
          f"pairs are drawn by resampling from them:")
    for role, values in p.items():
        print(f"  {role:<16} n={len(values):3d}  median {statistics.median(values):7.3f}  "
              f"CV {statistics.stdev(values) / statistics.mean(values) * 100:4.1f}%  "
              f"range {min(values):.2f}-{max(values):.2f}")
    drop = statistics.median(p["bench-degraded"]) / statistics.median(p["bench-baseline"]) - 1
    print(f"  injected degradation (path b 20 -> 16 mbit) changed the median goodput by {drop * 100:+.1f}%")
    print(f"decision rule: regressed iff median change <= -{args.threshold * 100:g}% and one-sided exact "
          f"Mann-Whitney U p < {args.alpha:g}")
    for reps in args.reps:
        judge(p, args.k, reps, args.threshold, args.alpha, args.seed)
    if args.paired:
        for reps in args.paired_reps:
            judge_paired(args.k, reps, args.paired_threshold, args.alpha, args.seed)


if __name__ == "__main__":
    main()
