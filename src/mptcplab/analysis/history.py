"""One scenario's metric across its stored runs, oldest first, with each step judged.

`compare` answers "is this candidate slower than that baseline?". Tracking a
scheduler over kernel releases or patch series asks it again at every step:
each run is compared with the previous one by the same rule (threshold and
one-sided Mann-Whitney U, or the paired Wilcoxon test when both runs ran
deterministically with one seed base; docs/statistics.md), so a step that `compare` would
call a regression is flagged where it happened. A step where the scenario file
changed is marked: its change may be the scenario's, not the kernel's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison, Draw, compare_samples, sample_draws
from .stats import median_ci


@dataclass
class Point:
    """One run: where it stands, and how it moved from the run before it."""

    run_id: str
    started_at: float
    kernel: str
    label: str | None
    scenario_hash: str
    status: str
    n: int
    median: float
    ci95: tuple[float, float]
    values: list[float]
    change: float | None = None  # relative to the previous point's median
    p_value: float | None = None
    verdict: str | None = None  # None for the first point
    version_changed: bool = False  # the scenario file differs from the previous point's
    #: conditions (congestion control, backend, ...) that differ from the previous point's
    conditions_changed: list[str] = field(default_factory=list)
    test: str | None = None  # the test of the step: mann-whitney, or wilcoxon-paired for two paired deterministic runs
    #: the random draws behind `values` (compare.Draw, one per value; empty: unknown, never paired); not in the JSON
    draws: list[Draw] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("draws")
        return out


@dataclass
class History:
    scenario: str
    metric: str
    better: str
    threshold: float
    alpha: float
    points: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> dict[str, int]:
        """How many steps were judged regressed, improved and unchanged."""
        out = {"regressed": 0, "improved": 0, "unchanged": 0}
        for p in self.points[1:]:
            if p.verdict:
                out[p.verdict] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "metric": self.metric, "better": self.better, "threshold": self.threshold,
                "alpha": self.alpha, "steps": self.steps, "notes": self.notes, "points": [p.to_json() for p in self.points]}


def judge_steps(points: list[Point], metric: str, better: str, threshold: float, alpha: float) -> list[str]:
    """Fill each point's change, p-value and verdict against the point before it; returns notes."""
    notes: list[str] = []
    for prev, cur in zip(points, points[1:]):
        c: Comparison = compare_samples(prev.values, cur.values, scenario="", metric=metric, better=better,
                                        threshold=threshold, alpha=alpha, baseline_draws=prev.draws or None,
                                        candidate_draws=cur.draws or None)
        cur.change, cur.p_value, cur.verdict, cur.test = c.change, c.p_value, c.verdict, c.test
        cur.version_changed = cur.scenario_hash != prev.scenario_hash
        notes.extend(c.notes)
    return list(dict.fromkeys(notes))


def history_stored(store: Any, scenario: str, metric: str = "goodput_mbps", flt: Any = None,
                   threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> History:
    """The history of `scenario` in `store` (runs also matching `flt`, a RunFilter); UsageError if it has none."""
    from dataclasses import replace

    from ..errors import UsageError
    from ..store import METRICS, RunFilter

    runs = store.list_runs(replace(flt or RunFilter(), scenario=scenario))
    if not runs:
        raise UsageError(f"no stored run of scenario {scenario!r} in {store.where} matches",
                         "list the stored runs with: mptcplab runs")
    better = METRICS.get(metric, "higher")
    hist = History(scenario=scenario, metric=metric, better=better, threshold=threshold, alpha=alpha)
    samples = store.samples([r.uid for r in runs], metric, per_run=True)  # one query, not one per run
    envs = store.run_environments(r.uid for r in runs)
    for r in reversed(runs):  # oldest first
        sample = samples.get(r.uid)
        if sample is None or not sample.values:
            hist.notes.append(f"run {r.uid} ({r.status}) has no measured repetition: left out")
            continue
        est = median_ci(sample.values)
        hist.points.append(Point(run_id=r.uid, started_at=r.started_at, kernel=r.kernel, label=r.label,
                                 scenario_hash=r.scenario_hash, status=r.status, n=est.n, median=est.median,
                                 ci95=est.ci95, values=list(sample.values), draws=sample_draws(sample, envs) or []))
    hist.notes = judge_steps(hist.points, metric, better, threshold, alpha) + hist.notes
    hist.notes += _condition_steps(store, hist.points)
    return hist


def _condition_steps(store: Any, points: list[Point]) -> list[str]:
    """Mark each point whose conditions differ from the point before; one note line per differing condition."""
    from .conditions import conditions, differing

    envs = store.run_environments(p.run_id for p in points)
    conds = [conditions(envs[p.run_id][1], envs[p.run_id][0]) if p.run_id in envs else {} for p in points]
    notes = []
    for (prev, prev_c), (cur, cur_c) in zip(zip(points, conds), list(zip(points, conds))[1:]):
        for name, before, after in differing([prev_c], [cur_c]):
            cur.conditions_changed.append(name)
            notes.append(f"run {cur.run_id}: {name} differs from run {prev.run_id} ({', '.join(before)} -> {', '.join(after)})")
    return notes
