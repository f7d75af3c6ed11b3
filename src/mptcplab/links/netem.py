"""Delay, jitter and loss with netem; rate and the bottleneck queue with a tbf under it.

Per direction, like the tbf backend: upload is emulated on the client's path
interface, download on the router's. netem is the root qdisc (delay, jitter,
random or Gilbert-Elliott loss) and a tbf child does rate and tail-drop, so
the queue limit means what the scenario says instead of also holding the
packets netem is delaying. Configured with iproute2's ``tc`` inside the
namespace because pyroute2's netem support lacks ``loss gemodel`` and the
delay distribution tables; events are ``tc qdisc change``.

Seeded draws: netem draws its losses, jitter and reordering from a PRNG of
its own, which kernels since Linux 6.6 let a request seed
(TCA_NETEM_PRNG_SEED; a change without it keeps the stream going). iproute2
6.1's ``tc`` cannot set it, and neither can pyroute2 0.9's netem encoder, so
after ``tc`` adds the qdisc the lab reads its options back over rtnetlink
and sends them unchanged plus the seed (`seed_netem`): with the run's seed
every repetition draws the same losses in every boot (repetition i: seed
`[run] seed` + i, mixed with the path and direction so no two qdiscs share a
stream). A kernel whose netem does not report a seed is run unseeded and the
run says so (`describe()["prng"]`, a note); `seed = "random"` leaves netem
its own random seed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
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


# rtnetlink, as <linux/netlink.h>, <linux/rtnetlink.h> and <linux/pkt_sched.h> define it
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_NETEM_PAD, TCA_NETEM_PRNG_SEED = 9, 14  # the seed: since Linux 6.6
NETEM_QOPT_LEN = 24  # struct tc_netem_qopt: six u32, before netem's attributes in TCA_OPTIONS
ROOT_HANDLE = 0x10000  # "1:", where _configure puts netem
#: why a run's netem was not seeded, for its note
UNSEEDED_KERNEL = ("this kernel's netem takes no seed (TCA_NETEM_PRNG_SEED, Linux 6.6 and later): its losses, jitter "
                   "and reordering are drawn from the kernel's randomness, so repetitions do not repeat draw for draw")


def _attrs(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Netlink attributes in `data`: (type without its flags, payload, the attribute's bytes as sent, padded)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        end = pos + ((length + 3) & ~3)
        out.append((kind & 0x3FFF, data[pos + 4:pos + length], data[pos:end]))
        pos = end
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _request(sock: socket.socket, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
    """Send one rtnetlink request, read its answers until DONE or its ACK: [(message type, payload)]. OSError on an error."""
    seq = int.from_bytes(os.urandom(4), "little") or 1
    sock.send(struct.pack("=LHHLL", 16 + len(body), kind, flags, seq, 0) + body)
    out: list[tuple[int, bytes]] = []
    while True:
        data = sock.recv(1 << 16)
        pos = 0
        while pos + 16 <= len(data):
            length, mtype, _, mseq, _ = struct.unpack_from("=LHHLL", data, pos)
            payload = data[pos + 16:pos + length]
            pos += (length + 3) & ~3
            if mseq != seq:
                continue
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", payload)
                if code:
                    raise OSError(-code, os.strerror(-code))
                return out  # the ACK
            out.append((mtype, payload))


def netem_prng_seed_of(options: bytes) -> int | None:
    """The PRNG seed a netem qdisc's options (TCA_OPTIONS as dumped) report; None on a kernel without one (before 6.6)."""
    for kind, payload, _ in _attrs(options[NETEM_QOPT_LEN:]):
        if kind == TCA_NETEM_PRNG_SEED and len(payload) >= 8:
            return struct.unpack_from("=Q", payload)[0]
    return None


def _root_netem(sock: socket.socket, ifindex: int) -> bytes | None:
    """The TCA_OPTIONS of the netem qdisc at 1: on interface `ifindex`, as the kernel dumps them, or None."""
    for mtype, payload in _request(sock, RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BxxxiIII", 0, ifindex, 0, 0, 0)):
        if mtype != RTM_NEWQDISC or len(payload) < 20:
            continue
        _, index, handle, _, _ = struct.unpack_from("=BxxxiIII", payload)
        attrs = {k: p for k, p, _ in _attrs(payload[20:])}
        if index == ifindex and handle == ROOT_HANDLE and attrs.get(TCA_KIND, b"").rstrip(b"\0") == b"netem":
            return attrs.get(TCA_OPTIONS)
    return None


def seed_netem(ns: str | None, dev: str, seed: int) -> bool:
    """Seed the PRNG of the netem qdisc at 1: on `dev` in namespace `ns` (None: this one) with `seed` (unsigned, 64 bits).

    Its options are read back and sent again unchanged (a change keeps the
    delay distribution it is not sent) with TCA_NETEM_PRNG_SEED added, then
    read back once more to check. False, with nothing changed, when the
    kernel's netem reports no seed (before Linux 6.6). RunError when the
    qdisc is missing or the kernel refuses the change.
    """
    from .. import netns

    with netns.inside(ns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)  # bound to `ns` for its life
        ifindex = socket.if_nametoindex(dev)
    with sock:
        sock.bind((0, 0))
        try:
            options = _root_netem(sock, ifindex)
            if options is None:
                raise RunError(f"no netem qdisc on {dev} in {ns} to seed")
            if netem_prng_seed_of(options) is None:
                return False
            kept = b"".join(raw for kind, _, raw in _attrs(options[NETEM_QOPT_LEN:]) if kind not in (TCA_NETEM_PAD, TCA_NETEM_PRNG_SEED))
            body = (struct.pack("=BxxxiIII", 0, ifindex, ROOT_HANDLE, 0xFFFFFFFF, 0) + _attr(TCA_KIND, b"netem\0")
                    + _attr(TCA_OPTIONS, options[:NETEM_QOPT_LEN] + kept + _attr(TCA_NETEM_PRNG_SEED, struct.pack("=Q", seed))))
            _request(sock, RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_ACK, body)  # `tc qdisc change`: no CREATE, no REPLACE
            after = _root_netem(sock, ifindex)
        except OSError as e:
            raise RunError(f"seeding netem on {dev} in {ns}: {e.strerror or e}") from None
    if after is None or netem_prng_seed_of(after) != seed:
        raise RunError(f"seeding netem on {dev} in {ns}: the kernel did not keep the seed")
    return True


def netem_seed(repetition_seed: int, path: str, direction: str) -> int:
    """The seed of one path direction's netem in a repetition drawing `repetition_seed`: a 64-bit hash of the three,
    so every qdisc of a repetition has a stream of its own and the same one in every boot."""
    digest = hashlib.sha256(f"{repetition_seed}/{path}/{direction}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


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
        #: whether netem's PRNG was seeded: None until start(), then True or False (the kernel takes no seed, or
        #: seed = "random")
        self.seeded: bool | None = None

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
            if self.seed is not None and self.seeded is not False:
                self.seeded = seed_netem(*self._where(path, direction), netem_seed(self.seed, path, direction))
        if self.seeded is None:
            self.seeded = False

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

    def notes(self) -> list[str]:
        return [UNSEEDED_KERNEL] if self.seeded is False and self.seed is not None else []

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "paths": {}}
        for path, direction, spec in specs(self.scenario):
            out["paths"].setdefault(path, {})[direction] = {"netem": " ".join(netem_args(spec)), "tbf": " ".join(tbf_args(spec))}
        if self.seeded:
            out["prng"] = {"seeded": True, "seeds": "repetition seed ([run] seed + repetition index), hashed with the path "
                                                    "and direction (links/netem.py netem_seed)"}
        elif self.seeded is False:
            out["prng"] = {"seeded": False, "why": "seed = random" if self.seed is None else UNSEEDED_KERNEL}
        return out


def require_netem() -> None:
    """For callers that insist on netem (the guest tests): one clear line when the kernel lacks it."""
    from ..capabilities import netem_available

    if not netem_available():
        raise UnsupportedError("this kernel has no sch_netem", "boot a kernel with CONFIG_NET_SCH_NETEM (mptcplab run --kernel K)")
