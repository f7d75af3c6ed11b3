"""Bad input, signals, crashes and concurrency: nothing is ever left behind."""
from __future__ import annotations

import signal
import subprocess
import threading

import pytest

from mptcplab import RunOptions, load_scenario, run_scenario

from .conftest import CLI, cli, cli_in_process, lab_namespaces, leftovers, namespaces_of_pid, requires_root, wait_for, write_scenario, light

pytestmark = requires_root

BAD = {
    "negative delay": ('name="x"\n[[path]]\nname="a"\nrate="1mbit"\ndelay="-1ms"\n[workload]\nsize="1MiB"\n', "path[0].delay", 2),
    "no paths": ('name="x"\npath=[]\n[workload]\nsize="1MiB"\n', "path", 2),
    "loss 150%": ('name="x"\n[[path]]\nname="a"\nrate="1mbit"\nloss="150%"\n[workload]\nsize="1MiB"\n', "path[0].loss", 2),
    "missing workload": ('name="x"\n[[path]]\nname="a"\nrate="1mbit"\n', "workload", 2),
    "unknown key": ('name="x"\nfoo=1\n[[path]]\nname="a"\nrate="1mbit"\n[workload]\nsize="1MiB"\n', "foo", 2),
    "bad unit": ('name="x"\n[[path]]\nname="a"\nrate="10 furlongs"\n[workload]\nsize="1MiB"\n', "path[0].rate", 2),
    "missing scheduler": ('name="x"\n[mptcp]\nscheduler="nope"\n[[path]]\nname="a"\nrate="1mbit"\n[workload]\nsize="1MiB"\n', "scheduler 'nope'", 3),
    "unsupported by backend": ('name="x"\n[[path]]\nname="a"\nrate="1mbit"\ndelay="10ms"\n[workload]\nsize="1MiB"\n[run]\nlink_backend="tbf"\n', "tbf backend cannot", 3),
}


@light
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_one_line_nonzero_nothing_built(tmp_path, case):
    body, words, code = BAD[case]  # 2: a bad scenario; 3: something this kernel or backend cannot do
    before = set(leftovers())
    run_cli = cli if case == min(BAD) else cli_in_process  # one case as a user runs it, the rest in this process (same exit code and line)
    proc = run_cli("run", str(write_scenario(tmp_path, body)))
    assert proc.returncode == code, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert set(leftovers()) <= before  # nothing was built, or it was all removed


@light
def test_bad_cli_option_is_usage_error(two_paths):
    proc = cli("run", str(two_paths()), "--repeat", "0")
    assert proc.returncode == 2
    proc = cli("run", str(two_paths()), "--link-backend", "carrier-pigeon")
    assert proc.returncode == 2 and "carrier-pigeon" in proc.stderr


def _start_run(path) -> tuple[subprocess.Popen, set[str]]:
    proc = subprocess.Popen([CLI, "run", str(path), "--repeat", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(ns.endswith("-srv") for ns in namespaces_of_pid(proc.pid)), timeout=90), "the run never built its namespaces"
    return proc, namespaces_of_pid(proc.pid)


def test_sigterm_leaves_nothing(two_paths):
    proc, mine = _start_run(two_paths(size="40MiB"))
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    assert not (mine & lab_namespaces()), "SIGTERM left namespaces behind"


def test_ctrl_c_leaves_nothing(two_paths):
    proc, mine = _start_run(two_paths(size="40MiB"))
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not (mine & lab_namespaces())


def test_cleanup_removes_what_sigkill_left(two_paths):
    proc, mine = _start_run(two_paths(size="40MiB"))
    proc.kill()
    proc.wait()
    assert mine & lab_namespaces(), "SIGKILL cannot clean up: namespaces should still be there"
    assert set(leftovers()) >= (mine & lab_namespaces())
    out = cli("cleanup")
    assert out.returncode == 0
    for ns in mine:
        assert ns not in lab_namespaces()
    assert "removed namespace" in out.stdout


def test_cleanup_keeps_live_runs(two_paths):
    proc, mine = _start_run(two_paths(size="12MiB"))
    try:
        out = cli("cleanup")
        assert out.returncode == 0
        assert mine <= lab_namespaces(), "cleanup removed a live run's namespaces"
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_two_runs_at_once_both_succeed(two_paths):
    scn = load_scenario(two_paths(size="3MiB"))
    before = set(leftovers())
    results, errors = [], []

    def go():
        try:
            results.append(run_scenario(scn, RunOptions(repeat=1)))
        except Exception as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert len(results) == 2
    for r in results:
        assert r.repetitions[0].mptcp and r.repetitions[0].goodput_mbps > 5
    assert set(leftovers()) <= before


def test_run_past_its_timeout_fails_cleanly(tmp_path):
    # the path goes down mid-transfer: a timeout the scenario's rates do not predict (those are refused, exit 2)
    path = write_scenario(tmp_path, """
        name = "slow"
        [[path]]
        name = "a"
        rate = "2mbit"
        [workload]
        size = "512KiB"
        [[event]]
        at = "0.5s"
        path = "a"
        action = "down"
        [run]
        timeout = "3s"
        link_backend = "tbf"
    """)
    before = set(leftovers())
    proc = cli("run", str(path), "--repeat", "1")
    assert proc.returncode == 1
    # the timed-out repetition is a result: listed with its reason, not a crash
    assert "TIMEOUT" in proc.stderr and "timeout of 3s" in proc.stdout, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert set(leftovers()) <= before


#: a command that waits outside any lab (as a bisect does between its probes), inside the command's error handling
#: (`handled`) or outside it, then the real entry point
_WAITING_COMMAND = """
import sys, time
from mptcplab.cli import app, main
from mptcplab.cli.common import handled

def wait() -> None:
    print("ready", flush=True)
    time.sleep(60)

app.command("wait-handled")(handled(wait))
app.command("wait-bare")(wait)
sys.argv = ["mptcplab", sys.argv[1]]
main()
"""


@light
@pytest.mark.parametrize("command", ["wait-handled", "wait-bare"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_between_pieces_of_work_is_one_line_and_128_plus_signum(command, sig):
    """SIGTERM/SIGHUP while no lab holds its handlers (between a bisect's probes, a suite's kernels): exit 128 + the
    signal with one line, as inside a run, never the default action's silent death (exit -15)."""
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _WAITING_COMMAND, command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"stopped by {signal.Signals(sig).name}" in lines[0], err
