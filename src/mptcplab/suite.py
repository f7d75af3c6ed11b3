"""The built-in scheduler suite: the cases schedulers get wrong, run together and summarised.

A suite case is a built-in scenario with a tier tag: `quick` (short, run on
every change: the quick tier takes at most 10 minutes with 5 repetitions on
a 2-core machine) or `full` (everything else). Its other tags say what it
exercises (rtt, rate, loss, failover, trace, paths, ...). `run_suite` runs
every selected case with repetitions interleaved across cases (and across
kernels in QEMU guests with `kernels`), storing through the options' sinks;
`summary_rows` is the case x kernel table with the verdict of each kernel
against the first by the rule of `compare`.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .analysis.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, compare_samples
from .analysis.stats import median_ci, proportion_ci
from .errors import UsageError
from .metrics import main_metric
from .metrics import metric as metric_def
from .result import Estimate, RunResult
from .scenario import Scenario, builtin_scenarios, load_scenario

TIERS = ("quick", "full")
#: the metric of a bulk case's summary and verdicts; each case is summarised by its workload's main metric
#: (`case_metric`: p99 latency for rr, p99 chunk delay for stream, ...) unless --metric names one for all
MAIN_METRIC = "goodput_mbps"


@dataclass
class SuiteCase:
    name: str
    tier: str  # quick or full
    tags: list[str]
    description: str
    budget_s: float | None
    path: Path
    #: what the summary judges it by unless --metric says otherwise (its workload's main metric)
    metric: str = MAIN_METRIC
    #: where budget_s comes from: "selftest" (simult_flows.sh's formula), "selftest-strict" (the same without its
    #: 200 ms pause) or None (the number the file writes)
    budget_rule: str | None = None

    @property
    def budget_text(self) -> str:
        """'budget 7.906 s: simult_flows.sh's formula, ...', '' without a budget."""
        if not self.budget_s:
            return ""
        why = {"selftest": ": simult_flows.sh's formula, its 200 ms join pause included",
               "selftest-strict": ": simult_flows.sh's formula minus its 200 ms join pause"}.get(self.budget_rule or "", "")
        return f"budget {self.budget_s:g} s{why}"


def suite_cases(tag: str | None = None) -> list[SuiteCase]:
    """The built-in scenarios that carry a tier tag (quick or full), quick first, then by name.

    With `tag`, only the cases carrying it (`quick`, `full`, `rtt`, `loss`, ...).
    UsageError when no case carries `tag`.
    """
    cases = []
    for name, path in builtin_scenarios().items():
        s = load_scenario(path)
        tier = next((t for t in TIERS if t in s.tags), None)
        if tier is None:
            continue
        cases.append(SuiteCase(name=name, tier=tier, tags=list(s.tags), description=s.description,
                               budget_s=s.run.budget, path=path, metric=case_metric(s),
                               budget_rule=s.run.budget_rule))
    cases.sort(key=lambda c: (TIERS.index(c.tier), c.name))
    if tag is None:
        return cases
    chosen = [c for c in cases if tag in c.tags]
    if not chosen:
        known = sorted({t for c in cases for t in c.tags})
        raise UsageError(f"--tag {tag!r}: no suite case carries it", f"tags in the suite: {', '.join(known)}")
    return chosen


def case_metric(scenario: Scenario) -> str:
    """The metric a case is summarised and judged by: its workload kind's main metric (metrics.MAIN_METRIC_BY_KIND)."""
    return main_metric(scenario.workload.kind)


def load_cases(cases: list[SuiteCase], overrides: list[str] | tuple[str, ...] = ()) -> list[Scenario]:
    """The scenarios of `cases` with `--set` overrides applied to each (ScenarioError when one does not apply)."""
    return [load_scenario(c.path, overrides) for c in cases]


@dataclass
class SuiteRun:
    """What `run_suite` produced: one RunResult per case (and kernel), the suite id they are tagged with."""

    suite_id: str
    kernels: list[str]  # releases, the first is the baseline; [host release] on the host
    results: list[RunResult] = field(default_factory=list)


def run_suite(scenarios: list[Scenario], options: Any, kernels: list[Any] | None = None,
              repeat: int | None = None) -> SuiteRun:
    """Run every scenario, repetitions interleaved (A B C A B C ...), on the host or on each of `kernels`.

    `options` is a runner.RunOptions (its sinks store each repetition as it
    ends); every run is tagged suite=<id> and tier=<quick|full|mixed>. With
    `kernels` (catalog Kernels) it is a matrix: one QEMU guest per kernel,
    kernels interleaved too. Raises what the runner raises (LabError family).
    """
    from .runner import run_scenarios

    suite_id = secrets.token_hex(4)
    tiers = {t for s in scenarios for t in s.tags if t in TIERS}
    tags = {**options.tags, "suite": suite_id, "tier": tiers.pop() if len(tiers) == 1 else "mixed"}
    opts = replace(options, tags=tags, repeat=repeat or options.repeat)
    if kernels:
        from .kernels.matrix import run_matrix

        cells = run_matrix(scenarios, kernels, opts.repeat, opts, timeseries=False)
        return SuiteRun(suite_id, [k.release for k in kernels], [c.result for c in cells])
    results = run_scenarios(scenarios, opts)
    return SuiteRun(suite_id, [results[0].kernel] if results else [], results)


def _values(result: RunResult, metric: str) -> list[float]:
    from .metrics import repetition_metrics

    m = metric_def(metric)
    reps = [r for r in result.repetitions if not r.warmup and r.baseline_path is None and (m.all_repetitions or r.completed)]
    values = [repetition_metrics(r) for r in reps]
    return [v[metric] for v in values if metric in v]


def summary_rows(results: list[RunResult], metric: str | dict[str, str] = MAIN_METRIC,
                 threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> list[dict[str, Any]]:
    """One row per case x kernel, in the order given: n, failed, median [95% CI] of the case's metric,
    pass rate [Wilson 95%] where the case has a budget, and change/p/verdict against the case's first kernel.

    `metric`: one metric for every case, or case name -> metric (`case_metric` of each; a case it does not
    name gets MAIN_METRIC). Keys: case, kernel, n, failed, metric, median, ci95, values (the values themselves
    when too few for an interval, stats.MIN_INTERVAL_N; else []), pass_rate, pass_ci95, passed,
    budget_s, change, change_ci95, p_value, verdict (None for the first kernel or when a side has no value).
    """
    rows = []
    first: dict[str, RunResult] = {}
    by_case = metric if isinstance(metric, dict) else {}
    for res in results:
        base = first.setdefault(res.scenario, res)
        case_m = by_case.get(res.scenario, MAIN_METRIC) if isinstance(metric, dict) else metric
        better = metric_def(case_m).better
        vals = _values(res, case_m)
        reps = [r for r in res.repetitions if not r.warmup and r.baseline_path is None]
        est: Estimate | None = median_ci(vals) if vals else None
        budget = res.environment.get("budget_s")
        judged = [r for r in reps if r.over_budget is not None or not r.completed]
        row: dict[str, Any] = {"case": res.scenario, "kernel": res.kernel, "run_id": res.run_id, "n": len(vals),
                               "failed": sum(1 for r in reps if not r.completed), "metric": case_m,
                               "median": est.median if est else None, "ci95": est.ci95 if est else None,
                               "values": est.values if est else [],
                               "budget_s": budget, "pass_rate": None, "pass_ci95": None, "passed": None,
                               "change": None, "change_ci95": None, "p_value": None, "verdict": None}
        if budget is not None and judged:
            passed = sum(1 for r in reps if r.passed)
            pr = proportion_ci(passed, len(reps))
            row.update(pass_rate=pr.median, pass_ci95=pr.ci95, passed=passed)
        if base is not res:
            base_vals = _values(base, case_m)
            if base_vals and vals:
                c = compare_samples(base_vals, vals, scenario=res.scenario, metric=case_m, better=better,
                                    threshold=threshold, alpha=alpha)
                row.update(change=c.change, change_ci95=c.ci95, p_value=c.p_value, verdict=c.verdict)
        rows.append(row)
    return rows
