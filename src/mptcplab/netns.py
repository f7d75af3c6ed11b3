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
    from pyroute2 import IPRoute

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
    from pyroute2 import IPRoute

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


def netstat(ns: str | None, prefix: str = "MPTcpExt") -> dict[str, int]:
    """Counters of /proc/net/netstat in `ns` whose group is `prefix`, named as nstat does."""
    with inside(ns), open("/proc/thread-self/net/netstat") as f:
        lines = f.read().splitlines()
    group = prefix + ":"
    out: dict[str, int] = {}
    for header, values in zip(lines[::2], lines[1::2]):
        if header.startswith(group):
            names = header.split()[1:]
            nums = values.split()[1:]
            out.update({prefix + n: int(v) for n, v in zip(names, nums)})
    return out


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []
