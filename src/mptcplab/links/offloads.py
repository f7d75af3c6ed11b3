"""Offloads that merge or split frames must be off on emulated links.

With TSO/GSO a 64 KiB super-frame meets the emulator (or tbf) as one unit:
rate and loss apply to the wrong thing and a tail-drop queue drops whole
bursts. A userspace forwarder also needs tx checksums computed in software,
or the receiver sees checksum errors. Every backend gets the same settings
so their results stay comparable.

This uses the four classic ethtool ioctls (one syscall each) rather than
pyroute2's Ethtool, whose feature-string lookups made turning offloads off
the slowest step of building a lab (58 of 157 ms, profiled).
"""
from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

from .. import netns
from ..errors import EnvironmentProblem

SIOCETHTOOL = 0x8946
#: feature: (get command, set command), from include/uapi/linux/ethtool.h
FEATURES = {
    "tx-checksumming": (0x16, 0x17),
    "tcp-segmentation-offload": (0x1E, 0x1F),
    "generic-segmentation-offload": (0x23, 0x24),
    "generic-receive-offload": (0x2B, 0x2C),
}


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


def _ethtool(sock: socket.socket, ifname: str, cmd: int, value: int = 0) -> int:
    """One ETHTOOL_G*/S* ioctl with a struct ethtool_value; returns its data."""
    val = _EthtoolValue(cmd, value)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(val))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return val.data


def disable(ns: str, ifnames: list[str]) -> None:
    """Turn offloads off on `ifnames` in `ns`, then check they really are off."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for ifname in ifnames:
            for name, (get, set_) in FEATURES.items():
                try:
                    _ethtool(sock, ifname, set_, 0)
                except OSError as e:
                    raise EnvironmentProblem(f"cannot turn off {name} on {ifname}: {e.strerror}") from None
            still = [n for n, (get, _) in FEATURES.items() if _ethtool(sock, ifname, get)]
            if still:
                raise EnvironmentProblem(f"{', '.join(still)} still on for {ifname}: rate and loss would be wrong")


def enabled(ns: str, ifname: str) -> dict[str, bool]:
    """Which of the offloads are on (all False on a lab path interface)."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        return {n: bool(_ethtool(sock, ifname, get)) for n, (get, _) in FEATURES.items()}
