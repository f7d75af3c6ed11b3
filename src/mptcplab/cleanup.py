"""Find and remove what crashed or killed lab runs left behind.

A namespace ``mptl-<id>-<role>`` belongs to a live run only while that run
holds the flock on its lock file; anything else is a leftover.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import netns
from .lab import PREFIX, RUN_DIR, _pids_by_netns, lock_path, remove_netns


@dataclass
class CleanupReport:
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    lock_files: list[str] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)  # a killed guest run's (run --kernel, matrix; QEMU or UML)
    live: list[str] = field(default_factory=list)


def run_alive(run_id: str) -> bool:
    """The lock is held AND the process that took it still exists.

    A child forked by the run (and not exec'd) inherits the locked file
    description, so a held lock alone can outlive a SIGKILLed run.
    """
    try:
        fd = os.open(lock_path(run_id), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _owner_alive(fd)
    finally:
        os.close(fd)
    return False


def _owner_alive(fd: int) -> bool:
    try:
        pid = int(os.pread(fd, 32, 0).split()[0])
    except (ValueError, IndexError, OSError):
        return True  # cannot tell: never remove what may be live
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_id(ns: str) -> str:
    return ns.removeprefix(PREFIX).split("-", 1)[0]


def cleanup(include_live: bool = False) -> CleanupReport:
    report = CleanupReport()
    pids = _pids_by_netns()
    for ns in netns.list_netns():
        if not ns.startswith(PREFIX):
            continue
        run_id = _run_id(ns)
        if run_id != "probe" and not include_live and run_alive(run_id):
            report.live.append(ns)
            continue
        report.processes += [p for p in pids.get(ns, []) if p != os.getpid()]
        if remove_netns(ns, pids):
            report.namespaces.append(ns)
    from .executors.uml import work_root

    guest_dirs = [*Path(tempfile.gettempdir()).glob("mptcplab-guest-*"), *Path(work_root()).glob("mptcplab-uml-*")]
    for tmp in sorted(set(guest_dirs)):
        run_id = tmp.name.split("-")[2]
        if include_live or not run_alive(run_id):
            shutil.rmtree(tmp, ignore_errors=True)
            report.temp_dirs.append(str(tmp))
    if os.path.isdir(RUN_DIR):
        for fname in sorted(os.listdir(RUN_DIR)):
            if fname.endswith(".lock") and (include_live or not run_alive(fname[:-5])):
                os.unlink(os.path.join(RUN_DIR, fname))
                report.lock_files.append(fname)
    return report
