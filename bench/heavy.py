"""The machine-wide lock that benchmarks hold while they measure.

Timing on a 2-core machine is only meaningful when no other heavy work (other
benchmarks, QEMU guests, traffic-pushing tests) runs at the same moment; every
such job takes this lock (`flock /tmp/mptcplab-heavy.lock CMD` from a shell).
"""
from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

HEAVY_LOCK = "/tmp/mptcplab-heavy.lock"


@contextmanager
def heavy_lock() -> Iterator[None]:
    with open(HEAVY_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
