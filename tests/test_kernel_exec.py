"""`mptcplab kernel exec` and `mptcplab selftest simult_flows`: real commands in a real guest (the cached 6.12 kernel)."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CLI, cli, wait_for
from .test_kernels import alive, guest_temp_dirs, qemu_children

KERNEL = "6.12.117"
needs_kernel = pytest.mark.skipif(not list(Path("/var/cache/mptcplab/kernels").glob("6.12.117*/kernel.json")),
                                  reason="needs kernel 6.12.117 cached (mptcplab kernel fetch 6.12.117)")
pytestmark = needs_kernel


def test_kernel_exec_runs_a_command_in_the_guest_and_returns_its_exit_code_and_output():
    before = guest_temp_dirs()
    script = ('uname -r; echo "color=$NO_COLOR tmp=$TMPDIR cwd=$(pwd)"; echo to-stderr >&2; '
              'echo scratch > x && cat /tmp/x; touch /usr/mptcplab-exec-probe 2>/dev/null || echo host-read-only; '
              'cat /proc/sys/net/mptcp/enabled; exit 7')
    r = cli("kernel", "exec", "--kernel", KERNEL, "--", "sh", "-c", script, timeout=300)
    assert r.returncode == 7, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("6.12.117"), r.stdout  # the guest's kernel, not the host's
    assert "color=1 tmp=/tmp cwd=/tmp" in lines and "scratch" in lines and "host-read-only" in lines, r.stdout
    assert lines[-1] == "1", r.stdout  # the guest's root namespace: MPTCP enabled there
    assert "to-stderr" in r.stderr and "to-stderr" not in r.stdout
    assert not Path("/usr/mptcplab-exec-probe").exists()
    assert guest_temp_dirs() <= before


def test_kernel_exec_kills_a_command_past_its_timeout():
    t0 = time.monotonic()
    r = cli("kernel", "exec", "--kernel", KERNEL, "--timeout", "5", "--", "sh", "-c", "echo started; sleep 120", timeout=300)
    assert r.returncode == 1 and "started" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("error: sh did not exit within 5 s"), r.stderr
    assert time.monotonic() - t0 < 110  # killed at 5 s in the guest, not after the sleep


def test_ctrl_c_during_kernel_exec_leaves_nothing():
    before = guest_temp_dirs()
    argv = [CLI, "kernel", "exec", "--kernel", KERNEL, "--", "sh", "-c", "echo running; sleep 300"]
    # SIGINT as a terminal delivers it: a test run in the background (a shell without job control) inherits it ignored
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        started = wait_for(lambda: len(qemu_children(proc.pid)) >= 2, timeout=60)
        children = qemu_children(proc.pid)
        # the command is running in the guest once its first line is back; then Ctrl-C
        running = started and proc.stdout is not None and proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    assert started and running, err
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted by Ctrl-C"), err
    assert not [c for c in children if alive(c)]
    assert guest_temp_dirs() <= before


def test_selftest_simult_flows_runs_the_kernels_script_in_a_guest_and_stores_its_ten_results(tmp_path):
    """The real simult_flows.sh of 6.12.117, compiled from its linux-source package (cached per release), in a TCG
    guest: ten transfers parsed, each a stored run with the script's time and budget."""
    db = tmp_path / "st.db"
    t0 = time.monotonic()
    r = cli("selftest", "simult_flows", "--kernel", KERNEL, "--repeat", "1", "--db", str(db), "--json", timeout=900)
    wall = time.monotonic() - t0
    assert r.returncode in (0, 1), r.stderr
    runs = json.loads(r.stdout)["runs"]
    assert len(runs) == 10, [x["scenario"] for x in runs]
    by = {(x["environment"]["selftest"]["scenario"], x["environment"]["selftest"]["direction"]): x for x in runs}
    assert set(by) == {(s, d) for s in ("simult-balanced", "simult-balanced-delay", "simult-unbalanced",
                                         "simult-unbalanced-delay", "simult-opposed-delay") for d in ("upload", "download")}
    for run in runs:
        assert run["kernel"].startswith("6.12.117") and run["environment"]["executor"] == "qemu"
        rep = run["repetitions"][0]
        budget = rep["metrics"]["selftest_max_ms"]
        assert budget in (7906, 11921), budget
        if rep["status"] == "completed":  # the script's own time: 16 MiB over 20 or 13 mbit take at least 6.7 / 10.3 s
            assert 0.8 * (budget - 450) / 1000 < rep["completion_s"] < 2 * budget / 1000, rep
    listed = cli("runs", "--db", str(db))
    assert listed.returncode == 0 and listed.stdout.count("selftest-simult-") == 10, listed.stdout
    print(f"selftest simult_flows: 1 run in {wall:.0f} s;",
          {k: (v["repetitions"][0]["completion_s"], v["repetitions"][0]["status"], v["repetitions"][0]["error"]) for k, v in by.items()})
