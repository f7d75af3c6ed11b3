"""The LabError family: every expected failure is one line and a hint.

The CLI prints ``error: <message>`` (and ``hint: <hint>`` when there is one)
and exits with ``exit_code``; anything that is not a LabError is a bug.
"""
from __future__ import annotations

from collections.abc import Callable


class LabError(Exception):
    """An expected failure the user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(LabError):
    """Bad CLI arguments: exit code 2, like argparse and click."""

    exit_code = 2


class ScenarioError(LabError):
    """A scenario file that cannot be parsed or validated."""

    exit_code = 2


class UnsupportedError(LabError):
    """The scenario asks for something this kernel or backend cannot do."""

    exit_code = 3


class EnvironmentProblem(LabError):
    """The machine lacks a requirement (root, MPTCP, a tool)."""

    exit_code = 3


class RunError(LabError):
    """A run failed while executing: it produced no result to trust."""

    exit_code = 1


class StoreError(LabError):
    """The results store cannot be opened, read or written (locked, full, unreachable): an unusable --db, exit 2.

    During a run the recorder catches it and spools the result instead.
    """

    exit_code = 2


class TransferTimeout(RunError):
    """A transfer that did not finish within its [run] timeout: a repetition with status 'timeout'."""


class FallbackError(RunError):
    """The connection fell back to plain TCP: never a valid MPTCP result."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, delivered like Ctrl-C.

    A KeyboardInterrupt (not an Exception) so that no ``except Exception``
    in a library on the stack can swallow it; the lab tears down on the way out.
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; the lab's namespaces were removed")


def interrupt_handler(on_signal: "Callable[[int], None] | None" = None) -> "Callable[[int, object], None]":
    """A handler for SIGTERM/SIGHUP that raises :class:`Interrupted` (after calling `on_signal(signum)`) in the
    process that made it, and in a process forked from that one (not exec'd) exits at once with 128 + signum, so
    a forked helper never runs its parent's teardown. Used by the Lab while it works and by the CLI around a
    whole command."""
    import os

    owner = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        if on_signal is not None:
            on_signal(signum)
        raise Interrupted(signum)

    return handler
