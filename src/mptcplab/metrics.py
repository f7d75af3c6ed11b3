"""The one table of metrics: names, units and which way is better.

The store records every metric of every repetition under these names, and
`compare`, `history`, the tables and the report read their units and
direction from here. A workload that measures something new adds a row.
This module imports nothing of the engine, so the store and the analysis
can use it without loading pyroute2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from .result import Repetition

Better = Literal["higher", "lower"]
#: "repetition": a key of Repetition.metrics; "subflow": a key of SubflowResult.metrics, one value per path,
#: stored and compared as "<path>.<name>" (e.g. "wifi.idle_queued_share")
Scope = Literal["repetition", "subflow"]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    better: Better
    description: str
    #: a proportion over repetitions (each repetition contributes 0 or 1), compared with Fisher's exact test
    proportion: bool = False
    #: taken from every non-warm-up repetition, not only completed ones
    all_repetitions: bool = False
    scope: Scope = "repetition"


METRIC_TABLE: dict[str, Metric] = {m.name: m for m in (
    Metric("goodput_mbps", "mbit/s", "higher", "application bytes delivered over the transfer time"),
    Metric("completion_s", "s", "lower", "time from connect() to the last byte received"),
    Metric("retransmits", "segments", "lower", "TCP retransmissions summed over the subflows"),
    Metric("bytes_retrans", "bytes", "lower", "bytes retransmitted summed over the subflows"),
    Metric("rtt_ms", "ms", "lower", "median smoothed RTT of the subflows, weighted by their byte share"),
    # bulk, direction = "both": each direction's goodput over its own transfer time
    Metric("upload_goodput_mbps", "mbit/s", "higher", "bulk both: the upload connection's goodput"),
    Metric("download_goodput_mbps", "mbit/s", "higher", "bulk both: the download connection's goodput"),
    # rr: every transaction's latency, request send() to the response's last byte read
    Metric("latency_p50_ms", "ms", "lower", "rr: median transaction latency (request send() to the response's last byte)"),
    Metric("latency_p90_ms", "ms", "lower", "rr: 90th percentile transaction latency"),
    Metric("latency_p99_ms", "ms", "lower", "rr: 99th percentile transaction latency"),
    Metric("latency_p999_ms", "ms", "lower", "rr: 99.9th percentile transaction latency"),
    Metric("latency_max_ms", "ms", "lower", "rr: slowest transaction"),
    Metric("transactions", "", "higher", "rr: transactions answered"),
    Metric("transactions_per_s", "1/s", "higher", "rr: transactions answered per second, first request to last answer"),
    # stream: application-limited chunks at a rate
    Metric("chunk_delay_p50_ms", "ms", "lower", "stream: median chunk delay (due at the sender to last byte read)"),
    Metric("chunk_delay_p99_ms", "ms", "lower", "stream: 99th percentile chunk delay"),
    Metric("chunk_delay_max_ms", "ms", "lower", "stream: largest chunk delay"),
    Metric("chunks", "", "higher", "stream: chunks read whole by the receiving application"),
    Metric("late_chunks", "chunks", "lower", "stream: chunks whose delay exceeded the deadline"),
    Metric("stall_s", "s", "lower", "stream: time the receiving application waited in recv() with a chunk outstanding"),
    # flows: many short connections
    Metric("fct_p50_ms", "ms", "lower", "flows: median flow completion time (connect() to the last byte read)"),
    Metric("fct_p99_ms", "ms", "lower", "flows: 99th percentile flow completion time"),
    Metric("fct_max_ms", "ms", "lower", "flows: slowest flow"),
    Metric("flows_completed", "flows", "higher", "flows: connections that delivered their whole size"),
    Metric("multi_subflow_flows", "flows", "higher", "flows: connections that had more than one subflow at their end"),
    # path-manager topologies: a scenario with a backup endpoint
    Metric("backup_share", "", "lower", "share of the bytes sent that went over subflows of backup endpoints "
           "(only in scenarios with one; a backup path is meant to idle while another path works)"),
    Metric("selftest_max_ms", "ms", "higher", "a kernel selftest's budget for the transfer (simult_flows.sh's max)"),
    Metric("pass_rate", "", "higher", "share of repetitions that completed within the [run] budget",
           proportion=True, all_repetitions=True),
    # [run] baseline = "best-path": the workload as plain TCP on each path alone, in the same run
    Metric("mptcp_vs_best_path", "x", "higher",
           "MPTCP against the best single path as plain TCP, > 1 when MPTCP is better: bulk goodput MPTCP / best path; "
           "rr, stream, flows: the best path's p50 latency / MPTCP's (see BASELINE_METRICS)"),
    # scheduler-visible, connection level: MIB deltas of the client and server namespaces (summed) and MPTCP_INFO
    Metric("reinjected_bytes", "bytes", "lower", "bytes the MPTCP sender reinjected on another subflow (mptcpi_bytes_retrans)"),
    Metric("reinjections", "segments", "lower", "MPTCP-level retransmissions, data reinjected on another subflow (MPTcpExtMPTCPRetrans)"),
    Metric("duplicate_data", "segments", "lower", "data the MPTCP receiver got twice, e.g. a needless reinjection (MPTcpExtDuplicateData)"),
    Metric("ofo_queue", "segments", "lower", "segments the MPTCP receiver queued out of order, waiting for a hole (MPTcpExtOFOQueue)"),
    Metric("ofo_merge", "segments", "lower", "out-of-order segments merged into one already queued (MPTcpExtOFOMerge)"),
    Metric("rcv_pruned", "events", "lower", "receive queues pruned for memory, data dropped (TcpExtRcvPruned)"),
    Metric("beyond_window", "packets", "lower", "packets dropped for lying beyond the receive window (TcpExtBeyondWindow, 6.16+)"),
    Metric("mp_rst_tx", "resets", "lower", "MP_RST sent by client and server: subflows reset by MPTCP (MPTcpExtMPRstTx)"),
    Metric("mp_rst_rx", "resets", "lower", "MP_RST received by client and server (MPTcpExtMPRstRx)"),
    Metric("join_failures", "joins", "lower", "MP_JOINs started and never completed: SYN with MP_JOIN received without its "
           "third ACK (MPJoinSynRx - MPJoinAckRx, per namespace), bad HMACs, unknown tokens"),
    Metric("subflows_reset_empty", "subflows", "lower", "subflows the sender listed that closed without carrying a byte "
           "(a join reset during its handshake): they do not count as paths that came up"),
    # scheduler-visible, per subflow (SubflowResult.metrics; "<path>.<name>" in stored measurements and summaries)
    Metric("capacity_share", "", "higher", "the path's share of the configured capacity in the sending direction "
           "(its rate / all paths' rates; compare with `share`, its share of the bytes sent)", scope="subflow"),
    Metric("idle_queued_s", "s", "lower", "time the path sent nothing while the connection had data queued "
           "(sampled at 20 Hz: 50 ms resolution)", scope="subflow"),
    Metric("idle_queued_share", "", "lower", "idle_queued_s over the time the connection had data queued "
           "(1: the path carried nothing while data waited)", scope="subflow"),
    Metric("cwnd_median", "segments", "higher", "median congestion window of the path's subflows over the samples", scope="subflow"),
    Metric("cwnd_max", "segments", "higher", "largest congestion window of the path's subflows", scope="subflow"),
    Metric("pacing_rate_mbps", "mbit/s", "higher", "median pacing rate of the path's subflows over the samples", scope="subflow"),
    Metric("busy_ms", "ms", "higher", "time the path's subflows had data in flight (tcpi_busy_time)", scope="subflow"),
    Metric("rwnd_limited_ms", "ms", "lower", "time the path's subflows were limited by the receive window (tcpi_rwnd_limited)",
           scope="subflow"),
    Metric("sndbuf_limited_ms", "ms", "lower", "time the path's subflows were limited by the send buffer (tcpi_sndbuf_limited)",
           scope="subflow"),
)}

@dataclass(frozen=True)
class KindMetrics:
    """The two metrics that speak for a workload kind, for different questions."""

    #: what `suite run` summarises and judges a case by (unless --metric): the tail (p99) for latency kinds,
    #: where a scheduler's mistakes show first
    main: str
    #: what `mptcp_vs_best_path` compares: the median (p50) for latency kinds, the typical transaction against
    #: the best path alone, which a few slow tail transactions must not decide
    baseline: str


#: workload kind -> its main and baseline metrics (a kind not listed: goodput_mbps for both)
METRICS_BY_KIND: dict[str, KindMetrics] = {
    "bulk": KindMetrics("goodput_mbps", "goodput_mbps"),
    "rr": KindMetrics("latency_p99_ms", "latency_p50_ms"),
    "stream": KindMetrics("chunk_delay_p99_ms", "chunk_delay_p50_ms"),
    "flows": KindMetrics("fct_p99_ms", "fct_p50_ms"),
    "command": KindMetrics("goodput_mbps", "goodput_mbps"),
    # a kernel selftest case stored as a run (mptcplab.selftests.results): the script's own measured time
    "selftest": KindMetrics("completion_s", "completion_s"),
}
_DEFAULT_KIND = KindMetrics("goodput_mbps", "goodput_mbps")

#: workload kind -> the metric `mptcp_vs_best_path` compares (METRICS_BY_KIND's baseline column)
BASELINE_METRICS: dict[str, str] = {kind: m.baseline for kind, m in METRICS_BY_KIND.items() if kind != "command"}


def baseline_metric(kind: str) -> str:
    """The metric the best-path baseline of workload `kind` compares (METRICS_BY_KIND)."""
    return METRICS_BY_KIND.get(kind, _DEFAULT_KIND).baseline


def _subflow_metric(name: str) -> Metric | None:
    """'<path>.<name>' of a subflow-scope metric, as stored; None for any other name."""
    path, dot, base = name.rpartition(".")
    row = METRIC_TABLE.get(base) if dot and path else None
    if row is None or row.scope != "subflow":
        return None
    return replace(row, name=name, description=f"path {path}: {row.description}")


class _Directions(dict):  # type: ignore[type-arg]
    """name -> better, that also answers the per-path names of subflow metrics ('wifi.idle_queued_share')."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and _subflow_metric(name) is not None)

    def __getitem__(self, name: str) -> str:
        if super().__contains__(name):
            return super().__getitem__(name)
        row = _subflow_metric(name)
        if row is None:
            raise KeyError(name)
        return row.better

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default


#: name -> "higher" | "lower": the form the first wave exported as `mptcplab.store.METRICS`
#: (subflow metrics also answer as "<path>.<name>")
METRICS: dict[str, str] = _Directions({name: m.better for name, m in METRIC_TABLE.items() if m.scope == "repetition"})


#: the metric that says most about each workload kind: what `suite run` summarises a case by (unless --metric;
#: METRICS_BY_KIND's main column)
MAIN_METRIC_BY_KIND: dict[str, str] = {kind: m.main for kind, m in METRICS_BY_KIND.items()}


def main_metric(kind: str) -> str:
    """The main metric of workload `kind` (METRICS_BY_KIND); goodput_mbps for a kind it does not name."""
    return METRICS_BY_KIND.get(kind, _DEFAULT_KIND).main


def metric(name: str) -> Metric:
    """The definition of `name` ('<path>.<name>' for a subflow metric); unknown: 'higher is better', unitless."""
    return METRIC_TABLE.get(name) or _subflow_metric(name) or Metric(name, "", "higher", "")


def repetition_metrics(rep: Repetition) -> dict[str, float]:
    """The scalar metrics of one repetition, by name.

    rtt_ms is the byte-share-weighted median RTT of its paths; pass_rate is 1.0
    when the repetition completed within its budget, else 0.0. Whatever the
    workload put in `rep.metrics` is added as it is, and every subflow metric
    as "<path>.<name>".
    """
    shares = sum(s.share for s in rep.subflows)
    rtt = sum(s.rtt_median_ms * s.share for s in rep.subflows) / shares if shares else 0.0
    values = {
        "goodput_mbps": rep.goodput_mbps,
        "completion_s": rep.completion_s,
        "retransmits": float(sum(s.retransmits for s in rep.subflows)),
        "bytes_retrans": float(sum(s.bytes_retrans for s in rep.subflows)),
        "rtt_ms": round(rtt, 4),
        "pass_rate": 1.0 if rep.passed else 0.0,
    }
    values.update(rep.metrics)
    values.update(subflow_metrics(rep))
    return values


def subflow_metrics(rep: Repetition) -> dict[str, float]:
    """Every path's SubflowResult.metrics as '<path>.<name>' -> value."""
    return {f"{s.path}.{k}": v for s in rep.subflows for k, v in s.metrics.items()}
