"""Why a run came out as it did: the scheduler's evidence per path and per connection, from what is stored.

A verdict says *that* MPTCP was slower; the probes already stored *why* for
every MPTCP repetition (SubflowResult.metrics per path, the MIB deltas per
connection). This reads them back as a few numbers per path and one line per
connection, the medians over the run's measured repetitions (non-warm-up,
MPTCP, completed; every MPTCP repetition when none completed), for `show`
and the run page. Pure: a RunResult in, values out.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..result import Repetition, RunResult

#: connection-level metrics shown, in order (Repetition.metrics keys; units and meaning in metrics.COMMON)
CONNECTION_METRICS = (("reinjections", "reinjections"), ("duplicate_data", "duplicate data"),
                      ("ofo_queue", "OFO queue"), ("rcv_pruned", "receive queue pruned"))


@dataclass
class PathDiagnosis:
    """One path's medians over the repetitions (None: not measured, e.g. a run stored before the metric existed)."""

    path: str
    share: float | None = None  # of the bytes sent
    capacity_share: float | None = None  # of the configured capacity in the sending direction
    idle_queued_share: float | None = None  # of the time the connection had data queued
    sndbuf_limited_ms: float | None = None
    rwnd_limited_ms: float | None = None
    cwnd_median: float | None = None
    cwnd_max: float | None = None

    def line(self) -> str:
        """'fast: 61% of the bytes for 67% of the capacity; idle 56% of the time data waited; ...'."""
        parts = []
        if self.share is not None:
            parts.append(f"{self.share * 100:.0f}% of the bytes"
                         + (f" for {self.capacity_share * 100:.0f}% of the capacity" if self.capacity_share is not None else ""))
        if self.idle_queued_share is not None:
            parts.append(f"idle {self.idle_queued_share * 100:.0f}% of the time data waited")
        if self.sndbuf_limited_ms is not None:
            parts.append(f"send-buffer limited {self.sndbuf_limited_ms:.0f} ms")
        if self.rwnd_limited_ms is not None:
            parts.append(f"receive-window limited {self.rwnd_limited_ms:.0f} ms")
        if self.cwnd_median is not None:
            parts.append(f"cwnd {self.cwnd_median:.0f}" + (f" (max {self.cwnd_max:.0f})" if self.cwnd_max is not None else "")
                         + " segments")
        return f"{self.path}: " + ("; ".join(parts) or "no scheduler metrics stored")


@dataclass
class Diagnosis:
    """The evidence of one run: per path, per connection, and over how many repetitions."""

    repetitions: int
    paths: list[PathDiagnosis] = field(default_factory=list)
    #: (label, median) per connection-level metric present
    connection: list[tuple[str, float]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The block as text lines: a header, one line per path, one for the connection."""
        if not self.repetitions:
            return []
        out = [f"why (median of {self.repetitions} MPTCP repetition{'s' if self.repetitions != 1 else ''}):"]
        out += [f"  path {p.line()}" for p in self.paths]
        if self.connection:
            out.append("  connection: " + ", ".join(f"{label} {_count(v)}" for label, v in self.connection))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"repetitions": self.repetitions, "paths": [vars(p) for p in self.paths],
                "connection": {label: v for label, v in self.connection}}


def _count(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:.0f}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _measured(result: RunResult) -> list[Repetition]:
    mptcp = [r for r in result.repetitions if r.baseline_path is None and not r.warmup]
    done = [r for r in mptcp if r.completed]
    return done or mptcp


def diagnose(result: RunResult) -> Diagnosis:
    """The diagnosis of `result` from its stored repetitions (Diagnosis.repetitions 0 when it has no MPTCP one)."""
    reps = _measured(result)
    diag = Diagnosis(repetitions=len(reps))
    paths = list(dict.fromkeys(s.path for r in reps for s in r.subflows))
    for path in paths:
        subs = [s for r in reps for s in r.subflows if s.path == path]

        def med(name: str) -> float | None:
            return _median([s.metrics[name] for s in subs if name in s.metrics])

        diag.paths.append(PathDiagnosis(
            path=path, share=_median([s.share for s in subs]), capacity_share=med("capacity_share"),
            idle_queued_share=med("idle_queued_share"), sndbuf_limited_ms=med("sndbuf_limited_ms"),
            rwnd_limited_ms=med("rwnd_limited_ms"), cwnd_median=med("cwnd_median"), cwnd_max=med("cwnd_max")))
    for name, label in CONNECTION_METRICS:
        value = _median([r.metrics[name] for r in reps if name in r.metrics])
        if value is not None:
            diag.connection.append((label, value))
    return diag
