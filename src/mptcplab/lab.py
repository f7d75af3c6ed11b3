"""The Lab owns every namespace and process a run creates, and removes them.

Names carry a per-run prefix ``mptl-<id>-`` so that two labs never collide and
`mptcplab cleanup` can tell a dead run's leftovers from a live run: each live
lab holds an exclusive flock on ``/run/mptcplab/<id>.lock``; a lock that can
be taken belongs to a run that is gone.
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable
from types import TracebackType

from pyroute2 import netns as pr_netns

from . import netns
from .errors import EnvironmentProblem, interrupt_handler

log = logging.getLogger(__name__)

PREFIX = "mptl-"
RUN_DIR = "/run/mptcplab"


def lock_path(run_id: str) -> str:
    return os.path.join(RUN_DIR, f"{run_id}.lock")


class Lab:
    """Context manager: `with Lab() as lab: ns = lab.netns("cli")`."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(3)
        self.prefix = f"{PREFIX}{self.run_id}-"
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen] = []
        self._cleanups: list[Callable[[], None]] = []
        self._lock_fd: int | None = None
        self._old_handlers: dict[int, object] = {}
        self.closed = False

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> "Lab":
        if os.geteuid() != 0:
            raise EnvironmentProblem("the lab needs root (CAP_NET_ADMIN) to create network namespaces", "run it with sudo")
        os.makedirs(RUN_DIR, exist_ok=True)
        self._lock_fd = os.open(lock_path(self.run_id), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        if threading.current_thread() is threading.main_thread():
            handler = interrupt_handler()  # a forked helper must never tear the lab down
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Tear down in reverse order; signals wait until teardown is complete."""
        if self.closed:
            return
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for fn in reversed(self._cleanups):
                try:
                    fn()
                except Exception as e:  # teardown must go on
                    log.warning("cleanup step failed: %s", e)
            for proc in self._processes:
                _stop_process(proc)
            pids = _pids_by_netns()
            for name in reversed(self._namespaces):
                remove_netns(name, pids)
            if self._lock_fd is not None:
                try:
                    os.unlink(lock_path(self.run_id))
                except FileNotFoundError:
                    pass
                os.close(self._lock_fd)
                self._lock_fd = None
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self.closed = True
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    # -- resources -------------------------------------------------------
    def netns(self, role: str) -> str:
        name = self.prefix + role
        self._namespaces.append(name)  # first, so an interrupt inside create() still removes it
        netns.create(name)
        return name

    def add_process(self, proc: subprocess.Popen) -> subprocess.Popen:
        self._processes.append(proc)
        return proc

    def on_close(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pids_by_netns() -> dict[str, list[int]]:
    try:
        return pr_netns.ns_pids()
    except OSError:
        return {}


def remove_netns(name: str, pids: dict[str, list[int]] | None = None) -> bool:
    """Kill what still runs inside `name`, then remove it. True if it existed."""
    if pids is None:
        pids = _pids_by_netns()
    for pid in pids.get(name, []):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        netns.remove(name)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warning("cannot remove netns %s: %s", name, e)
        return False
