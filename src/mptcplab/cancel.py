"""Ctrl-C and SIGTERM that never land in the middle of a netlink call.

Raising from a signal handler interrupts whatever bytecode runs: inside
pyroute2's event loop it left the loop broken, and inside a weakref callback
Python swallowed the KeyboardInterrupt and the run went on. So the lab's work
runs in a worker thread; the main thread only waits and, on a signal, sets a
flag and shuts the lab's sockets down (which wakes blocked send/recv). The
worker notices at its next check, raises Interrupted, and its Lab tears down.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from .errors import Interrupted

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Cancel:
    """A cancellation flag with hooks that unblock work in progress."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = signal.SIGINT
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self.event.is_set()

    def check(self) -> None:
        """Raise Interrupted when cancelled: call it wherever stopping is safe."""
        if self.event.is_set():
            raise Interrupted(self.signum)

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` on cancel (now if already cancelled); returns its remover."""
        with self._lock:
            self._hooks.append(hook)
        if self.event.is_set():
            hook()

        def remove() -> None:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return remove

    def trigger(self, signum: int = signal.SIGINT) -> None:
        self.signum = signum
        self.event.set()
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook()
            except OSError:
                pass


def interruptible(work: Callable[[Cancel], T]) -> T:
    """Run `work(cancel)` in a worker thread; signals cancel it instead of raising."""
    cancel = Cancel()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = work(cancel)
        except BaseException as e:  # handed to the main thread below
            box["error"] = e

    def on_signal(signum: int, _frame: object) -> None:
        cancel.trigger(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        worker = threading.Thread(target=target, name="lab-worker", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    cancel.check()
    return box["result"]  # type: ignore[return-value]
