"""What the CLI says when something is wrong or slow: one line `error: what — fix` and the README's exit code,
the lab's words instead of the libraries', progress on stderr, counts where a listing is cut.

Refusals run the CLI's main() in this process (cli_in_process) for speed, with at least one case of each
behaviour in a real process (cli); nothing here moves traffic.
"""
from __future__ import annotations

import pytest

from mptcplab.links import BACKENDS, backend_choices

from .conftest import cli, cli_in_process, write_scenario

pytestmark = pytest.mark.light


def one_error_line(proc, code: int = 2) -> str:
    """The one stderr line of a refused command (exit `code`), without its `error: ` prefix."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr
    return lines[0].removeprefix("error: ")


# -- link backend names: one list (links.BACKENDS), one check ----------------------------------------------------

def test_the_backend_choices_come_from_the_registry() -> None:
    assert backend_choices() == ", ".join(["auto", *BACKENDS][:-1]) + f" or {[*BACKENDS][-1]}"


@pytest.mark.parametrize("args", [
    ["run", "demo"], ["matrix", "demo", "--kernels", "6.1"], ["suite", "run"], ["bisect", "demo", "--good", "6.1", "--bad", "6.12"],
    ["submit", "demo", "--db", "postgresql://lab@127.0.0.1:9/lab"],
], ids=lambda a: a[0] if a[0] != "suite" else "suite run")
def test_every_link_backend_option_is_checked_against_the_registry(args) -> None:
    proc = cli_in_process(*args, "--link-backend", "bogus")
    assert one_error_line(proc) == f"--link-backend 'bogus': choose {backend_choices()}"


def test_a_scenario_link_backend_is_checked_against_the_registry(tmp_path) -> None:
    path = write_scenario(tmp_path, 'name = "x"\n[run]\nlink_backend = "bogus"\n[[path]]\nname = "a"\nrate = "10mbit"\n'
                                    '[workload]\nsize = "1MiB"\n')
    proc = cli("run", str(path), "--no-store")
    assert one_error_line(proc).endswith(f"run.link_backend: got 'bogus'; choose {backend_choices()}")


# -- --db in a directory that does not exist: one line, exit 2, nothing created, for every command --------------

def _commands_with_db() -> list[list[str]]:
    import typer

    from mptcplab.cli import app

    def walk(group, prefix):
        for name, command in sorted(getattr(group, "commands", {}).items()):
            if any("--db" in getattr(p, "opts", []) for p in command.params):
                yield prefix + [name]
            yield from walk(command, prefix + [name])
    return list(walk(typer.main.get_command(app), []))


DB_COMMANDS = _commands_with_db()


def test_the_walk_finds_the_commands_that_take_db() -> None:
    assert {"run", "runs", "import", "report", "matrix", "worker"} <= {c[-1] for c in DB_COMMANDS}
    assert ["suite", "run"] in DB_COMMANDS and len(DB_COMMANDS) >= 15


@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
def test_a_db_in_a_missing_directory_is_refused_before_any_work(tmp_path, command) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    proc = cli_in_process(*command, "--db", str(missing))
    assert one_error_line(proc) == (f"no results database at {missing}: the directory {missing.parent} does not exist — "
                                    f"create it (mkdir -p {missing.parent}) or pass --db (or set MPTCPLAB_DB) to where "
                                    "your runs are")
    assert not (tmp_path / "no").exists()


def test_a_run_or_an_import_into_a_missing_directory_creates_nothing(tmp_path) -> None:
    """As a user runs them (a real process): the writers created the directory tree before."""
    missing = tmp_path / "typo" / "x.db"
    for args in (["run", "demo"], ["import", str(tmp_path / "whatever.json")]):
        assert "does not exist" in one_error_line(cli(*args, "--db", str(missing)))
    env_missing = cli("runs", env={**__import__("os").environ, "MPTCPLAB_DB": str(missing)})
    assert "does not exist" in one_error_line(env_missing)
    assert not (tmp_path / "typo").exists()


# -- the CLI framework's option errors: one line `error: … — fix`, exit 2 ---------------------------------------

@pytest.mark.parametrize("args, line", [
    (["run", "demo", "--repeat", "0"], "--repeat must be at least 1 (got 0) — see 'mptcplab run --help'"),
    (["compare", "--baseline", "a", "--candidate", "b", "--alpha", "2"],
     "--alpha must be at most 0.5 (got 2) — see 'mptcplab compare --help'"),
    (["runs", "--limit", "0"], "--limit must be at least 1 (got 0) — see 'mptcplab runs --help'"),
    (["runs", "--limit", "many"], "--limit must be a whole number (got many) — see 'mptcplab runs --help'"),
    (["compare", "--candidate", "b"], "missing option --baseline — see 'mptcplab compare --help'"),
    (["show"], "missing argument RUN — see 'mptcplab show --help'"),
    (["runs", "--limt", "3"], "no such option --limt (did you mean --limit?) — see 'mptcplab runs --help'"),
    (["scenarios", "extra"], "got unexpected extra argument(s) (extra) — see 'mptcplab scenarios --help'"),
    (["nosuchcommand"], "no such command 'nosuchcommand' — see 'mptcplab --help'"),
    (["suite", "run", "--accel", "fast"],
     "--accel: 'fast' is not an accelerator: use one of auto, kvm, tcg — see 'mptcplab suite run --help'"),
    (["run", "demo", "--time", "slow"],
     "--time: 'slow' is not a time mode: use one of travel, real — see 'mptcplab run --help'"),
    (["run", "demo", "--seed", "-1"], "--seed '-1' is not a seed — give an integer from 0 to 2^63-1, or random"),
    (["matrix", "demo", "--kernels", "6.12.117-uml", "--seed", "x"],  # before any kernel is looked up
     "--seed 'x' is not a seed — give an integer from 0 to 2^63-1, or random"),
    (["suite", "run", "--seed", "1.5"], "--seed '1.5' is not a seed — give an integer from 0 to 2^63-1, or random"),
    (["kernel", "list", "--cached", "--refresh"],
     "--cached and --refresh contradict each other: --cached does not read the archive's lists — drop one of them"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_option_errors_are_one_line_with_the_fix(args, line) -> None:
    assert one_error_line(cli_in_process(*args)) == line


def test_an_option_error_in_a_real_process_and_help_still_work() -> None:
    assert one_error_line(cli("run", "demo", "--repeat", "0")) == "--repeat must be at least 1 (got 0) — see 'mptcplab run --help'"
    bare = cli("kernel")  # a group alone: its help, exit 2, as always
    assert bare.returncode == 2 and "fetch" in bare.stdout + bare.stderr
    assert cli("runs", "--help").returncode == 0


# -- runs says what --limit cut; import says one line ------------------------------------------------------------

def _store_with(db, n: int) -> None:
    from mptcplab.store import open_store

    from .synthetic import run

    store = open_store(str(db))
    for i in range(n):
        store.save_result(run([10.0 + i, 11.0], scenario="syn-limit"), None)


def test_runs_says_how_many_the_limit_left_out(tmp_path) -> None:
    db = tmp_path / "r.db"
    _store_with(db, 5)
    cut = cli_in_process("runs", "--limit", "2", "--db", str(db))
    assert cut.returncode == 0 and cut.stdout.splitlines()[-1] == "2 of 5 (--limit)", cut.stdout
    whole = cli_in_process("runs", "--limit", "5", "--db", str(db))
    assert whole.returncode == 0 and "(--limit)" not in whole.stdout
    filtered = cli_in_process("runs", "--limit", "1", "--scenario", "syn-limit", "--db", str(db))
    assert filtered.stdout.splitlines()[-1] == "1 of 5 (--limit)"


def test_import_prints_one_line_and_verbose_one_per_run(tmp_path) -> None:
    src, dst, doc = tmp_path / "src.db", tmp_path / "dst.db", tmp_path / "all.json"
    _store_with(src, 4)
    assert cli_in_process("export", "--format", "json", "-o", str(doc), "--db", str(src)).returncode == 0
    first = cli_in_process("import", str(doc), "--db", str(dst))
    assert (first.returncode, first.stdout) == (0, f"imported 4 runs from 1 file: 8 new repetitions into {dst}\n")
    again = cli_in_process("import", str(doc), "--db", str(dst), "--verbose")
    lines = again.stdout.splitlines()
    assert len(lines) == 5 and all(": 0 new of 2 repetitions" in line for line in lines[:4])
    assert lines[-1] == f"imported 4 runs from 1 file: 0 new repetitions (4 of the runs were stored in full already) into {dst}"


def test_import_reads_the_runs_document_that_run_and_selftest_print_for_several_runs(tmp_path) -> None:
    """`run A B --json` and `selftest ... --json` print {"runs": [...]}: import takes it as it takes an export."""
    import json

    src, dst, export, several = tmp_path / "src.db", tmp_path / "dst.db", tmp_path / "all.json", tmp_path / "runs.json"
    _store_with(src, 2)
    assert cli_in_process("export", "--format", "json", "-o", str(export), "--db", str(src)).returncode == 0
    several.write_text(json.dumps({"runs": json.loads(export.read_text())}))
    proc = cli_in_process("import", str(several), "--db", str(dst))
    assert (proc.returncode, proc.stdout) == (0, f"imported 2 runs from 1 file: 4 new repetitions into {dst}\n"), proc.stderr


# -- the lab's words, not the libraries' -------------------------------------------------------------------------

LIBRARY_WORDING = ("Input should", "List should", "Field required", "Input tag", "String should", "after validation")


def _refused(tmp_path, body: str) -> str:
    return one_error_line(cli_in_process("run", str(write_scenario(tmp_path, body)), "--no-store"))


def _scenario(paths: str = '[[path]]\nname = "a"\nrate = "10mbit"\n', workload: str = 'size = "1MiB"', extra: str = "") -> str:
    return f'name = "w"\n{extra}\n{paths}[workload]\n{workload}\n'


def test_too_many_paths_zero_size_and_an_unknown_kind_in_the_labs_words(tmp_path) -> None:
    from mptcplab.workload_specs import SPECS

    kinds = ", ".join(spec.model_fields["kind"].default for spec in SPECS)  # the registry, not a typed-out list
    many = "".join(f'[[path]]\nname = "p{i}"\nrate = "1mbit"\n' for i in range(300))
    assert _refused(tmp_path, _scenario(paths=many)).endswith("path: at most 8 paths (got 300)")
    assert _refused(tmp_path, _scenario(workload="size = 0")).endswith("workload.size: size must be more than 0 (got 0)")
    assert _refused(tmp_path, _scenario(workload='kind = "torrent"')).endswith(
        f"workload: unknown workload kind 'torrent' ({kinds})")


@pytest.mark.parametrize("extra, workload, paths", [
    ("[run]\nrepeat = 0", 'size = "1MiB"', None), ("[run]\nrepeat = 5000", 'size = "1MiB"', None),
    ("[run]\nrepeat = \"abc\"", 'size = "1MiB"', None), ("[run]\nrepeat = 2.5", 'size = "1MiB"', None),
    ("", 'kind = "rr"\nconcurrency = 0\ncount = 3', None), ("", 'size = "1MiB"', '[[path]]\nname = "a b"\nrate = "1mbit"\n'),
    ("", 'size = "1MiB"', '[[path]]\nname = "a"\nrate = "1mbit"\nreorder = "maybe"\n'), ("", 'size = "1MiB"', 'path = "x"\n'),
    ("", 'size = "1MiB"', '[[path]]\nname = "a"\nrate = "1mbit"\nsubflows = 9\n'), ("tags = [\"A B\"]", 'size = "1MiB"', None),
    ("[mptcp]\npath_manager = \"x\"", 'size = "1MiB"', None), ("", "kind = 5", None), ("name = 3", 'size = "1MiB"', None),
], ids=range(13))
def test_no_library_wording_leaks_from_any_field(tmp_path, extra, workload, paths) -> None:
    body = _scenario(workload=workload, extra=extra) if paths is None else _scenario(paths=paths, workload=workload, extra=extra)
    if extra.startswith("name ="):
        body = body.replace('name = "w"\n', "", 1)
    line = _refused(tmp_path, body)
    assert not any(w in line for w in LIBRARY_WORDING), line


def test_a_file_that_is_no_run_says_which_key_is_missing(tmp_path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"run_id": "x"}')
    line = one_error_line(cli_in_process("import", str(junk), "--db", str(tmp_path / "r.db")))
    assert "required key is missing" in line and not any(w in line for w in LIBRARY_WORDING), line
    assert not (tmp_path / "r.db").exists()


# -- what cannot finish within the timeout at the scenario's own rates is refused ---------------------------------

def test_a_delay_or_size_that_can_only_time_out_is_refused_naming_the_key(tmp_path) -> None:
    long_delay = _scenario(paths='[[path]]\nname = "a"\nrate = "10mbit"\ndelay = "3600s"\n')
    assert "path[0].delay: a round trip over path 'a' takes 7200s, not shorter than run.timeout 60s" in _refused(tmp_path, long_delay)
    huge = _scenario(workload='size = "900000GiB"')
    assert "workload.size 900000GiB takes at least" in _refused(tmp_path, huge)
    real = cli("run", str(write_scenario(tmp_path, huge, "huge.toml")), "--no-store")  # a real process, before any lab
    assert "run.timeout 60s, so it can only time out" in one_error_line(real)


def test_what_can_finish_is_accepted_including_a_rate_an_event_raises(tmp_path) -> None:
    from mptcplab.scenario import load_scenario

    # 70 MiB at 10 mbit: 58.7 s < 60 s
    assert load_scenario(write_scenario(tmp_path, _scenario(workload='size = "70MiB"'), "fits.toml")).workload.size == 70 * 2**20
    two = '[[path]]\nname = "a"\nrate = "10mbit"\n[[path]]\nname = "b"\nrate = "10mbit"\n'
    assert load_scenario(write_scenario(tmp_path, _scenario(paths=two, workload='size = "100MiB"'), "two.toml"))  # 20 mbit: 42 s
    raised = _scenario(workload='size = "100MiB"') + '[[event]]\nat = "1s"\npath = "a"\naction = "set"\nrate = "100mbit"\n'
    assert load_scenario(write_scenario(tmp_path, raised, "raised.toml")).events  # the event's rate bounds it: 8.4 s
    lowered = _scenario(paths='[[path]]\nname = "a"\nrate = "10mbit"\ndelay = "40s"\n') + \
        '[[event]]\nat = "1s"\npath = "a"\naction = "set"\ndelay = "10ms"\n'
    assert load_scenario(write_scenario(tmp_path, lowered, "lowered.toml")).events  # the lowest delay: 20.01 s round trip


def test_every_built_in_scenario_fits_its_timeout() -> None:
    from mptcplab.scenario import load_scenario
    from mptcplab.scenario_files import builtin_scenarios

    assert all(load_scenario(name).name for name in builtin_scenarios())


# -- progress on stderr for the slow reads of a store --------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_history_store(tmp_path_factory):
    """The 12-kernel data the project ships (docs/data: 154 runs), imported into a scratch store."""
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "docs" / "data" / "kernel-history-2026-12-01.json.gz"
    db = tmp_path_factory.mktemp("history") / "r.db"
    proc = cli("import", str(data), "--db", str(db))
    assert proc.returncode == 0 and proc.stdout.startswith("imported 154 runs from 1 file"), proc.stdout + proc.stderr
    return db


@pytest.mark.parametrize("args, line", [
    (["export", "--format", "json", "-o", "{tmp}/e.json"], "export: reading the runs from {db} …"),
    (["history", "--suite"], "history: every suite case's series in {db} …"),
    (["report", "{tmp}/site", "--scenario", "rr-asymmetric-rtt"], "report: the site of the runs in {db} …"),
], ids=["export", "history --suite", "report"])
def test_slow_reads_of_a_store_say_so_on_stderr(kernel_history_store, tmp_path, args, line) -> None:
    """A log (stderr not a terminal) gets one line once a second has passed: export, history --suite and report take
    several seconds on these 154 runs. (compare goes through the same helper, but judging kernel:6.1 vs kernel:7.3
    here is 0.1 s of work after 1.2 s of imports, so it rightly says nothing.)"""
    db = kernel_history_store
    proc = cli(*(a.format(tmp=tmp_path) for a in args), "--db", str(db))
    assert proc.returncode == 0 and line.format(db=db) in proc.stderr.splitlines(), proc.stderr
