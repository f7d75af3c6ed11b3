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

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    command = typer.main.get_command(app)
    _plain_metavars(command)
    command(prog_name="mptcplab")


if __name__ == "__main__":
    main()
