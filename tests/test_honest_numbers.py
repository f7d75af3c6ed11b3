"""Numbers a user can trust (issue 24, "Wrong numbers"): each test makes the situation that once gave a wrong
number and judges the number the lab gives now."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from mptcplab import RunOptions, load_scenario, run_scenario
from mptcplab.analysis.stats import MIN_INTERVAL_N, median_ci, summarize_run
from mptcplab.mptcp import ConnectionSample, SubflowSample
from mptcplab.probes import summarize
from mptcplab.report import print_details, print_run, run_table
from mptcplab.result import Repetition, RunResult, SubflowResult
from mptcplab.runner import congestion_not_applied
from mptcplab.store import open_store
from mptcplab.topology import Topology, path_ports

from .conftest import cli_in_process, light, requires_root, write_scenario
from .synthetic import run as synthetic_run


def _text(result: RunResult, details: bool = False) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=250, force_terminal=False, color_system=None)
    (print_details if details else print_run)(result, console)
    return buf.getvalue()


# -- a 95% interval needs enough values ------------------------------------------------------------------------
@light
def test_three_values_give_the_values_not_a_narrow_interval():
    """The issue's "1.463 [1.462, 1.463]": three values are too few for a 95% interval of a median."""
    est = median_ci([1.463, 1.462, 1.463])
    assert est.small_sample and est.values == [1.462, 1.463, 1.463]
    assert est.ci95 == (1.462, 1.463) and est.ci_coverage == 0.75  # [min, max] covers the median 1 - 2^(1-3)
    run = synthetic_run([30.0, 31.0, 32.0])
    summarize_run(run)
    text = _text(run)
    assert "goodput_mbps: median 31.000 mbit/s (3 values: 30.000, 31.000, 32.000; too few for a 95% interval)" in text, text
    assert "95% CI" not in text.split("goodput_mbps")[1].splitlines()[0]
    wide = median_ci([float(v) for v in range(MIN_INTERVAL_N)])
    assert not wide.small_sample and wide.values == [] and wide.ci_coverage == 0.95
    assert 0.0 <= wide.ci95[0] <= wide.median <= wide.ci95[1] <= MIN_INTERVAL_N - 1


# -- pass_rate without a budget ----------------------------------------------------------------------------------
@light
def test_pass_rate_without_a_budget_says_it_is_the_completion_rate():
    run = synthetic_run([30.0, 31.0, 32.0, 33.0, 34.0])
    for rep in run.repetitions[:2]:
        rep.status, rep.error = "timeout", "the transfer did not finish within the timeout of 30s"
    summarize_run(run)
    text = _text(run)
    assert "pass_rate: 60% of 5 repetitions completed (no budget: the completion rate)" in text, text
    assert "within budget" not in text
    run.environment["budget_s"] = 2.5
    for rep in run.repetitions[2:]:
        rep.over_budget = rep.index == 2
    summarize_run(run)
    assert "pass_rate: 40% of 5 repetitions completed within the budget of 2.5s" in _text(run)


# -- export: each row its repetition's status ---------------------------------------------------------------------
@light
def test_csv_export_gives_each_repetition_its_own_status_and_error(tmp_path):
    run = synthetic_run([30.0, 31.0, 32.0, 33.0, 34.0], scenario="demo")
    run.repetitions[1].status, run.repetitions[1].error = "timeout", "the transfer did not finish within the timeout of 30s"
    run.repetitions[3].status, run.repetitions[3].error = "failed", "only 1 of 2 subflows came up"
    run.status = "failed"
    db = tmp_path / "r.db"
    open_store(str(db)).save_result(run, load_scenario("demo").normalized())
    out = cli_in_process("export", "--format", "csv", "--db", str(db))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["status"] for r in rows] == ["completed", "timeout", "completed", "failed", "completed"]
    assert rows[1]["error"].startswith("the transfer did not finish") and rows[0]["error"] == ""
    assert {r["run_status"] for r in rows} == {"failed"}


# -- share is of delivered data ----------------------------------------------------------------------------------
def _sf(addr: str, port: int, sent: int, acked: int, retrans: int) -> SubflowSample:
    return SubflowSample(id=port, local=(addr, port), remote=("10.0.100.2", 5201), bytes_sent=sent, bytes_acked=acked,
                         bytes_received=0, bytes_retrans=retrans, total_retrans=retrans // 1000, rtt_us=20000,
                         min_rtt_us=20000, snd_cwnd=10, state=1)


@light
def test_a_path_share_counts_delivered_bytes_not_retransmissions():
    """The issue's dead path: 16,000 B sent of which 7,000 retransmitted, 9,000 delivered, against 36,000 B
    delivered on the live path: its share is 9,000 / 45,000 = 20%, not 16,000 / 52,000 = 30.8%."""
    topo = Topology(client="c", router="r", server="s", emulator=None,
                    paths=[path_ports(0, "live", False), path_ports(1, "dead", False)])
    live, dead = _sf("10.0.1.1", 40000, 36000, 36000, 0), _sf("10.0.2.1", 40001, 16000, 9000, 7000)
    sample = ConnectionSample(subflows_total=2, mptcp_bytes_sent=52000, mptcp_bytes_acked=45000, mptcp_bytes_received=0,
                              mptcp_retransmits=7, mptcp_bytes_retrans=7000, subflows=(live, dead))
    results, _ = summarize([(0.05, sample)], topo, sender_is_client=True)
    by = {r.path: r for r in results}
    assert by["dead"].share == 0.2 and by["live"].share == 0.8
    assert by["dead"].metrics["sent_share"] == round(16000 / 52000, 4) and by["dead"].metrics["retrans_bytes"] == 7000
    assert by["live"].metrics["retrans_bytes"] == 0 and by["dead"].bytes_retrans == 7000


# -- the emulator's counters add up in `show` ---------------------------------------------------------------------
@light
def test_show_counts_frames_in_flight_so_the_counters_add_up():
    run = synthetic_run([30.0])
    run.environment["link_stats"] = [{"paths": {"fast": {"up": {
        "frames_in": 3204, "frames_out": 3179, "drops": {"loss": 0, "queue": 0}, "queued": 25, "in_flight": 25,
        "lateness_us": {"p50": 40.0, "p99": 90.0, "max": 300.0}}}}}]
    text = _text(run, details=True)
    header = next(line for line in text.splitlines() if "frames in" in line)
    row = next(line for line in text.splitlines() if "fast" in line and "3204" in line)
    assert "in flight at end" in header
    cells = [c.strip() for c in row.replace("┃", "│").split("│") if c.strip()]
    assert cells[3:7] == ["3204", "3179", "none", "25"], cells


# -- a latency workload is shown by its latency ------------------------------------------------------------------
def _rr_run(scenario: str = "rr-asymmetric-rtt") -> RunResult:
    run = synthetic_run([0.02, 0.02, 0.02, 0.02, 0.02, 0.02], scenario=scenario)
    for i, rep in enumerate(run.repetitions):
        rep.metrics.update(latency_p50_ms=10.0 + i, latency_p99_ms=40.0 + i, latency_max_ms=90.0 + i)
    summarize_run(run)
    return run


@light
def test_runs_show_and_the_run_table_give_a_latency_workload_its_latency(tmp_path):
    run = _rr_run()
    table = _text(run)
    head = next(line for line in table.splitlines() if "rep" in line and "share" in line)
    assert "latency p50 ms" in head and "latency p99 ms" in head and "latency max ms" in head, head
    assert "goodput" not in head and "completion" not in head
    assert "latency_p99_ms: median 42.500 ms" in table and "goodput_mbps:" not in table, table
    db = tmp_path / "rr.db"
    store = open_store(str(db))
    store.save_result(run, load_scenario("rr-asymmetric-rtt").normalized())
    bulk = synthetic_run([30.0, 32.0, 34.0], scenario="demo")
    store.save_result(bulk, load_scenario("demo").normalized())
    listed = cli_in_process("runs", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    line = {r.run_id: next(x for x in listed.stdout.splitlines() if r.run_id in x) for r in (run, bulk)}
    assert "latency p50 / p99 / max ms" in listed.stdout
    rr, demo = line[run.run_id], line[bulk.run_id]
    assert "12.5 / 42.5 / 92.5" in rr and "0.02" not in rr, rr
    assert "32.000 mbit/s" in demo and "/" not in demo.split("32.000 mbit/s")[1], demo  # no latency for a bulk run
    shown = cli_in_process("show", run.run_id, "--db", str(db))
    assert shown.returncode == 0 and "latency_max_ms: median 92.500 ms" in shown.stdout and "goodput_mbps:" not in shown.stdout


# -- a condition the kernel did not apply is said ----------------------------------------------------------------
@light
def test_a_subflow_on_another_congestion_control_is_one_line():
    subflows = [SubflowResult(path="a", congestion_control="cubic"), SubflowResult(path="b", congestion_control="bbr")]
    line = congestion_not_applied("cubic", subflows)
    assert line is not None and "\n" not in line and "used bbr" in line and "on b " in line
    assert congestion_not_applied("cubic", [SubflowResult(path="a", congestion_control="cubic")]) is None
    assert congestion_not_applied("cubic", [SubflowResult(path="a")]) is None  # unknown is not a contradiction


# -- with traffic --------------------------------------------------------------------------------------------------
LOSSY_UPLOAD = """
name = "t-lossy-duration"
[[path]]
name = "slow"
rate = "1mbit"
delay = "50ms"
loss = "10%"
[workload]
kind = "bulk"
direction = "upload"
duration = "3s"
[run]
repeat = 5
timeout = "30s"
link_backend = "wire"
"""


@requires_root
def test_a_duration_upload_on_a_slow_lossy_path_ends_at_its_duration_not_in_a_timeout(tmp_path):
    """The issue's scenario: before the fix 7 of 10 repetitions were "timeout" at 3.51 s (one send() blocked
    past the deadline by a retransmission timeout); a duration transfer ends when its duration is over."""
    result = run_scenario(load_scenario(write_scenario(tmp_path, LOSSY_UPLOAD)), RunOptions())
    statuses = [(r.status, r.error, round(r.completion_s, 3)) for r in result.repetitions]
    assert all(r.status == "completed" for r in result.repetitions), statuses
    assert all(r.completion_s >= 3.0 and r.bytes > 0 for r in result.repetitions), statuses


COMMAND_CC = """
name = "t-cmd-cc"
[[path]]
name = "a"
rate = "20mbit"
[[path]]
name = "b"
rate = "20mbit"
[tcp]
congestion_control = "{cc}"
[run]
repeat = 1
timeout = "30s"
link_backend = "wire"
[workload]
kind = "command"
client = "iperf3 -c {{server}} -p {{port}} -t 2 --json"
server = "iperf3 -s -1 -p {{port}}"
"""


@requires_root
@pytest.mark.skipif(not (shutil.which("iperf3") and shutil.which("mptcpize")), reason="needs iperf3 and mptcpize")
def test_a_command_workloads_programs_get_the_scenarios_congestion_control(tmp_path, capfd):
    """cubic is not in this host's net.ipv4.tcp_allowed_congestion_control (reno bbr), so a namespace default of
    cubic is refused unless the lab allows it while setting it: iperf3's own sockets and every subflow the kernel
    opens for it use cubic, and the host's allowed list is as it was."""
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
    before = allowed.read_text()
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    host_default = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    cc = next((c for c in ("cubic", "reno", *available) if c in available and c not in before.split()
               and c != host_default), "cubic")
    result = run_scenario(load_scenario(write_scenario(tmp_path, COMMAND_CC.format(cc=cc))), RunOptions())
    rep = result.repetitions[0]
    assert rep.status == "completed", rep.error
    assert allowed.read_text() == before
    assert [sf.congestion_control for sf in rep.subflows] == [cc, cc], rep.subflows
    iperf = json.loads(next(p for p in rep.programs if p.role == "client").stdout)
    assert iperf["end"]["sender_tcp_congestion"] == cc, iperf["end"].get("sender_tcp_congestion")
    assert result.environment["sysctls_client"]["net.ipv4.tcp_congestion_control"] == cc
    assert result.environment["tcp"]["applied"] and not result.environment["tcp"].get("not_applied")
    assert "warning:" not in capfd.readouterr().err
