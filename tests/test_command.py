"""The `command` workload: real programs (iperf3, sh) in the lab's namespaces under mptcpize.

The lab samples the program's MPTCP connections from the outside (inet_diag),
so the test checks what only that can show: bytes on both paths' subflows, and
goodput next to what iperf3 itself measured (a ratio, never a threshold).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from .conftest import cli, leftovers, requires_root, run_once, write_scenario

PATHS = """
name = "{name}"
[[path]]
name = "a"
rate = "20mbit"
[[path]]
name = "b"
rate = "20mbit"
[run]
repeat = 1
timeout = "{timeout}"
link_backend = "tbf"
[workload]
kind = "command"
"""


def scenario(name: str, workload: str, timeout: str = "30s") -> str:
    return PATHS.format(name=name, timeout=timeout) + workload


needs_tools = pytest.mark.skipif(not (shutil.which("iperf3") and shutil.which("mptcpize")),
                                 reason="needs iperf3 and mptcpize (apt-get install iperf3 mptcpd; make install does)")


@requires_root
@needs_tools
def test_iperf3_under_mptcpize_uses_both_subflows(tmp_path):
    """iperf3 for 2 s over two 20 mbit paths: MPTCP (MP_JOIN in the MIB), bytes on both paths' subflows,
    the program's JSON kept, and the lab's goodput within 10% of what iperf3 itself measured."""
    body = scenario("t-cmd-iperf", 'client = "iperf3 -c {server} -p {port} -t 2 --json"\n'
                                   'server = "iperf3 -s -1 -p {port}"\n')
    _, rep = run_once(tmp_path, body, backend="tbf")
    assert rep.status == "completed", rep.error
    assert rep.mptcp
    assert rep.mib.get("MPTcpExtMPJoinSynAckRx", 0) >= 1, rep.mib
    shares = {s.path: s.share for s in rep.subflows}
    assert shares["a"] > 0.2 and shares["b"] > 0.2, shares
    assert all(s.bytes_acked > 0 for s in rep.subflows)
    client = next(p for p in rep.programs if p.role == "client")
    server = next(p for p in rep.programs if p.role == "server")
    assert client.exit_code == 0 and server.exit_code == 0 and not client.killed
    assert client.argv[:2] == ["iperf3", "-c"] and "10.0.100.2" in client.argv
    iperf = json.loads(client.stdout)
    measured = iperf["end"]["sum_received"]["bits_per_second"] / 1e6
    assert 0.9 <= rep.goodput_mbps / measured <= 1.1, (rep.goodput_mbps, measured)
    assert rep.timeseries and sum(rep.timeseries.delivered_mbps["a"]) > 0 and sum(rep.timeseries.delivered_mbps["b"]) > 0


@requires_root
@pytest.mark.parametrize("client, status, words", [
    ("no-such-program-mptcplab -c {server}", "failed", "'no-such-program-mptcplab' is not installed"),
    ("sh -c 'echo first >&2; echo the last words >&2; exit 3'", "failed", "exited with status 3: the last words"),
    ("sleep 30", "timeout", "did not exit within the timeout of 2s"),
])
def test_failing_program_is_a_failed_repetition(tmp_path, client, status, words):
    """A missing program, a non-zero exit and a timeout: a repetition kept with its status and the
    program's last stderr line; the run exits 1 and leaves no process behind."""
    if shutil.which("mptcpize") is None:
        pytest.skip("needs mptcpize (apt-get install mptcpd)")
    before = set(leftovers())
    path = write_scenario(tmp_path, scenario("t-cmd-fail", f'client = "{client}"\n', timeout="2s"))
    proc = cli("run", str(path), "--no-store", "--json")
    assert proc.returncode == 1, proc.stderr
    rep = json.loads(proc.stdout)["repetitions"][0]
    assert rep["status"] == status and words in rep["error"], rep["error"]
    if status == "timeout":
        assert rep["programs"][0]["killed"] and rep["programs"][0]["exit_code"] == -9
    if "exit 3" in client:
        assert rep["programs"][0]["exit_code"] == 3 and rep["programs"][0]["stderr_last"] == "the last words"
    assert set(leftovers()) <= before


BAD = {
    "no client": ('server = "iperf3 -s"\n', "workload.client"),
    "unknown placeholder": ('client = "iperf3 -c {host}"\n', "placeholder {host}"),
    "empty client": ('client = ""\n', "an empty command"),
    "unbalanced quote": ('client = "sh -c \'echo"\n', "cannot be split"),
    "mptcp mode": ('client = "iperf3 -c {server}"\nmptcp = "magic"\n', "workload.mptcp"),
    "unknown key": ('client = "iperf3 -c {server}"\nduration = "5s"\n', "workload.duration"),
    "direction both": ('client = "iperf3 -c {server}"\ndirection = "both"\n', "workload.direction"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_command_keys_are_one_line(tmp_path, case):
    body, words = BAD[case]
    proc = cli("run", str(write_scenario(tmp_path, scenario("t-cmd-bad", body))), "--no-store")
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@requires_root
def test_missing_mptcpize_is_refused_in_one_line(tmp_path):
    """Without mptcpize on PATH: exit 3, one line naming the package, before anything is built."""
    body = scenario("t-cmd-nompz", 'client = "iperf3 -c {server}"\n')
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH: mptcpize is missing
    proc = cli("run", str(write_scenario(tmp_path, body)), "--no-store", env=env)
    assert proc.returncode == 3, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "apt-get install mptcpd" in lines[0], proc.stderr


def test_suite_lists_the_workload_cases():
    """The suite's cases for the workloads beyond bulk, each saying what it checks."""
    proc = cli("suite", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    cases = {c["name"]: c for c in json.loads(proc.stdout)}
    for name in ("rr-asymmetric-rtt", "stream-wifi-lte", "short-flows", "bulk-both-directions", "download"):
        assert name in cases, sorted(cases)
        assert cases[name]["description"]
    assert {"rr", "latency"} <= set(cases["rr-asymmetric-rtt"]["tags"])
