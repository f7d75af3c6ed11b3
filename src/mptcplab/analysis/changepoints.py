"""Change points in a series of samples ordered by kernel version (or by run): where did the metric step?

Pure analysis, in the spirit of asv's step_detect.py: it takes numbers and
names and imports neither the store nor the engine.

Two stages, because each answers a different question:

1. *Where could it have stepped?* ruptures (Truong, Oudre & Vayatis 2020;
   PyPI ``ruptures``, numpy/scipy only) runs PELT with an L2 cost over the
   per-point medians, scaled by the standard error of a median estimated from
   the repetitions themselves (pooled MAD). PELT finds the segmentation that
   minimises cost + penalty over the whole series at once, so a step is
   placed where it is best explained, not wherever two neighbours differ.
   The penalty is deliberately low (BIC-like, 2 ln K on the standardised
   medians): this stage proposes, it does not decide.
2. *Is the step real?* Each proposed change point is judged by the verdict
   rule of ``compare`` on the pooled repetitions of the two segments either
   side of it: a change of at least the threshold and a one-sided exact
   Mann-Whitney U p-value below alpha (docs/statistics.md). A candidate that
   fails is removed, its two segments merge, and the survivors are judged
   again on the merged segments, until every remaining change point passes.

Apache Otava (E-divisive means with its own significance test) was the other
candidate; it pins numpy 2.2.0 exactly and pulls BigQuery, Slack and
PostgreSQL clients, which would downgrade this lab's numpy and scipy, so the
pair ruptures + compare's own test is used: one decision rule for compare,
history, matrix, suite and bisect.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison, compare_samples, min_repetitions
from .stats import median_ci


# -- kernel versions -----------------------------------------------------------------------------------------
_DEBIAN = re.compile(r"Debian (\d+\.\d+(?:\.\d+)?(?:~rc\d+)?)")
_LEADING = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:[-~.]?(rc\d+))?")


def upstream_version(release: str, kernel_version: str = "", package_version: str = "") -> str:
    """The upstream version of a kernel: '6.1.176' for release 6.1.0-50-cloud-amd64 built by Debian as 6.1.176-1.

    Tried in order: a Debian package version ('6.12.95-1~bpo12+1'), the
    `uname -v` string ('#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-...)'),
    then the release's leading numbers ('6.18.44-fc-v669' -> '6.18.44',
    '7.3.0-rc7' -> '7.3.0~rc7'). Returns the release itself when none parse.
    """
    if package_version and package_version != "custom":
        m = _LEADING.match(package_version)
        if m:
            return _format(m)
    m = _DEBIAN.search(kernel_version or "")
    if m:
        return m.group(1)
    m = _LEADING.match(release)
    return _format(m) if m else release


def _format(m: re.Match[str]) -> str:
    major, minor, patch, rc = m.groups()
    text = f"{major}.{minor}" + (f".{patch}" if patch is not None else "")
    return text + (f"~{rc}" if rc else "")


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key: 6.1.176 < 6.12.95 < 7.3~rc7 < 7.3 = 7.3.0; text that is no version sorts last, by name."""
    main, _, rc = version.partition("~")
    if not re.match(r"^\d+(\.\d+)*$", main):
        return (1, (), 0, 0, version)
    nums = [int(x) for x in main.split(".")]
    while len(nums) < 3:
        nums.append(0)
    rc_num = int(re.sub(r"\D", "", rc) or 0)
    return (0, tuple(nums), 0 if rc else 1, rc_num, version)


# -- change points ---------------------------------------------------------------------------------------------
@dataclass
class SeriesPoint:
    """One point of the series: a kernel (all its repetitions pooled) or one run."""

    name: str  # the kernel release or the run id
    version: str  # what it is ordered by (upstream version, or time)
    values: list[float]
    runs: list[str] = field(default_factory=list)
    n: int = 0
    median: float = float("nan")
    ci95: tuple[float, float] = (float("nan"), float("nan"))

    def __post_init__(self) -> None:
        if self.values and not self.n:  # n given: the caller already has the estimate (no bootstrap here)
            est = median_ci(self.values)
            self.n, self.median, self.ci95 = est.n, est.median, est.ci95

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChangePoint:
    """A step between two adjacent points, judged on the pooled segments either side of it."""

    index: int  # position of the first point after the step
    before: str  # the last point (kernel) before the step
    after: str  # the first point after it
    before_version: str
    after_version: str
    segment_before: tuple[str, str]  # first and last point of the segment before
    segment_after: tuple[str, str]
    n_before: int
    n_after: int
    median_before: float
    median_after: float
    change: float  # relative change of the pooled medians, after vs before
    ci95: tuple[float, float]  # bootstrap 95% CI of that change
    p_value: float  # one-sided exact Mann-Whitney U
    verdict: str  # regressed or improved

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _robust_sigma(points: Sequence[SeriesPoint]) -> float:
    """The spread of one repetition, pooled over the points: median of each point's scaled MAD."""
    mads = []
    for p in points:
        v = np.asarray(p.values, float)
        if v.size >= 2:
            mads.append(1.4826 * float(np.median(np.abs(v - np.median(v)))))
    positive = [m for m in mads if m > 0]
    if positive:
        return float(np.median(positive))
    scale = float(np.median([abs(p.median) for p in points])) or 1.0
    return 1e-3 * scale  # every point constant: any difference between medians is a candidate


def propose(points: Sequence[SeriesPoint], penalty: float | None = None) -> list[int]:
    """Candidate change points (indices of the first point after each step) by PELT over standardised medians.

    The medians are divided by the standard error of a median (1.2533 x the
    pooled repetition spread / sqrt(n)) so that the penalty is in units of
    noise; `penalty` defaults to 2 ln K for K points. Fewer than two points: none.
    """
    k = len(points)
    if k < 2:
        return []
    sigma = _robust_sigma(points)
    n = max(1.0, float(np.median([max(p.n, 1) for p in points])))
    se = 1.2533 * sigma / math.sqrt(n)
    signal = np.array([p.median for p in points], float) / se
    pen = penalty if penalty is not None else max(1.0, 2 * math.log(k))
    if k == 2:
        return [1] if (signal[1] - signal[0]) ** 2 / 2 > pen else []
    import ruptures as rpt

    algo = rpt.Pelt(model="l2", min_size=1, jump=1).fit(signal.reshape(-1, 1))
    return [b for b in algo.predict(pen=pen) if b < k]


#: judges one step: (segment before, segment after) -> the Comparison `compare_samples` would give (its verdict,
#: change, p-value, medians and sizes; a caller may memoize it or skip the bootstrap CI, never change the rule)
SegmentJudge = Callable[[list[float], list[float]], Comparison]


def _judge(points: Sequence[SeriesPoint], bkps: list[int], metric: str, better: str, threshold: float,
           alpha: float, judge: SegmentJudge | None = None) -> list[Comparison]:
    edges = [0, *bkps, len(points)]
    out = []
    for i, b in enumerate(bkps):
        left = [v for p in points[edges[i]:b] for v in p.values]
        right = [v for p in points[b:edges[i + 2]] for v in p.values]
        out.append(judge(left, right) if judge else
                   compare_samples(left, right, metric=metric, better=better, threshold=threshold, alpha=alpha))
    return out


def segment_pairs(points: Sequence[SeriesPoint], bkps: list[int]) -> list[tuple[list[float], list[float]]]:
    """The (before, after) pooled segments the first round of `change_points` judges for candidates `bkps`."""
    edges = [0, *bkps, len(points)]
    return [([v for p in points[edges[i]:b] for v in p.values], [v for p in points[b:edges[i + 2]] for v in p.values])
            for i, b in enumerate(bkps)]


def change_points(points: Sequence[SeriesPoint], metric: str = "goodput_mbps", better: str = "higher",
                  threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
                  penalty: float | None = None, judge: SegmentJudge | None = None,
                  candidates: list[int] | None = None, too_small: list[tuple[str, str, int, int]] | None = None
                  ) -> list[ChangePoint]:
    """The change points of an ordered series that pass the compare rule, in series order.

    `points` are ordered (by kernel version, or by time); each needs at least
    one value. Candidates come from `propose`; each is judged on the pooled
    repetitions of its two neighbouring segments, the least significant
    failing candidate is dropped and the rest judged again, until all pass.
    `judge` replaces `compare_samples` for the segments (the report's memoized rule); `candidates` are
    `propose(points, penalty)` when the caller already has them. A candidate with fewer than
    `min_repetitions(alpha)` repetitions on a side fails whatever its p-value (pooled unequal sides can reach
    p < alpha with 2 against 30, which is no evidence about the side of 2); each such candidate is appended to
    `too_small` as (before, after, n before, n after) when a list is given.
    """
    points = [p for p in points if p.values]
    bkps = list(candidates) if candidates is not None else propose(points, penalty)
    least = min_repetitions(alpha)
    while bkps:
        comps = _judge(points, bkps, metric, better, threshold, alpha, judge)
        small = [i for i, c in enumerate(comps) if min(c.n_baseline, c.n_candidate) < least]
        if small:  # judged only on sides the rule can decide: the smallest such candidate goes first
            i = min(small, key=lambda j: min(comps[j].n_baseline, comps[j].n_candidate))
            if too_small is not None:
                too_small.append((points[bkps[i] - 1].name, points[bkps[i]].name, comps[i].n_baseline, comps[i].n_candidate))
            bkps.pop(i)
            continue
        failing = [(c.p_value, -abs(c.change), i) for i, c in enumerate(comps) if c.verdict == "unchanged"]
        if not failing:
            break
        bkps.pop(max(failing)[2])
    else:
        return []
    edges = [0, *bkps, len(points)]
    out = []
    for i, (b, c) in enumerate(zip(bkps, comps)):
        out.append(ChangePoint(
            index=b, before=points[b - 1].name, after=points[b].name,
            before_version=points[b - 1].version, after_version=points[b].version,
            segment_before=(points[edges[i]].name, points[b - 1].name), segment_after=(points[b].name, points[edges[i + 2] - 1].name),
            n_before=c.n_baseline, n_after=c.n_candidate, median_before=c.baseline_median, median_after=c.candidate_median,
            change=c.change, ci95=c.ci95, p_value=c.p_value, verdict=c.verdict))
    return out
