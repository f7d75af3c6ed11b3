"""Runs in a QEMU guest booted with another kernel (a Debian kernel, `kernel add`, a `kernel build --flavour qemu`).

session.py boots and watches QEMU (accel.py decides KVM or TCG, initramfs.py
is the guest's init); the job protocol is executors/job.py's, shared with
every guest.
"""
from __future__ import annotations

from typing import Any

from ...protocols import Progress
from ...result import RunResult
from ...scenario import Scenario
from ..base import KernelExecutor, register


@register
class QemuExecutor(KernelExecutor):
    """One guest booted with `kernel` and kept up for every run given to it (booting costs far more than a repetition).

    Entering starts QEMU without waiting for the boot, so several guests boot
    at once (a matrix); `ready` waits for one.
    """

    kind = "qemu"

    def __init__(self, kernel: Any, cfg: Any = None) -> None:
        from .session import GuestSession

        super().__init__(kernel)
        self.session = GuestSession(kernel, cfg)

    def __enter__(self) -> "QemuExecutor":
        self.session.__enter__()
        return self

    def close(self) -> None:
        self.session.close()

    def ready(self, progress: Progress | None = None) -> None:
        self.session.wait_ready(progress)

    @property
    def alive(self) -> bool:
        return self.session.alive

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "accelerator": self.session.accel}

    def exec(self, argv: list[str], timeout_s: float, on_output: Any = None, seed: int | str | None = 1) -> tuple[int, bool]:
        """See Executor.exec; a QEMU guest's randomness is its own (`seed` is ignored)."""
        return self.session.exec(argv, timeout_s, on_output)

    def run(self, scenario: Scenario, options: Any = None, into: RunResult | None = None, finish: bool = True,
            timeseries: bool = True) -> RunResult:
        return self.session.run(scenario, options, timeseries, into=into, finish=finish)
