"""Results that mean the same thing everywhere: pinned TCP conditions, overrides, failures kept as data.

Real namespaces and real MPTCP on this kernel (and in a guest for the
streaming test); the verdict tests use synthetic results in a real SQLite store.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mptcplab import RunOptions, load_scenario, run_scenario
from mptcplab.result import Repetition, RunResult, SubflowResult
from mptcplab.store import open_store

from .conftest import CLI, cli, cli_in_process, leftovers, requires_root, wait_for, write_scenario, light

pytestmark = requires_root

SMALL = """
name = "{name}"
[[path]]
name = "a"
rate = "20mbit"
delay = "2ms"
[[path]]
name = "b"
rate = "20mbit"
delay = "2ms"
[workload]
size = "{size}"
[run]
repeat = {repeat}
timeout = "20s"
{extra}
"""

STALL = """
name = "t-stall"
[[path]]
name = "a"
rate = "10mbit"
[[path]]
name = "b"
rate = "10mbit"
[workload]
size = "4MiB"
[run]
repeat = 1
timeout = "3s"
[[event]]
at = "0.5s"
path = "a"
action = "down"
[[event]]
at = "0.5s"
path = "b"
action = "down"
"""


def small(tmp_path: Path, name: str = "t-small", size: str = "1MiB", repeat: int = 1, extra: str = "") -> Path:
    return write_scenario(tmp_path, SMALL.format(name=name, size=size, repeat=repeat, extra=extra), f"{name}.toml")


def available_congestion_controls() -> list[str]:
    return Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()


def test_default_congestion_control_is_cubic_in_every_subflow_whatever_the_host_has(tmp_path):
    host_default = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    seen: dict[str, str] = {}

    def look(topo):  # the live namespaces, not only what the lab records
        from mptcplab import netns
        seen["client"] = netns.sysctl_read(topo.client, "net.ipv4.tcp_congestion_control")

    result = run_scenario(load_scenario(small(tmp_path)), RunOptions(repeat=1, setup=look))
    rep = result.repetitions[0]
    assert rep.completed
    assert [sf.congestion_control for sf in rep.subflows] == ["cubic", "cubic"], (host_default, rep.subflows)
    assert result.environment["tcp"]["congestion_control"] == "cubic"
    # what the namespace default really was is recorded, and agrees with the live namespace
    assert result.environment["sysctls_client"]["net.ipv4.tcp_congestion_control"] == seen["client"]
    for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
        assert len(result.environment["sysctls_server"][key].split()) == 3


def test_another_congestion_control_reaches_every_subflow(tmp_path):
    other = next(cc for cc in ["reno", *available_congestion_controls()] if cc != "cubic" and cc in available_congestion_controls())
    path = small(tmp_path, extra=f'[tcp]\ncongestion_control = "{other}"\nrmem = "4KiB 64KiB 2MiB"')
    result = run_scenario(load_scenario(path), RunOptions(repeat=1))
    rep = result.repetitions[0]
    assert rep.completed and [sf.congestion_control for sf in rep.subflows] == [other, other]
    assert result.environment["sysctls_client"]["net.ipv4.tcp_rmem"] == "4096 65536 2097152"


def test_router_sysctl_is_set_and_recorded(tmp_path):
    path = small(tmp_path, extra='[sysctl.router]\n"net.ipv4.tcp_ecn" = 1\n[sysctl]\n"net.mptcp.stale_loss_cnt" = 2')
    result = run_scenario(load_scenario(path), RunOptions(repeat=1))
    assert result.environment["sysctls_router"]["net.ipv4.tcp_ecn"] == "1"
    assert result.environment["sysctls_client"]["net.mptcp.stale_loss_cnt"] == "2"
    assert result.environment["sysctls_server"]["net.mptcp.stale_loss_cnt"] == "2"


def _global_net_sysctl() -> str:
    """A net.* sysctl the host has but a fresh namespace does not (found with unshare, not with the lab's code)."""
    inside = subprocess.run(["unshare", "--net", "find", "/proc/sys/net/core", "-type", "f"], capture_output=True, text=True, check=True)
    per_ns = set(inside.stdout.split())
    for f in sorted(str(p) for p in Path("/proc/sys/net/core").iterdir() if p.is_file()):
        if f not in per_ns:
            return f.removeprefix("/proc/sys/").replace("/", ".")
    pytest.skip("every net.core sysctl of this kernel is per namespace")


@light
@pytest.mark.parametrize("override, message", [
    ("tcp.congestion_control=nosuchcc", "'nosuchcc' is not available"),
    ("sysctl.net.ipv4.no_such_knob=1", "does not exist"),
    ("GLOBAL", "is not per network namespace"),
])
def test_unavailable_algorithm_and_bad_sysctls_are_refused_before_anything_is_built(tmp_path, override, message):
    if override == "GLOBAL":
        override = f"sysctl.{_global_net_sysctl()}=1"
    before = set(leftovers())
    run_cli = cli if override.startswith("tcp.") else cli_in_process  # one case as a user runs it, the rest in this process (same exit code and line)
    proc = run_cli("run", str(small(tmp_path)), "--set", override, "--no-store")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert set(leftovers()) <= before


@light
def test_bad_set_is_one_line_exit_2(tmp_path):
    for item in ("tcp.nosuchkey=1", "path.nosuchpath.delay=1ms", "noequals"):
        proc = (cli if item == "noequals" else cli_in_process)("run", str(small(tmp_path)), "--set", item, "--no-store")
        assert proc.returncode == 2, (item, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_set_changes_the_stored_scenario_version(tmp_path, results_store):
    path = small(tmp_path, size="512KiB")
    proc = cli("run", str(path), "--set", "workload.size=256KiB", "--set", "path.b.delay=3ms", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    expected = load_scenario(path, ["workload.size=256KiB", "path.b.delay=3ms"])
    assert doc["scenario_hash"] == expected.content_hash != load_scenario(path).content_hash
    assert doc["repetitions"][0]["bytes"] == 256 * 1024
    stored = open_store(str(results_store)).scenario_content(doc["run_id"])
    assert stored["workload"]["size"] == 256 * 1024 and stored["path"][1]["delay"] == 0.003


def test_a_stalled_repetition_is_kept_and_the_rest_go_on(tmp_path, results_store):
    stall = write_scenario(tmp_path, STALL, "stall.toml")
    ok = small(tmp_path, name="t-ok", repeat=2, extra='budget = "60s"')
    before = set(leftovers())
    proc = cli("run", str(stall), str(ok), "--json")
    assert proc.returncode == 1, proc.stderr  # a repetition did not complete
    doc = json.loads(proc.stdout)  # exactly one document, whatever failed
    stalled, fine = doc["runs"]
    rep = stalled["repetitions"][0]
    assert rep["status"] == "timeout" and "timeout of 3s" in rep["error"]
    assert rep["bytes"] > 0 and rep["timeseries"]["t"] and rep["subflows"][0]["bytes_sent"] > 0  # what it did before the stall
    assert stalled["status"] == "failed" and stalled["summary"]["pass_rate"]["median"] == 0.0
    assert "goodput_mbps" not in stalled["summary"]  # medians are over completed repetitions only
    assert [r["status"] for r in fine["repetitions"]] == ["completed", "completed"] and fine["status"] == "completed"
    assert fine["summary"]["pass_rate"]["median"] == 1.0 and not any(r["over_budget"] for r in fine["repetitions"])
    # the store holds the stalled repetition with its data and reason
    shown = json.loads(cli("show", stalled["run_id"], "--json").stdout)
    assert shown["repetitions"][0]["status"] == "timeout" and shown["repetitions"][0]["bytes"] == rep["bytes"]
    assert set(leftovers()) <= before


def test_fail_fast_stops_at_the_first_incomplete_repetition(tmp_path):
    stall = write_scenario(tmp_path, STALL, "stall.toml")
    ok = small(tmp_path, name="t-ok")
    proc = cli("run", str(stall), str(ok), "--repeat", "2", "--json", "--fail-fast", "--no-store")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert len(doc["runs"][0]["repetitions"]) == 1 and len(doc["runs"][1]["repetitions"]) == 0


def test_budget_marks_over_budget_and_pass_rate(tmp_path):
    result = run_scenario(load_scenario(small(tmp_path, repeat=2, extra='budget = "1ms"')))
    assert all(r.completed and r.over_budget for r in result.repetitions)
    rate = result.summary["pass_rate"]
    assert rate.median == 0.0 and rate.n == 2 and 0 < rate.ci95[1] < 1


# -- verdicts on synthetic results in a real store --------------------------------------------------

def _synthetic(label: str, outcomes: list[bool], congestion: str = "cubic", backend: str = "wire") -> RunResult:
    reps = [Repetition(index=i, completion_s=10.0 + i * 0.01, goodput_mbps=10.0, bytes=1 << 20, mptcp=True,
                       subflows=[SubflowResult(path="a", share=1.0, congestion_control=congestion)], mib={},
                       status="completed" if ok else "timeout", error=None if ok else "the transfer did not finish",
                       over_budget=False if ok else None)
            for i, ok in enumerate(outcomes)]
    env = {"tcp": {"congestion_control": congestion}, "sysctls_client": {"net.ipv4.tcp_rmem": "4096 131072 6291456",
                                                                        "net.ipv4.tcp_wmem": "4096 16384 4194304"},
           "cpu_model": "x", "cpu_count": 2}
    return RunResult(run_id=os.urandom(5).hex(), scenario="synthetic", scenario_hash="h", kernel="k", scheduler="default",
                     backend=backend, label=label, repetitions=reps, environment=env, started_at=time.time())


@light
@pytest.mark.parametrize("candidate, regressed", [([True] + [False] * 9, True), ([True] * 9 + [False], False)])
def test_compare_pass_rate_uses_fisher(tmp_path, candidate, regressed):
    db = tmp_path / "v.db"
    store = open_store(str(db))
    store.save_result(_synthetic("base", [True] * 10), None)
    store.save_result(_synthetic("cand", candidate), None)
    proc = cli("compare", "--db", str(db), "--baseline", "label:base", "--candidate", "label:cand", "--metric", "pass_rate", "--format", "json")
    assert proc.returncode == (1 if regressed else 0), proc.stderr
    c = json.loads(proc.stdout)["comparisons"][0]
    assert c["verdict"] == ("regressed" if regressed else "unchanged")
    assert c["baseline_median"] == 1.0 and c["candidate_median"] == sum(candidate) / 10


@light
def test_compare_says_which_conditions_differ(tmp_path):
    db = tmp_path / "c.db"
    store = open_store(str(db))
    store.save_result(_synthetic("base", [True] * 5, congestion="cubic", backend="wire"), None)
    store.save_result(_synthetic("cand", [True] * 5, congestion="bbr", backend="netem"), None)
    proc = cli("compare", "--db", str(db), "--baseline", "base", "--candidate", "cand")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "congestion control differs (baseline cubic; candidate bbr)" in text
    assert "link backend differs (baseline wire; candidate netem)" in text
    assert "tcp_rmem differs" not in text  # only what differs is listed


# -- a guest streams each repetition to the host's store -------------------------------------------

def test_guest_repetitions_are_stored_as_they_end_even_if_the_guest_is_killed(tmp_path, results_store):
    path = small(tmp_path, name="t-guest", size="2MiB", repeat=6)
    proc = subprocess.Popen([CLI, "run", str(path), "--kernel", "6.1", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def stored() -> int:
            if not results_store.exists():
                return 0
            store = open_store(str(results_store))
            runs = store.list_runs(__import__("mptcplab.store", fromlist=["RunFilter"]).RunFilter(scenario="t-guest"))
            return runs[0].repetitions if runs else 0

        assert wait_for(lambda: stored() >= 2, timeout=240, interval=0.5), proc.stderr.read() if proc.poll() is not None else ""
        qemu = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "qemu-system"], capture_output=True, text=True).stdout.split()
        assert qemu, "no qemu child of the lab"
        os.kill(int(qemu[0]), signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    doc = json.loads(out)
    assert doc["status"] == "failed" and len(doc["repetitions"]) >= 2
    assert all(r["status"] == "completed" for r in doc["repetitions"])
    shown = json.loads(cli("show", doc["run_id"], "--json").stdout)
    assert len(shown["repetitions"]) == len(doc["repetitions"]) and shown["status"] == "failed"
    assert shown["kernel"].startswith("6.1")


@light
def test_a_fleet_cells_time_mode_names_every_workers_clock():
    """A UML cell filled by several workers: each worker's time mode is a condition, so mixed clocks show."""
    from mptcplab.analysis.conditions import conditions

    def cell(*modes: str) -> dict:
        workers = {f"w{i}": {"name": f"w{i}", "hostname": "lab", "cpu_model": "EPYC", "cpu_count": 2,
                             "accelerator": "none (UML)", "time_mode": m} for i, m in enumerate(modes)}
        return {"executor": "uml", "time_mode": modes[0], "fleet": {"campaign": "c", "workers": workers}}

    assert conditions(cell("travel", "travel"))["time mode"] == "travel"
    assert conditions(cell("travel", "real"))["time mode"] == "real, travel"
    assert conditions(cell("travel", "real"))["guest accelerator"] == "none (UML)"
