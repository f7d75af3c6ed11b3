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
from .mptcp import IPPROTO_MPTCP, ConnectionSample, SubflowSample, full_info, tcp_sample
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
    from .diag import open_diag  # diag builds on this module's sampler: imported here, not at the top

    ds = open_diag(ns)
    out: dict[SubflowKey, str] = {}
    try:
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
    #: the most subflows one connection listed at one sample (joins still in their handshake included)
    max_subflows: int = 0
    #: per connection: the subflows that carried data (bytes sent or received) at some sample, those listed
    #: at its last sample, and every one ever listed (`subflows_up`, `subflows_reset_empty`)
    carried: dict[object, set[SubflowKey]] = field(default_factory=dict)
    last_keys: dict[object, set[SubflowKey]] = field(default_factory=dict)
    seen: dict[object, set[SubflowKey]] = field(default_factory=dict)
    #: congestion control per subflow (read with the final sample by the transfer)
    congestion: dict[SubflowKey, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _addrs: tuple[tuple[str, int], tuple[str, int]] | None = None

    def start(self) -> "SubflowSampler":
        self._thread = threading.Thread(target=self._loop, name="subflow-sampler", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> ConnectionSample | None:
        try:
            if self.sock.proto == IPPROTO_MPTCP:
                s = full_info(self.sock)
            else:  # plain TCP (the best-path baseline): one subflow from TCP_INFO, its addresses read once
                if self._addrs is None:
                    self._addrs = (self.sock.getsockname()[:2], self.sock.getpeername()[:2])
                s = tcp_sample(self.sock, self._addrs)
        except OSError:
            return None  # closed or fell back: the caller checks MPTCP status itself
        self.samples.append((time.monotonic() - self.t0, s))
        self.note(s.subflows)
        if self.on_sample:
            self.on_sample(s)
        return s

    def note(self, subflows: tuple[SubflowSample, ...], connection: object = 0) -> None:
        """Count what one sample of `connection` lists: its subflows, which carried data, which are up now."""
        keys = {_key(sf) for sf in subflows}
        self.max_subflows = max(self.max_subflows, len(keys))
        self.seen.setdefault(connection, set()).update(keys)
        self.carried.setdefault(connection, set()).update(
            _key(sf) for sf in subflows if sf.bytes_sent or sf.bytes_received)  # not bytes_acked: 1 for the SYN alone
        self.last_keys[connection] = keys

    def subflows_up(self, resets: int = 0) -> int:
        """The most subflows of one connection that came up: those that carried data at some sample, and those
        still listed empty at its last sample beyond `resets` (how many joins the MIB says failed:
        `subflow_resets`). A join listed while it was set up and gone
        without a byte never counts; one that stayed listed without carrying a byte until MPTCP reset it at the
        end (a join whose third ACK was never acknowledged) counts only when no reset explains it, so an idle
        backup subflow still counts."""
        best = 0
        for c in self.seen:
            carried = self.carried.get(c, set())
            idle = self.last_keys.get(c, set()) - carried
            best = max(best, len(carried) + max(0, len(idle) - resets))
        return best

    def subflows_reset_empty(self, resets: int = 0) -> int:
        """Subflows (over all connections) that never carried a byte and were reset: gone by their connection's
        last sample, or still listed there empty and explained by `resets` (see `subflows_up`)."""
        gone = sum(len(keys - self.carried.get(c, set()) - self.last_keys.get(c, set())) for c, keys in self.seen.items())
        idle = sum(len(self.last_keys.get(c, set()) - self.carried.get(c, set())) for c in self.seen)
        return gone + min(resets, idle)

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
              congestion: dict[SubflowKey, str] | None = None,
              capacities: dict[str, float] | None = None) -> tuple[list[SubflowResult], TimeSeries]:
    """Per-path totals from the last sample of every subflow, and per-path time series.

    `congestion` (subflow 4-tuple -> algorithm, from `subflow_congestion`) names what each
    path's subflows used; several subflows with different ones are listed comma-separated.
    `capacities` (path -> configured rate in bit/s in the sending direction) gives each
    path's `capacity_share`. A path's `share` is of the delivered data: its subflows' bytes
    ACKed over all subflows' (a retransmitted byte counts once, on the path that delivered
    it); `sent_share` (bytes sent, retransmissions included) and `retrans_bytes` go into
    its metrics. Every path's scheduler-visible metrics (SubflowResult.metrics,
    see `scheduler_metrics`) come from the same samples.
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
    per_path = scheduler_metrics(samples, path_of, names, capacities or {})
    results = []
    # share is of delivered data: bytes ACKed (tcpi_bytes_acked), so a retransmission counts once, where it
    # was delivered; what each path sent and retransmitted is in sent_share and retrans_bytes
    total_acked = sum(sf.bytes_acked for sf in last.values()) or 1
    total_sent = sum(sf.bytes_sent for sf in last.values()) or 1
    for n in names:
        subs = [sf for k, sf in last.items() if path_of[k] == n]
        rtt_series = [r for r in series.rtt_ms[n] if r > 0]
        sent = sum(sf.bytes_sent for sf in subs)
        acked = sum(sf.bytes_acked for sf in subs)
        if subs:
            per_path.setdefault(n, {}).update(sent_share=round(sent / total_sent, 4),
                                              retrans_bytes=float(sum(sf.bytes_retrans for sf in subs)))
        results.append(SubflowResult(
            path=n,
            bytes_sent=sent,
            bytes_acked=acked,
            retransmits=sum(sf.total_retrans for sf in subs),
            bytes_retrans=sum(sf.bytes_retrans for sf in subs),
            rtt_ms=round(subs[-1].rtt_us / 1000, 3) if subs else 0.0,
            min_rtt_ms=round(min((sf.min_rtt_us for sf in subs), default=0) / 1000, 3),
            rtt_median_ms=round(statistics.median(rtt_series), 3) if rtt_series else 0.0,
            subflows_opened=len(subs),
            share=round(acked / total_acked, 4),
            congestion_control=",".join(sorted({congestion[k] for k, sf in last.items() if path_of[k] == n and k in congestion})),
            endpoint=next((e.flags for e in topo.path_endpoints(n) if e.flags), "subflow"),
            endpoints=[subflow_endpoint(topo, k, sf, sender_is_client) for k, sf in last.items() if path_of[k] == n],
            metrics=per_path.get(n, {}),
        ))
    return results, series


def subflow_endpoint(topo: Topology, key: SubflowKey, sf: SubflowSample, sender_is_client: bool) -> SubflowEndpoint:
    """Which endpoint subflow `sf` came from, found by its client and server addresses (Topology.endpoint_of)."""
    local, remote = f"{key[0]}:{key[1]}", f"{key[2]}:{key[3]}"
    client, server = (local, remote) if sender_is_client else (remote, local)
    e = topo.endpoint_of(client.rsplit(":", 1)[0], server.rsplit(":", 1)[0])
    return SubflowEndpoint(id=e.id if e else 0, side=e.side if e else "client", flags=e.flags if e else "",
                           client=client, server=server, bytes_sent=sf.bytes_sent)


#: tcpi_pacing_rate when no pacing rate is set (~0U): ignored
_NO_PACING = 1 << 63


def scheduler_metrics(samples: list[tuple[float, ConnectionSample]], path_of: dict[SubflowKey, str], names: list[str],
                      capacities: dict[str, float]) -> dict[str, dict[str, float]]:
    """What the scheduler did with each path, from the sender's samples: path -> {metric name: value}.

    Names, units and directions are the subflow rows of mptcplab.metrics:

    - capacity_share: the path's configured rate over all paths' (`capacities`, bit/s; a trace or an event
      changing the rate is not followed: the configured rate);
    - idle_queued_s / idle_queued_share — the idle-while-queued estimator: between two consecutive samples
      (50 ms apart at 20 Hz) the connection "had data queued" when the earlier sample's queued_bytes was
      > 0 (data the application wrote that no subflow has sent yet: MPTCP data-level write_seq - snd_nxt,
      plain TCP tcpi_notsent_bytes; ConnectionSample.queued_bytes), and a path was
      "idle" in that interval when no subflow of it advanced tcpi_bytes_sent (a path without a subflow is
      idle). idle_queued_s sums the idle intervals, idle_queued_share divides by the time data was queued.
      Resolution is the sampling interval: one segment sent in an interval makes the whole interval busy,
      so a path that sends in short bursts reads as less idle than it was; absent when data was never
      queued across two samples (flows samples each connection once, at its end);
    - cwnd_median, cwnd_max (segments) and pacing_rate_mbps (median; unset pacing rates ignored) over
      every sample of every subflow of the path;
    - busy_ms, rwnd_limited_ms, sndbuf_limited_ms: tcpi_busy_time, tcpi_rwnd_limited and
      tcpi_sndbuf_limited of the path's subflows' last samples, summed (µs in tcp_info).

    Costs nothing while traffic runs: it reads samples already taken.
    """
    total_capacity = sum(capacities.get(n, 0.0) for n in names)
    queued_s = 0.0
    idle = {n: 0.0 for n in names}
    cwnds: dict[str, list[int]] = {n: [] for n in names}
    pacing: dict[str, list[float]] = {n: [] for n in names}
    last_sent: dict[SubflowKey, int] = {}
    last: dict[SubflowKey, SubflowSample] = {}
    prev: tuple[float, ConnectionSample] | None = None
    for t, sample in samples:
        advanced: set[str] = set()
        for sf in sample.subflows:
            k = _key(sf)
            name = path_of.get(k)
            if name is None:
                continue
            if sf.bytes_sent > last_sent.get(k, 0):
                advanced.add(name)
            last_sent[k] = sf.bytes_sent
            last[k] = sf
            if name in cwnds:
                cwnds[name].append(sf.snd_cwnd)
                if 0 < sf.pacing_rate < _NO_PACING:
                    pacing[name].append(sf.pacing_rate * 8 / 1e6)
        if prev is not None and prev[1].queued_bytes > 0:
            dt = max(t - prev[0], 0.0)
            queued_s += dt
            for n in names:
                if n not in advanced:
                    idle[n] += dt
        prev = (t, sample)
    out: dict[str, dict[str, float]] = {}
    for n in names:
        m: dict[str, float] = {}
        if total_capacity > 0:
            m["capacity_share"] = round(capacities.get(n, 0.0) / total_capacity, 4)
        if queued_s > 0:
            m["idle_queued_s"] = round(idle[n], 4)
            m["idle_queued_share"] = round(idle[n] / queued_s, 4)
        if cwnds[n]:
            m["cwnd_median"] = float(statistics.median(cwnds[n]))
            m["cwnd_max"] = float(max(cwnds[n]))
        if pacing[n]:
            m["pacing_rate_mbps"] = round(statistics.median(pacing[n]), 4)
        subs = [sf for k, sf in last.items() if path_of.get(k) == n]
        if subs:
            m["busy_ms"] = round(sum(sf.busy_time_us for sf in subs) / 1000, 3)
            m["rwnd_limited_ms"] = round(sum(sf.rwnd_limited_us for sf in subs) / 1000, 3)
            m["sndbuf_limited_ms"] = round(sum(sf.sndbuf_limited_us for sf in subs) / 1000, 3)
        out[n] = m
    return out


#: connection-level metric name -> the MIB counters (client and server namespaces summed) it counts
MIB_METRICS: dict[str, str] = {
    "reinjections": "MPTcpExtMPTCPRetrans",
    "duplicate_data": "MPTcpExtDuplicateData",
    "ofo_queue": "MPTcpExtOFOQueue",
    "ofo_merge": "MPTcpExtOFOMerge",
    "rcv_pruned": "TcpExtRcvPruned",
    "beyond_window": "TcpExtBeyondWindow",
    "mp_rst_tx": "MPTcpExtMPRstTx",
    "mp_rst_rx": "MPTcpExtMPRstRx",
}
#: MIB counters of a join that was refused: a bad HMAC either way, a token no connection has
JOIN_FAILURE_COUNTERS = ("MPTcpExtMPJoinSynAckHMacFailure", "MPTcpExtMPJoinAckHMacFailure", "MPTcpExtMPJoinNoTokenFound")
#: the TcpExt counters read next to the MPTcpExt ones
TCPEXT_COUNTERS = ("TcpExtRcvPruned", "TcpExtBeyondWindow")


def counter_snapshot(ns: str) -> tuple[dict[str, int], dict[str, int]]:
    """(every MPTcpExt counter, the TcpExt counters of TCPEXT_COUNTERS this kernel has) of namespace `ns`,
    from one read of its /proc/net/netstat."""
    values = netns.netstat(ns, ("MPTcpExt", "TcpExt"))
    return ({k: v for k, v in values.items() if k.startswith("MPTcpExt")},
            {k: values[k] for k in TCPEXT_COUNTERS if k in values})


def connection_metrics(samples: list[tuple[float, ConnectionSample]], deltas: list[dict[str, int]],
                       mptcp: bool = True) -> dict[str, float]:
    """Connection-level scheduler metrics: MIB deltas (one dict per namespace, summed) and the last sample.

    A counter this kernel does not have is left out (TcpExtBeyondWindow is 6.16+); reinjected_bytes
    (mptcpi_bytes_retrans, 6.7+) only for an MPTCP connection whose kernel fills it.
    """
    out: dict[str, float] = {}
    for name, counter in MIB_METRICS.items():
        if any(counter in d for d in deltas):
            out[name] = float(sum(d.get(counter, 0) for d in deltas))
    if any("MPTcpExtMPJoinSynRx" in d for d in deltas):
        out["join_failures"] = float(join_failures(deltas))
    if mptcp and samples:
        out["reinjected_bytes"] = float(samples[-1][1].mptcp_bytes_retrans)
    return out


def subflow_resets(metrics: dict[str, float]) -> int:
    """How many joins of a repetition the MIB says failed (`join_failures` of `connection_metrics`): what may
    explain a subflow listed empty to the end. MP_RST counts are no such evidence: a subflow that carried data,
    or an idle backup one, may be reset when the connection closes."""
    return int(metrics.get("join_failures", 0))


def join_failures(deltas: list[dict[str, int]]) -> int:
    """MP_JOINs that were started and never completed, from MIB deltas (one dict per namespace and counter
    table): per namespace, the joins it received (MPJoinSynRx) without their third ACK (MPJoinAckRx), plus the
    joins refused for a bad HMAC or an unknown token (JOIN_FAILURE_COUNTERS)."""
    return sum(max(0, d.get("MPTcpExtMPJoinSynRx", 0) - d.get("MPTcpExtMPJoinAckRx", 0))
               + sum(d.get(c, 0) for c in JOIN_FAILURE_COUNTERS) for d in deltas)


def mib_snapshot(ns: str) -> dict[str, int]:
    return netns.netstat(ns, "MPTcpExt")


def mib_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
