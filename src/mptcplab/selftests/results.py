"""simult_flows.sh's results as the lab's runs: each case and direction one run, each script run one repetition.

Why runs and not a result type of their own: a selftest case measures what a
`simult-*` scenario measures (the time to move 16 MiB over the same two paths),
so storing it as a RunResult lets `compare`, `history --by kernel`, the report
and the spool read it with no new code, and a selftest's own time is tracked
across kernels like any run. What makes it a selftest is in the data: its
scenario name (``selftest-simult-balanced-upload``), its content (the workload
kind ``selftest``, the script, the case, the direction, the lab scenario it
matches and the ``--set`` that makes that scenario the same transfer) and
`environment["selftest"]`. Pure: no engine, no I/O.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from ..result import Repetition, RunResult
from .simult_flows import CASES, SCRIPT, SelftestLine

#: bytes of the large file each simult_flows.sh transfer moves (its `size=$((2 * 2048 * 4096))`)
TRANSFER_BYTES = 2 * 2048 * 4096
#: the workload kind a selftest case's content and runs carry (metrics.METRICS_BY_KIND judges it by completion_s)
KIND = "selftest"


def selftest_name(scenario: str, direction: str) -> str:
    """The stored scenario name of one selftest case: ``selftest-<lab scenario>-<upload|download>``."""
    return f"selftest-{scenario}-{direction}"


def selftest_content(line: SelftestLine, source: str) -> dict[str, Any]:
    """What a selftest case is, as stored scenario content: the paths and the transfer in the lab's scenario
    format (so the report draws the paths' rates), the workload kind ``selftest`` and the link to the lab's
    scenario (``selftest.scenario`` run with ``selftest.set``)."""
    case = next((c for c in CASES if c.title == line.case), None)
    paths = [{"name": n, "rate": r * 1_000_000, "delay": d / 1000} for n, r, d in
             zip("ab", case.rates_mbit, case.delays_ms)] if case else []
    return {
        "name": selftest_name(line.scenario or line.case.replace(" ", "-"), line.direction),
        "description": f"the kernel selftest {SCRIPT}: {line.title}",
        "path": paths,
        "workload": {"kind": KIND, "direction": line.direction, "size": TRANSFER_BYTES},
        "selftest": {"script": SCRIPT, "case": line.case, "direction": line.direction, "source": source,
                     "scenario": line.scenario,
                     "set": ["workload.direction=download"] if line.direction == "download" else []},
    }


def content_hash(content: dict[str, Any]) -> str:
    """The stored version of a selftest case: its content without the source release (the same case on two
    kernels is one scenario version, as a lab scenario is)."""
    stable = {k: v for k, v in content.items() if k != "selftest"}
    stable["selftest"] = {k: v for k, v in content["selftest"].items() if k != "source"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def repetition_of(line: SelftestLine, index: int, started_at: float = 0.0) -> Repetition:
    """One script run's result for one case.

    A transfer with a measured time completed (its time is completion_s); one past the script's max is
    over_budget, as the script judges it (FAIL, or IGNO for the flaky case). A failure with no time (the
    transfer broke) failed. `error` repeats the script's verdict whenever it was not OK.
    """
    ms = line.measured_ms
    completion = ms / 1000 if ms else 0.0
    status = "completed" if ms else "failed"
    error = None if line.verdict == "ok" else (
        f"{SCRIPT} said {line.verdict.upper()}" + (f": {ms} ms, max {line.max_ms} ms" if ms and line.max_ms else ""))
    metrics: dict[str, float] = {}
    if line.max_ms:
        metrics["selftest_max_ms"] = float(line.max_ms)
    return Repetition(
        index=index, completion_s=round(completion, 6),
        goodput_mbps=round(TRANSFER_BYTES * 8 / completion / 1e6, 4) if completion else 0.0,
        bytes=TRANSFER_BYTES if ms else 0, mptcp=True, subflows=[], mib={}, started_at=started_at,
        status=status, error=error, metrics=metrics,
        over_budget=(ms > line.max_ms) if ms and line.max_ms and status == "completed" else None,
    )


def selftest_runs(script_runs: list[list[SelftestLine]], kernel: str, source: str,
                  environment: dict[str, Any] | None = None, run_ids: dict[str, str] | None = None,
                  label: str | None = None) -> list[tuple[RunResult, dict[str, Any]]]:
    """(run, scenario content) per case and direction, over the parsed output of `script_runs` script runs.

    `kernel` is the guest's release (uname -r), `source` the selftests' origin ("linux-source-6.12
    6.12.117-1"), `environment` what the run's other results record about where it ran (kernel_version,
    executor...). `run_ids` (scenario name -> run id) keeps the ids across calls, so a caller that stores
    after every script run (Store.save_result is idempotent) grows the same runs.
    """
    run_ids = run_ids if run_ids is not None else {}
    by_name: dict[str, tuple[RunResult, dict[str, Any]]] = {}
    for index, lines in enumerate(script_runs):
        for line in lines:
            content = selftest_content(line, source)
            name = content["name"]
            if name not in by_name:
                env = {**(environment or {}), "selftest": content["selftest"], "workload_kind": KIND,
                       "budget_s": line.max_ms / 1000 if line.max_ms else None, "link_backend": "netem"}
                result = RunResult(run_id=run_ids.setdefault(name, secrets.token_hex(8)), scenario=name,
                                   scenario_hash=content_hash(content), kernel=kernel, scheduler="default",
                                   backend="netem", label=label, environment=env, started_at=time.time())
                by_name[name] = (result, content)
            result = by_name[name][0]
            rep = repetition_of(line, index)
            result.repetitions.append(rep)
            if rep.status != "completed":
                result.errors.append(f"repetition {index + 1}: {rep.status}: {rep.error}")
    from ..analysis.stats import summarize_run

    for result, _ in by_name.values():
        summarize_run(result)
        result.status = "completed" if all(r.completed for r in result.repetitions) else "failed"
        result.ended_at = time.time()
    return list(by_name.values())
