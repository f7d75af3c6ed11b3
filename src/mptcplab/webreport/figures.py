"""The report's charts as plotly figure documents ({"data": [...], "layout": {...}}).

The pages embed these as JSON and the bundled plotly.js draws them, so every
chart is interactive (hover, zoom, toggle series) without a server. They are
plain dicts rather than `plotly.graph_objects` figures: building and
validating thousands of figure objects would dominate a 1,000-run build, and
plotly.js validates what it draws anyway.
"""
from __future__ import annotations

import math
from typing import Any

from ..metrics import series_label
from ..result import Repetition
from ..series import fresh_rtt, plotted_rate

VERDICT_COLOURS = {"regressed": "#c0392b", "improved": "#1e8449", "unchanged": "#7f8c8d", None: "#2c3e50"}
PATH_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
FONT = {"family": "system-ui, sans-serif", "size": 12}


def _pct(change: float | None) -> str:
    """A relative change as +1.2%; from a zero median it has no finite value."""
    return f"{change * 100:+.1f}%" if change is not None and math.isfinite(change) else "from 0"


def _clean(values: list[float] | None) -> list[float | None]:
    """NaN and infinities are not JSON: plotly draws None as a gap."""
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in values or []]


def _event_marks(events: list[dict[str, Any]], yref: str = "paper") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Dashed vertical lines and labels at the scenario's `[[event]]` times (`at`, s) on the x axis."""
    shapes, annotations = [], []
    seen: dict[float, int] = {}
    for ev in events:
        at = ev.get("at")
        if at is None:
            continue
        stacked = seen[at] = seen.get(at, -1) + 1  # events at the same time: labels one above the other
        shapes.append({"type": "line", "xref": "x", "yref": yref, "x0": at, "x1": at, "y0": 0, "y1": 1,
                       "line": {"color": "#888", "width": 1, "dash": "dash"}})
        annotations.append({"xref": "x", "yref": yref, "x": at, "y": 0.98 - 0.06 * stacked, "showarrow": False,
                            "xanchor": "left", "bgcolor": "rgba(255,255,255,0.7)",
                            "text": f"{ev.get('path', '')} {ev.get('action', '')}", "font": {"size": 10}})
    return shapes, annotations


def repetition_figure(rep: Repetition, events: list[dict[str, Any]], label: str | None = None) -> dict[str, Any] | None:
    """Per-path throughput (top), smoothed RTT and, when the result has it, cwnd (bottom) over time of one
    repetition; path events as lines.

    `events` are the scenario's `[[event]]` tables (at in seconds). None when
    the repetition kept no time series.
    """
    ts = rep.timeseries
    if ts is None or not ts.t:
        return None
    data: list[dict[str, Any]] = []
    paths = list(dict.fromkeys([*ts.throughput_mbps, *ts.rtt_ms]))
    for i, path in enumerate(paths):
        colour = PATH_COLOURS[i % len(PATH_COLOURS)]
        rate, window, kind = plotted_rate(rep, path)  # one a path could carry (series.py), as the PNG plots draw it
        if rate:
            data.append({"type": "scatter", "mode": "lines", "name": f"{path} throughput", "legendgroup": path,
                         "x": ts.t, "y": _clean(rate), "line": {"color": colour, "width": 1.5},
                         "hovertemplate": f"%{{x:.2f}} s: %{{y:.2f}} mbit/s ({kind}, mean over {window * 1000:.0f} ms)"})
        if path in ts.rtt_ms:
            rtt = _clean(fresh_rtt(ts, path))  # a gap where the path delivered nothing
            data.append({"type": "scatter", "mode": "lines", "name": f"{path} RTT", "legendgroup": path,
                         "x": ts.t, "y": rtt, "yaxis": "y2", "line": {"color": colour, "width": 1.2, "dash": "dot"},
                         "hovertemplate": "%{x:.2f} s: %{y:.1f} ms"})
        if path in ts.cwnd:
            cwnd = [v if v else None for v in ts.cwnd[path]]  # 0: no subflow on the path, a gap
            data.append({"type": "scatter", "mode": "lines", "name": f"{path} cwnd", "legendgroup": path,
                         "x": ts.t[:len(cwnd)], "y": cwnd, "yaxis": "y3", "line": {"color": colour, "width": 1.2, "shape": "hv"},
                         "hovertemplate": "%{x:.2f} s: %{y} segments"})
    shapes, annotations = _event_marks(events)
    status = "" if rep.status == "completed" else f" — {rep.status}"
    with_cwnd = any(t.get("yaxis") == "y3" for t in data)
    # three panels (rate, RTT, cwnd) or two (results from before cwnd was kept)
    domains = [[0.68, 1.0], [0.35, 0.63], [0.0, 0.3]] if with_cwnd else [[0.55, 1.0], [0.0, 0.45]]
    layout = {
        "title": {"text": f"{'repetition ' + (label or str(rep.index + 1)) if not rep.baseline_path else label or rep.baseline_path}: "
                          f"{rep.goodput_mbps:.2f} mbit/s in {rep.completion_s:.2f} s{status}", "font": {"size": 13},
                  "x": 0.01, "xanchor": "left"},
        "font": FONT, "height": 620 if with_cwnd else 420, "margin": {"l": 60, "r": 20, "t": 50, "b": 45},
        "xaxis": {"title": {"text": "time since connect (s)"}, "anchor": "y3" if with_cwnd else "y2"},
        "yaxis": {"title": {"text": "rate (mbit/s)" if with_cwnd else "throughput (mbit/s)"}, "domain": domains[0],
                  "rangemode": "tozero"},
        "yaxis2": {"title": {"text": "RTT (ms)" if with_cwnd else "smoothed RTT (ms)"}, "domain": domains[1], "rangemode": "tozero"},
        "legend": {"orientation": "h", "y": -0.18}, "shapes": shapes, "annotations": annotations,
        "hovermode": "x unified",
    }
    if with_cwnd:
        layout["yaxis3"] = {"title": {"text": "cwnd (segm.)"}, "domain": domains[2], "rangemode": "tozero"}
    return {"data": data, "layout": layout}


def history_figure(points: list[Any], metric: str, unit: str, urls: list[str], tick_labels: list[str],
                   change_points: list[int], verdicts: dict[int, str] | None = None,
                   tick_hover: list[str] | None = None) -> dict[str, Any]:
    """Median and 95% CI per run, every repetition as a point, version changes and change points as lines.

    `points` are `analysis.history.Point`s in display order, `urls` their run
    pages (a click on a point opens its run), `change_points` indices of
    points where a detector found a change (solid lines: red for a regression,
    green for an improvement, by `verdicts` (index -> verdict); red when not
    given). Labels of the lines sit inside the plot's top, staggered so that
    neighbours never overlap; the legend is above the plot, left.
    """
    xs = list(range(len(points)))
    medians = {"type": "scatter", "mode": "markers+lines", "name": "median, 95% CI", "x": xs,
               "y": [p.median for p in points],
               "error_y": {"type": "data", "symmetric": False, "array": [p.ci95[1] - p.median for p in points],
                           "arrayminus": [p.median - p.ci95[0] for p in points], "color": "#2c3e50"},
               "marker": {"size": 10, "color": [VERDICT_COLOURS.get(p.verdict, VERDICT_COLOURS[None]) for p in points],
                          "line": {"width": 1, "color": "#fff"}},
               "line": {"color": "#95a5a6", "width": 1},
               "customdata": urls,
               "text": [f"run {p.run_id}<br>kernel {p.kernel}<br>label {p.label or '-'}<br>n={p.n}"
                        + (f"<br>{p.verdict} ({_pct(p.change)} vs previous)" if p.verdict else "") for p in points],
               "hovertemplate": "%{text}<br>median %{y:.3f}<extra></extra>"}
    rx, ry, rurl, rtext = [], [], [], []
    for i, p in enumerate(points):
        k = len(p.values)
        for j, v in enumerate(p.values):
            rx.append(i - 0.18 + (0.36 * j / (k - 1) if k > 1 else 0.18))
            ry.append(v)
            rurl.append(urls[i])
            rtext.append(f"run {p.run_id}, repetition value {v:.3f}")
    reps = {"type": "scatter", "mode": "markers", "name": "repetitions", "x": rx, "y": ry, "customdata": rurl,
            "text": rtext, "hovertemplate": "%{text}<extra></extra>",
            "marker": {"size": 6, "color": "rgba(52, 152, 219, 0.55)"}}
    shapes, annotations = [], []
    marks: list[tuple[float, str, str, str, str]] = []  # (x, text, colour, dash, hover)
    for i, p in enumerate(points):
        if i and p.version_changed:
            marks.append((i - 0.5, "scenario changed", "#8e44ad", "dot", ""))
        if i and getattr(p, "conditions_changed", None):
            marks.append((i - 0.5, "conditions changed", "#d35400", "dashdot", ", ".join(p.conditions_changed)))
    for i in change_points:
        verdict = (verdicts or {}).get(i, "regressed")
        marks.append((i - 0.5, f"change point ({verdict})", VERDICT_COLOURS.get(verdict, "#c0392b"), "solid", ""))
    rows: list[float] = []  # per label row, the x where its last label ends (labels take ~2.2 points of width)
    for x, text, colour, dash, hover in sorted(marks, key=lambda m: m[0]):
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": colour, "width": 2 if dash == "solid" else 1.5, "dash": dash}})
        row = next((k for k, end in enumerate(rows) if end <= x), len(rows))
        if row == len(rows):
            rows.append(x)
        rows[row] = x + 0.25 + 0.11 * len(text) * max(1.0, len(points) / 12)
        annotation = {"xref": "x", "yref": "paper", "x": x, "y": 0.99 - 0.075 * row, "xanchor": "left", "yanchor": "top",
                      "xshift": 3, "showarrow": False, "text": text, "font": {"size": 10, "color": colour},
                      "bgcolor": "rgba(255,255,255,0.8)"}
        if hover:
            annotation["hovertext"] = hover
        annotations.append(annotation)
    step = max(1, math.ceil(len(points) / 30))  # at most ~30 labels: the others are in the hover text and the table
    longest = max((len(t) for t in tick_labels), default=0)
    layout = {"font": FONT, "height": 470 + 4 * min(longest, 40), "margin": {"l": 70, "r": 20, "t": 40, "b": 40},
              "xaxis": {"tickmode": "array", "tickvals": xs[::step], "ticktext": tick_labels[::step],
                        "tickangle": -35 if len(points) > 8 else 0, "range": [-0.6, len(points) - 0.4],
                        "zeroline": False, "automargin": True},
              "yaxis": {"title": {"text": f"{metric} ({unit})" if unit else metric}, "automargin": True},
              "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
              "shapes": shapes, "annotations": annotations, "hovermode": "closest"}
    return {"data": [reps, medians], "layout": layout}


def comparison_figure(c: Any, unit: str, threshold: float) -> dict[str, Any]:
    """Every repetition of both sides of one `Comparison`, their medians, and the baseline ± threshold band."""
    colour = VERDICT_COLOURS.get(c.verdict, VERDICT_COLOURS[None])
    data = []
    for side, values, x0, col in (("baseline", c.baseline_values, 0, "#7f8c8d"), ("candidate", c.candidate_values, 1, colour)):
        k = len(values)
        xs = [x0 - 0.15 + (0.3 * j / (k - 1) if k > 1 else 0.15) for j in range(k)]
        data.append({"type": "scatter", "mode": "markers", "name": f"{side} (n={k})", "x": xs, "y": values,
                     "marker": {"size": 9, "color": col}, "hovertemplate": f"{side}: %{{y:.3f}}<extra></extra>"})
        med = c.baseline_median if side == "baseline" else c.candidate_median
        data.append({"type": "scatter", "mode": "lines", "name": f"{side} median", "x": [x0 - 0.3, x0 + 0.3],
                     "y": [med, med], "line": {"color": col, "width": 3}, "hovertemplate": f"{side} median %{{y:.3f}}<extra></extra>"})
    lo, hi = c.baseline_median * (1 - threshold), c.baseline_median * (1 + threshold)
    layout = {"title": {"text": f"{c.scenario} · {c.metric}: {c.verdict} ({_pct(c.change)})",
                        "font": {"size": 13, "color": colour}, "x": 0.01, "xanchor": "left"},
              "font": FONT, "height": 340, "margin": {"l": 60, "r": 20, "t": 60, "b": 40},
              "xaxis": {"tickmode": "array", "tickvals": [0, 1], "ticktext": ["baseline", "candidate"], "range": [-0.6, 1.6],
                        "zeroline": False},
              "yaxis": {"title": {"text": f"{c.metric} ({unit})" if unit else c.metric}},
              "shapes": [{"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": min(lo, hi), "y1": max(lo, hi),
                          "fillcolor": "rgba(127, 140, 141, 0.15)", "line": {"width": 0}, "layer": "below"}],
              "showlegend": True, "legend": {"orientation": "h", "y": -0.15}}
    return {"data": data, "layout": layout}


#: points per repetition drawn over time on a page (evenly thinned beyond it, the largest value always kept)
MAX_PAGE_POINTS = 4000
#: points per repetition of a drawn CDF (order statistics evenly spaced in rank, the minimum and maximum kept)
CDF_POINTS = 500


def _series_label(key: str) -> tuple[str, str]:
    declared = series_label(key)  # what the workload kind's spec declares (workload_specs MEASURES.series)
    if declared is not None:
        return declared
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_bytes", "bytes")):
        if key.endswith(suffix):
            return key[: -len(suffix)].replace("_", " "), unit
    return key.replace("_", " "), ""


def _thin_keep_max(n: int, limit: int, values: list[float]) -> list[int]:
    """Indices of an even thinning of n points to about `limit`, with the largest value's index included."""
    if n <= limit:
        return list(range(n))
    step = math.ceil(n / limit)
    keep = set(range(0, n, step))
    keep.add(max(range(n), key=lambda i: values[i]))
    return sorted(keep)


def workload_figures(reps: list[Repetition], events: list[dict[str, Any]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Per series key of the workload (rr latency, stream chunk delay, flow completion time): one figure with every
    repetition's values over time (left) and their CDF (right), a legend entry per repetition toggling both.

    Returns (key, figure) pairs; none for repetitions without a workload series (bulk). `t` is the series' time
    (s): rr a transaction's completion, stream a chunk's due time, flows a flow's start. `events` (the scenario's
    `[[event]]` tables) are drawn as dashed lines on the time axis.
    """
    keys = list(dict.fromkeys(k for rep in reps for k, v in rep.series.items() if k != "t" and v))
    out = []
    for key in keys:
        what, unit = _series_label(key)
        data: list[dict[str, Any]] = []
        for i, rep in enumerate(reps):
            values = rep.series.get(key) or []
            t = rep.series.get("t") or []
            if not values:
                continue
            colour = PATH_COLOURS[i % len(PATH_COLOURS)]
            name = (f"TCP on {rep.baseline_path}" if rep.baseline_path else f"rep {rep.index + 1}") \
                + (" (warm-up)" if rep.warmup else "") + ("" if rep.completed else f" ({rep.status})")
            group = f"rep-{rep.index}"
            idx = _thin_keep_max(len(values), MAX_PAGE_POINTS, values)
            if len(t) == len(values):
                data.append({"type": "scatter", "mode": "markers", "name": name, "legendgroup": group,
                             "x": [t[j] for j in idx], "y": _clean([values[j] for j in idx]),
                             "marker": {"color": colour, "size": 4, "opacity": 0.7},
                             "hovertemplate": f"%{{x:.3f}} s: %{{y:.3f}} {unit}<extra>{name}</extra>"})
            ordered = sorted(v for v in values if v is not None and math.isfinite(v))
            n = len(ordered)
            if not n:
                continue
            ranks = sorted({round(r) for r in (k * (n - 1) / (CDF_POINTS - 1) for k in range(CDF_POINTS))}) if n > CDF_POINTS \
                else list(range(n))
            data.append({"type": "scatter", "mode": "lines", "name": f"{name} CDF", "legendgroup": group, "showlegend": False,
                         "x": [ordered[0]] + [ordered[r] for r in ranks], "y": [0.0] + [(r + 1) / n for r in ranks],
                         "xaxis": "x2", "yaxis": "y2",
                         "line": {"color": colour, "width": 1.5, "shape": "hv"},
                         "hovertemplate": f"%{{x:.3f}} {unit}: %{{y:.3f}} of {n}<extra>{name}</extra>"})
        if not data:
            continue
        label = f"{what} ({unit})" if unit else what
        shapes, annotations = _event_marks(events or [], yref="y domain")
        layout = {"title": {"text": f"{what} of every event, per repetition", "font": {"size": 13}, "x": 0.01, "xanchor": "left"},
                  "font": FONT, "height": 380, "margin": {"l": 60, "r": 20, "t": 50, "b": 45},
                  "xaxis": {"title": {"text": "time (s)"}, "domain": [0.0, 0.56]},
                  "yaxis": {"title": {"text": label}, "rangemode": "tozero"},
                  "xaxis2": {"title": {"text": label}, "domain": [0.64, 1.0], "anchor": "y2", "rangemode": "tozero"},
                  "yaxis2": {"title": {"text": "fraction of events ≤ x (CDF)"}, "anchor": "x2", "range": [0, 1.02]},
                  "legend": {"orientation": "h", "y": -0.2}, "hovermode": "closest",
                  "shapes": shapes, "annotations": annotations}
        out.append((key, {"data": data, "layout": layout}))
    return out
