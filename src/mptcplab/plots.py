"""Pictures of what the scheduler did: per-path throughput and RTT over time.

A scheduler regression is often visible at a glance (a path starved, traffic
not moving back after a failure) long before it shows in a median.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .result import RunResult  # noqa: E402


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
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
