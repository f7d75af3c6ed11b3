"""Runs on this machine's kernel: the runner, in this process."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from ..protocols import RunSink
from ..result import Repetition, RunResult
from ..scenario import Scenario
from .base import Executor


class HostExecutor(Executor):
    """This machine's kernel. Nothing to boot; every repetition gets fresh namespaces (runner.run_scenarios)."""

    kind = "host"

    @property
    def release(self) -> str:
        return os.uname().release

    def run(self, scenario: Scenario, options: Any = None, into: RunResult | None = None, finish: bool = True,
            timeseries: bool = True) -> RunResult:
        from ..runner import RunOptions, run_scenarios

        options = options or RunOptions()
        if into is None and finish:
            return run_scenarios([scenario], options)[0]
        relay = _Relay(list(options.sinks), into, finish)
        try:
            result = run_scenarios([scenario], replace(options, sinks=[relay], summarize=options.summarize and into is None))[0]
        except BaseException as e:
            if into is not None and not isinstance(e, KeyboardInterrupt):
                into.status = "failed"
                message = getattr(e, "message", str(e))
                if message not in into.errors:
                    into.errors.append(message)
            raise
        return result if into is None else into

    def run_all(self, scenarios: list[Scenario], options: Any = None, timeseries: bool = True) -> list[RunResult]:
        """Several scenarios with their repetitions interleaved (A B A B ...), as runner.run_scenarios does."""
        from ..runner import run_scenarios

        return run_scenarios(scenarios, options)


class _Relay(RunSink):
    """Passes the runner's sink calls on: to a result the caller owns (`into`), or without the run's end (`finish` False)."""

    def __init__(self, sinks: list[RunSink], into: RunResult | None, finish: bool) -> None:
        self.sinks, self.into, self.finish = sinks, into, finish

    def run_started(self, result: RunResult, scenario: Scenario) -> None:
        if self.into is None:
            for sink in self.sinks:
                sink.run_started(result, scenario)

    def repetition_finished(self, result: RunResult, rep: Repetition) -> None:
        into = self.into
        if into is None:
            for sink in self.sinks:
                sink.repetition_finished(result, rep)
            return
        rep.index = len(into.repetitions)
        into.repetitions.append(rep)
        if not rep.completed:
            into.errors.append(f"repetition {rep.index + 1}: {rep.status}: {rep.error}")
        env = result.environment
        if not into.environment.get("sysctls_client"):  # what the first repetition read back: the cell's conditions
            into.environment.update({k: v for k, v in env.items() if k not in ("tags", "label", "link_stats")})
        if env.get("link_stats"):
            into.environment.setdefault("link_stats", []).append(env["link_stats"][-1])
        for sink in self.sinks:
            sink.repetition_finished(into, rep)

    def run_finished(self, result: RunResult) -> None:
        if self.into is None and self.finish:
            for sink in self.sinks:
                sink.run_finished(result)
