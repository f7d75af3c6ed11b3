"""The CLI's rough edges for a new user: help, --version, doctor, output paths, exit codes, first contact.

Commands run as users run them (the installed `mptcplab`, in a subprocess); stored runs are synthetic
(tests/synthetic.py) written through the real store, except where a real run is the subject.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from mptcplab.store import open_store

from .conftest import CLI, cli, cli_in_process, heavy, light, requires_root, write_scenario
from .synthetic import run

pytestmark = light  # synthetic stores, --help, refusals; the one real run is marked heavy


def _commands() -> list[list[str]]:
    """Every command and subcommand the CLI has (so a later one is checked too)."""
    import typer

    from mptcplab.cli import app

    def walk(group, prefix):
        for name, command in sorted(getattr(group, "commands", {}).items()):
            yield prefix + [name]
            yield from walk(command, prefix + [name])
    return list(walk(typer.main.get_command(app), []))


COMMANDS = _commands()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_plain_metavars_and_keeps_brackets(command) -> None:
    proc = cli(*command, "--help", env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert not re.search(r"<[a-z][a-z\[\] ]*>", proc.stdout), proc.stdout  # no <bool>, <path>, <str>, <list[str]>
    assert "╭" not in proc.stdout  # plain help: Rich panels would interpret [brackets] as markup
    if command == ["run"]:
        words = " ".join(proc.stdout.split())  # help text is wrapped
        assert "the scenario's [run] repeat" in words
        assert "--plot PNG" in words and "--db URL|PATH" in words and "--json print" in words


def test_version_names_the_release_and_the_commit() -> None:
    from mptcplab.environment import lab_version

    proc = cli("--version")
    lab = lab_version()
    assert proc.returncode == 0 and proc.stdout.startswith(f"mptcplab {lab['version']}"), proc.stdout
    if lab["commit"]:
        assert f"(git {lab['commit']})" in proc.stdout


def _in_terminal(args: list[str], columns: int = 80) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal `columns` wide, as a person would see it."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([CLI, *args], stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "dumb"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode()).replace("\r", "")


@requires_root
def test_doctor_fits_80_columns_and_labels_optional_items() -> None:
    from mptcplab.doctor import checks, ready

    expected = checks()
    code, text = _in_terminal(["doctor"])
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == (0 if ready(expected) else 3), text
    assert all(len(line) <= 80 for line in lines), text
    assert not any(line.strip() == "(optional)" for line in lines), text
    starts = [line for line in lines if not line.startswith(" ")]  # one per check; wrapped text is indented
    assert len(starts) == len(expected), text
    for c, line in zip(expected, starts):
        label = "OK" if c.ok else ("MISSING" if c.required else "absent (optional)")
        assert line.startswith(label + " ") and c.name in line, (c, line)


# -- output paths -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def read_only_dir(tmp_path_factory):
    """A read-only tmpfs: writing there fails with EROFS even for root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path_factory.mktemp("ro")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def stored(results_store):
    """Two synthetic runs (5 repetitions each) of scenario `syn` in the test's store."""
    store = open_store(str(results_store))
    a = run([20.0, 20.1, 20.2, 20.3, 20.4], label="base", started_at=1_700_000_000.25, warmup=2.0)
    b = run([18.0, 18.1, 18.2, 18.3, 18.4], label="cand", started_at=1_700_001_000.0)
    for r in (a, b):
        store.save_result(r, {"name": "syn"})
    return a, b


def _output_commands(json_result: Path, run_id: str, scenario: Path) -> dict[str, list[str]]:
    """Every command that writes a file, with the option that names it last."""
    return {
        "export -o": ["export", "--format", "csv", "-o"],
        "export json -o": ["export", "--format", "json", "-o"],
        "run --plot": ["run", str(scenario), "--no-store", "--plot"],
        "plot -o (file)": ["plot", str(json_result), "-o"],
        "plot -o (stored)": ["plot", run_id, "-o"],
        "compare --plot": ["compare", "--baseline", "label:base", "--candidate", "label:cand", "--plot"],
        "compare -o": ["compare", "--baseline", "label:base", "--candidate", "label:cand", "--format", "json", "-o"],
        "history --plot": ["history", "syn", "--plot"],
    }


@pytest.mark.parametrize("target", ["/nonexistent/x", "/proc/x", "read-only", "a directory", "under a file"])
def test_every_output_path_that_cannot_be_written_is_one_line_and_exit_2(stored, tmp_path, read_only_dir, target):
    a, _ = stored
    json_result = tmp_path / "result.json"
    json_result.write_text(json.dumps(a.to_json()))
    scenario = write_scenario(tmp_path, 'name = "never-run"\n[[path]]\nname = "a"\nrate = "10mbit"\n[workload]\nsize = "1MiB"\n')
    (tmp_path / "file").write_text("")
    before = {ns for ns in os.listdir("/run/netns")} if os.path.isdir("/run/netns") else set()
    for i, (name, args) in enumerate(_output_commands(json_result, a.run_id, scenario).items()):
        suffix = ".csv" if name.startswith("export") else ".json" if name == "compare -o" else ".png"
        path = {"/nonexistent/x": f"/nonexistent/x{suffix}", "/proc/x": f"/proc/x{suffix}",
                "read-only": str(read_only_dir / f"x{suffix}"), "a directory": str(tmp_path),
                "under a file": str(tmp_path / "file" / f"x{suffix}")}[target]
        proc = (cli if i == 0 else cli_in_process)(*args, path)  # one command per target as a user runs it
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and path in lines[0], (name, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == "", (name, proc.stdout)
    after = {ns for ns in os.listdir("/run/netns")} if os.path.isdir("/run/netns") else set()
    assert not {ns for ns in after - before if "never-run" in ns}
    assert not list(read_only_dir.iterdir())


@pytest.mark.parametrize("target", ["/proc/x", "read-only", "a file", "under a file"])
def test_a_report_directory_that_cannot_be_written_is_one_line_and_exit_2(stored, tmp_path, read_only_dir, target):
    (tmp_path / "file").write_text("")
    path = {"/proc/x": "/proc/x", "read-only": str(read_only_dir / "site"), "a file": str(tmp_path / "file"),
            "under a file": str(tmp_path / "file" / "site")}[target]
    proc = cli("report", path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: OUT {path}: "), proc.stderr
    assert not list(read_only_dir.iterdir()) and (tmp_path / "file").read_text() == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mptcplab-probe")]


def test_a_figure_format_matplotlib_cannot_write_is_refused(stored, tmp_path):
    a, _ = stored
    proc = cli("plot", a.run_id, "-o", str(tmp_path / "plot.txt"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --output") and ".png" in proc.stderr, proc.stderr
    assert not (tmp_path / "plot.txt").exists()


def test_outputs_that_can_be_written_are(stored, tmp_path):
    a, _ = stored
    existing = tmp_path / "existing.csv"
    existing.write_text("old\n")
    assert cli("export", "-o", str(existing)).returncode == 0
    assert existing.read_text().startswith("run_id,")
    png = tmp_path / "cmp.png"
    proc = cli("compare", "--baseline", "label:base", "--candidate", "label:cand", "--plot", str(png))
    assert proc.returncode == 1 and png.stat().st_size > 0, proc.stderr  # 1: the candidate regressed


# -- thresholds, exit codes ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["compare", "--baseline", "label:base", "--candidate", "label:cand"], ["history", "syn"]])
def test_a_bare_threshold_is_a_percentage(stored, command):
    docs = {}
    for threshold in ("5", "5%", "12", "12%"):
        proc = (cli if threshold == "5" else cli_in_process)(*command, "--threshold", threshold, "--format", "json")
        assert proc.returncode in (0, 1), proc.stderr
        docs[threshold] = json.loads(proc.stdout)
    assert docs["5"] == docs["5%"] and docs["5"]["threshold"] == pytest.approx(0.05)
    assert docs["12"] == docs["12%"] and docs["12"]["threshold"] == pytest.approx(0.12)
    if command[0] == "compare":  # a 10% drop: a regression at 5, not at 12
        assert docs["5"]["regressed"] and not docs["12"]["regressed"]
    for bad in ("100", "-1", "lots") if command[0] == "compare" else ("100",):
        proc = (cli if bad == "100" else cli_in_process)(*command, "--threshold", bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("make", ["directory", "not a database"])
def test_an_unopenable_database_is_exit_2(tmp_path, make):
    db = tmp_path / "results.db"
    if make == "directory":
        db.mkdir()
    else:
        db.write_bytes(b"this is not SQLite\n" * 200)
    for i, command in enumerate((["runs"], ["show", "abcd"], ["export"], ["history", "x"], ["compare", "--baseline", "a", "--candidate", "b"])):
        proc = (cli if i == 0 else cli_in_process)(*command, "--db", str(db))
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.startswith("error: cannot open the results store") and proc.stderr.count("\n") == 1, proc.stderr


# -- first contact ----------------------------------------------------------------------------------

@pytest.fixture
def fresh_user(tmp_path, monkeypatch):
    """No MPTCPLAB_DB, an empty XDG data directory: the default store does not exist yet."""
    monkeypatch.delenv("MPTCPLAB_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "mptcplab" / "results.db"


def test_listing_before_any_run_is_not_an_error(fresh_user, tmp_path):
    message = f"no runs stored yet (in {fresh_user})\n"
    proc = cli("runs")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, message, "")
    proc = cli_in_process("history", "demo")
    assert (proc.returncode, proc.stdout) == (0, message), proc.stderr
    proc = cli_in_process("history", "demo", "--format", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["points"] == [] and proc.stderr == message
    for args in (["--by", "kernel"], ["--suite"]):  # every history mode alike; JSON in the shape it has with runs
        scenario = ["demo"] if "--suite" not in args else []
        proc = cli_in_process("history", *scenario, *args)
        assert (proc.returncode, proc.stdout) == (0, message), proc.stderr
        proc = cli_in_process("history", *scenario, *args, "--format", "json")
        doc = json.loads(proc.stdout)
        assert proc.returncode == 0 and proc.stderr == message, proc.stderr
        assert doc == [] if "--suite" in args else (doc["points"], doc["other_series"]) == ([], [])
    proc = cli_in_process("export", "--format", "json")
    assert (proc.returncode, json.loads(proc.stdout), proc.stderr) == (0, [], message)
    proc = cli_in_process("export")
    assert proc.returncode == 0 and proc.stdout.startswith("run_id,") and proc.stderr == message
    assert not (tmp_path / "data").exists()  # looking created nothing
    explicit = tmp_path / "elsewhere.db"
    proc = cli_in_process("runs", "--db", str(explicit))
    assert (proc.returncode, proc.stdout) == (0, f"no runs stored yet (in {explicit})\n") and not explicit.exists()


def test_a_failed_import_creates_no_database(fresh_user, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    for args in ([str(junk)], [str(tmp_path / "missing.json")]):
        proc = cli("import", *args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert not fresh_user.exists() and not fresh_user.parent.exists()


def test_csv_numbers_repetitions_from_1_with_iso_times(stored):
    a, b = stored
    proc = cli("export", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    mine = [r for r in rows if r["run_id"] == a.run_id]
    assert [r["repetition"] for r in mine] == ["1", "2", "3", "4", "5", "6"]  # the warm-up is repetition 1
    assert mine[0]["warmup"] == "True" and mine[1]["warmup"] == "False"
    for r in mine:
        assert datetime.fromisoformat(r["run_started_at"]).timestamp() == pytest.approx(a.started_at, abs=1e-3)
    assert [datetime.fromisoformat(r["started_at"]).timestamp() for r in mine] == \
        pytest.approx([rep.started_at for rep in a.repetitions], abs=1e-3)
    table = cli("show", a.run_id)
    assert re.search(r"│\s+1 \(warm-up\)\s+│", table.stdout), table.stdout  # what tables call repetition 1


@heavy
@requires_root
def test_run_seed_is_the_runs_seed_base_and_guest_options_on_the_host_say_they_did_nothing(tmp_path):
    """--seed N becomes [run] seed (recorded in the run's environment); --time and --accel on this host's kernel
    change nothing and say so in one note each, and so does the seed for the wire backend's draws here."""
    scenario = write_scenario(tmp_path, """
        name = "seeded-here"
        [[path]]
        name = "a"
        rate = "20mbit"
        [workload]
        size = "256KiB"
        [run]
        link_backend = "wire"
        seed = 3
    """)
    proc = cli("run", str(scenario), "--repeat", "1", "--json", "--no-store", "--no-timeseries", "--seed", "9",
               "--time", "real", "--accel", "tcg")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["environment"]["seed"] == 9
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: --")]
    assert notes[:2] == ["note: --accel tcg does nothing here: it applies only to qemu kernels (this command runs on: host)",
                         "note: --time real does nothing here: it applies only to uml kernels (this command runs on: host)"], proc.stderr
    # the wire forwarder's draws on this host do not follow the seed: said, not implied
    assert len(notes) == 3 and notes[2].startswith("note: --seed 9 is recorded, but on this host the wire backend's"), notes


@heavy
@requires_root
def test_a_run_that_can_be_kept_nowhere_says_so_once(tmp_path, read_only_dir, monkeypatch):
    """Store and spool directory both unwritable: the run still runs and prints, and one line says nothing was kept."""
    monkeypatch.setenv("XDG_DATA_HOME", str(read_only_dir))  # the spool directory is under it
    scenario = write_scenario(tmp_path, """
        name = "kept-nowhere"
        [[path]]
        name = "a"
        rate = "20mbit"
        [workload]
        size = "512KiB"
        [run]
        link_backend = "wire"
    """)
    proc = cli("run", str(scenario), "--repeat", "1", "--json", "--db", str(read_only_dir / "results.db"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    lines = [line for line in proc.stderr.splitlines() if doc["run_id"] in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"nothing of run {doc['run_id']}") and "could be kept" in lines[0], lines[0]
    assert "only in this command's output" in lines[0] and str(read_only_dir / "mptcplab" / "spool") in lines[0]
    assert "spooled" not in proc.stderr and "warning" not in proc.stderr, proc.stderr


def test_brackets_in_stored_names_are_printed_as_they_are(results_store):
    """Labels, scenario names and path names are data, never Rich markup ("[v1]" must not vanish)."""
    r = run([10.0, 10.5, 11.0], label="[v1] fix", scenario="s[run]")
    open_store(str(results_store)).save_result(r, {"name": "s[run]"})
    base = run([10.0, 10.5, 11.0], label="[v0] base", scenario="s[run]", started_at=r.started_at - 100)
    open_store(str(results_store)).save_result(base, {"name": "s[run]"})
    listed = cli("runs")
    assert listed.returncode == 0 and "[v1] fix" in listed.stdout and "s[run]" in listed.stdout, listed.stdout
    shown = cli_in_process("show", r.run_id)
    assert shown.returncode == 0 and "label [v1] fix" in " ".join(shown.stdout.split()), shown.stdout
    hist = cli_in_process("history", "s[run]")
    assert hist.returncode == 0 and "s[run]: goodput_mbps" in hist.stdout and "[v1] fix" in hist.stdout, hist.stdout
    cmp = cli_in_process("compare", "--baseline", "label:[v0] base", "--candidate", "label:[v1] fix")
    assert cmp.returncode == 0 and "baseline label:[v0] base vs candidate label:[v1] fix" in " ".join(cmp.stdout.split()), cmp.stdout


# -- what a command loads ---------------------------------------------------------------------------

LOADED = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("LOADED " + " ".join(sorted(m for m in sys.modules if "." not in m)) + "\\n"))
sys.argv = ["mptcplab", *sys.argv[1:]]
from mptcplab.cli import main
main()
"""


@pytest.mark.parametrize("args, absent", [  # ids: the command (pytest-xdist needs the same ids in every worker)
    pytest.param(["--help"], {"pydantic", "pyroute2", "sqlalchemy", "alembic", "numpy", "scipy", "matplotlib", "plotly"}, id="--help"),
    pytest.param(["scenarios", "--show", "demo"], {"pyroute2", "sqlalchemy", "numpy", "matplotlib"}, id="scenarios --show"),
    pytest.param(["scenarios"], {"pyroute2", "sqlalchemy", "numpy", "matplotlib"}, id="scenarios"),
    pytest.param(["runs"], {"pyroute2", "alembic", "matplotlib", "plotly"}, id="runs"),
])
def test_a_command_loads_only_what_it_needs(stored, args, absent):
    """Tests and scripts start the CLI hundreds of times: --help loads typer alone, scenarios no engine, and
    reading a store that is at the newest schema no alembic (it loads only to migrate)."""
    import sys

    proc = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stderr.rsplit("LOADED ", 1)[1].split())
    assert "mptcplab" in loaded and not loaded & absent, sorted(loaded & absent)


@requires_root
def test_check_validates_as_run_would_without_building_anything(tmp_path):
    """`check` exits 0/2/3 with the same one-line error as `run` for the same scenario and options."""
    from .conftest import lab_namespaces

    good = write_scenario(tmp_path, """
        name = "checked"
        [[path]]
        name = "a"
        rate = "10mbit"
        [[path]]
        name = "b"
        rate = "150kbit"
        [workload]
        size = "1MiB"
        """)
    before = lab_namespaces()
    ok = cli("check", str(good), "demo")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("checked: ok — 2 paths, link backend ")
    assert ok.stdout.splitlines()[1].startswith("demo: ok — 2 paths")
    assert "note: " in ok.stderr and "path 'b': the default queue" in ok.stderr  # the notes run prints too
    assert lab_namespaces() == before  # nothing was built
    cases = [
        ((str(good), "--set", "run.colour=red"), 2),  # an unknown key
        ((str(good), "--set", "workload.duration=70s", "--set", "workload.size=1MiB"), 2),  # size and duration
        ((str(tmp_path / "missing.toml"),), 2),
        ((str(good), "--link-backend", "carrier-pigeon"), 2),
        ((str(good), "--set", "mptcp.scheduler=no-such-scheduler"), 3),  # not in this kernel
        ((str(good), "--set", "tcp.congestion_control=nosuchcc"), 3),
        ((str(good), "--set", "sysctl.net.mptcp.no_such_key=1"), 3),
        ((str(good), "--set", "path.a.rate=10gbit", "--link-backend", "wire"), 3),  # above the backend's ceiling
    ]
    for args, code in cases:
        checked = cli_in_process("check", *args)
        ran = cli_in_process("run", "--no-store", *args)
        assert (checked.returncode, ran.returncode) == (code, code), (args, checked.stderr, ran.stderr)
        assert checked.stderr.splitlines()[-1] == ran.stderr.splitlines()[-1], args
        assert checked.stderr.splitlines()[-1].startswith("error: ") and checked.stdout == ""


@pytest.mark.parametrize("command", [["compare", "--baseline", "label:base", "--candidate", "label:cand"], ["history", "syn"]])
def test_a_bad_threshold_is_refused_before_the_database_is_read(tmp_path, command):
    """Options first: a bad --threshold is exit 2 even where nothing is stored yet (not 'no runs stored yet', exit 0)."""
    proc = cli_in_process(*command, "--threshold", "abc%", "--db", str(tmp_path / "none.db"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--threshold" in proc.stderr, proc.stderr
    assert not (tmp_path / "none.db").exists()


def test_compare_on_a_metric_neither_side_measured_says_so(stored):
    proc = cli_in_process("compare", "--baseline", "label:base", "--candidate", "label:cand", "--metric", "latency_p99_ms")
    assert proc.returncode == 2, proc.stderr
    assert "no repetition on either side has the metric latency_p99_ms" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
