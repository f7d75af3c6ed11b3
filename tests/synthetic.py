"""Synthetic stored runs: RunResults with chosen values, for tests of what is computed from a store.

What the tests built on these judge is arithmetic on stored numbers
(verdicts, selectors, listings, exports), not the network: the values are
chosen so that the rule under test decides the outcome.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from mptcplab.result import Repetition, RunResult, SubflowResult

SIZE = 8 * 1024 * 1024  # bytes of every synthetic transfer


def repetition(index: int, goodput_mbps: float, warmup: bool = False, started_at: float = 0.0) -> Repetition:
    """One repetition of an 8 MiB transfer at `goodput_mbps` over two paths sharing it 60/40."""
    completion = SIZE * 8 / (goodput_mbps * 1e6)
    return Repetition(
        index=index, completion_s=round(completion, 6), goodput_mbps=goodput_mbps, bytes=SIZE, mptcp=True,
        subflows=[SubflowResult(path="a", bytes_sent=int(SIZE * 0.6), share=0.6, rtt_median_ms=20.0, retransmits=1),
                  SubflowResult(path="b", bytes_sent=int(SIZE * 0.4), share=0.4, rtt_median_ms=40.0, retransmits=2)],
        mib={"MPTcpExtMPCapableSYNTX": 1}, warmup=warmup, started_at=started_at, timeseries=None)


def run(goodputs: Sequence[float], *, scenario: str = "syn", label: str | None = None, kernel: str = "6.18.0-test",
        tags: dict[str, str] | None = None, warmup: float | None = None, started_at: float | None = None,
        scenario_hash: str = "0123456789abcdef", run_id: str | None = None) -> RunResult:
    """A completed run whose measured repetitions have these goodputs; `warmup` adds a first, warm-up repetition."""
    start = started_at if started_at is not None else time.time()
    reps = [repetition(0, warmup, warmup=True, started_at=start)] if warmup is not None else []
    reps += [repetition(len(reps) + i, g, started_at=start + 10 * (i + 1)) for i, g in enumerate(goodputs)]
    return RunResult(
        run_id=run_id or secrets.token_hex(5), scenario=scenario, scenario_hash=scenario_hash, kernel=kernel,
        scheduler="default", backend="wire", label=label, repetitions=reps, status="completed",
        environment={"tags": dict(tags or {}), "kernel_release": kernel, "mptcplab": {"version": "test", "commit": ""}},
        started_at=start, ended_at=start + 10 * (len(reps) + 1))
