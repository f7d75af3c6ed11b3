"""Deterministic time: a self-built UML kernel runs the lab in simulated time (executors/uml).

Everything here is real: the kernel is built from Debian's 6.12.117 source
once per machine (`mptcplab kernel build`, kept in the kernel cache like the
Debian kernels the QEMU tests fetch), each repetition boots it with time
travel, and the numbers must be the same to the bit in every boot, with or
without other load on the machine.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CLI, cli, requires_root, wait_for, write_scenario

pytestmark = requires_root

KERNEL = "6.12.117-uml"
LOSSY = """
name = "uml-lossy"
[[path]]
name = "a"
rate = "10mbit"
delay = "10ms"
loss = "1%"
[[path]]
name = "b"
rate = "5mbit"
delay = "20ms"
[workload]
size = "2MiB"
[run]
repeat = 3
timeout = "30s"
"""
LONG = LOSSY.replace('size = "2MiB"', 'size = "12MiB"').replace("repeat = 3", "repeat = 8")


@pytest.fixture(scope="module")
def uml_kernel() -> str:
    """The UML kernel, built once per machine (incremental, nothing to do when cached)."""
    proc = cli("kernel", "build", "6.12.117", "--flavour", "uml", timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert KERNEL in proc.stdout
    return KERNEL


def _run(tmp_path: Path, content: str, *args: str, name: str = "s.toml", env: dict | None = None) -> dict:
    path = write_scenario(tmp_path, content, name)
    proc = subprocess.run([CLI, "run", str(path), "--kernel", KERNEL, "--json", "--no-timeseries", *args],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _uml_processes(skip: set[str]) -> list[int]:
    """UML processes of job directories not in `skip` (other labs may run UML beside this test): the `linux`
    process and its helpers carry their job directory in TMPDIR."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            tmpdir = next((e[7:].decode(errors="replace") for e in environ if e.startswith(b"TMPDIR=")), "")
            if "mptcplab-uml-" in tmpdir and str(Path(tmpdir).parent) not in skip:
                out.append(int(proc.name))
    return out


def _job_dirs() -> set[str]:
    from mptcplab.executors.uml import work_root

    return {str(p) for p in Path(work_root()).glob("mptcplab-uml-*")}


def _hog(stop: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100000):
            x = (x * 31 + 7) % 1000003


def test_a_scenario_in_uml_is_stored_like_any_run(tmp_path: Path, uml_kernel: str) -> None:
    db = tmp_path / "r.db"
    doc = _run(tmp_path, LOSSY, "--repeat", "2", "--db", str(db))
    env = doc["environment"]
    assert doc["kernel"] == KERNEL == env["kernel_release"]
    assert env["executor"] == "uml" and env["time_mode"] == "travel" and env["seed"] == 1
    assert env["link_backend"] == "wire"  # the default under UML
    assert env["guest"]["kernel_source"].startswith("debian trixie linux-source-6.12")
    assert env["guest"]["config_hash"] and env["guest"]["hz"] == 100 and env["guest"]["cpus"] == 1
    assert "not applicable" in env["guest"]["guest_cpu"] and "guest_cpu" not in env
    assert env["guest"]["traffic_start"].startswith("on a 1 s grid of simulated time, at a phase drawn from")
    assert [r["index"] for r in doc["repetitions"]] == [0, 1]
    for rep in doc["repetitions"]:
        assert rep["status"] == "completed" and rep["mptcp"]
        assert len(rep["subflows"]) == 2 and all(sf["share"] > 0.05 for sf in rep["subflows"])
        assert 0 < rep["goodput_mbps"] < 15  # bounded by the two paths
    shown = cli("show", doc["run_id"], "--db", str(db), "--json")
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    assert stored["environment"]["executor"] == "uml" and len(stored["repetitions"]) == 2
    from mptcplab.analysis.conditions import conditions

    assert conditions(stored["environment"])["executor"] == "uml"
    assert conditions(stored["environment"])["time mode"] == "travel"


def test_same_seed_same_numbers_across_boots_and_under_load(tmp_path: Path, uml_kernel: str) -> None:
    """Two runs (3 boots each) give byte-identical repetitions; the second with every core busy. Both are stored
    as two runs, named and dated by the host (the seeded guest would give both the same id and date)."""
    db = str(tmp_path / "same.db")
    began = time.time()
    first = _run(tmp_path, LOSSY, "--db", db)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_hog, args=(stop,)) for _ in range(os.cpu_count() or 2)]
    for h in hogs:
        h.start()
    try:
        second = _run(tmp_path, LOSSY, "--db", db)
    finally:
        stop.set()
        for h in hogs:
            h.join(10)
    reps1 = json.dumps(first["repetitions"], sort_keys=True)
    reps2 = json.dumps(second["repetitions"], sort_keys=True)
    assert reps1 == reps2
    assert first["run_id"] != second["run_id"]
    stored = json.loads(cli("export", "--db", db, "--format", "json").stdout)
    assert sorted(r["run_id"] for r in stored) == sorted([first["run_id"], second["run_id"]])
    assert all(began <= r["started_at"] <= time.time() and len(r["repetitions"]) == 3 for r in stored)
    goodputs = [r["goodput_mbps"] for r in first["repetitions"]]
    assert len(set(goodputs)) > 1, goodputs  # the seeds differ per repetition, so do the losses
    # another seed base draws other losses
    other = _run(tmp_path, LOSSY, "--set", "run.seed=100")
    assert [r["goodput_mbps"] for r in other["repetitions"]] != goodputs


def _store_repetitions(db: Path) -> int:
    proc = cli("export", "--db", str(db), "--format", "json")
    if proc.returncode != 0 or not proc.stdout.strip():
        return 0
    return sum(len(r.get("repetitions", [])) for r in json.loads(proc.stdout))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_uml_run_leaves_no_process_and_keeps_its_repetitions(tmp_path: Path, uml_kernel: str, sig: int) -> None:
    before = _job_dirs()
    db = tmp_path / "k.db"
    path = write_scenario(tmp_path, LONG, "long.toml")
    proc = subprocess.Popen([CLI, "run", str(path), "--kernel", KERNEL, "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _store_repetitions(db) >= 1, timeout=300)
        assert wait_for(lambda: bool(_uml_processes(before)), timeout=30)  # the next repetition's UML is running
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, proc.stderr[-1000:]
    assert wait_for(lambda: not _uml_processes(before), timeout=20)
    kept = _store_repetitions(db)
    assert 1 <= kept < 8
    if sig == signal.SIGKILL:  # the job directory stays until cleanup removes it
        report = cli("cleanup")
        assert report.returncode == 0, report.stderr
    assert not _job_dirs() - before


def _live_job_dirs(skip: set[str]) -> set[str]:
    """Job directories (not in `skip`) with a UML process alive now."""
    out = set()
    for pid in _uml_processes(skip):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        out.update(e[7:].decode(errors="replace") for e in environ if e.startswith(b"TMPDIR="))
    return {str(Path(d).parent) for d in out}


def _watching(*args: str) -> tuple[str, int]:
    """Run the CLI with `args`: (its stdout, the most UML instances of its own that were alive at once)."""
    before = _job_dirs()
    most = 0
    with subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None:
            most = max(most, len(_live_job_dirs(before)))
            time.sleep(0.05)
        out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    return out, most


def test_a_matrix_runs_a_rounds_cells_at_once_with_the_seeds_of_a_run(tmp_path: Path, uml_kernel: str) -> None:
    """Repetition r of a matrix cell boots with seed base + r, as `run` does: the same numbers, one by one. A run
    boots its repetitions ahead, one per core, and the two scenarios' cells of a matrix round boot at once (UML in
    simulated time does not depend on load): both give what one boot at a time gives."""
    first = write_scenario(tmp_path, LOSSY, "m.toml")
    out, most_run = _watching("run", str(first), "--kernel", KERNEL, "--json", "--no-store", "--no-timeseries")
    run = json.loads(out)
    second = write_scenario(tmp_path, LOSSY.replace('name = "uml-lossy"', 'name = "uml-lossz"'), "n.toml")  # same length
    out, most = _watching("matrix", str(first), str(second), "--kernels", KERNEL, "--json", "--no-store", "--no-timeseries")
    cells = json.loads(out)
    assert [c["scenario"] for c in cells] == ["uml-lossy", "uml-lossz"]
    for cell in cells:
        assert [r["goodput_mbps"] for r in cell["repetitions"]] == [r["goodput_mbps"] for r in run["repetitions"]], cell["scenario"]
        assert [r["index"] for r in cell["repetitions"]] == [0, 1, 2]
        assert cell["environment"]["link_backend"] == "wire"
    if len(os.sched_getaffinity(0)) >= 2:
        assert most == 2, most  # both cells of a round booted at once (never more: a round has two)
        assert most_run >= 2, most_run  # the run's next repetition booted while one ran
