"""The fleet on a real PostgreSQL: campaigns on procrastinate's queue, worker processes, retries, idempotence.

Two workers run on this one machine, each its own process: that checks
correctness (every repetition stored once, a killed worker's job retried by
the other), never figures, since two labs on one 2-core machine disturb each
other's measurements. Transfers are tiny (tbf, no delay) so the file stays cheap.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from mptcplab.result import Repetition, RunResult
from mptcplab.store import RunFilter, open_store

from .conftest import CLI, cli, leftovers, light, requires_root, wait_for, write_scenario
from .pg import create_database, postgres_server  # noqa: F401  (a fixture)
from .test_uml import LOSSY as UML_SCENARIO

pytestmark = requires_root

SMALL = """
name = "{name}"
[[path]]
name = "a"
rate = "20mbit"
[[path]]
name = "b"
rate = "20mbit"
[workload]
{size}
[run]
repeat = 2
timeout = "20s"
link_backend = "tbf"
"""


def scenario(tmp_path, name: str, size: str = 'size = "512KiB"'):
    return write_scenario(tmp_path, SMALL.format(name=name, size=size), f"{name}.toml")


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def jobs(url: str, campaign: str) -> list[tuple[str, str]]:
    with psycopg.connect(conninfo(url)) as conn:
        return conn.execute("SELECT args->>'key', status::text FROM procrastinate_jobs WHERE args->>'campaign' = %s ORDER BY id",
                            (campaign,)).fetchall()


def start_worker(url: str, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([CLI, "worker", "--db", url, "--name", name, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def campaign_runs(url: str, campaign: str) -> list[RunResult]:
    store = open_store(url, create=False)
    return [store.load_result(r.uid) for r in store.list_runs(RunFilter(tags={"campaign": campaign}))]


@pytest.fixture
def db(postgres_server) -> str:  # noqa: F811
    return create_database(postgres_server)


def test_unreachable_database_is_one_line():
    for args in (["submit", "demo"], ["campaign"], ["worker"]):
        proc = cli(*args, "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot reach the fleet's database"), proc.stderr
    proc = cli("submit", "demo", "--db", "/tmp/results.db")
    assert proc.returncode == 2 and "needs a PostgreSQL database" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_submit_is_idempotent_and_interleaved(db, tmp_path):
    a, b = scenario(tmp_path, "fl-a"), scenario(tmp_path, "fl-b")
    first = cli("submit", str(a), str(b), "--db", db)
    assert first.returncode == 0, first.stderr
    cid = first.stdout.strip()
    assert "4 jobs enqueued" in first.stderr
    keys = [k for k, _ in jobs(db, cid)]
    # repetition-major: repetition 0 of both scenarios before repetition 1 of either
    assert keys == [f"{cid}/0/host/0", f"{cid}/1/host/0", f"{cid}/0/host/1", f"{cid}/1/host/1"]
    again = cli("submit", str(a), str(b), "--db", db)
    assert again.returncode == 0 and again.stdout.strip() == cid and "nothing added" in again.stderr
    assert len(jobs(db, cid)) == 4
    other = cli("submit", str(a), str(b), "--repeat", "3", "--db", db)  # another campaign: what it measures differs
    assert other.returncode == 0 and other.stdout.strip() != cid and len(jobs(db, other.stdout.strip())) == 6
    progress = cli("campaign", cid, "--json", "--db", db)
    doc = json.loads(progress.stdout)
    assert progress.returncode == 0 and doc["complete"] is False and doc["workers"]["(queue)"]["queued"] == 4


def test_a_repetition_is_stored_once(db):
    """The store's side of 'never counted twice': a second write of a repetition index adds nothing."""
    store = open_store(db)
    result = RunResult(run_id="cell000001", scenario="fl-once", scenario_hash="0" * 16, kernel="k", scheduler="default",
                       path_manager="kernel", backend="tbf", status="running", environment={"tags": {"campaign": "x"}})
    rep = Repetition(index=1, completion_s=1.0, goodput_mbps=8.0, bytes=10**6, mptcp=True, subflows=[], mib={})
    assert store.add_repetition_once(result, None, rep, total=2)
    assert not store.add_repetition_once(result, None, rep, total=2)
    assert store.load_result("cell000001").status == "running"
    assert store.add_repetition_once(result, None, rep.model_copy(update={"index": 0}), total=2)
    stored = store.load_result("cell000001")
    assert [r.index for r in stored.repetitions] == [0, 1] and stored.status == "completed"


def test_two_workers_complete_a_campaign(db, tmp_path):
    before = set(leftovers())
    cid = cli("submit", str(scenario(tmp_path, "fl-a")), str(scenario(tmp_path, "fl-b", 'size = "768KiB"')), "--db", db).stdout.strip()
    workers = [start_worker(db, name, "--exit-when-empty") for name in ("w1", "w2")]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    runs = campaign_runs(db, cid)
    assert sorted(r.scenario for r in runs) == ["fl-a", "fl-b"]
    for run in runs:
        assert run.status == "completed", run.errors
        assert sorted(r.index for r in run.repetitions) == [0, 1]  # every repetition once
        fleet = run.environment["fleet"]
        assert fleet["campaign"] == cid and set(fleet["repetitions"]) == {"0", "1"}
        assert set(fleet["repetitions"].values()) <= {"w1", "w2"} <= set(fleet["workers"]) | {"w1", "w2"}
        for w in fleet["workers"].values():
            assert w["hostname"] == os.uname().nodename and w["cpu_count"] == os.cpu_count()
    done = cli("campaign", cid, "--json", "--db", db)
    doc = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert doc["complete"] and doc["done"] == 4 and sum(w["done"] for w in doc["workers"].values()) == 4
    assert [(r["case"], r["n"], r["failed"]) for r in doc["rows"]] == [("fl-a", 2, 0), ("fl-b", 2, 0)]
    table = cli("campaign", cid, "--db", db)
    assert table.returncode == 0 and "fl-a" in table.stdout and ("w1 (" in table.stdout or "w2 (" in table.stdout)
    assert set(leftovers()) <= before


def test_a_killed_workers_job_is_retried_by_the_other_and_counted_once(db, tmp_path):
    before = set(leftovers())
    cid = cli("submit", str(scenario(tmp_path, "fl-kill", 'duration = "3s"')), "--db", db).stdout.strip()
    w1 = start_worker(db, "w1", "--stalled-after", "3")

    def w1_running() -> bool:
        with psycopg.connect(conninfo(db)) as conn:
            return conn.execute("SELECT count(*) FROM mptcplab_fleet_attempts WHERE worker = 'w1' AND outcome = 'running'"
                                ).fetchone()[0] == 1

    try:
        assert wait_for(w1_running, timeout=60), "w1 never started a job"
        time.sleep(1.0)  # mid-transfer
    finally:
        w1.kill()  # SIGKILL: no chance to finish, release or say anything
        w1.communicate()
    w2 = start_worker(db, "w2", "--stalled-after", "3")
    try:
        assert wait_for(lambda: [s for _, s in jobs(db, cid)] == ["succeeded", "succeeded"], timeout=90), jobs(db, cid)
    finally:
        w2.send_signal(signal.SIGTERM)
        _, err = w2.communicate(timeout=60)
    assert w2.returncode == 143, err  # SIGTERM: the worker stopped after its (empty) job slot
    [run] = campaign_runs(db, cid)
    assert sorted(r.index for r in run.repetitions) == [0, 1] and run.status == "completed", run.errors
    assert set(run.environment["fleet"]["repetitions"].values()) == {"w2"}
    with psycopg.connect(conninfo(db)) as conn:
        outcomes = conn.execute("SELECT worker, outcome FROM mptcplab_fleet_attempts ORDER BY id").fetchall()
    assert ("w1", "stalled") in outcomes and outcomes.count(("w2", "stored")) == 2, outcomes
    cleaned = cli("cleanup")  # the SIGKILLed worker's lab namespaces, as after any killed run
    assert cleaned.returncode == 0
    assert set(leftovers()) <= before


def test_compare_says_when_sides_ran_on_different_worker_machines():
    """A cell's environment unites its workers (merge_fleet); the conditions compare prints name every machine."""
    from mptcplab.analysis.conditions import conditions, differing_lines
    from mptcplab.fleet.worker import merge_fleet

    def env(name: str, host: str, cpu: str, rep: int) -> dict:
        worker = {"name": name, "hostname": host, "cpu_model": cpu, "cpu_count": 2}
        return {"cpu_model": cpu, "cpu_count": 2, "worker": worker,
                "fleet": {"campaign": "c", "workers": {name: worker}, "repetitions": {str(rep): name}}}

    one = merge_fleet(env("w1", "lab1", "EPYC", 0), env("w1", "lab1", "EPYC", 1))
    two = merge_fleet(env("w1", "lab1", "EPYC", 0), env("w2", "lab2", "Xeon", 1))
    assert two["fleet"]["repetitions"] == {"0": "w1", "1": "w2"} and set(two["fleet"]["workers"]) == {"w1", "w2"}
    lines = differing_lines([conditions(one)], [conditions(two)], sides=("A", "B"))
    assert "machine differs (A EPYC (2 CPUs); B EPYC (2 CPUs) + Xeon (2 CPUs))" in lines
    assert "worker machines differs (A lab1; B lab1, lab2)" in lines
    assert differing_lines([conditions(one)], [conditions(one)]) == []


def test_sigterm_finishes_the_job_and_a_second_one_releases_it(db, tmp_path):
    before = set(leftovers())
    cid = cli("submit", str(scenario(tmp_path, "fl-stop", 'duration = "2s"')), "--db", db).stdout.strip()

    def running(name: str) -> bool:
        with psycopg.connect(conninfo(db)) as conn:
            return conn.execute("SELECT count(*) FROM mptcplab_fleet_attempts WHERE worker = %s AND outcome = 'running'",
                                (name,)).fetchone()[0] == 1

    w1 = start_worker(db, "w1")
    assert wait_for(lambda: running("w1"), timeout=60)
    w1.send_signal(signal.SIGTERM)  # once: the job finishes, no other is taken
    _, err = w1.communicate(timeout=60)
    assert w1.returncode == 143, err
    assert [s for _, s in jobs(db, cid)] == ["succeeded", "todo"]
    w2 = start_worker(db, "w2")
    assert wait_for(lambda: running("w2"), timeout=60)
    w2.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    w2.send_signal(signal.SIGTERM)  # twice: the job is released at once, back in the queue
    _, err = w2.communicate(timeout=60)
    assert w2.returncode == 143, err
    assert [s for _, s in jobs(db, cid)] == ["succeeded", "todo"]
    with psycopg.connect(conninfo(db)) as conn:
        outcomes = conn.execute("SELECT worker, outcome FROM mptcplab_fleet_attempts ORDER BY id").fetchall()
    assert outcomes == [("w1", "stored"), ("w2", "released")]
    [run] = campaign_runs(db, cid)
    assert [r.index for r in run.repetitions] == [0] and run.status == "running"
    assert set(leftovers()) <= before


UML_KERNEL = "6.12.117-uml"
# test_uml's lossy two-path scenario, smaller
UML_LOSSY = UML_SCENARIO.replace('name = "uml-lossy"', 'name = "fl-uml"').replace('size = "2MiB"', 'size = "1MiB"')


def _metrics(rep: Repetition) -> dict:
    """What a repetition measured (its index and where it ran aside)."""
    return rep.model_dump(mode="json", exclude={"index"})


def test_a_uml_campaign_gives_the_same_numbers_on_two_workers(db, tmp_path):
    """Deterministic time across a fleet: the same cell measured by two worker processes (each its own identity,
    UML instances on their own cores) gives identical repetitions, repetition r seeded `[run] seed` + r as in `run`."""
    built = cli("kernel", "build", "6.12.117", "--flavour", "uml", timeout=3600)  # once per machine; nothing to do when cached
    assert built.returncode == 0, built.stderr[-2000:]
    before = set(leftovers())
    path = write_scenario(tmp_path, UML_LOSSY, "fl-uml.toml")
    logs = {name: tmp_path / f"{name}.log" for name in ("w1", "w2")}
    workers = {name: subprocess.Popen([CLI, "worker", "--db", db, "--name", name], stdout=subprocess.DEVNULL,
                                      stderr=open(log, "w"), text=True) for name, log in logs.items()}
    try:
        # both take jobs from the first one on: each repetition index is then measured by both at once
        assert wait_for(lambda: all("taking jobs" in log.read_text() for log in logs.values()), timeout=60), \
            {n: log.read_text() for n, log in logs.items()}
        sub = cli("submit", str(path), str(path), "--kernels", UML_KERNEL, "--db", db)  # the same cell twice: two cells
        assert sub.returncode == 0, sub.stderr
        cid = sub.stdout.strip()
        assert wait_for(lambda: [s for _, s in jobs(db, cid)] == ["succeeded"] * 6, timeout=180, interval=0.5), \
            (jobs(db, cid), {n: log.read_text()[-2000:] for n, log in logs.items()})
    finally:
        for w in workers.values():
            w.send_signal(signal.SIGTERM)
        for w in workers.values():
            w.wait(timeout=60)
    assert all(w.returncode == 143 for w in workers.values()), {n: log.read_text()[-2000:] for n, log in logs.items()}
    with psycopg.connect(conninfo(db)) as conn:  # the jobs carried which build of the kernel the workers must run
        carried = conn.execute("SELECT DISTINCT args->'kernel_build'->>'flavour', args->'kernel_build'->>'config_hash' "
                               "FROM procrastinate_jobs WHERE args->>'campaign' = %s", (cid,)).fetchall()
    assert [f for f, _ in carried] == ["uml"] and carried[0][1], carried
    cells = sorted(campaign_runs(db, cid), key=lambda r: r.run_id)
    assert len(cells) == 2
    by_index = []
    for cell in cells:
        assert cell.status == "completed" and cell.kernel == UML_KERNEL, cell.errors
        env = cell.environment
        assert env["executor"] == "uml" and env["time_mode"] == "travel" and env["seed"] == 1
        assert env["link_backend"] == "wire"  # auto under UML, as run chooses
        assert env["guest"]["config_hash"] and env["guest"]["seeds"] == "base + repetition index"
        reps = sorted(cell.repetitions, key=lambda r: r.index)
        assert [r.index for r in reps] == [0, 1, 2] and all(r.completed and r.mptcp for r in reps)
        by_index.append({r.index: r for r in reps})
    for cell in cells:  # each worker's clock is recorded, and is a condition of the cell
        assert {w["time_mode"] for w in cell.environment["fleet"]["workers"].values()} == {"travel"}
        from mptcplab.analysis.conditions import conditions

        assert conditions(cell.environment)["time mode"] == "travel"
    ran_by = [cell.environment["fleet"]["repetitions"] for cell in cells]
    assert set(ran_by[0].values()) | set(ran_by[1].values()) == {"w1", "w2"}, ran_by
    split = [i for i in range(3) if ran_by[0][str(i)] != ran_by[1][str(i)]]
    assert split, f"no repetition index was measured by both workers: {ran_by}"
    for i in range(3):  # the same numbers whichever worker measured them, to the last field
        assert _metrics(by_index[0][i]) == _metrics(by_index[1][i]), (i, ran_by)
    goodputs = [by_index[0][i].goodput_mbps for i in range(3)]
    assert len(set(goodputs)) > 1, goodputs  # each repetition drew its own seed (base + index), not the job's first
    # and the same numbers `run` measures on one machine in one go, repetition by repetition
    proc = subprocess.run([CLI, "run", str(path), "--kernel", UML_KERNEL, "--json", "--no-store"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = json.loads(proc.stdout)["repetitions"]
    assert [(r["goodput_mbps"], r["completion_s"], r["bytes"]) for r in ran] == \
        [(by_index[0][i].goodput_mbps, by_index[0][i].completion_s, by_index[0][i].bytes) for i in range(3)]
    assert set(leftovers()) <= before


@light
def test_a_job_names_the_kernel_build_a_worker_must_have(tmp_path, monkeypatch):
    """A kernel from `kernel build` travels with its jobs as its flavour and build identity; a worker without it
    says how to build it, one with another build refuses the job (exit 3), the same build passes."""
    from mptcplab.errors import LabError
    from mptcplab.fleet.queue import ScenarioSource, built_kernel, plan
    from mptcplab.fleet.worker import check_build, missing_build
    from mptcplab.kernels.catalog import Kernel, cached

    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path))

    def register(name: str, config_hash: str) -> Kernel:
        d = tmp_path / "kernels" / name
        d.mkdir(parents=True)
        info = {"source": "debian trixie linux-source-6.12 6.12.117-1", "commit": None, "config_hash": config_hash,
                "patches": ["uml-host-fp-size"]}
        (d / "build.json").write_text(json.dumps(info))
        k = Kernel(release=name, version="6.12.117", origin=f"built from {info['source']}", image=str(d / "linux"),
                   flavour="uml", source=info["source"], build=str(d / "build.json"))
        k.save()
        return k

    mine = register("6.12.117-uml", "aaa")
    assert [k.release for k in cached()] == ["6.12.117-uml"]  # the test's own cache
    build = built_kernel("6.12.117-uml")
    assert build == {"flavour": "uml", "version": "6.12.117", "source": "debian trixie linux-source-6.12 6.12.117-1",
                     "commit": None, "config_hash": "aaa", "patches": ["uml-host-fp-size"]}
    assert built_kernel("6.12") is None and built_kernel("6.12.117+deb13-cloud-amd64") is None
    src = ScenarioSource("s", "h" * 16, "", "/s.toml")
    jobs_ = plan([src], [2], ["6.12.117-uml", "6.1"], builds={"6.12.117-uml": build, "6.1": None}).jobs
    assert [j["kernel_build"] for j in jobs_] == [build, None, build, None]
    check_build("6.12.117-uml", build, mine, "w1")  # the same build: taken
    check_build("6.1", None, None, "w1")
    other = register("6.12.117-uml-other", "bbb")
    with pytest.raises(LabError) as refused:
        check_build("6.12.117-uml", build, other, "w2")
    assert refused.value.exit_code == 3 and "config_hash 'bbb' here, 'aaa' in the campaign" in refused.value.message
    missing = missing_build("6.12.117-uml", build, "w2")
    assert missing.exit_code == 3 and missing.message.startswith("kernel 6.12.117-uml (uml, built from debian trixie")
    assert missing.hint == "build it on this worker: mptcplab kernel build 6.12.117 --flavour uml"
    assert missing_build("mine", {**build, "source": "tarball /x.tar.xz"}, "w2").hint == \
        "build it on this worker: mptcplab kernel build SOURCE --flavour uml --name mine (SOURCE: tarball /x.tar.xz)"
