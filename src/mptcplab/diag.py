"""Every MPTCP subflow in a namespace, from the outside: inet_diag, as `ss -tni` reads it.

The socket workloads sample their own sending socket with MPTCP_FULL_INFO;
a program the lab did not write (the `command` workload) owns its sockets, so
the lab reads them through sock_diag instead. One inet_diag dump of the
namespace's TCP sockets returns every subflow's tcp_info, its congestion
control and its ULP info; a subflow of an MPTCP connection carries the ULP
name "mptcp" and its connection's local token, which groups subflows into
connections. A plain TCP socket (a program that did not use MPTCP) has no
ULP info and is counted apart, so a fallback is visible.

Connection-level counters come from mptcp_diag (inet_diag over IPPROTO_MPTCP,
as `ss -M` reads them): struct mptcp_info of every MPTCP socket, matched to its
subflows by the local token. pyroute2 0.9.7's inet_diag request cannot carry
INET_DIAG_REQ_PROTOCOL, which a protocol number above 255 needs, so that one
request is written here with struct. Where the kernel gives data-level byte
counters (mptcpi_bytes_acked, 6.7 and later) a connection's bytes are those,
counted once however often the scheduler reinjected them; otherwise (older
kernels, no mptcp_diag) they are the sums over its subflows, where data
reinjected on a second subflow counts on both.
"""
from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from . import netns
from .mptcp import ConnectionSample, MptcpInfo, SubflowSample, unsent_bytes
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


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_REQ_PROTOCOL = 3
IPPROTO_MPTCP = 262
#: struct inet_diag_msg: family, state, timer, retrans, inet_diag_sockid (48 bytes), expires, rqueue, wqueue, uid, inode
INET_DIAG_MSG_LEN = 72


def open_raw_diag(ns: str | None) -> socket.socket:
    """A bound NETLINK_SOCK_DIAG socket in `ns` for mptcp_connections(); the caller closes it. OSError without sock_diag."""
    with netns.inside(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        s.bind((0, 0))
    except BaseException:
        s.close()
        raise
    return s


def mptcp_connections(s: socket.socket) -> dict[int, MptcpInfo]:
    """Every MPTCP socket of the namespace of `s` (open_raw_diag) but listeners: local token -> its struct
    mptcp_info, from mptcp_diag.

    A kernel's shorter mptcp_info leaves the fields it lacks at 0. Returns {} when the kernel has no mptcp_diag
    (the dump is refused).
    """
    out: dict[int, MptcpInfo] = {}
    states = 0xFFF & ~((1 << TCP_LISTEN) | (1 << TCP_CLOSE))
    for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
        # struct inet_diag_req_v2 (its 8-bit protocol field holds the low byte only; the attribute decides)
        req = struct.pack("=BBBxI", family, IPPROTO_MPTCP & 0xFF, 1 << (INET_DIAG_INFO - 1), states) + bytes(48)
        req += struct.pack("=HHI", 8, INET_DIAG_REQ_PROTOCOL, IPPROTO_MPTCP)
        s.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + req)
        if not _read_dump(s, out):
            return {}
    return out


def _read_dump(s: socket.socket, out: dict[int, MptcpInfo]) -> bool:
    """Read one dump's answers into `out`; False when the kernel refused it (no mptcp_diag)."""
    size = ctypes.sizeof(MptcpInfo)
    while True:
        data = s.recv(65536)
        i = 0
        while i + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, i)
            if length < 16:
                return True
            if kind == NLMSG_DONE:
                return True
            if kind == NLMSG_ERROR:
                return struct.unpack_from("=i", data, i + 16)[0] == 0
            body = data[i + 16:i + length]
            info = _attrs(body[INET_DIAG_MSG_LEN:]).get(INET_DIAG_INFO)
            if info:
                mi = MptcpInfo.from_buffer_copy(info[:size].ljust(size, b"\0"))
                out[mi.token] = mi
            i += (length + 3) & ~3


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


def _counts(mi: MptcpInfo | None, subflows: list[SubflowSample]) -> tuple[int, int, int, int, int, int]:
    """One connection's (bytes sent, ACKed, received, retransmits, bytes retransmitted, queued unsent): data-level
    from its mptcp_info, else summed over its subflows (no queue known)."""
    if mi is not None:
        return mi.bytes_sent, mi.bytes_acked, mi.bytes_received, mi.retransmits, mi.bytes_retrans, unsent_bytes(mi)
    return (sum(sf.bytes_sent for sf in subflows), sum(sf.bytes_acked for sf in subflows),
            sum(sf.bytes_received for sf in subflows), sum(sf.total_retrans for sf in subflows),
            sum(sf.bytes_retrans for sf in subflows), 0)


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
    #: local token -> the highest data-level bytes ACKed (mptcpi_bytes_acked) seen for that connection
    connection_delivered: dict[int, int] = field(default_factory=dict)
    last_growth_s: float = 0.0
    #: the kernel fills mptcp_info's data-level byte counters (seen non-zero once)
    kernel_counts: bool = False
    error: str | None = None
    _ds: Any = None
    _mds: Any = None

    def stop(self) -> None:
        super().stop()
        for s in (self._ds, self._mds):
            if s is not None:
                s.close()
        self._ds = self._mds = None

    def sample(self) -> ConnectionSample | None:
        import time

        try:
            if self._ds is None:
                self._ds = open_diag(self.ns)
                self._mds = open_raw_diag(self.ns)
            d = dump(self._ds)
            infos = mptcp_connections(self._mds)
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
        # data-level counters where the kernel has them (6.7+: a connection that moved data has them non-zero)
        self.kernel_counts = self.kernel_counts or any(mi.bytes_sent or mi.bytes_received for mi in infos.values())
        counts = [_counts(infos.get(token) if self.kernel_counts else None, sfs) for token, sfs in d.connections.items()]
        if self.kernel_counts:
            for token, mi in infos.items():
                if token in d.connections and mi.bytes_acked > self.connection_delivered.get(token, 0):
                    self.connection_delivered[token] = mi.bytes_acked
                    grew = True
        if grew:
            self.last_growth_s = t
        sample = ConnectionSample(
            subflows_total=len(subflows),
            mptcp_bytes_sent=sum(c[0] for c in counts),
            mptcp_bytes_acked=sum(c[1] for c in counts),
            mptcp_bytes_received=sum(c[2] for c in counts),
            mptcp_retransmits=sum(c[3] for c in counts),
            mptcp_bytes_retrans=sum(c[4] for c in counts),
            subflows=subflows,
            queued_bytes=sum(c[5] for c in counts),
        )
        if subflows:
            self.samples.append((t, sample))
        for token, sfs in d.connections.items():
            self.note(tuple(sfs), connection=token)
        if self.on_sample and subflows:
            self.on_sample(sample)
        return sample

    @property
    def delivered_bytes(self) -> int:
        """Data-level bytes ACKed over every connection seen, each at its highest count, where the kernel counts
        them (6.7+); otherwise bytes ACKed over every subflow seen, each at its highest count (subflows of closed
        connections included; data reinjected on a second subflow counts on both)."""
        if self.connection_delivered:
            return sum(self.connection_delivered.values())
        return sum(self.delivered.values())
