"""Medians and their confidence intervals across repetitions.

Repetitions are few (3-10) and their distribution is unknown, so the
interval is a percentile bootstrap of the median with a fixed seed
(reproducible output). Below MIN_INTERVAL_N values no 95% interval of a
median exists without assuming a distribution: the estimate then says the
sample is small and carries the values themselves (docs/statistics.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..result import Estimate, Repetition, RunResult, run_status

BOOTSTRAP_RESAMPLES = 4000
SEED = 20261125


#: the fewest values for which a 95% interval of a median exists without assuming a distribution: the widest
#: order-statistic interval, [smallest, largest], covers the median with probability 1 - 2^(1-n) (Conover,
#: "Practical Nonparametric Statistics", 3rd ed. 1999, section 3.2), 93.75% for 5 values and 96.9% for 6;
#: a percentile bootstrap of fewer values is narrower still, so it would claim 95% for what covers less
MIN_INTERVAL_N = 6


def range_coverage(n: int) -> float:
    """The probability that [smallest, largest] of `n` independent values covers their median: 1 - 2^(1-n)."""
    return 1.0 - 2.0 ** (1 - n) if n >= 1 else 0.0


def median_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The median of `values` and its `confidence` interval (a percentile bootstrap, BOOTSTRAP_RESAMPLES
    resamples, fixed seed).

    With fewer than MIN_INTERVAL_N values the estimate is marked `small_sample`: `ci95` is the smallest and
    largest value, `ci_coverage` the confidence that range really has (range_coverage) and `values` the values
    themselves. Raises ValueError when `values` is empty.
    """
    import numpy as np  # here, not above: the runner imports this module, and in a guest numpy is seconds of import

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values")
    med = float(np.median(data))
    if data.size < MIN_INTERVAL_N:
        ordered = sorted(float(v) for v in data)
        return Estimate(median=med, ci95=(ordered[0], ordered[-1]), n=int(data.size), small_sample=True,
                        values=ordered, ci_coverage=range_coverage(int(data.size)))
    if np.all(data == data[0]):
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

    Medians (bootstrap 95% CI) of goodput_mbps, completion_s, every workload
    metric and every path's subflow metric ("<path>.<name>") are over the
    completed, non-warm-up MPTCP repetitions only; pass_rate (completed within
    the [run] budget) is over all non-warm-up MPTCP repetitions, with its
    Wilson 95% interval. Best-path baseline repetitions (`baseline_path`) enter
    no median: with them, `mptcp_vs_best_path` is the ratio of medians of
    `best_path_ratio` (the environment's `baseline.metric` says which metric).
    """
    from ..metrics import subflow_metrics

    reps = [r for r in result.repetitions if not r.warmup and r.baseline_path is None]
    done = [r for r in reps if r.completed]
    summary: dict[str, Estimate] = {}
    if done:
        summary["goodput_mbps"] = median_ci([r.goodput_mbps for r in done])
        summary["completion_s"] = median_ci([r.completion_s for r in done])
        per_rep = [{**r.metrics, **subflow_metrics(r)} for r in done]
        for name in dict.fromkeys(k for m in per_rep for k in m):
            values = [m[name] for m in per_rep if name in m]
            summary[name] = median_ci(values)
    if reps:
        summary["pass_rate"] = proportion_ci(sum(r.passed for r in reps), len(reps))
    metric = (result.environment.get("baseline") or {}).get("metric")
    if metric:
        estimate = best_path_ratio(result, metric)
        if estimate is not None:
            summary["mptcp_vs_best_path"] = estimate
        else:
            summary.pop("mptcp_vs_best_path", None)
    result.summary = summary


def conclude_run(result: RunResult, ended: bool = False, summarize: bool = True) -> None:
    """A run's end, the one rule for the runner, a guest's run, a matrix cell and a stored run.

    The repetitions in index order (a best-path round reports its MPTCP repetition last, after the baselines);
    with `ended` (every repetition ran) the status from them (result.run_status), else the status the caller set
    (interrupted, failed) stands; with `summarize` the summary (summarize_run: medians, pass rate,
    mptcp_vs_best_path). A guest's runner passes summarize=False: the host summarizes what it received.
    """
    result.repetitions.sort(key=lambda r: r.index)
    if ended:
        result.status = run_status(result.repetitions)
    if summarize:
        summarize_run(result)


def _value(rep: Repetition, metric: str) -> float | None:
    if metric == "goodput_mbps":
        return rep.goodput_mbps
    if metric == "completion_s":
        return rep.completion_s
    return rep.metrics.get(metric)


def baseline_values(reps: Sequence[Repetition], metric: str) -> dict[str | None, list[float]]:
    """`metric` of the usable repetitions by path (None: the MPTCP ones), in run order.

    Usable: completed; for goodput_mbps a baseline repetition that timed out
    counts too (a path too slow to move a bulk `size` within the timeout
    still measured its goodput until then). Values <= 0 are left out.
    """
    out: dict[str | None, list[float]] = {}
    for r in reps:
        usable = r.completed or (r.baseline_path is not None and r.status == "timeout" and metric == "goodput_mbps")
        v = _value(r, metric) if usable else None
        if v is not None and v > 0:
            out.setdefault(r.baseline_path, []).append(float(v))
    return out


def oriented_ratio(mptcp: float, best: float, better: str) -> float:
    """MPTCP against the best path so that > 1 means MPTCP better: mptcp / best for a higher-is-better
    metric (goodput), best / mptcp for a lower-is-better one (latency)."""
    return mptcp / best if better == "higher" else best / mptcp


def best_path_ratio(result: RunResult, metric: str, confidence: float = 0.95) -> Estimate | None:
    """`mptcp_vs_best_path` of a run: the ratio of medians with a percentile-bootstrap interval.

    ratio = median(MPTCP) / max over paths of median(path) for a higher-is-better
    metric, and min over paths of median(path) / median(MPTCP) for a
    lower-is-better one: > 1 always means MPTCP did better than the best single
    path. The best path is chosen anew in every resample. Interval: the MPTCP
    values and each path's values are resampled independently with
    replacement (they are independent samples, not pairs), the ratio of the
    resampled medians taken BOOTSTRAP_RESAMPLES times with a fixed seed, and
    its (1-confidence)/2 and (1+confidence)/2 quantiles reported — the
    multi-sample percentile bootstrap of Efron & Tibshirani, "An Introduction
    to the Bootstrap" (1993), ch. 13.3 (percentile interval) and 8.3 (two
    independent samples). `n` is the number of MPTCP values. None when the
    MPTCP repetitions or every path lack usable values (see baseline_values).
    Non-warm-up repetitions only. With fewer than MIN_INTERVAL_N MPTCP values the
    estimate is `small_sample`: `values` are each MPTCP repetition against the best
    path's median (oriented_ratio), `ci95` their smallest and largest.
    """
    import numpy as np

    from ..metrics import metric as metric_def

    better = metric_def(metric).better
    values = baseline_values([r for r in result.repetitions if not r.warmup], metric)
    mptcp = values.pop(None, [])
    if not mptcp or not values:
        return None
    pick = max if better == "higher" else min
    best_median = pick(float(np.median(v)) for v in values.values())
    point = oriented_ratio(float(np.median(mptcp)), best_median, better)
    if len(mptcp) < MIN_INTERVAL_N:
        each = sorted(round(oriented_ratio(v, best_median, better), 4) for v in mptcp)
        return Estimate(median=round(point, 4), ci95=(each[0], each[-1]), n=len(mptcp), small_sample=True,
                        values=each, ci_coverage=range_coverage(len(mptcp)))
    rng = np.random.default_rng(SEED)

    def medians(data: list[float]) -> Any:
        arr = np.asarray(data, dtype=float)
        return np.median(rng.choice(arr, size=(BOOTSTRAP_RESAMPLES, arr.size), replace=True), axis=1)

    m = medians(mptcp)
    paths = np.vstack([medians(v) for v in values.values()])
    best = paths.max(axis=0) if better == "higher" else paths.min(axis=0)
    ratios = m / best if better == "higher" else best / m
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return Estimate(median=round(point, 4), ci95=(round(float(lo), 4), round(float(hi), 4)), n=len(mptcp))


def paired_best_path_ratio(reps: Sequence[Repetition], mptcp_rep: Repetition, round_reps: Sequence[Repetition],
                           metric: str) -> float | None:
    """One MPTCP repetition's `mptcp_vs_best_path`: against its own round's repetition on the best path.

    The best path is the one with the best median over the baseline
    repetitions of `reps` (every round so far, this one included); the value is
    oriented_ratio(this repetition, that path's repetition of this round).
    None when either has no usable value. What `compare` and `history` compare
    run against run; the run's summary is the ratio of medians (best_path_ratio).
    """
    import statistics

    from ..metrics import metric as metric_def

    better = metric_def(metric).better
    values = baseline_values(reps, metric)
    values.pop(None, None)
    mine = baseline_values([mptcp_rep], metric).get(None)
    if not values or not mine:
        return None
    pick = max if better == "higher" else min
    best = pick(values, key=lambda p: statistics.median(values[p]))
    partner = baseline_values([r for r in round_reps if r.baseline_path == best], metric).get(best)
    if not partner:
        return None
    return round(oriented_ratio(mine[0], partner[0], better), 4)
