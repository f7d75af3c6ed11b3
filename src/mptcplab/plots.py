"""Pictures of what the scheduler did: per-path rate and RTT over time, and the verdicts of compare and history.

A scheduler regression is often visible at a glance (a path starved, traffic
not moving back after a failure) long before it shows in a median.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import metric  # noqa: E402
from .result import Repetition, RunResult  # noqa: E402
from .series import MIN_RATE_WINDOW_S, fresh_rtt, plotted_rate, rate_window_s, windowed_rate  # noqa: E402,F401  (re-exported)
from .units import plural  # noqa: E402


def _save(fig: Any, out: Path) -> Path:
    """Lay out, write and free a figure (pyplot keeps every open figure alive otherwise).

    The PNG's bounding box is the figure's content (bbox_inches="tight"), so no
    title or legend is ever cut at an edge.
    """
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    out = Path(out)
    try:
        fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.12)
    finally:
        plt.close(fig)
    return out


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """`text` wrapped to lines that fit `width_in` inches at `fontsize` points (a character is ~0.55 em)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.55)))
    return "\n".join(textwrap.fill(line, chars, break_long_words=False) for line in text.split("\n"))


@dataclass(frozen=True)
class PathEvent:
    """One `[[event]]` of the scenario, as the figure marks it (`at` in seconds from the transfer's start)."""

    at: float
    path: str
    action: str  # down, up or set
    direction: str = "both"
    text: str = ""


@dataclass(frozen=True)
class ScenarioMarks:
    """What the scenario says that a run figure marks: path events and each path's configured rate.

    `rates_mbps[path]` is a step function [(from_s, mbit/s), ...] of the rate in the direction the
    data flows (absent for a path replaying a trace).
    """

    events: tuple[PathEvent, ...] = ()
    rates_mbps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def from_content(cls, content: Mapping[str, Any] | None) -> "ScenarioMarks":
        """From a scenario's normalized content (`Scenario.normalized()`, `Store.scenario_content()`).

        Content this version cannot read (None, or an older layout) gives no marks, never an error.
        """
        if not content:
            return cls()
        try:
            data_dir = "up" if (content.get("workload") or {}).get("direction", "upload") == "upload" else "down"
            rates: dict[str, list[tuple[float, float]]] = {}
            for path in content.get("path") or []:
                over = path.get(data_dir) or {}
                if path.get(f"trace_{data_dir}"):
                    continue
                rate = over.get("rate") or path.get("rate")
                if rate:
                    rates[path["name"]] = [(0.0, float(rate) / 1e6)]
            events = []
            for e in sorted(content.get("event") or [], key=lambda e: float(e["at"])):
                at, name, action, direction = float(e["at"]), str(e["path"]), str(e["action"]), str(e.get("direction") or "both")
                changes = []
                if e.get("rate") is not None:
                    changes.append(f"rate {float(e['rate']) / 1e6:g} mbit")
                    if direction in ("both", data_dir) and name in rates:
                        rates[name].append((at, float(e["rate"]) / 1e6))
                if e.get("delay") is not None:
                    changes.append(f"delay {float(e['delay']) * 1e3:g} ms")
                if e.get("loss") is not None:
                    loss = e["loss"]
                    changes.append(f"loss {float(loss) * 100:g}%" if isinstance(loss, (int, float)) else "loss (Gilbert-Elliott)")
                if e.get("jitter") is not None:
                    changes.append(f"jitter {float(e['jitter']) * 1e3:g} ms")
                if e.get("queue") is not None:
                    changes.append("queue")
                where = "" if direction == "both" else f" ({direction} only)"
                text = f"{name} {action}{where}" if action != "set" else f"{name}{where}: " + ", ".join(changes)
                events.append(PathEvent(at=at, path=name, action=action, direction=direction, text=text))
            return cls(events=tuple(events), rates_mbps=rates)
        except (KeyError, TypeError, ValueError, AttributeError):
            return cls()

    def outages(self, end_s: float) -> list[tuple[str, float, float, str]]:
        """(path, from_s, to_s, label) for every down..up window (to the end of the run when no up follows)."""
        out = []
        down: dict[tuple[str, str], PathEvent] = {}
        for e in self.events:
            kind = OUTAGE_ENDS.get(e.action)
            if kind is None:
                continue
            key = (e.path, kind[0])
            if e.action == kind[0] and key not in down:
                down[key] = e
            elif e.action == kind[1] and key in down:
                d = down.pop(key)
                out.append((e.path, d.at, e.at, f"{d.text} {d.at:g}–{e.at:g} s"))
        for (path, _), d in down.items():
            out.append((path, d.at, max(end_s, d.at), f"{d.text} from {d.at:g} s"))
        return out


#: event action -> (the action that starts an outage window, the one that ends it)
OUTAGE_ENDS = {a: pair for pair in (("down", "up"), ("carrier_down", "carrier_up"), ("endpoint_remove", "endpoint_add"))
               for a in pair}


def _no_series_reason(result: RunResult, reps: list[Repetition], repetition: int | None) -> str:
    """Why there is nothing to draw, in the words of what really happened."""
    if repetition is not None and not reps:
        n = len(result.repetitions)
        if n == 0:
            why = f": {result.errors[0]}" if result.errors else ""
            return f"no repetition {repetition + 1}: the run has no repetitions ({result.status}{why})"
        return f"no repetition {repetition + 1}: the run has {n} (--rep 1 to {n})"
    if not reps:
        why = f": {result.errors[0]}" if result.errors else ""
        return f"the run has no repetitions to plot ({result.status}{why})"
    for rep in reps:
        if not rep.completed and (rep.timeseries is None or not rep.timeseries.t):
            return f"repetition {rep.index + 1} {rep.status} before any sample: {rep.error or 'no reason recorded'}"
    if all(rep.timeseries is None for rep in reps):
        return "the result holds no time series: it was written by 'mptcplab run --json --no-timeseries'; plot the stored run instead (mptcplab plot RUN_ID)"
    return "no repetition took a sample (each transfer ended before the first 50 ms sample)"


def run_figure(result: RunResult, repetition: int | None = None, scenario: Mapping[str, Any] | None = None) -> Any:
    """The run's figure: one column per repetition (or the one asked for, 0-based), rate on top, RTT below,
    and the congestion window (segments, summed over the path's subflows) in a third row when the result has it.

    Rates are the data delivered to the receiver (ACKed or SACKed; results from before that key:
    cumulatively ACKed) averaged over each path's RTT and at least MIN_RATE_WINDOW_S, so a plotted rate
    is one the path could carry. RTT is a gap where a path delivered nothing (no fresh estimate).
    `scenario` (its normalized content) adds the `[[event]]` windows and the configured rates.
    Raises ValueError, saying why, when there is nothing to draw. Returns a matplotlib Figure; the
    caller saves (`plot_run`) or inspects it.
    """
    reps = list(result.repetitions) if repetition is None else [r for r in result.repetitions if r.index == repetition]
    drawable = [r for r in reps if r.timeseries is not None and r.timeseries.t]
    if not drawable:
        raise ValueError(_no_series_reason(result, reps, repetition))
    marks = ScenarioMarks.from_content(scenario)
    paths = list(dict.fromkeys(p for r in drawable for p in r.timeseries.throughput_mbps))  # type: ignore[union-attr]
    colours = {p: f"C{i}" for i, p in enumerate(paths)}
    n = len(drawable)
    with_cwnd = any(r.timeseries.cwnd for r in drawable)  # type: ignore[union-attr]  (absent from older results)
    rows = 3 if with_cwnd else 2
    fig, axes = plt.subplots(rows, n, figsize=(4.6 * n + 1.2, 6.6 + 2.6 * (rows - 2)), sharex=True, sharey="row",
                             squeeze=False, layout="constrained")
    end_s = max(r.timeseries.t[-1] for r in drawable)  # type: ignore[union-attr]
    delivered = all(r.timeseries.delivered_mbps for r in drawable)  # type: ignore[union-attr]  (else: results from before it)
    handles: dict[str, Any] = {}
    windows: dict[str, list[float]] = {p: [] for p in paths}
    for col, rep in enumerate(drawable):
        ts = rep.timeseries
        assert ts is not None
        top, bottom = axes[0][col], axes[1][col]
        panels = [axes[r][col] for r in range(rows)]
        for path, colour in colours.items():
            rate, window, _ = plotted_rate(rep, path)
            if not rate:
                continue
            windows[path].append(window)
            (line,) = top.plot(ts.t, rate, color=colour, linewidth=1.3, label=path)
            handles.setdefault(path, line)
            rtt = fresh_rtt(ts, path)
            bottom.plot(ts.t[:len(rtt)], rtt, color=colour,
                        linewidth=1.2, marker=".", markersize=1.5)
            if with_cwnd and path in ts.cwnd:
                cwnd = [float(v) if v else float("nan") for v in ts.cwnd[path]]  # 0: no subflow on the path
                axes[2][col].plot(ts.t[:len(cwnd)], cwnd, color=colour, linewidth=1.2, drawstyle="steps-post")
        for path, steps in marks.rates_mbps.items():
            if path in colours:
                xs = [at for at, _ in steps] + [end_s]
                ys = [r for _, r in steps] + [steps[-1][1]]
                (line,) = top.step(xs, ys, where="post", color=colours[path], linestyle=":", linewidth=1.0, alpha=0.8,
                                   label=f"{path} configured rate")
                handles.setdefault(f"{path} configured rate", line)
        for path, t0, t1, label in marks.outages(end_s):
            colour = colours.get(path, "grey")
            for ax in panels:
                span = ax.axvspan(t0, t1, color=colour, alpha=0.13, linewidth=0, label=label)
            handles.setdefault(label, span)
            top.annotate(" ".join(label.split(" ")[:2]), (t0 + (t1 - t0) / 2, 1.0), xycoords=("data", "axes fraction"), xytext=(0, -3),
                         textcoords="offset points", ha="center", va="top", fontsize=7.5, color=colour)
        for e in marks.events:
            if e.action == "set":
                for ax in panels:
                    vline = ax.axvline(e.at, color=colours.get(e.path, "grey"), linestyle="--", linewidth=0.9,
                                       label=f"{e.text} at {e.at:g} s")
                handles.setdefault(f"{e.text} at {e.at:g} s", vline)
        name = result.repetition_label(rep)  # 'TCP on fast (round 2)' for a best-path baseline repetition
        name = name if rep.baseline_path else f"rep {name}"
        title = f"{name}: {rep.goodput_mbps:.2f} mbit/s, {rep.completion_s:.2f} s"
        if not rep.completed:
            title = _wrap(f"{name} {rep.status}: {rep.error or ''}", 4.4, 9)
        top.set_title(title, fontsize=9.5, color="#c0392b" if not rep.completed else "black")
        for ax in panels:
            ax.grid(alpha=0.3)
            ax.set_xlim(0, end_s)
        panels[-1].set_xlabel("time since connect (s)")
    peak = max([r for steps in marks.rates_mbps.values() for _, r in steps] + [0.0])
    top_ax = axes[0][0]
    top_ax.set_ylim(0, max(top_ax.get_ylim()[1], peak * 1.15))  # room above the configured rates for the labels
    what = "data delivered (ACKed or SACKed)" if delivered else "data cumulatively ACKed"
    axes[0][0].set_ylabel("rate (mbit/s)")
    axes[1][0].set_ylabel("smoothed RTT (ms)")
    if with_cwnd:
        axes[2][0].set_ylabel("cwnd (segments)")
        axes[2][0].set_ylim(bottom=0)
    per_path = ", ".join(f"{p} {1000 * min(w):.0f}" + (f"–{1000 * max(w):.0f}" if max(w) - min(w) >= 0.0005 else "") + " ms"
                         for p, w in windows.items() if w)
    caption = (f"rate: {what} per path, mean over the path's median RTT and at least {MIN_RATE_WINDOW_S * 1000:.0f} ms "
               f"({per_path}); RTT: a gap where the path delivered nothing (no fresh estimate)"
               + ("; cwnd: the sender's congestion window summed over the path's subflows at each sample" if with_cwnd else ""))
    fig.supxlabel(_wrap(caption, 4.6 * n + 1.0, 8), fontsize=8, color="#444444")
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8, frameon=False)
    skipped = [r for r in reps if r not in drawable]
    note = "".join(f"\nrep {r.index + 1} {r.status} before any sample: {r.error or 'no reason recorded'}" for r in skipped)
    fig.suptitle(_wrap(f"{result.scenario} — kernel {result.kernel}, scheduler {result.scheduler}, backend {result.backend}"
                       + note, 4.6 * n + 1.0, 11), fontsize=11)
    return fig


def plot_run(result: RunResult, out: Path, repetition: int | None = None, scenario: Mapping[str, Any] | None = None) -> Path:
    """Write `run_figure(result, repetition, scenario)` to the PNG `out`; ValueError when there is nothing to draw."""
    return _save(run_figure(result, repetition, scenario), out)


VERDICT_COLOURS = {"regressed": "#c0392b", "improved": "#1e8449", "unchanged": "#555555"}


def plot_comparison(report: Any, out: Path, columns: int = 3) -> Path:
    """Write `comparison_figure(report, columns)` to the PNG `out`."""
    return _save(comparison_figure(report, columns), out)


def comparison_figure(report: Any, columns: int = 3) -> Any:
    """One panel per scenario and metric: every repetition of both sides, their medians, and the verdict.

    The shaded band is the baseline median +- the threshold: a candidate median
    inside it can never be called a change, however small its p-value, so a
    reader sees at once whether a verdict rests on size, on noise, or on both.
    """
    comps = report.comparisons
    if not comps:
        raise ValueError("the comparison holds nothing to plot")
    cols = min(columns, len(comps))
    rows = -(-len(comps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 0.5, 3.8 * rows + 0.8), squeeze=False)
    for ax in axes.flat[len(comps):]:
        ax.set_visible(False)
    for ax, c in zip(axes.flat, comps):
        _comparison_panel(ax, c, report.threshold)
    verdict = "REGRESSED" if report.regressed else "no regression"
    fig.suptitle(_wrap(f"baseline {report.baseline} vs candidate {report.candidate}: {verdict}\n"
                       f"threshold {report.threshold * 100:g}%, alpha {report.alpha:g}", fig.get_figwidth() - 0.3, 11),
                 fontsize=11)
    return fig


def _comparison_panel(ax: Any, c: Any, threshold: float) -> None:
    colour = VERDICT_COLOURS.get(c.verdict, "#555555")
    ax.axhspan(c.baseline_median * (1 - threshold), c.baseline_median * (1 + threshold), color="#d6eaf8", alpha=0.6,
               label=f"baseline median ±{threshold * 100:g}%")
    for x, values, median, face in ((0, c.baseline_values, c.baseline_median, "#2e86c1"),
                                    (1, c.candidate_values, c.candidate_median, colour)):
        n = len(values)
        offsets = [(i - (n - 1) / 2) * (0.3 / max(n - 1, 1)) for i in range(n)]  # spread, not random: reproducible plots
        ax.scatter([x + o for o in offsets], sorted(values), s=28, color=face, alpha=0.8, zorder=3)
        ax.hlines(median, x - 0.25, x + 0.25, color=face, linewidth=2.5, zorder=4)
    ax.set_xticks([0, 1], [f"baseline\nn={c.n_baseline}", f"candidate\nn={c.n_candidate}"])
    ax.set_xlim(-0.6, 1.6)
    unit = metric(c.metric).unit
    ax.set_ylabel(f"{c.metric} ({unit})" if unit else c.metric)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(_wrap(f"{c.scenario}\n{c.verdict}: {c.change * 100:+.1f}%, 95% CI [{c.ci95[0] * 100:+.1f}%, {c.ci95[1] * 100:+.1f}%], "
                       f"p={c.p_value:.2g}", 4.0, 9), fontsize=9, color=colour)
    ax.legend(fontsize=7, loc="best")


def plot_history(history: Any, out: Path) -> Path:
    """Write `history_figure(history)` to the PNG `out`."""
    return _save(history_figure(history), out)


def history_figure(history: Any) -> Any:
    """The metric's median and 95% CI per run, oldest first; steps judged regressed or improved in colour.

    Dotted vertical lines mark where the scenario file changed, so a step
    caused by an edited scenario is not mistaken for the kernel's doing.
    """
    points = history.points
    if not points:
        raise ValueError("the history holds no run to plot")
    xs = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(points) + 2.5), 4.6))
    medians = [p.median for p in points]
    ax.plot(xs, medians, color="#aab7b8", linewidth=1, zorder=1)
    for x, p in zip(xs, points):
        colour = VERDICT_COLOURS[p.verdict] if p.verdict in ("regressed", "improved") else "#2e86c1"
        ax.errorbar([x], [p.median], yerr=[[p.median - p.ci95[0]], [p.ci95[1] - p.median]], fmt="o", color=colour,
                    ecolor=colour, capsize=3, markersize=6, zorder=3)
        if p.verdict in ("regressed", "improved"):
            ax.annotate(f"{p.verdict}\n{p.change * 100:+.1f}%", (x, p.median), textcoords="offset points", xytext=(9, 0),
                        ha="left", va="center", fontsize=7, color=colour)
        if p.version_changed:
            ax.axvline(x - 0.5, color="#7f8c8d", linestyle=":", linewidth=1)
    # the kernel names the point (its upstream version when known), then the label and the run
    ax.set_xticks(xs, [f"{getattr(p, 'version', '') or p.kernel}\n{(p.label + ' · ') if p.label else ''}{p.run_id[:6]}"
                       for p in points], fontsize=7, rotation=30 if len(points) > 6 else 0,
                  ha="right" if len(points) > 6 else "center")
    ax.set_xlabel("kernel (upstream version) · label · run, oldest first", fontsize=8)
    ax.set_xlim(-0.6, len(points) - 0.2)  # room on the right for the last point's annotation
    ax.set_ylabel(f"{history.metric} (median, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    steps = history.steps
    ax.set_title(_wrap(f"{history.scenario}: {plural(len(points), 'run')}, {plural(steps['regressed'], 'step')} regressed, {steps['improved']} improved\n"
                       f"each run vs the one before: threshold {history.threshold * 100:g}%, alpha {history.alpha:g}; "
                       f"dotted: scenario changed", fig.get_figwidth() - 0.8, 9), fontsize=9)
    return fig


def plot_kernel_history(histories: list[Any], out: Path) -> Path:
    """Write `kernel_history_figure(histories)` to the PNG `out`."""
    return _save(kernel_history_figure(histories), out)


def kernel_history_figure(histories: list[Any]) -> Any:
    """`history --by kernel|run`: one panel per series (analysis.kernel_history.KernelHistory), its points in series
    order with every repetition, the median and its 95% CI, and each change point as a vertical line coloured by its
    verdict (red regressed, green improved) with the change written beside it, above the plot area.

    The x labels are the kernels' upstream versions (or the run ids); the legend sits under the panels, clear of the
    change-point labels. Raises ValueError when no series has a point.
    """
    drawn = [h for h in histories if h.points]
    if not drawn:
        raise ValueError("the history holds no point to plot")
    width = max(7.5, 0.62 * max(len(h.points) for h in drawn) + 2.8)
    fig, axes = plt.subplots(len(drawn), 1, figsize=(width, 4.4 * len(drawn) + 0.6), squeeze=False, layout="constrained")
    for ax, h in zip(axes[:, 0], drawn):
        xs = list(range(len(h.points)))
        for x, p in zip(xs, h.points):
            k = len(p.values)
            ax.scatter([x - 0.15 + (0.3 * j / (k - 1) if k > 1 else 0.15) for j in range(k)], p.values, s=10,
                       color="#85c1e9", alpha=0.8, zorder=2, label="repetitions" if x == 0 else None)
            ax.errorbar([x], [p.median], yerr=[[p.median - p.ci95[0]], [p.ci95[1] - p.median]], fmt="o", color="#2c3e50",
                        capsize=3, markersize=5, zorder=3, label="median, 95% CI" if x == 0 else None)
        ax.plot(xs, [p.median for p in h.points], color="#aab7b8", linewidth=1, zorder=1)
        for c in h.change_points:
            colour = VERDICT_COLOURS.get(c.verdict, "#555555")
            ax.axvline(c.index - 0.5, color=colour, linewidth=1.8, zorder=1)
            ax.annotate(f"{c.verdict} {c.change * 100:+.1f}%\np {c.p_value:.1e}", (c.index - 0.5, 1.0),
                        xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7.5, color=colour)
        labels = [p.version or p.name for p in h.points] if h.by == "kernel" else [p.name[:8] for p in h.points]
        ax.set_xticks(xs, labels, fontsize=7.5, rotation=30 if len(xs) > 8 else 0, ha="right" if len(xs) > 8 else "center")
        ax.set_xlim(-0.6, len(xs) - 0.4)
        unit = metric(h.metric).unit
        ax.set_ylabel(f"{h.metric} ({unit})" if unit else h.metric)
        ax.set_xlabel("kernel (upstream version, in version order)" if h.by == "kernel" else "run, oldest first", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        n_cp = len(h.change_points)
        ax.set_title(_wrap(f"{h.scenario}: {h.metric} per {h.by}" + (f" — {h.series}" if h.series else "")
                           + f"; {plural(n_cp, 'change point')} (threshold {h.threshold * 100:g}%, alpha {h.alpha:g})",
                           width - 0.8, 9), fontsize=9, pad=26 if n_cp else 6)
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.22 if len(xs) > 8 else -0.14), ncol=2,
                  frameon=False)
    return fig
