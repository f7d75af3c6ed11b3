"""The one table of metrics: names, units and which way is better.

The store records every metric of every repetition under these names, and
`compare`, `history`, the tables and the report read their units and
direction from here. What every workload measures (goodput, completion time,
the scheduler's per-path and per-connection metrics) is `COMMON`; what only
one workload kind measures, and the kind's main and baseline metric, each
spec class in `workload_specs.py` declares (`MEASURES`), and the tables below
are built from those declarations. A name in neither is an UnknownMetric: a
verdict never guesses a direction. This module imports nothing of the engine,
so the store and the analysis can use it without loading pyroute2.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .errors import UsageError
from .measures import Better, Measures, Metric, Scope
from .result import Repetition, RunResult
from .workload_specs import SPECS

__all__ = ["Better", "Scope", "Metric", "Measures", "KindMetrics", "UnknownMetric", "COMMON", "METRIC_TABLE", "METRICS",
           "METRICS_BY_KIND", "MAIN_METRIC_BY_KIND", "BASELINE_METRICS", "metric", "find_metric", "main_metric",
           "baseline_metric", "kind_measures", "own_metrics", "infer_kind", "series_label", "result_main_metric", "repetition_metrics",
           "subflow_metrics"]

#: the old name of what a workload kind declares (its main and baseline metric)
KindMetrics = Measures

#: what every workload kind measures of its transfer (listed first in tables and the report)
TRANSFER: tuple[Metric, ...] = (
    Metric("goodput_mbps", "mbit/s", "higher", "application bytes delivered over the transfer time"),
    Metric("completion_s", "s", "lower", "time from connect() to the last byte received"),
    Metric("retransmits", "segments", "lower", "TCP retransmissions summed over the subflows"),
    Metric("bytes_retrans", "bytes", "lower", "bytes retransmitted summed over the subflows"),
    Metric("rtt_ms", "ms", "lower", "median smoothed RTT of the subflows, weighted by their byte share"),
)
#: what any kind may measure beyond its transfer: conditional metrics and the scheduler's (listed after the kinds' own)
OTHER: tuple[Metric, ...] = (
    # path-manager topologies: a scenario with a backup endpoint
    Metric("backup_share", "", "lower", "share of the bytes sent that went over subflows of backup endpoints "
           "(only in scenarios with one; a backup path is meant to idle while another path works)"),
    Metric("pass_rate", "", "higher", "share of repetitions that completed within the [run] budget; without a budget, the completion rate "
           "(share of repetitions that completed)",
           proportion=True, all_repetitions=True),
    # [run] baseline = "best-path": the workload as plain TCP on each path alone, in the same run
    Metric("mptcp_vs_best_path", "x", "higher",
           "MPTCP against the best single path as plain TCP, > 1 when MPTCP is better: bulk goodput MPTCP / best path; "
           "rr, stream, flows: the best path's p50 latency / MPTCP's (each kind's baseline metric)"),
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
           "(its rate / all paths' rates; compare with `share`, its share of the data delivered)", scope="subflow"),
    Metric("sent_share", "", "higher", "the path's share of all bytes sent, retransmissions included (`share` is of the "
           "data delivered, bytes ACKed)", scope="subflow"),
    Metric("retrans_bytes", "bytes", "lower", "bytes the path's subflows retransmitted (tcpi_bytes_retrans)", scope="subflow"),
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
)
#: what every workload kind measures (kind-specific metrics are declared on the spec classes)
COMMON: tuple[Metric, ...] = (*TRANSFER, *OTHER)

#: kinds of stored runs that no scenario workload makes: a kernel selftest case stored as a run
#: (mptcplab.selftests.results), judged by the script's own measured time
RESULT_KINDS: dict[str, Measures] = {
    "selftest": Measures(main="completion_s", baseline="completion_s", metrics=(
        Metric("selftest_max_ms", "ms", "higher", "a kernel selftest's budget for the transfer (simult_flows.sh's max)"),)),
}
#: workload kind -> what it declares it measures (its spec class's MEASURES), and the RESULT_KINDS
METRICS_BY_KIND: dict[str, Measures] = {**{spec.model_fields["kind"].default: spec.MEASURES  # type: ignore[attr-defined]
                                           for spec in SPECS}, **RESULT_KINDS}


def _table() -> dict[str, Metric]:
    table: dict[str, Metric] = {}
    for row in (*TRANSFER, *(m for measures in METRICS_BY_KIND.values() for m in measures.metrics), *OTHER):
        if table.get(row.name, row) != row:
            raise RuntimeError(f"metric {row.name} is declared twice, differently")  # a programming error, caught at import
        table[row.name] = row
    for kind, measures in METRICS_BY_KIND.items():
        for name in (measures.main, measures.baseline):
            if name not in table:
                raise RuntimeError(f"workload kind {kind}: its main or baseline metric {name} is declared nowhere")
    return table


METRIC_TABLE: dict[str, Metric] = _table()


def _latency_columns(kind: Measures) -> tuple[str, str, str] | None:
    """(p50, p99, max) of a kind whose main metric is a latency (unit ms): its baseline, its main, and the
    table's row named as the main with max for p99 (latency_p99_ms -> latency_max_ms); None for other kinds."""
    main = METRIC_TABLE.get(kind.main)
    worst = kind.main.replace("_p99_", "_max_")
    if main is None or main.unit != "ms" or worst == kind.main or worst not in METRIC_TABLE:
        return None
    return (kind.baseline, kind.main, worst)


#: workload kind -> the latency metrics its runs are shown by (p50, p99, max), for the kinds whose main metric is a
#: latency: `runs`, `show` and the run's table show these instead of goodput and completion time
LATENCY_COLUMNS: dict[str, tuple[str, str, str]] = {
    k: cols for k, m in METRICS_BY_KIND.items() if (cols := _latency_columns(m)) is not None}


def latency_columns(names: Any) -> tuple[str, str, str] | None:
    """The (p50, p99, max) latency metrics of the kind whose main metric (p99) is among `names` (the metric names
    a repetition, summary or stored run has), or None: a run of a throughput kind. A caller shows "-" for one of
    the three a run lacks."""
    have = set(names)
    return next((cols for cols in LATENCY_COLUMNS.values() if cols[1] in have), None)


def latency_label(name: str) -> str:
    """A latency metric's name for a table heading: latency_p99_ms -> "latency p99 ms"."""
    return name.replace("_", " ")


#: workload kind -> the metric `mptcp_vs_best_path` compares (each kind's declared baseline metric)
BASELINE_METRICS: dict[str, str] = {kind: m.baseline for kind, m in METRICS_BY_KIND.items() if kind != "command"}
#: workload kind -> its main metric: what every verdict judges a case by unless --metric names another
MAIN_METRIC_BY_KIND: dict[str, str] = {kind: m.main for kind, m in METRICS_BY_KIND.items()}


class UnknownMetric(UsageError):
    """A metric name the table does not hold, or a workload kind that declares no metrics: one line, exit 2."""


def kind_measures(kind: str) -> Measures:
    """What workload `kind` declares it measures; UnknownMetric for a kind no spec class declares."""
    try:
        return METRICS_BY_KIND[kind]
    except KeyError:
        raise UnknownMetric(f"workload kind {kind!r} declares no metrics",
                            f"known kinds: {', '.join(METRICS_BY_KIND)}") from None


def baseline_metric(kind: str) -> str:
    """The metric the best-path baseline of workload `kind` compares (its spec's MEASURES.baseline)."""
    return kind_measures(kind).baseline


def main_metric(kind: str) -> str:
    """The main metric of workload `kind` (its spec's MEASURES.main): what a case is judged by unless --metric."""
    return kind_measures(kind).main


def own_metrics(kind: str) -> set[str]:
    """The metrics only workload `kind` measures (beyond COMMON)."""
    return {m.name for m in kind_measures(kind).metrics}


def infer_kind(measured: set[str]) -> str:
    """The workload kind of a run whose scenario is unknown (an imported `run --json`), from the metrics it stored.

    The kind with the most of its own metrics among `measured`; a run with
    none of any kind's own metrics measured only what every kind measures,
    as a bulk transfer does (bulk's own metrics exist only for direction = both).
    """
    best, hits = "bulk", 0
    for kind, measures in METRICS_BY_KIND.items():
        n = sum(m.name in measured for m in measures.metrics)
        if n > hits:
            best, hits = kind, n
    return best


def series_label(key: str) -> tuple[str, str] | None:
    """(what one value is, unit) of a workload's per-event series key (Repetition.series), as its kind declares it."""
    for measures in METRICS_BY_KIND.values():
        if key in measures.series:
            return measures.series[key]
    return None


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


def find_metric(name: str) -> Metric | None:
    """The definition of `name` ('<path>.<name>' for a subflow metric), or None when the table does not hold it."""
    return METRIC_TABLE.get(name) or _subflow_metric(name)


def metric(name: str) -> Metric:
    """The definition of `name` ('<path>.<name>' for a subflow metric); UnknownMetric when the table does not hold it
    (a verdict on it would have to guess whether higher is better)."""
    row = find_metric(name)
    if row is None:
        raise UnknownMetric(f"unknown metric {name!r}",
                            "choose one of " + ", ".join(n for n, m in METRIC_TABLE.items() if m.scope == "repetition"))
    return row


def result_main_metric(result: RunResult) -> str:
    """The main metric of a result's workload: from its environment's `workload` kind (recorded by the runner),
    else inferred from what its repetitions measured (infer_kind). A stored run's is Store.main_metrics' answer,
    which reads its stored scenario first."""
    if result.environment.get("main_metric"):  # the scenario's own `[run] metric`
        return str(result.environment["main_metric"])
    kind = result.environment.get("workload")
    if not kind:
        kind = infer_kind({k for rep in result.repetitions for k in repetition_metrics(rep)})
    return main_metric(str(kind))


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
