"""What a run tells the outside while it runs: the progress display and the sinks (the store).

These protocols sit below the engine: the runner, the guest executor and
the matrix call them; the store's recorder and the CLI's progress implement
them. Nothing here imports the engine, so the store and the analysis can
use them without loading pyroute2.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing this module loads no pydantic model (the CLI's --help stays fast)
    from .result import Repetition, RunResult
    from .scenario import Scenario


class Progress:
    """What the runner tells a UI; the CLI renders it with rich on stderr. Every method may be a no-op."""

    def scenario_started(self, name: str) -> None: ...
    def repetition_started(self, index: int, total: int) -> None: ...
    def sample(self, index: int, done: float, total: float) -> None: ...
    def repetition_finished(self, rep: Repetition) -> None: ...
    def status(self, text: str) -> None:
        """A wait that is not a repetition (a guest booting, a kernel being fetched): what it waits for."""


class RunSink:
    """Where a run goes while it runs (the results store): every call may persist, none may be skipped.

    run_finished is called however the run ends (completed, failed, interrupted),
    so what finished is never lost. The RunResult passed to run_started is the
    object later calls refer to; it grows as repetitions end.
    """

    def run_started(self, result: RunResult, scenario: Scenario) -> None: ...
    def repetition_finished(self, result: RunResult, rep: Repetition) -> None: ...
    def run_finished(self, result: RunResult) -> None: ...


class Collector(RunSink):
    """Keeps every run it hears of, in order: what `--json` prints however the command ends."""

    def __init__(self) -> None:
        self.results: list[RunResult] = []

    def run_started(self, result: RunResult, scenario: Scenario) -> None:
        if all(r is not result for r in self.results):
            self.results.append(result)
