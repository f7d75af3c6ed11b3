"""The results-store commands: runs, show, export, compare, import (registered on common.app).

Contract: flags, JSON keys and exit codes are what scripts and CI jobs call.
`compare` exits 0 when nothing regressed, 1 when something did, 2 on a usage
error (including a selector that matches no run).
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from .common import (AlphaOption, DbOption, ThresholdOption, app, err, handled, known_metrics, listing_store, nothing_stored,
                     out, parse_threshold, run_filter, store_at, working)
from ..outputs import FIGURE_SUFFIXES, check_output, writing


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
@handled
def runs(
    scenario: Annotated[Optional[str], typer.Option("--scenario", help="only runs of this scenario (by name)")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="only runs with this label")] = None,
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="only runs on this kernel: a release or version prefix (6.1 is 6.1.0-50-cloud-amd64 = 6.1.176, not 6.12)")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="only runs started since a date/time or an age (12h, 7d)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="only runs with this key=value tag (repeatable)")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many, newest first")] = 50,
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric whose median is listed (default: each run's main metric, the one compare and history judge it by)")] = None,
    db: DbOption = None,
) -> None:
    """List stored runs, newest first, each with the median of its main metric."""
    if metric is not None:
        known_metrics([metric])
    flt = run_filter(scenario, label, kernel, since, tag)
    store, where = listing_store(db)
    if store is None or not store.count_runs():
        nothing_stored(where, out)
        return
    found = store.list_runs(flt, limit=limit, metric=metric, with_medians=True)
    if not found:
        out.print(f"no runs in {store.where} match", highlight=False)
        return
    from ..metrics import latency_columns, metric as metric_def

    table = Table(title=f"runs in {store.where}", title_justify="left")
    # each run by its main metric (what every verdict judges it by); a latency workload's run also by its p50 / p99 / max
    with_latency = any(latency_columns(r.medians) for r in found)
    for col in ("run", "started", "scenario", "version", "label", "kernel", "status", "reps", "metric", "median",
                *(["latency p50 / p99 / max ms"] if with_latency else [])):
        table.add_column(col, justify="right" if col in ("reps", "median") or col.startswith("latency") else "left",
                         no_wrap=col.startswith("latency") or col in ("median", "run"))
    for r in found:
        unit = metric_def(r.metric).unit
        latency = latency_columns(r.medians)
        row = [r.uid, _when(r.started_at), escape(r.scenario), r.scenario_hash[:8], escape(r.label or ""), escape(r.kernel), r.status,
               str(r.repetitions), r.metric, f"{r.median:.3f}{' ' + unit if unit else ''}" if r.median is not None else ""]
        if with_latency:
            row.append(" / ".join(f"{r.medians[m]:.1f}" if m in r.medians else "-" for m in latency) if latency else "")
        table.add_row(*row)
    out.print(table)
    if len(found) == limit:
        total = store.count_runs(flt)
        if total > limit:
            out.print(f"{limit} of {total} (--limit)", highlight=False)


@app.command()
@handled
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="a run id (or an unambiguous prefix of at least 4 characters)")],
    as_json: Annotated[bool, typer.Option("--json", help="the run as one JSON document (the `run --json` format)")] = False,
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric printed first (default: the run's main metric, the one compare and history judge it by)")] = None,
    db: DbOption = None,
) -> None:
    """Show one stored run in full: environment, scenario, repetitions, summary and why (the scheduler's evidence)."""
    from ..report import print_details

    if metric is not None:
        known_metrics([metric])
    store = store_at(db)
    uid = store.resolve_run(run_id)
    result = store.load_result(uid)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        return
    env = result.environment
    lab = env.get("mptcplab") or {}
    lines = [
        f"run {result.run_id}: {result.scenario} (version {result.scenario_hash}), {result.status}, "
        f"{_when(result.started_at)}" + (f" to {_when(result.ended_at)}" if result.ended_at else ""),
        f"label: {result.label or '-'}; tags: {', '.join(f'{k}={v}' for k, v in (env.get('tags') or {}).items()) or '-'}",
        f"kernel: {env.get('kernel_release', '')} {env.get('kernel_version', '')}",
        f"cmdline: {env.get('cmdline', '')}",
        f"host: {env.get('hostname', '')}, {env.get('cpu_count', '')} x {env.get('cpu_model', '')}, "
        f"load {env.get('load_before')} -> {env.get('load_after')}",
        f"mptcplab {lab.get('version', '')} {lab.get('commit', '')}; scheduler {result.scheduler}, "
        f"path manager {result.path_manager}, link backend {result.backend}",
    ]
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    print_details(result, out, metric or store.main_metrics([result.scenario]).get(result.scenario))


EXPORT_COLUMNS = ["run_id", "scenario", "scenario_hash", "label", "kernel", "scheduler", "path_manager", "backend",
                  "status", "run_started_at", "repetition", "warmup", "started_at", "goodput_mbps", "completion_s", "bytes"]


def _iso(ts: float | None) -> str:
    """An epoch time as ISO 8601 with the local UTC offset (2026-11-25T09:02:43.120+00:00); empty when unknown."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds") if ts else ""


def _csv_rows(results: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per repetition; per-path and per-tag values as `<path>.<field>` and `tag.<key>` columns.

    `repetition` counts from 1 (as tables and `plot --rep` do); `run_started_at` and `started_at` are ISO 8601.
    `status` and `error` are the repetition's own (completed, failed, timeout, interrupted; why it did not
    complete), `run_status` the run's.
    """
    from ..store.store import repetition_metrics

    columns = list(EXPORT_COLUMNS) + ["error", "run_status", "retransmits", "bytes_retrans", "rtt_ms", "baseline_path"]
    rows = []
    for r in results:
        for rep in r.repetitions:
            row: dict[str, Any] = dict(
                run_id=r.run_id, scenario=r.scenario, scenario_hash=r.scenario_hash, label=r.label or "", kernel=r.kernel,
                scheduler=r.scheduler, path_manager=r.path_manager, backend=r.backend, status=rep.status,
                error=rep.error or "", run_status=r.status,
                run_started_at=_iso(r.started_at), repetition=rep.index + 1, warmup=rep.warmup, started_at=_iso(rep.started_at),
                goodput_mbps=rep.goodput_mbps, completion_s=rep.completion_s, bytes=rep.bytes,
                baseline_path=rep.baseline_path or "")  # the path of a best-path baseline (plain TCP) repetition
            row.update({k: v for k, v in repetition_metrics(rep).items() if k not in row})
            for sf in rep.subflows:
                for key in ("share", "bytes_sent", "retransmits", "rtt_median_ms"):
                    row[f"{sf.path}.{key}"] = getattr(sf, key)
            for key, value in (r.environment.get("tags") or {}).items():
                row[f"tag.{key}"] = value
            columns += [k for k in row if k not in columns]
            rows.append(row)
    return columns, rows


@app.command()
@handled
def export(
    run_ids: Annotated[Optional[list[str]], typer.Argument(metavar="[RUN]...", help="run ids (default: every run the filters match)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (one row per repetition) or json (one document per run)")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    scenario: Annotated[Optional[str], typer.Option("--scenario", help="only runs of this scenario")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="only runs with this label")] = None,
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="only runs on this kernel: a release or version prefix (6.1 is 6.1.0-50-cloud-amd64 = 6.1.176, not 6.12)")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="only runs started since a date/time or an age (12h, 7d)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="only runs with this key=value tag (repeatable)")] = None,
    timeseries: Annotated[bool, typer.Option("--timeseries/--no-timeseries", help="json: keep each repetition's per-path time series, as stored (default), or leave them out for a smaller file")] = True,
    db: DbOption = None,
) -> None:
    """Export stored runs for other tools (pandas, spreadsheets): CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise UsageError(f"--format {fmt!r}: choose csv or json")
    if output is not None:
        check_output(output, "--output")
    flt = run_filter(scenario, label, kernel, since, tag)
    store, where = listing_store(db)
    if store is None and run_ids:
        raise UsageError(f"no run {run_ids[0]!r}: no runs stored yet (in {where})")
    if store is None:
        nothing_stored(where, err)  # and an empty document: a script reading it needs no special case
        results = []
    else:
        flt.run_ids = [store.resolve_run(r) for r in run_ids or []]
        with working(f"export: reading the runs from {store.where}") as detail:
            found = store.list_runs(flt)
            results = []
            for r in reversed(found):  # oldest first
                results.append(store.load_result(r.uid))
                detail(f"{len(results)}/{len(found)} runs")
    if output is None:
        _write_export(sys.stdout, fmt, results, timeseries)
        return
    with writing(output, "--output"), output.open("w", newline="") as stream:
        _write_export(stream, fmt, results, timeseries)


def _write_export(stream: Any, fmt: str, results: list[Any], timeseries: bool = True) -> None:
    if fmt == "json":
        json.dump([r.to_json(timeseries=timeseries) for r in results], stream)
        stream.write("\n")
    else:
        columns, rows = _csv_rows(results)
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@app.command()
@handled
def compare(
    baseline: Annotated[str, typer.Option("--baseline", help="selector: a run id, label, kernel (release or version prefix) or tag key=value")],
    candidate: Annotated[str, typer.Option("--candidate", help="selector: a run id, label, kernel (release or version prefix) or tag key=value")],
    metric: Annotated[Optional[list[str]], typer.Option("--metric", help="judge every scenario by this metric (repeatable; default: each scenario's main metric, goodput_mbps for bulk, latency_p99_ms for rr, ...)")] = None,
    threshold: ThresholdOption = "5%",
    alpha: AlphaOption = 0.01,
    fmt: Annotated[str, typer.Option("--format", help="table, markdown, json or junit (one test case per scenario and metric)")] = "table",
    plot: Annotated[Optional[Path], typer.Option("--plot", help="also draw every repetition of both sides, medians and verdicts to this PNG")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the markdown, json or junit output to this file instead of stdout")] = None,
    report_url: Annotated[Optional[str], typer.Option("--report-url", help="link to the report's page of this comparison (markdown, junit)")] = None,
    db: DbOption = None,
) -> None:
    """Is the candidate slower than the baseline? Exit 0: nothing regressed, 1: something did, 2: usage error."""
    from ..analysis.compare import HEADER, compare_stored, rows, to_junit, to_markdown

    if fmt not in ("table", "markdown", "json", "junit"):
        raise UsageError(f"--format {fmt!r}: choose table, markdown, json or junit")
    if output is not None and fmt == "table":
        raise UsageError("--output writes the markdown, json or junit formats", "add --format markdown, json or junit")
    metrics = known_metrics(metric) if metric else None  # None: each scenario by its main metric
    threshold_value = parse_threshold(threshold)  # options first, then the database
    if output is not None:
        check_output(output, "--output")
    if plot is not None:
        check_output(plot, "--plot", FIGURE_SUFFIXES)
    store = store_at(db)
    with working(f"compare: reading and judging {baseline} vs {candidate} in {store.where}"):
        report = compare_stored(store, baseline, candidate, metrics, threshold=threshold_value, alpha=alpha)
    if plot is not None:
        from ..plots import plot_comparison

        _write_plot(lambda: plot_comparison(report, plot), plot)
    if fmt in ("json", "markdown", "junit"):
        text = {"json": lambda: json.dumps(report.to_json()),
                "markdown": lambda: to_markdown(report, report_url=report_url),
                "junit": lambda: to_junit(report, report_url=report_url)}[fmt]()
        if output is None:
            sys.stdout.write(text + "\n")
        else:
            with writing(output, "--output"):
                output.write_text(text + "\n")
            err.print(f"{fmt} written to {output}", highlight=False, markup=False, soft_wrap=True)
    else:
        for note in report.notes:
            out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
        table = Table(title=f"baseline {escape(baseline)} vs candidate {escape(candidate)} (threshold {report.threshold * 100:g}%, alpha {alpha:g})",
                      title_justify="left")
        for col in HEADER:
            table.add_column(col, justify="left" if col in ("scenario", "metric", "verdict") else "right")
        for row in rows(report):
            style = {"regressed": "red", "improved": "green"}.get(row[-1])
            table.add_row(*map(escape, row[:-1]), f"[{style}]{row[-1]}[/{style}]" if style else row[-1])
        out.print(table)
        for note in dict.fromkeys(n for c in report.comparisons for n in c.notes):
            out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1 if report.regressed else 0)


@app.command()
@handled
def history(
    scenario: Annotated[Optional[str], typer.Argument(metavar="SCENARIO", help="a scenario name, as `mptcplab runs` lists it")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric judged (default: the scenario's main metric, as compare, runs and suite run judge it: goodput_mbps for bulk, latency_p99_ms for rr, ...)")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="only runs with this label")] = None,
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="only runs on this kernel: a release or version prefix (6.1 is 6.1.0-50-cloud-amd64 = 6.1.176, not 6.12)")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="only runs started since a date/time or an age (12h, 7d)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="only runs with this key=value tag (repeatable)")] = None,
    threshold: ThresholdOption = "5%",
    alpha: AlphaOption = 0.01,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    plot: Annotated[Optional[Path], typer.Option("--plot", help="also draw the medians and CIs per run (with --by: per kernel or run, every repetition and the change points), judged steps in colour, to this PNG")] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="kernel: one point per kernel in version order, with change points; run: one point per run, with change points")] = None,
    suite: Annotated[bool, typer.Option("--suite", help="every suite case at once; prints only the change points (implies --by kernel)")] = False,
    mix: Annotated[bool, typer.Option("--mix", help="judge runs under different link backends, accelerators, executors, time modes or machines as one series (default: each its own series)")] = False,
    db: DbOption = None,
) -> None:
    """One scenario's metric over its stored runs, oldest first; each run judged against the one before it in its series.

    With --by kernel: one point per kernel (all its repetitions), ordered by
    kernel version, and the change points of each series. --suite does
    that for every suite case and prints only the change points. Runs under
    other conditions (backend, accelerator, executor, time mode, machine) are
    a series of their own unless --mix.
    """
    from ..analysis.history import history_stored

    if fmt not in ("table", "json"):
        raise UsageError(f"--format {fmt!r}: choose table or json")
    if metric is not None:
        known_metrics([metric])
    threshold_value = parse_threshold(threshold)  # a bad --threshold is refused even when nothing is stored yet
    if suite or by is not None:
        if by is not None and by not in ("kernel", "run"):
            raise UsageError(f"--by {by!r}: choose kernel or run")
        if suite == (scenario is not None):
            raise UsageError("give a SCENARIO or --suite, not both" if suite else "give a SCENARIO (or --suite)")
        if plot is not None and suite:
            raise UsageError("--plot draws one scenario's series: give a SCENARIO instead of --suite")
        if plot is not None:
            check_output(plot, "--plot", FIGURE_SUFFIXES)
        _history_series(scenario, metric, run_filter(None, label, kernel, since, tag), by or "kernel", suite,
                        threshold_value, alpha, fmt, db, mix, plot)
        return
    if scenario is None:
        raise UsageError("give a SCENARIO (or --suite)", "mptcplab history two-paths")
    if plot is not None:
        check_output(plot, "--plot", FIGURE_SUFFIXES)
    flt = run_filter(None, label, kernel, since, tag)
    store, where = listing_store(db)
    if store is None:
        nothing_stored(where, err if fmt == "json" else out)
        if fmt == "json":
            sys.stdout.write(json.dumps(_empty_history(scenario, metric, threshold_value, alpha)) + "\n")
        return
    hist = history_stored(store, scenario, metric, flt,
                          threshold=threshold_value, alpha=alpha, mix=mix)
    metric = hist.metric
    if plot is not None:
        from ..plots import plot_history

        _write_plot(lambda: plot_history(hist, plot), plot)
    if fmt == "json":
        sys.stdout.write(json.dumps(hist.to_json()) + "\n")
        return
    table = Table(title=f"{escape(scenario)}: {metric} per run, oldest first (threshold {hist.threshold * 100:g}%, alpha {alpha:g})",
                  title_justify="left")
    for col in ("run", "started", "kernel", "label", "n", "median", "95% CI", "vs previous", "p", "verdict"):
        table.add_column(col, justify="right" if col in ("n", "median", "95% CI", "vs previous", "p") else "left")
    for p in hist.points:
        verdict = p.verdict or ""
        style = {"regressed": "red", "improved": "green"}.get(verdict)
        table.add_row(p.run_id, _when(p.started_at), escape(p.kernel), escape(p.label or "") + (f" [{escape(p.series)}]" if p.series else ""),
                      str(p.n), f"{p.median:.3f}",
                      f"[{p.ci95[0]:.3f}, {p.ci95[1]:.3f}]", "" if p.change is None else f"{p.change * 100:+.1f}%",
                      "" if p.p_value is None else f"{p.p_value:.4f}",
                      (f"[{style}]{verdict}[/{style}]" if style else verdict) + (" (scenario changed)" if p.version_changed else "")
                      + (f" ({', '.join(p.conditions_changed)} changed)" if p.conditions_changed else ""))
    out.print(table)
    for note in hist.notes:
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def change_point_rows(scenario: str, metric: str, cps: list[Any]) -> list[list[str]]:
    """Table rows of change points: scenario, metric, kernels either side, medians, change [CI], p, verdict."""
    return [[scenario, metric, f"{c.before} ({c.before_version})", f"{c.after} ({c.after_version})",
             f"{c.median_before:.3f} (n={c.n_before})", f"{c.median_after:.3f} (n={c.n_after})", _pct(c.change),
             f"[{_pct(c.ci95[0])}, {_pct(c.ci95[1])}]", _p(c.p_value), c.verdict] for c in cps]


CHANGE_POINT_HEADER = ["scenario", "metric", "before", "after", "median before", "median after", "change", "95% CI", "p", "verdict"]


def _empty_history(scenario: str, metric: str | None, threshold: float, alpha: float) -> dict[str, Any]:
    """The JSON of `history` when nothing is stored: no point, and no workload to take a main metric from."""
    from ..analysis.history import History
    from ..metrics import metric as metric_def

    return History(scenario=scenario, metric=metric or "", better=metric_def(metric).better if metric else "",
                   threshold=threshold, alpha=alpha).to_json()


def _history_series(scenario: str | None, metric: str | None, flt: Any, by: str, suite: bool, threshold: float, alpha: float,
                    fmt: str, db: str | None, mix: bool = False, plot: Path | None = None) -> None:
    """`history --by kernel|run` for one scenario, or `--suite` for every suite case that has stored runs; `metric`
    None: each scenario's main metric (Store.main_metrics). Each series (runs under the same backend, accelerator,
    executor, time mode and machine; one with `mix`) is judged on its own; `plot` draws the scenario's series."""
    from dataclasses import replace as dc_replace

    from ..analysis.kernel_history import MetricMissing, histories_by_kernel
    from ..store import RunFilter

    store, where = listing_store(db)
    if store is None:  # no run stored yet: as `history SCENARIO` and `runs`, a listing that is empty, not an error
        nothing_stored(where, err if fmt == "json" else out)
        if fmt == "json":  # the document's shape as when runs are stored: --suite a list, a scenario its series
            doc = [] if suite else dict(_empty_history(scenario or "", metric, threshold, alpha), other_series=[])
            sys.stdout.write(json.dumps(doc) + "\n")
        return
    lacking: list[str] = []
    if suite:
        from ..suite import suite_cases

        hists = []
        with working(f"history: every suite case's series in {store.where}") as detail:
            stored = {r.scenario for r in store.list_runs(dc_replace(flt or RunFilter()))}
            for c in suite_cases():
                if c.name in stored:
                    detail(c.name)
                    try:
                        hists.extend(histories_by_kernel(store, c.name, metric, flt, by, threshold, alpha, mix))
                    except MetricMissing:  # --metric names what this case's workload does not measure
                        lacking.append(c.name)
        if lacking and not hists:
            raise UsageError(f"no stored suite case has the metric {metric}", f"leave out --metric: each case is then "
                             "judged by its own main metric")
        if not hists:
            given = (flt or RunFilter()).describe()
            raise UsageError(f"no stored run of any suite case in {store.where} matches" + (f" {given}" if given else ""),
                             f"list the stored runs with: mptcplab runs --db {store.where}" if given
                             else "run the suite first: mptcplab suite run")
    else:
        hists = histories_by_kernel(store, scenario or "", metric, flt, by, threshold, alpha, mix)
    if plot is not None:
        from ..plots import plot_kernel_history

        _write_plot(lambda: plot_kernel_history(hists, plot), plot)
    if fmt == "json":  # one scenario: its main series, the others (other conditions) under "other_series"
        doc: Any = [h.to_json() for h in hists] if suite else \
            dict(hists[0].to_json(), other_series=[h.to_json() for h in hists[1:]])
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    what = "kernel" if by == "kernel" else "run"
    if not suite:
        for h in hists:
            table = Table(title=f"{h.scenario}: {h.metric} per {what}" + (", in kernel version order" if by == "kernel" else ", oldest first")
                          + (f"; series {h.series}" if h.series else "")
                          + f" (change points: threshold {threshold * 100:g}%, alpha {alpha:g})", title_justify="left")
            for col in (what, "version", "runs", "n", "median", "95% CI", "change point"):
                table.add_column(col, justify="right" if col in ("runs", "n", "median", "95% CI") else "left")
            starts = {c.index: c for c in h.change_points}
            for i, p in enumerate(h.points):
                c = starts.get(i)
                mark = ""
                if c is not None:
                    style = "red" if c.verdict == "regressed" else "green"
                    mark = f"[{style}]{c.verdict} {_pct(c.change)} [{_pct(c.ci95[0])}, {_pct(c.ci95[1])}], p {_p(c.p_value)}[/{style}]"
                table.add_row(p.name, p.version, str(len(p.runs)), str(p.n), f"{p.median:.3f}", f"[{p.ci95[0]:.3f}, {p.ci95[1]:.3f}]", mark)
            out.print(table)
    cps = [(h, c) for h in hists for c in h.change_points]
    cases = len({h.scenario for h in hists})
    if cps:
        table = Table(title=f"change points ({len(cps)} in {cases} case{'s' if cases != 1 else ''}; the segments either side "
                            f"pooled, threshold {threshold * 100:g}%, alpha {alpha:g}, one-sided Mann-Whitney U)", title_justify="left")
        for col in CHANGE_POINT_HEADER:
            table.add_column(col, justify="left" if col in ("scenario", "metric", "before", "after", "verdict") else "right",
                             overflow="fold")
        for h in hists:
            name = h.scenario + (f" [{h.series}]" if h.series else "")
            for row in change_point_rows(name, h.metric, h.change_points):
                style = {"regressed": "red", "improved": "green"}.get(row[-1])
                table.add_row(*map(escape, row[:-1]), f"[{style}]{row[-1]}[/{style}]" if style else row[-1])
        out.print(table)
    else:
        out.print(f"no change point in {cases} case{'s' if cases != 1 else ''} "
                  f"({', '.join(f'{h.scenario}: {len(h.points)} {what}s' for h in hists[:6])}{', ...' if len(hists) > 6 else ''})",
                  highlight=False, markup=False, soft_wrap=True)
    # a note about the kernels (their tcp_rmem differs, ...) holds for every case that ran on them: said once
    cases_of: dict[str, list[str]] = {}
    for h in hists:
        for note in h.notes:
            cases_of.setdefault(note, []).append(h.scenario)
    for note, named in cases_of.items():
        named = list(dict.fromkeys(named))
        where = "" if not suite else ("every case: " if len(named) == cases > 1 else f"{', '.join(named)}: ")
        out.print(f"note: {where}{note}", highlight=False, markup=False, soft_wrap=True)
    if lacking:
        out.print(f"note: {len(lacking)} case(s) do not measure {metric}, left out: {', '.join(lacking)}",
                  highlight=False, markup=False, soft_wrap=True)


def _write_plot(draw: Callable[[], object], path: Path) -> None:
    try:
        with writing(path, "--plot"):
            draw()
    except ValueError as e:  # nothing to draw
        raise UsageError(str(e)) from None
    err.print(f"plot written to {path}", highlight=False, markup=False, soft_wrap=True)


@app.command("import")
@handled
def import_cmd(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="spool files, `run --json` documents or `export --format json` files (also .gz) to load")],
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="one line per run (default: one line in all)")] = False,
) -> None:
    """Load spooled results (written when the database was unavailable), `run --json` documents or another
    store's `export --format json` into the store; importing twice adds nothing."""
    from ..store import spool
    from ..store.location import spool_dir
    from ..units import plural

    loaded = [(path, *run) for path in files for run in spool.read_all(path)]  # every file is read before the store is touched:
    store = store_at(db, create=True)                          # a failed import creates no empty database
    total = complete = 0
    with working(f"import: {plural(len(loaded), 'run')} into {store.where}") as detail:
        for i, (path, result, scenario) in enumerate(loaded, 1):
            added = store.save_result(result, scenario)
            total += added
            complete += added == 0
            detail(f"{i}/{len(loaded)} runs")
            if verbose or len(loaded) == 1:  # one run: its line is the summary
                out.print(f"imported run {result.run_id} ({result.scenario}): {added} new of "
                          f"{plural(len(result.repetitions), 'repetition')} into {store.where}", highlight=False, markup=False,
                          soft_wrap=True)
            if path.resolve().parent == spool_dir().resolve():
                path.unlink(missing_ok=True)  # the lab's own spool file: its content is now in the store
    if len(loaded) != 1:
        out.print(f"imported {plural(len(loaded), 'run')} from {plural(len(files), 'file')}: {plural(total, 'new repetition')}"
                  + (f" ({complete} of the runs were stored in full already)" if complete else "") + f" into {store.where}",
                  highlight=False, markup=False, soft_wrap=True)
