"""Rate only: a token bucket on each direction of each path, in a box in the middle.

Each path is cut in two by the emulator namespace, where a Linux bridge
joins the halves and a tbf shapes each direction on its way out of the
bridge: upload on the port facing the router, download on the port facing
the client. The bottleneck thereby sits where a real one does, between the
hosts. Shaping on the sender's own egress instead (what the kernel selftests
do, and what this backend did first) has an artifact: a drop at the local
qdisc is seen by TCP at once and retransmitted, which gave thousands of
upload retransmissions per 6 MiB at 2 x 10 mbit against about 20 through
the wire backend.

Built without an emulator namespace (the topology benchmark's 3-namespace
layout) it falls back to that sender-side placement. It works on any kernel
with sch_tbf and the bridge, all through pyroute2, but emulates no delay,
jitter or loss.
"""
from __future__ import annotations

from typing import Any, ClassVar

from .. import netns
from ..scenario import Event, Scenario
from .base import TC_MTU, LinkBackend, queue_limit_bytes, specs

HZ_FLOOR = 250  # the token bucket must hold at least one tick's worth of bytes


def tbf_params(rate_bps: float, limit_bytes: int) -> dict[str, Any]:
    burst = max(2 * TC_MTU, int(rate_bps / 8 / HZ_FLOOR) + TC_MTU)
    return {"rate": f"{int(rate_bps)}bit", "burst": burst, "limit": limit_bytes + burst}


class TbfLink(LinkBackend):
    name = "tbf"
    needs_emulator_ns: ClassVar[bool] = True

    @classmethod
    def unsupported(cls, scenario: Scenario) -> str | None:
        for path, direction, spec in specs(scenario):
            asked = [k for k, v in (("delay", spec.delay_s), ("jitter", spec.jitter_s), ("loss", spec.has_loss), ("trace", spec.trace)) if v]
            if asked:
                return f"path {path!r} ({direction}) asks for {', '.join(asked)}, which the tbf backend cannot emulate"
        for event in scenario.events:
            if event.action == "set" and (event.delay is not None or event.loss is not None):
                return f"an event at {event.at:g}s sets delay or loss, which the tbf backend cannot emulate"
        from ..capabilities import bridge_available

        if not bridge_available():
            return "the tbf backend bridges each path in a namespace of its own, and this kernel has no bridge (CONFIG_BRIDGE)"
        return None

    def _where(self, path: str, direction: str) -> tuple[str, str]:
        ports = self.ports(path)
        if self.topo.emulator:
            assert ports.emu_router_if and ports.emu_client_if
            return self.topo.emulator, ports.emu_router_if if direction == "up" else ports.emu_client_if
        if direction == "up":
            return self.topo.client, ports.client_if
        return self.topo.router, ports.router_if

    def _bridge(self, path: str, attach: bool) -> None:
        """Join (or part) the two halves of a path; parted, the path is a silent blackhole."""
        ports = self.ports(path)
        assert self.topo.emulator
        with netns.iproute(self.topo.emulator) as ipr:
            bridge = f"b{ports.index}"
            if attach and not ipr.link_lookup(ifname=bridge):
                ipr.link("add", ifname=bridge, kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname=bridge)[0], state="up")
            master = ipr.link_lookup(ifname=bridge)[0] if attach else 0
            for ifname in (ports.emu_client_if, ports.emu_router_if):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], master=master)

    def _set(self, changes: list[tuple[str, str, float]], cmd: str) -> None:
        """Apply (path, direction, rate) changes, one netlink socket per namespace."""
        by_ns: dict[str, list[tuple[str, str, float]]] = {}
        for path, direction, rate in changes:
            by_ns.setdefault(self._where(path, direction)[0], []).append((path, direction, rate))
        for ns, items in by_ns.items():
            with netns.iproute(ns) as ipr:
                for path, direction, rate in items:
                    spec = self.scenario.path(path).link(direction)  # type: ignore[arg-type]
                    idx = ipr.link_lookup(ifname=self._where(path, direction)[1])[0]
                    ipr.tc(cmd, "tbf", index=idx, handle="1:", **tbf_params(rate, queue_limit_bytes(spec, rate)))

    def start(self) -> None:
        if self.topo.emulator:
            for p in self.topo.paths:
                self._bridge(p.name, attach=True)
        self._set([(path, direction, spec.rate_bps) for path, direction, spec in specs(self.scenario) if spec.rate_bps], "add")

    def apply(self, event: Event) -> None:
        directions = ("up", "down") if event.direction == "both" else (event.direction,)
        if event.action in ("down", "up") and self.topo.emulator:
            # as with the wire backend: frames vanish, neither end sees a carrier change
            self._bridge(event.path, attach=event.action == "up")
            return
        if event.action in ("down", "up"):
            # a lost interface: the router side goes down, the client sees no carrier
            ports = self.ports(event.path)
            with netns.iproute(self.topo.router) as ipr:
                idx = ipr.link_lookup(ifname=ports.router_if)[0]
                ipr.link("set", index=idx, state=event.action)
            return
        if event.rate is not None:
            self._set([(event.path, d, event.rate) for d in directions], "change")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "paths": {}}
        for path, direction, spec in specs(self.scenario):
            assert spec.rate_bps is not None
            out["paths"].setdefault(path, {})[direction] = tbf_params(spec.rate_bps, queue_limit_bytes(spec, spec.rate_bps))
        return out
