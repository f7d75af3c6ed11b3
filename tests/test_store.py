"""The results store on SQLite and on a real PostgreSQL server, with real MPTCP runs."""
from __future__ import annotations

import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mptcplab.runner import RunOptions, run_scenarios
from mptcplab.scenario import load_scenario
from mptcplab.store import RunFilter, open_store
from mptcplab.store.database import current_revision, head_revision, script_head
from mptcplab.store.recorder import StoreRecorder

from .conftest import CLI, cli, cli_in_process, leftovers, requires_root, wait_for, write_scenario, light
from .pg import Cluster, create_database, postgres_server  # noqa: F401  (a fixture)

pytestmark = requires_root

TWO_PATHS = """
name = "st-two-paths"
[[path]]
name = "a"
rate = "10mbit"
[[path]]
name = "b"
rate = "{rate_b}"
[workload]
size = "1MiB"
[run]
link_backend = "tbf"
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "results.db")
    return create_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real 2-path MPTCP run (2 repetitions, one of them warm-up), as the runner produced it."""
    tmp = tmp_path_factory.mktemp("real")
    scenario = load_scenario(write_scenario(tmp, TWO_PATHS.format(rate_b="10mbit")))
    result = run_scenarios([scenario], RunOptions(repeat=1, warmup=1, label="real", tags={"suite": "store"}))[0]
    return scenario, result


def test_migration_from_an_empty_database(db_url):
    store = open_store(db_url)
    assert current_revision(store.engine) == head_revision()
    assert store.count_runs() == 0
    again = open_store(db_url)  # opening a migrated database changes nothing
    assert current_revision(again.engine) == head_revision()


@light
def test_the_head_read_without_alembic_is_alembics():
    """open_store skips importing alembic when the database is at script_head(): it must be alembic's own head."""
    assert script_head() == head_revision()


def test_round_trip_of_a_real_run(db_url, real_run):
    scenario, result = real_run
    assert result.status == "completed" and len(result.repetitions) == 2 and result.repetitions[0].warmup
    store = open_store(db_url)
    assert store.save_result(result, scenario.normalized()) == 2
    back = store.load_result(result.run_id)
    assert back.to_json() == result.to_json()
    for rep in back.repetitions:  # the sender's cwnd per path, sampled with the rates and RTTs (migration 0004)
        ts = rep.timeseries
        assert set(ts.cwnd) == {"a", "b"} and all(len(ts.cwnd[p]) == len(ts.t) and max(ts.cwnd[p]) >= 2 for p in ts.cwnd)
    assert back.environment["sysctls_client"]["net.mptcp.enabled"] == "1"
    assert store.scenario_content(result.run_id) == scenario.normalized()
    assert store.save_result(result, scenario.normalized()) == 0  # idempotent
    shown = cli("show", result.run_id[:6], "--json", "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == result.to_json()
    listed = cli("runs", "--label", "real", "--tag", "suite=store", "--db", db_url)
    assert result.run_id in listed.stdout
    other = cli("runs", "--label", "other", "--db", db_url)
    assert other.returncode == 0 and other.stdout.startswith("no runs in ") and result.run_id not in other.stdout, other
    csv_out = cli("export", "--format", "csv", "--db", db_url)
    assert csv_out.returncode == 0 and len(csv_out.stdout.strip().splitlines()) == 3  # header + 2 repetitions
    assert "a.share" in csv_out.stdout.splitlines()[0]


def test_a_store_from_before_0004_opens_and_keeps_its_runs(db_url, real_run):
    """A store at revision 0003 (no cwnd, no workload series columns) is upgraded when opened; its runs read back
    whole, without the new keys; a run stored after the upgrade keeps them."""
    from alembic import command

    from mptcplab.store.database import _alembic_config
    from mptcplab.result import RunResult

    scenario, result = real_run
    store = open_store(db_url)
    store.save_result(result, scenario.normalized())
    cfg = _alembic_config()
    with store.engine.begin() as conn:  # back to the schema of before: the columns go, everything else stays
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert current_revision(store.engine) == "0003"
    old = open_store(db_url)
    assert current_revision(old.engine) == head_revision()
    back = old.load_result(result.run_id)
    assert [r.timeseries.cwnd for r in back.repetitions] == [{}, {}]
    assert back.repetitions[1].timeseries.throughput_mbps == result.repetitions[1].timeseries.throughput_mbps
    assert back.repetitions[1].goodput_mbps == result.repetitions[1].goodput_mbps
    again = RunResult.model_validate({**result.to_json(), "run_id": result.run_id + "x"})
    old.save_result(again, scenario.normalized())
    assert old.load_result(again.run_id).repetitions[1].timeseries.cwnd == result.repetitions[1].timeseries.cwnd


def test_run_stores_by_default_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MPTCPLAB_DB", raising=False)
    path = write_scenario(tmp_path, TWO_PATHS.format(rate_b="10mbit"))
    proc = cli("run", str(path), "--repeat", "1", "--json", "--tag", "who=test")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout stays exactly one document
    db = tmp_path / "data" / "mptcplab" / "results.db"
    assert f"stored run {doc['run_id']}" in proc.stderr and str(db) in proc.stderr
    assert open_store(str(db)).load_result(doc["run_id"]).to_json() == doc


def test_killed_run_keeps_finished_repetitions(db_url, tmp_path):
    path = write_scenario(tmp_path, TWO_PATHS.format(rate_b="10mbit"))
    proc = subprocess.Popen([CLI, "run", str(path), "--repeat", "30", "--db", db_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store(db_url)
    this_scenario = RunFilter(scenario="st-two-paths")

    def finished_reps() -> int:
        runs = store.list_runs(this_scenario)
        return runs[0].repetitions if runs else 0

    assert wait_for(lambda: finished_reps() >= 2, timeout=120), "no repetition was stored"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    run = store.list_runs(this_scenario)[0]
    assert run.status == "interrupted" and 2 <= run.repetitions < 30
    assert len(store.load_result(run.uid).repetitions) == run.repetitions
    assert f"stored run {run.uid}" in err
    assert not leftovers()


def test_unreachable_database_spools_and_import_recovers(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("MPTCPLAB_DB_TIMEOUT", "3")
    path = write_scenario(tmp_path, TWO_PATHS.format(rate_b="10mbit"))
    proc = cli("run", str(path), "--repeat", "2", "--json", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "cannot open the results store" in warnings[0], proc.stderr
    spooled = tmp_path / "data" / "mptcplab" / "spool" / f"st-two-paths-{doc['run_id']}.json"
    assert spooled.exists() and f"mptcplab import {spooled}" in proc.stderr
    imported = cli("import", str(spooled), "--db", db_url)
    assert imported.returncode == 0, imported.stderr
    assert "2 new of 2 repetitions" in imported.stdout
    assert not spooled.exists()  # the lab's own spool file is removed once its content is stored
    store = open_store(db_url)
    assert store.load_result(doc["run_id"]).to_json() == doc
    assert store.scenario_content(doc["run_id"])["name"] == "st-two-paths"


def test_database_dying_mid_run_loses_nothing(tmp_path, monkeypatch):
    """The server goes away between repetitions: the run goes on into the spool, `import` completes it."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("MPTCPLAB_DB_TIMEOUT", "3")
    cluster = Cluster()  # its own server: this test kills it
    try:
        cluster.start()
        db_url = create_database(cluster.url)
        path = write_scenario(tmp_path, TWO_PATHS.format(rate_b="10mbit").replace('"1MiB"', '"4MiB"'))
        proc = subprocess.Popen([CLI, "run", str(path), "--repeat", "6", "--json", "--db", db_url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = open_store(db_url)
        this_scenario = RunFilter(scenario="st-two-paths")
        stored = lambda: (store.list_runs(this_scenario) or [None])[0]  # noqa: E731
        assert wait_for(lambda: stored() is not None and stored().repetitions >= 1, timeout=120), "no repetition was stored"
        store.engine.dispose()
        cluster.stop()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        doc = json.loads(out)
        assert len(doc["repetitions"]) == 6
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "Traceback" not in err, err
        spooled = tmp_path / "data" / "mptcplab" / "spool" / f"st-two-paths-{doc['run_id']}.json"
        assert spooled.exists() and f"mptcplab import {spooled}" in err, err

        cluster.start()
        imported = cli("import", str(spooled), "--db", db_url)
        assert imported.returncode == 0, imported.stderr
        # what the database had before it died is not stored twice
        new = int(imported.stdout.split(" new of ")[0].split()[-1])
        assert 1 <= new <= 5 and "new of 6 repetitions" in imported.stdout, imported.stdout
        back = open_store(db_url).load_result(doc["run_id"])
        assert back.status == "completed" and back.to_json() == doc
    finally:
        cluster.remove()
    assert not leftovers()


def test_import_is_idempotent_and_refuses_junk(db_url, real_run, tmp_path):
    _, result = real_run
    doc = tmp_path / "run.json"
    doc.write_text(json.dumps(result.to_json()))  # a `run --json` document imports too
    assert "2 new of 2" in cli("import", str(doc), "--db", db_url).stdout
    assert "0 new of 2" in cli("import", str(doc), "--db", db_url).stdout
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    bad = cli("import", str(junk), "--db", db_url)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


WRITER = textwrap.dedent("""
    import json, sys
    from mptcplab.result import RunResult
    from mptcplab.store import RunFilter, open_store
    url, doc, worker, count = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3], int(sys.argv[4])
    for i in range(count):
        store = open_store(url)  # every writer also races on the migration of the fresh database
        result = RunResult.model_validate({**doc, "run_id": f"w{worker}-{i}"})
        store.save_result(result, None)
""")


def test_concurrent_writers_lose_nothing(db_url, real_run, tmp_path):
    _, result = real_run
    doc = tmp_path / "run.json"
    doc.write_text(json.dumps(result.to_json()))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, str(doc), str(w), "6"], stderr=subprocess.PIPE, text=True)
               for w in range(4)]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    store = open_store(db_url)
    assert store.count_runs() == 24
    for w in range(4):
        for i in range(6):
            assert len(store.load_result(f"w{w}-{i}").repetitions) == 2


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Real runs, interleaved: a 2 x 10 mbit baseline and a candidate whose path b dropped to 2 mbit."""
    tmp = tmp_path_factory.mktemp("compare")
    base = load_scenario(write_scenario(tmp, TWO_PATHS.format(rate_b="10mbit"), "base.toml"))
    worse = load_scenario(write_scenario(tmp, TWO_PATHS.format(rate_b="2mbit"), "worse.toml"))
    db = str(tmp / "compare.db")
    results = run_scenarios([base, worse], RunOptions(repeat=5, sinks=[StoreRecorder(db)]))
    return db, results[0].run_id, results[1].run_id


def test_compare_says_regressed_on_a_degraded_candidate(compared):
    db, base, worse = compared
    proc = cli("compare", "--baseline", base, "--candidate", worse, "--db", db)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "regressed" in proc.stdout
    assert "different versions of the scenario file" in proc.stdout
    md = cli_in_process("compare", "--baseline", base, "--candidate", worse, "--format", "markdown", "--db", db)
    assert md.returncode == 1 and "| st-two-paths | goodput_mbps |" in md.stdout and "**regressed**" in md.stdout
    js = json.loads(cli_in_process("compare", "--baseline", base, "--candidate", worse, "--format", "json", "--db", db).stdout)
    (c,) = js["comparisons"]
    assert js["regressed"] and c["verdict"] == "regressed" and c["change"] < -0.05 and c["p_value"] < 0.01
    assert c["ci95"][0] <= c["change"] <= c["ci95"][1] and c["n_baseline"] == c["n_candidate"] == 5
    # and the other way round it is an improvement, which does not fail the gate
    assert cli_in_process("compare", "--baseline", worse, "--candidate", base, "--db", db).returncode == 0


def _twin(db: str, run_id: str, tmp_path: Path) -> tuple[str, str]:
    """A copy of the store at `db` with the run `run_id` in it again under another id, and that id: identical data
    that is not the same selection (in a copy, so the module's store keeps its two runs for the tests after)."""
    import shutil

    copy = tmp_path / "twin.db"
    shutil.copyfile(db, copy)
    store = open_store(str(copy))
    twin = store.load_result(run_id).model_copy(update={"run_id": f"twin-{run_id}"})
    store.save_result(twin, store.scenario_content(run_id))
    return str(copy), twin.run_id


def test_compare_says_unchanged_on_identical_data(compared, tmp_path):
    db, base, _ = compared
    db, twin = _twin(db, base, tmp_path)
    proc = cli("compare", "--baseline", base, "--candidate", twin, "--format", "json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    (c,) = json.loads(proc.stdout)["comparisons"]
    assert c["verdict"] == "unchanged" and c["change"] == 0.0
    same = cli_in_process("compare", "--baseline", base, "--candidate", base, "--db", db)  # a selection against itself
    assert same.returncode == 2 and same.stderr.count("\n") == 1 and "compared with itself" in same.stderr


def _has_colour(img, hex_colour: str) -> bool:
    """Whether any pixel of an RGBA image (floats 0..1) is `hex_colour`, within antialiasing."""
    import numpy as np

    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return bool((np.abs(img[..., :3] - rgb).max(axis=-1) < 0.02).any())


def test_compare_plot_shows_every_repetition_and_the_verdict(compared, tmp_path):
    import matplotlib.image

    from mptcplab.plots import VERDICT_COLOURS

    db, base, worse = compared
    regressed, same = tmp_path / "regressed.png", tmp_path / "same.png"
    proc = cli("compare", "--baseline", base, "--candidate", worse, "--metric", "goodput_mbps",
               "--metric", "completion_s", "--plot", str(regressed), "--db", db)
    assert proc.returncode == 1 and f"plot written to {regressed}" in proc.stderr, proc.stderr
    twin_db, twin = _twin(db, base, tmp_path)
    assert cli_in_process("compare", "--baseline", base, "--candidate", twin, "--plot", str(same), "--db", twin_db).returncode == 0
    two, one = matplotlib.image.imread(regressed), matplotlib.image.imread(same)
    assert two.shape[1] > 1.6 * one.shape[1]  # one panel per metric
    assert _has_colour(two, VERDICT_COLOURS["regressed"]) and not _has_colour(one, VERDICT_COLOURS["regressed"])
    assert _has_colour(one, VERDICT_COLOURS["unchanged"])
    js = json.loads(cli_in_process("compare", "--baseline", base, "--candidate", worse, "--format", "json", "--db", db).stdout)
    (c,) = js["comparisons"]  # the repetitions behind the medians travel with the verdict
    assert len(c["baseline_values"]) == len(c["candidate_values"]) == 5
    bad = cli_in_process("compare", "--baseline", base, "--candidate", worse, "--plot", str(tmp_path / "no" / "dir.png"), "--db", db)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --plot ") and "does not exist" in bad.stderr, bad.stderr


def test_plot_draws_a_stored_run(compared, tmp_path):
    import matplotlib.image

    db, base, _ = compared
    png = tmp_path / "stored.png"
    proc = cli("plot", base[:6], "-o", str(png), "--db", db)  # a prefix, as `show` takes
    assert proc.returncode == 0, proc.stderr
    img = matplotlib.image.imread(png)
    assert img.shape[1] > 5 * 400 and img.std() > 0.01  # one column per repetition (5), not a blank canvas
    missing = cli_in_process("plot", "feedfacecafe", "-o", str(png), "--db", db)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no run") and "Traceback" not in missing.stderr


def test_history_judges_each_run_against_the_one_before(compared, tmp_path):
    import matplotlib.image

    from mptcplab.plots import VERDICT_COLOURS

    db, base, worse = compared
    png = tmp_path / "history.png"
    proc = cli("history", "st-two-paths", "--format", "json", "--plot", str(png), "--db", db)
    assert proc.returncode == 0, proc.stderr
    hist = json.loads(proc.stdout)
    first, second = hist["points"]
    assert (first["run_id"], second["run_id"]) == (base, worse)  # oldest first: the baseline ran first
    assert first["verdict"] is None and first["n"] == 5 and first["ci95"][0] <= first["median"] <= first["ci95"][1]
    assert second["verdict"] == "regressed" and second["change"] < -0.05 and second["p_value"] < 0.01
    assert second["version_changed"]  # path b's rate was edited between the two
    assert hist["steps"] == {"regressed": 1, "improved": 0, "unchanged": 0}
    assert _has_colour(matplotlib.image.imread(png), VERDICT_COLOURS["regressed"])
    table = cli_in_process("history", "st-two-paths", "--db", db)
    assert table.returncode == 0 and "regressed (scenario changed)" in table.stdout, table.stdout
    for args in (["no-such-scenario"], ["st-two-paths", "--label", "never-used"], ["st-two-paths", "--metric", "speed"]):
        bad = cli_in_process("history", *args, "--db", db)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error:"), bad.stderr


@pytest.mark.parametrize("args", [
    ["--baseline", "no-such-label", "--candidate", "also-missing"],
    ["--baseline", "tag:nope=1", "--candidate", "kernel:0.0.0"],
    ["--baseline", "x", "--candidate", "y", "--metric", "speed"],
    ["--baseline", "x", "--candidate", "y", "--threshold", "lots"],
])
def test_compare_usage_errors_are_one_line_and_exit_2(compared, args):
    db, _, _ = compared
    proc = (cli if args[1] == "no-such-label" else cli_in_process)("compare", *args, "--db", db)  # one as a user runs it
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:")


@light
@pytest.mark.parametrize("command", [["runs"], ["show", "abcd"], ["export", "--format", "csv"], ["history", "demo"],
                                     ["export", "-o", "/tmp/never-written.csv"],
                                     ["compare", "--baseline", "a", "--candidate", "b"], ["plot", "abcd"]])
def test_reading_a_missing_database_is_an_error_and_creates_nothing(tmp_path, command):
    missing = tmp_path / "typo" / "results.db"
    proc = cli(*command, "--db", str(missing))
    assert proc.returncode == 2 and proc.stderr == f"error: no results database at {missing}: the directory " \
        f"{missing.parent} does not exist — create it (mkdir -p {missing.parent}) or pass --db (or set MPTCPLAB_DB) to " \
        "where your runs are\n", proc.stderr
    assert not missing.parent.exists()


@light
def test_bad_db_is_refused_before_anything_is_built(tmp_path):
    path = write_scenario(tmp_path, TWO_PATHS.format(rate_b="10mbit"))
    before = {ns for ns in os.listdir("/run/netns")} if os.path.isdir("/run/netns") else set()
    proc = cli("run", str(path), "--db", "mysql://somewhere/db")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "only SQLite and PostgreSQL" in proc.stderr
    after = {ns for ns in os.listdir("/run/netns")} if os.path.isdir("/run/netns") else set()
    assert not {ns for ns in after - before if ns.startswith("mptl-")}


def _texts_cut(fig) -> list[str]:
    """Every title of `fig` (figure and axes) that is cut at the figure's left or right edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in [fig._suptitle, *(ax.title for ax in fig.axes if ax.get_visible())] if t is not None and t.get_text()]
    return [t.get_text() for t in texts if t.get_window_extent(renderer).x0 < 0 or t.get_window_extent(renderer).x1 > fig.bbox.x1]


def test_compare_and_history_figures_are_not_clipped(compared):
    import re

    import matplotlib.pyplot as plt

    from mptcplab.analysis.compare import compare_stored
    from mptcplab.analysis.history import history_stored
    from mptcplab.plots import comparison_figure, history_figure

    db, base, worse = compared
    store = open_store(db)
    fig = comparison_figure(compare_stored(store, base, worse, ["goodput_mbps"]))  # one panel: the narrowest figure
    assert not _texts_cut(fig)
    (panel,) = [ax for ax in fig.axes if ax.get_visible()]
    assert re.search(r"95% CI \[[+-]\d+\.\d%, [+-]\d+\.\d%\]", panel.get_title().replace("\n", " ")), panel.get_title()
    plt.close(fig)
    fig = history_figure(history_stored(store, "st-two-paths"))
    assert not _texts_cut(fig)
    plt.close(fig)
