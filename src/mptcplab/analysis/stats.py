"""Medians and their confidence intervals across repetitions.

Repetitions are few (3-10) and their distribution is unknown, so the
interval is a percentile bootstrap of the median with a fixed seed
(reproducible output); with one repetition it is that value.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..result import Estimate, RunResult

BOOTSTRAP_RESAMPLES = 4000
SEED = 20261125


def median_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    import numpy as np  # here, not above: the runner imports this module, and in a guest numpy is seconds of import

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values")
    med = float(np.median(data))
    if data.size == 1 or np.all(data == data[0]):
        return Estimate(median=med, ci95=(med, med), n=int(data.size))
    rng = np.random.default_rng(SEED)
    samples = rng.choice(data, size=(BOOTSTRAP_RESAMPLES, data.size), replace=True)
    medians = np.median(samples, axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(medians, [alpha, 1 - alpha])
    return Estimate(median=med, ci95=(float(lo), float(hi)), n=int(data.size))


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """A proportion with its Wilson score interval (scipy's binomtest; Wilson, JASA 1927).

    `median` holds the proportion successes / n (the Estimate shape is shared with medians).
    Raises ValueError when n is 0.
    """
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("no trials")
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(median=successes / n, ci95=(float(ci.low), float(ci.high)), n=n)


def summarize_run(result: RunResult) -> None:
    """Fill `result.summary` from its repetitions.

    Medians (bootstrap 95% CI) of goodput_mbps, completion_s and every workload
    metric are over the completed, non-warm-up repetitions only; pass_rate
    (completed within the [run] budget) is over all non-warm-up repetitions,
    with its Wilson 95% interval.
    """
    reps = [r for r in result.repetitions if not r.warmup]
    done = [r for r in reps if r.completed]
    summary: dict[str, Estimate] = {}
    if done:
        summary["goodput_mbps"] = median_ci([r.goodput_mbps for r in done])
        summary["completion_s"] = median_ci([r.completion_s for r in done])
        for name in dict.fromkeys(k for r in done for k in r.metrics):
            values = [r.metrics[name] for r in done if name in r.metrics]
            summary[name] = median_ci(values)
    if reps:
        summary["pass_rate"] = proportion_ci(sum(r.passed for r in reps), len(reps))
    result.summary = summary
