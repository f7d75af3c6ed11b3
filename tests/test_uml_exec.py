"""`mptcplab kernel exec` and `mptcplab selftest simult_flows` on a UML kernel (executors/uml): one boot per command,
in simulated time, the command job written before the boot. Real: the UML kernel built from Debian's 6.12.117
(test_uml.py's fixture) and the kernel's own simult_flows.sh compiled from the same source."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CLI, cli, requires_root, wait_for
from .test_uml import KERNEL, _job_dirs, _uml_processes

pytestmark = requires_root


@pytest.fixture(scope="module")
def uml_kernel() -> str:
    """The UML kernel test_uml.py builds once per machine; built here the same way when the cache lacks it."""
    from mptcplab.kernels.catalog import cache_root

    if not (cache_root() / "kernels" / KERNEL / "linux").is_file():
        proc = cli("kernel", "build", "6.12.117", "--flavour", "uml", timeout=3600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return KERNEL

#: prints, then lets the guest idle once (its output relay runs), then holds the one CPU: under time travel a busy
#: loop stops simulated time, so only the host's wall-clock watchdog ends it
BUSY = "echo started; sleep 1; while :; do :; done"


def test_kernel_exec_on_uml_runs_the_command_in_simulated_time(uml_kernel: str) -> None:
    before = _job_dirs()
    script = ('uname -r; echo "color=$NO_COLOR tmp=$TMPDIR cwd=$(pwd)"; echo to-stderr >&2; '
              'echo scratch > x && cat /tmp/x; touch /usr/mptcplab-exec-probe 2>/dev/null || echo host-read-only; '
              'cat /proc/sys/net/mptcp/enabled; sleep 600; echo slept; exit 7')
    t0 = time.monotonic()
    r = cli("kernel", "exec", "--kernel", uml_kernel, "--timeout", "120", "--", "sh", "-c", script, timeout=300)
    wall = time.monotonic() - t0
    assert r.returncode == 7, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == KERNEL, r.stdout  # the UML kernel's release, not the host's
    assert "color=1 tmp=/tmp cwd=/tmp" in lines and "scratch" in lines and "host-read-only" in lines, r.stdout
    assert lines[-2:] == ["1", "slept"], r.stdout  # MPTCP on in the guest's root namespace; the sleep ended
    assert "to-stderr" in r.stderr and "to-stderr" not in r.stdout
    assert "booting UML (time travel" in r.stderr
    assert not Path("/usr/mptcplab-exec-probe").exists()
    assert wall < 100, wall  # 600 s of simulated sleep, well within the 120 s wall-clock timeout
    assert not _job_dirs() - before and not _uml_processes(before)


def test_kernel_exec_on_uml_kills_a_command_past_its_wall_clock_timeout(uml_kernel: str) -> None:
    before = _job_dirs()
    t0 = time.monotonic()
    r = cli("kernel", "exec", "--kernel", uml_kernel, "--timeout", "5", "--", "sh", "-c", BUSY, timeout=300)
    wall = time.monotonic() - t0
    assert r.returncode == 1 and r.stdout.splitlines() == ["started"], (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines()[-1].startswith("error: sh did not exit within 5 s"), r.stderr
    assert 5 <= wall < 60, wall
    assert not _job_dirs() - before and not _uml_processes(before)


def test_kernel_exec_on_uml_takes_its_seed_and_refuses_a_bad_one(uml_kernel: str) -> None:
    """The seed reaches the kernel's randomness: the same seed, the same random bytes; another seed, others."""
    read = ["--", "sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"]
    one = cli("kernel", "exec", "--kernel", uml_kernel, "--seed", "5", *read, timeout=300)
    again = cli("kernel", "exec", "--kernel", uml_kernel, "--seed", "5", *read, timeout=300)
    other = cli("kernel", "exec", "--kernel", uml_kernel, "--seed", "6", *read, timeout=300)
    assert one.returncode == again.returncode == other.returncode == 0, one.stderr
    assert one.stdout.strip() and one.stdout == again.stdout != other.stdout
    bad = cli("kernel", "exec", "--kernel", uml_kernel, "--seed", "x1", "--", "true", timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --seed 'x1' is not a seed"), bad.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_kernel_exec_on_uml_leaves_no_process_and_no_job_dir(uml_kernel: str, sig: int, code: int) -> None:
    before = _job_dirs()
    argv = [CLI, "kernel", "exec", "--kernel", uml_kernel, "--", "sh", "-c", BUSY]
    # SIGINT as a terminal delivers it: a test run in the background (a shell without job control) inherits it ignored
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        assert proc.stdout is not None
        running = proc.stdout.readline().strip() == "started"  # the command runs in the guest
        booted = bool(_job_dirs() - before) and bool(_uml_processes(before))
        proc.send_signal(sig)
        err = proc.communicate(timeout=60)[1]
    assert running and booted, err
    assert proc.returncode == code, err
    assert wait_for(lambda: not _uml_processes(before), timeout=20)
    assert not _job_dirs() - before


def test_selftest_simult_flows_on_uml_stores_ten_seeded_runs_apart_from_qemu_series(tmp_path: Path, uml_kernel: str) -> None:
    """6.12.117's own simult_flows.sh in UML, twice (seeds 1 and 2): ten stored runs recorded as UML runs, the
    script's times within its budgets; a later script run with seed 2 alone repeats the second run to the ms."""
    db = tmp_path / "st.db"
    t0 = time.monotonic()
    r = cli("selftest", "simult_flows", "--kernel", uml_kernel, "--repeat", "2", "--db", str(db), "--json", timeout=900)
    wall = time.monotonic() - t0
    assert r.returncode in (0, 1), r.stderr
    runs = json.loads(r.stdout)["runs"]
    by = {(x["environment"]["selftest"]["scenario"], x["environment"]["selftest"]["direction"]): x for x in runs}
    assert set(by) == {(s, d) for s in ("simult-balanced", "simult-balanced-delay", "simult-unbalanced",
                                         "simult-unbalanced-delay", "simult-opposed-delay") for d in ("upload", "download")}
    from mptcplab.analysis.conditions import conditions

    for run in runs:
        env = run["environment"]
        assert run["kernel"] == KERNEL and env["executor"] == "uml" and env["time_mode"] == "travel"
        assert env["seed"] == 1 and env["guest"]["seed_base"] == 1 and env["guest"]["accelerator"] == "none (UML)"
        assert conditions(env)["executor"] == "uml" and conditions(env)["time mode"] == "travel"
        assert len(run["repetitions"]) == 2
        for rep in run["repetitions"]:
            budget = rep["metrics"]["selftest_max_ms"]
            assert budget in (7906, 11921), budget
            if rep["status"] == "completed":  # 16 MiB over 20 or 13 mbit take at least 6.71 / 10.32 s (the payload at
                # the paths' rates: the budget's transfer part without its 10% header overhead)
                assert 0.9 * (budget - 450) / 1000 < rep["completion_s"] < 2 * budget / 1000, rep
    assert sum(rep["status"] == "completed" for run in runs for rep in run["repetitions"]) >= 18
    listed = cli("runs", "--db", str(db))
    assert listed.returncode == 0 and listed.stdout.count("selftest-simult-") == 10, listed.stdout
    again = cli("selftest", "simult_flows", "--kernel", uml_kernel, "--seed", "2", "--db", str(tmp_path / "b.db"), "--json",
                timeout=900)
    assert again.returncode in (0, 1), again.stderr
    second = {(x["environment"]["selftest"]["scenario"], x["environment"]["selftest"]["direction"]):
              x["repetitions"][0]["completion_s"] for x in json.loads(again.stdout)["runs"]}
    assert second == {k: v["repetitions"][1]["completion_s"] for k, v in by.items()}
    print(f"selftest simult_flows on {KERNEL}: 2 script runs in {wall:.0f} s;",
          {k: [x["completion_s"] for x in v["repetitions"]] for k, v in by.items()})
