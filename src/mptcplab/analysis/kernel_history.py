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
from .compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, sample_draws

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

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "metric": self.metric, "better": self.better, "by": self.by,
                "threshold": self.threshold, "alpha": self.alpha, "notes": self.notes,
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
            points.append(SeriesPoint(name=r.uid, version=f"{r.kernel} ({version})", values=list(s.values), runs=[r.uid],
                                      draws=sample_draws(s, envs) or []))
        return points, notes
    groups: dict[str, dict[str, Any]] = {}
    for r in sorted(runs, key=lambda r: r.started_at):
        s = samples.get(r.uid)
        if s is None or not s.values:
            notes.append(f"run {r.uid} ({r.status}) on {r.kernel} has no measured repetition: left out")
            continue
        g = groups.setdefault(r.kernel, {"values": [], "runs": [], "draws": [],
                                         "version": run_version(r.kernel, envs.get(r.uid, ("", {}))[1])})
        g["values"].extend(s.values)
        g["runs"].append(r.uid)
        d = sample_draws(s, envs)
        g["draws"] = g["draws"] + d if d is not None and g["draws"] is not None else None
    ordered = sorted(groups.items(), key=lambda kv: (version_key(kv[1]["version"]), kv[0]))
    points = [SeriesPoint(name=k, version=g["version"], values=g["values"], runs=g["runs"], draws=g["draws"] or [])
              for k, g in ordered]
    return points, notes


def history_by_kernel(store: Any, scenario: str, metric: str = "goodput_mbps", flt: Any = None, by: str = "kernel",
                      threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> KernelHistory:
    """The series of `scenario` in `store` (runs also matching `flt`, a RunFilter) and its change points.

    UsageError when the store has no run of the scenario, or `by` is not kernel or run.
    """
    from ..metrics import metric as metric_def
    from ..store import RunFilter

    if by not in BY:
        raise UsageError(f"--by {by!r}: choose kernel or run")
    runs = store.list_runs(replace(flt or RunFilter(), scenario=scenario))
    if not runs:
        given = (flt or RunFilter()).describe()
        raise UsageError(f"no stored run of scenario {scenario!r} in {store.where} matches" + (f" {given}" if given else ""),
                         f"list the stored runs with: mptcplab runs --db {store.where}")
    better = metric_def(metric).better
    samples = store.samples([r.uid for r in runs], metric, per_run=True)
    if not any(s.values for s in samples.values()) and any(r.repetitions for r in runs):
        available = _metrics_of(store, runs)
        if metric not in available:  # otherwise its runs have the metric but no completed repetition: noted below
            raise MetricMissing(scenario, metric, available)
    envs = store.run_environments(r.uid for r in runs)
    points, notes = kernel_series(runs, samples, envs, by)
    hist = KernelHistory(scenario=scenario, metric=metric, better=better, by=by, threshold=threshold, alpha=alpha,
                         points=points, notes=notes)
    hist.change_points = change_points(points, metric=metric, better=better, threshold=threshold, alpha=alpha)
    hashes = {h for p in points for u in p.runs if u in samples for h in samples[u].versions}
    if len(hashes) > 1:
        hist.notes.append(f"the runs used {len(hashes)} versions of the scenario file: a step may be the scenario's, not the kernel's")
    hist.notes.extend(_condition_notes(envs, points))
    if len(points) < 2:
        hist.notes.append(f"only {len(points)} {by}{'s' if len(points) != 1 else ''} with measured repetitions: no series to look for steps in")
    small = [p.name for p in points if p.n < 5]
    if small and len(points) >= 2:
        hist.notes.append(f"{len(small)} point(s) have fewer than 5 repetitions ({', '.join(small[:3])}{', ...' if len(small) > 3 else ''}): "
                          "a step next to them can only be found against a pooled segment")
    return hist


def _metrics_of(store: Any, runs: list[Any]) -> list[str]:
    """The metrics the newest run with repetitions has stored (subflow ones as <path>.<name> left out)."""
    from ..metrics import metric as metric_def, repetition_metrics

    run = next(r for r in runs if r.repetitions)
    reps = [rep for rep in store.load_result(run.uid).repetitions if not rep.warmup]
    names = {name for rep in reps for name in repetition_metrics(rep)}
    return sorted(n for n in names if metric_def(n).scope == "repetition" and "." not in n)


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
