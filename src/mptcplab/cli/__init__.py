"""The mptcplab command: a thin layer over the library.

Contract: commands, flags, JSON keys and exit codes are what users' scripts
call; extend them, never rename. Errors are one line on stderr.

One module per command or command group (run.py: doctor, run, plot, scenarios, cleanup; store.py: runs, show,
export, compare, history, import; kernel.py; report.py; suite.py; fleet.py), each a few lines over a library
call; what they share is common.py. No command module imports another (tests/test_cli_imports.py).
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any

import typer

from .common import app

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


from . import run  # noqa: E402,F401  (registers doctor, run, plot, scenarios, cleanup on `app`)
from . import store  # noqa: E402,F401  (registers runs, show, export, compare, history, import on `app`)
from . import kernel  # noqa: E402,F401  (registers kernel fetch/list/add and matrix on `app`)
from . import report  # noqa: E402,F401  (registers report on `app`)
from . import suite  # noqa: E402,F401  (registers suite list/run and bisect on `app`)
from . import fleet  # noqa: E402,F401  (registers submit, worker and campaign on `app`)
from . import selftest  # noqa: E402,F401  (registers selftest build and simult_flows on `app`)

__all__ = ["app", "main"]


def option_error(e: Any) -> str:
    """A usage error of the CLI framework (a bad option value, a missing or unknown option, an extra argument) as the
    lab's one line, `what is wrong — see 'mptcplab CMD --help'` (the framework's own is four lines with the usage)."""
    from pydantic import ValidationError
    from typer._click.exceptions import BadParameter, MissingParameter, NoSuchOption

    from ..fields import problem_words

    ctx = getattr(e, "ctx", None)
    fix = f"see '{ctx.command_path} --help'" if ctx is not None else "see 'mptcplab --help'"
    param = getattr(e, "param", None)
    name = None
    if param is not None:
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        name = longs[0] if longs and param.param_type_name == "option" else (param.metavar or param.name or "").upper()
    cause = e.__cause__
    if isinstance(e, MissingParameter):
        what = f"missing {param.param_type_name if param is not None else 'value'} {name or ''}".rstrip()
    elif isinstance(e, BadParameter) and isinstance(cause, ValidationError) and name:  # typer checks values with pydantic
        first = cause.errors()[0]
        what = problem_words(first, name, got=str(first.get("input")))
    elif isinstance(e, BadParameter):
        what = f"{name or 'a value'}: {e.message.rstrip('.')}"
    elif isinstance(e, NoSuchOption):
        what = f"no such option {e.option_name}" + (f" (did you mean {', '.join(sorted(e.possibilities))}?)"
                                                    if e.possibilities else "")
    else:
        message = e.format_message().rstrip(".")
        what = message[:1].lower() + message[1:]
    return f"{what} — {fix}"


#: the signal that stopped the command, when it was SIGTERM or SIGHUP (set by the handler `main` installs)
_stopped_by: list[int] = []


def _signals_like_ctrl_c() -> None:
    """SIGTERM and SIGHUP raise `Interrupted` wherever the command is, as Ctrl-C raises KeyboardInterrupt.

    The lab installs its own handlers while it works (`Lab`, `cancel.interruptible`) and puts the previous ones
    back after. Without a handler here the previous one was the default action, so a SIGTERM between two pieces
    of work (a bisect between its probes, a suite between kernels) killed the process outright: no exit 143, no
    line saying so (tests/test_suite.py's bisect resume test caught it as exit -15). A process forked from this
    one (not exec'd) exits at once instead of raising into a copy of the command.
    """
    import signal

    from ..errors import interrupt_handler

    handler = interrupt_handler(_stopped_by.append)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, handler)


def main() -> None:
    """The mptcplab command: every error one line on stderr with the README's exit code, never a traceback."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from ..errors import LabError
    from .common import error_line

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    command = typer.main.get_command(app)
    _plain_metavars(command)
    _signals_like_ctrl_c()
    try:
        code = command.main(prog_name="mptcplab", standalone_mode=False)
    except NoArgsIsHelpError as e:  # `mptcplab` or `mptcplab kernel` alone: the help, exit 2, as always
        e.show()
        sys.exit(e.exit_code)
    except ClickException as e:
        error_line(option_error(e))
        sys.exit(e.exit_code)
    except LabError as e:  # raised while the options are read: --db checked before any work
        error_line(e.message + (f" — {e.hint}" if e.hint else ""))
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C while the framework reads the options (inside a command, `handled` says it)
        error_line("interrupted by Ctrl-C")
        sys.exit(130)
    if code == 130 and _stopped_by:  # SIGTERM/SIGHUP outside a command's own handling (typer made it exit 130)
        from ..errors import Interrupted
        stopped = Interrupted(_stopped_by[-1])
        error_line(str(stopped))
        sys.exit(stopped.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
