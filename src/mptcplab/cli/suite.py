"""`mptcplab suite list|run` and `mptcplab bisect` (registered on common.app); the logic is in suite.py and bisect.py.

Contract: `suite run` exits 0 when every repetition completed and no kernel
regressed against the first, 1 otherwise, 2 on a bad option or scenario.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import UsageError
from .common import (AccelOption, RunSeedOption, TimeOption, note_unseeded, note_unused_guest_options, with_seed, DbOption, RichProgress, SetOption, app, check_link_backend, err, handled,
                     fmt_ci, known_metrics, out, print_case_rows, store_at, warn)

suite_app = typer.Typer(no_args_is_help=True, help="The built-in scheduler suite: list its cases, run them.")
app.add_typer(suite_app, name="suite")


@suite_app.command("list")
@handled
def list_cmd(
    tag: Annotated[Optional[str], typer.Option("--tag", help="only cases with this tag (quick, full, rtt, rate, loss, failover, trace, paths, ...)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON list of the cases")] = False,
) -> None:
    """The suite's cases: tier, tags and what each checks."""
    from ..suite import suite_cases

    cases = suite_cases(tag)
    if as_json:
        sys.stdout.write(json.dumps([{"name": c.name, "tier": c.tier, "tags": c.tags, "description": c.description,
                                      "budget_s": c.budget_s, "budget_rule": c.budget_rule, "metric": c.metric}
                                     for c in cases]) + "\n")
        return
    table = Table(title=f"scheduler suite: {len(cases)} case{'s' if len(cases) != 1 else ''}" + (f" tagged {tag}" if tag else ""),
                  title_justify="left")
    for col in ("case", "tier", "tags", "judged by", "what it checks"):
        table.add_column(col, overflow="fold")
    for c in cases:
        table.add_row(c.name, c.tier, ", ".join(t for t in c.tags if t != c.tier), c.metric, c.description
                      + (f" ({c.budget_text})" if c.budget_s else ""))
    out.print(table)


@suite_app.command("run")
@handled
def run_cmd(
    tag: Annotated[Optional[str], typer.Option("--tag", help="only cases with this tag, e.g. quick (default: every case)")] = None,
    case: Annotated[Optional[list[str]], typer.Option("--case", help="only this case (repeatable), by name as suite list shows it")] = None,
    kernels: Annotated[Optional[str], typer.Option("--kernels", help="comma-separated kernels to run on in guests (QEMU, or UML for a -uml build); the first is the baseline (default: this host's kernel)")] = None,
    repeat: Annotated[Optional[int], typer.Option("--repeat", "-n", min=1, help="repetitions per case (and kernel); default: each case's [run] repeat")] = None,
    overrides: SetOption = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric of the summary and verdicts for every case (default: each case's [run] metric, else its workload's main metric: goodput_mbps for bulk, latency_p99_ms for rr, chunk_delay_p99_ms for stream, fct_p99_ms for flows)")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="a free-form label stored with every run")] = None,
    link_backend: Annotated[Optional[str], typer.Option("--link-backend", help="auto, tbf, netem or wire")] = None,
    db: DbOption = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="store every run in the results database")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document: the summary rows and every run (no time series)")] = False,
    accel: AccelOption = None,
    time_mode: TimeOption = None,
    seed: RunSeedOption = None,
) -> None:
    """Run every suite case (interleaved), store it, and print case x kernel with verdicts against the first kernel.

    Exit 1 when a repetition did not complete or a kernel regressed against the first.
    """
    from ..protocols import Collector
    from ..runner import RunOptions
    from ..store.recorder import recorder_for
    from ..suite import case_metric, load_cases, run_suite, suite_cases, summary_rows

    if metric is not None:
        known_metrics([metric])
    check_link_backend(link_backend)
    cases = suite_cases(tag)
    if case:
        known = {c.name for c in cases}
        unknown = [c for c in case if c not in known]
        if unknown:
            raise UsageError(f"--case {unknown[0]!r}: no such suite case" + (f" tagged {tag}" if tag else ""),
                             "mptcplab suite list shows the cases")
        cases = [c for c in cases if c.name in case]
    scns = load_cases(cases, with_seed(overrides, seed))
    ks = None
    if kernels is not None:
        from ..kernels.catalog import resolve

        names = [k.strip() for k in kernels.split(",") if k.strip()]
        if not names:
            raise UsageError("--kernels needs at least one kernel, e.g. --kernels 6.1,6.12")
        ks = [resolve(n) for n in names]
        if len({k.release for k in ks}) < len(ks):
            raise UsageError(f"--kernels {kernels}: names the same kernel twice")
    note_unused_guest_options(ks or [], {"--accel": accel, "--time": time_mode})
    if ks is None:
        from ..runner import preflight

        note_unseeded(seed, [preflight(s, link_backend) for s in scns])
    collector = Collector()
    recorder = recorder_for(db, warn) if store else None
    options = RunOptions(repeat=repeat, label=label, link_backend=link_backend,
                         sinks=[collector] + ([recorder] if recorder is not None else []))
    err.print(f"suite: {len(scns)} case{'s' if len(scns) != 1 else ''}" + (f" tagged {tag}" if tag else "")
              + (f" on {len(ks)} kernels" if ks else " on this host's kernel"), highlight=False)
    try:
        with RichProgress(scns[0].name) as progress:
            run = run_suite(scns, replace(options, progress=progress), ks, repeat)
    finally:
        if recorder is not None:
            for line in recorder.report_lines():
                err.print(line, highlight=False, markup=False, soft_wrap=True)
    metrics: str | dict[str, str] = metric if metric is not None else {s.name: case_metric(s) for s in scns}
    rows = summary_rows(run.results, metrics)
    used = sorted({r["metric"] for r in rows})
    # the document's one `metric`: --metric, or the cases' shared one, or "per-case" (then see rows[].metric)
    metric = metric or (used[0] if len(used) == 1 else "per-case")
    incomplete = any(r.fails_run for res in run.results for r in res.repetitions) or \
        any(res.status != "completed" for res in run.results)
    regressed = any(r["verdict"] == "regressed" for r in rows)
    if as_json:
        sys.stdout.write(json.dumps({"suite": run.suite_id, "kernels": run.kernels, "metric": metric, "rows": rows,
                                     "runs": [r.to_json(timeseries=False) for r in run.results]}) + "\n")
    else:
        print_case_rows(run.suite_id, rows, metric)
        for res in run.results:
            for e in res.errors:
                out.print(f"{res.scenario} @ {res.kernel}: {e}", highlight=False, markup=False, soft_wrap=True)
    if incomplete or regressed:
        raise typer.Exit(1)


@app.command()
@handled
def bisect(
    scenario: Annotated[str, typer.Argument(metavar="SCENARIO", help="a TOML file or a built-in scenario name")],
    good: Annotated[str, typer.Option("--good", help="the older kernel, where the scenario was fine (release, version or prefix; with --tree a git ref)")],
    bad: Annotated[str, typer.Option("--bad", help="the newer kernel, where it got worse (with --tree a git ref)")],
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric judged (default: the scenario's main metric, as compare and history judge it: goodput_mbps for bulk, latency_p99_ms for rr, ...)")] = None,
    repeat: Annotated[int, typer.Option("--repeat", "-n", min=1, help="repetitions per kernel (5 or more can reach p < 0.01)")] = 5,
    cached_only: Annotated[bool, typer.Option("--cached", help="bisect only over kernels already in the cache (do not ask the archive)")] = False,
    kernels_from: Annotated[Optional[Path], typer.Option("--kernels-from", help="bisect your own builds in this directory (bzImages, or directories with one), by name order; --good/--bad name entries")] = None,
    tree: Annotated[Optional[Path], typer.Option("--tree", help="bisect the commits of this git kernel tree: --good/--bad are refs; each probe is built incrementally (kernel build --ref) and run deterministically")] = None,
    flavour: Annotated[Optional[str], typer.Option("--flavour", help="with --tree: how each commit is built and run: uml (default; User-Mode Linux, deterministic time) or qemu (a QEMU guest)")] = None,
    overrides: SetOption = None,
    link_backend: Annotated[Optional[str], typer.Option("--link-backend", help="auto, tbf, netem or wire (one for every kernel)")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="a free-form label stored with every run")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as one JSON document")] = False,
    accel: AccelOption = None,
    time_mode: TimeOption = None,
) -> None:
    """Find the first kernel release (or, with --tree, the first commit) between --good and --bad where SCENARIO got worse.

    Releases run in QEMU guests; commits of --tree are built incrementally in
    the lab's worktree and run in UML (deterministic, paired by seed). Every
    measurement is stored, tagged bisect=ID: the same command again resumes,
    running only what the store does not have and reusing every build. Exit 0
    when the first bad one is found, 1 when --bad is not worse than --good, 2 on bad input.
    """
    from ..bisect import Bisector, bisect_id, guest_measure, releases_between
    from ..runner import RunOptions
    from ..store.recorder import recorder_for
    from ..scenario import load_scenario

    if metric is not None:
        known_metrics([metric])
    check_link_backend(link_backend)
    if tree is None and flavour is not None:
        raise UsageError("--flavour applies to --tree only (releases run as Debian built them)", "add --tree DIR or drop --flavour")
    if tree is not None and (kernels_from is not None or cached_only):
        raise UsageError(f"--tree cannot go with {'--kernels-from' if kernels_from is not None else '--cached'}: "
                         "it bisects a tree's commits, not kernels", "give one source of kernels")
    if tree is not None:
        from ..kernels.build import FLAVOURS

        flavour = flavour or "uml"
        if flavour not in FLAVOURS:
            raise UsageError(f"--flavour {flavour!r}: choose {' or '.join(FLAVOURS)}")
    scn = load_scenario(scenario, overrides or [])
    from ..metrics import main_metric

    metric = metric or main_metric(scn.workload.kind)
    if tree is not None:
        _bisect_commits(scn, tree, good, bad, flavour or "uml", metric, repeat, link_backend, label, db, as_json)
        return
    if kernels_from is not None:
        from ..bisect import releases_from_dir

        rels = releases_from_dir(kernels_from, good, bad)
    else:
        rels = releases_between(good, bad, cached_only)
    store = store_at(db, create=True)
    recorder = recorder_for(db, warn)
    bid = bisect_id(scn, rels[0].release, rels[-1].release, metric)
    err.print(f"bisect {bid}: {scn.name}, {metric}, {len(rels)} releases from {rels[0].release} to {rels[-1].release} "
              f"(at most {max(1, (len(rels) - 2).bit_length())} probes); runs tagged bisect={bid}", highlight=False)
    try:
        with RichProgress(scn.name) as progress:
            options = RunOptions(label=label, link_backend=link_backend, sinks=[recorder], progress=progress)
            backend: dict[str, Any] = {}

            def measure(rel: Any, n: int, b: str, start: int = 0) -> None:
                if "name" not in backend:  # one emulator for every kernel, chosen from the ends as matrix does
                    from ..kernels.fetch import fetch
                    from ..kernels.matrix import resolve_backend

                    ends = [fetch(rels[0].release)[0], fetch(rels[-1].release)[0]]
                    backend["name"] = resolve_backend(link_backend, [scn], ends)
                    progress.status(f"link backend: {backend['name']} for every kernel")
                guest_measure(scn, options, backend["name"])(rel, n, b)

            report = Bisector(scn, rels, metric=metric, repeat=repeat, store=store, measure=measure, bid=bid,
                              progress=progress.status).run()
    finally:
        for line in recorder.report_lines():
            err.print(line, highlight=False, markup=False, soft_wrap=True)
    _end_bisect(report, as_json)


def _bisect_commits(scn: Any, tree: Path, good: str, bad: str, flavour: str, metric: str, repeat: int,
                    link_backend: Optional[str], label: Optional[str], db: Optional[str], as_json: bool) -> None:
    """`bisect --tree`: the commit walk (bisect.commits_between) measured by bisect.commit_measure."""
    from ..bisect import Bisector, bisect_id, commit_measure, commits_between
    from ..runner import RunOptions
    from ..store.recorder import recorder_for

    rels = commits_between(tree, good, bad, flavour)
    store = store_at(db, create=True)
    recorder = recorder_for(db, warn)
    bid = bisect_id(scn, rels[0].release, rels[-1].release, metric)
    built = sum(r.cached for r in rels)
    err.print(f"bisect {bid}: {scn.name}, {metric}, {len(rels)} commits of {tree} from {rels[0].upstream} to {rels[-1].upstream} "
              f"(at most {max(1, (len(rels) - 2).bit_length())} probes; {built} already built, {flavour}); runs tagged bisect={bid}",
              highlight=False)
    try:
        with RichProgress(scn.name) as progress:
            options = RunOptions(label=label, link_backend=link_backend, sinks=[recorder], progress=progress)
            measure = commit_measure(scn, tree, flavour, options, link_backend,  # auto: wire under UML (the executor says so)
                                     progress=progress.status)
            report = Bisector(scn, rels, metric=metric, repeat=repeat, store=store, measure=measure, bid=bid,
                              progress=progress.status).run()
            report.tree = str(tree)
    finally:
        for line in recorder.report_lines():
            err.print(line, highlight=False, markup=False, soft_wrap=True)
    _end_bisect(report, as_json)


def _end_bisect(report: Any, as_json: bool) -> None:
    """The report as JSON or the evidence table; exit 1 unless the first bad one was found."""
    if as_json:
        sys.stdout.write(json.dumps(report.to_json()) + "\n")
    else:
        _print_bisect(report)
    if report.outcome != "found":
        raise typer.Exit(1)


def _print_bisect(report: Any) -> None:
    def judged(d: dict[str, Any] | None) -> str:
        if d is None:
            return ""
        return f"{d['change'] * 100:+.1f}% [{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}] p {d['p_value']:.4f} {d['verdict']}"

    commits = report.source == "commits"
    table = Table(title=f"bisect {report.bisect_id}: {report.scenario}, {report.metric} per "
                        + ("commit (every commit tested, history order)" if commits else "kernel (every release tested, version order)"),
                  title_justify="left")
    for col in (("commit", "subject") if commits else ("kernel", "version")) + \
            ("role", "n", "median [95% CI]", "vs good end", "bad end vs it", "judged", "stored/run now") + \
            (("build s", "run s") if commits else ()):
        table.add_column(col, justify="right" if col in ("n", "build s", "run s") else "left")
    for s in report.steps:
        style = {"bad": "red", "good": "green"}.get(s.classified.removeprefix("unclear-"))
        table.add_row(*((s.upstream, (s.subject or "")[:50]) if commits else (s.release, s.upstream)), s.role, str(s.n),
                      "-" if s.median is None else fmt_ci(s.median, s.ci95, 3, getattr(s, "values", None)),
                      judged(s.vs_good), judged(s.vs_bad), f"[{style}]{s.classified}[/{style}]" if style else s.classified,
                      f"{s.reused}/{s.measured}",
                      *((("reused" if s.build_s is None else f"{s.build_s:.0f}"),
                         ("-" if s.run_s is None else f"{s.run_s:.0f}")) if commits else ()))
    out.print(table)
    if report.outcome == "found" and commits:
        out.print(f"first bad commit: {report.first_bad_commit} {report.first_bad_subject} "
                  f"(kernel {report.first_bad}; last good: {report.last_good})", highlight=False, markup=False, soft_wrap=True)
    elif report.outcome == "found":
        out.print(f"first bad release: {report.first_bad} (last good: {report.last_good})", highlight=False)
    for note in report.notes:
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
