"""`mptcplab worker`: a procrastinate worker that runs a campaign's jobs, one repetition each.

Each job runs one repetition with the executor `run` and `matrix` use (this
machine's kernel, or a guest booted with the job's kernel, fetched when the
worker lacks it; a guest stays up for the next job on the same kernel) and
stores it in its cell (one run per campaign x scenario x kernel) with
Store.add_repetition_once: the repetition index is the key, so a job retried
after its worker died is never counted twice.

Stopping: the first SIGTERM (or Ctrl-C) lets the current job finish, then
the worker exits (143 / 130); a second one releases it: the repetition is
interrupted (its lab torn down) and the job goes back to the queue for
another worker. A worker that dies (SIGKILL, power) stops its heartbeat;
every live worker retries the jobs of workers silent for `stalled_after`
seconds (procrastinate's stalled-job query), which is how a killed
worker's job reaches another.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..cancel import Cancel
from ..environment import cpu_model
from ..errors import Interrupted, LabError
from ..executors import Executor, executor_for
from .queue import QUEUE, TASK, Database, connect, ensure_schema, load_source, make_app

#: how long a silent worker's job waits before another worker takes it (seconds)
STALLED_AFTER_S = 60.0
#: a job released by SIGTERM or a stalled worker is tried again up to this many times
MAX_ATTEMPTS = 20

log = logging.getLogger("mptcplab.worker")


class Released(Exception):
    """The worker let go of its job (a second SIGTERM): the job goes back to the queue."""


@dataclass
class WorkerStats:
    """What one worker did, for its last line."""

    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    released: int = 0
    stopped_by: int | None = None  # the signal that stopped it
    errors: list[str] = field(default_factory=list)


def machine(name: str) -> dict[str, Any]:
    """The worker and its machine, as recorded with every repetition it stores."""
    return {"name": name, "hostname": os.uname().nodename, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "kernel_release": os.uname().release}


def merge_fleet(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A cell's environment after another repetition: the first repetition's conditions stay, the fleet's
    workers and which repetition each ran are united, the link counters appended."""
    out = dict(stored)
    old, add = stored.get("fleet") or {}, new.get("fleet") or {}
    out["fleet"] = {**old, **add, "workers": {**(old.get("workers") or {}), **(add.get("workers") or {})},
                    "repetitions": {**(old.get("repetitions") or {}), **(add.get("repetitions") or {})}}
    if new.get("link_stats"):
        out["link_stats"] = [*(stored.get("link_stats") or []), *new["link_stats"]]
    return out


def missing_build(kernel: str, build: dict[str, Any], worker: str) -> LabError:
    """The KernelError (exit 3) of a job whose kernel from `kernel build` this worker does not have: how to build it."""
    from ..kernels.catalog import KernelError

    flavour, version, source = build.get("flavour") or "uml", build.get("version") or "VERSION", str(build.get("source") or "")
    what = version if source.startswith("debian ") else "SOURCE"  # a tarball or a tree of the submitter's: the same one here
    how = (f"build it on this worker: mptcplab kernel build {what} --flavour {flavour}"
           + ("" if kernel == f"{version}-{flavour}" else f" --name {kernel}") + ("" if what == version else f" (SOURCE: {source})"))
    return KernelError(f"kernel {kernel} ({flavour}, built from {source or 'an unknown source'}) is not on worker {worker}", how)


def check_build(kernel: str | None, build: dict[str, Any] | None, have: Any, worker: str) -> None:
    """KernelError (exit 3) when the kernel `have` (a catalog Kernel) that this worker runs for a job is not the
    build the job names (`kernel_build`: flavour, source, commit, config hash, patches): its numbers would not be
    the campaign's. Nothing to check for a job without one (a Debian kernel, this machine's)."""
    if build is None or have is None:
        return
    from ..kernels.catalog import KernelError
    from .queue import BUILD_IDENTITY, built_kernel

    mine = built_kernel(have.release) or {"flavour": have.flavour}
    differ = [key for key in ("flavour", *BUILD_IDENTITY) if build.get(key) is not None and mine.get(key) != build.get(key)]
    if differ:
        shown = ", ".join(f"{key} {mine.get(key)!r} here, {build.get(key)!r} in the campaign" for key in differ)
        raise KernelError(f"kernel {kernel} on worker {worker} is another build than the campaign's ({shown})",
                          f"rebuild it from the campaign's source (mptcplab kernel build ... --flavour {build.get('flavour')}), "
                          "or submit the campaign from a machine with this build")


class FleetWorker:
    """One worker: `FleetWorker(database("postgresql+psycopg://..."), "lab1").run()` until a signal stops it."""

    def __init__(self, dbase: Database, name: str, concurrency: int = 1, stalled_after: float = STALLED_AFTER_S,
                 exit_when_empty: bool = False, say: Callable[[str], None] = print) -> None:
        self.dbase = dbase
        self.name = name
        self.concurrency = concurrency
        self.stalled_after = stalled_after
        self.heartbeat = max(0.2, min(10.0, stalled_after / 4))
        self.exit_when_empty = exit_when_empty
        self.say = say
        self.stats = WorkerStats()
        self.machine = machine(name)
        self._cancels: set[Cancel] = set()
        self._lock = threading.Lock()
        self._executor: tuple[str | None, Executor] | None = None
        self._store: Any = None

    # -- the worker ----------------------------------------------------------
    def run(self) -> WorkerStats:
        """Take jobs until stopped (or, with exit_when_empty, until the queue is empty). StoreError: no database."""
        ensure_schema(self.dbase)
        from ..store import open_store

        # a job's end is said in one line by the worker itself; procrastinate would add its traceback
        logging.getLogger("procrastinate").setLevel(logging.CRITICAL)
        self._store = open_store(self.dbase.db)  # the results tables, migrated once here rather than in a job
        try:
            asyncio.run(self._main())
        finally:
            self._close_executor()
        return self.stats

    async def _main(self) -> None:
        from procrastinate import RetryStrategy

        app = make_app(self.dbase)
        app.task(name=TASK, queue=QUEUE, pass_context=True,
                 retry=RetryStrategy(max_attempts=MAX_ATTEMPTS, retry_exceptions={Released}))(self._perform)
        loop = asyncio.get_running_loop()
        async with app.open_async():
            worker = asyncio.create_task(app.run_worker_async(
                queues=[QUEUE], name=self.name, concurrency=self.concurrency, wait=not self.exit_when_empty,
                install_signal_handlers=False, shutdown_graceful_timeout=None, delete_jobs="never",
                update_heartbeat_interval=self.heartbeat, stalled_worker_timeout=self.stalled_after,
                fetch_job_polling_interval=min(5.0, self.heartbeat)))
            reaper = asyncio.create_task(self._retry_stalled(app))

            def on_signal(signum: int) -> None:
                if self.stats.stopped_by is None:
                    self.stats.stopped_by = signum
                    self.say(f"worker {self.name}: {signal.Signals(signum).name}: finishing the current job, then stopping "
                             "(send it again to release the job to another worker now)")
                    worker.cancel()  # procrastinate stops gracefully: no new job, the running one finishes
                else:
                    self.say(f"worker {self.name}: releasing the current job")
                    with self._lock:
                        for cancel in self._cancels:
                            cancel.trigger(signum)

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
            self.say(f"worker {self.name} on {self.machine['hostname']} ({self.machine['kernel_release']}): "
                     f"taking jobs from {self.dbase.shown}")
            try:
                await worker
            except asyncio.CancelledError:
                if self.stats.stopped_by is None:
                    raise
            finally:
                reaper.cancel()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _retry_stalled(self, app: Any) -> None:
        """Every heartbeat: jobs of workers silent for stalled_after seconds go back to the queue (procrastinate's query)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                stalled = await app.job_manager.get_stalled_jobs(queue=QUEUE, task_name=TASK,
                                                                 seconds_since_heartbeat=self.stalled_after)
                for job in stalled:
                    try:
                        await app.job_manager.retry_job(job)
                    except Exception:  # another worker retried it first
                        continue
                    self.say(f"worker {self.name}: job {job.id} was stalled (its worker went silent): back in the queue")
                    await asyncio.to_thread(self._attempt_outcome, job.id, "stalled")
                await app.job_manager.prune_stalled_workers(self.stalled_after)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database went away for a moment: the worker's own loop reports it
                log.warning("retrying stalled jobs failed: %s", e)

    # -- one job ---------------------------------------------------------------
    def _perform(self, context: Any, **job: Any) -> dict[str, Any]:
        """Run one repetition of the job and store it once; runs in a thread of procrastinate's worker."""
        from ..result import RunResult
        from ..runner import RunOptions

        job_id = context.job.id
        attempt = self._attempt_start(job_id, job["campaign"])
        cancel = Cancel()
        with self._lock:
            self._cancels.add(cancel)
        what = f"{job['scenario']['name']} @ {job['kernel'] or 'host'} repetition {job['repetition'] + 1}/{job['repeat']}"
        shared = self.concurrency == 1  # one job at a time: a guest stays up for the next job on its kernel
        ex: Executor | None = None
        try:
            scenario = load_source(job["scenario"])
            build = job.get("kernel_build")
            ex = self._executor_for(job["kernel"], build) if shared else self._start_executor(job["kernel"], build)
            check_build(job["kernel"], build, ex.kernel, self.name)
            backend = job["link_backend"]
            if ex.kernel is not None:  # one emulator per kernel whoever runs it, as matrix chooses
                from ..kernels.matrix import resolve_backend

                backend = resolve_backend(backend, [scenario], [ex.kernel])
                drop = cancel.on_cancel(self._close_executor if shared else ex.close)
            else:
                drop = None
            options = RunOptions(repeat=1, label=job["label"], link_backend=backend, tags=dict(job["tags"]),
                                 cancel=cancel, summarize=False, first_repetition=job["repetition"])
            self.say(f"worker {self.name}: job {job_id}: {what}")
            t0 = time.monotonic()
            try:
                result = ex.run(scenario, options, timeseries=True)
            finally:
                if drop is not None:
                    drop()
            ran = time.monotonic() - t0
            if cancel.is_set():
                raise Interrupted(cancel.signum)
            rep = result.repetitions[-1]
            rep.index = job["repetition"]
            where = ex.describe()
            me = {**self.machine, "accelerator": where.get("accelerator")}  # None on the host: no guest
            if where.get("time_mode"):  # UML: simulated or real time, a condition of every repetition this worker runs
                me["time_mode"] = where["time_mode"]
            env = {**result.environment, "worker": me,
                   "fleet": {"campaign": job["campaign"], "workers": {self.name: me},
                             "repetitions": {str(rep.index): self.name}}}
            cell = RunResult.model_validate({**result.model_dump(), "run_id": job["cell"], "repetitions": [], "errors": [],
                                             "status": "running", "environment": env, "summary": {}})
            new = self._store.add_repetition_once(cell, scenario.normalized(), rep, total=job["repeat"], merge=merge_fleet)
            self._attempt_end(attempt, "stored" if new else "duplicate", ran)
            if new:
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
                self.say(f"worker {self.name}: job {job_id}: repetition already stored (a retried job): not counted again")
            return {"run": job["cell"], "repetition": rep.index, "status": rep.status, "new": new}
        except (Interrupted, KeyboardInterrupt):
            self.stats.released += 1
            self._attempt_end(attempt, "released", None)
            self._close_executor()
            raise Released(f"released by {self.name}") from None
        except LabError as e:
            if cancel.is_set():  # a guest closed under the job to release it: the guest's error is the release
                self.stats.released += 1
                self._attempt_end(attempt, "released", None)
                self._close_executor()
                raise Released(f"released by {self.name}") from None
            message = e.message + (f" — {e.hint}" if e.hint else "")
            self.stats.failed += 1
            self.stats.errors.append(f"job {job_id} ({what}): {message}")
            self._attempt_end(attempt, "failed", None, message)
            self.say(f"worker {self.name}: job {job_id} failed: {message}")
            if self._executor is not None and not self._executor[1].alive:
                self._close_executor()
            raise
        finally:
            with self._lock:
                self._cancels.discard(cancel)
            if not shared and ex is not None:
                ex.close()

    def _executor_for(self, kernel: str | None, build: dict[str, Any] | None = None) -> Executor:
        """The executor for `kernel` (None: this machine's); a guest stays up while jobs keep asking for its kernel."""
        if self._executor is not None and self._executor[0] == kernel and self._executor[1].alive:
            return self._executor[1]
        self._close_executor()
        ex = self._start_executor(kernel, build)
        self._executor = (kernel, ex)
        return ex

    def _start_executor(self, kernel: str | None, build: dict[str, Any] | None = None) -> Executor:
        """A new executor for `kernel`, entered and ready (a guest booted). `build`: the job's kernel_build (a kernel
        from `kernel build`, which no archive serves: KernelError saying how to build it when this machine lacks it)."""
        k = None
        if kernel is not None:
            from ..kernels.catalog import cached
            from ..kernels.fetch import fetch

            self.say(f"worker {self.name}: kernel {kernel} ...")
            if build is not None and not any(c.built and c.release == kernel for c in cached()):
                raise missing_build(kernel, build, self.name)
            k = fetch(kernel)[0]  # fetched into this machine's cache when missing
        ex = executor_for(k)
        ex.__enter__()
        try:
            ex.ready()
        except BaseException:
            ex.close()
            raise
        return ex

    def _close_executor(self) -> None:
        held, self._executor = self._executor, None
        if held is not None:
            held[1].close()

    # -- the attempts table ----------------------------------------------------
    def _attempt_start(self, job_id: int, campaign: str) -> int:
        with connect(self.dbase) as conn:
            return conn.execute("INSERT INTO mptcplab_fleet_attempts (job_id, campaign, worker, hostname) VALUES (%s, %s, %s, %s) "
                                "RETURNING id", (job_id, campaign, self.name, self.machine["hostname"])).fetchone()[0]

    def _attempt_end(self, attempt: int, outcome: str, ran_s: float | None, error: str | None = None) -> None:
        try:
            with connect(self.dbase) as conn:
                conn.execute("UPDATE mptcplab_fleet_attempts SET outcome = %s, ran_s = %s, stored = now(), error = %s WHERE id = %s",
                             (outcome, ran_s, error, attempt))
        except LabError as e:
            log.warning("could not record the end of attempt %s: %s", attempt, e.message)

    def _attempt_outcome(self, job_id: int, outcome: str) -> None:
        """The latest attempt of a job another worker gave up on (it died): marked so `campaign` does not count it as running."""
        with connect(self.dbase) as conn:
            conn.execute("UPDATE mptcplab_fleet_attempts SET outcome = %s WHERE id = (SELECT max(id) FROM mptcplab_fleet_attempts "
                         "WHERE job_id = %s) AND outcome = 'running'", (outcome, job_id))
