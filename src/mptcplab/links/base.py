"""One interface for every way of emulating a path: tbf, netem, wire.

A backend is chosen per run (``auto`` or by name), checks before anything is
built whether it can emulate the scenario, then attaches to the built
topology and applies path events while the run goes on.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..lab import Lab
from ..scenario import Event, LinkSpec, Scenario
from ..topology import PathPorts, Topology

TC_MTU = 1514  # an Ethernet frame as tc counts it
#: Default bottleneck buffer, as time at the rate. Shallower buffers on paths
#: without delay made Linux TCP retransmit up to half of what it sent (tbf, 10 mbit).
DEFAULT_QUEUE_S = 0.1


class LinkBackend(ABC):
    name: ClassVar[str]
    #: True when the backend forwards frames itself between two halves of a path.
    needs_emulator_ns: ClassVar[bool] = False

    def __init__(self, lab: Lab, topo: Topology, scenario: Scenario) -> None:
        self.lab = lab
        self.topo = topo
        self.scenario = scenario

    @classmethod
    def unsupported(cls, scenario: Scenario) -> str | None:
        """Why this backend cannot run `scenario`, or None when it can."""
        return None

    @abstractmethod
    def start(self) -> None:
        """Attach the emulation to every path, both directions."""

    @abstractmethod
    def apply(self, event: Event) -> None:
        """Change a path now (called at the event's time)."""

    def stop(self) -> None:
        """Detach; the lab removes namespaces anyway, so this may do nothing."""

    def stats(self) -> dict[str, Any]:
        """The emulator's own counters for the run so far ({} when it keeps none)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Parameters to record with the result (what was really configured)."""
        return {"backend": self.name}

    def ports(self, name: str) -> PathPorts:
        return next(p for p in self.topo.paths if p.name == name)


def specs(scenario: Scenario) -> list[tuple[str, str, LinkSpec]]:
    """(path, direction, spec) for every path direction of the scenario."""
    return [(p.name, d, p.link(d)) for p in scenario.paths for d in ("up", "down")]


def queue_limit_bytes(spec: LinkSpec, rate_bps: float, default_s: float = DEFAULT_QUEUE_S, min_packets: int = 20) -> int:
    """The tail-drop limit in bytes; by default 100 ms at the rate, at least 20 frames."""
    q = spec.queue
    if q is None:
        return max(int(rate_bps / 8 * default_s), min_packets * TC_MTU)
    if q.packets is not None:
        return q.packets * TC_MTU
    if q.bytes is not None:
        return max(q.bytes, TC_MTU)
    assert q.time_s is not None
    return max(int(rate_bps / 8 * q.time_s), TC_MTU)
