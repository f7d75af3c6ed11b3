"""Guests on any machine: KVM is used only where it boots the kernel under test, TCG otherwise (executors/qemu/accel.py).

The fallback is exercised for real: MPTCPLAB_TEST_KVM_ARGS makes the KVM try
happen whatever this machine is and adds an argument QEMU refuses, so the KVM
QEMU exits at once (on a paravirtual KVM the real "KVM internal error" would
do the same); the remembered verdict goes to a file of the test's own
(MPTCPLAB_ACCEL_CACHE), never the machine's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import CLI, cli, light, requires_root, write_scenario

pytestmark = requires_root

SCENARIO = """
name = "accel"
[[path]]
name = "a"
rate = "10mbit"
delay = "5ms"
[[path]]
name = "b"
rate = "10mbit"
delay = "5ms"
[workload]
size = "1MiB"
[run]
repeat = 1
timeout = "30s"
link_backend = "netem"
"""
KERNEL = "6.12"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPTCPLAB_ACCEL") and k != "MPTCPLAB_TEST_KVM_ARGS"}
    env["MPTCPLAB_ACCEL_CACHE"] = str(tmp_path / "accel.json")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def kernel() -> str:
    proc = cli("kernel", "fetch", KERNEL, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return KERNEL


def _run(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    path = write_scenario(tmp_path, SCENARIO, "accel.toml")
    proc = subprocess.run([CLI, "run", str(path), "--kernel", KERNEL, "--json", "--no-store", "--no-timeseries", *args],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads(proc.stdout)


def test_accel_tcg_is_recorded(tmp_path: Path, kernel: str) -> None:
    proc, doc = _run(tmp_path, "--accel", "tcg", env=_env(tmp_path))
    guest = doc["environment"]["guest"]
    assert guest["accelerator"] == "tcg"
    assert "asked for" in guest["accelerator_why"]
    assert "accelerator_fallback" not in guest and "kvm_try_s" not in guest
    assert "KVM cannot run" not in proc.stderr
    assert doc["repetitions"][0]["status"] == "completed"


def test_kvm_that_cannot_run_the_kernel_falls_back_to_tcg_once_and_is_remembered(tmp_path: Path, kernel: str) -> None:
    env = _env(tmp_path, MPTCPLAB_TEST_KVM_ARGS="-object no-such-object-type,id=x")
    proc, doc = _run(tmp_path, env=env)
    lines = [line for line in proc.stderr.splitlines() if "KVM cannot run this kernel here" in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].endswith(": using TCG") and "QEMU exited under KVM" in lines[0]
    assert "Traceback" not in proc.stderr
    guest = doc["environment"]["guest"]
    assert guest["accelerator"] == "tcg"
    assert guest["accelerator_fallback"].startswith("KVM failed: QEMU exited under KVM")
    assert 0 < guest["kvm_try_s"] < 10  # what the failing try cost
    assert doc["repetitions"][0]["status"] == "completed" and doc["repetitions"][0]["mptcp"]
    remembered = json.loads((tmp_path / "accel.json").read_text())
    (entry,) = remembered.values()
    assert entry["why"].startswith("QEMU exited under KVM") and entry["kernel"] == doc["kernel"]

    # the second command skips the failing try: no message, no try, the same fallback recorded as a condition
    proc2, doc2 = _run(tmp_path, env=env)
    assert "KVM cannot run this kernel here" not in proc2.stderr
    assert "KVM failed here before" in proc2.stderr  # the boot line says why TCG
    guest2 = doc2["environment"]["guest"]
    assert guest2["accelerator"] == "tcg" and "kvm_try_s" not in guest2
    assert guest2["accelerator_fallback"] == guest["accelerator_fallback"]

    from mptcplab.analysis.conditions import conditions

    assert conditions(doc2["environment"])["accelerator fallback"] == guest["accelerator_fallback"]


def test_accel_kvm_that_cannot_work_is_one_line_exit_3(tmp_path: Path, kernel: str) -> None:
    """Asked for KVM and it fails on the kernel: no fallback, one line, exit 3 (refused up front on a paravirtual KVM)."""
    env = _env(tmp_path, MPTCPLAB_TEST_KVM_ARGS="-object no-such-object-type,id=x")
    path = write_scenario(tmp_path, SCENARIO, "accel.toml")
    proc = subprocess.run([CLI, "run", str(path), "--kernel", KERNEL, "--accel", "kvm", "--no-store"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "KVM" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "accel.json").exists()  # asked-for KVM teaches the machine nothing


@light
def test_bad_accel_is_refused(tmp_path: Path) -> None:
    proc = cli("run", "demo", "--kernel", KERNEL, "--accel", "warp")
    assert proc.returncode == 2
    assert "warp" in proc.stderr and "auto, kvm, tcg" in proc.stderr
    proc = subprocess.run([CLI, "doctor"], capture_output=True, text=True, timeout=120, env=_env(tmp_path, MPTCPLAB_ACCEL="warp"))
    assert "MPTCPLAB_ACCEL='warp' is not an accelerator" in proc.stdout + proc.stderr


@light
def test_doctor_names_a_remembered_failure(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "accel.json").write_text("{}")
    script = ("import os; from mptcplab.executors.qemu import accel; "
              "accel.remember_failure('KVM internal error: emulation failure', '6.12.117+deb13-cloud-amd64')")
    subprocess.run([str(Path(CLI).parent / "python"), "-c", script], check=True, env=env)
    proc = subprocess.run([CLI, "doctor"], capture_output=True, text=True, timeout=120, env=env)
    line = next(line for line in proc.stdout.splitlines() if "guest accelerator" in line)
    assert line.split()[0] == "OK" and "tcg:" in line
    assert "KVM internal error: emulation failure" in " ".join(proc.stdout.split())


@light
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_doctor_without_dev_kvm(tmp_path: Path) -> None:
    """In a mount namespace whose /dev has no kvm node, doctor says TCG and why."""
    script = ("mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && "
              f"exec {CLI} doctor")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True,
                          timeout=120, env=_env(tmp_path))
    text = " ".join(proc.stdout.split())
    assert "guest accelerator: tcg: /dev/kvm: No such file or directory" in text, proc.stdout + proc.stderr


@light
def test_paravirtual_kvm_is_recognised_from_this_machine() -> None:
    """What doctor says matches what the machine is: kvm_pvm loaded or no vmx/svm flag means paravirtual."""
    from mptcplab.executors.qemu import accel

    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    expect = os.path.exists("/dev/kvm") and (os.path.isdir("/sys/module/kvm_pvm") or ("vmx" not in flags and "svm" not in flags))
    assert bool(accel.paravirtual()) == expect
    if os.path.isdir("/sys/module/kvm_pvm"):
        assert accel.paravirtual() == "/dev/kvm is paravirtual (kvm-pvm)"
