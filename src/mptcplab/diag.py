"""Every MPTCP subflow in a namespace, from the outside: inet_diag, as `ss -tni` reads it.

The socket workloads sample their own sending socket with MPTCP_FULL_INFO;
a program the lab did not write (the `command` workload) owns its sockets, so
the lab reads them through sock_diag instead. One inet_diag dump of the
namespace's TCP sockets returns every subflow's tcp_info, its congestion
control and its ULP info; a subflow of an MPTCP connection carries the ULP
name "mptcp" and its connection's local token, which groups subflows into
connections. A plain TCP socket (a program that did not use MPTCP) has no
ULP info and is counted apart, so a fallback is visible.

Connection-level counters (mptcp_diag, IPPROTO_MPTCP) are not read: pyroute2
0.9.7's inet_diag request cannot carry INET_DIAG_REQ_PROTOCOL, which a
protocol number above 255 needs. The connection's bytes in a sample are the
sums over its subflows (data reinjected on a second subflow counts on both).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from . import netns
from .mptcp import ConnectionSample, SubflowSample
from .probes import SubflowKey, SubflowSampler

INET_DIAG_INFO = 2
INET_DIAG_CONG = 4
INET_ULP_INFO_NAME = 1
INET_ULP_INFO_MPTCP = 3
MPTCP_SUBFLOW_ATTR_TOKEN_LOC = 2
TCP_LISTEN = 10
TCP_CLOSE = 7


def _attrs(raw: bytes) -> dict[int, bytes]:
    """Netlink attributes (type -> payload) of a flat attribute stream."""
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(raw):
        length, kind = struct.unpack_from("<HH", raw, i)
        if length < 4:
            break
        out[kind & 0x3FFF] = raw[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def mptcp_token(ulp_hex: str | None) -> int | None:
    """The local MPTCP token of a subflow from its INET_DIAG_ULP_INFO (pyroute2's hex string); None when not MPTCP."""
    if not ulp_hex:
        return None
    raw = bytes.fromhex(ulp_hex.replace(":", ""))
    ulp = _attrs(raw)
    if ulp.get(INET_ULP_INFO_NAME, b"").rstrip(b"\0") != b"mptcp":
        return None
    sub = _attrs(ulp.get(INET_ULP_INFO_MPTCP, b""))
    token = sub.get(MPTCP_SUBFLOW_ATTR_TOKEN_LOC)
    return struct.unpack("<I", token[:4])[0] if token and len(token) >= 4 else 0


@dataclass
class NamespaceDump:
    """One dump: subflows by MPTCP connection (local token), plain TCP connections, congestion control by 4-tuple."""

    connections: dict[int, list[SubflowSample]] = field(default_factory=dict)
    plain_tcp: int = 0
    congestion: dict[SubflowKey, str] = field(default_factory=dict)


def _v4(addr: str) -> str:
    """A v4-mapped IPv6 address (a dual-stack listener's connection) as the IPv4 address it is."""
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr


def open_diag(ns: str | None) -> Any:
    """A bound sock_diag socket in `ns` (pyroute2 DiagSocket); the caller closes it. OSError without sock_diag."""
    from pyroute2.netlink.diag import DiagSocket

    with netns.inside(ns):
        ds = DiagSocket()
    try:
        ds.bind()
    except BaseException:
        ds.close()
        raise
    return ds


def listening(ds: Any) -> bool:
    """Whether the namespace of `ds` has a TCP (or MPTCP) listener, IPv4 or IPv6."""
    return any(ds.get_sock_stats(family=f, states=1 << TCP_LISTEN) for f in (socket.AF_INET, socket.AF_INET6))


def dump(ds: Any) -> NamespaceDump:
    """Every TCP socket but listeners of the namespace of `ds` (IPv4 and IPv6), grouped as NamespaceDump says."""
    out = NamespaceDump()
    ext = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1))
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ds.get_sock_stats(family=family, extensions=ext):
            if msg["idiag_state"] in (TCP_LISTEN, TCP_CLOSE):
                continue
            key = (_v4(msg["idiag_src"]), msg["idiag_sport"], _v4(msg["idiag_dst"]), msg["idiag_dport"])
            token = mptcp_token(msg.get_attr("INET_DIAG_ULP_INFO"))
            if token is None:
                out.plain_tcp += 1
                continue
            cong = msg.get_attr("INET_DIAG_CONG")
            if cong:
                out.congestion[key] = cong
            info = msg.get_attr("INET_DIAG_INFO")
            get = (lambda name: info.get(name) or 0) if info is not None else (lambda name: 0)
            sf = SubflowSample(
                id=len(out.connections.get(token, [])) + 1, local=(key[0], key[1]), remote=(key[2], key[3]),
                bytes_sent=get("tcpi_bytes_sent"), bytes_acked=get("tcpi_bytes_acked"),
                bytes_received=get("tcpi_bytes_received"), bytes_retrans=get("tcpi_bytes_retrans"),
                total_retrans=get("tcpi_total_retrans"), rtt_us=get("tcpi_rtt"), min_rtt_us=get("tcpi_min_rtt"),
                snd_cwnd=get("tcpi_snd_cwnd"), state=msg["idiag_state"], sacked=get("tcpi_sacked"),
                snd_mss=get("tcpi_snd_mss"))
            out.connections.setdefault(token, []).append(sf)
    return out


@dataclass
class NamespaceSampler(SubflowSampler):
    """A SubflowSampler over every MPTCP connection in namespace `ns` instead of one socket.

    Each sample is one ConnectionSample holding the subflows of every MPTCP
    connection seen in that dump (connection counters: sums over them);
    `max_subflows` is the most subflows one connection had. Sockets that
    closed are gone from later dumps; `delivered` keeps each subflow's highest
    ACKed byte count, and `last_growth_s` when that total last grew.
    """

    ns: str | None = None
    #: plain TCP connections seen in the most sockets one dump held (a program that did not use MPTCP)
    plain_tcp: int = 0
    connections_seen: set[int] = field(default_factory=set)
    delivered: dict[SubflowKey, int] = field(default_factory=dict)
    last_growth_s: float = 0.0
    error: str | None = None
    _ds: Any = None

    def stop(self) -> None:
        super().stop()
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def sample(self) -> ConnectionSample | None:
        import time

        try:
            if self._ds is None:
                self._ds = open_diag(self.ns)
            d = dump(self._ds)
        except OSError as e:
            self.error = f"inet_diag in {self.ns}: {e.strerror or e}"
            return None
        t = time.monotonic() - self.t0
        subflows = tuple(sf for sfs in d.connections.values() for sf in sfs)
        self.plain_tcp = max(self.plain_tcp, d.plain_tcp)
        self.connections_seen.update(d.connections)
        self.congestion.update(d.congestion)
        grew = False
        for sf in subflows:
            k = (sf.local[0], sf.local[1], sf.remote[0], sf.remote[1])
            if sf.bytes_acked > self.delivered.get(k, 0):
                self.delivered[k] = sf.bytes_acked
                grew = True
        if grew:
            self.last_growth_s = t
        sample = ConnectionSample(
            subflows_total=len(subflows),
            mptcp_bytes_sent=sum(sf.bytes_sent for sf in subflows),
            mptcp_bytes_acked=sum(sf.bytes_acked for sf in subflows),
            mptcp_bytes_received=sum(sf.bytes_received for sf in subflows),
            mptcp_retransmits=sum(sf.total_retrans for sf in subflows),
            mptcp_bytes_retrans=sum(sf.bytes_retrans for sf in subflows),
            subflows=subflows,
        )
        if subflows:
            self.samples.append((t, sample))
        self.max_subflows = max([self.max_subflows, *(len(sfs) for sfs in d.connections.values())])
        if self.on_sample and subflows:
            self.on_sample(sample)
        return sample

    @property
    def delivered_bytes(self) -> int:
        """Bytes ACKed over every subflow seen, each at its highest count (subflows of closed connections included)."""
        return sum(self.delivered.values())
