"""Per-path rates and RTTs as a figure should draw them, from a repetition's TimeSeries.

Shared by the PNG plots (plots.py) and the HTML report (webreport), so both
draw only rates a path could carry and leave gaps where there was no sample.
Imports neither matplotlib nor the engine.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .result import Repetition, TimeSeries

#: the plotted rate is averaged over at least this long (and at least the path's RTT): ACKs reach the
#: sender's socket in clumps of up to ~30 ms (measured: a 50 ms sample at 1.5x a 10 mbit path after a
#: stall), which would read as a rate no path carries; over 300 ms such a clump is under 10%
MIN_RATE_WINDOW_S = 0.3


def windowed_rate(t: Sequence[float], rate_mbps: Sequence[float], window_s: float) -> list[float]:
    """The rate averaged over a window of `window_s` centred on each sample (shifted inside the run at its ends).

    `rate_mbps[i]` covers (t[i-1], t[i]] (the first sample: (0, t[0]]), as TimeSeries holds them;
    the bytes are summed and divided by the window, so averaging never creates or loses data.
    """
    if not t:
        return []
    ts = np.concatenate(([0.0], np.asarray(t, dtype=float)))
    cum = np.concatenate(([0.0], np.cumsum(np.asarray(rate_mbps, dtype=float) * np.diff(ts))))  # megabits
    end = ts[-1]
    w = min(window_s, end) if end > 0 else 0.0
    if w <= 0:
        return [float(v) for v in rate_mbps]
    lo = np.clip(ts[1:] - w / 2, 0.0, end - w)
    hi = lo + w
    return [float(v) for v in (np.interp(hi, ts, cum) - np.interp(lo, ts, cum)) / w]


def rate_window_s(rep: Repetition, path: str, interval_s: float) -> float:
    """The averaging window of `path`'s plotted rate: its median smoothed RTT, at least MIN_RATE_WINDOW_S."""
    rtt = next((sf.rtt_median_ms for sf in rep.subflows if sf.path == path), 0.0) / 1000
    return max(rtt, MIN_RATE_WINDOW_S, interval_s)


def fresh_rtt(ts: TimeSeries, path: str, delivered: bool | None = None) -> list[float]:
    """`path`'s smoothed RTT (ms) per sample, NaN where it had no fresh estimate.

    Fresh means the path delivered something in the sample's interval (a new ACK or SACK is what
    updates the estimate; during a blackhole tcp_info repeats the last one). `delivered` picks the
    series that says so (default: delivered_mbps when the result has it, else throughput_mbps).
    """
    if delivered is None:
        delivered = bool(ts.delivered_mbps)
    moved = (ts.delivered_mbps if delivered else ts.throughput_mbps).get(path) or []
    return [v if v > 0 and i < len(moved) and moved[i] > 0 else float("nan") for i, v in enumerate(ts.rtt_ms.get(path) or [])]


def plotted_rate(rep: Repetition, path: str) -> tuple[list[float], float, str]:
    """(`path`'s rate in mbit/s per sample as a figure draws it, the averaging window in s, what it counts).

    What it counts is "delivered" (ACKed or SACKed) or, for results from before delivered_mbps,
    "acked" (cumulatively ACKed: may exceed the path after a repaired loss). Empty when the
    repetition has no series for the path.
    """
    ts = rep.timeseries
    if ts is None:
        return [], 0.0, ""
    kind = "delivered" if ts.delivered_mbps else "acked"
    source = (ts.delivered_mbps if ts.delivered_mbps else ts.throughput_mbps).get(path)
    if source is None:
        return [], 0.0, kind
    window = rate_window_s(rep, path, ts.interval_s)
    return windowed_rate(ts.t, source, window), window, kind
