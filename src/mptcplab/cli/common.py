"""What every command shares: the typer app, the consoles, one-line errors and exit codes, the common options,
run progress, store opening, run selectors and filters, thresholds and the case x kernel table.

Command modules (run, store, kernel, report, suite, fleet) import this and nothing of each other; this module
imports no command module (tests/test_cli_imports.py checks both).
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ..errors import Interrupted, LabError, UsageError
from ..protocols import Progress as RunProgress

# Every import a command needs beyond typer is made inside that command: `mptcplab --help` and the light commands
# load no pydantic model, no engine (pyroute2), no numpy (tests/test_cli.py checks what --help imports).
if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ..result import Repetition, RunResult
    from ..scenario import Scenario

P = ParamSpec("P")
R = TypeVar("R")

# rich_markup_mode=None: help text is printed as written ("[run]" is not Rich markup) and flags show no <bool>
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="A performance lab for the Linux MPTCP packet scheduler.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _check_db(value: Optional[str]) -> Optional[str]:
    """--db is checked as the options are read, before any work: an unsupported URL or a SQLite file in a directory
    that does not exist is one line, exit 2 (store.location.resolve_db), for every command that takes it."""
    if value is not None:
        from ..store.location import resolve_db

        resolve_db(value)
    return value


DbOption = Annotated[Optional[str], typer.Option(
    "--db", callback=_check_db, help="results database: a SQLite path or a URL (default: $MPTCPLAB_DB, else ~/.local/share/mptcplab/results.db)")]


def error_line(message: str) -> None:
    """`error: message` on stderr, one line however long."""
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)


def _fail(message: str, code: int) -> NoReturn:
    error_line(message)
    raise typer.Exit(code)


@contextmanager
def working(what: str) -> Iterator[Callable[[str], None]]:
    """Progress of a read that may pass a second (report, compare, export, history --suite) on stderr: a spinner
    on a terminal, else one line `what …` once a second has passed. Yields a function that updates the detail
    shown on a terminal (e.g. "37/154 runs")."""
    from ..waits import ConsoleWaits

    with ConsoleWaits(err).waiting(what) as detail:
        yield detail


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


def _sets_env(module: str, env: str, choices: str, what: str) -> Callable[[Optional[str]], Optional[str]]:
    """The callback of an option that sets an environment variable for this process and its children (a worker's, a
    bisect's guests): --accel (executors/qemu/accel.py), --time (executors/uml). `module` (relative to this package)
    names the variable (`env`) and the accepted values (`choices`), so the rule stays where the executor is."""

    def callback(value: Optional[str]) -> Optional[str]:
        if value is not None:
            import importlib

            owner = importlib.import_module(module, __package__)
            accepted, name = getattr(owner, choices), getattr(owner, env)
            if value.strip().lower() not in accepted:
                raise typer.BadParameter(f"{value!r} is not {what}: use one of {', '.join(accepted)}")
            os.environ[name] = value.strip().lower()
        return value

    return callback


_set_accel = _sets_env("..executors.qemu.accel", "ENV", "ACCELERATORS", "an accelerator")
_set_time = _sets_env("..executors.uml", "TIME_ENV", "TIME_MODES", "a time mode")


AccelOption = Annotated[Optional[str], typer.Option(
    "--accel", callback=_set_accel, metavar="auto|kvm|tcg",
    help="QEMU guests' accelerator: auto (KVM where it proves itself on the kernel, else TCG), kvm, or tcg (default: $MPTCPLAB_ACCEL, else auto)")]
TimeOption = Annotated[Optional[str], typer.Option(
    "--time", callback=_set_time, metavar="travel|real",
    help="UML kernels' clock: travel (simulated time, deterministic, the default) or real (default: $MPTCPLAB_TIME, else travel)")]
SeedOption = Annotated[str, typer.Option(
    "--seed", metavar="N|random",
    help="UML kernels under time travel: the seed of the kernel's randomness (the same seed, the same run), or random")]


RunSeedOption = Annotated[Optional[str], typer.Option(
    "--seed", metavar="N|random",
    help="repetition i draws seed N + i: under UML with time travel all the kernel's and the lab's randomness (the same "
         "seed, the same run on every kernel), elsewhere netem's loss and jitter where the kernel takes a seed; random for "
         "independent draws (default: the scenario's [run] seed, 1)")]

#: which executor kind reads each guest option (the options' callbacks hand them to that kind's module)
GUEST_OPTION_KIND = {"--accel": "qemu", "--time": "uml"}


def with_seed(overrides: list[str] | None, seed: Optional[str]) -> list[str]:
    """`overrides` (--set) with --seed as `run.seed=` last, so it wins over a --set of its own. Raises UsageError
    (exit 2) for a bad seed, before anything is loaded."""
    return [*(overrides or []), *([f"run.seed={seed_value(seed)}"] if seed is not None else [])]


def note_unused_guest_options(kernels: "list[Any]", given: dict[str, Optional[str]]) -> None:
    """One `note:` line for each guest option in `given` (option -> its value, None: not given) that no kernel in
    `kernels` (kernels.catalog.Kernel; empty or [None]: this host's) is run by: --time on the host or a QEMU guest,
    --accel on the host or under UML. The option is harmless there; the note says it did nothing."""
    from ..executors import kind_for

    kinds = {kind_for(k) for k in kernels or [None]}
    for option, value in given.items():
        if value is not None and GUEST_OPTION_KIND[option] not in kinds:
            err.print(f"note: {option} {value} does nothing here: it applies only to {GUEST_OPTION_KIND[option]} kernels "
                      f"(this command runs on: {', '.join(sorted(kinds))})", highlight=False, markup=False, soft_wrap=True)


def note_unseeded(seed: Optional[str], backends: "list[Any]") -> None:
    """One `note:` line when --seed was given for runs on this host whose link backend (links.base.LinkBackend
    classes) draws loss and jitter without it."""
    names = sorted({b.name for b in backends if getattr(b, "unseeded_draws", False)})
    if seed is not None and names:
        err.print(f"note: --seed {seed} is recorded, but on this host the {', '.join(names)} backend's loss and jitter "
                  "draws do not follow it (they do under UML with time travel; netem's do where the kernel takes a seed)",
                  highlight=False, markup=False, soft_wrap=True)


def seed_value(text: str) -> int | str:
    """A --seed value: a non-negative integer, or "random". Raises UsageError (exit 2) for anything else."""
    from ..scenario import seed_of

    try:
        return seed_of(text)
    except ValueError:
        raise UsageError(f"--seed {text!r} is not a seed", "give an integer from 0 to 2^63-1, or random") from None


def print_json_results(results: list[RunResult], timeseries: bool) -> None:
    """Exactly one JSON document on stdout: the run, or {"runs": [...]} for several."""
    docs = [r.to_json(timeseries=timeseries) for r in results]
    sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else {"runs": docs}) + "\n")
    sys.stdout.flush()


def load_scenarios(refs: list[str], overrides: list[str] | tuple[str, ...] = ()) -> list["Scenario"]:
    """Load scenario files or built-in names; print each scenario's notes once on stderr ("note: ...").

    Raises ScenarioError (exit 2) for the first file that cannot be used.
    """
    from ..scenario import load_scenario

    scns = [load_scenario(ref, overrides) for ref in refs]
    for note in dict.fromkeys(n for s in scns for n in s.notes):
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    return scns


class RichProgress(RunProgress):
    """Progress of a run on stderr: one bar per repetition."""

    def __init__(self, scenario: str, bar: "Progress | None" = None, numbered: bool = True) -> None:
        """`bar`: the bars of another display to add to (a lane, see `lane`), else new ones; `numbered`: each bar
        says "rep N" (a lane's name says which repetition it is)."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.scenario = scenario
        self.bar = bar or Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                   TimeElapsedColumn(), console=err, transient=False)
        self.task: TaskID | None = None
        self.numbered = numbered

    def __enter__(self) -> "RichProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def lane(self, name: str) -> "RichProgress":
        """A display of its own for one of several cells running at once (a matrix of UML kernels): its own
        scenario name and bars on this one's console, so each repetition's samples and result land on its bar."""
        return RichProgress(name, bar=self.bar, numbered=False)

    def scenario_started(self, name: str) -> None:
        self.scenario = name  # interleaved runs: the bar says which scenario this repetition is

    def repetition_started(self, index: int, total: int) -> None:
        self.task = self.bar.add_task(f"{self.scenario} rep {index + 1}/{total}" if self.numbered else self.scenario, total=1.0)

    def sample(self, index: int, done: float, total: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=min(done / total, 1.0) if total else 0)

    def repetition_finished(self, rep: Repetition) -> None:
        if self.task is not None:
            # a best-path baseline repetition: the scenario line already says "TCP on <path>"
            who = self.scenario if rep.baseline_path or not self.numbered else f"{self.scenario} rep {rep.index + 1}"
            text = f"{who}: {rep.goodput_mbps:.2f} mbit/s in {rep.completion_s:.2f}s"
            if not rep.completed and not rep.fails_run:  # a baseline timing out on a path too slow alone: designed
                text += f" — stopped as expected: {rep.error}"
            elif not rep.completed:
                text += f" — {rep.status.upper()}: {rep.error}"
            elif rep.over_budget:
                text += " (over budget)"
            self.bar.update(self.task, completed=1.0, description=text)

    def status(self, text: str) -> None:
        """A wait that is not a repetition: one line on stderr, so a log shows it too."""
        self.bar.console.print(text, highlight=False, markup=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from ..environment import lab_version

        lab = lab_version()
        out.print(f"mptcplab {lab['version']}" + (f" (git {lab['commit']})" if lab["commit"] else ""), highlight=False)
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print mptcplab's version and git commit, then exit")] = False,
) -> None:
    """A performance lab for the Linux MPTCP packet scheduler."""


ThresholdOption = Annotated[str, typer.Option("--threshold", help="smallest relative change that counts, in percent: 5% or 5")]
AlphaOption = Annotated[float, typer.Option("--alpha", min=0.0001, max=0.5, help="significance level of the one-sided Mann-Whitney U test")]


def parse_tags(items: list[str]) -> dict[str, str]:
    """`--tag key=value` (repeatable) into a dict; a malformed one is a usage error."""
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item!r}: write it as key=value")
        tags[key.strip()] = value.strip()
    return tags


def parse_since(text: str) -> float:
    """`--since`: an ISO date/time (2026-11-25, 2026-11-25T08:00) or an age (30m, 12h, 7d, 2w)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*", text)
    if m:
        seconds = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return time.time() - float(m.group(1)) * seconds
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"--since {text!r}: give a date/time (2026-11-25, 2026-11-25T08:00) or an age (30m, 12h, 7d, 2w)") from None


def check_link_backend(name: str | None) -> None:
    """`--link-backend NAME`: auto or a registered link backend, else a usage error naming the choices."""
    from ..links import unknown_backend

    problem = None if name is None else unknown_backend(name)
    if problem:
        raise UsageError(f"--link-backend {name!r}: {problem}")


def store_at(db: str | None, create: bool = False) -> Any:
    """The store for a command; only commands that write (import) may create it."""
    from ..store import open_store

    return open_store(db, create=create)


def listing_store(db: str | None) -> tuple[Any, str]:
    """For commands that list (runs, history, export): the store, or None when no run was ever stored there.

    A SQLite file that does not exist yet is not an error for them (a new user
    runs `mptcplab runs` first); a directory that does not exist is, unless it
    is the default location: `--db /mistyped/dir/results.db` must not look empty.
    Returns (store or None, where it is).
    """
    from ..store import open_store
    from ..store.location import ENV_VAR, display, resolve_db

    url = resolve_db(db)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") and not Path(url.database).exists():
        if Path(url.database).parent.is_dir() or not (db or os.environ.get(ENV_VAR)):
            return None, display(url)
    store = open_store(url, create=False)  # a missing directory of a given --db: "no results database at ...", exit 2
    return store, store.where


def warn(message: str) -> None:
    """One `warning: ...` line on stderr."""
    err.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)


def nothing_stored(where: str, console: Console) -> None:
    console.print(f"no runs stored yet (in {where})", highlight=False, markup=False, soft_wrap=True)


def run_filter(scenario: str | None, label: str | None, kernel: str | None, since: str | None, tag: list[str] | None,
            run_ids: list[str] | None = None) -> Any:
    from ..store import RunFilter

    return RunFilter(scenario=scenario, label=label, kernel=kernel, since=parse_since(since) if since else None,
                     tags=parse_tags(tag or []), run_ids=list(run_ids or []))


def known_metrics(names: list[str]) -> list[str]:
    """`names`, or a usage error naming the first metric the store does not measure."""
    from ..store import METRICS

    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise UsageError(f"--metric {unknown[0]!r}: choose one of {', '.join(METRICS)}")
    return names


def parse_threshold(text: str) -> float:
    """`--threshold 5%` or `--threshold 5`: a percentage either way (a fraction of 1, e.g. 0.05, would be 0.05%)."""
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        raise UsageError(f"--threshold {text!r}: give a percentage such as 5%") from None
    if not 0 <= value < 1:
        raise UsageError(f"--threshold {text!r}: must be between 0% and 100%")
    return value


def fmt_ci(value: float | None, ci: Any, digits: int = 2, small: list[float] | None = None) -> str:
    """A median and its interval; `small`: the values of a sample too small for one (stats.MIN_INTERVAL_N)."""
    if value is None:
        return "-"
    from ..report import estimate_text
    from ..result import Estimate

    est = Estimate(median=value, ci95=tuple(ci), n=len(small or []), small_sample=bool(small), values=small or [])
    return estimate_text(est, digits)


def print_case_rows(suite_id: str, rows: list[dict[str, Any]], metric: str, what: str | None = None) -> None:
    """The case x kernel table; `what` names the runs (default: the suite's, tagged suite=ID)."""
    from ..metrics import metric as metric_def

    per_case = len({r["metric"] for r in rows}) > 1
    unit = "" if per_case else metric_def(metric).unit  # per case: `metric` is "per-case", each row names its own
    measure = ("each case's metric (its workload's main one)" if per_case else f"{metric}{f' ({unit})' if unit else ''}")
    multi = len({r["kernel"] for r in rows}) > 1
    table = Table(title=f"{what or f'suite {suite_id} (runs tagged suite={suite_id})'}: {measure}, median [95% CI] "
                        "of completed repetitions; pass rate [Wilson 95%] where a budget is set"
                        + ("; change vs the first kernel (threshold 5%, alpha 0.01)" if multi else ""), title_justify="left")
    value_col = "median [95% CI]" if per_case else metric
    cols = ["case", "kernel", "n", "failed"] + (["metric"] if per_case else []) + [value_col, "pass rate"] \
        + (["change", "p", "verdict"] if multi else [])
    for col in cols:
        table.add_column(col, justify="right" if col in ("n", "failed", "change", "p") else "left")
    for r in rows:
        pass_rate = "-" if r["pass_rate"] is None else f"{r['passed']}/{r['n'] + r['failed']} [{r['pass_ci95'][0]:.2f}, {r['pass_ci95'][1]:.2f}]"
        m_unit = metric_def(r["metric"]).unit
        cells = [r["case"], r["kernel"], str(r["n"]), str(r["failed"])] \
            + ([r["metric"] + (f" ({m_unit})" if m_unit else "")] if per_case else []) \
            + [fmt_ci(r["median"], r["ci95"], 2, r.get("values")), pass_rate]
        if multi:
            if r["change"] is None:
                cells += ["baseline" if r["verdict"] is None and r["median"] is not None else "-", "", ""]
            else:
                style = {"regressed": "red", "improved": "green"}.get(r["verdict"])
                cells += [f"{r['change'] * 100:+.1f}% [{r['change_ci95'][0] * 100:+.1f}, {r['change_ci95'][1] * 100:+.1f}]",
                          f"{r['p_value']:.4f}", f"[{style}]{r['verdict']}[/{style}]" if style else r["verdict"]]
        table.add_row(*cells)
    out.print(table)

