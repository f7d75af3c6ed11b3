"""Build the static report site: index grid, history per scenario and metric, run pages, compare pages.

    stats = build_report(open_store(db), Path("report"), RunFilter(), ReportOptions(metric="goodput_mbps"))

Every page is written from a jinja2 template; every chart is a plotly figure
drawn by the plotly.js that is written once into OUT/assets, so the site
opens from `file://` with no network. Pages are rewritten only when what they
show changed: OUT/manifest.json keeps each run's fingerprint (run id ->
content hash) and each page's input key, so rebuilding after one new run
writes that run's page, its scenario's history pages and the index.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from ..analysis.compare import (DEFAULT_ALPHA, DEFAULT_THRESHOLD, Report, change_ci, compare_samples, compare_stored, decide,
                                directional_p, min_p_value)
from ..analysis.changepoints import SeriesPoint, change_points as find_change_points, propose, segment_pairs
from ..analysis.compare import Comparison
from ..analysis.conditions import differing
from ..analysis.history import History, Point, assign_series
from ..analysis.diagnosis import diagnose
from ..analysis.stats import median_ci
from ..errors import UsageError
from ..metrics import METRIC_TABLE, find_metric, metric as metric_def
from ..result import Estimate, RunResult
from ..store import RunFilter, Store
from . import figures
from .data import RunInfo, kernel_order, load_results, read_runs

#: bump when the pages change shape: a report built by another renderer is rewritten whole (the templates', the
#: assets' and the figure code's own content is hashed into it too, see _renderer)
RENDERER_VERSION = "1"
MANIFEST = "manifest.json"
#: index pages filtered by tag are made for at most this many key=value pairs (the most common ones)
MAX_TAG_FILTERS = 12
NO_LABEL = "(no label)"
#: an index cell takes its column's newest runs until it holds this many repetitions (what compare needs for p < 0.01)
CELL_VALUES = 5

#: the hook for change-point detection: given one scenario's history of one metric (points in display order), the
#: indices of the points where the series changed; drawn as lines on the history page and marked in its table
ChangePointDetector = Callable[[History], list[int]]


@dataclass
class ReportOptions:
    """What the report shows: the index's metric, the compare pages, the verdict rule."""

    #: the metric of the index page opened first (index.html) and of the list of runs; None: each scenario's main
    #: metric (Store.main_metrics), the one compare, history and runs judge it by
    metric: str | None = None
    #: (baseline selector, candidate selector) per compare page
    compares: list[tuple[str, str]] = field(default_factory=list)
    #: the metrics compare pages judge (default: the index's metric; with none, each scenario's main metric)
    compare_metrics: list[str] | None = None
    #: join runs under different SERIES_CONDITIONS (backend, accelerator, executor, time mode, machine) into one
    #: series in each index row's change-point search and on the history pages (default: each its own series)
    mix: bool = False
    threshold: float = DEFAULT_THRESHOLD
    alpha: float = DEFAULT_ALPHA
    #: the index column every other column is compared with (default: the first, oldest kernel or label)
    reference: str | None = None
    #: a detector of your own for the history pages (replaces the built-in one there)
    change_points: ChangePointDetector | None = None
    #: the built-in detection: each index row (a scenario's cells across kernels or labels) is searched for
    #: steps by analysis.changepoints (PELT proposes, compare's rule judges the pooled segments); the cell
    #: where a step starts is marked, and the history page marks it before that kernel's or label's first run
    detect_change_points: bool = True


@dataclass
class BuildStats:
    runs: int = 0
    pages: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    seconds: float = 0.0
    index: Path | None = None


def _renderer() -> str:
    """RENDERER_VERSION and a hash of what draws the pages: editing a template rewrites every page it made."""
    digest = hashlib.sha256(RENDERER_VERSION.encode())
    package = resources.files("mptcplab.webreport")
    for folder in ("templates", "assets"):
        for item in sorted(package.joinpath(folder).iterdir(), key=lambda p: p.name):
            digest.update(item.name.encode() + item.read_bytes())
    digest.update(package.joinpath("figures.py").read_bytes())
    return digest.hexdigest()[:16]


RENDERER = _renderer()


def _statistics() -> str:
    """A hash of the code behind cached verdicts, estimates and change points (analysis/compare.py, stats.py,
    changepoints.py)."""
    analysis = resources.files("mptcplab.analysis")
    return hashlib.sha256(b"".join(analysis.joinpath(f).read_bytes()
                                   for f in ("compare.py", "stats.py", "changepoints.py"))).hexdigest()[:16]


STATISTICS = _statistics()


def slug(text: str) -> str:
    """A file-name-safe form of a scenario name, metric, label or tag (never empty, never a path)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    return s[:80] + ("-" + hashlib.sha1(text.encode()).hexdigest()[:6] if s != text or len(s) > 80 else "")


def _key(*parts: Any) -> str:
    """A page's (or a cached value's) input key: what it shows, the renderer, and the statistics that judged it."""
    return hashlib.sha256(json.dumps([RENDERER, STATISTICS, *parts], sort_keys=True, default=str).encode()).hexdigest()[:24]


def _tojson(value: Any) -> Markup:
    """JSON safe inside <script> and HTML attributes."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or infinity somewhere: JSON.parse refuses them, plotly draws null as a gap
        text = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:+.1f}%"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "–"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("mptcplab.webreport", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(tojson=_tojson, fmt=_fmt, pct=_pct, when=_when, slug=slug,
                       pretty=lambda v: json.dumps(v, indent=2, sort_keys=True, default=str))
    return env


def _lab_version() -> str:
    try:
        return metadata.version("mptcplab")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Site:
    """OUT: the manifest of the previous build, and the pages of this one."""

    def __init__(self, out: Path) -> None:
        self.out = out
        old: dict[str, Any] = {}
        if (out / MANIFEST).exists():
            try:
                old = json.loads((out / MANIFEST).read_text())
            except (OSError, ValueError):
                old = {}
        #: pages of the previous build: kept when their key matches (only if the same renderer made them)
        self.old_pages: dict[str, str] = old.get("pages", {})
        self.same_renderer = old.get("renderer") == RENDERER
        same_rule = old.get("statistics") == STATISTICS
        self.verdicts: dict[str, Any] = old.get("verdicts", {}) if same_rule else {}
        self.used_verdicts: dict[str, Any] = {}
        self.estimates: dict[str, list[float]] = old.get("estimates", {}) if same_rule else {}
        self.used_estimates: dict[str, list[float]] = {}
        self.changes: dict[str, Any] = old.get("change_points", {}) if same_rule else {}
        self.used_changes: dict[str, Any] = {}
        self.pages: dict[str, str] = {}
        self.written = self.unchanged = 0

    def fresh(self, rel: str, key: str) -> bool:
        """Whether `rel` is already written from the same inputs (then it is kept, and counted)."""
        if self.same_renderer and self.old_pages.get(rel) == key and (self.out / rel).exists():
            self.pages[rel] = key
            self.unchanged += 1
            return True
        return False

    def write(self, rel: str, key: str, text: str) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self.pages[rel] = key
        self.written += 1

    def verdict(self, base: list[float], cand: list[float], metric: str, threshold: float, alpha: float,
                with_ci: bool = True) -> dict[str, Any]:
        """The verdict of `compare` on two samples (what `compare_samples` decides), remembered across builds.

        Without `with_ci` the bootstrap CI of the change is skipped; the
        verdict, change and p-value do not depend on it.
        """
        k = _key(base, cand, metric, threshold, alpha, with_ci)
        found = self.used_verdicts.get(k) or self.verdicts.get(k)
        if found is None:
            found = _judge(base, cand, metric, threshold, alpha, with_ci)
        self.used_verdicts[k] = found
        return found

    def finish(self, runs: dict[str, str]) -> int:
        removed = 0
        for rel in self.old_pages:
            if rel not in self.pages:
                try:
                    (self.out / rel).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        manifest = {"renderer": RENDERER, "statistics": STATISTICS, "generated_at": time.time(), "runs": runs, "pages": self.pages,
                    "verdicts": self.used_verdicts, "estimates": self.used_estimates, "change_points": self.used_changes}
        tmp = self.out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, self.out / MANIFEST)
        return removed


_P_MEMO: dict[tuple[Any, ...], float] = {}


def _rank_key(base: list[float], cand: list[float], change: float) -> tuple[Any, ...]:
    from scipy.stats import rankdata

    ranks = rankdata([*base, *cand])
    return (tuple(sorted(ranks[:len(base)])), tuple(sorted(ranks[len(base):])), change >= 0)


def _median_change(base: list[float], cand: list[float]) -> float:
    mb, mc = float(np.median(base)), float(np.median(cand))
    return (mc - mb) / mb if mb else (0.0 if mc == mb else float("inf"))


def _p_value(base: list[float], cand: list[float], change: float) -> float:
    """`directional_p`, memoized on the ranks: the Mann-Whitney p-value (exact or permutation) is a function of
    which ranks (ties averaged) fall on which side and of the direction, never of the values themselves, so two
    5-vs-5 samples with the same rank pattern share one computation (at most 252 patterns without ties)."""
    key = _rank_key(base, cand, change)
    p = _P_MEMO.get(key)
    if p is None:
        p = _P_MEMO[key] = directional_p(base, cand, change)
    return p


def _p_task(args: tuple[list[float], list[float], float]) -> float:
    return directional_p(*args)


#: below this many new rank patterns the p-values are computed here, above it in one process per CPU
PARALLEL_MIN = 64


def prefetch_p_values(pairs: Iterable[tuple[list[float], list[float]]]) -> int:
    """Compute the p-values of many (baseline, candidate) pairs ahead, on every CPU; returns how many were new.

    The permutation tests behind tied samples (integer counters, pass/fail)
    take about 10 ms each and a history of hundreds of runs asks for
    thousands: one worker process per CPU, forked, shares that out.
    """
    missing: dict[tuple[Any, ...], tuple[list[float], list[float], float]] = {}
    for base, cand in pairs:
        change = _median_change(base, cand)
        key = _rank_key(base, cand, change)
        if key not in _P_MEMO and key not in missing:
            missing[key] = (base, cand, change)
    workers = min(os.cpu_count() or 1, 8)
    if len(missing) < PARALLEL_MIN or workers < 2:
        for key, args in missing.items():
            _P_MEMO[key] = directional_p(*args)
        return len(missing)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for key, p in zip(missing, pool.map(_p_task, missing.values(), chunksize=16)):
            _P_MEMO[key] = p
    return len(missing)


def _judge(base: list[float], cand: list[float], metric: str, threshold: float, alpha: float,
           with_ci: bool) -> dict[str, Any]:
    """compare_samples' verdict, change, p-value and notes (and its CI of the change `with_ci`).

    A proportion metric (pass_rate) is judged by compare_samples itself
    (Fisher's exact test is cheap); the others with the p-value memoized on ranks.
    """
    better = metric_def(metric).better
    if metric_def(metric).proportion:
        c = compare_samples(base, cand, metric=metric, better=better, threshold=threshold, alpha=alpha)
        return {"change": c.change, "p": c.p_value, "verdict": c.verdict, "ci95": list(c.ci95) if with_ci else None,
                "notes": c.notes}
    change = _median_change(base, cand)
    p = _p_value(base, cand, change)
    notes = [f"{len(base)} vs {len(cand)} repetitions can never reach p < {alpha:g}: the verdict can only be unchanged "
             f"(5 per side are enough for alpha = 0.01)"] if min_p_value(len(base), len(cand)) >= alpha else []
    ci = [x if math.isfinite(x) else None for x in change_ci(base, cand)] if with_ci else None
    return {"change": change if math.isfinite(change) else None, "p": p, "verdict": decide(change, p, better, threshold, alpha),
            "ci95": ci, "notes": notes}


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file", "give a directory for the report (it is created if missing)")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise UsageError(f"{out} is not empty and holds no mptcplab report ({MANIFEST} is missing)",
                         "give a new or empty directory, or the directory of an earlier report to update it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MANIFEST).exists():  # mark the directory as a report at once: an interrupted build can be resumed
            (out / MANIFEST).write_text(json.dumps({"renderer": RENDERER, "pages": {}}))
    except OSError as e:
        raise UsageError(f"cannot write the report to {out}: {e.strerror}", "give a writable directory") from None


def _write_assets(out: Path) -> str:
    """plotly.js (once per plotly version), the stylesheet and the page script; returns plotly's file name."""
    import plotly
    from plotly.offline import get_plotlyjs

    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    name = f"plotly-{plotly.__version__}.min.js"
    if not (assets / name).exists():
        tmp = assets / (name + ".tmp")
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        os.replace(tmp, assets / name)
    for old in assets.glob("plotly-*.min.js"):
        if old.name != name:
            old.unlink()
    for res in ("report.css", "report.js"):
        text = resources.files("mptcplab.webreport").joinpath("assets", res).read_text(encoding="utf-8")
        target = assets / res
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    return name


def _metrics(store: Store, chosen: str | None) -> list[str]:
    # every path's subflow metrics ("wifi.idle_queued_share", ...) would be a page each per scenario: only when chosen
    """The metrics the report has pages for: every stored one the metric table defines (a name it does not, stored by
    another version of the lab, has no direction to judge by and is left out), in table order; `chosen` first if
    the store has none of it (its pages then say so). UnknownMetric for a `chosen` the table does not define."""
    if chosen is not None:
        metric_def(chosen)
    stored = [m for m in store.stored_metrics() if (row := find_metric(m)) is not None and (row.scope != "subflow" or m == chosen)]
    names = [m for m in METRIC_TABLE if m in stored] + [m for m in stored if m not in METRIC_TABLE]
    if chosen is not None and chosen not in names:
        names.insert(0, chosen)
    return names


def _columns(runs: Iterable[RunInfo]) -> tuple[str, list[str]]:
    """The index's columns: kernels in version order when they vary, else labels in order of first use."""
    runs = list(runs)
    kernels = sorted({r.kernel for r in runs}, key=kernel_order)
    if len(kernels) > 1:
        return "kernel", kernels
    return "label", list(dict.fromkeys(r.label or NO_LABEL for r in sorted(runs, key=lambda r: r.started_at)))


def _row_series(row: dict[str, Any]) -> list[list[tuple[str, list[float]]]]:
    """An index row as the series its change points are searched in, each [(column, the cell's values)] over its
    measured cells in column order: one per SERIES_CONDITIONS group of the cells' newest runs (one with --mix)."""
    groups: dict[Any, list[tuple[str, list[float]]]] = {}
    for cell in row["cells"]:
        if cell.get("values"):
            groups.setdefault(cell.get("series", ()), []).append((cell["column"], list(cell["values"])))
    return list(groups.values())


def _row_changes(builder: "_Builder", metric: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every change point of an index row, over each of its series."""
    return [cp for series in _row_series(row) for cp in builder.row_changes(metric, series)]


def run_page(uid: str) -> str:
    return f"runs/{slug(uid)}.html"


def history_page(scenario: str, metric: str) -> str:
    return f"history/{slug(scenario)}/{slug(metric)}.html"


#: the index of each scenario by its own main metric, in page names and links
MAIN = "main metric"


def index_page(metric: str | None, tag: tuple[str, str] | None = None, default: str | None = None) -> str:
    """The index page of `metric` (None: each scenario's main metric) for runs tagged `tag`; index.html for the
    default metric (None unless --metric) without a tag."""
    if tag is None and metric == default:
        return "index.html"
    return f"index-{slug(metric or 'main')}" + (f"--{slug(tag[0] + '=' + tag[1])}" if tag else "") + ".html"


def compare_page(base: str, cand: str) -> str:
    return f"compare/{slug(base)}..{slug(cand)}.html"


def build_report(store: Store, out: Path, flt: RunFilter | None = None, options: ReportOptions | None = None) -> BuildStats:
    """Write (or update) the report of the runs `flt` selects in `store` into the directory `out`.

    Raises UsageError for an unusable `out` (a file, a foreign non-empty
    directory, not writable), an unknown metric or reference column, or a
    compare selection that matches nothing; StoreError if the store cannot be read.
    """
    t0 = time.perf_counter()
    options = options or ReportOptions()
    flt = flt or RunFilter()
    metrics = _metrics(store, options.metric)
    runs = read_runs(store, flt, metrics)
    for base, cand in options.compares:
        for side, selector in (("baseline", base), ("candidate", cand)):
            if not store.select_runs(selector):
                raise UsageError(f"--compare {base}..{cand}: the {side} {selector!r} matches no run in {store.where}",
                                 "a selector is a run id, a label, a kernel release or a tag key=value; list runs with: mptcplab runs")
    if options.reference is not None:
        axis, columns = _columns(runs)
        if options.reference not in columns:
            raise UsageError(f"--reference {options.reference!r} is not a column of the index",
                             f"the {axis}s are: {', '.join(columns) or 'none'}")
    _prepare_out(out)
    site = _Site(out)
    ctx = {"generated": _when(time.time()), "version": _lab_version(), "plotly_js": _write_assets(out),
           "compares": [(f"{b}..{c}", compare_page(b, c)) for b, c in options.compares], "store": store.where}
    env = _environment()
    builder = _Builder(store, site, env, ctx, runs, metrics, options)
    builder.run_pages()
    builder.history_pages()
    builder.index_pages()
    builder.runs_page()
    builder.compare_pages()
    removed = site.finish({r.uid: r.fingerprint for r in runs})
    return BuildStats(runs=len(runs), pages=len(site.pages), written=site.written, unchanged=site.unchanged,
                      removed=removed, seconds=time.perf_counter() - t0, index=out / "index.html")


class _Builder:
    def __init__(self, store: Store, site: _Site, env: jinja2.Environment, ctx: dict[str, Any], runs: list[RunInfo],
                 metrics: list[str], options: ReportOptions) -> None:
        self.store, self.site, self.env, self.ctx = store, site, env, ctx
        self.runs, self.metrics, self.options = runs, metrics, options
        self.by_uid = {r.uid: r for r in runs}
        self.scenarios: dict[str, list[RunInfo]] = {}
        for r in runs:
            self.scenarios.setdefault(r.scenario, []).append(r)
        self.templates: dict[str, jinja2.Template] = {}
        self._grids: dict[str | None, dict[str, Any]] = {}
        #: scenario -> its workload kind, its main metric (what a verdict judges it by unless --metric), and every
        #: metric any of its runs stored (a metric outside that and its kind's own is "n/a" for it)
        self.kinds = store.workload_kinds(self.scenarios)
        self.mains = store.main_metrics(self.scenarios)
        self.measured = store.metrics_by_scenario()

    def render(self, template: str, rel: str, **values: Any) -> str:
        tpl = self.templates.get(template) or self.templates.setdefault(template, self.env.get_template(template))
        root = "../" * rel.count("/")
        return tpl.render(**self.ctx, root=root, page=rel, **values)

    # -- run pages ------------------------------------------------------------
    def run_pages(self) -> None:
        stale = [r.uid for r in self.runs if not self.site.fresh(run_page(r.uid), self.run_key(r))]
        for start in range(0, len(stale), 200):
            loaded = load_results(self.store, stale[start:start + 200])
            for uid in stale[start:start + 200]:
                if uid in loaded:
                    result, content = loaded[uid]
                    rel = run_page(uid)
                    self.site.write(rel, self.run_key(self.by_uid[uid]), self._run_html(rel, result, content))

    def run_key(self, run: RunInfo) -> str:
        """A run page shows the run, and links to the metrics' history pages and the compare pages (navigation)."""
        return _key(run.fingerprint, self.metrics, self.ctx["compares"])

    def _run_html(self, rel: str, result: RunResult, content: dict[str, Any] | None) -> str:
        env = result.environment
        info = self.by_uid[result.run_id]
        events = list((content or {}).get("event") or [])
        figs = []
        for rep in result.repetitions:
            fig = figures.repetition_figure(rep, events, result.repetition_label(rep))
            if fig is not None:
                figs.append((rep, f"rep-{rep.index}", fig))
        workload = [(None, f"workload-{slug(key)}", fig) for key, fig in figures.workload_figures(result.repetitions, events)]
        mib = {side: _changed_mib(result, side) for side in ("mib", "mib_server")}
        return self.render(
            "run.html.j2", rel, title=f"run {result.run_id}", r=result, info=info, figures=figs + workload,
            repetition_figures=figs, workload_figures=workload, mib=mib,
            with_cwnd=any(rep.timeseries and rep.timeseries.cwnd for rep in result.repetitions),
            conditions=_conditions(result), sysctls=_sysctl_rows(env), link=env.get("link"),
            link_stats=_link_rows(result), scenario_toml=_scenario_toml(content),
            failed=[rep for rep in result.repetitions if rep.fails_run],
            run_errors=result.failures()[0], run_notes=result.failures()[1], diagnosis=diagnose(result),
            paths=[s.path for s in result.repetitions[0].subflows] if result.repetitions else [],
            summary=self._run_summary(info),
            history_links=[(m, history_page(info.scenario, m)) for m in self.metrics if info.values.get(m)],
        )

    def _run_summary(self, info: RunInfo) -> list[tuple[str, str, Any]]:
        order = dict.fromkeys([self.mains[info.scenario], *self.metrics])  # its main metric first
        return [(m, metric_def(m).unit, self.estimate(info, m)) for m in order if info.values.get(m)]

    def estimate(self, run: RunInfo, metric: str) -> Estimate:
        """median_ci of a run's metric, remembered across builds by the run's fingerprint."""
        k = f"{run.fingerprint}:{metric}"
        found = self.site.used_estimates.get(k) or self.site.estimates.get(k)
        if found is None:
            est = median_ci(run.values[metric])
            found = [est.median, est.ci95[0], est.ci95[1], est.n]
        self.site.used_estimates[k] = found
        return Estimate(median=found[0], ci95=(found[1], found[2]), n=found[3])

    # -- history pages ----------------------------------------------------------
    def history_pages(self) -> None:
        threshold, alpha = self.options.threshold, self.options.alpha
        stale = []
        if self.options.detect_change_points:  # the index rows' change points (marked on the history pages too)
            self.prefetch_changes([(m, series) for m in self.metrics for row in self.full_grid(m)["rows"]
                                   for series in _row_series(row)])
        for scenario, runs in self.scenarios.items():
            # kernel-version order when the kernels differ (what changed from one release to the next), else time
            orders = ["kernel"] if len({r.kernel for r in runs}) > 1 else ["time"]
            for m in self.metrics:
                for order in orders:
                    rel = history_page(scenario, m)
                    key = _key("history", scenario, m, order, threshold, alpha, [r.fingerprint for r in runs],
                               self.metrics, self.ctx["compares"],
                               getattr(self.options.change_points, "__qualname__", None), self.history_steps(scenario, m),
                               self.options.mix)
                    if not self.site.fresh(rel, key):
                        stale.append((rel, key, scenario, m, order, orders, runs))
        # the step verdicts' p-values of every stale page at once, on every CPU (the slow part of a full build)
        pairs = []
        for _, _, scenario, m, order, _, runs in stale:
            values = [r.values[m] for r in self._ordered(runs, order) if r.values.get(m)]
            if not metric_def(m).proportion:
                pairs += [(a, b) for a, b in zip(values, values[1:]) if _key(a, b, m, threshold, alpha, False) not in self.site.verdicts]
        prefetch_p_values(pairs)
        for rel, key, scenario, m, order, orders, runs in stale:
            self.site.write(rel, key, self._history_html(rel, scenario, m, order, orders, runs))

    @staticmethod
    def _ordered(runs: list[RunInfo], order: str) -> list[RunInfo]:
        if order == "kernel":
            return sorted(runs, key=lambda r: (kernel_order(r.kernel), r.started_at))
        return sorted(runs, key=lambda r: r.started_at)

    def history(self, scenario: str, metric: str, order: str, runs: list[RunInfo]) -> tuple[History, list[RunInfo]]:
        """The judged history of one scenario's metric, its runs in kernel-version order or time order."""
        better = metric_def(metric).better
        hist = History(scenario=scenario, metric=metric, better=better, threshold=self.options.threshold,
                       alpha=self.options.alpha)
        kept = []
        for r in self._ordered(runs, order):
            values = r.values.get(metric)
            if not values:
                hist.notes.append(f"run {r.uid} ({r.status}) has no measured repetition: left out")
                continue
            est = self.estimate(r, metric)
            hist.points.append(Point(run_id=r.uid, started_at=r.started_at, kernel=r.kernel, label=r.label,
                                     scenario_hash=r.scenario_hash, status=r.status, n=est.n, median=est.median,
                                     ci95=est.ci95, values=list(values)))
            kept.append(r)
        conds = [self.by_uid[p.run_id].conditions for p in hist.points]
        notes: list[str] = assign_series(hist.points, conds, self.options.mix)
        last: dict[str, Point] = {}
        pairs = []
        for cur in hist.points:  # each point against the one before it in its series (analysis.history.judge_steps)
            if cur.series in last:
                pairs.append((last[cur.series], cur))
            last[cur.series] = cur
        for prev, cur in pairs:  # verdicts cached across builds
            v = self.site.verdict(prev.values, cur.values, metric, self.options.threshold, self.options.alpha, with_ci=False)
            cur.change, cur.p_value, cur.verdict = v["change"], v["p"], v["verdict"]
            cur.version_changed = cur.scenario_hash != prev.scenario_hash
            # analysis.history marks conditions the same way (analysis.conditions)
            for name, before, after in differing([self.by_uid[prev.run_id].conditions], [self.by_uid[cur.run_id].conditions]):
                cur.conditions_changed.append(name)
                notes.append(f"run {cur.run_id}: {name} differs from run {prev.run_id} ({', '.join(before)} -> {', '.join(after)})")
            notes.extend(v["notes"])
        hist.notes = list(dict.fromkeys(notes)) + hist.notes
        return hist, kept

    def _history_html(self, rel: str, scenario: str, metric: str, order: str, orders: list[str], runs: list[RunInfo]) -> str:
        hist, kept = self.history(scenario, metric, order, runs)
        steps = []
        if self.options.change_points:
            change_points = sorted(set(self.options.change_points(hist))) if hist.points else []
        else:  # the index row's steps: before the first run of the kernel (or label) where each starts
            change_points = []
            for cp in self.history_steps(scenario, metric):
                column = (lambda p: p.kernel) if cp["axis"] == "kernel" else (lambda p: p.label or NO_LABEL)
                at = next((i for i, p in enumerate(hist.points) if column(p) == cp["after"]), None)
                if at:  # at 0 there is no step to draw
                    change_points.append(at)
                    steps.append(dict(cp, at=at, run_id=hist.points[at].run_id))
            change_points = sorted(set(change_points))
        root = "../" * rel.count("/")
        urls = [root + run_page(p.run_id) for p in hist.points]
        # a kernel by its upstream version (6.12.43; the release is in the hover text and the table)
        ticks = [(self.by_uid[p.run_id].version or p.kernel) if order == "kernel"
                 else datetime.fromtimestamp(p.started_at, timezone.utc).strftime("%m-%d %H:%M") for p in hist.points]
        ticks = [f"{t} · {p.run_id[:6]}" for t, p in zip(ticks, hist.points)]
        unit = metric_def(metric).unit
        verdicts = {s["at"]: s["verdict"] for s in steps}
        fig = figures.history_figure(hist.points, metric, unit, urls, ticks, change_points, verdicts) if hist.points else None
        return self.render("history.html.j2", rel, title=f"{scenario} · {metric}", scenario=scenario, metric=metric,
                           unit=unit, better=metric_def(metric).better, hist=hist, order=order,
                           figures=[(None, "history", fig)] if fig else [], change_points=change_points, steps=steps,
                           metric_links=[(m, history_page(scenario, m)) for m in self.metrics])

    # -- index ------------------------------------------------------------------
    def _tag_filters(self) -> list[tuple[str, str]]:
        counts: dict[tuple[str, str], int] = {}
        for r in self.runs:
            for kv in r.tags.items():
                counts[kv] = counts.get(kv, 0) + 1
        common = sorted(counts, key=lambda kv: (-counts[kv], kv))[:MAX_TAG_FILTERS]
        return sorted(common)

    def index_pages(self) -> None:
        reference = self.options.reference
        tags = self._tag_filters()
        default = self.options.metric
        stale = []
        for m in [None, *self.metrics]:  # None: each scenario by its main metric
            for tag in [None, *tags]:
                rel = index_page(m, tag, default)
                runs = self.runs if tag is None else [r for r in self.runs if r.tags.get(tag[0]) == tag[1]]
                key = _key("index", m, tag, reference, self.options.threshold, self.options.alpha, tags, self.metrics,
                           self.ctx["compares"], [r.fingerprint for r in self.runs], self.options.detect_change_points,
                           self.options.mix, sorted(self.mains.items()), default)
                if not self.site.fresh(rel, key):
                    stale.append((rel, key, m, tag, self.grid(runs, m) if tag is not None else self.full_grid(m)))
        if self.options.detect_change_points:
            self.prefetch_changes([(row["metric"], series) for _, _, _, _, grid in stale for row in grid["rows"]
                                   for series in _row_series(row)])
        for rel, key, m, tag, grid in stale:
            self.site.write(rel, key, self._index_html(rel, m, tag, tags, grid, default))

    # -- change points ------------------------------------------------------------
    def full_grid(self, metric: str | None) -> dict[str, Any]:
        """The index grid of every run for `metric` (computed once per build: history pages mark its steps)."""
        if metric not in self._grids:
            self._grids[metric] = self.grid(self.runs, metric)
        return self._grids[metric]

    def _points(self, series: list[tuple[str, list[float]]]) -> list[SeriesPoint]:
        return [SeriesPoint(name=col, version=col, values=list(v), n=len(v), median=statistics.median(v)) for col, v in series]

    def _segment_judge(self, metric: str) -> Callable[[list[float], list[float]], Comparison]:
        """compare_samples' decision on two pooled segments, through the report's memoized verdicts (no bootstrap CI)."""
        better, proportion = metric_def(metric).better, metric_def(metric).proportion

        def judge(base: list[float], cand: list[float]) -> Comparison:
            v = self.site.verdict(base, cand, metric, self.options.threshold, self.options.alpha, with_ci=False)
            centre = statistics.fmean if proportion else statistics.median
            change = v["change"] if v["change"] is not None else math.inf
            return Comparison(scenario="", metric=metric, better=better, baseline_median=centre(base),
                              candidate_median=centre(cand), n_baseline=len(base), n_candidate=len(cand), change=change,
                              ci95=(math.nan, math.nan), p_value=v["p"], verdict=v["verdict"])
        return judge

    def _change_key(self, metric: str, series: list[tuple[str, list[float]]]) -> str:
        return _key("change-points", metric, self.options.threshold, self.options.alpha, series)

    def prefetch_changes(self, jobs: list[tuple[str, list[tuple[str, list[float]]]]]) -> None:
        """The p-values the first judging round of many rows' change points needs, on every CPU at once."""
        pairs = []
        for metric, series in jobs:
            if len(series) < 2 or metric_def(metric).proportion or self._change_key(metric, series) in self.site.changes:
                continue
            points = self._points(series)
            pairs += [(a, b) for a, b in segment_pairs(points, propose(points))
                      if _key(a, b, metric, self.options.threshold, self.options.alpha, False) not in self.site.verdicts]
        prefetch_p_values(pairs)

    def row_changes(self, metric: str, series: list[tuple[str, list[float]]]) -> list[dict[str, Any]]:
        """The change points of one index row (cells in column order, each (column, values)), remembered across builds."""
        if len(series) < 2:
            return []
        k = self._change_key(metric, series)
        found = self.site.used_changes.get(k)
        if found is None:
            found = self.site.changes.get(k)
        if found is None:
            cps = find_change_points(self._points(series), metric=metric, better=metric_def(metric).better,
                                     threshold=self.options.threshold, alpha=self.options.alpha,
                                     judge=self._segment_judge(metric))
            found = [{"before": c.before, "after": c.after, "verdict": c.verdict,
                      "change": c.change if math.isfinite(c.change) else None, "p": c.p_value,
                      "median_before": c.median_before, "median_after": c.median_after,
                      "n_before": c.n_before, "n_after": c.n_after} for c in cps]
        self.site.used_changes[k] = found
        return found

    def history_steps(self, scenario: str, metric: str) -> list[dict[str, Any]]:
        """The change points of `scenario`'s row in the index of every run (what its history page marks)."""
        if not self.options.detect_change_points:
            return []
        grid = self.full_grid(metric)
        row = next((r for r in grid["rows"] if r["scenario"] == scenario), None)
        return [dict(cp, axis=grid["axis"]) for cp in _row_changes(self, metric, row)] if row else []

    def columns(self, runs: Iterable[RunInfo]) -> tuple[str, list[str]]:
        return _columns(runs)

    def grid(self, runs: list[RunInfo], metric: str | None) -> dict[str, Any]:
        """Scenario × column cells: median of the newest runs' repetitions, change and verdict against the reference.

        `metric` None: each row by its scenario's main metric (self.mains), as
        compare and history judge it. A cell holds the newest run of its
        scenario and column, and older ones until it has CELL_VALUES measured
        repetitions (a matrix cell of 3 repetitions takes two runs): the state
        of that kernel or label now, judged like `compare` judges two
        selections. Pooling every run ever made would mix old scenario
        versions and make the exact tests slow. A metric the scenario does not
        measure (no run of it stored it, and it is not its kind's own) is "n/a"
        in every cell; a cell whose newest run ran under other SERIES_CONDITIONS
        than the reference cell's (another backend, accelerator, executor, time
        mode or machine) is not judged against it, unless --mix.
        """
        from ..analysis.conditions import series_key
        from ..metrics import own_metrics

        axis, columns = self.columns(runs)
        reference = self.options.reference if self.options.reference in columns else (columns[0] if columns else None)
        by_scenario: dict[str, list[RunInfo]] = {}
        for r in sorted(runs, key=lambda r: r.started_at, reverse=True):
            by_scenario.setdefault(r.scenario, []).append(r)

        rows = []
        for scenario in sorted(by_scenario):
            m = metric or self.mains[scenario]
            applies = m in self.measured.get(scenario, set()) or m in own_metrics(self.kinds[scenario])
            pools: dict[str, list[RunInfo]] = {}
            unmeasured: dict[str, RunInfo] = {}  # the newest run of a cell that measured nothing (all failed)
            for r in by_scenario[scenario]:
                col = r.kernel if axis == "kernel" else (r.label or NO_LABEL)
                if r.values.get(m):
                    pools.setdefault(col, []).append(r)
                else:
                    unmeasured.setdefault(col, r)

            def newest(col: str | None) -> tuple[list[RunInfo], list[float]]:
                members, values = [], []
                for r in pools.get(col, []) if col is not None else []:
                    members.append(r)
                    values.extend(r.values[m])
                    if len(values) >= CELL_VALUES:
                        break
                return members, values

            ref_members, ref_values = newest(reference)
            ref_series = series_key(ref_members[0].conditions) if ref_members and not self.options.mix else ()
            cells = []
            for col in columns:
                members, values = newest(col)
                series = series_key(members[0].conditions) if members and not self.options.mix else ()
                cell: dict[str, Any] = {"column": col, "n": len(values), "runs": [r.uid for r in members], "values": values,
                                        "median": statistics.median(values) if values else None,
                                        "latest": members[0].uid if members else None, "p": None,
                                        "unmeasured": unmeasured.get(col) if not members and applies else None,
                                        "not_measured": not applies and col in unmeasured,
                                        "verdict": None, "change": None, "reference": col == reference, "notes": [],
                                        "conditions": [], "change_point": None, "series": series, "other_series": None}
                if values and ref_values and col != reference and series != ref_series:
                    cell["other_series"] = "; ".join(f"{name}: {', '.join(b)} → {', '.join(c)}" for name, b, c in differing(
                        [r.conditions for r in ref_members], [r.conditions for r in members]))
                elif values and ref_values and col != reference:
                    v = self.site.verdict(ref_values, values, m, self.options.threshold, self.options.alpha)
                    cell.update(verdict=v["verdict"], change=v["change"], p=v["p"], ci95=v["ci95"], notes=list(v["notes"]))
                    cell["conditions"] = [f"{name}: {', '.join(b)} → {', '.join(c)}" for name, b, c in differing(
                        [r.conditions for r in ref_members], [r.conditions for r in members])]
                cells.append(cell)
            rows.append({"scenario": scenario, "metric": m, "unit": metric_def(m).unit, "better": metric_def(m).better,
                         "cells": cells})
        # a kernel column is headed by its upstream version (6.12.43), the release (6.12.43+deb12-cloud-amd64) on hover
        versions = {r.kernel: r.version for r in runs if r.version} if axis == "kernel" else {}
        return {"axis": axis, "columns": columns, "reference": reference, "rows": rows,
                "headers": {c: versions.get(c) or c for c in columns}}

    def _index_html(self, rel: str, metric: str | None, tag: tuple[str, str] | None, tags: list[tuple[str, str]],
                    grid: dict[str, Any], default: str | None) -> str:
        from ..analysis.conditions import sizing_note

        runs = self.runs if tag is None else [r for r in self.runs if r.tags.get(tag[0]) == tag[1]]
        n_runs = len(runs)
        n_steps = 0
        for row in grid["rows"]:
            row["history"] = history_page(row["scenario"], row["metric"])
            if self.options.detect_change_points:
                by_column = {cell["column"]: cell for cell in row["cells"]}
                for cp in _row_changes(self, row["metric"], row):
                    by_column[cp["after"]]["change_point"] = cp
                    n_steps += 1
            for cell in row["cells"]:
                cell["run_page"] = run_page(cell["latest"]) if cell["latest"] else None
                if cell["unmeasured"] is not None:
                    cell["unmeasured_page"] = run_page(cell["unmeasured"].uid)
        return self.render(
            "index.html.j2", rel, title=f"{metric or 'each scenario by its ' + MAIN} by scenario and {grid['axis']}",
            metric=metric, unit=metric_def(metric).unit if metric else "", better=metric_def(metric).better if metric else "",
            grid=grid, tag=tag, n_runs=n_runs, threshold=self.options.threshold, alpha=self.options.alpha,
            detect_change_points=self.options.detect_change_points, n_steps=n_steps,
            sizing_note=sizing_note([r.conditions for r in runs]),
            metric_links=[(MAIN, index_page(None, tag, default))] + [(m, index_page(m, tag, default)) for m in self.metrics],
            tag_links=[(None, index_page(metric, None, default))] + [(t, index_page(metric, t, default)) for t in tags],
            figures=[])

    # -- the list of runs ---------------------------------------------------------
    def runs_page(self) -> None:
        rel = "runs.html"
        key = _key("runs", self.metrics, self.ctx["compares"], [r.fingerprint for r in self.runs])
        if self.site.fresh(rel, key):
            return
        rows = []
        for r in reversed(self.runs):
            m = self.options.metric or self.mains[r.scenario]
            rows.append({"r": r, "page": run_page(r.uid), "metric": m, "unit": metric_def(m).unit,
                         "median": statistics.median(r.values[m]) if r.values.get(m) else None})
        self.site.write(rel, key, self.render("runs.html.j2", rel, title="runs", rows=rows, metric=self.options.metric,
                                              figures=[]))

    # -- compare pages ------------------------------------------------------------
    def compare_pages(self) -> None:
        metrics = self.options.compare_metrics or ([self.options.metric] if self.options.metric else None)
        for base, cand in self.options.compares:
            rel = compare_page(base, cand)
            selected = [self.store.select_runs(base), self.store.select_runs(cand)]
            prints = [[self.by_uid[u].fingerprint if u in self.by_uid else u for u in side] for side in selected]
            key = _key("compare", base, cand, metrics, self.options.threshold, self.options.alpha, prints, self.ctx["compares"])
            if self.site.fresh(rel, key):
                continue
            report = compare_stored(self.store, base, cand, metrics, threshold=self.options.threshold,
                                    alpha=self.options.alpha)
            self.site.write(rel, key, self._compare_html(rel, report, selected))

    def _compare_html(self, rel: str, report: Report, selected: list[list[str]]) -> str:
        figs = [(c, f"cmp-{i}", figures.comparison_figure(c, metric_def(c.metric).unit, report.threshold))
                for i, c in enumerate(report.comparisons)]
        sides = [[(u, run_page(u) if u in self.by_uid else None, self.by_uid.get(u)) for u in side] for side in selected]
        return self.render("compare.html.j2", rel, title=f"compare {report.baseline} .. {report.candidate}", report=report,
                           figures=figs, baseline_runs=sides[0], candidate_runs=sides[1],
                           notes=list(dict.fromkeys(report.notes + [n for c in report.comparisons for n in c.notes])))


# -- run page helpers ---------------------------------------------------------------
def _conditions(result: RunResult) -> list[tuple[str, str]]:
    """Kernel, congestion control, scheduler, backend, host and guest: what a result depends on, as rows."""
    env = result.environment
    client = env.get("sysctls_client") or {}
    lab = env.get("mptcplab") or {}
    cc = client.get("net.ipv4.tcp_congestion_control")
    used = sorted({sf.congestion_control for rep in result.repetitions for sf in rep.subflows
                   if getattr(sf, "congestion_control", "")})
    tcp = env.get("tcp") or {}
    cc_parts = [f"subflows used {', '.join(used)}" if used else "",
                f"asked {tcp['congestion_control']}" + (f" ({tcp['set_on']})" if tcp.get("set_on") else "")
                if tcp.get("congestion_control") else "",
                f"namespace default (net.ipv4.tcp_congestion_control) {cc}" if cc else ""]
    rows = [("kernel release", env.get("kernel_release") or result.kernel),
            ("kernel build", env.get("kernel_version", "")),
            ("congestion control", "; ".join(p for p in cc_parts if p) or "not recorded"),
            ("scheduler", result.scheduler), ("path manager", result.path_manager), ("link backend", result.backend),
            ("host", f"{env.get('hostname', '')}: {env.get('cpu_count', '')} × {env.get('cpu_model', '')}"),
            ("load before → after", f"{env.get('load_before')} → {env.get('load_after')}"),
            ("kernel command line", env.get("cmdline", "")),
            ("mptcplab", f"{lab.get('version', '')} {lab.get('commit', '')}".strip()),
            ("python", str(env.get("python", "")))]
    if env.get("budget_s") is not None:
        rows.append(("budget", f"{env['budget_s']} s per repetition"))
    if env.get("sysctls_set"):
        rows.append(("sysctls the scenario set", json.dumps(env["sysctls_set"], sort_keys=True)))
    guest = env.get("guest")
    if guest:
        rows.append(("guest", f"{guest.get('accelerator', '')}, {guest.get('cpus', '')} vCPU, {guest.get('memory_mb', '')} MB, "
                              f"boot {guest.get('boot_s', '')} s, QEMU {guest.get('qemu', '')}"))
    cpu = env.get("guest_cpu")
    if cpu:
        busy = [c.get("busy") for c in cpu.get("per_repetition") or [] if isinstance(c, dict)]
        rows.append(("guest CPU", f"{'SATURATED' if cpu.get('saturated') else 'ok'}; max busy {cpu.get('max_busy', '')}; "
                                  f"busy per repetition {busy}; QEMU host CPU {cpu.get('qemu_host_cpu', '')}"))
    if env.get("host_kernel_release"):
        rows.append(("host kernel", env["host_kernel_release"]))
    return [(k, str(v)) for k, v in rows]


def _sysctl_rows(env: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """sysctl, client, server, router: as read back in each namespace after the scenario's were set."""
    client, server, router = (env.get(f"sysctls_{role}") or {} for role in ("client", "server", "router"))
    return [(k, str(client.get(k, "")), str(server.get(k, "")), str(router.get(k, "")))
            for k in sorted(set(client) | set(server) | set(router))]


def _changed_mib(result: RunResult, side: str) -> dict[str, Any]:
    """The MIB counters that moved in any repetition: {"reps": [...], "rows": [(counter, [delta per rep])]}."""
    reps = result.repetitions
    counters = sorted({k for rep in reps for k, v in (getattr(rep, side) or {}).items() if v})
    return {"reps": [result.repetition_label(rep) for rep in reps],
            "rows": [(k, [(getattr(rep, side) or {}).get(k, 0) for rep in reps]) for k in counters]}


def _link_rows(result: RunResult) -> list[dict[str, Any]]:
    """The emulator's counters per repetition, path and direction (environment.link_stats, one entry per repetition)."""
    rows = []
    for i, (owner, entry) in enumerate(result.link_stats()):  # paired by the repetition's index, or the order they ran
        rep = result.repetition_label(owner) if owner is not None else f"#{i + 1}"
        for path, dirs in (entry.get("paths") or {}).items():
            for direction, st in (dirs or {}).items():
                if not isinstance(st, dict):
                    continue
                drops = ", ".join(f"{k} {v}" for k, v in (st.get("drops") or {}).items() if v) or "none"
                late = st.get("lateness_us") or {}
                rows.append({"rep": rep, "path": path, "direction": direction, "frames_in": st.get("frames_in"),
                             "frames_out": st.get("frames_out"), "bytes_in": st.get("bytes_in"),
                             "bytes_out": st.get("bytes_out"), "drops": drops,
                             "lateness": f"{late.get('p50', '–')} / {late.get('p99', '–')} / {late.get('max', '–')}",
                             "cpu_s": entry.get("cpu_s")})
    return rows


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value if v is not None]
    return value


def _scenario_toml(content: dict[str, Any] | None) -> str | None:
    """The stored (normalized) scenario as TOML; None when the run was imported without one."""
    if not content:
        return None
    import tomli_w

    try:
        return tomli_w.dumps(_strip_none(content))
    except (TypeError, ValueError):
        return json.dumps(content, indent=2)
