"""Runs on this machine's kernel: the runner, in this process."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from ..result import RunResult
from ..scenario import Scenario
from .base import Executor, Relay, continuing, register


@register
class HostExecutor(Executor):
    """This machine's kernel. Nothing to boot; every repetition gets fresh namespaces (runner.run_scenarios)."""

    kind = "host"

    @property
    def release(self) -> str:
        return os.uname().release

    def run(self, scenario: Scenario, options: Any = None, into: RunResult | None = None, finish: bool = True,
            timeseries: bool = True) -> RunResult:
        from ..runner import RunOptions, run_scenarios

        options = continuing(options or RunOptions(), into)  # a matrix cell: the seeds continue after its repetitions
        if into is None and finish:
            return run_scenarios([scenario], options)[0]
        relay = Relay(list(options.sinks), into, finish)
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
