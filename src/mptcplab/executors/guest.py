"""Runs in a QEMU guest booted with another kernel: kernels.guest.GuestSession behind the Executor interface."""
from __future__ import annotations

from typing import Any

from ..protocols import Progress
from ..result import RunResult
from ..scenario import Scenario
from .base import Executor


class GuestExecutor(Executor):
    """One guest booted with `kernel` and kept up for every run given to it (booting costs far more than a repetition).

    Entering starts QEMU without waiting for the boot, so several guests boot
    at once (a matrix); `ready` waits for one.
    """

    kind = "guest"

    def __init__(self, kernel: Any, cfg: Any = None) -> None:
        from ..kernels.guest import GuestSession

        self._kernel = kernel
        self.session = GuestSession(kernel, cfg)

    def __enter__(self) -> "GuestExecutor":
        self.session.__enter__()
        return self

    def close(self) -> None:
        self.session.close()

    def ready(self, progress: Progress | None = None) -> None:
        self.session.wait_ready(progress)

    @property
    def alive(self) -> bool:
        return self.session.alive

    @property
    def release(self) -> str:
        return self._kernel.release

    @property
    def kernel(self) -> Any:
        return self._kernel

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "accelerator": self.session.accel}

    def run(self, scenario: Scenario, options: Any = None, into: RunResult | None = None, finish: bool = True,
            timeseries: bool = True) -> RunResult:
        return self.session.run(scenario, options, timeseries, into=into, finish=finish)
