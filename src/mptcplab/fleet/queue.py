"""Campaigns on procrastinate's job queue: what a campaign is, submitting it once, and how far it got.

A campaign is every scenario x kernel x repetition, one procrastinate job
each, enqueued repetition-major (repetition r of every scenario on every
kernel before r+1) so that a campaign stopped half-way is still balanced.
Its id is a hash of what it measures (scenario versions, kernels, repeat,
overrides, link backend): submitting the same campaign twice finds its jobs
already there and adds nothing. Each job's key is also its procrastinate
queueing lock, so two submits racing cannot both enqueue it.

The queue lives in the results database itself (PostgreSQL only):
procrastinate's tables beside the store's, plus `mptcplab_fleet_attempts`,
one row per job attempt: which worker on which machine took it, how long its
repetition ran, when it was stored, and how it ended.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ScenarioError, StoreError, UsageError
from ..scenario import Scenario, apply_overrides, builtin_scenarios, parse_scenario

TASK = "mptcplab.repetition"
QUEUE = "mptcplab"
HOST = "host"  # the kernel name of a job that runs on its worker's own kernel
#: seconds to wait for the database before saying it cannot be reached
CONNECT_TIMEOUT_S = 10

ATTEMPTS_DDL = """
CREATE TABLE IF NOT EXISTS mptcplab_fleet_attempts (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    campaign text NOT NULL,
    worker text NOT NULL,
    hostname text NOT NULL,
    started timestamptz NOT NULL DEFAULT now(),
    ran_s double precision,
    stored timestamptz,
    outcome text NOT NULL DEFAULT 'running',
    error text
);
CREATE INDEX IF NOT EXISTS mptcplab_fleet_attempts_campaign ON mptcplab_fleet_attempts (campaign);
CREATE INDEX IF NOT EXISTS mptcplab_fleet_attempts_job ON mptcplab_fleet_attempts (job_id);
"""
_SCHEMA_LOCK_KEY = 0x6D70666C  # "mpfl": pg_advisory_xact_lock key
FAILED = ("failed", "cancelled", "aborted")


@dataclass
class Database:
    """The PostgreSQL database that holds the queue and the results: what --db named, in the forms each library wants."""

    db: str  # the SQLAlchemy URL, as --db gives it to the store
    conninfo: str  # libpq form, for psycopg and procrastinate
    shown: str  # without its password, for messages


def database(db: str | None) -> Database:
    """--db / $MPTCPLAB_DB as a fleet database. UsageError (exit 2) unless it is a PostgreSQL URL."""
    from ..store.location import display, resolve_db

    url = resolve_db(db)
    if url.get_backend_name() != "postgresql":
        raise UsageError(f"--db {display(url)}: the fleet's job queue needs a PostgreSQL database that every worker reaches",
                         "pass --db postgresql+psycopg://user@host/db (or set MPTCPLAB_DB)")
    return Database(db=url.render_as_string(hide_password=False),
                    conninfo=url.set(drivername="postgresql").render_as_string(hide_password=False), shown=display(url))


def connect(dbase: Database, autocommit: bool = True) -> Any:
    """A psycopg connection; StoreError (exit 2, one line) when the server cannot be reached or refuses."""
    import psycopg

    try:
        return psycopg.connect(dbase.conninfo, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StoreError(f"cannot reach the fleet's database {dbase.shown}: {reason}",
                         "check the URL, and that PostgreSQL runs and accepts this host") from None


def ensure_schema(dbase: Database) -> None:
    """procrastinate's tables and the attempts table, created once (an advisory lock serializes racing workers)."""
    from procrastinate.schema import SchemaManager

    with connect(dbase, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
            conn.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
        conn.execute(ATTEMPTS_DDL)  # type: ignore[arg-type]
        conn.commit()


def make_app(dbase: Database) -> Any:
    """The procrastinate App on `dbase` (not opened)."""
    from procrastinate import App, PsycopgConnector

    return App(connector=PsycopgConnector(conninfo=dbase.conninfo, min_size=1, max_size=4,
                                          kwargs={"connect_timeout": CONNECT_TIMEOUT_S}))


# -- what a campaign is ------------------------------------------------------
@dataclass
class ScenarioSource:
    """A scenario as jobs carry it: its TOML text and --set overrides, rebuilt on the worker and checked by hash."""

    name: str
    content_hash: str
    toml: str
    source: str
    overrides: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "hash": self.content_hash, "toml": self.toml, "source": self.source, "overrides": self.overrides}


def scenario_source(ref: str | Path, scenario: Scenario, overrides: list[str]) -> ScenarioSource:
    """The source of `scenario`, loaded from `ref` (a file or a built-in name) with `overrides`."""
    path = Path(ref)
    if not path.exists():
        path = builtin_scenarios()[str(ref)]
    return ScenarioSource(scenario.name, scenario.content_hash, path.read_text(), str(path.resolve()), list(overrides))


def load_source(doc: dict[str, Any]) -> Scenario:
    """The Scenario a job carries; ScenarioError when this machine's lab reads it as a different version."""
    data = tomllib.loads(doc["toml"])
    if doc.get("overrides"):
        data = apply_overrides(data, doc["overrides"])
    scenario = parse_scenario(data, doc["source"], Path(doc["source"]).parent)
    if scenario.content_hash != doc["hash"]:
        raise ScenarioError(f"{doc['source']}: this worker's mptcplab reads the scenario as version {scenario.content_hash}, "
                            f"the campaign was submitted as {doc['hash']}",
                            "run the same mptcplab version on the submitting machine and every worker")
    return scenario


#: what makes two builds of one kernel name the same kernel (build.json keys): a worker refuses a job whose differs
BUILD_IDENTITY = ("source", "commit", "config_hash", "patches")


def built_kernel(name: str) -> dict[str, Any] | None:
    """What a job carries of a kernel from `kernel build` in this machine's cache (named only by its exact name):
    its flavour, version and BUILD_IDENTITY; None for any other kernel or one this machine lacks (workers resolve
    those by name alone)."""
    from ..kernels.catalog import cached

    kernel = next((k for k in cached() if k.built and k.release == name), None)
    if kernel is None:
        return None
    try:
        info = json.loads(Path(str(kernel.build)).read_text())
    except (OSError, ValueError):
        info = {}
    return {"flavour": kernel.flavour, "version": kernel.version, **{key: info.get(key) for key in BUILD_IDENTITY}}


@dataclass
class Campaign:
    """Every job of a campaign, in the order they are enqueued (repetition-major, interleaved)."""

    campaign_id: str
    scenarios: list[ScenarioSource]
    kernels: list[str]  # names as given (fetched by each worker), or [HOST]
    repeats: list[int]  # per scenario
    jobs: list[dict[str, Any]]


def plan(sources: list[ScenarioSource], repeats: list[int], kernels: list[str] | None = None, link_backend: str | None = None,
         label: str | None = None, tags: dict[str, str] | None = None, suite: bool = False, tier: str | None = None,
         builds: dict[str, dict[str, Any] | None] | None = None) -> Campaign:
    """The campaign of `sources` (one repeat each) on `kernels` (None: each worker's own kernel).

    The id hashes what is measured (scenario versions, kernels, repeats,
    overrides, link backend); label and tags are stored with the runs but
    do not make a new campaign. Each scenario x kernel is one stored run (a
    cell, its id derived from the campaign's); each job adds one repetition.
    `builds`: kernel name -> what built_kernel says of it, carried by its jobs as `kernel_build` (the flavour, and
    which build a worker must have).
    """
    ks = list(kernels) if kernels else [HOST]
    content = {"scenarios": [[s.name, s.content_hash] for s in sources], "kernels": ks, "repeats": repeats,
               "overrides": [s.overrides for s in sources], "link_backend": link_backend or "auto"}
    cid = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    run_tags = {**(tags or {}), "campaign": cid}
    if suite:
        run_tags.update(suite=cid, tier=tier or "mixed")
    jobs = []
    for r in range(max(repeats)):
        for si, src in enumerate(sources):
            if r >= repeats[si]:
                continue
            for kernel in ks:
                cell = hashlib.sha256(f"{cid}/{si}/{src.content_hash}/{kernel}".encode()).hexdigest()[:10]
                jobs.append({"campaign": cid, "key": f"{cid}/{si}/{kernel}/{r}", "scenario": src.to_json(),
                             "kernel": None if kernel == HOST else kernel, "repetition": r, "repeat": repeats[si],
                             "cell": cell, "label": label, "link_backend": link_backend, "tags": run_tags,
                             "kernel_build": (builds or {}).get(kernel)})
    return Campaign(cid, sources, ks, repeats, jobs)


def submit(dbase: Database, campaign: Campaign) -> tuple[int, int]:
    """Enqueue the jobs of `campaign` the queue does not hold yet; put back the ones that failed. (new, retried).

    Idempotent: a job already queued, running or done is left alone, so a
    second submit (or one racing it: the job key is its queueing lock) adds
    no work; a job that failed (a worker lacking a scheduler, a store that
    refused the write) is queued again. StoreError when the database cannot be reached.
    """
    ensure_schema(dbase)
    with connect(dbase) as conn:
        rows = conn.execute("SELECT args->>'key', id, status::text FROM procrastinate_jobs WHERE args->>'campaign' = %s",
                            (campaign.campaign_id,)).fetchall()
    have = {key for key, _, _ in rows}
    live = {key for key, _, status in rows if status not in FAILED}
    failed = [job_id for key, job_id, status in rows if status in FAILED and key not in live]
    new = [job for job in campaign.jobs if job["key"] not in have]
    if not new and not failed:
        return 0, 0

    async def defer() -> tuple[int, int]:
        from datetime import datetime, timezone

        from procrastinate.exceptions import AlreadyEnqueued

        app = make_app(dbase)
        added = 0
        async with app.open_async():
            for job in new:
                try:
                    await app.configure_task(TASK, queue=QUEUE, queueing_lock=job["key"], allow_unknown=True).defer_async(**job)
                    added += 1
                except AlreadyEnqueued:
                    pass
            for job_id in failed:
                await app.job_manager.retry_job_by_id_async(job_id, retry_at=datetime.now(timezone.utc))
        return added, len(failed)

    return asyncio.run(defer())


# -- how far a campaign got --------------------------------------------------
@dataclass
class JobState:
    job_id: int
    status: str  # procrastinate's: todo, doing, succeeded, failed, cancelled, aborted
    args: dict[str, Any]
    worker: str | None  # the worker of its latest attempt
    hostname: str | None
    error: str | None


def campaign_jobs(dbase: Database, campaign_id: str) -> list[JobState]:
    """Every job of the campaign, in enqueue order, with the worker of its latest attempt."""
    ensure_schema(dbase)
    with connect(dbase) as conn:
        rows = conn.execute("""
            SELECT j.id, j.status::text, j.args, a.worker, a.hostname, a.error
              FROM procrastinate_jobs j
              LEFT JOIN LATERAL (SELECT worker, hostname, error FROM mptcplab_fleet_attempts a
                                  WHERE a.job_id = j.id ORDER BY a.id DESC LIMIT 1) a ON true
             WHERE j.args->>'campaign' = %s ORDER BY j.id""", (campaign_id,)).fetchall()
    return [JobState(*row) for row in rows]


def campaigns(dbase: Database) -> list[dict[str, Any]]:
    """Every campaign on the queue, newest first: id, jobs, and how many are done, running, queued, failed."""
    ensure_schema(dbase)
    with connect(dbase) as conn:
        rows = conn.execute("""
            SELECT args->>'campaign', count(*), min(id),
                   count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'doing'),
                   count(*) FILTER (WHERE status = 'todo'), count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'aborted'))
              FROM procrastinate_jobs WHERE task_name = %s GROUP BY 1 ORDER BY 3 DESC""", (TASK,)).fetchall()
    return [{"campaign": r[0], "jobs": r[1], "done": r[3], "running": r[4], "queued": r[5], "failed": r[6]} for r in rows]


def per_worker(jobs: list[JobState]) -> dict[str, dict[str, int]]:
    """worker -> {done, running, failed} of its jobs, and '(queue)' -> {queued}: the campaign's progress by worker."""
    out: dict[str, dict[str, int]] = {}
    for job in jobs:
        if job.status == "todo":
            out.setdefault("(queue)", {"done": 0, "running": 0, "queued": 0, "failed": 0})["queued"] += 1
            continue
        name = f"{job.worker} ({job.hostname})" if job.worker else "(unknown)"
        row = out.setdefault(name, {"done": 0, "running": 0, "queued": 0, "failed": 0})
        key = {"succeeded": "done", "doing": "running"}.get(job.status, "failed")
        row[key] += 1
    return out


def dispatch_times(dbase: Database, campaign_id: str) -> list[dict[str, Any]]:
    """Per stored job attempt, in start order: worker, deferred / started / stored (epoch seconds, the database's clock)
    and the repetition's own run time `ran_s` (the worker's clock): what a dispatch overhead is computed from."""
    with connect(dbase) as conn:
        rows = conn.execute("""
            SELECT a.worker, EXTRACT(EPOCH FROM d.at), EXTRACT(EPOCH FROM a.started), a.ran_s, EXTRACT(EPOCH FROM a.stored)
              FROM mptcplab_fleet_attempts a
              JOIN LATERAL (SELECT min(at) AS at FROM procrastinate_events e WHERE e.job_id = a.job_id AND e.type = 'deferred') d ON true
             WHERE a.campaign = %s AND a.outcome = 'stored' ORDER BY a.started""", (campaign_id,)).fetchall()
    return [{"worker": w, "deferred": float(d), "started": float(st), "ran_s": float(r), "stored": float(so)}
            for w, d, st, r, so in rows]
