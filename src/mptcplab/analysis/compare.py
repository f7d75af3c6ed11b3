"""Is the candidate slower than the baseline, and how sure are we? (docs/statistics.md)

Per scenario and metric: the medians of both sides, the relative change of
the candidate's median, its percentile-bootstrap 95% CI, the one-sided exact
Mann-Whitney U p-value in the direction of the change, and a verdict:

    regressed  iff  change is worse by at least `threshold`  and  p < alpha
    improved   iff  change is better by at least `threshold` and  p < alpha
    unchanged  otherwise

The rank test bounds the false-alarm rate by alpha for any distribution of
the repetitions (they need only be exchangeable, which interleaving helps);
the threshold keeps statistically real but practically irrelevant shifts
from failing a CI job. With 5 repetitions per side the smallest attainable
one-sided p is 1/252 = 0.004, so alpha = 0.01 admits at most one swapped pair.

Paired sides (every run on both from a deterministic executor: UML with time
travel and one seed base, so repetition i of either side drew the same seed)
are judged paired instead: the change is the median of the per-repetition
relative differences, its CI a bootstrap over pairs, and the test the exact
one-sided Wilcoxon signed-rank test on the per-repetition differences
(common random numbers; `pair_up`, docs/statistics.md).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from math import comb
from typing import Any, Literal

import numpy as np
from scipy.stats import PermutationMethod, mannwhitneyu, wilcoxon

BOOTSTRAP_RESAMPLES = 4000
SEED = 20261125
DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01

Verdict = Literal["improved", "regressed", "unchanged"]
#: which test judged a Comparison: unpaired exact Mann-Whitney U, paired exact Wilcoxon signed-rank, Fisher exact (pass_rate)
Test = Literal["mann-whitney", "wilcoxon-paired", "fisher"]


@dataclass
class Comparison:
    scenario: str
    metric: str
    better: str  # "higher" or "lower"
    baseline_median: float
    candidate_median: float
    n_baseline: int
    n_candidate: int
    change: float  # relative change of the candidate's median: (c - b) / b
    ci95: tuple[float, float]
    p_value: float  # one-sided, in the direction of the observed change
    verdict: Verdict
    notes: list[str] = field(default_factory=list)
    baseline_values: list[float] = field(default_factory=list)  # the repetitions behind the medians, for plots and re-analysis
    candidate_values: list[float] = field(default_factory=list)
    test: Test = "mann-whitney"  # the test behind p_value (see pair_up for when the paired one applies)
    n_pairs: int | None = None  # with the paired test: how many repetition pairs it used

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def min_p_value(n1: int, n2: int) -> float:
    """The smallest one-sided exact Mann-Whitney p-value that n1 vs n2 repetitions can reach."""
    return 1 / comb(n1 + n2, n1)


def min_p_value_paired(n_pairs: int) -> float:
    """The smallest one-sided exact Wilcoxon signed-rank p-value that n pairs can reach: 1 / 2^n (every sign alike)."""
    return 1 / 2 ** n_pairs


# -- paired sides (common random numbers) -------------------------------------------------------------------
@dataclass(frozen=True)
class Draw:
    """Which random draws one repetition used, from its run's environment.

    `seed` is the run's seed base when the executor is deterministic (time
    mode "travel" and a recorded seed: repetition `index` drew seed base +
    index, the same on every kernel), None otherwise (host, QEMU, real time,
    `seed = "random"`): such draws cannot be matched with another run's.
    """

    index: int
    seed: int | None
    executor: str = ""
    time_mode: str = ""


def draw_of(env: Mapping[str, Any], index: int) -> Draw:
    """The Draw of repetition `index` of a run whose stored environment is `env`."""
    executor = str(env.get("executor") or ("qemu" if env.get("guest") else "host"))
    time_mode = str(env.get("time_mode") or "")
    seed = env.get("seed")
    deterministic = time_mode == "travel" and isinstance(seed, int) and not isinstance(seed, bool)
    return Draw(index=int(index), seed=int(seed) if deterministic else None, executor=executor, time_mode=time_mode)


def result_draws(env: Mapping[str, Any], indices: Sequence[int]) -> list[Draw]:
    """The Draws of one run's repetitions `indices` (in the order of its values)."""
    return [draw_of(env, i) for i in indices]


def sample_draws(sample: Any, envs: Mapping[str, tuple[str, Mapping[str, Any]]]) -> list[Draw] | None:
    """The Draws of a stored Sample's values (store.samples: `indices`, `value_runs`) given
    store.run_environments (run id -> (backend, environment)); None when the sample lacks them."""
    indices, runs = getattr(sample, "indices", None), getattr(sample, "value_runs", None)
    if not indices or not runs or len(indices) != len(sample.values):
        return None
    return [draw_of(envs.get(u, ("", {}))[1], i) for i, u in zip(indices, runs)]


def _why_unpaired(side: str, draws: Sequence[Draw]) -> str | None:
    """Why `side` cannot be paired (a phrase), or None when every draw is deterministic with one seed base."""
    bad = next((d for d in draws if d.seed is None), None)
    if bad is not None:
        if bad.time_mode == "travel":
            return f"the {side} ran with seed = random (independent draws)"
        if bad.time_mode:
            return f"the {side} ran on {bad.executor} in {bad.time_mode} time (not deterministic)"
        return f"the {side} ran on {bad.executor or 'an unrecorded executor'} (not deterministic)"
    bases = sorted({d.seed for d in draws if d.seed is not None})
    if len(bases) > 1:
        return f"the {side}'s runs used different seed bases ({', '.join(map(str, bases))})"
    return None


@dataclass
class Pairs:
    """Repetitions matched by index across two paired sides: per pair the baseline and candidate value."""

    baseline: list[float]
    candidate: list[float]
    indices: list[int]
    notes: list[str] = field(default_factory=list)


def pair_up(baseline: Sequence[float], candidate: Sequence[float], baseline_draws: Sequence[Draw] | None,
            candidate_draws: Sequence[Draw] | None) -> tuple[Pairs | None, list[str]]:
    """Match the two sides repetition by repetition when both are paired; else (None, notes saying why not).

    Paired: every draw on both sides has a seed (deterministic executor), the
    executor and the seed base are the same on both sides, and at least one
    repetition index is present on both. Then pairs are the indices present on
    both sides (the others dropped, with a note); a side holding several runs
    contributes the median of its values at each index (identical runs of one
    deterministic kernel give identical values). Without draws for either side
    (numbers from nowhere) the sides are unpaired and there is no note; the
    fallback is noted only where a side ran in deterministic time (UML).
    Raises ValueError when a draws list is not as long as its values.
    """
    if baseline_draws is None and candidate_draws is None:
        return None, []
    for values, draws in ((baseline, baseline_draws), (candidate, candidate_draws)):
        if draws is not None and len(draws) != len(values):
            raise ValueError("each value needs its Draw")
    why = [w for w in (_why_unpaired("baseline", baseline_draws or [Draw(-1, None)]),
                       _why_unpaired("candidate", candidate_draws or [Draw(-1, None)])) if w]
    if not why:
        assert baseline_draws is not None and candidate_draws is not None
        b0, c0 = baseline_draws[0], candidate_draws[0]
        if b0.executor != c0.executor:
            why.append(f"the sides ran on different executors (baseline {b0.executor}; candidate {c0.executor})")
        elif b0.seed != c0.seed:
            why.append(f"the sides used different seed bases (baseline {b0.seed}; candidate {c0.seed}): "
                       "repetition i drew different seeds")
    if why:  # said only where a side ran in deterministic time (two host runs are unpaired as a matter of course)
        travel = any(d.time_mode == "travel" for d in [*(baseline_draws or []), *(candidate_draws or [])])
        return None, [f"unpaired test (Mann-Whitney): {'; '.join(why)}"] if travel else []
    assert baseline_draws is not None and candidate_draws is not None

    def by_index(values: Sequence[float], draws: Sequence[Draw]) -> dict[int, float]:
        groups: dict[int, list[float]] = {}
        for v, d in zip(values, draws):
            groups.setdefault(d.index, []).append(float(v))
        return {i: float(np.median(g)) for i, g in groups.items()}

    b, c = by_index(baseline, baseline_draws), by_index(candidate, candidate_draws)
    common = sorted(set(b) & set(c))
    if not common:
        return None, ["unpaired test: the paired sides share no repetition index"]
    notes = []
    dropped = len(set(b) ^ set(c))
    if dropped:
        notes.append(f"paired test on {len(common)} repetition pairs: {dropped} repetition(s) without a partner "
                     f"of the same index dropped ({len(set(b) - set(c))} of the baseline's, {len(set(c) - set(b))} of the candidate's)")
    if len(b) < len(baseline) or len(c) < len(candidate):
        notes.append("a paired side holds several runs with the same repetition index: the median per index is paired")
    return Pairs(baseline=[b[i] for i in common], candidate=[c[i] for i in common], indices=common, notes=notes), []


def relative_differences(pairs: Pairs) -> np.ndarray:
    """Per pair c_i / b_i - 1 (0 when both are 0, +-inf when only the baseline is 0)."""
    b, c = np.asarray(pairs.baseline, float), np.asarray(pairs.candidate, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(b != 0, c / np.where(b != 0, b, 1) - 1, np.where(c == b, 0.0, np.sign(c - b) * np.inf))
    return rel


def paired_change_ci(pairs: Pairs, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the median relative difference, resampling pairs (never the sides apart)."""
    rel = relative_differences(pairs)
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, rel.size, size=(BOOTSTRAP_RESAMPLES, rel.size))
    meds = np.median(rel[idx], axis=1)
    meds = meds[np.isfinite(meds)]
    if meds.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(meds, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def paired_p(pairs: Pairs, change: float) -> float:
    """One-sided exact Wilcoxon signed-rank p-value of the differences c_i - b_i, in the direction of `change`.

    Zero differences are dropped before ranking (Wilcoxon's own rule, scipy's
    zero_method="wilcox"): a pair where both kernels gave the same value for
    the same draws says nothing about a direction, and flipping its sign
    leaves it unchanged, so the test conditional on the non-zero pairs keeps
    its exact level. All differences zero (deterministic runs of identical
    kernels): p = 1. Without ties among |d| the exact null distribution of
    the signed-rank sum; with ties an exhaustive sign-flip permutation test
    of the same statistic (random with a fixed seed beyond 2^14 sign patterns).
    The difference c - b, not c / b - 1: under "no effect" the two values of
    a pair are exchangeable, which makes c - b symmetric about 0 (c / b - 1 is not).
    """
    d = np.asarray(pairs.candidate, float) - np.asarray(pairs.baseline, float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    alternative = "greater" if change >= 0 else "less"
    ties = np.unique(np.abs(d)).size < d.size
    method: Any = PermutationMethod(n_resamples=2 ** 14, random_state=SEED) if ties else "exact"
    return float(wilcoxon(d, alternative=alternative, method=method, zero_method="wilcox").pvalue)


def too_few_note(n_baseline: int, n_candidate: int, alpha: float, n_pairs: int | None = None) -> str | None:
    """The note when the sizes can never reach p < alpha (the smallest exact p of the test in use), else None."""
    if n_pairs is not None:
        if min_p_value_paired(n_pairs) < alpha:
            return None
        return (f"{n_pairs} repetition pairs can never reach p < {alpha:g} in the paired test (smallest p = 1/2^{n_pairs}): "
                f"the verdict can only be unchanged (7 pairs are enough for alpha = 0.01)")
    if min_p_value(n_baseline, n_candidate) < alpha:
        return None
    return (f"{n_baseline} vs {n_candidate} repetitions can never reach p < {alpha:g}: "
            f"the verdict can only be unchanged (5 per side are enough for alpha = 0.01)")


def min_repetitions(alpha: float) -> int:
    """The fewest repetitions per side with which the one-sided exact Mann-Whitney test can reach p < alpha
    (n vs n: p >= 1 / C(2n, n)): 5 at alpha 0.01 (1/252), 4 at 0.05 (1/70). Fewer can only be judged unchanged."""
    n = 1
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def change_ci(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of median(candidate)/median(baseline) - 1, sides resampled independently."""
    b, c = np.asarray(baseline, float), np.asarray(candidate, float)
    rng = np.random.default_rng(SEED)
    mb = np.median(rng.choice(b, size=(BOOTSTRAP_RESAMPLES, b.size)), axis=1)
    mc = np.median(rng.choice(c, size=(BOOTSTRAP_RESAMPLES, c.size)), axis=1)
    ratio = mc[mb != 0] / mb[mb != 0] - 1
    if ratio.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratio, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def directional_p(baseline: Sequence[float], candidate: Sequence[float], change: float) -> float:
    """One-sided Mann-Whitney U p-value for 'candidate > baseline' if the medians rose, else for '<'."""
    if len(set(baseline) | set(candidate)) == 1:
        return 1.0  # every value equal: no evidence of any shift
    alternative = "greater" if change >= 0 else "less"
    ties = len(set(baseline) | set(candidate)) < len(baseline) + len(candidate)
    # exact null distribution without ties; with ties a permutation test (exhaustive at these sizes)
    method: Any = PermutationMethod(n_resamples=20000, random_state=SEED) if ties else "exact"
    return float(mannwhitneyu(candidate, baseline, alternative=alternative, method=method).pvalue)


def proportion_p(baseline: Sequence[float], candidate: Sequence[float], change: float) -> float:
    """One-sided Fisher exact p-value that the candidate's rate of 1s is higher (change >= 0) or lower than the baseline's.

    Values are per-repetition outcomes, 1.0 (pass) or 0.0 (fail); Fisher (1922) on the 2x2 table.
    """
    from scipy.stats import fisher_exact

    b1, c1 = sum(v >= 0.5 for v in baseline), sum(v >= 0.5 for v in candidate)
    table = [[c1, len(candidate) - c1], [b1, len(baseline) - b1]]
    return float(fisher_exact(table, alternative="greater" if change >= 0 else "less").pvalue)


def proportion_change_ci(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of rate(candidate) - rate(baseline), sides resampled independently."""
    b, c = np.asarray(baseline, float), np.asarray(candidate, float)
    rng = np.random.default_rng(SEED)
    diff = rng.choice(c, size=(BOOTSTRAP_RESAMPLES, c.size)).mean(axis=1) - rng.choice(b, size=(BOOTSTRAP_RESAMPLES, b.size)).mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diff, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def decide(change: float, p_value: float, better: str, threshold: float, alpha: float) -> Verdict:
    if p_value >= alpha or abs(change) < threshold:
        return "unchanged"
    good = change > 0 if better == "higher" else change < 0
    return "improved" if good else "regressed"


def compare_samples(baseline: Sequence[float], candidate: Sequence[float], *, scenario: str = "", metric: str = "goodput_mbps",
                    better: str = "higher", threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
                    baseline_draws: Sequence[Draw] | None = None, candidate_draws: Sequence[Draw] | None = None) -> Comparison:
    """The comparison of one metric of one scenario: the decision rule the CLI and the benchmark share.

    With `baseline_draws` and `candidate_draws` (one Draw per value, from the
    runs' environments) two paired sides (`pair_up`) are judged paired: change
    = median of the per-pair relative differences, CI by bootstrap over pairs,
    p from the exact one-sided Wilcoxon signed-rank test (test "wilcoxon-paired");
    sides that cannot be paired fall back to the unpaired rule with a note.

    For a proportion metric (pass_rate: each value 1.0 or 0.0) `change` is the
    difference of the rates (candidate - baseline), the test is one-sided
    Fisher exact and the threshold does not apply: a lower pass rate with
    p < alpha is a regression. Raises ValueError when a side is empty.
    """
    if not baseline or not candidate:
        raise ValueError("both sides need at least one value")
    from ..metrics import metric as metric_def

    if metric_def(metric).proportion:
        rb, rc = float(np.mean(baseline)), float(np.mean(candidate))
        change = rc - rb
        p = proportion_p(baseline, candidate, change) if change else 1.0
        return Comparison(scenario=scenario, metric=metric, better=better, baseline_median=rb, candidate_median=rc,
                          n_baseline=len(baseline), n_candidate=len(candidate), change=change,
                          ci95=proportion_change_ci(baseline, candidate), p_value=p,
                          verdict=decide(change, p, better, 0.0, alpha),
                          notes=["pass_rate: rates of repetitions completed within the [run] budget (without one: "
                                 "completed); change in percentage points, one-sided Fisher exact test"],
                          baseline_values=[float(v) for v in baseline], candidate_values=[float(v) for v in candidate],
                          test="fisher")
    mb, mc = float(np.median(baseline)), float(np.median(candidate))
    pairs, notes = pair_up(baseline, candidate, baseline_draws, candidate_draws)
    if pairs is not None:
        return _compare_pairs(pairs, baseline, candidate, mb, mc, scenario=scenario, metric=metric, better=better,
                              threshold=threshold, alpha=alpha)
    change = (mc - mb) / mb if mb else (0.0 if mc == mb else float("inf"))
    p = directional_p(baseline, candidate, change)
    few = too_few_note(len(baseline), len(candidate), alpha)
    notes += [few] if few else []
    return Comparison(scenario=scenario, metric=metric, better=better, baseline_median=mb, candidate_median=mc,
                      n_baseline=len(baseline), n_candidate=len(candidate), change=change,
                      ci95=change_ci(baseline, candidate), p_value=p,
                      verdict=decide(change, p, better, threshold, alpha), notes=notes,
                      baseline_values=[float(v) for v in baseline], candidate_values=[float(v) for v in candidate])


def _compare_pairs(pairs: Pairs, baseline: Sequence[float], candidate: Sequence[float], mb: float, mc: float, *,
                   scenario: str, metric: str, better: str, threshold: float, alpha: float) -> Comparison:
    """compare_samples on paired sides: the medians stay the sides' own; change, CI and p come from the pairs."""
    rel = relative_differences(pairs)
    change = float(np.median(rel))
    p = paired_p(pairs, change)
    zeros = sum(1 for b, c in zip(pairs.baseline, pairs.candidate) if b == c)
    notes = [f"paired: {len(rel)} repetition pairs with the same seeds (deterministic executor, one seed base); "
                 f"exact one-sided Wilcoxon signed-rank test on the per-pair differences"
                 + (f", {zeros} zero difference(s) dropped" if zeros else "")]
    notes += pairs.notes
    few = too_few_note(len(baseline), len(candidate), alpha, n_pairs=len(rel))
    notes += [few] if few else []
    return Comparison(scenario=scenario, metric=metric, better=better, baseline_median=mb, candidate_median=mc,
                      n_baseline=len(baseline), n_candidate=len(candidate), change=change,
                      ci95=paired_change_ci(pairs), p_value=p, verdict=decide(change, p, better, threshold, alpha),
                      notes=notes, baseline_values=[float(v) for v in baseline], candidate_values=[float(v) for v in candidate],
                      test="wilcoxon-paired", n_pairs=len(rel))


@dataclass
class Report:
    """A whole `mptcplab compare`: its comparisons and the notes that go on their own lines."""

    baseline: str
    candidate: str
    threshold: float
    alpha: float
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(c.verdict == "regressed" for c in self.comparisons)

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "candidate": self.candidate, "threshold": self.threshold, "alpha": self.alpha,
                "regressed": self.regressed, "notes": self.notes, "comparisons": [c.to_json() for c in self.comparisons]}


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def rows(report: Report) -> list[list[str]]:
    """The table both the terminal and Markdown render (a paired comparison's p reads "(paired W)": Wilcoxon, not MWU)."""
    return [[c.scenario, c.metric, f"{c.baseline_median:.3f} (n={c.n_baseline})", f"{c.candidate_median:.3f} (n={c.n_candidate})",
             _pct(c.change), f"[{_pct(c.ci95[0])}, {_pct(c.ci95[1])}]",
             (f"{c.p_value:.4f}" if c.p_value >= 1e-4 else f"{c.p_value:.1e}") + (" (paired W)" if c.test == "wilcoxon-paired" else ""),
             c.verdict]
            for c in report.comparisons]


HEADER = ["scenario", "metric", "baseline median", "candidate median", "change", "95% CI of change", "p (MWU, one-sided)", "verdict"]


def to_markdown(report: Report, report_url: str | None = None) -> str:
    """Ready to paste into a mailing-list reply or a pull-request comment (with a link to the report page if given)."""
    verdict = "**regressed**" if report.regressed else "no regression"
    lines = [f"mptcplab compare: baseline `{report.baseline}` vs candidate `{report.candidate}` — {verdict} "
             f"(threshold {report.threshold * 100:g}%, alpha {report.alpha:g})", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows(report):
        row[-1] = f"**{row[-1]}**" if row[-1] == "regressed" else row[-1]
        lines.append("| " + " | ".join(row) + " |")
    notes = report.notes + [n for c in report.comparisons for n in c.notes]
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in dict.fromkeys(notes)]
    lines += ["", "Verdict: regressed/improved when the median changed by at least the threshold and the one-sided "
              "exact Mann-Whitney U test gives p < alpha; 95% CI by percentile bootstrap."]
    if any(c.test == "wilcoxon-paired" for c in report.comparisons):
        lines += ["Paired sides (deterministic executor, one seed base): the change is the median of the per-repetition "
                  "relative differences, the test the exact one-sided Wilcoxon signed-rank test, the CI a bootstrap over pairs."]
    if report_url:
        lines += ["", f"Every repetition, run and condition: [the report]({report_url})"]
    return "\n".join(lines)


def to_junit(report: Report, report_url: str | None = None) -> str:
    """JUnit XML for any CI system: one test case per scenario × metric, a failure when it regressed.

    Improved and unchanged cases pass; the verdict line of each case is in
    its system-out, and the notes (and the report's URL) are suite properties.
    """
    import xml.etree.ElementTree as ET

    failures = sum(c.verdict == "regressed" for c in report.comparisons)
    suite = ET.Element("testsuite", name=f"mptcplab compare {report.baseline} vs {report.candidate}",
                       tests=str(len(report.comparisons)), failures=str(failures), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    for name, value in (("baseline", report.baseline), ("candidate", report.candidate),
                        ("threshold", f"{report.threshold:g}"), ("alpha", f"{report.alpha:g}"),
                        *((("report", report_url),) if report_url else ()),
                        *(("note", n) for n in dict.fromkeys(report.notes + [n for c in report.comparisons for n in c.notes]))):
        ET.SubElement(props, "property", name=name, value=value)
    for c, row in zip(report.comparisons, rows(report)):
        case = ET.SubElement(suite, "testcase", classname=f"mptcplab.{c.scenario}", name=c.metric, time="0")
        line = (f"{c.scenario} {c.metric}: {c.verdict}, median {row[2]} -> {row[3]}, change {row[4]} "
                f"(95% CI {row[5]}), p = {row[6]}")
        if c.verdict == "regressed":
            failure = ET.SubElement(case, "failure", message=line, type="regressed")
            failure.text = (f"baseline values: {c.baseline_values}\ncandidate values: {c.candidate_values}"
                            + (f"\nreport: {report_url}" if report_url else ""))
        ET.SubElement(case, "system-out").text = line
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def compare_stored(store: Any, baseline: str, candidate: str, metrics: Sequence[str] | None = None,
                   threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> Report:
    """Compare the runs two selectors name in `store`, paired by scenario name (UsageError if they pair nothing).

    `metrics` None: each scenario by its main metric (`Store.main_metrics`: p99 latency for rr, goodput for
    bulk, ...), the metric history, runs and the report judge it by too; else each scenario by every metric given.
    UsageError when both selectors select the same runs (a selection compared with itself is never a question).
    """
    from ..errors import UsageError
    from ..metrics import metric as metric_def

    sides = {}
    for side, selector in (("baseline", baseline), ("candidate", candidate)):
        runs = store.select_runs(selector)
        if not runs:
            raise UsageError(f"--{side} {selector!r} matches no run in {store.where}",
                             "a selector is a run id, a label, a kernel release or a tag key=value; list runs with: mptcplab runs")
        sides[side] = runs
    if set(sides["baseline"]) == set(sides["candidate"]):
        n = len(sides["baseline"])
        raise UsageError(f"--baseline {baseline!r} and --candidate {candidate!r} select the same {n} run{'s' if n != 1 else ''}: "
                         "a selection compared with itself is always unchanged",
                         "give two different selections, e.g. --baseline kernel:6.1 --candidate kernel:6.12")
    report = Report(baseline=baseline, candidate=candidate, threshold=threshold, alpha=alpha)
    envs = store.run_environments([uid for side in sides.values() for uid in side])
    if metrics is None:  # each scenario by its own main metric: one pass per distinct main metric
        mains = store.main_metrics()
        plan = [(m, {n for n, x in mains.items() if x == m}) for m in dict.fromkeys(sorted(set(mains.values())))]
    else:
        plan = [(m, None) for m in metrics]
    pending: list[Comparison] = []
    for metric, only in plan:
        b_samples = store.samples(sides["baseline"], metric)
        c_samples = store.samples(sides["candidate"], metric)
        if only is not None:
            b_samples = {n: v for n, v in b_samples.items() if n in only}
            c_samples = {n: v for n, v in c_samples.items() if n in only}
        common = sorted(set(b_samples) & set(c_samples))
        if not b_samples and not c_samples and only is None:  # --metric names what neither side's workload measures
            raise UsageError(f"no repetition on either side has the metric {metric}",
                             "leave out --metric to judge each scenario by its main metric")
        if not common and only is None:
            raise UsageError(f"the baseline ({', '.join(sorted(b_samples)) or 'no measured repetitions'}) and the candidate "
                             f"({', '.join(sorted(c_samples)) or 'no measured repetitions'}) share no scenario to compare",
                             "runs are paired by scenario name")
        for name in sorted(set(b_samples) ^ set(c_samples)):
            side = "baseline" if name in b_samples else "candidate"
            report.notes.append(f"scenario {name} ran only in the {side}: not compared")
        if not common:
            continue
        for name in common:
            b, c = b_samples[name], c_samples[name]
            if b.versions != c.versions:
                report.notes.append(f"scenario {name}: the sides ran different versions of the scenario file "
                                    f"(baseline {', '.join(sorted(b.versions))}; candidate {', '.join(sorted(c.versions))}); compared anyway")
            report.notes.extend(_condition_notes(store, name, b.runs, c.runs))
            pending.append(compare_samples(b.values, c.values, scenario=name, metric=metric,
                                           better=metric_def(metric).better, threshold=threshold, alpha=alpha,
                                           baseline_draws=sample_draws(b, envs), candidate_draws=sample_draws(c, envs)))
    if not pending:
        raise UsageError(f"the baseline {baseline!r} and the candidate {candidate!r} share no scenario with measured "
                         "repetitions of its main metric to compare", "runs are paired by scenario name; list them with: mptcplab runs")
    report.comparisons = sorted(pending, key=lambda c: c.scenario) if metrics is None else pending
    report.notes = list(dict.fromkeys(report.notes))
    return report


def _condition_notes(store: Any, scenario: str, baseline_runs: set[str], candidate_runs: set[str]) -> list[str]:
    """One line per condition (congestion control, buffers, sysctls, backend, accelerator, machine) the sides differ in."""
    from .conditions import conditions, differing_lines

    envs = store.run_environments(baseline_runs | candidate_runs)
    side = lambda runs: [conditions(envs[r][1], envs[r][0]) for r in sorted(runs) if r in envs]  # noqa: E731
    return differing_lines(side(baseline_runs), side(candidate_runs), what=f"scenario {scenario}")
