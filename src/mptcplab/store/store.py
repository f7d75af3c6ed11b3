"""The results store: RunResults in, RunResults (and samples to compare) out.

Writes are small transactions that follow the run as it happens: the run row
when it starts, each repetition when it ends, the status when it stops, so an
interrupted run keeps every repetition that finished. Importing a result
(from a spool file) is idempotent: repetitions already stored are skipped.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, false, func, or_, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, lazyload, selectinload

from ..errors import StoreError, UsageError
from ..metrics import METRICS, find_metric, repetition_metrics
from ..metrics import metric as metric_def

#: the metrics a Repetition holds as fields of its own (everything else stored is a workload metric)
BULK_METRICS = ("goodput_mbps", "completion_s", "retransmits", "bytes_retrans", "rtt_ms", "pass_rate")
from ..kernel_names import stored_kernel_matches
from ..result import ProgramRun, Repetition, RunResult, SubflowResult, TimeSeries, run_status
from .database import make_engine, migrate
from .location import display, resolve_db
from .models import Environment, Measurement, RepetitionRow, Run, ScenarioVersion, SeriesRow, SubflowRow, Tag

@dataclass
class RunFilter:
    """What `mptcplab runs` and `export` select by; all given fields must match."""

    scenario: str | None = None
    label: str | None = None
    kernel: str | None = None
    since: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The filters that are set, as the CLI spells them ('--label x --kernel 6.12'); '' when none is."""
        parts = [f"--label {self.label}" if self.label is not None else "", f"--kernel {self.kernel}" if self.kernel else "",
                 "--since ..." if self.since is not None else "", *(f"--tag {k}={v}" for k, v in self.tags.items()),
                 f"{len(self.run_ids)} chosen runs" if self.run_ids else ""]
        return " ".join(p for p in parts if p)


@dataclass
class RunSummary:
    uid: str
    scenario: str
    scenario_hash: str
    label: str | None
    kernel: str
    status: str
    started_at: float
    repetitions: int
    goodput_median: float | None
    #: medians over the completed, non-warm-up MPTCP repetitions of goodput_mbps and every latency metric the
    #: run has (metrics.LATENCY_COLUMNS), by name
    medians: dict[str, float] = field(default_factory=dict)
    #: what the run is listed by: its scenario's main metric (Store.main_metrics), or the metric asked for
    metric: str = "goodput_mbps"
    #: the median of `metric` over the run's measured (non-warm-up, completed, MPTCP) repetitions
    median: float | None = None


@dataclass
class Sample:
    """All measured (non-warm-up) values of one metric for one scenario on one side of a comparison."""

    values: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    #: per value: its repetition's index and its run's id (what pairs deterministic repetitions across sides)
    indices: list[int] = field(default_factory=list)
    value_runs: list[str] = field(default_factory=list)


class Store:
    """One database (SQLite file or PostgreSQL), migrated to the newest schema when opened."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url

    @property
    def where(self) -> str:
        return display(self.url)

    # -- writing ------------------------------------------------------------
    @contextmanager
    def _session(self, doing: str) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as e:
            raise StoreError(f"cannot {doing} in {self.where}: {_reason(e)}{_disk_note(self.url)}") from e

    def begin_run(self, result: RunResult, scenario: dict[str, Any] | None) -> None:
        """Record a run as it starts (status 'running'), with its scenario version and environment."""
        with self._session("record the run") as s:
            s.add(self._run_row(s, result, scenario, status="running"))

    def add_repetition(self, run_id: str, rep: Repetition) -> None:
        with self._session("record a repetition") as s:
            run = s.scalars(select(Run).where(Run.uid == run_id)).one()
            s.add(_repetition_row(run.id, rep))

    def finish_run(self, result: RunResult) -> None:
        with self._session("record the end of the run") as s:
            run = s.scalars(select(Run).where(Run.uid == result.run_id)).one()
            run.status = result.status
            run.ended_at = result.ended_at
            run.errors = list(result.errors)
            for key, value in _environment_fields(result).items():
                setattr(run.environment, key, value)

    def save_result(self, result: RunResult, scenario: dict[str, Any] | None) -> int:
        """Store a whole result (an import); returns how many repetitions were new. Idempotent."""
        with self._session("import the run") as s:
            run = s.scalars(select(Run).where(Run.uid == result.run_id)).one_or_none()
            if run is None:
                run = self._run_row(s, result, scenario, status=result.status)
                s.add(run)
                s.flush()
                have: set[int] = set()
            else:
                have = set(s.scalars(select(RepetitionRow.index).where(RepetitionRow.run_id == run.id)))
            new = [rep for rep in result.repetitions if rep.index not in have]
            for rep in new:
                s.add(_repetition_row(run.id, rep))
            run.status, run.ended_at, run.errors = result.status, result.ended_at, list(result.errors)
            for key, value in _environment_fields(result).items():
                setattr(run.environment, key, value)
            return len(new)

    def add_repetition_once(self, result: RunResult, scenario: dict[str, Any] | None, rep: Repetition, total: int,
                            merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None) -> bool:
        """One repetition of a run whose repetitions are measured by separate jobs (a fleet campaign's cell), at most once.

        The run row (`result.run_id`) is created with the first repetition that
        arrives; a repetition whose `rep.index` is stored already is skipped and
        False returned, so a job retried after its worker died never counts
        twice. Concurrent writers are serialized on the run row. The stored
        environment document becomes merge(stored, result.environment) (default:
        the stored one updated with the new). The run is 'running' until `total`
        repetitions are stored, then 'completed' or 'failed' as run_status says.
        """
        with self._session("record a repetition") as s:
            query = select(Run).options(lazyload(Run.scenario)).where(Run.uid == result.run_id).with_for_update()
            run = s.scalars(query).one_or_none()
            created = False
            if run is None:
                try:
                    with s.begin_nested():
                        run = self._run_row(s, result, scenario, status="running")
                        s.add(run)
                    created = True
                except IntegrityError:  # another worker created it first
                    run = s.scalars(query).one()
            have = s.scalar(select(RepetitionRow.id).where(RepetitionRow.run_id == run.id, RepetitionRow.index == rep.index))
            if have is not None:
                return False
            if not created:
                doc = dict(run.environment.document or {})
                fields = _environment_fields(result)
                fields["document"] = merge(doc, dict(result.environment)) if merge else {**doc, **result.environment}
                for key, value in fields.items():
                    setattr(run.environment, key, value)
            try:
                with s.begin_nested():
                    s.add(_repetition_row(run.id, rep))
            except IntegrityError:
                return False
            stored = list(s.execute(select(RepetitionRow.status, RepetitionRow.baseline_path).where(RepetitionRow.run_id == run.id)))
            if not rep.completed:
                run.errors = [*run.errors, f"repetition {rep.index + 1}: {rep.status}: {rep.error}"]
            if len(stored) >= total:
                run.status = run_status(stored)
                run.ended_at = time.time()
            return True

    def _run_row(self, s: Session, result: RunResult, scenario: dict[str, Any] | None, status: str) -> Run:
        return Run(
            uid=result.run_id,
            scenario_id=self._scenario_version(s, result.scenario, result.scenario_hash, scenario),
            label=result.label, status=status, started_at=result.started_at or time.time(), ended_at=result.ended_at,
            kernel=result.kernel, scheduler=result.scheduler, path_manager=result.path_manager, backend=result.backend,
            errors=list(result.errors),
            environment=Environment(**_environment_fields(result)),
            tags=[Tag(key=k, value=str(v)) for k, v in (result.environment.get("tags") or {}).items()],
        )

    def _scenario_version(self, s: Session, name: str, content_hash: str, content: dict[str, Any] | None) -> int:
        """The id of this (name, hash); created if new. Two writers racing on it: one wins, the other reads."""
        query = select(ScenarioVersion.id).where(ScenarioVersion.name == name, ScenarioVersion.content_hash == content_hash)
        found = s.scalars(query).first()
        if found is not None:
            return found
        try:
            with s.begin_nested():
                row = ScenarioVersion(name=name, content_hash=content_hash, content=content, first_seen=time.time())
                s.add(row)
            return row.id
        except IntegrityError:
            return s.scalars(query).one()

    # -- reading ------------------------------------------------------------
    def resolve_run(self, ref: str) -> str:
        """A run id from a full id or an unambiguous prefix of at least 4 characters."""
        with self._session("read runs") as s:
            exact = s.scalars(select(Run.uid).where(Run.uid == ref)).first()
            if exact:
                return exact
            matches = list(s.scalars(select(Run.uid).where(Run.uid.startswith(ref)).limit(3))) if len(ref) >= 4 else []
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"run id {ref!r} is ambiguous in {self.where}: {', '.join(matches)}, ...", "give more characters")
        raise UsageError(f"no run {ref!r} in {self.where}", "list the stored runs with: mptcplab runs")

    def load_result(self, run_id: str) -> RunResult:
        """The stored run as the RunResult it was (the same JSON as `mptcplab run --json`)."""
        from ..analysis.stats import conclude_run

        with self._session("read the run") as s:
            run = s.scalars(select(Run).where(Run.uid == run_id).options(
                selectinload(Run.repetitions).selectinload(RepetitionRow.series), selectinload(Run.environment))).one()
            result = RunResult(
                run_id=run.uid, scenario=run.scenario.name, scenario_hash=run.scenario.content_hash, kernel=run.kernel,
                scheduler=run.scheduler, path_manager=run.path_manager, backend=run.backend, label=run.label,
                environment=run.environment.document, errors=list(run.errors), status=run.status,
                started_at=run.started_at, ended_at=run.ended_at,
                repetitions=[_repetition(r) for r in run.repetitions],
            )
        conclude_run(result)
        return result

    def scenario_content(self, run_id: str) -> dict[str, Any] | None:
        with self._session("read the run") as s:
            return s.scalars(select(ScenarioVersion.content).join(Run).where(Run.uid == run_id)).one()

    def list_runs(self, flt: RunFilter, limit: int | None = None, metric: str | None = None,
                  with_medians: bool = False) -> list[RunSummary]:
        """Runs matching `flt`, newest first, with their number of repetitions, median goodput and median
        latencies (RunSummary.medians).

        `with_medians`: also each run's `metric` and its median over the measured repetitions (as `samples`
        takes them), `metric` None meaning each run's scenario's main metric (`main_metrics`), the metric
        every verdict judges it by.
        """
        import statistics

        from ..metrics import LATENCY_COLUMNS

        wanted = ["goodput_mbps", *dict.fromkeys(m for cols in LATENCY_COLUMNS.values() for m in cols)]
        with self._session("read runs") as s:
            q = _filtered(select(Run), flt, s).order_by(Run.started_at.desc())
            if limit:
                q = q.limit(limit)
            runs = list(s.scalars(q))
            values: dict[int, dict[str, list[float]]] = {}
            counts: dict[int, int] = {}
            if runs:
                rows = s.execute(
                    select(RepetitionRow.run_id, RepetitionRow.warmup, RepetitionRow.status, Measurement.metric,
                           Measurement.value)
                    .join(Measurement, Measurement.repetition_id == RepetitionRow.id)
                    .where(RepetitionRow.run_id.in_([r.id for r in runs]), Measurement.metric.in_(wanted),
                           RepetitionRow.baseline_path.is_(None)))
                for run_pk, warmup, status, measured, value in rows:
                    if measured == "goodput_mbps":  # every repetition has it: the count
                        counts[run_pk] = counts.get(run_pk, 0) + 1
                    if not warmup and status == "completed":
                        values.setdefault(run_pk, {}).setdefault(measured, []).append(value)
            found = []
            for r in runs:
                medians = {m: statistics.median(v) for m, v in values.get(r.id, {}).items()}
                found.append(RunSummary(uid=r.uid, scenario=r.scenario.name, scenario_hash=r.scenario.content_hash,
                                      label=r.label, kernel=r.kernel, status=r.status, started_at=r.started_at,
                                      repetitions=counts.get(r.id, 0), goodput_median=medians.get("goodput_mbps"),
                                      medians=medians))
        if with_medians and found:
            chosen = {r.uid: metric for r in found} if metric else \
                {r.uid: m for mains in [self.main_metrics({r.scenario for r in found})] for r in found
                 for m in [mains[r.scenario]]}
            for name in set(chosen.values()):
                samples = self.samples([u for u, m in chosen.items() if m == name], name, per_run=True)
                for r in found:
                    if chosen[r.uid] == name:
                        r.metric = name
                        chosen_values = samples[r.uid].values if r.uid in samples else []
                        r.median = statistics.median(chosen_values) if chosen_values else None
        return found

    def workload_kinds(self, scenarios: Iterable[str] | None = None) -> dict[str, str]:
        """Scenario name -> the workload kind of its newest stored version (every stored scenario when None).

        From the stored scenario's `[workload] kind`; for a run imported without
        its scenario, the `workload` of its environment; for one stored before
        that was recorded, inferred from the metrics its repetitions stored
        (metrics.infer_kind: an rr run stored latency percentiles).
        """
        from ..metrics import infer_kind

        wanted = set(scenarios) if scenarios is not None else None
        kinds: dict[str, str] = {}
        with self._session("read scenarios") as s:
            rows = s.execute(select(ScenarioVersion.name, ScenarioVersion.content).order_by(ScenarioVersion.first_seen))
            for name, content in rows:
                if wanted is not None and name not in wanted:
                    continue
                kind = ((content or {}).get("workload") or {}).get("kind") if isinstance(content, dict) else None
                if kind:
                    kinds[name] = str(kind)  # newest version last: it wins
                else:
                    kinds.setdefault(name, "")
            missing = [n for n, k in kinds.items() if not k]
            if missing:
                newest: dict[str, str] = {}
                for name, uid in s.execute(select(ScenarioVersion.name, Run.uid).join(Run, Run.scenario_id == ScenarioVersion.id)
                                           .where(ScenarioVersion.name.in_(missing)).order_by(Run.started_at)):
                    newest[name] = uid
                docs = {uid: doc for uid, doc in s.execute(select(Run.uid, Environment.document)
                                                           .join(Environment, Environment.run_id == Run.id)
                                                           .where(Run.uid.in_(list(newest.values()))))}
                for name, uid in newest.items():
                    kind = (docs.get(uid) or {}).get("workload")
                    if kind:
                        kinds[name] = str(kind)
                missing = [n for n in missing if not kinds[n]]
            if missing:
                measured: dict[str, set[str]] = {n: set() for n in missing}
                for name, metric in s.execute(
                        select(ScenarioVersion.name, Measurement.metric).distinct()
                        .join(Run, Run.scenario_id == ScenarioVersion.id)
                        .join(RepetitionRow, RepetitionRow.run_id == Run.id)
                        .join(Measurement, Measurement.repetition_id == RepetitionRow.id)
                        .where(ScenarioVersion.name.in_(missing))):
                    measured[name].add(metric)
                for name in missing:
                    kinds[name] = infer_kind(measured[name])
        return kinds

    def main_metrics(self, scenarios: Iterable[str] | None = None) -> dict[str, str]:
        """Scenario name -> its main metric: what compare, history, runs, show and the report judge it by
        unless --metric names another: the scenario's `[run] metric` when it sets one, else metrics.main_metric of
        its workload kind (`workload_kinds`)."""
        from ..metrics import main_metric

        mains = {name: main_metric(kind) for name, kind in self.workload_kinds(scenarios).items()}
        with self._session("read scenarios") as s:  # a scenario's own `[run] metric` (its newest version) wins
            for name, content in s.execute(select(ScenarioVersion.name, ScenarioVersion.content)
                                           .where(ScenarioVersion.name.in_(list(mains))).order_by(ScenarioVersion.first_seen)):
                chosen = ((content or {}).get("run") or {}).get("metric") if isinstance(content, dict) else None
                if chosen:
                    mains[name] = str(chosen)
        return mains

    def select_runs(self, selector: str) -> list[str]:
        """Run ids a compare selector names: `run:ID`, `label:L`, `kernel:K`, `tag:K=V` or `K=V`; a bare
        word is tried as a run id (or unique prefix), then a label, then a kernel. A kernel K is a prefix
        (on components) of the release or upstream version: `kernel:6.1` is 6.1.0-50-cloud-amd64, not 6.12.x."""
        kind, sep, value = selector.partition(":")
        if not sep or kind not in ("run", "label", "kernel", "tag"):
            kind, value = "", selector
        if not kind and "=" in value:
            kind = "tag"
        with self._session("read runs") as s:
            def by(flt: RunFilter) -> list[str]:
                return list(s.scalars(_filtered(select(Run.uid), flt, s).order_by(Run.started_at)))

            if kind == "tag":
                key, _, val = value.partition("=")
                return by(RunFilter(tags={key: val}))
            if kind == "label":
                return by(RunFilter(label=value))
            if kind == "kernel":
                return by(RunFilter(kernel=value))
            exact = by(RunFilter(run_ids=[value]))
            if exact or kind == "run":
                return exact
            prefixed = list(s.scalars(select(Run.uid).where(Run.uid.startswith(value)))) if len(value) >= 4 else []
            if len(prefixed) == 1:
                return prefixed
            return by(RunFilter(label=value)) or by(RunFilter(kernel=value))

    def samples(self, run_ids: list[str], metric: str, per_run: bool = False) -> dict[str, Sample]:
        """Per scenario name (or per run id with `per_run`), the non-warm-up values of `metric` over the given runs.

        Measured metrics come from completed repetitions only; a metric over all
        repetitions (pass_rate: 1.0 or 0.0 each) from every non-warm-up one.
        """
        out: dict[str, Sample] = {}
        name = metric
        with self._session("read measurements") as s:
            q = (select(ScenarioVersion.name, ScenarioVersion.content_hash, Run.uid, Measurement.value, RepetitionRow.index)
                 .join(Run, Run.scenario_id == ScenarioVersion.id)
                 .join(RepetitionRow, RepetitionRow.run_id == Run.id)
                 .join(Measurement, Measurement.repetition_id == RepetitionRow.id)
                 .where(Run.uid.in_(run_ids), Measurement.metric == name, RepetitionRow.warmup.is_(False),
                        RepetitionRow.baseline_path.is_(None)))
            if not metric_def(name).all_repetitions:
                q = q.where(RepetitionRow.status == "completed")
            rows = s.execute(q.order_by(Run.started_at, RepetitionRow.index))
            for scenario_name, content_hash, uid, value, index in rows:
                sample = out.setdefault(uid if per_run else scenario_name, Sample())
                sample.values.append(value)
                sample.indices.append(index)
                sample.value_runs.append(uid)
                sample.versions.add(content_hash)
                sample.runs.add(uid)
        return out

    def run_environments(self, run_ids: Iterable[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Run id -> (link backend, environment document), for the conditions of those runs."""
        ids = list(run_ids)
        with self._session("read runs") as s:
            rows = s.execute(select(Run.uid, Run.backend, Environment.document)
                             .join(Environment, Environment.run_id == Run.id).where(Run.uid.in_(ids)))
            return {uid: (backend, dict(doc or {})) for uid, backend, doc in rows}

    def metrics_by_scenario(self) -> dict[str, set[str]]:
        """Scenario name -> every metric any repetition of any of its runs stored (failed ones included)."""
        out: dict[str, set[str]] = {}
        with self._session("read measurements") as s:
            for name, metric in s.execute(select(ScenarioVersion.name, Measurement.metric).distinct()
                                          .join(Run, Run.scenario_id == ScenarioVersion.id)
                                          .join(RepetitionRow, RepetitionRow.run_id == Run.id)
                                          .join(Measurement, Measurement.repetition_id == RepetitionRow.id)):
                out.setdefault(name, set()).add(metric)
        return out

    def stored_metrics(self) -> list[str]:
        with self._session("read measurements") as s:
            return sorted(s.scalars(select(Measurement.metric).distinct()))

    def count_runs(self, flt: RunFilter | None = None) -> int:
        """How many runs are stored (that `flt` matches, when given): what `runs --limit` cut a listing from."""
        with self._session("read runs") as s:
            q = select(func.count(Run.id))
            return s.scalar(_filtered(q.select_from(Run), flt, s) if flt is not None else q) or 0


def _filtered(q: Any, flt: RunFilter, s: Session) -> Any:
    if flt.scenario:
        q = q.join(ScenarioVersion, Run.scenario_id == ScenarioVersion.id).where(ScenarioVersion.name == flt.scenario)
    if flt.label is not None:
        q = q.where(Run.label == flt.label)
    if flt.kernel:
        q = q.where(_kernel_condition(s, flt.kernel))
    if flt.since is not None:
        q = q.where(Run.started_at >= flt.since)
    if flt.run_ids:
        q = q.where(Run.uid.in_(flt.run_ids))
    for key, value in flt.tags.items():
        q = q.where(Run.id.in_(select(Tag.run_id).where(Tag.key == key, Tag.value == value)))
    return q


def _kernel_condition(s: Session, query: str) -> Any:
    """Runs whose kernel `query` names (kernel_names.stored_kernel_matches on the release and the build string).

    The rule needs Python (a prefix on version components, the upstream version
    parsed from `uname -v`), so it is applied to the few distinct
    (release, build) pairs stored, and the query keeps the matching pairs.
    """
    pairs = s.execute(select(Run.kernel, Environment.kernel_version).join(Environment, Environment.run_id == Run.id,
                                                                          isouter=True).distinct()).all()
    hits = [(release, build) for release, build in pairs if stored_kernel_matches(query, release, build or "")]
    if not hits:
        return false()
    return Run.id.in_(select(Run.id).join(Environment, Environment.run_id == Run.id, isouter=True).where(or_(*[
        and_(Run.kernel == release, Environment.kernel_version.is_(None) if build is None else Environment.kernel_version == build)
        for release, build in hits])))


def _environment_fields(result: RunResult) -> dict[str, Any]:
    """The environment's columns (to group and filter by) and the whole document (to reproduce)."""
    env = result.environment
    lab = env.get("mptcplab") or {}
    return dict(
        hostname=env.get("hostname", ""), kernel_release=env.get("kernel_release", ""),
        kernel_version=env.get("kernel_version", ""), cmdline=env.get("cmdline", ""),
        cpu_model=env.get("cpu_model", ""), cpu_count=env.get("cpu_count"),
        lab_version=lab.get("version", ""), lab_commit=lab.get("commit", ""),
        link_backend=result.backend, load_before=env.get("load_before"), load_after=env.get("load_after"),
        sysctls_client=env.get("sysctls_client"), sysctls_server=env.get("sysctls_server"),
        link=env.get("link"), document=dict(env),
    )


def _repetition_row(run_pk: int, rep: Repetition) -> RepetitionRow:
    ts = rep.timeseries
    paths = list(dict.fromkeys([*(ts.throughput_mbps if ts else {}), *(ts.rtt_ms if ts else {}), *(ts.cwnd if ts else {})]))
    return RepetitionRow(
        run_id=run_pk, index=rep.index, warmup=rep.warmup, started_at=rep.started_at, bytes=rep.bytes, mptcp=rep.mptcp,
        status=rep.status, error=rep.error, over_budget=rep.over_budget, baseline_path=rep.baseline_path,
        mib=rep.mib, mib_server=rep.mib_server,
        series_interval_s=ts.interval_s if ts else None, series_t=ts.t if ts else None,
        workload_series=dict(rep.series) if rep.series else None,
        programs=[p.model_dump(mode="json") for p in rep.programs] or None,
        measurements=[Measurement(metric=k, value=v) for k, v in repetition_metrics(rep).items()],
        # subflow metrics are stored as the measurements "<path>.<name>" (repetition_metrics) and read back from them
        subflows=[SubflowRow(position=i, **sf.model_dump(exclude={"metrics"})) for i, sf in enumerate(rep.subflows)],
        series=[SeriesRow(position=i, path=p, throughput_mbps=ts.throughput_mbps.get(p), rtt_ms=ts.rtt_ms.get(p),
                          delivered_mbps=ts.delivered_mbps.get(p), cwnd=ts.cwnd.get(p))
                for i, p in enumerate(paths)] if ts else [],
    )


def _repetition(row: RepetitionRow) -> Repetition:
    metrics = {m.metric: m.value for m in row.measurements}
    paths = {sf.path for sf in row.subflows}
    per_path: dict[tuple[str, str], float] = {}  # (path, subflow metric) -> value, from "<path>.<name>"
    for key, value in metrics.items():
        path, dot, name = key.rpartition(".")
        if dot and path in paths and (known := find_metric(name)) is not None and known.scope == "subflow":
            per_path[(path, name)] = value
    per_path_keys = {f"{p}.{n}" for p, n in per_path}
    ts = None
    if row.series_interval_s is not None:
        ts = TimeSeries(interval_s=row.series_interval_s, t=row.series_t or [],
                        throughput_mbps={r.path: r.throughput_mbps for r in row.series if r.throughput_mbps is not None},
                        rtt_ms={r.path: r.rtt_ms for r in row.series if r.rtt_ms is not None},
                        delivered_mbps={r.path: r.delivered_mbps for r in row.series if r.delivered_mbps is not None},
                        cwnd={r.path: r.cwnd for r in row.series if r.cwnd is not None})
    return Repetition(
        index=row.index, completion_s=metrics["completion_s"], goodput_mbps=metrics["goodput_mbps"], bytes=row.bytes,
        mptcp=row.mptcp, mib=row.mib, mib_server=row.mib_server, started_at=row.started_at, warmup=row.warmup,
        timeseries=ts, status=row.status or "completed", error=row.error, over_budget=row.over_budget,
        metrics={k: v for k, v in metrics.items() if k not in BULK_METRICS and k not in per_path_keys},
        series=dict(row.workload_series or {}),
        subflows=[SubflowResult(**{k: v for k in SubflowResult.model_fields if k != "metrics" and (v := getattr(sf, k)) is not None},
                                metrics={name: v for (path, name), v in per_path.items() if path == sf.path})
                  for sf in row.subflows],
        baseline_path=row.baseline_path,
        programs=[ProgramRun(**p) for p in row.programs or []],
    )


def _reason(e: BaseException) -> str:
    """The driver's own words, first line only (`database is locked`, `connection refused`, ...)."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


LOW_SPACE_BYTES = 1 << 20


def _disk_note(url: URL) -> str:
    """For a SQLite file on a (nearly) full disk, say so: SQLite itself often only says 'disk I/O error'."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return ""
    try:
        free = shutil.disk_usage(Path(url.database).parent).free
    except OSError:
        return ""
    return f" (the disk holding it has only {free} bytes free)" if free < LOW_SPACE_BYTES else ""


def open_store(db: str | URL | None = None, create: bool = True) -> Store:
    """Open (and migrate) the store named by --db / $MPTCPLAB_DB / the default; StoreError if it cannot be.

    With create=False a SQLite file that does not exist is a UsageError: a
    command that only reads must not answer a mistyped --db with an empty
    database (and new directories) where the user expected their runs.
    """
    url = db if isinstance(db, URL) else resolve_db(db)
    if not create and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).exists():
        raise UsageError(f"no results database at {url.database}",
                         "runs are stored there by mptcplab run; pass --db or set MPTCPLAB_DB to where your runs are")
    try:
        engine = make_engine(url)
        migrate(engine)
    except (SQLAlchemyError, OSError) as e:
        raise StoreError(f"cannot open the results store {display(url)}: {_reason(e)}{_disk_note(url)}") from e
    return Store(engine, url)
