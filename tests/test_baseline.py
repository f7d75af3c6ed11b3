"""The best-path baseline (`[run] baseline = "best-path"`) and the scheduler-visible metrics.

Real runs on real namespaces (small transfers, seconds each); the ratios are
judged against what the paths were configured with. The arithmetic of the
ratio's interval and of the idle-while-queued estimator is checked on chosen
numbers, where the rule under test decides the outcome.
"""
from __future__ import annotations

import json
import statistics

import pytest

from mptcplab.analysis.stats import best_path_ratio, paired_best_path_ratio, summarize_run
from mptcplab.metrics import METRICS, metric, repetition_metrics
from mptcplab.mptcp import ConnectionSample, SubflowSample
from mptcplab.probes import scheduler_metrics
from mptcplab.result import Repetition, RunResult, SubflowResult
from mptcplab.runner import RunOptions, run_scenarios
from mptcplab.scenario import load_scenario
from mptcplab.store import open_store
from mptcplab.store.recorder import StoreRecorder

from .conftest import cli, leftovers, requires_root, write_scenario

TWO = """
name = "{name}"
[[path]]
name = "{a}"
rate = "{rate_a}"
delay = "{delay_a}"
[[path]]
name = "{b}"
rate = "{rate_b}"
delay = "{delay_b}"
[workload]
{workload}
[run]
timeout = "30s"
baseline = "best-path"
"""


def _run(tmp_path, repeat: int = 1, sinks=(), **kw) -> RunResult:
    values = dict(name="t-baseline", a="a", b="b", rate_a="20mbit", rate_b="20mbit", delay_a="5ms", delay_b="5ms",
                  workload='kind = "bulk"\nsize = "2MiB"')
    values.update(kw)
    before = set(leftovers())
    result = run_scenarios([load_scenario(write_scenario(tmp_path, TWO.format(**values)))], RunOptions(repeat=repeat, sinks=list(sinks)))[0]
    assert set(leftovers()) <= before, "the run left namespaces behind"
    return result


@pytest.fixture(scope="module")
def equal_paths(tmp_path_factory) -> RunResult:
    """Two equal 20 mbit paths, 2 MiB upload, 2 rounds of MPTCP + plain TCP on a + plain TCP on b."""
    return _run(tmp_path_factory.mktemp("equal"), repeat=2)


@requires_root
def test_two_equal_paths_give_about_twice_the_best_path(equal_paths):
    result = equal_paths
    assert result.status == "completed", result.errors
    reps = result.repetitions
    # run interleaved: MPTCP 1, TCP a 1, TCP b 1, MPTCP 2, ...; listed in index order, MPTCP ones first (0..n-1)
    assert [r.baseline_path for r in sorted(reps, key=lambda r: r.started_at)] == [None, "a", "b", None, "a", "b"]
    assert [r.baseline_path for r in reps] == [None, None, "a", "b", "a", "b"]
    assert [r.index for r in reps] == list(range(6))
    assert result.environment["baseline"]["metric"] == "goodput_mbps"
    for r in reps:
        assert r.status == "completed", r.error
        shares = {s.path: s for s in r.subflows}
        assert sum(s.share for s in r.subflows) == pytest.approx(1.0, abs=0.002)
        assert sum(s.metrics["capacity_share"] for s in r.subflows) == pytest.approx(1.0)
        if r.baseline_path is None:
            assert r.mptcp and all(s.bytes_sent > 0 for s in r.subflows)
            assert all(s.metrics["idle_queued_share"] < 0.5 for s in r.subflows), [s.metrics for s in r.subflows]
            assert "ofo_queue" in r.metrics and "reinjections" in r.metrics
        else:
            # plain TCP on one path alone: every byte on it, the other path idle whenever data waited
            assert not r.mptcp
            other = "b" if r.baseline_path == "a" else "a"
            assert shares[r.baseline_path].share == 1.0 and shares[other].bytes_sent == 0
            assert shares[other].metrics["idle_queued_share"] == 1.0
            assert shares[r.baseline_path].metrics["idle_queued_share"] < 0.2
            assert shares[r.baseline_path].congestion_control == result.environment["tcp"]["congestion_control"]
    mptcp = [r for r in reps if r.baseline_path is None]
    # the medians are the MPTCP repetitions' alone
    assert result.summary["goodput_mbps"].n == 2
    assert result.summary["goodput_mbps"].median == pytest.approx(statistics.median(r.goodput_mbps for r in mptcp))
    est = result.summary["mptcp_vs_best_path"]
    assert 1.6 <= est.median <= 2.1, est
    assert est.ci95[0] <= est.median <= est.ci95[1]
    assert all(1.5 <= r.metrics["mptcp_vs_best_path"] <= 2.2 for r in mptcp)
    assert result.summary["a.idle_queued_share"].n == 2
    from rich.console import Console

    from mptcplab.report import print_run

    console = Console(record=True, width=200)
    print_run(result, console)
    text = console.export_text()
    assert "TCP on a" in text and "TCP on b" in text  # the baseline repetitions, labelled by their path
    assert f"mptcp_vs_best_path (goodput_mbps, > 1: MPTCP better than the best path alone as plain TCP): {est.median:.3f}" in text


@requires_root
def test_a_baseline_run_is_stored_and_compared(equal_paths, tmp_path):
    result = equal_paths
    db = str(tmp_path / "results.db")
    store = open_store(db)
    store.save_result(result, None)
    back = store.load_result(result.run_id)
    assert back.to_json() == result.to_json()  # baseline_path and every path's metrics round-trip
    samples = store.samples([result.run_id], "goodput_mbps")
    assert len(samples["t-baseline"].values) == 2  # the baseline repetitions are data, not samples
    assert len(store.samples([result.run_id], "mptcp_vs_best_path")["t-baseline"].values) == 2
    assert len(store.samples([result.run_id], "a.idle_queued_share")["t-baseline"].values) == 2
    twin = result.model_copy(update={"run_id": result.run_id[:-1] + ("0" if result.run_id[-1] != "0" else "1")})
    store.save_result(twin, None)  # the same numbers as another run: compare refuses a selection against itself
    proc = cli("compare", "--baseline", f"run:{result.run_id}", "--candidate", f"run:{twin.run_id}",
               "--metric", "mptcp_vs_best_path", "--metric", "b.cwnd_median", "--format", "json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert [c["metric"] for c in json.loads(proc.stdout)["comparisons"]] == ["mptcp_vs_best_path", "b.cwnd_median"]
    hist = cli("history", "t-baseline", "--metric", "mptcp_vs_best_path", "--db", db)
    assert hist.returncode == 0, hist.stderr
    assert result.run_id in hist.stdout


@requires_root
def test_a_fast_and_a_slow_path_give_less_than_the_fast_path_alone(tmp_path):
    """100 mbit/10 ms + 2 mbit/1 ms (the reported case, 2 MiB): MPTCP below the fast path alone."""
    db = str(tmp_path / "results.db")
    result = _run(tmp_path, a="fast", b="slow", rate_a="100mbit", rate_b="2mbit", delay_a="10ms", delay_b="1ms",
                  sinks=[StoreRecorder(db)])
    assert result.status == "completed", result.errors
    assert open_store(db).load_result(result.run_id).to_json() == result.to_json()  # stored as it ran
    by_path = {r.baseline_path: r for r in result.repetitions}
    assert by_path["fast"].status == "completed"
    # 2 MiB take 8 s on 2 mbit: stopped at twice the fast path's time (at least 2 s), its goodput so far kept
    slow = by_path["slow"]
    assert slow.status == "timeout" and "cannot be the best path" in (slow.error or "")
    assert not slow.fails_run and 0.8 <= slow.goodput_mbps / 2.0 <= 1.0
    assert result.summary["mptcp_vs_best_path"].median < 1.0
    mptcp = by_path[None]
    caps = {s.path: s.metrics["capacity_share"] for s in mptcp.subflows}
    assert caps["fast"] == pytest.approx(100 / 102, abs=1e-4)
    # the emulator's counters (wire backend) name the repetition they belong to, baseline ones interleaved
    pairs = result.link_stats()
    assert all(rep is not None and entry.get("repetition") == rep.index for rep, entry in pairs)
    assert [result.repetition_label(r) for r in result.repetitions if r.baseline_path] == [
        "TCP on fast (round 1)", "TCP on slow (round 1)"]


@requires_root
@pytest.mark.parametrize("workload, key", [
    ('kind = "rr"\nrequest = "200B"\nresponse = "2KiB"\ncount = 40', "latency_p50_ms"),
    ('kind = "flows"\ncount = 6\nsize = "64KiB"', "fct_p50_ms"),
])
def test_latency_workloads_compare_latency_on_each_path_alone(tmp_path, workload, key):
    """Two equal 10 ms paths: one path alone answers as fast as MPTCP (ratio about 1), every connection
    of the plain TCP repetitions stays on its path."""
    result = _run(tmp_path, name="t-baseline-lat", delay_a="10ms", delay_b="10ms", workload=workload)
    assert result.status == "completed", result.errors
    assert result.environment["baseline"]["metric"] == key
    for r in result.repetitions:
        assert r.status == "completed", r.error
        assert key in r.metrics
        if r.baseline_path:
            assert {s.path: s.bytes_sent > 0 for s in r.subflows}[r.baseline_path]
            assert all(s.bytes_sent == 0 for s in r.subflows if s.path != r.baseline_path)
    assert 0.5 <= result.summary["mptcp_vs_best_path"].median <= 2.0


def test_a_bad_baseline_is_one_line(tmp_path):
    path = write_scenario(tmp_path, TWO.format(name="t-bad", a="a", b="b", rate_a="1mbit", rate_b="1mbit",
                                               delay_a="1ms", delay_b="1ms", workload='size = "1MiB"'))
    proc = cli("run", str(path), "--set", "run.baseline=fastest", "--no-store")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "run.baseline" in lines[0], proc.stderr


# -- the arithmetic, on chosen numbers ----------------------------------------------------------------------
def _rep(index: int, value: float, path: str | None = None, status: str = "completed", **metrics: float) -> Repetition:
    return Repetition(index=index, completion_s=1.0, goodput_mbps=value, bytes=1, mptcp=path is None, subflows=[], mib={},
                      status=status, baseline_path=path, metrics=metrics)


def _result(reps: list[Repetition], metric_name: str = "goodput_mbps") -> RunResult:
    return RunResult(scenario="syn", kernel="k", scheduler="default", backend="wire", repetitions=reps,
                     environment={"baseline": {"mode": "best-path", "metric": metric_name}})


def test_the_ratio_is_mptcp_over_the_best_path_median_with_a_bootstrap_interval():
    reps = [_rep(0, 30.0), _rep(1, 32.0), _rep(2, 34.0),
            _rep(3, 20.0, "a"), _rep(4, 21.0, "a"), _rep(5, 19.0, "a"),
            _rep(6, 5.0, "b"), _rep(7, 6.0, "b", status="timeout"), _rep(8, 1.0, "b", status="failed")]
    result = _result(reps)
    summarize_run(result)
    est = result.summary["mptcp_vs_best_path"]
    assert est.median == pytest.approx(32.0 / 20.0, abs=1e-4) and est.n == 3
    assert 30.0 / 21.0 - 1e-4 <= est.ci95[0] <= est.median <= est.ci95[1] <= 34.0 / 19.0 + 1e-4  # rounded to 4 places
    assert result.summary["goodput_mbps"].median == 32.0 and result.summary["goodput_mbps"].n == 3
    # one repetition against its own round's repetition on the best path
    assert paired_best_path_ratio(reps, reps[1], [reps[4], reps[7]], "goodput_mbps") == pytest.approx(32.0 / 21.0, abs=1e-4)


def test_a_latency_ratio_is_the_best_path_over_mptcp():
    reps = [_rep(0, 1, latency_p50_ms=40.0), _rep(1, 1, "a", latency_p50_ms=20.0), _rep(2, 1, "b", latency_p50_ms=30.0),
            # a timed-out latency repetition is not used (its unanswered transactions are missing)
            _rep(3, 1, "a", status="timeout", latency_p50_ms=1.0)]
    est = best_path_ratio(_result(reps, "latency_p50_ms"), "latency_p50_ms")
    assert est is not None and est.median == pytest.approx(0.5)
    assert metric("mptcp_vs_best_path").better == "higher"


def test_subflow_metrics_have_their_table_row_under_their_path_name():
    rep = Repetition(index=0, completion_s=1, goodput_mbps=1, bytes=1, mptcp=True, mib={},
                     subflows=[SubflowResult(path="wifi", share=1.0, metrics={"idle_queued_share": 0.25})])
    assert repetition_metrics(rep)["wifi.idle_queued_share"] == 0.25
    row = metric("wifi.idle_queued_share")
    assert row.better == "lower" and row.scope == "subflow" and "wifi" in row.description
    assert "wifi.idle_queued_share" in METRICS and METRICS["wifi.cwnd_median"] == "higher"
    assert "wifi.nonsense" not in METRICS and "idle_queued_share" not in METRICS


def _sf(sid: int, local: str, sent: int, cwnd: int = 10) -> SubflowSample:
    return SubflowSample(id=sid, local=(local, 1000 + sid), remote=("10.0.100.2", 5201), bytes_sent=sent,
                         bytes_acked=sent, bytes_received=0, bytes_retrans=0, total_retrans=0, rtt_us=1000,
                         min_rtt_us=900, snd_cwnd=cwnd, state=1, busy_time_us=4000, rwnd_limited_us=2000)


def test_idle_while_queued_counts_intervals_a_path_sent_nothing_while_data_waited():
    """Samples every 50 ms: path a sends in every interval, b only in the first two; data waits in the
    first four intervals, then nothing is queued."""
    sent_b = [0, 100, 100, 100, 100, 100]
    queued = [500, 500, 500, 500, 0, 0]
    samples = [(0.05 * i, ConnectionSample(subflows_total=2, mptcp_bytes_sent=0, mptcp_bytes_acked=0,
                                            mptcp_bytes_received=0, mptcp_retransmits=0, mptcp_bytes_retrans=0,
                                            subflows=(_sf(1, "10.0.1.1", 1000 * (i + 1), cwnd=10 + i),
                                                      _sf(2, "10.0.2.1", sent_b[i])),
                                            queued_bytes=queued[i]))
               for i in range(6)]
    path_of = {("10.0.1.1", 1001, "10.0.100.2", 5201): "a", ("10.0.2.1", 1002, "10.0.100.2", 5201): "b"}
    m = scheduler_metrics(samples, path_of, ["a", "b", "c"], {"a": 3e6, "b": 1e6, "c": 0.0})
    # queued at the start of intervals 1-4 (0.2 s); b sent in interval 1 only; c has no subflow at all
    assert m["a"]["idle_queued_s"] == 0.0 and m["a"]["idle_queued_share"] == 0.0
    assert m["b"]["idle_queued_s"] == pytest.approx(0.15) and m["b"]["idle_queued_share"] == 0.75
    assert m["c"]["idle_queued_share"] == 1.0 and "cwnd_median" not in m["c"]
    assert m["a"]["capacity_share"] == 0.75 and m["b"]["capacity_share"] == 0.25
    assert m["a"]["cwnd_median"] == 12.5 and m["a"]["cwnd_max"] == 15.0
    assert m["a"]["busy_ms"] == 4.0 and m["a"]["rwnd_limited_ms"] == 2.0
