"""The mptcplab command: a thin layer over the library.

Contract: commands, flags, JSON keys and exit codes are what users' scripts
call; extend them, never rename. Errors are one line on stderr.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, ParamSpec, TypeVar

import typer
from rich.console import Console

from .errors import Interrupted, LabError, UsageError
from .outputs import FIGURE_SUFFIXES, check_output, writing
from .protocols import Progress as RunProgress

# Every import a command needs beyond typer is made inside that command: `mptcplab --help` and the light commands
# load no pydantic model, no engine (pyroute2), no numpy (tests/test_cli.py checks what --help imports).
if TYPE_CHECKING:
    from rich.progress import TaskID

    from .result import Repetition, RunResult
    from .scenario import Scenario

P = ParamSpec("P")
R = TypeVar("R")

# rich_markup_mode=None: help text is printed as written ("[run]" is not Rich markup) and flags show no <bool>
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="A performance lab for the Linux MPTCP packet scheduler.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
DbOption = Annotated[Optional[str], typer.Option(
    "--db", help="results database: a SQLite path or a URL (default: $MPTCPLAB_DB, else ~/.local/share/mptcplab/results.db)")]


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Expected failures become one line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except LabError as e:
            _fail(e.message + (f" — {e.hint}" if e.hint else ""), e.exit_code)
        except Interrupted as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted by Ctrl-C; the lab's namespaces were removed", 130)

    return wrapper


SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE",
    help="override a scenario key by its dotted name (repeatable): tcp.congestion_control=bbr, path.wifi.delay=20ms, workload.size=4MiB")]
FailFastOption = Annotated[bool, typer.Option("--fail-fast", help="stop at the first repetition that does not complete (default: record it and go on)")]


def _set_accel(value: Optional[str]) -> Optional[str]:
    """--accel sets MPTCPLAB_ACCEL for this process and its children (a worker's, a bisect's guests): one rule, kernels/accel.py."""
    if value is not None:
        from .kernels.accel import ACCELERATORS, ENV
        import os

        if value.strip().lower() not in ACCELERATORS:
            raise typer.BadParameter(f"{value!r} is not an accelerator: use one of {', '.join(ACCELERATORS)}")
        os.environ[ENV] = value.strip().lower()
    return value


AccelOption = Annotated[Optional[str], typer.Option(
    "--accel", callback=_set_accel, metavar="auto|kvm|tcg",
    help="QEMU guests' accelerator: auto (KVM where it proves itself on the kernel, else TCG), kvm, or tcg (default: $MPTCPLAB_ACCEL, else auto)")]


def print_json_results(results: list[RunResult], timeseries: bool) -> None:
    """Exactly one JSON document on stdout: the run, or {"runs": [...]} for several."""
    docs = [r.to_json(timeseries=timeseries) for r in results]
    sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else {"runs": docs}) + "\n")
    sys.stdout.flush()


def load_scenarios(refs: list[str], overrides: list[str] | tuple[str, ...] = ()) -> list["Scenario"]:
    """Load scenario files or built-in names; print each scenario's notes once on stderr ("note: ...").

    Raises ScenarioError (exit 2) for the first file that cannot be used.
    """
    from .scenario import load_scenario

    scns = [load_scenario(ref, overrides) for ref in refs]
    for note in dict.fromkeys(n for s in scns for n in s.notes):
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    return scns


class RichProgress(RunProgress):
    """Progress of a run on stderr: one bar per repetition."""

    def __init__(self, scenario: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.scenario = scenario
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeElapsedColumn(), console=err, transient=False)
        self.task: TaskID | None = None

    def __enter__(self) -> "RichProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def scenario_started(self, name: str) -> None:
        self.scenario = name  # interleaved runs: the bar says which scenario this repetition is

    def repetition_started(self, index: int, total: int) -> None:
        self.task = self.bar.add_task(f"{self.scenario} rep {index + 1}/{total}", total=1.0)

    def sample(self, index: int, done: float, total: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=min(done / total, 1.0) if total else 0)

    def repetition_finished(self, rep: Repetition) -> None:
        if self.task is not None:
            text = f"{self.scenario} rep {rep.index + 1}: {rep.goodput_mbps:.2f} mbit/s in {rep.completion_s:.2f}s"
            if not rep.completed:
                text += f" — {rep.status.upper()}: {rep.error}"
            elif rep.over_budget:
                text += " (over budget)"
            self.bar.update(self.task, completed=1.0, description=text)

    def status(self, text: str) -> None:
        """A wait that is not a repetition: one line on stderr, so a log shows it too."""
        self.bar.console.print(text, highlight=False, markup=False, soft_wrap=True)


#: what `--help` shows after each option that takes a value (typer would show its Python type: <str>, <path>)
METAVARS = {
    "--alpha": "P", "--baseline": "SELECTOR", "--candidate": "SELECTOR", "--config": "FILE", "--db": "URL|PATH",
    "--format": "FORMAT", "--kernel": "KERNEL", "--kernels": "K1,K2,...", "--label": "TEXT", "--limit": "N",
    "--link-backend": "BACKEND", "--metric": "METRIC", "--modules": "DIR", "--output": "FILE", "--plot": "PNG",
    "--rep": "N", "--repeat": "N", "--scenario": "NAME", "--since": "AGE|DATE", "--tag": "KEY=VALUE",
    "--threshold": "PERCENT",
}


def _plain_metavars(command: Any) -> None:
    """Every option and argument of every command gets a plain metavar (`--plot PNG`, `SCENARIO...`)."""
    from typer.core import TyperArgument, TyperOption

    for param in command.params:
        if isinstance(param, TyperArgument):  # typer adds {} (required) or [] (optional) and "..." itself
            param.metavar = re.sub(r"[][{}.]", "", param.metavar or param.name or "value").upper()
            param.display_type_rich = lambda ctx: None  # the metavar says it; no <list[str]> after it
        elif isinstance(param, TyperOption) and not param.is_flag and param.metavar is None:
            long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            param.metavar = METAVARS.get(long, long.lstrip("-").upper())
    for sub in getattr(command, "commands", {}).values():
        _plain_metavars(sub)


def _version(value: bool) -> None:
    if value:
        from .environment import lab_version

        lab = lab_version()
        out.print(f"mptcplab {lab['version']}" + (f" (git {lab['commit']})" if lab["commit"] else ""), highlight=False)
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print mptcplab's version and git commit, then exit")] = False,
) -> None:
    """A performance lab for the Linux MPTCP packet scheduler."""


@app.command()
@handled
def doctor() -> None:
    """Check what the lab needs: one line each, OK, MISSING or absent (optional), with how to fix. Exit 0 when the lab can run, 3 when it cannot."""
    from rich.table import Table
    from rich.text import Text

    from .doctor import checks, ready

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
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="run inside a QEMU guest booted with this kernel (mptcplab kernel list)")] = None,
    overrides: SetOption = None,
    fail_fast: FailFastOption = False,
    accel: AccelOption = None,
) -> None:
    """Run scenarios on this machine's kernel, store and print their results.

    Exit 1 when any repetition did not complete (each is kept, with its reason).
    """
    scns = load_scenarios(scenario, overrides or [])  # a bad scenario is refused before the engine (pyroute2) loads
    from . import runner
    from .cli_store import parse_tags, recorder_for
    from .protocols import Collector

    scn = scns[0]
    if plot is not None and len(scns) > 1:
        raise UsageError("--plot draws one run: give one scenario")
    tags = parse_tags(tag or [])
    recorder = recorder_for(db, err) if store else None
    if link_backend is not None and link_backend not in ("auto", "tbf", "netem", "wire"):
        raise UsageError(f"--link-backend {link_backend!r}: choose auto, tbf, netem or wire")
    if plot is not None:
        check_output(plot, "--plot", FIGURE_SUFFIXES)  # before any traffic
    guest_kernel = None
    if kernel is not None:
        from .cli_kernel import use_kernel

        guest_kernel = use_kernel(kernel)  # resolved (and fetched) before anything starts; unknown ones are refused
    for s in scns if kernel is None else []:  # with --kernel the guest checks its own kernel
        runner.preflight(s, link_backend)  # refuse before anything is built or drawn
    collector = Collector()
    options = runner.RunOptions(repeat=repeat, label=label, link_backend=link_backend, tags=tags, fail_fast=fail_fast,
                                warmup=1 if warmup else 0, sinks=[collector] + ([recorder] if recorder else []))
    try:
        with RichProgress(scn.name) as progress:
            from .executors import executor_for

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
        from .report import print_run

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


def check_link_backend_option(link_backend: str | None) -> None:
    """--link-backend's value, as `run` takes it (UsageError, exit 2, for an unknown one)."""
    from .links import BACKENDS

    if link_backend is not None and link_backend != "auto" and link_backend not in BACKENDS:
        names = ["auto", *BACKENDS]
        raise UsageError(f"--link-backend {link_backend!r}: choose {', '.join(names[:-1])} or {names[-1]}")


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
    check_link_backend_option(link_backend)
    from .runner import preflight

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

    from .result import RunResult

    try:
        return RunResult.model_validate_json(path.read_text())
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    except ValidationError:
        raise UsageError(f"{path}: not a result written by 'mptcplab run --json'") from None


def _stored_result(run_id: str, db: str | None) -> tuple[RunResult, dict | None]:
    """A run from the store and its scenario's content; the run id is resolved as `mptcplab show` does."""
    from .store import open_store

    store = open_store(db, create=False)
    uid = store.resolve_run(run_id)
    return store.load_result(uid), store.scenario_content(uid)


def _builtin_content(result: RunResult) -> dict | None:
    """The scenario of a JSON result when it is a built-in one of the same version (its events mark the plot)."""
    from .scenario import load_scenario
    from .scenario_files import builtin_scenarios

    if result.scenario not in builtin_scenarios():
        return None
    try:
        scn = load_scenario(result.scenario)
    except LabError:
        return None
    return scn.normalized() if scn.content_hash == result.scenario_hash else None


def _plot(result: RunResult, path: Path, repetition: int | None = None, console: Console = err,
          scenario: dict | None = None, option: str = "--output") -> None:
    from .plots import plot_run

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
    from .scenario_files import builtin_scenarios

    builtins = builtin_scenarios()
    if show is not None:  # the file as shipped: no need to load the scenario models
        if show not in builtins:
            raise UsageError(f"--show {show}: no built-in scenario of that name; the built-in scenarios are: {', '.join(builtins)}")
        sys.stdout.write(builtins[show].read_text())
        return
    from .scenario import load_scenario

    for name, path in builtins.items():
        out.print(f"{name:<20} {load_scenario(path).description}", highlight=False, markup=False)


@app.command()
@handled
def cleanup(
    include_live: Annotated[bool, typer.Option("--all", help="also remove namespaces of runs that are still alive")] = False,
) -> None:
    """Remove namespaces, processes and lock files left by crashed or killed runs."""
    from .cleanup import cleanup as do_cleanup

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


from . import cli_store  # noqa: E402,F401  (registers runs, show, export, compare, import on `app`)
from . import cli_kernel  # noqa: E402,F401  (registers kernel fetch/list/add and matrix on `app`)
from . import cli_report  # noqa: E402,F401  (registers report on `app`)
from . import cli_suite  # noqa: E402,F401  (registers suite list/run and bisect on `app`)
from . import cli_fleet  # noqa: E402,F401  (registers submit, worker and campaign on `app`)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    command = typer.main.get_command(app)
    _plain_metavars(command)
    command(prog_name="mptcplab")


if __name__ == "__main__":
    main()
