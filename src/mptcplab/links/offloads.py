"""Offloads that merge or split frames must be off on emulated links.

With TSO/GSO a 64 KiB super-frame meets the emulator (or tbf) as one unit:
rate and loss apply to the wrong thing and a tail-drop queue drops whole
bursts. A userspace forwarder also needs tx checksums computed in software,
or the receiver sees checksum errors. Every backend gets the same settings
so their results stay comparable.
"""
from __future__ import annotations

from pyroute2.ethtool import Ethtool

from .. import netns
from ..errors import RunError

OFF = (
    "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-generic-segmentation",
    "generic-receive-offload", "rx-gro-list", "rx-udp-gro-forwarding",
    "tx-checksum-ip-generic", "large-receive-offload",
)


def disable(ns: str, ifnames: list[str]) -> None:
    """Turn OFF offloads on `ifnames` in `ns`, then check they really are off."""
    with netns.inside(ns):
        eth = Ethtool()
        try:
            for ifname in ifnames:
                feats = eth.get_features(ifname)
                for name in OFF:
                    if name in feats.features and feats.features[name].enable:
                        feats.features[name].enable = False
                eth.set_features(ifname, feats)
                still = [n for n in OFF if n in (f := eth.get_features(ifname).features) and f[n].enable]
                if still:
                    raise RunError(f"cannot turn off {', '.join(still)} on {ifname}: rate and loss would be wrong")
        finally:
            eth.close()


def enabled(ns: str, ifname: str) -> dict[str, bool]:
    with netns.inside(ns):
        eth = Ethtool()
        try:
            feats = eth.get_features(ifname).features
            return {n: feats[n].enable for n in OFF if n in feats}
        finally:
            eth.close()
