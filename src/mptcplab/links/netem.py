"""Delay, jitter and loss with netem; rate and the bottleneck queue with a tbf under it.

Per direction, like the tbf backend: upload is emulated on the client's path
interface, download on the router's. netem is the root qdisc (delay, jitter,
random or Gilbert-Elliott loss) and a tbf child does rate and tail-drop, so
the queue limit means what the scenario says instead of also holding the
packets netem is delaying. Configured with iproute2's ``tc`` inside the
namespace because pyroute2's netem support lacks ``loss gemodel`` and the
delay distribution tables; events are ``tc qdisc change``.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Any, ClassVar

from ..errors import RunError, UnsupportedError
from ..scenario import Event, GilbertElliott, LinkSpec, Scenario
from .base import TC_MTU, LinkBackend, queue_limit_bytes, specs
from .tbf import tbf_params


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.6g}%"


def netem_args(spec: LinkSpec) -> list[str]:
    """The netem part of one direction, as tc arguments."""
    args = ["limit", str(netem_limit(spec))]
    if spec.delay_s or spec.jitter_s:
        args += ["delay", f"{spec.delay_s * 1e6:.0f}us"]
        if spec.jitter_s:
            args += [f"{spec.jitter_s * 1e6:.0f}us"]
            if spec.jitter_distribution != "uniform":  # uniform is netem's own default
                args += ["distribution", spec.jitter_distribution]
    if isinstance(spec.loss, GilbertElliott):
        ge = spec.loss
        args += ["loss", "gemodel", _pct(ge.p), _pct(ge.r), _pct(ge.loss_bad), _pct(ge.loss_good)]
    elif spec.loss:
        args += ["loss", "random", _pct(spec.loss)]
    return args


def netem_limit(spec: LinkSpec) -> int:
    """Packets netem may hold while delaying them: twice the bandwidth-delay product, at least 1000."""
    rate = spec.rate_bps or 0
    return max(1000, int(2 * rate / 8 * (spec.delay_s + spec.jitter_s) / TC_MTU) + 100)


def tbf_args(spec: LinkSpec) -> list[str]:
    assert spec.rate_bps is not None
    p = tbf_params(spec.rate_bps, queue_limit_bytes(spec, spec.rate_bps))
    return ["rate", p["rate"], "burst", str(p["burst"]), "limit", str(p["limit"])]


class NetemLink(LinkBackend):
    name = "netem"
    # its rate and queue are a tbf child, so tbf's measured ceiling; netem itself is not measured above it
    max_path_rate_bps: ClassVar[float | None] = 2e9
    max_total_rate_bps: ClassVar[float | None] = 2e9
    ceiling_source: ClassVar[str] = "its rate is a tbf, measured to 2gbit per path: docs/scenario.md, Rate ceilings"

    @classmethod
    def cannot_emulate(cls, scenario: Scenario) -> str | None:
        for path, direction, spec in specs(scenario):
            if spec.trace:
                return f"path {path!r} ({direction}) replays a trace, which netem cannot do; use --link-backend wire"
            if spec.jitter_s and not spec.reorder:
                return (f"path {path!r} ({direction}) has jitter without reordering, but netem reorders the packets it jitters; "
                        "set reorder = true or use --link-backend wire")
        for event in scenario.events:
            if event.action == "set" and event.jitter and not scenario.path(event.path).reorder:
                return (f"the event at {event.at:g}s sets a jitter on path {event.path!r}, which has no reordering, but netem "
                        "reorders the packets it jitters; set the path's reorder = true or use --link-backend wire")
        if shutil.which("tc") is None:
            return "the netem backend needs iproute2's tc (apt-get install iproute2)"
        return None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current: dict[tuple[str, str], LinkSpec] = {}

    def _where(self, path: str, direction: str) -> tuple[str, str]:
        ports = self.ports(path)
        return (self.topo.client, ports.client_if) if direction == "up" else (self.topo.router, ports.router_if)

    def _tc(self, ns: str, *args: str) -> None:
        proc = subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            raise RunError(f"tc {' '.join(args)} in {ns}: {msg}")

    def _configure(self, path: str, direction: str, spec: LinkSpec, cmd: str) -> None:
        ns, dev = self._where(path, direction)
        self._tc(ns, "qdisc", cmd, "dev", dev, "root", "handle", "1:", "netem", *netem_args(spec))
        self._tc(ns, "qdisc", cmd, "dev", dev, "parent", "1:1", "handle", "10:", "tbf", *tbf_args(spec))
        self.current[(path, direction)] = spec

    def start(self) -> None:
        for path, direction, spec in specs(self.scenario):
            self._configure(path, direction, spec, "add")

    def apply(self, event: Event) -> None:
        if event.action in ("down", "up"):
            from .. import netns

            ports = self.ports(event.path)
            with netns.iproute(self.topo.router) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=ports.router_if)[0], state=event.action)
            return
        directions = ("up", "down") if event.direction == "both" else (event.direction,)
        changes = event.link_changes()
        for direction in directions:
            spec = self.current[(event.path, direction)].model_copy(update=changes)
            self._configure(event.path, direction, spec, "change")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "paths": {}}
        for path, direction, spec in specs(self.scenario):
            out["paths"].setdefault(path, {})[direction] = {"netem": " ".join(netem_args(spec)), "tbf": " ".join(tbf_args(spec))}
        return out


def require_netem() -> None:
    """For callers that insist on netem (the guest tests): one clear line when the kernel lacks it."""
    from ..capabilities import netem_available

    if not netem_available():
        raise UnsupportedError("this kernel has no sch_netem", "boot a kernel with CONFIG_NET_SCH_NETEM (mptcplab run --kernel K)")
