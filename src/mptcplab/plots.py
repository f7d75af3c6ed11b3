"""Pictures of what the scheduler did: per-path throughput and RTT over time.

A scheduler regression is often visible at a glance (a path starved, traffic
not moving back after a failure) long before it shows in a median.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .result import RunResult  # noqa: E402
from .units import plural  # noqa: E402


def _save(fig: Any, out: Path) -> Path:
    """Lay out, write and free a figure (pyplot keeps every open figure alive otherwise)."""
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(result: RunResult, out: Path, repetition: int | None = None) -> Path:
    """One column per repetition (or the one asked for): throughput on top, RTT below."""
    reps = [r for r in result.repetitions if r.timeseries is not None]
    if repetition is not None:
        reps = [r for r in reps if r.index == repetition]
    if not reps:
        raise ValueError("the result holds no time series to plot (was it saved with --no-timeseries?)")
    fig, axes = plt.subplots(2, len(reps), figsize=(4.5 * len(reps) + 1, 6), sharex="col", squeeze=False)
    for col, rep in enumerate(reps):
        ts = rep.timeseries
        assert ts is not None
        top, bottom = axes[0][col], axes[1][col]
        for path, values in ts.throughput_mbps.items():
            top.plot(ts.t, values, label=path, linewidth=1.2)
        for path, values in ts.rtt_ms.items():
            bottom.plot(ts.t, [v if v > 0 else float("nan") for v in values], label=path, linewidth=1.2)
        top.set_title(f"rep {rep.index + 1}: {rep.goodput_mbps:.2f} mbit/s, {rep.completion_s:.2f} s", fontsize=10)
        top.set_ylabel("throughput (mbit/s)")
        bottom.set_ylabel("smoothed RTT (ms)")
        bottom.set_xlabel("time since connect (s)")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        top.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{result.scenario} — kernel {result.kernel}, scheduler {result.scheduler}, backend {result.backend}", fontsize=11)
    return _save(fig, out)


VERDICT_COLOURS = {"regressed": "#c0392b", "improved": "#1e8449", "unchanged": "#555555"}


def plot_comparison(report: Any, out: Path, columns: int = 3) -> Path:
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
    fig.suptitle(f"baseline {report.baseline} vs candidate {report.candidate}: {verdict} "
                 f"(threshold {report.threshold * 100:g}%, alpha {report.alpha:g})", fontsize=11)
    return _save(fig, out)


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
    ax.set_ylabel(c.metric)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{c.scenario}\n{c.verdict}: {c.change * 100:+.1f}% [{c.ci95[0] * 100:+.1f}, {c.ci95[1] * 100:+.1f}], "
                 f"p={c.p_value:.2g}", fontsize=9, color=colour)
    ax.legend(fontsize=7, loc="best")


def plot_history(history: Any, out: Path) -> Path:
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
    ax.set_xticks(xs, [f"{p.label or p.kernel}\n{p.run_id[:6]}" for p in points], fontsize=7,
                  rotation=30 if len(points) > 6 else 0, ha="right" if len(points) > 6 else "center")
    ax.set_xlim(-0.6, len(points) - 0.2)  # room on the right for the last point's annotation
    ax.set_ylabel(f"{history.metric} (median, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    steps = history.steps
    ax.set_title(f"{history.scenario}: {plural(len(points), 'run')}, {plural(steps['regressed'], 'step')} regressed, {steps['improved']} improved\n"
                 f"each run vs the one before: threshold {history.threshold * 100:g}%, alpha {history.alpha:g}; "
                 f"dotted: scenario changed", fontsize=9)
    return _save(fig, out)
