"""The workload kinds beyond bulk, over real MPTCP on two real paths (wire backend).

Timings are judged as ratios of what the paths were configured with (RTT,
serialization), never as absolute thresholds.
"""
from __future__ import annotations

import signal
import statistics
import subprocess
import threading

import pytest

from .conftest import CLI, cli, cli_in_process, lab_namespaces, namespaces_of_pid, requires_root, run_once, wait_for, write_scenario, light

pytestmark = requires_root

PATHS = """
name = "{name}"
[[path]]
name = "a"
rate = "{rate}"
delay = "{delay}"
[[path]]
name = "b"
rate = "{rate}"
delay = "{delay}"
[run]
repeat = 1
timeout = "60s"
link_backend = "wire"
"""


def scenario(name: str, workload: str, rate: str = "10mbit", delay: str = "10ms", extra: str = "") -> str:
    return PATHS.format(name=name, rate=rate, delay=delay) + "[workload]\n" + workload + extra


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("rr-", "stream-", "flows-", "subflow-sampler"))}


def test_rr_latency_is_the_rtt_plus_serialization(tmp_path):
    """On two 10 mbit paths with 10 ms one-way delay, no transaction beats the 20 ms RTT, and the
    median is within RTT + serialization of request and response, plus 25% slack (emulator
    lateness, Python scheduling)."""
    result, rep = run_once(tmp_path, scenario("t-rr", 'kind = "rr"\nrequest = "200B"\nresponse = "2KiB"\ncount = 100\n'),
                           backend="wire")
    assert rep.status == "completed", rep.error
    assert rep.mptcp
    m = rep.metrics
    assert m["transactions"] == 100 and len(rep.series["latency_ms"]) == 100
    assert rep.bytes == 100 * (200 + 2048)
    rtt_ms = 2 * 10.0
    # one request frame and two response frames, each with 14 + 20 + 32 (TCP + MPTCP DSS options) bytes of headers
    serialization_ms = (200 + 2048 + 3 * 66) * 8 / 10e6 * 1000
    assert min(rep.series["latency_ms"]) / rtt_ms >= 1.0
    assert m["latency_p50_ms"] / rtt_ms >= 1.0
    assert m["latency_p50_ms"] / (rtt_ms + serialization_ms) <= 1.25, m
    assert m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p99_ms"] <= m["latency_p999_ms"] <= m["latency_max_ms"]
    # closed loop with one outstanding: transactions/s is the inverse of the mean latency
    mean_ms = statistics.fmean(rep.series["latency_ms"])
    assert 0.8 <= m["transactions_per_s"] * mean_ms / 1000 <= 1.0 + 1e-9
    assert "latency_p50_ms" in result.summary
    assert not _threads(), "the workload left threads running"


def test_rr_open_loop_keeps_its_rate(tmp_path):
    """Open-loop at 50/s, fixed arrivals, for 2 s: about 100 transactions whatever the latency."""
    _, rep = run_once(tmp_path, scenario("t-rr-open", 'kind = "rr"\nrate = "50/s"\narrivals = "fixed"\nduration = "2s"\n'))
    assert rep.status == "completed", rep.error
    assert rep.metrics["transactions"] == 100
    assert 0.9 <= rep.metrics["transactions_per_s"] / 50 <= 1.1
    assert min(rep.series["latency_ms"]) / 20.0 >= 1.0


def test_stream_chunk_delays_grow_when_the_paths_drop_below_its_rate(tmp_path):
    """A 4 mbit stream over 2 x 10 mbit: chunks arrive in about one RTT plus serialization. At 2 s both
    paths drop to 1 mbit (2 mbit together, half the stream's rate): the chunks queue and their delays
    grow, past the deadline."""
    events = "".join(f'[[event]]\nat = "2s"\npath = "{p}"\naction = "set"\nrate = "1mbit"\n' for p in "ab")
    _, rep = run_once(tmp_path, scenario("t-stream", 'kind = "stream"\nrate = "4mbit"\nchunk = "32KiB"\n'
                                         'deadline = "200ms"\nduration = "4s"\n', extra=events), backend="wire")
    assert rep.status == "completed", rep.error
    t, delay = rep.series["t"], rep.series["delay_ms"]
    n_chunks = -(-4 * 4e6 // (32 * 1024 * 8))
    assert len(delay) == rep.metrics["chunks"] == n_chunks
    assert rep.bytes == n_chunks * 32 * 1024
    before = [d for ti, d in zip(t, delay) if ti < 1.9]
    after = [d for ti, d in zip(t, delay) if ti >= 2.5]
    assert before and after
    assert statistics.median(after) / statistics.median(before) > 3, (before, after)
    assert min(before) / 10.0 >= 1.0  # never faster than the one-way delay
    assert rep.metrics["late_chunks"] >= len(after) / 2
    assert rep.metrics["chunk_delay_p99_ms"] >= rep.metrics["chunk_delay_p50_ms"]
    assert rep.metrics["stall_s"] > 0


@pytest.mark.parametrize("mode", ["sequential-upload", "rate-download"])
def test_flows_count_and_sizes_match(tmp_path, mode):
    """20 flows of 64 KiB: every one completes, the receivers got 20 x 64 KiB, every flow's completion
    time is at least the 10 ms RTT."""
    extra = 'direction = "upload"\n' if mode == "sequential-upload" else 'direction = "download"\nrate = "20/s"\n'
    _, rep = run_once(tmp_path, scenario("t-flows", 'kind = "flows"\ncount = 20\nsize = "64KiB"\n' + extra,
                                         rate="50mbit", delay="5ms"), backend="wire")
    assert rep.status == "completed", rep.error
    assert rep.metrics["flows_completed"] == 20 and len(rep.series["fct_ms"]) == 20
    assert rep.bytes == 20 * 64 * 1024
    assert sum(s.bytes_acked for s in rep.subflows) >= 20 * 64 * 1024
    assert 0 <= rep.metrics["multi_subflow_flows"] <= 20
    assert min(rep.series["fct_ms"]) / 10.0 >= 1.0
    assert rep.metrics["fct_p50_ms"] <= rep.metrics["fct_p99_ms"] <= rep.metrics["fct_max_ms"]
    assert not _threads(), "the workload left threads running"


def test_bulk_both_directions_carry_data_at_once(tmp_path):
    """Upload and download at once over 2 x 10 mbit (each direction has 20 mbit): each gets most of its
    direction's capacity, and goodput counts both."""
    _, rep = run_once(tmp_path, scenario("t-both", 'direction = "both"\nduration = "3s"\n', delay="5ms"), backend="wire")
    assert rep.status == "completed", rep.error
    up, down = rep.metrics["upload_goodput_mbps"], rep.metrics["download_goodput_mbps"]
    assert up / 20.0 >= 0.6 and down / 20.0 >= 0.6, rep.metrics
    assert 0.9 <= rep.goodput_mbps / (up + down) <= 1.1
    assert {s.path for s in rep.subflows if s.bytes_acked > 0} == {"a", "b"}  # the upload connection's subflows
    assert not _threads()


INTERRUPTED = {
    "rr": 'kind = "rr"\nconcurrency = 4\nduration = "30s"\n',
    "stream": 'kind = "stream"\nrate = "4mbit"\nduration = "30s"\n',
    # 30 s of arrivals at 100/s: still running when Ctrl-C comes, and small enough to finish within the timeout
    "flows": 'kind = "flows"\ncount = 3000\nsize = "16KiB"\nrate = "100/s"\n',
}


@pytest.mark.parametrize("kind", sorted(INTERRUPTED))
def test_ctrl_c_leaves_nothing(tmp_path, kind):
    path = write_scenario(tmp_path, scenario(f"t-{kind}-int", INTERRUPTED[kind]))
    proc = subprocess.Popen([CLI, "run", str(path), "--no-store"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(ns.endswith("-srv") for ns in namespaces_of_pid(proc.pid)), timeout=90)
    mine = namespaces_of_pid(proc.pid)
    wait_for(lambda: False, timeout=1.5)  # traffic flowing
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not (mine & lab_namespaces())


BAD = {
    "rr concurrency 0": ('kind = "rr"\nconcurrency = 0\ncount = 10\n', "workload.concurrency"),
    "rr rate without /s": ('kind = "rr"\nrate = "10"\ncount = 10\n', "'10/s'"),
    "rr bare rate": ('kind = "rr"\nrate = 10\ncount = 10\n', "'10/s'"),
    "rr rate and concurrency": ('kind = "rr"\nrate = "10/s"\nconcurrency = 2\ncount = 10\n', "not both"),
    "rr arrivals without rate": ('kind = "rr"\narrivals = "fixed"\ncount = 10\n', "arrivals"),
    "rr arrivals unknown": ('kind = "rr"\nrate = "10/s"\narrivals = "bursty"\ncount = 10\n', "workload.arrivals"),
    "rr count and duration": ('kind = "rr"\ncount = 10\nduration = "1s"\n', "exactly one of duration"),
    "rr neither": ('kind = "rr"\n', "exactly one of duration"),
    "rr request 0": ('kind = "rr"\nrequest = "0B"\ncount = 10\n', "workload.request"),
    "rr response unit": ('kind = "rr"\nresponse = "2 parsecs"\ncount = 10\n', "workload.response"),
    "stream chunk over duration": ('kind = "stream"\nrate = "1mbit"\nchunk = "1MiB"\nduration = "2s"\n', "chunk"),
    "stream no rate": ('kind = "stream"\nduration = "2s"\n', "workload.rate"),
    "stream no duration": ('kind = "stream"\nrate = "1mbit"\n', "workload.duration"),
    "stream deadline no unit": ('kind = "stream"\nrate = "1mbit"\nduration = "2s"\ndeadline = "200"\n', "workload.deadline"),
    "stream unknown key": ('kind = "stream"\nrate = "1mbit"\nduration = "2s"\nsize = "1MiB"\n', "workload.size"),
    "flows count 0": ('kind = "flows"\ncount = 0\nsize = "1KiB"\n', "workload.count"),
    "flows no size": ('kind = "flows"\ncount = 5\n', "workload.size"),
    "flows rate per hour": ('kind = "flows"\ncount = 5\nsize = "1KiB"\nrate = "5/h"\n', "'10/s'"),
    "unknown kind": ('kind = "video"\nduration = "2s"\n', "'video'"),
}


@light
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_workload_values_are_one_line(tmp_path, case):
    body, words = BAD[case]
    run_cli = cli if case == min(BAD) else cli_in_process  # one case as a user runs it, the rest in this process (same exit code and line)
    proc = run_cli("run", str(write_scenario(tmp_path, scenario("t-bad", body))), "--no-store")
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
