"""The one table of metrics: names, units and which way is better.

The store records every metric of every repetition under these names, and
`compare`, `history`, the tables and the report read their units and
direction from here. A workload that measures something new adds a row.
This module imports nothing of the engine, so the store and the analysis
can use it without loading pyroute2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .result import Repetition

Better = Literal["higher", "lower"]


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
    Metric("pass_rate", "", "higher", "share of repetitions that completed within the [run] budget",
           proportion=True, all_repetitions=True),
)}

#: name -> "higher" | "lower": the form the first wave exported as `mptcplab.store.METRICS`
METRICS: dict[str, str] = {name: m.better for name, m in METRIC_TABLE.items()}


#: the metric that says most about each workload kind: what `suite run` summarises a case by (unless --metric)
MAIN_METRIC_BY_KIND: dict[str, str] = {
    "bulk": "goodput_mbps",
    "rr": "latency_p99_ms",
    "stream": "chunk_delay_p99_ms",
    "flows": "fct_p99_ms",
    "command": "goodput_mbps",
}


def main_metric(kind: str) -> str:
    """The main metric of workload `kind` (MAIN_METRIC_BY_KIND); goodput_mbps for a kind it does not name."""
    return MAIN_METRIC_BY_KIND.get(kind, "goodput_mbps")


def metric(name: str) -> Metric:
    """The definition of `name`; a metric no table row names is 'higher is better', unitless."""
    return METRIC_TABLE.get(name) or Metric(name, "", "higher", "")


def repetition_metrics(rep: Repetition) -> dict[str, float]:
    """The scalar metrics of one repetition, by name.

    rtt_ms is the byte-share-weighted median RTT of its paths; pass_rate is 1.0
    when the repetition completed within its budget, else 0.0. Whatever the
    workload put in `rep.metrics` is added as it is.
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
    return values
