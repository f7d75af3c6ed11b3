"""Rate only: a token bucket on each direction of each path.

Upload (client -> server) is shaped on the client's interface, download on
the router's; both through pyroute2 tc. It works on any kernel with
sch_tbf but emulates no delay, jitter or loss.

Upload is thereby shaped on the sender's own egress, which has an artifact: a
drop at the local qdisc is seen by TCP at once and retransmitted, so upload
retransmission counts are far higher than on a real bottleneck (thousands per
6 MiB at 2 x 10 mbit, against about 20 through the wire backend). `auto`
prefers netem or wire for that reason.
"""
from __future__ import annotations

from typing import Any, ClassVar

from .. import netns
from ..scenario import Event, LinkSpec, Scenario
from .base import TC_MTU, LinkBackend, queue_limit_bytes, specs

HZ_FLOOR = 250  # the token bucket must hold at least one tick's worth of bytes


def tbf_params(rate_bps: float, limit_bytes: int) -> dict[str, Any]:
    burst = max(2 * TC_MTU, int(rate_bps / 8 / HZ_FLOOR) + TC_MTU)
    return {"rate": f"{int(rate_bps)}bit", "burst": burst, "limit": limit_bytes + burst}


class TbfLink(LinkBackend):
    name = "tbf"
    # docs/scenario.md, "Rate ceilings": TCP uploads through tbf reached their rate within 0.2% up to 2 gbit
    # on one path and 2 x 1 gbit on two; 3 gbit fell 2.9% short on one path, 2 x 1.5 gbit 21% (the
    # senders' CPU on a 2-vCPU VM, offloads off)
    max_path_rate_bps: ClassVar[float | None] = 2e9
    max_total_rate_bps: ClassVar[float | None] = 2e9
    ceiling_source: ClassVar[str] = "measured on a 2-vCPU VM: docs/scenario.md, Rate ceilings"

    @classmethod
    def cannot_emulate(cls, scenario: Scenario) -> str | None:
        for path, direction, spec in specs(scenario):
            asked = [k for k, v in (("delay", spec.delay_s), ("jitter", spec.jitter_s), ("loss", spec.has_loss), ("trace", spec.trace)) if v]
            if asked:
                return f"path {path!r} ({direction}) asks for {', '.join(asked)}, which the tbf backend cannot emulate"
        for event in scenario.events:
            if event.action == "set" and (event.delay is not None or event.loss is not None or event.jitter is not None):
                return f"an event at {event.at:g}s sets delay, jitter or loss, which the tbf backend cannot emulate"
        return None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: each direction's spec as events left it (a `set` of the queue keeps the rate, and the other way round)
        self.current: dict[tuple[str, str], LinkSpec] = {(p, d): spec for p, d, spec in specs(self.scenario)}

    def _where(self, path: str, direction: str) -> tuple[str, str]:
        ports = self.ports(path)
        if direction == "up":
            return self.topo.client, ports.client_if
        return self.topo.router, ports.router_if

    def _set(self, changes: list[tuple[str, str, LinkSpec]], cmd: str) -> None:
        """Apply (path, direction, spec) changes (its rate and queue), one netlink socket per namespace."""
        by_ns: dict[str, list[tuple[str, str, LinkSpec]]] = {}
        for path, direction, spec in changes:
            by_ns.setdefault(self._where(path, direction)[0], []).append((path, direction, spec))
        for ns, items in by_ns.items():
            with netns.iproute(ns) as ipr:
                for path, direction, spec in items:
                    rate = spec.rate_bps
                    assert rate is not None
                    idx = ipr.link_lookup(ifname=self._where(path, direction)[1])[0]
                    ipr.tc(cmd, "tbf", index=idx, handle="1:", **tbf_params(rate, queue_limit_bytes(spec, rate)))
                    self.current[(path, direction)] = spec

    def start(self) -> None:
        self._set([(path, direction, spec) for path, direction, spec in specs(self.scenario) if spec.rate_bps], "add")

    def apply(self, event: Event) -> None:
        directions = ("up", "down") if event.direction == "both" else (event.direction,)
        if event.action in ("down", "up"):
            # a lost interface: the router side goes down, the client sees no carrier
            ports = self.ports(event.path)
            with netns.iproute(self.topo.router) as ipr:
                idx = ipr.link_lookup(ifname=ports.router_if)[0]
                ipr.link("set", index=idx, state=event.action)
            return
        changes = event.link_changes()
        if changes:
            self._set([(event.path, d, self.current[(event.path, d)].model_copy(update=changes)) for d in directions], "change")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "paths": {}}
        for path, direction, spec in specs(self.scenario):
            assert spec.rate_bps is not None
            out["paths"].setdefault(path, {})[direction] = tbf_params(spec.rate_bps, queue_limit_bytes(spec, spec.rate_bps))
        return out
