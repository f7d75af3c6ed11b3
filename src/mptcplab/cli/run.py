"""`mptcplab doctor|run|check|plot|scenarios|cleanup`: the lab on this machine (registered on common.app).

Contract: commands, flags, JSON keys and exit codes are what users' scripts
call; extend them, never rename. Errors are one line on stderr.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from ..errors import LabError, UsageError
from ..outputs import FIGURE_SUFFIXES, check_output, writing
from .common import (AccelOption, RunSeedOption, TimeOption, note_unseeded, note_unused_guest_options, with_seed, DbOption, FailFastOption, RichProgress, SetOption, app, check_link_backend, err,
                     handled, load_scenarios, out, parse_tags, print_json_results, warn)

if TYPE_CHECKING:
    from ..result import RunResult


@app.command()
@handled
def doctor() -> None:
    """Check what the lab needs: one line each, OK, MISSING or absent (optional), with how to fix. Exit 0 when the lab can run, 3 when it cannot."""
    from rich.table import Table
    from rich.text import Text

    from ..doctor import checks, ready

    results = checks()
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for c in results:
        status = "[green]OK[/green]" if c.ok else ("[red]MISSING[/red]" if c.required else "[yellow]absent (optional)[/yellow]")
        line = f"{c.name}: {c.detail}"
        if not c.ok and c.fix:
            line += f" — fix: {c.fix}"
        grid.add_row(status, Text(line))
    out.print(grid, highlight=False)
    raise typer.Exit(0 if ready(results) else 3)


@app.command()
@handled
def run(
    scenario: Annotated[list[str], typer.Argument(help="TOML files or names of built-in scenarios; several run interleaved, A B A B ...")],
    repeat: Annotated[Optional[int], typer.Option("--repeat", "-n", min=1, help="repetitions (default: the scenario's [run] repeat)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON document on stdout")] = False,
    label: Annotated[Optional[str], typer.Option("--label", help="a free-form label stored with the run")] = None,
    link_backend: Annotated[Optional[str], typer.Option("--link-backend", help="auto, tbf, netem or wire (default: the scenario's, else auto)")] = None,
    timeseries: Annotated[bool, typer.Option("--timeseries/--no-timeseries", help="include per-subflow time series in the JSON")] = True,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="also draw per-path throughput and RTT over time into this PNG")] = None,
    warmup: Annotated[bool, typer.Option("--warmup", help="run one extra first repetition, kept but flagged warm-up and left out of summaries")] = False,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="key=value stored with the run (repeatable)")] = None,
    db: DbOption = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="store the run in the results database")] = True,
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="run inside a guest booted with this kernel: a QEMU guest, or User-Mode Linux for a kernel built with --flavour uml (mptcplab kernel list)")] = None,
    overrides: SetOption = None,
    fail_fast: FailFastOption = False,
    accel: AccelOption = None,
    time_mode: TimeOption = None,
    seed: RunSeedOption = None,
) -> None:
    """Run scenarios on this machine's kernel, store and print their results.

    Exit 1 when any repetition did not complete (each is kept, with its reason).
    """
    scns = load_scenarios(scenario, with_seed(overrides, seed))  # a bad scenario is refused before the engine (pyroute2) loads
    from .. import runner
    from ..protocols import Collector
    from ..store.recorder import recorder_for

    scn = scns[0]
    if plot is not None and len(scns) > 1:
        raise UsageError("--plot draws one run: give one scenario")
    tags = parse_tags(tag or [])
    recorder = recorder_for(db, warn) if store else None
    check_link_backend(link_backend)
    if plot is not None:
        check_output(plot, "--plot", FIGURE_SUFFIXES)  # before any traffic
    guest_kernel = None
    if kernel is not None:
        from ..kernels.fetch import ConsoleWaits, use_kernel

        guest_kernel = use_kernel(kernel, ConsoleWaits(err))  # resolved (and fetched) before anything starts; unknown ones are refused
    note_unused_guest_options([guest_kernel], {"--accel": accel, "--time": time_mode})
    backends = [runner.preflight(s, link_backend) for s in (scns if kernel is None else [])]  # refused before anything
    note_unseeded(seed, backends)  # is built or drawn; with --kernel the guest checks its own kernel
    collector = Collector()
    options = runner.RunOptions(repeat=repeat, label=label, link_backend=link_backend, tags=tags, fail_fast=fail_fast,
                                warmup=1 if warmup else 0, sinks=[collector] + ([recorder] if recorder else []))
    try:
        with RichProgress(scn.name) as progress:
            from ..executors import executor_for

            with executor_for(guest_kernel) as where:  # this kernel, or a guest booted with --kernel's
                where.ready(progress)
                results = where.run_all(scns, replace(options, progress=progress), timeseries)
    except BaseException:
        if as_json and collector.results:  # whatever stopped the command, what it measured is printed
            print_json_results(collector.results, timeseries)
        raise
    finally:
        for line in recorder.report_lines() if recorder else []:
            err.print(line, highlight=False, markup=False, soft_wrap=True)
    if as_json:
        print_json_results(results, timeseries)
    else:
        from ..report import print_run

        for result in results:
            print_run(result, out)
    incomplete = [r for res in results for r in res.repetitions if r.fails_run]
    if plot is not None:
        try:
            _plot(results[0], plot, scenario=scns[0].normalized(), option="--plot")
        except UsageError as e:
            if not incomplete:
                raise
            err.print(f"error: {e.message}", highlight=False, markup=False, soft_wrap=True)  # the run's failure decides the exit code
    if incomplete:
        raise typer.Exit(1)


@app.command()
@handled
def check(
    scenario: Annotated[list[str], typer.Argument(help="TOML files or names of built-in scenarios")],
    link_backend: Annotated[Optional[str], typer.Option("--link-backend", help="auto, tbf, netem or wire (default: the scenario's, else auto)")] = None,
    overrides: SetOption = None,
) -> None:
    """Check scenarios as `run` would, without building anything: parse, --set, preflight against this kernel and link backend.

    Exit 0 when `run` would start them, 2 for a bad file, key or option, 3 for what this kernel or machine cannot do.
    """
    scns = load_scenarios(scenario, overrides or [])  # parse, --set and the format's checks (duration vs timeout, ...)
    check_link_backend(link_backend)
    from ..runner import preflight

    for s in scns:
        backend = preflight(s, link_backend)  # what `run` refuses before building: kernel, workload, backend, ceilings
        out.print(f"{s.name}: ok — {len(s.paths)} path{'s' if len(s.paths) > 1 else ''}, link backend {backend.name}, "
                  f"{s.run.repeat} repetition{'s' if s.run.repeat > 1 else ''}, timeout {s.run.timeout:g}s",
                  highlight=False, markup=False)


@app.command("plot")
@handled
def plot_cmd(
    result_json: Annotated[str, typer.Argument(metavar="RESULT", help="a result saved from 'mptcplab run --json', or a stored run id")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the PNG to write")] = Path("mptcplab.png"),
    repetition: Annotated[Optional[int], typer.Option("--rep", help="only this repetition (1-based)")] = None,
    db: DbOption = None,
) -> None:
    """Draw per-path throughput and RTT over time from a JSON result or a stored run."""
    check_output(output, "--output", FIGURE_SUFFIXES)
    path = Path(result_json)
    if path.exists() or path.suffix == ".json":
        result = _read_result(path)
        content = _builtin_content(result)
    else:
        result, content = _stored_result(result_json, db)
    if repetition is not None and repetition < 1:
        raise UsageError(f"--rep {repetition}: repetitions are numbered from 1")
    _plot(result, output, None if repetition is None else repetition - 1, console=out, scenario=content)


def _read_result(path: Path) -> RunResult:
    from pydantic import ValidationError

    from ..result import RunResult

    try:
        return RunResult.model_validate_json(path.read_text())
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    except ValidationError:
        raise UsageError(f"{path}: not a result written by 'mptcplab run --json'") from None


def _stored_result(run_id: str, db: str | None) -> tuple[RunResult, dict | None]:
    """A run from the store and its scenario's content; the run id is resolved as `mptcplab show` does."""
    from ..store import open_store

    store = open_store(db, create=False)
    uid = store.resolve_run(run_id)
    return store.load_result(uid), store.scenario_content(uid)


def _builtin_content(result: RunResult) -> dict | None:
    """The scenario of a JSON result when it is a built-in one of the same version (its events mark the plot)."""
    from ..scenario import load_scenario
    from ..scenario_files import builtin_scenarios

    if result.scenario not in builtin_scenarios():
        return None
    try:
        scn = load_scenario(result.scenario)
    except LabError:
        return None
    return scn.normalized() if scn.content_hash == result.scenario_hash else None


def _plot(result: RunResult, path: Path, repetition: int | None = None, console: Console = err,
          scenario: dict | None = None, option: str = "--output") -> None:
    from ..plots import plot_run

    try:
        with writing(path, option):
            console.print(f"plot written to {plot_run(result, path, repetition, scenario)}", highlight=False)
    except ValueError as e:
        raise UsageError(str(e)) from None


@app.command()
@handled
def scenarios(
    show: Annotated[Optional[str], typer.Option("--show", metavar="NAME",
                                                help="print this built-in scenario's TOML, as shipped: a starting point to copy")] = None,
) -> None:
    """List the built-in scenarios (the format: docs/scenario.md)."""
    from ..scenario_files import builtin_scenarios

    builtins = builtin_scenarios()
    if show is not None:  # the file as shipped: no need to load the scenario models
        if show not in builtins:
            raise UsageError(f"--show {show}: no built-in scenario of that name; the built-in scenarios are: {', '.join(builtins)}")
        sys.stdout.write(builtins[show].read_text())
        return
    from ..scenario import load_scenario

    for name, path in builtins.items():
        out.print(f"{name:<20} {load_scenario(path).description}", highlight=False, markup=False)


@app.command()
@handled
def cleanup(
    include_live: Annotated[bool, typer.Option("--all", help="also remove namespaces of runs that are still alive")] = False,
) -> None:
    """Remove namespaces, processes and lock files left by crashed or killed runs."""
    from ..cleanup import cleanup as do_cleanup

    report = do_cleanup(include_live=include_live)
    for ns in report.namespaces:
        out.print(f"removed namespace {ns}", highlight=False)
    for pid in report.processes:
        out.print(f"killed process {pid}", highlight=False)
    for lock in report.lock_files:
        out.print(f"removed stale lock {lock}", highlight=False)
    for ns in report.live:
        out.print(f"kept {ns}: its run is still alive (use --all to remove it anyway)", highlight=False)
    for tmp in report.temp_dirs:
        out.print(f"removed temporary directory {tmp}", highlight=False)
    if not (report.namespaces or report.processes or report.lock_files or report.temp_dirs):
        out.print("nothing to clean up")

