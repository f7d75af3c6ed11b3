"""What the report reads from a store: runs, their samples and fingerprints, whole results.

Reading is in bulk (a few queries for any number of runs), because a report
covers every run of a store: one query per run would dominate the build.
Only the store, the result models and the metric table are used here, never
the engine.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ..analysis.conditions import conditions
from ..analysis.kernel_history import run_version
from ..result import RunResult
from ..store import RunFilter, Store
from ..store.models import RepetitionRow, Run, Tag
from ..store.store import _repetition

#: runs loaded whole per query when writing run pages (bounded memory, few round trips)
LOAD_CHUNK = 200


@dataclass
class RunInfo:
    """One stored run as the index and history pages need it (no time series).

    `values` maps a metric name to the values of the run's measured
    repetitions (those `compare` uses: non-warm-up), in repetition order.
    `fingerprint` changes whenever anything shown about the run changes.
    """

    uid: str
    scenario: str
    scenario_hash: str
    label: str | None
    kernel: str
    status: str
    started_at: float
    repetitions: int
    tags: dict[str, str] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    fingerprint: str = ""
    #: what the run measured under (analysis.conditions): congestion control, buffers, backend, accelerator, machine
    conditions: dict[str, str] = field(default_factory=dict)
    #: the upstream version of its kernel ('6.12.43' for 6.12.43+deb12-cloud-amd64; analysis.kernel_history.run_version)
    version: str = ""


def kernel_order(release: str) -> list[Any]:
    """Sort key of a kernel release in version order: 6.1.0-50 < 6.12.117 < 6.18.44 (numbers compared as numbers)."""
    parts = re.split(r"(\d+)", release)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def read_runs(store: Store, flt: RunFilter, metrics: list[str]) -> list[RunInfo]:
    """Every run `flt` selects, oldest first, with its tags, its samples of `metrics` and its fingerprint.

    One query for the runs, one for their tags, one per metric for the
    samples (through `Store.samples`, so the report measures exactly what
    `compare` and `history` measure).
    """
    summaries = list(reversed(store.list_runs(flt)))
    runs = [RunInfo(uid=r.uid, scenario=r.scenario, scenario_hash=r.scenario_hash, label=r.label, kernel=r.kernel,
                     status=r.status, started_at=r.started_at, repetitions=r.repetitions) for r in summaries]
    if not runs:
        return runs
    by_uid = {r.uid: r for r in runs}
    uids = list(by_uid)
    with Session(store.engine) as s:
        for uid, key, value in s.execute(select(Run.uid, Tag.key, Tag.value).join(Tag, Tag.run_id == Run.id)
                                         .where(Run.uid.in_(uids))):
            by_uid[uid].tags[key] = value
        ended = {uid: end for uid, end in s.execute(select(Run.uid, Run.ended_at).where(Run.uid.in_(uids)))}
    for uid, (backend, env) in store.run_environments(uids).items():
        by_uid[uid].conditions = conditions(env, backend)
        by_uid[uid].version = run_version(by_uid[uid].kernel, env)
    for metric in metrics:
        for uid, sample in store.samples(uids, metric, per_run=True).items():
            if uid in by_uid:
                by_uid[uid].values[metric] = list(sample.values)
    for r in runs:
        blob = json.dumps([r.scenario, r.scenario_hash, r.label, r.kernel, r.status, r.started_at, ended.get(r.uid),
                           r.repetitions, sorted(r.tags.items()), sorted(r.values.items()), sorted(r.conditions.items())],
                          sort_keys=True)
        r.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return runs


def load_results(store: Store, uids: list[str]) -> dict[str, tuple[RunResult, dict[str, Any] | None]]:
    """The stored runs `uids` as whole RunResults (time series included) with their scenario content, in bulk."""
    out: dict[str, tuple[RunResult, dict[str, Any] | None]] = {}
    for start in range(0, len(uids), LOAD_CHUNK):
        chunk = uids[start:start + LOAD_CHUNK]
        with Session(store.engine) as s:
            rows = s.scalars(select(Run).where(Run.uid.in_(chunk)).options(
                selectinload(Run.repetitions).selectinload(RepetitionRow.series), selectinload(Run.environment)))
            for run in rows:
                result = RunResult(
                    run_id=run.uid, scenario=run.scenario.name, scenario_hash=run.scenario.content_hash,
                    kernel=run.kernel, scheduler=run.scheduler, path_manager=run.path_manager, backend=run.backend,
                    label=run.label, environment=run.environment.document if run.environment else {},
                    errors=list(run.errors or []), status=run.status, started_at=run.started_at,
                    ended_at=run.ended_at, repetitions=[_repetition(r) for r in run.repetitions])
                out[run.uid] = (result, run.scenario.content)
    return out
