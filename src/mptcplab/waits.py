"""Saying what a long wait is waiting for: nothing (library use) or a line / spinner on a rich Console (the CLI).

Used by kernel fetches (apt, downloads, unpacking) and by the CLI's slow reads of a store (report, compare,
export, history --suite): anything that may pass a second says so on stderr.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Waits:
    """Where a long wait says what it waits for. This base says nothing (for library use)."""

    def say(self, line: str) -> None:
        """One line of information (which kernel a name resolved to)."""

    @contextmanager
    def waiting(self, what: str) -> Iterator[Callable[[str], None]]:
        """Around a wait; yields a function that updates the detail (e.g. bytes downloaded so far)."""
        yield lambda detail: None


class ConsoleWaits(Waits):
    """On a rich Console (the CLI's stderr): a spinner on a terminal, else one line once a wait passes `after_s`."""

    def __init__(self, console: object, after_s: float = 1.0) -> None:
        self.console = console
        self.after_s = after_s

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)  # type: ignore[attr-defined]

    @contextmanager
    def waiting(self, what: str) -> Iterator[Callable[[str], None]]:
        t0 = time.monotonic()
        if getattr(self.console, "is_terminal", False):
            with self.console.status(what) as status:  # type: ignore[attr-defined]
                yield lambda detail: status.update(f"{what} {detail}")
            if time.monotonic() - t0 >= self.after_s:
                self.say(f"{what}: {time.monotonic() - t0:.1f} s")
            return
        timer = threading.Timer(self.after_s, self.say, args=(f"{what} …",))
        timer.daemon = True
        timer.start()
        try:
            yield lambda detail: None
        finally:
            timer.cancel()
