"""Entering network namespaces per thread, and the per-namespace /proc views.

setns(2) moves only the calling thread, so workers can live in different
namespaces inside one process; sockets keep the namespace they were created in.
/proc/sys/net and /proc/thread-self/net resolve against the calling thread.
"""
from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute  # the submodule: see executors/guest_main.py on import time

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the body in namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


MS_REC, MS_SHARED, MS_BIND, MNT_DETACH = 0x4000, 1 << 20, 0x1000, 2


def _mount(src: bytes, target: bytes, fstype: bytes, flags: int) -> int:
    return _libc.mount(src, target, fstype, flags, None)


def create(name: str) -> None:
    """A new named namespace, as `ip netns add` does it (ported from iproute2).

    Done in the calling thread (unshare, bind-mount, setns back) instead of
    pyroute2's forked helper: 8 ms less per namespace, a third of building a lab.
    """
    os.makedirs(NETNS_DIR, exist_ok=True)
    rundir = NETNS_DIR.encode()
    if _mount(b"", rundir, b"none", MS_SHARED | MS_REC) != 0:
        if _mount(rundir, rundir, b"none", MS_BIND | MS_REC) != 0 or _mount(b"", rundir, b"none", MS_SHARED | MS_REC) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot make {NETNS_DIR} a shared mount: {os.strerror(err)}")
    path = os.path.join(NETNS_DIR, name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            os.unlink(path)
            raise OSError(err, f"unshare: {os.strerror(err)}")
        try:
            if _mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND) != 0:
                err = ctypes.get_errno()
                os.unlink(path)
                raise OSError(err, f"bind mount of {path}: {os.strerror(err)}")
        finally:
            _setns(own)
    finally:
        os.close(own)


def remove(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    _libc.umount2(path.encode(), MNT_DETACH)
    os.unlink(path)


def enter(name: str) -> None:
    """Move the calling thread into `name` for good (forwarder processes)."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextmanager
def iproute(name: str | None) -> Iterator["IPRoute"]:
    """An rtnetlink socket in `name`, used from this thread only.

    pyroute2's NetNS forks a helper to open its socket; creating IPRoute
    inside the namespace gives the same socket without a fork.
    """
    from pyroute2.iproute.linux import IPRoute  # the submodule: see executors/guest_main.py on import time

    with inside(name):
        ipr = IPRoute()
        try:
            ipr.link_lookup(ifname="lo")  # opens the socket now, while in `name`
        except BaseException:
            ipr.close()
            raise
    try:
        yield ipr
    finally:
        ipr.close()


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def sysctl_read(ns: str | None, key: str) -> str:
    with inside(ns), open(_sysctl_path(key)) as f:
        return f.read().strip()


def sysctl_write(ns: str | None, key: str, value: str | int) -> None:
    with inside(ns), open(_sysctl_path(key), "w") as f:
        f.write(str(value))


def sysctls(ns: str | None, prefix: str) -> dict[str, str]:
    """Every sysctl under `prefix` (e.g. 'net.mptcp') as seen from `ns`."""
    out: dict[str, str] = {}
    with inside(ns):
        root = _sysctl_path(prefix)
        for dirpath, _dirs, files in os.walk(root):
            for fname in sorted(files):
                path = os.path.join(dirpath, fname)
                key = path.removeprefix("/proc/sys/").replace("/", ".")
                try:
                    with open(path) as f:
                        out[key] = f.read().strip()
                except OSError:
                    continue
    return out


def netstat(ns: str | None, prefix: str | tuple[str, ...] = "MPTcpExt") -> dict[str, int]:
    """Counters of /proc/net/netstat in `ns` whose group is `prefix` (or one of several, in one read), named as
    nstat does: group and counter joined (MPTcpExtMPTCPRetrans, TcpExtBeyondWindow)."""
    with inside(ns), open("/proc/thread-self/net/netstat") as f:
        lines = f.read().splitlines()
    groups = (prefix,) if isinstance(prefix, str) else prefix
    out: dict[str, int] = {}
    for header, values in zip(lines[::2], lines[1::2]):
        group = header.split(":", 1)[0]
        if group in groups:
            names = header.split()[1:]
            nums = values.split()[1:]
            out.update({group + n: int(v) for n, v in zip(names, nums)})
    return out


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []
