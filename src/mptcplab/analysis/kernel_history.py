"""One scenario's stored runs as a series ordered by kernel version (or by run), with its change points.

`history SCENARIO --by kernel` asks "since which kernel release is this
scheduler slower?": every stored run of the scenario is grouped by the kernel
it ran on, all of a kernel's repetitions pooled into one point, the points
ordered by upstream version (6.1.176 < 6.12.95 < 6.18.15 < 7.2.12, never by
when they were measured), and `changepoints.change_points` finds where the
series steps. `--by run` does the same over single runs in time order (two
runs of the same kernel should show no change point: the false-alarm check).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .changepoints import ChangePoint, SeriesPoint, change_points, upstream_version, version_key
from ..errors import UsageError
from .compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD

BY = ("kernel", "run")


@dataclass
class KernelHistory:
    scenario: str
    metric: str
    better: str
    by: str  # "kernel" or "run"
    threshold: float
    alpha: float
    points: list[SeriesPoint] = field(default_factory=list)
    change_points: list[ChangePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the conditions of this series in words where the scenario's series differ (SERIES_CONDITIONS: backend,
    #: accelerator, executor, time mode, machine); '' when it has one series or --mix joined them
    series: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "metric": self.metric, "better": self.better, "by": self.by,
                "series": self.series, "threshold": self.threshold, "alpha": self.alpha, "notes": self.notes,
                "points": [p.to_json() for p in self.points], "change_points": [c.to_json() for c in self.change_points]}


class MetricMissing(UsageError):
    """No stored run of the scenario has a value of the metric (an rr case has no backup_share): one line, exit 2."""

    def __init__(self, scenario: str, metric: str, available: list[str]) -> None:
        self.scenario, self.metric, self.available = scenario, metric, available
        super().__init__(f"no stored run of {scenario} has the metric {metric}",
                         f"its runs have: {', '.join(available[:12])}{', ...' if len(available) > 12 else ''}"
                         if available else None)


def run_version(release: str, env: dict[str, Any]) -> str:
    """The upstream kernel version a stored run ran on, from its environment (guest package version, uname -v) or release."""
    guest = env.get("guest") or {}
    return upstream_version(release, str(env.get("kernel_version") or ""), str(guest.get("kernel_version") or ""))


def kernel_series(runs: list[Any], samples: dict[str, Any], envs: dict[str, tuple[str, dict[str, Any]]],
                  by: str = "kernel") -> tuple[list[SeriesPoint], list[str]]:
    """Points in series order from stored runs (RunSummary, newest first), their per-run samples and environments.

    by="kernel": one point per kernel release, its runs' values pooled, ordered
    by upstream version; by="run": one point per run, oldest first. Runs
    without a measured value are left out with a note.
    """
    notes: list[str] = []
    if by == "run":
        points = []
        for r in sorted(runs, key=lambda r: r.started_at):
            s = samples.get(r.uid)
            if s is None or not s.values:
                notes.append(f"run {r.uid} ({r.status}) has no measured repetition: left out")
                continue
            version = run_version(r.kernel, envs.get(r.uid, ("", {}))[1])
            points.append(SeriesPoint(name=r.uid, version=f"{r.kernel} ({version})", values=list(s.values), runs=[r.uid]))
        return points, notes
    groups: dict[str, dict[str, Any]] = {}
    for r in sorted(runs, key=lambda r: r.started_at):
        s = samples.get(r.uid)
        if s is None or not s.values:
            notes.append(f"run {r.uid} ({r.status}) on {r.kernel} has no measured repetition: left out")
            continue
        g = groups.setdefault(r.kernel, {"values": [], "runs": [], "version": run_version(r.kernel, envs.get(r.uid, ("", {}))[1])})
        g["values"].extend(s.values)
        g["runs"].append(r.uid)
    ordered = sorted(groups.items(), key=lambda kv: (version_key(kv[1]["version"]), kv[0]))
    points = [SeriesPoint(name=k, version=g["version"], values=g["values"], runs=g["runs"]) for k, g in ordered]
    return points, notes


def history_by_kernel(store: Any, scenario: str, metric: str | None = None, flt: Any = None, by: str = "kernel",
                      threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA, mix: bool = False) -> KernelHistory:
    """The series of `scenario` in `store` with the most runs (see histories_by_kernel), a note naming the others."""
    hists = histories_by_kernel(store, scenario, metric, flt, by, threshold, alpha, mix)
    first = hists[0]
    if len(hists) > 1:
        first.notes.append("other series left out: " + "; ".join(f"{h.series} ({len(h.points)} {by}s)" for h in hists[1:]))
    return first


def histories_by_kernel(store: Any, scenario: str, metric: str | None = None, flt: Any = None, by: str = "kernel",
                        threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
                        mix: bool = False) -> list[KernelHistory]:
    """The series of `scenario` in `store` (runs also matching `flt`, a RunFilter) and their change points.

    `metric` None: the scenario's main metric (Store.main_metrics), as compare, runs and the report judge it.
    Runs that differ in a SERIES_CONDITIONS condition (link backend, accelerator, executor, time mode,
    machine) are separate series, each with its own points and change points, the one with the most runs
    first; `mix` makes one series of them all (noted). UsageError when the store has no run of the scenario,
    or `by` is not kernel or run; MetricMissing when none of its runs has the metric.
    """
    from ..metrics import metric as metric_def
    from ..store import RunFilter
    from .conditions import conditions, series_key, series_label, sizing_note
    from .compare import min_repetitions

    if by not in BY:
        raise UsageError(f"--by {by!r}: choose kernel or run")
    runs = store.list_runs(replace(flt or RunFilter(), scenario=scenario))
    if not runs:
        given = (flt or RunFilter()).describe()
        raise UsageError(f"no stored run of scenario {scenario!r} in {store.where} matches" + (f" {given}" if given else ""),
                         f"list the stored runs with: mptcplab runs --db {store.where}")
    metric = metric or store.main_metrics([scenario])[scenario]
    better = metric_def(metric).better
    samples = store.samples([r.uid for r in runs], metric, per_run=True)
    if not any(s.values for s in samples.values()) and any(r.repetitions for r in runs):
        available = _metrics_of(store, runs)
        if metric not in available:  # otherwise its runs have the metric but no completed repetition: noted below
            raise MetricMissing(scenario, metric, available)
    envs = store.run_environments(r.uid for r in runs)
    conds = {r.uid: conditions(envs[r.uid][1], envs[r.uid][0]) if r.uid in envs else {} for r in runs}
    groups: dict[Any, list[Any]] = {}
    for r in runs:
        groups.setdefault(() if mix else series_key(conds[r.uid]), []).append(r)
    keys = sorted(groups, key=lambda k: -len(groups[k]))
    least = min_repetitions(alpha)
    out = []
    for key in keys:
        members = groups[key]
        points, notes = kernel_series(members, samples, envs, by)
        hist = KernelHistory(scenario=scenario, metric=metric, better=better, by=by, threshold=threshold, alpha=alpha,
                             points=points, notes=notes, series=series_label(key, keys) if len(keys) > 1 else "")
        too_small: list[tuple[str, str, int, int]] = []
        hist.change_points = change_points(points, metric=metric, better=better, threshold=threshold, alpha=alpha,
                                           too_small=too_small)
        for before, after, nb, na in too_small:
            hist.notes.append(f"no change point between {before} and {after}: a side has {min(nb, na)} repetition"
                              f"{'s' if min(nb, na) != 1 else ''}, fewer than the {least} the rule needs at alpha {alpha:g}")
        hashes = {h for p in points for u in p.runs if u in samples for h in samples[u].versions}
        if len(hashes) > 1:
            hist.notes.append(f"the runs used {len(hashes)} versions of the scenario file: a step may be the scenario's, not the kernel's")
        hist.notes.extend(_condition_notes(envs, points))
        note = sizing_note([conds[u] for p in points for u in p.runs])
        if note:
            hist.notes.append(note)
        if len(points) < 2:
            hist.notes.append(f"only {len(points)} {by}{'s' if len(points) != 1 else ''} with measured repetitions: no series to look for steps in")
        small = [p.name for p in points if p.n < least]
        if small and len(points) >= 2:
            hist.notes.append(f"{len(small)} point(s) have fewer than {least} repetitions ({', '.join(small[:3])}"
                              f"{', ...' if len(small) > 3 else ''}): a step next to them can only be found against a pooled segment")
        out.append(hist)
    if mix and len({series_key(c) for c in conds.values()}) > 1:
        labels = list(dict.fromkeys(series_key(c) for c in conds.values()))
        out[0].notes.append("--mix: runs under different conditions are in one series (" + "; ".join(series_label(k, labels)
                            for k in labels) + "): a step may be the conditions', not the kernel's")
    elif len(keys) > 1:
        for h in out:
            h.notes.append(f"one of {len(keys)} series of {scenario}, each judged on its own (--mix to join them)")
    return out


def _metrics_of(store: Any, runs: list[Any]) -> list[str]:
    """The metrics the newest run with repetitions has stored (subflow ones as <path>.<name> left out)."""
    from ..metrics import find_metric, repetition_metrics

    run = next(r for r in runs if r.repetitions)
    reps = [rep for rep in store.load_result(run.uid).repetitions if not rep.warmup]
    names = {name for rep in reps for name in repetition_metrics(rep)}
    return sorted(n for n in names if (row := find_metric(n)) is not None and row.scope == "repetition")


def _condition_notes(envs: dict[str, tuple[str, dict[str, Any]]], points: list[SeriesPoint]) -> list[str]:
    """Conditions (congestion control, backend, accelerator, machine, sysctls) that differ between adjacent points.

    A condition that differs at one step is one note naming both sides; one that changes at several steps
    (tcp_rmem, which each kernel sizes from its memory) is one note listing its value at every point.
    """
    from .conditions import conditions, difference_line, differing

    conds = [[conditions(envs[u][1], envs[u][0]) for u in p.runs if u in envs] for p in points]
    steps: dict[str, list[tuple[int, list[str], list[str]]]] = {}
    for i in range(len(points) - 1):
        for name, b, c in differing(conds[i], conds[i + 1]):
            steps.setdefault(name, []).append((i, b, c))
    notes = []
    for name, where in steps.items():
        if len(where) == 1:
            i, b, c = where[0]
            a, z = points[i].name, points[i + 1].name
            notes.append(difference_line(name, b, c, what=f"{a} -> {z}", sides=(a, z)))
            continue
        values = [", ".join(sorted({c.get(name, "not set") for c in cs})) or "?" for cs in conds]
        series = "; ".join(f"{p.version or p.name} {v}" for p, v in zip(points, values))
        notes.append(f"{name} differs at {len(where)} of {len(points) - 1} steps: {series}")
    return notes
