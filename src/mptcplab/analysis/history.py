"""One scenario's metric across its stored runs, oldest first, with each step judged.

`compare` answers "is this candidate slower than that baseline?". Tracking a
scheduler over kernel releases or patch series asks it again at every step:
each run is compared with the previous one by the same rule (threshold and
one-sided Mann-Whitney U, docs/statistics.md), so a step that `compare` would
call a regression is flagged where it happened. A step where the scenario file
changed is marked: its change may be the scenario's, not the kernel's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison, compare_samples
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
    #: the upstream version of its kernel ('6.1.176' for 6.1.0-50-cloud-amd64), when the environment says it
    version: str = ""
    #: the series it belongs to: its SERIES_CONDITIONS in words where the history's series differ ('' when the
    #: history has one series or --mix joined them); a point is judged only against the point before it in its series
    series: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    """Fill each point's change, p-value and verdict against the point before it in its series; returns notes."""
    notes: list[str] = []
    last: dict[str, Point] = {}
    pairs = []
    for cur in points:
        if cur.series in last:
            pairs.append((last[cur.series], cur))
        last[cur.series] = cur
    for prev, cur in pairs:
        c: Comparison = compare_samples(prev.values, cur.values, scenario="", metric=metric, better=better,
                                        threshold=threshold, alpha=alpha)
        cur.change, cur.p_value, cur.verdict = c.change, c.p_value, c.verdict
        cur.version_changed = cur.scenario_hash != prev.scenario_hash
        notes.extend(c.notes)
    return list(dict.fromkeys(notes))


def history_stored(store: Any, scenario: str, metric: str | None = None, flt: Any = None,
                   threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA, mix: bool = False) -> History:
    """The history of `scenario` in `store` (runs also matching `flt`, a RunFilter); UsageError if it has none.

    `metric` None: the scenario's main metric (Store.main_metrics), as compare, runs and the report judge it.
    Runs that differ in a SERIES_CONDITIONS condition (link backend, accelerator, executor, time mode,
    machine) are separate series, each run judged against the run before it in its own series; `mix` judges
    every run against the one before it whatever it ran under (with a note saying so).
    """
    from dataclasses import replace

    from ..errors import UsageError
    from ..metrics import metric as metric_def
    from ..store import RunFilter

    runs = store.list_runs(replace(flt or RunFilter(), scenario=scenario))
    if not runs:
        raise UsageError(f"no stored run of scenario {scenario!r} in {store.where} matches",
                         "list the stored runs with: mptcplab runs")
    metric = metric or store.main_metrics([scenario])[scenario]
    better = metric_def(metric).better
    hist = History(scenario=scenario, metric=metric, better=better, threshold=threshold, alpha=alpha)
    samples = store.samples([r.uid for r in runs], metric, per_run=True)  # one query, not one per run
    for r in reversed(runs):  # oldest first
        sample = samples.get(r.uid)
        if sample is None or not sample.values:
            hist.notes.append(f"run {r.uid} ({r.status}) has no measured repetition: left out")
            continue
        est = median_ci(sample.values)
        hist.points.append(Point(run_id=r.uid, started_at=r.started_at, kernel=r.kernel, label=r.label,
                                 scenario_hash=r.scenario_hash, status=r.status, n=est.n, median=est.median,
                                 ci95=est.ci95, values=list(sample.values)))
    envs = store.run_environments(p.run_id for p in hist.points)
    conds = [conditions_of(envs, p.run_id) for p in hist.points]
    from .kernel_history import run_version

    for p in hist.points:
        p.version = run_version(p.kernel, envs[p.run_id][1]) if p.run_id in envs else ""
    hist.notes += assign_series(hist.points, conds, mix)
    hist.notes = judge_steps(hist.points, metric, better, threshold, alpha) + hist.notes
    hist.notes += _condition_steps(hist.points, conds)
    return hist


def conditions_of(envs: dict[str, tuple[str, dict[str, Any]]], run_id: str) -> dict[str, str]:
    """analysis.conditions.conditions() of one run from Store.run_environments' answer ({} when it has none)."""
    from .conditions import conditions

    return conditions(envs[run_id][1], envs[run_id][0]) if run_id in envs else {}


def assign_series(points: list[Point], conds: list[dict[str, str]], mix: bool) -> list[str]:
    """Set each point's `series` from its run's conditions (`conds`, one per point); returns the notes to print."""
    from .conditions import series_key, series_label, sizing_note

    keys = [series_key(c) for c in conds]
    distinct = list(dict.fromkeys(keys))
    notes = [n for n in [sizing_note(conds)] if n]
    if len(distinct) < 2:
        return notes
    labels = {k: series_label(k, distinct) for k in distinct}
    if mix:
        return notes + [f"--mix: runs under different conditions are judged against each other ("
                        + "; ".join(labels[k] for k in distinct) + "): a step may be the conditions', not the kernel's"]
    for p, k in zip(points, keys):
        p.series = labels[k]
    counts = {k: keys.count(k) for k in distinct}
    return notes + [f"{len(distinct)} series, each judged on its own (--mix to join them): "
                    + "; ".join(f"{labels[k]} ({counts[k]} run{'s' if counts[k] != 1 else ''})" for k in distinct)]


def _condition_steps(points: list[Point], conds: list[dict[str, str]]) -> list[str]:
    """Mark each point whose conditions differ from the point before in its series; one note line per differing condition."""
    from .conditions import differing

    notes = []
    last: dict[str, tuple[Point, dict[str, str]]] = {}
    for cur, cur_c in zip(points, conds):
        if cur.series in last:
            prev, prev_c = last[cur.series]
            for name, before, after in differing([prev_c], [cur_c]):
                cur.conditions_changed.append(name)
                notes.append(f"run {cur.run_id}: {name} differs from run {prev.run_id} ({', '.join(before)} -> {', '.join(after)})")
        last[cur.series] = (cur, cur_c)
    return notes
