"""Shared helpers: tests run the real kernel MPTCP in real namespaces, as root."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mptcplab.cleanup import run_alive
from mptcplab.lab import PREFIX
from mptcplab.netns import list_netns

CLI = str(Path(sys.executable).parent / "mptcplab")
SHARED = Path(__file__).resolve().parents[2] / "shared"

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root to build namespaces")

#: `make test` runs the tests marked light two at a time (pytest-xdist), then every other test alone: those move
#: traffic, boot guests or start PostgreSQL, and their rates, delays and timeouts assume the machine to themselves.
#: A test is light only when it says so (module `pytestmark` or a decorator) and is not also marked heavy, so a new
#: test runs alone until someone marks it; a light test fails when it builds a lab or boots a guest in-process, or
#: when a `run`, `matrix` or `suite run` it starts through `cli`/`cli_in_process` is not refused (exit 2 or 3).
light = pytest.mark.light
heavy = pytest.mark.heavy


def pytest_collection_modifyitems(config, items) -> None:
    """Every test not marked light is heavy (`pytest -m heavy` / `-m "not heavy"` select the two phases)."""
    for item in items:
        if item.get_closest_marker("light") is None and item.get_closest_marker("heavy") is None:
            item.add_marker(heavy)


@pytest.fixture(autouse=True)
def _light_tests_move_no_traffic(request, monkeypatch):
    """A test that runs beside another (not heavy) may not build a lab or boot a guest in this process, nor start
    a run through the CLI that is not refused (`cli` checks that)."""
    if request.node.get_closest_marker("heavy") is not None:
        yield
        return

    def refuse(*_args, **_kw):
        pytest.fail(f"{request.node.nodeid} builds a lab or boots a guest: mark it heavy (it needs the machine alone)")

    monkeypatch.setattr("mptcplab.lab.Lab.__init__", refuse)
    monkeypatch.setattr("mptcplab.executors.qemu.session.GuestSession.__init__", refuse)
    _LIGHT_TEST[:] = [request.node.nodeid]
    yield
    _LIGHT_TEST.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers() -> list[str]:
    """Lab namespaces whose run is gone: what a test must never leave behind.

    Namespaces of runs that are still alive (other tests, other labs on this
    machine) are not leftovers, and neither are the scratch namespaces that
    capability probes of live processes hold for a moment: a probe
    (mptl-probe-<pid>-<hex>) is left over when its process is gone; one
    without a pid (an older lab's) only when it is still there 2 s later.
    """
    out, unowned = [], []
    for ns in list_netns():
        if not ns.startswith(PREFIX):
            continue
        run_id, _, rest = ns.removeprefix(PREFIX).partition("-")
        if run_id != "probe":
            if not run_alive(run_id):
                out.append(ns)
            continue
        pid = rest.split("-", 1)[0] if "-" in rest else ""
        if pid.isdigit():
            if not _pid_alive(int(pid)):
                out.append(ns)
        else:
            unowned.append(ns)
    if unowned:
        time.sleep(2)
        out += [ns for ns in unowned if ns in set(list_netns())]
    return out


def lab_namespaces() -> set[str]:
    return {ns for ns in list_netns() if ns.startswith(PREFIX) and "-probe-" not in ns and not ns.startswith(PREFIX + "probe")}


def namespaces_of_pid(pid: int) -> set[str]:
    """The lab namespaces of the run(s) that process `pid` holds locks for.

    Other labs (other tests, other engineers) may run at the same time, so a
    test identifies its own run by the pid written in the run's lock file.
    """
    from mptcplab.lab import RUN_DIR

    ids = set()
    for lock in Path(RUN_DIR).glob("*.lock"):
        try:
            if lock.read_text().strip() == str(pid):
                ids.add(lock.stem)
        except OSError:
            continue
    return {ns for ns in list_netns() if ns.startswith(PREFIX) and ns.removeprefix(PREFIX).split("-", 1)[0] in ids}


def cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, **kw)
    _check_light(args, proc.returncode)
    return proc


#: the node id of the running test when it is not heavy (set by _light_tests_move_no_traffic)
_LIGHT_TEST: list[str] = []
_TRAFFIC_COMMANDS = (("run",), ("matrix",), ("suite", "run"))


def _check_light(args: tuple[str, ...], code: int) -> None:
    """A light test may start `run`, `matrix` or `suite run` only to be refused (exit 2 or 3, before anything is
    built): any other exit code means traffic moved while another test ran beside it."""
    if (_LIGHT_TEST and "--help" not in args and any(tuple(args[:len(c)]) == c for c in _TRAFFIC_COMMANDS)
            and code not in (2, 3)):
        pytest.fail(f"{_LIGHT_TEST[0]}: `mptcplab {' '.join(args[:2])}` ran (exit {code}): mark the test heavy")


def cli_in_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI's own main() in this process, with its stdout, stderr and exit code, as `cli` returns them.

    For the many cases of one behaviour whose subject is the exit code and what is printed (refusals, help,
    files as shipped): a subprocess costs a second or more of imports on a loaded 2-core machine, this a few
    milliseconds. Each such behaviour keeps at least one case through `cli` (the real process), and anything
    that depends on the process (signals, a crash, the environment it starts with) always uses `cli`. An
    exception that main() does not turn into an exit code propagates, so the test fails on what would have
    been a traceback.
    """
    from mptcplab.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = ["mptcplab", *args]
    os.environ.update(env or {})
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    code = code if isinstance(code, int) else (0 if code is None else 1)
    _check_light(args, code)
    return subprocess.CompletedProcess(["mptcplab", *args], code, stdout.getvalue(), stderr.getvalue())


def write_scenario(tmp_path: Path, body: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def run_once(tmp_path: Path, body: str, name: str = "s.toml", backend: str | None = None):
    """Run a scenario given as TOML once, in-process; check it left nothing behind."""
    from mptcplab import RunOptions, load_scenario, run_scenario

    before = set(leftovers())
    result = run_scenario(load_scenario(write_scenario(tmp_path, body, name)), RunOptions(repeat=1))
    assert set(leftovers()) <= before, "the run left namespaces behind"
    if backend is not None:
        assert result.backend == backend
    return result, result.repetitions[0]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


TWO_PATHS = """
name = "t-two-paths"
[mptcp]
path_manager = "{pm}"
[[path]]
name = "a"
rate = "10mbit"
[[path]]
name = "b"
rate = "10mbit"
[workload]
size = "{size}"
[run]
repeat = {repeat}
timeout = "60s"
link_backend = "{backend}"
"""


@pytest.fixture
def two_paths(tmp_path: Path):
    def make(size: str = "4MiB", repeat: int = 1, backend: str = "auto", pm: str = "kernel") -> Path:
        return write_scenario(tmp_path, TWO_PATHS.format(size=size, repeat=repeat, backend=backend, pm=pm))
    return make


@pytest.fixture(autouse=True)
def results_store(tmp_path_factory, monkeypatch) -> Path:
    """Every test's runs are stored in its own SQLite file, never in the user's results database."""
    db = tmp_path_factory.mktemp("store") / "results.db"
    monkeypatch.setenv("MPTCPLAB_DB", str(db))
    return db
