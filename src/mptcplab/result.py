"""What a run measured, as values: stored, analysed and rendered from here.

The `--json` contract is `RunResult.to_json()`; keys may be added, never
removed or renamed.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

#: version of the `--json` document (and of spool files); bumped when keys are added, never for removals
#: (there are none): 1 = the first wave, 2 = repetition status/error/over_budget/metrics, subflow
#: congestion_control, summary pass_rate; 3 = timeseries cwnd, repetition series in the store, subflow endpoint and
#: endpoints (which endpoint each subflow came from), repetition baseline_path and programs, subflow metrics, the
#: scheduler-visible metrics and mptcp_vs_best_path
FORMAT_VERSION = 3

#: how a repetition ended; only "completed" repetitions enter medians and comparisons of measured metrics
REPETITION_STATUSES = ("completed", "failed", "timeout", "interrupted")


class SubflowEndpoint(BaseModel):
    """One subflow seen on a path, and the MPTCP endpoint it came from."""

    #: the endpoint's id in its host's path manager (`ip mptcp endpoint show`); 0: the initial subflow's
    #: address, which has no endpoint unless its flags say more than subflow
    id: int = 0
    #: whose endpoint: "client" (it opened the subflow) or "server" (a signal endpoint: the client joined the
    #: address it announced)
    side: str = "client"
    #: the endpoint's flags as the scenario writes them ("subflow backup", "signal"); "" for id 0 without one
    flags: str = ""
    #: the subflow's client and server ends, "address:port"
    client: str = ""
    server: str = ""
    #: bytes the sender sent on this subflow (retransmissions included), at its last sample
    bytes_sent: int = 0


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
    #: the path's share of the delivered data: its subflows' bytes ACKed over all subflows' (retransmitted bytes
    #: count once, where they were delivered; what was sent is metrics["sent_share"], retransmitted
    #: metrics["retrans_bytes"]). Results stored before this lab version hold the share of bytes sent
    share: float = 0.0
    #: the congestion control the subflow really used (inet_diag INET_DIAG_CONG), "" when unknown
    congestion_control: str = ""
    #: the path's endpoint flags as the scenario set them ("subflow", "subflow backup", "signal", ...)
    endpoint: str = ""
    #: every subflow seen on the path and the endpoint (id, flags, side) it came from (the run's endpoints
    #: and limits as the kernels report them are in environment.mptcp_pm)
    endpoints: list[SubflowEndpoint] = Field(default_factory=list)
    #: what the scheduler did with this path, by metric name (units and direction: mptcplab.metrics, scope
    #: "subflow"): capacity_share, idle_queued_s, idle_queued_share, cwnd_median, pacing_rate_mbps, ...
    metrics: dict[str, float] = Field(default_factory=dict)


class TimeSeries(BaseModel):
    """Per-path samples at `interval_s`; t is seconds from the start of the transfer.

    Each value covers the interval since the previous sample (the first: since t = 0).
    """

    interval_s: float
    t: list[float] = Field(default_factory=list)
    #: mbit/s of data cumulatively ACKed in the interval: after a repaired loss a whole window of
    #: held data is ACKed at once, so a sample can exceed what the path carries
    throughput_mbps: dict[str, list[float]] = Field(default_factory=dict)
    #: the smoothed RTT (ms) of the path's subflows at the sample (0.0: no subflow); it is stale
    #: (the last estimate) when nothing was delivered in the interval
    rtt_ms: dict[str, list[float]] = Field(default_factory=dict)
    #: mbit/s of data that reached the receiver in the interval, ACKed or SACKed (SACKed segments
    #: counted at the MSS): bounded by what the path carries; empty in results from before it existed
    delivered_mbps: dict[str, list[float]] = Field(default_factory=dict)
    #: the congestion window (segments, tcpi_snd_cwnd) of the path's subflows at the sample, summed over them
    #: (0: no subflow); empty in results from before it existed
    cwnd: dict[str, list[int]] = Field(default_factory=dict)


class ProgramRun(BaseModel):
    """One program of a `command` workload in one repetition: what ran and what it said."""

    #: "client" or "server"
    role: str
    #: the command line as run (placeholders filled; without the nsenter/mptcpize prefix)
    argv: list[str]
    #: its exit status; negative: killed by that signal; None: it had not exited
    exit_code: int | None = None
    #: the lab stopped it (a timeout, Ctrl-C, or a server still running after the client exited)
    killed: bool = False
    #: its standard output, at most the first 256 KiB (decoded as UTF-8, bad bytes replaced)
    stdout: str = ""
    #: bytes of standard output beyond what `stdout` keeps
    stdout_dropped: int = 0
    #: the last non-empty line it wrote on standard error
    stderr_last: str = ""


class Repetition(BaseModel):
    """One repetition of a scenario, however it ended.

    A repetition that did not complete (`status` failed, timeout or
    interrupted) keeps what was measured until it ended: `bytes` delivered,
    `completion_s` is the elapsed time and `goodput_mbps` the goodput over it,
    time series, MIB deltas. `error` is one line saying why.
    """

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
    #: completed, failed, timeout or interrupted (see REPETITION_STATUSES)
    status: str = "completed"
    #: why a repetition did not complete: one line
    error: str | None = None
    #: with a [run] budget: whether a completed repetition took longer than the budget (None: no budget)
    over_budget: bool | None = None
    #: everything the workload measured beyond the bulk keys above, by metric name (units: mptcplab.metrics)
    metrics: dict[str, float] = Field(default_factory=dict)
    #: per-event series of the workload, for plots: e.g. rr's `t` (s since the first request) and `latency_ms`,
    #: one value per transaction (thinned evenly beyond 20 000); {} for bulk
    series: dict[str, list[float]] = Field(default_factory=dict)
    #: `command` workload: its server and client programs' exit codes and output; [] for the other kinds
    programs: list[ProgramRun] = Field(default_factory=list)
    #: `[run] baseline = "best-path"`: the path this repetition ran the workload on alone, as plain TCP
    #: (None: an MPTCP repetition). Baseline repetitions are data of the run, never part of its medians
    baseline_path: str | None = None

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def fails_run(self) -> bool:
        """Whether this repetition's end fails its run (exit code 1): repetition_fails_run."""
        return repetition_fails_run(self.status, self.baseline_path)

    @property
    def passed(self) -> bool:
        """Completed within the budget (or with no budget): what pass_rate counts."""
        return self.completed and not self.over_budget


def repetition_fails_run(status: str, baseline_path: str | None) -> bool:
    """Whether a repetition that ended with `status` fails its run (exit code 1): an MPTCP repetition that did not
    complete; a best-path baseline one (`baseline_path` set) only when it failed — one that timed out on a path too
    slow for the workload is expected."""
    if baseline_path is not None:
        return status in ("failed", "interrupted")
    return status != "completed"


def run_status(repetitions: Iterable[Any]) -> str:
    """A run's status once all its repetitions ran: 'failed' when one fails the run (repetition_fails_run), else
    'completed' (the repetitions are kept, each with its status). Each item has `.status` and `.baseline_path`: a
    Repetition or a store row. The one rule for the runner, a matrix cell and a fleet-stored run."""
    return "failed" if any(repetition_fails_run(r.status, r.baseline_path) for r in repetitions) else "completed"


class Estimate(BaseModel):
    """A median over `n` values and its 95% interval (mptcplab.analysis.stats.median_ci; docs/statistics.md)."""

    median: float
    ci95: tuple[float, float]
    n: int = 0
    #: fewer values than a 95% interval of a median needs (stats.MIN_INTERVAL_N): `ci95` is then only the
    #: smallest and largest value, which covers the median with `ci_coverage`, and `values` lists them
    small_sample: bool = False
    #: the values themselves when `small_sample` (sorted), else []
    values: list[float] = Field(default_factory=list)
    #: the confidence `ci95` really has: 0.95, or for a small sample 1 - 2^(1-n) (0.75 for 3 values)
    ci_coverage: float = 0.95


class RunResult(BaseModel):
    #: the version of this document's format (FORMAT_VERSION when written by this lab)
    format_version: int = FORMAT_VERSION
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

    def repetition_label(self, rep: Repetition) -> str:
        """How tables, pages and plots name a repetition: '2' (MPTCP), '2 (warm-up)', or for a best-path
        baseline repetition 'TCP on fast (round 2)' (baseline indices follow the MPTCP ones, round by round)."""
        if rep.baseline_path is None:
            return f"{rep.index + 1}" + (" (warm-up)" if rep.warmup else "")
        mptcp = sum(r.baseline_path is None for r in self.repetitions)
        paths = len({r.baseline_path for r in self.repetitions if r.baseline_path is not None}) or 1
        round_ = (rep.index - mptcp) // paths + 1 if rep.index >= mptcp else None
        return f"TCP on {rep.baseline_path}" + (f" (round {round_})" if round_ else "") + (" (warm-up)" if rep.warmup else "")

    def failures(self) -> tuple[list[str], list[str]]:
        """(errors, notes): the run's errors that are failures, and those that are a best-path baseline
        repetition timing out on a path too slow for the workload alone, which the design expects (it fails
        no run: Repetition.fails_run) and is said as a note, not an error."""
        errors, notes = [], []
        for line in self.errors:
            if line.startswith("baseline on ") and ": timeout: " in line:
                what, _, why = line.partition(": timeout: ")
                notes.append(f"TCP on {what.removeprefix('baseline on ')} timed out as expected: {why}")
            else:
                errors.append(line)
        return errors, notes

    def link_stats(self) -> list[tuple[Repetition | None, dict[str, Any]]]:
        """The emulator's counters (environment.link_stats, one entry per repetition that ran one) with the
        repetition each belongs to (None when that cannot be told).

        An entry names its repetition's index; entries stored before they did
        are in the order the repetitions ran, which is not index order when a
        best-path baseline was interleaved (MPTCP 1, TCP on each path, MPTCP 2,
        ...): they are paired with the repetitions in the order they started.
        """
        entries = [e for e in self.environment.get("link_stats") or [] if isinstance(e, dict)]
        by_index = {r.index: r for r in self.repetitions}
        if entries and all("repetition" in e for e in entries):
            return [(by_index.get(e["repetition"]), e) for e in entries]
        ran = sorted(self.repetitions, key=lambda r: (r.started_at, r.index))
        if len(ran) == len(entries):
            return list(zip(ran, entries))
        return [(None, e) for e in entries]

    def to_json(self, timeseries: bool = True) -> dict[str, Any]:
        exclude: Any = {"repetitions": {"__all__": {"timeseries"}}} if not timeseries else None
        return self.model_dump(mode="json", exclude=exclude)
