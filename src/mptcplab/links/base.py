"""One interface for every way of emulating a path: tbf, netem, wire.

A backend is chosen per run (``auto`` or by name), checks before anything is
built whether it can emulate the scenario, then attaches to the built
topology and applies path events while the run goes on.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..lab import Lab
from ..scenario import DEFAULT_QUEUE_S, TC_MTU, Event, LinkSpec, Scenario, default_queue_bytes  # noqa: F401 (re-exported)
from ..topology import PathPorts, Topology
from ..units import format_rate


class LinkBackend(ABC):
    name: ClassVar[str]
    #: True when the backend forwards frames itself between two halves of a path.
    needs_emulator_ns: ClassVar[bool] = False
    #: The highest rate (bit/s) one path direction is emulated faithfully at, as measured; None: no known ceiling.
    max_path_rate_bps: ClassVar[float | None] = None
    #: The highest sum over all paths of the rate in the workload's direction (bit/s); None: no known ceiling.
    max_total_rate_bps: ClassVar[float | None] = None
    #: Where the ceiling was measured: said when a rate is refused.
    ceiling_source: ClassVar[str] = ""
    #: True when its random draws (loss, jitter) do not follow `seed` on this machine's kernel (under UML with time
    #: travel every draw in the guest does): `run --seed` says so instead of letting the seed look like it mattered.
    unseeded_draws: ClassVar[bool] = False
    #: The repetition's seed (`[run] seed` + the repetition's index; None with seed = "random"), set by the runner
    #: before start(): a backend that draws random numbers in the kernel (netem) seeds them from it.
    seed: int | None = None

    def __init__(self, lab: Lab, topo: Topology, scenario: Scenario) -> None:
        self.lab = lab
        self.topo = topo
        self.scenario = scenario

    @classmethod
    def unsupported(cls, scenario: Scenario) -> str | None:
        """Why this backend cannot run `scenario` (one line), or None when it can.

        First what it cannot emulate at all (`cannot_emulate`), then rates
        above its measured ceiling (`above_ceiling`). The runner raises
        UnsupportedError (exit 3) with the reason, before anything is built.
        """
        return cls.cannot_emulate(scenario) or cls.above_ceiling(scenario)

    @classmethod
    def cannot_emulate(cls, scenario: Scenario) -> str | None:
        """What of the scenario (a property, an event) this backend has no way to emulate, or None."""
        return None

    @classmethod
    def above_ceiling(cls, scenario: Scenario) -> str | None:
        """A rate of the scenario above this backend's ceiling, naming the ceiling and what else can run it; or None.

        Every rate a path direction is ever asked for counts: its own and
        those of `set` events. The sum is over paths, in the workload's data
        direction (upload: up; download: down), of each path's highest rate.
        """
        excess = cls._ceiling_excess(scenario)
        if excess is None:
            return None
        from . import BACKENDS, backend_class  # the registry imports this module

        others = []
        for name in BACKENDS:
            other = backend_class(name)
            if other is None or other is cls or other.cannot_emulate(scenario) or other._ceiling_excess(scenario):
                continue
            notes = (["a kernel with sch_netem"] if name == "netem" else []) + (
                [f"up to {format_rate(other.max_path_rate_bps)} per path"] if other.max_path_rate_bps else [])
            others.append(f"--link-backend {name}" + (f" ({', '.join(notes)})" if notes else ""))
        source = f" ({cls.ceiling_source})" if cls.ceiling_source else ""
        instead = f"lower the rate, or use {' or '.join(others)}" if others else "lower the rate: no other link backend can run this scenario"
        return f"{excess}{source}; {instead}"

    @classmethod
    def _ceiling_excess(cls, scenario: Scenario) -> str | None:
        """What exceeds the ceiling, or None."""
        highest = peak_rates(scenario)
        where = f"the {cls.name} backend's ceiling"
        if cls.max_path_rate_bps is not None:
            for (path, direction), bps in highest.items():
                if bps > cls.max_path_rate_bps:
                    return (f"path {path!r} ({direction}) asks for {format_rate(bps)}, above {where} of "
                            f"{format_rate(cls.max_path_rate_bps)} per path")
        if cls.max_total_rate_bps is not None:
            # the direction the workload's data takes; a workload without one (rr) or with "both" loads both
            flow = getattr(scenario.workload, "direction", "both")
            for data in (["up"] if flow == "upload" else ["down"] if flow == "download" else ["up", "down"]):
                total = sum(bps for (_, direction), bps in highest.items() if direction == data)
                if total > cls.max_total_rate_bps:
                    return (f"the paths ask for {format_rate(total)} in all ({data}load), above {where} of "
                            f"{format_rate(cls.max_total_rate_bps)} summed over paths")
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

    def notes(self) -> list[str]:
        """What a reader of the run must know about this emulation once started (recorded as environment notes)."""
        return []

    def ports(self, name: str) -> PathPorts:
        return next(p for p in self.topo.paths if p.name == name)


def peak_rates(scenario: Scenario) -> dict[tuple[str, str], float]:
    """(path, direction) -> the highest fixed rate (bit/s) it is ever asked for, its own or a `set` event's.

    Directions replaying a trace without any fixed rate are left out (Scenario.peak_rates).
    """
    return scenario.peak_rates()


def specs(scenario: Scenario) -> list[tuple[str, str, LinkSpec]]:
    """(path, direction, spec) for every path direction of the scenario."""
    return [(p.name, d, p.link(d)) for p in scenario.paths for d in ("up", "down")]


def queue_limit_bytes(spec: LinkSpec, rate_bps: float) -> int:
    """The tail-drop limit in bytes at `rate_bps`; without a `queue`, scenario.default_queue_bytes (100 ms at the
    rate, at least 20 frames, those at most 200 ms, never fewer than 4 frames)."""
    q = spec.queue
    if q is None:
        return default_queue_bytes(rate_bps)
    if q.packets is not None:
        return q.packets * TC_MTU
    if q.bytes is not None:
        return max(q.bytes, TC_MTU)
    assert q.time_s is not None
    return max(int(rate_bps / 8 * q.time_s), TC_MTU)
