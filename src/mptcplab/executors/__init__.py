"""Where a run happens: one Executor per kind, in a registry (base.py), chosen by the kernel.

- ``host`` (host.py): this machine's kernel, the runner in this process;
- ``qemu`` (qemu/): a kernel booted in a QEMU guest (KVM where it proves itself, TCG otherwise);
- ``uml`` (uml/): a self-built User-Mode Linux kernel with time travel: simulated time, deterministic.

Guests share one job protocol (job.py: a job in, JSON lines out, guest_main.py inside) and one sink relay
(base.Relay). A new kind is one module with one `@register`ed class; nothing else names the kinds.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import EXECUTORS, Executor

#: the modules that register executors (imported on first use: the engine is not loaded by `import mptcplab`)
_MODULES = ("host", "qemu", "uml")


def executors() -> dict[str, type[Executor]]:
    """Executor kind -> class, every registered kind."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return EXECUTORS


def kind_for(kernel: Any = None) -> str:
    """The executor kind that runs `kernel` (a kernels.catalog.Kernel; None: this machine's kernel)."""
    for kind, cls in executors().items():
        if cls.takes(kernel):
            return kind
    raise ValueError(f"no executor takes kernel {getattr(kernel, 'release', kernel)!r}")


def executor_for(kernel: Any = None, cfg: Any = None) -> Executor:
    """The executor for `kernel` (None: this machine's kernel), configured by `cfg` (the kind's own config, e.g. a
    qemu GuestConfig). Nothing is started until the executor is entered."""
    cls = executors()[kind_for(kernel)]
    return cls() if kernel is None else cls(kernel, cfg)


__all__ = ["EXECUTORS", "Executor", "executor_for", "executors", "kind_for", "run_command"]


def run_command(kernel: Any, argv: list[str], timeout_s: float, on_output: Any = None, progress: Any = None,
                cfg: Any = None, seed: int | str | None = 1) -> tuple[int, bool]:
    """Boot an executor for `kernel`, run command line `argv` there (Executor.exec, `seed` for executors with
    seeded randomness) and stop it: (the command's exit code, whether `timeout_s` killed it). SIGTERM and SIGHUP arrive as Interrupted, like Ctrl-C: the guest
    and everything it started are removed on the way out."""
    import signal

    from ..errors import interrupt_handler

    stop = interrupt_handler()
    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with executor_for(kernel, cfg) as ex:
            ex.ready(progress)
            return ex.exec(argv, timeout_s, on_output, seed)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
