"""What a run measured, as values: stored, analysed and rendered from here.

The `--json` contract is `RunResult.to_json()`; keys may be added, never
removed or renamed.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SubflowResult(BaseModel):
    path: str
    bytes_sent: int = 0
    bytes_acked: int = 0
    retransmits: int = 0
    bytes_retrans: int = 0
    rtt_ms: float = 0.0
    min_rtt_ms: float = 0.0
    rtt_median_ms: float = 0.0
    subflows_opened: int = 0  # a path that reconnects opens more than one
    share: float = 0.0  # fraction of all bytes sent that went over this path


class TimeSeries(BaseModel):
    """Per-path samples at `interval_s`; t is seconds from the start of the transfer."""

    interval_s: float
    t: list[float] = Field(default_factory=list)
    throughput_mbps: dict[str, list[float]] = Field(default_factory=dict)
    rtt_ms: dict[str, list[float]] = Field(default_factory=dict)


class Repetition(BaseModel):
    index: int
    completion_s: float
    goodput_mbps: float
    bytes: int
    mptcp: bool
    subflows: list[SubflowResult]
    mib: dict[str, int]
    mib_server: dict[str, int] = Field(default_factory=dict)
    timeseries: TimeSeries | None = None
    started_at: float = 0.0
    warmup: bool = False


class Estimate(BaseModel):
    median: float
    ci95: tuple[float, float]
    n: int = 0


class RunResult(BaseModel):
    #: the stored run's id (`mptcplab show RUN_ID`); unique across machines
    run_id: str = ""
    scenario: str
    scenario_hash: str = ""
    kernel: str
    scheduler: str
    path_manager: str = "kernel"
    backend: str
    label: str | None = None
    repetitions: list[Repetition] = Field(default_factory=list)
    summary: dict[str, Estimate] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    #: completed, interrupted (Ctrl-C/SIGTERM: finished repetitions are kept) or failed
    status: str = "completed"
    started_at: float = 0.0
    ended_at: float | None = None

    def to_json(self, timeseries: bool = True) -> dict[str, Any]:
        exclude: Any = {"repetitions": {"__all__": {"timeseries"}}} if not timeseries else None
        return self.model_dump(mode="json", exclude=exclude)
