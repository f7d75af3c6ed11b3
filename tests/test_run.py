"""The core loop on the real kernel: real namespaces, real MPTCP sockets."""
from __future__ import annotations

import json

import pytest

from mptcplab import RunOptions, load_scenario, run_scenario
from mptcplab import netns
from mptcplab.errors import UnsupportedError

from .conftest import cli, leftovers, requires_root, write_scenario, light

pytestmark = requires_root


def test_two_paths_use_both_subflows_and_reach_80_percent(two_paths):
    before = set(leftovers())
    # auto: wire on this machine, netem where the kernel has it. tbf shapes on the
    # sender's own egress, where local qdisc drops are retransmitted at once (up to
    # 10 000 retransmissions per 6 MiB measured): it stays a fallback, not the reference.
    result = run_scenario(load_scenario(two_paths(size="6MiB")), RunOptions(repeat=2))
    assert result.backend in ("wire", "netem")
    for rep in result.repetitions:
        assert rep.mptcp
        assert {s.path for s in rep.subflows} == {"a", "b"}
        for sf in rep.subflows:
            assert sf.bytes_sent > 0.1 * rep.bytes, f"path {sf.path} carried almost nothing: {sf}"
        assert rep.goodput_mbps >= 0.8 * 20, rep.goodput_mbps
        assert rep.mib["MPTcpExtMPCapableSYNTX"] == 1
        assert rep.mib["MPTcpExtMPJoinSynTx"] >= 1
        assert rep.mib_server["MPTcpExtMPCapableSYNRX"] == 1
        ts = rep.timeseries
        assert ts is not None and ts.interval_s <= 0.1
        assert len(ts.t) >= rep.completion_s / 0.1 * 0.8  # at least 10 Hz
        assert max(ts.throughput_mbps["a"]) > 0 and max(ts.throughput_mbps["b"]) > 0
    s = result.summary["goodput_mbps"]
    assert s.ci95[0] <= s.median <= s.ci95[1]
    assert set(leftovers()) <= before


def test_download_direction(tmp_path):
    path = write_scenario(tmp_path, """
        name = "dl"
        [[path]]
        name = "a"
        rate = "10mbit"
        [[path]]
        name = "b"
        rate = "5mbit"
        [workload]
        direction = "download"
        duration = "4s"
        [run]
        link_backend = "tbf"
    """)
    result = run_scenario(load_scenario(path), RunOptions(repeat=1))
    rep = result.repetitions[0]
    assert 3.9 < rep.completion_s < 7
    a, b = rep.subflows
    assert a.bytes_sent > 0 and b.bytes_sent > 0
    # the fast path carries more than the slow one
    assert a.bytes_sent > b.bytes_sent
    assert rep.goodput_mbps >= 0.7 * 15


def test_fallback_to_tcp_is_an_error(two_paths):
    def disable_server_mptcp(topo):
        netns.sysctl_write(topo.server, "net.mptcp.enabled", 0)

    before = set(leftovers())
    result = run_scenario(load_scenario(two_paths(size="1MiB")), RunOptions(repeat=1, setup=disable_server_mptcp))
    rep = result.repetitions[0]
    # a fallback is never a result: the repetition is kept as failed, with the reason, and enters no median
    assert rep.status == "failed" and "fell back to plain TCP" in (rep.error or "")
    assert not rep.mptcp and result.status == "failed"
    assert "goodput_mbps" not in result.summary and result.summary["pass_rate"].median == 0.0
    assert set(leftovers()) <= before


@light
def test_missing_scheduler_is_refused_before_building(tmp_path):
    path = write_scenario(tmp_path, """
        name = "x"
        [mptcp]
        scheduler = "blest"
        [[path]]
        name = "a"
        rate = "10mbit"
        [workload]
        size = "1MiB"
    """)
    with pytest.raises(UnsupportedError, match="scheduler 'blest' is not available"):
        run_scenario(load_scenario(path))


def test_cli_json_follows_the_contract(two_paths, tmp_path):
    png = tmp_path / "run.png"
    proc = cli("run", str(two_paths(size="2MiB")), "--json", "--repeat", "2", "--label", "ci", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one document
    for key in ("scenario", "kernel", "scheduler", "backend", "repetitions", "summary"):
        assert key in doc
    assert doc["label"] == "ci" and len(doc["repetitions"]) == 2
    rep = doc["repetitions"][0]
    for key in ("completion_s", "goodput_mbps", "mptcp", "subflows", "mib"):
        assert key in rep
    for key in ("path", "bytes_sent", "retransmits", "rtt_ms"):
        assert key in rep["subflows"][0]
    for metric in ("goodput_mbps", "completion_s"):
        assert set(doc["summary"][metric]) >= {"median", "ci95"}
        assert len(doc["summary"][metric]["ci95"]) == 2
    assert "rep 2" in proc.stderr  # progress went to stderr
    _assert_png(png, min_width=800)
    saved = tmp_path / "run.json"
    saved.write_text(proc.stdout)
    png2 = tmp_path / "rep1.png"
    proc = cli("plot", str(saved), "-o", str(png2), "--rep", "1")
    assert proc.returncode == 0, proc.stderr
    _assert_png(png2, min_width=400)
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    proc = cli("plot", str(bad))
    assert proc.returncode == 2 and "not a result" in proc.stderr


def _assert_png(path, min_width):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[1] >= min_width and img.shape[0] > 300
    assert img.std() > 0.01  # not a blank canvas


def test_cli_table(two_paths):
    proc = cli("run", str(two_paths(size="1MiB")))
    assert proc.returncode == 0, proc.stderr
    assert "goodput_mbps: median" in proc.stdout
    assert "a share" in proc.stdout


@light
def test_doctor_and_scenarios():
    proc = cli("doctor")
    assert proc.returncode == 0, proc.stdout
    assert "OK" in proc.stdout and "net.mptcp.enabled" in proc.stdout
    assert "netem qdisc" in proc.stdout
    proc = cli("scenarios")
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_userspace_path_manager_opens_a_subflow_per_path(two_paths):
    result = run_scenario(load_scenario(two_paths(size="6MiB", pm="userspace")), RunOptions(repeat=1))
    rep = result.repetitions[0]
    assert result.path_manager == "userspace"
    assert rep.mib["MPTcpExtMPJoinSynTx"] >= 1 and rep.mib_server["MPTcpExtMPJoinRejected"] == 0
    assert all(sf.bytes_sent > 0 for sf in rep.subflows)
    # clearly more than one 10 mbit path can carry. (Not the 80% of the kernel PM test: here the second
    # subflow starts only after the daemon's round trip, and a 3 MiB run once reached 79.7%.)
    assert rep.goodput_mbps > 1.3 * 10, rep.goodput_mbps
