"""A run's end is one rule (result.run_status, analysis.stats.conclude_run) wherever the run ends: the runner, a
guest's run, a matrix cell, a run the store assembles from a fleet's jobs, a stored run read back."""
from __future__ import annotations

import pytest

from mptcplab.analysis.stats import conclude_run
from mptcplab.result import Repetition, RunResult, run_status
from mptcplab.store import open_store

from .synthetic import repetition, run

pytestmark = pytest.mark.light  # a SQLite store in tmp_path, no traffic


def _baseline(index: int, status: str) -> Repetition:
    """A best-path baseline repetition (plain TCP on path b) that ended with `status`."""
    rep = repetition(index, 2.0)
    return rep.model_copy(update={"baseline_path": "b", "status": status,
                                  "error": None if status == "completed" else "the path is too slow for the workload"})


def test_a_baseline_timeout_fails_no_run_a_timed_out_mptcp_repetition_does() -> None:
    mptcp = repetition(0, 8.0)
    assert run_status([mptcp, _baseline(1, "timeout")]) == "completed"
    assert run_status([mptcp, _baseline(1, "failed")]) == "failed"
    assert run_status([mptcp.model_copy(update={"status": "timeout"}), _baseline(1, "completed")]) == "failed"


def test_conclude_run_orders_sets_the_status_only_when_the_run_ended_and_summarizes() -> None:
    result = run([8.0, 9.0, 10.0])
    result.repetitions.reverse()
    result.repetitions[0] = result.repetitions[0].model_copy(update={"status": "timeout"})  # index 2
    result.status = "interrupted"
    conclude_run(result)  # did not end: the caller's status stands
    assert [r.index for r in result.repetitions] == [0, 1, 2] and result.status == "interrupted"
    assert result.summary["goodput_mbps"].median == pytest.approx(8.5)  # the two completed ones
    conclude_run(result, ended=True)
    assert result.status == "failed"


def test_a_fleet_run_with_a_baseline_timeout_is_stored_completed_as_the_runner_says(tmp_path) -> None:
    """The store assembling a run from separate jobs (add_repetition_once) used its own rule (every repetition
    completed), so a best-path baseline that timed out on the slow path made a fleet run 'failed' where the same
    run on one machine was 'completed'."""
    store = open_store(str(tmp_path / "r.db"))
    result = RunResult(run_id="cell000002", scenario="fl-end", scenario_hash="0" * 16, kernel="k", scheduler="default",
                       path_manager="kernel", backend="tbf", status="running", environment={"tags": {}})
    mptcp, baseline = repetition(0, 8.0), _baseline(1, "timeout")
    assert store.add_repetition_once(result, None, mptcp, total=2)
    assert store.add_repetition_once(result, None, baseline, total=2)
    assert store.load_result("cell000002").status == run_status([mptcp, baseline]) == "completed"
    failed = RunResult(**{**result.model_dump(), "run_id": "cell000003"})
    assert store.add_repetition_once(failed, None, mptcp.model_copy(update={"status": "timeout", "error": "x"}), total=1)
    assert store.load_result("cell000003").status == "failed"
