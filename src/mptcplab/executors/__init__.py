"""Where a run happens: this machine's kernel (host.py) or a kernel in a QEMU guest (guest.py), one interface (base.py)."""
from __future__ import annotations

from typing import Any

from .base import Executor


def executor_for(kernel: Any = None, cfg: Any = None) -> Executor:
    """The executor for `kernel` (a kernels.catalog.Kernel: a guest booted with it, configured by `cfg`, a GuestConfig);
    None: this machine's kernel. Nothing is started until the executor is entered."""
    if kernel is None:
        from .host import HostExecutor

        return HostExecutor()
    from .guest import GuestExecutor

    return GuestExecutor(kernel, cfg)


__all__ = ["Executor", "executor_for"]
