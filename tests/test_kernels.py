"""Other kernels: real Debian kernels, fetched once into the cache and booted in QEMU.

Guests run the same lab code on their own kernel, so what is checked here
is what a user gets: two subflows, netem delay really applied, goodput
bounded by the paths, the guest's release in the result, and nothing left
behind (qemu, virtiofsd, temporary directories) on success, error or SIGTERM.
The netem backend can only be tested here: the host has no sch_netem.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mptcplab.kernels.catalog import resolve
from mptcplab.executors.qemu.session import GuestConfig, GuestSession
from mptcplab.runner import RunOptions
from mptcplab.scenario import load_scenario

from .conftest import CLI, cli, leftovers, requires_root, wait_for, write_scenario, light

pytestmark = requires_root

KERNELS = ("6.1", "6.12")  # bookworm's and trixie's: the old and the new package layout of modules
# 2 x 10 mbit: enough to show both paths used, little enough that an emulated (TCG) guest on a busy 2-core host
# is not CPU-bound, which would measure the emulator (the wire forwarder in the guest most of all), not the kernel
RATE_MBIT, DELAY_MS = 10, 10

SCENARIO = f"""
name = "k-{{backend}}"
[[path]]
name = "a"
rate = "{RATE_MBIT}mbit"
delay = "{DELAY_MS}ms"
[[path]]
name = "b"
rate = "{RATE_MBIT}mbit"
delay = "{DELAY_MS}ms"
{{extra}}
[workload]
size = "4MiB"
[run]
repeat = 1
timeout = "40s"
link_backend = "{{backend}}"
"""


def scenario(tmp_path: Path, backend: str, extra: str = "") -> Path:
    return write_scenario(tmp_path, SCENARIO.format(backend=backend, extra=extra), f"{backend}{len(extra)}.toml")


def guest_temp_dirs() -> set[str]:
    import tempfile

    root = Path(tempfile.gettempdir())
    return {p.name for p in root.glob("mptcplab-guest-*")}


def qemu_children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(proc.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def kernels() -> list[str]:
    """Fetch both kernels through the CLI (a cold cache downloads, a warm one does not)."""
    releases = []
    for version in KERNELS:
        proc = cli("kernel", "fetch", version, timeout=600)
        assert proc.returncode == 0, proc.stderr
        m = re.match(r"(?:fetched|already cached): (\S+) \(", proc.stdout)
        assert m, proc.stdout
        assert f"kernel {version} → {m.group(1)} (" in proc.stderr  # which kernel the name means, said on stderr
        releases.append(m.group(1))
    assert len(set(releases)) == 2
    return releases


def check_two_path_result(doc: dict, release: str) -> None:
    assert doc["kernel"] == release
    assert doc["environment"]["kernel_release"] == release
    assert doc["environment"]["guest"]["accelerator"] in ("kvm", "tcg")
    assert "saturated" in doc["environment"]["guest_cpu"]
    for rep in doc["repetitions"]:
        assert rep["mptcp"]
        assert len(rep["subflows"]) == 2
        for sf in rep["subflows"]:
            assert sf["share"] > 0.2, rep["subflows"]  # both paths carry data
            assert sf["rtt_median_ms"] >= 2 * DELAY_MS * 0.9  # the netem delay is really there, both ways
        # at most the two paths' capacity; at least half of it for a 4 MiB transfer with 20 ms RTT
        assert RATE_MBIT <= rep["goodput_mbps"] <= 2 * RATE_MBIT * 1.02


def test_fetch_again_is_served_from_the_cache(kernels: list[str]) -> None:
    proc = cli("kernel", "fetch", KERNELS[0])
    assert proc.returncode == 0
    assert proc.stdout.startswith("already cached:") and kernels[0] in proc.stdout
    listing = cli("kernel", "list", "--cached")
    assert all(r in listing.stdout for r in kernels)


def test_matrix_two_kernels_netem(tmp_path: Path, kernels: list[str]) -> None:
    before = guest_temp_dirs()
    proc = cli("matrix", str(scenario(tmp_path, "netem")), "--kernels", ",".join(KERNELS), "--repeat", "2",
               "--json", "--no-store", "--no-timeseries", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    docs = json.loads(proc.stdout)
    assert [d["kernel"] for d in docs] == kernels
    for doc, release in zip(docs, kernels):
        assert doc["backend"] == "netem" and len(doc["repetitions"]) == 2
        assert [r["index"] for r in doc["repetitions"]] == [0, 1]
        assert doc["summary"]["goodput_mbps"]["n"] == 2
        check_two_path_result(doc, release)
    assert guest_temp_dirs() <= before
    assert not leftovers()


def test_netem_and_wire_agree_in_one_guest(tmp_path: Path, kernels: list[str]) -> None:
    """Same scenario, both emulators, one guest: the medians agree, and Gilbert-Elliott loss really drops."""
    ge = 'up = { loss = { p = "2%", r = "40%" } }'  # on path b's data direction
    files = [scenario(tmp_path, "netem"), scenario(tmp_path, "wire"), scenario(tmp_path, "netem", ge)]
    proc = cli("run", *map(str, files), "--kernel", KERNELS[1], "--repeat", "2", "--json", "--no-store", "--no-timeseries", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    netem, wire, lossy = json.loads(proc.stdout)["runs"]
    assert (netem["backend"], wire["backend"], lossy["backend"]) == ("netem", "wire", "netem")
    for doc in (netem, wire):
        check_two_path_result(doc, kernels[1])
    n, w = netem["summary"]["goodput_mbps"]["median"], wire["summary"]["goodput_mbps"]["median"]
    assert abs(n - w) / n < 0.2, (n, w)
    assert "loss gemodel 2% 40% 100% 0%" in lossy["environment"]["link"]["paths"]["b"]["up"]["netem"]
    retrans = {sf["path"]: sf["retransmits"] for r in lossy["repetitions"] for sf in r["subflows"]}
    assert retrans["b"] > 0  # the bursty loss really dropped data


@light
def test_unknown_kernel_is_one_line(tmp_path: Path) -> None:
    for args in (["kernel", "fetch", "5.99"], ["run", "demo", "--kernel", "5.99"],
                 ["matrix", "demo", "--kernels", "6.1,5.99"]):
        proc = cli(*args, timeout=300)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()  # before it, only what a wait was for (e.g. an apt update)
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0] and "5.99" in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr


@light
def test_a_file_that_is_not_a_kernel_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "bzImage"
    fake.write_bytes(b"\x7fELF" + os.urandom(8192))
    for target, words in ((fake, "not a Linux kernel image"), (tmp_path, "is a directory")):
        proc = cli("kernel", "add", str(target))
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {target}: {words}"), proc.stderr


def test_a_kernel_without_mptcp_is_refused(tmp_path: Path, kernels: list[str]) -> None:
    """A real image whose config says MPTCP is off (a build with CONFIG_MPTCP=n) never enters the cache."""
    real = resolve(kernels[0])
    assert real.config
    config = tmp_path / ".config"
    config.write_text(Path(real.config).read_text().replace("CONFIG_MPTCP=y", "# CONFIG_MPTCP is not set"))
    proc = cli("kernel", "add", real.image, "--config", str(config))
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "without MPTCP" in lines[0], proc.stderr
    assert resolve(kernels[0]).origin.startswith("debian")  # the cached Debian kernel is untouched


def test_a_kernel_that_cannot_boot_gives_its_console(tmp_path: Path, kernels: list[str]) -> None:
    """No init to run: the kernel panics, and the error quotes the panic; nothing survives."""
    before = guest_temp_dirs()
    k = resolve(kernels[1])
    with pytest.raises(Exception) as exc:
        with GuestSession(k, GuestConfig(extra_cmdline=["rdinit=/no-such-init"])) as guest:
            guest.run(load_scenario(scenario(tmp_path, "netem")), RunOptions(repeat=1))
    message = str(exc.value)
    assert type(exc.value).__name__ == "RunError"
    assert "Kernel panic" in message and k.release in message, message
    assert guest_temp_dirs() <= before
    assert not qemu_children(os.getpid())


def test_sigterm_stops_the_guest(tmp_path: Path, kernels: list[str]) -> None:
    before = guest_temp_dirs()
    proc = subprocess.Popen([CLI, "run", str(scenario(tmp_path, "netem")), "--kernel", KERNELS[1], "--no-store"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(qemu_children(proc.pid)) >= 2, timeout=60), "qemu and virtiofsd did not start"
        children = qemu_children(proc.pid)
        time.sleep(2)  # mid-boot
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: stopped by SIGTERM"), err  # the last line says why it stopped
    assert not [c for c in children if alive(c)]
    assert guest_temp_dirs() <= before


def test_sigkill_takes_the_guest_along_and_cleanup_removes_the_rest(tmp_path: Path, kernels: list[str]) -> None:
    """Even a lab killed with SIGKILL leaves no qemu running; `cleanup` removes its temporary directory."""
    before = guest_temp_dirs()
    proc = subprocess.Popen([CLI, "run", str(scenario(tmp_path, "netem")), "--kernel", KERNELS[1], "--no-store"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(qemu_children(proc.pid)) >= 2, timeout=60), "qemu and virtiofsd did not start"
        children = qemu_children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_for(lambda: not [c for c in children if alive(c)], timeout=10)
    stale = guest_temp_dirs() - before
    assert len(stale) == 1
    done = cli("cleanup")
    assert "removed temporary directory" in done.stdout and stale.pop() in done.stdout
    assert guest_temp_dirs() <= before


def test_a_guest_past_its_timeout_is_killed(tmp_path: Path, kernels: list[str]) -> None:
    before = guest_temp_dirs()
    k = resolve(kernels[0])
    with pytest.raises(Exception) as exc:
        with GuestSession(k, GuestConfig(boot_timeout_s=0.5)) as guest:  # no kernel boots the lab that fast
            guest.run(load_scenario(scenario(tmp_path, "netem")), RunOptions(repeat=1))
    assert type(exc.value).__name__ == "RunError"
    assert "did not boot within 0.5 s (guest killed)" in str(exc.value) and k.release in str(exc.value)
    assert not qemu_children(os.getpid())
    assert guest_temp_dirs() <= before
