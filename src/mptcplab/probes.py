"""What the scheduler did, sampled from the sender's MPTCP socket while it runs.

One MPTCP_FULL_INFO call returns the connection and all its subflows at one
instant, so shares and rates computed from a sample are consistent. MIB
counters come from /proc/net/netstat of each namespace (as `nstat` reads them).
"""
from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import netns
from .mptcp import ConnectionSample, SubflowSample, full_info
from .result import SubflowEndpoint, SubflowResult, TimeSeries
from .topology import Topology

SAMPLE_INTERVAL_S = 0.05  # 20 Hz: the issue asks for at least 10 Hz

SubflowKey = tuple[str, int, str, int]


def _key(sf: SubflowSample) -> SubflowKey:
    return (sf.local[0], sf.local[1], sf.remote[0], sf.remote[1])


INET_DIAG_CONG = 4  # the inet_diag extension that carries a socket's congestion control name


def subflow_congestion(ns: str) -> dict[SubflowKey, str]:
    """The congestion control of every TCP socket in `ns` (MPTCP subflows included), by 4-tuple.

    One sock_diag dump with the INET_DIAG_CONG extension, as `ss -ti` reads it.
    """
    from pyroute2.netlink.diag import DiagSocket

    with netns.inside(ns):
        ds = DiagSocket()
    out: dict[SubflowKey, str] = {}
    try:
        ds.bind()
        for msg in ds.get_sock_stats(family=socket.AF_INET, extensions=1 << (INET_DIAG_CONG - 1)):
            cong = msg.get_attr("INET_DIAG_CONG")
            if cong:
                out[(msg["idiag_src"], msg["idiag_sport"], msg["idiag_dst"], msg["idiag_dport"])] = cong
    finally:
        ds.close()
    return out


@dataclass
class SubflowSampler:
    """Samples `sock` every `interval` seconds on a thread until stopped."""

    sock: socket.socket
    t0: float
    interval: float = SAMPLE_INTERVAL_S
    on_sample: Callable[[ConnectionSample], None] | None = None
    samples: list[tuple[float, ConnectionSample]] = field(default_factory=list)
    max_subflows: int = 0
    #: congestion control per subflow (read with the final sample by the transfer)
    congestion: dict[SubflowKey, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "SubflowSampler":
        self._thread = threading.Thread(target=self._loop, name="subflow-sampler", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> ConnectionSample | None:
        try:
            s = full_info(self.sock)
        except OSError:
            return None  # closed or fell back: the caller checks MPTCP status itself
        self.samples.append((time.monotonic() - self.t0, s))
        self.max_subflows = max(self.max_subflows, len(s.subflows))
        if self.on_sample:
            self.on_sample(s)
        return s

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.sample()
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)


def client_addr_of(sf: SubflowSample, sender_is_client: bool) -> str:
    return sf.local[0] if sender_is_client else sf.remote[0]


def summarize(samples: list[tuple[float, ConnectionSample]], topo: Topology, sender_is_client: bool,
              interval: float = SAMPLE_INTERVAL_S,
              congestion: dict[SubflowKey, str] | None = None) -> tuple[list[SubflowResult], TimeSeries]:
    """Per-path totals from the last sample of every subflow, and per-path time series.

    `congestion` (subflow 4-tuple -> algorithm, from `subflow_congestion`) names what each
    path's subflows used; several subflows with different ones are listed comma-separated.
    """
    congestion = congestion or {}
    path_of: dict[SubflowKey, str] = {}
    last: dict[SubflowKey, SubflowSample] = {}
    names = [p.name for p in topo.paths]
    series = TimeSeries(interval_s=interval, throughput_mbps={n: [] for n in names}, rtt_ms={n: [] for n in names},
                        delivered_mbps={n: [] for n in names}, cwnd={n: [] for n in names})
    prev_acked: dict[SubflowKey, int] = {}
    prev_delivered: dict[SubflowKey, int] = {}
    prev_t = 0.0
    for t, sample in samples:
        dt = max(t - prev_t, 1e-6)
        acked = {n: 0 for n in names}
        delivered = {n: 0 for n in names}
        rtts: dict[str, list[float]] = {n: [] for n in names}
        cwnd = {n: 0 for n in names}
        for sf in sample.subflows:
            k = _key(sf)
            if k not in path_of:
                ports = topo.path_of_client_addr(client_addr_of(sf, sender_is_client))
                path_of[k] = ports.name if ports else "?"
            name = path_of[k]
            last[k] = sf
            # what reached the receiver, SACKed or not: a repaired loss does not land in one sample as a
            # cumulative ACK does (held high-water, so a SACK renege or a short segment never counts twice)
            reached = max(prev_delivered.get(k, 0), sf.bytes_acked + sf.sacked * sf.snd_mss)
            if name in acked:
                acked[name] += sf.bytes_acked - prev_acked.get(k, 0)
                delivered[name] += reached - prev_delivered.get(k, 0)
                if sf.rtt_us:
                    rtts[name].append(sf.rtt_us / 1000)
                cwnd[name] += sf.snd_cwnd
            prev_acked[k] = sf.bytes_acked
            prev_delivered[k] = reached
        series.t.append(round(t, 4))
        for n in names:
            series.throughput_mbps[n].append(round(max(acked[n], 0) * 8 / dt / 1e6, 4))
            series.delivered_mbps[n].append(round(max(delivered[n], 0) * 8 / dt / 1e6, 4))
            series.rtt_ms[n].append(round(min(rtts[n]), 3) if rtts[n] else 0.0)
            series.cwnd[n].append(cwnd[n])
        prev_t = t
    results = []
    total_sent = sum(sf.bytes_sent for sf in last.values()) or 1
    for n in names:
        subs = [sf for k, sf in last.items() if path_of[k] == n]
        rtt_series = [r for r in series.rtt_ms[n] if r > 0]
        sent = sum(sf.bytes_sent for sf in subs)
        results.append(SubflowResult(
            path=n,
            bytes_sent=sent,
            bytes_acked=sum(sf.bytes_acked for sf in subs),
            retransmits=sum(sf.total_retrans for sf in subs),
            bytes_retrans=sum(sf.bytes_retrans for sf in subs),
            rtt_ms=round(subs[-1].rtt_us / 1000, 3) if subs else 0.0,
            min_rtt_ms=round(min((sf.min_rtt_us for sf in subs), default=0) / 1000, 3),
            rtt_median_ms=round(statistics.median(rtt_series), 3) if rtt_series else 0.0,
            subflows_opened=len(subs),
            share=round(sent / total_sent, 4),
            congestion_control=",".join(sorted({congestion[k] for k, sf in last.items() if path_of[k] == n and k in congestion})),
            endpoint=next((e.flags for e in topo.path_endpoints(n) if e.flags), "subflow"),
            endpoints=[subflow_endpoint(topo, k, sf, sender_is_client) for k, sf in last.items() if path_of[k] == n],
        ))
    return results, series


def subflow_endpoint(topo: Topology, key: SubflowKey, sf: SubflowSample, sender_is_client: bool) -> SubflowEndpoint:
    """Which endpoint subflow `sf` came from, found by its client and server addresses (Topology.endpoint_of)."""
    local, remote = f"{key[0]}:{key[1]}", f"{key[2]}:{key[3]}"
    client, server = (local, remote) if sender_is_client else (remote, local)
    e = topo.endpoint_of(client.rsplit(":", 1)[0], server.rsplit(":", 1)[0])
    return SubflowEndpoint(id=e.id if e else 0, side=e.side if e else "client", flags=e.flags if e else "",
                           client=client, server=server, bytes_sent=sf.bytes_sent)


def mib_snapshot(ns: str) -> dict[str, int]:
    return netns.netstat(ns, "MPTcpExt")


def mib_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
