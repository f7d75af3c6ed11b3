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

from mptcplab.analysis.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, compare_samples
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
