"""Every scenario on every kernel, kernels interleaved between repetitions.

One executor per kernel (a guest, booted in parallel and kept up; None in
`kernels` is this machine's own kernel); repetition r of
every scenario runs on kernel 1, then kernel 2, ... before repetition r+1
starts, so slow drift of the machine hits all kernels alike. Each
scenario x kernel cell is one RunResult in the schema of `run --json`,
its `kernel` the guest's release, stored through the run's sinks as each
repetition ends. A repetition that fails is a result like any other; a
guest that dies ends only its own kernel's remaining cells. Executors whose
numbers do not depend on load (UML in simulated time) run a round (repetition
r of every scenario on every kernel) at once, as many as there are cores, one
thread each (each UML pinned to a core of its own).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.compare import compare_samples, result_draws
from ..analysis.conditions import conditions, differing_lines
from ..analysis.stats import conclude_run
from ..errors import LabError, UnsupportedError
from ..protocols import Progress, RunSink
from ..result import Repetition, RunResult
from ..runner import RunOptions, baseline_environment
from ..scenario import Scenario
from ..executors import Executor, executor_for
from .catalog import Kernel
from ..executors.qemu.session import GuestConfig


@dataclass
class Cell:
    scenario: str
    kernel: str
    result: RunResult


def resolve_backend(requested: str | None, scenarios: list[Scenario], kernels: list[Kernel | None]) -> str:
    """One link backend for every cell: `auto` becomes netem when every kernel has netem (and tbf), else wire, and wire
    wherever an executor says so for `auto` (UML kernels: executors.uml.DEFAULT_LINK_BACKEND).

    Mixing emulators across kernels would make an emulator difference look
    like a kernel's. An explicit backend is kept; UnsupportedError when a
    kernel's config lacks what it needs. None in `kernels` is this machine's kernel.
    """
    wants = {requested} if requested and requested != "auto" else {s.run.link_backend for s in scenarios} - {"auto"}
    if len(wants) > 1:
        raise UnsupportedError(f"the scenarios ask for different link backends ({', '.join(sorted(wants))}): "
                               "a matrix uses one backend for every cell", "pass --link-backend")
    has = {(k.release if k is not None else os.uname().release):
           {q: bool(k.config_value(q)) for q in ("NET_SCH_NETEM", "NET_SCH_TBF")} if k is not None else _host_qdiscs()
           for k in kernels}
    if wants:
        backend = wants.pop()
        need = {"netem": "NET_SCH_NETEM", "tbf": "NET_SCH_TBF"}.get(backend)
        lacking = [r for r, h in has.items() if need and not h[need]]
        if lacking:
            raise UnsupportedError(f"link backend {backend} needs CONFIG_{need}, which kernel {lacking[0]} lacks",
                                   "use --link-backend wire, which works on every kernel")
        return backend
    from ..executors import executors, kind_for

    forced = {executors()[kind_for(k)].auto_link_backend for k in kernels if k is not None} - {None}
    if forced:  # an executor that says what auto means there (UML: wire) decides for every cell
        return "wire" if "wire" in forced else sorted(forced)[0]  # type: ignore[type-var]
    return "netem" if all(h["NET_SCH_NETEM"] and h["NET_SCH_TBF"] for h in has.values()) else "wire"


def _host_qdiscs() -> dict[str, bool]:
    """What this machine's kernel offers, as a kernel config would say it (tbf is built in wherever the lab runs)."""
    from ..capabilities import netem_available

    return {"NET_SCH_NETEM": netem_available(), "NET_SCH_TBF": True}


def run_matrix(scenarios: list[Scenario], kernels: list[Kernel | None], repeat: int | None = None,
               options: RunOptions | None = None, cfg: GuestConfig | None = None,
               timeseries: bool = True) -> list[Cell]:
    """Run the matrix; cells in scenario-major, kernel-minor order. Sinks get every repetition as it ends.

    Each kernel is an Executor (executor_for: a guest, or None for this
    machine's kernel); all are entered (guests boot at once) before the first
    repetition, and every one is stopped however the matrix ends.
    """
    backend = resolve_backend((options or RunOptions()).link_backend, scenarios, kernels)  # refused before anything boots
    with ExitStack() as stack:
        executors = [stack.enter_context(executor_for(k, cfg)) for k in kernels]  # all boot at once
        return run_on_executors(scenarios, executors, repeat, options, timeseries, backend=backend)


def run_on_executors(scenarios: list[Scenario], executors: list[Executor], repeat: int | None = None,
                     options: RunOptions | None = None, timeseries: bool = True, backend: str | None = None) -> list[Cell]:
    """The matrix over executors already entered: repetition r of every scenario on every executor before r+1.

    One RunResult per scenario x executor (a cell), stored through
    `options.sinks` as each repetition ends; a failing repetition is kept and
    an executor that dies ends only its own cells (each says so). `backend`:
    one link backend for every cell (default: options.link_backend).
    """
    options = options or RunOptions()
    sinks = list(options.sinks)
    progress = options.progress
    backend = backend or options.link_backend or "auto"
    one = replace(options, repeat=1, warmup=0, link_backend=backend)
    cells: dict[tuple[int, int], RunResult] = {}
    reps = {i: repeat or s.run.repeat for i, s in enumerate(scenarios)}
    total = sum(reps.values()) * len(executors)
    done = 0
    for ex in executors:
        ex.ready(progress)
    # load-independent executors (UML): a round's cells (every scenario on every kernel) at once, one per core; a
    # cell still gets its repetitions in order, one per round, so its seeds are what a sequential matrix draws
    parallel = len(scenarios) * len(executors) > 1 and all(ex.load_independent for ex in executors)
    pool = ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) if parallel else None
    locked = replace(one, sinks=[_LockedSink(sinks)], progress=_LockedProgress(progress) if progress is not None else None)

    def cell_of(si: int, ki: int) -> RunResult:
        """The cell, made (and the sinks told of its start) just before its first repetition."""
        if (si, ki) not in cells:
            cells[(si, ki)] = _new_cell(scenarios[si], executors[ki], backend, options)
            for sink in sinks:
                sink.run_started(cells[(si, ki)], scenarios[si])
        return cells[(si, ki)]

    try:
        for r in range(max(reps.values())):
            todo: list[tuple[int, int, str]] = []  # (scenario, executor, label): this round's cells
            for si, scenario in enumerate(scenarios):
                if r >= reps[si]:
                    continue
                for ki, ex in enumerate(executors):
                    done += 1
                    todo.append((si, ki, f"[{done}/{total}] {scenario.name} @ {ex.release}, repetition {r + 1}/{reps[si]}"))
            if pool is not None and len(todo) > 1:
                running = [(executors[ki], scenarios[si], cell_of(si, ki), label) for si, ki, label in todo]
                futures = [pool.submit(_one_cell, ex, scenario, _labelled(locked, label), cell, options, timeseries)
                           for ex, scenario, cell, label in running if ex.alive]  # a dead guest's error is in its cells
                for future in futures:
                    future.result()
            else:
                for si, ki, label in todo:
                    cell = cell_of(si, ki)
                    if not executors[ki].alive:
                        continue  # its error is in every cell it left unfinished
                    if progress is not None:
                        progress.scenario_started(label)
                    _one_cell(executors[ki], scenarios[si], one, cell, options, timeseries)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for (si, ki), cell in cells.items():
            alive = executors[ki].alive
            if not alive and not any("guest" in e for e in cell.errors):
                cell.errors.append(f"kernel {executors[ki].release}: the guest stopped; its remaining repetitions did not run")
            ended = len(cell.repetitions) >= reps[si] and alive
            if not ended:
                cell.status = "failed"
            conclude_run(cell, ended=ended)
            for sink in sinks:
                sink.run_finished(cell)
    return [Cell(scenarios[si].name, executors[ki].release, cells[(si, ki)]) for si in range(len(scenarios))
            for ki in range(len(executors)) if (si, ki) in cells]


def _one_cell(ex: Executor, scenario: Scenario, one: RunOptions, cell: RunResult, options: RunOptions, timeseries: bool) -> None:
    """One repetition of `scenario` on `ex` into its cell; a LabError is the cell's (raised only with fail_fast)."""
    try:
        ex.run(scenario, one, into=cell, finish=False, timeseries=timeseries)
    except LabError as e:
        if options.fail_fast:
            raise
        if one.progress is not None:
            one.progress.status(f"kernel {ex.release}: {e.message}")


class _LockedSink(RunSink):
    """The sinks, one call at a time: cells running in threads (load-independent executors) share them."""

    def __init__(self, sinks: list[RunSink]) -> None:
        self.sinks, self.lock = sinks, threading.Lock()

    def run_started(self, result: RunResult, scenario: Scenario) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.run_started(result, scenario)

    def repetition_finished(self, result: RunResult, rep: Repetition) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.repetition_finished(result, rep)

    def run_finished(self, result: RunResult) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.run_finished(result)


class _LockedProgress:
    """A progress display shared by threads: one call at a time."""

    def __init__(self, progress: Progress, lock: threading.Lock | None = None) -> None:
        self._progress, self._lock = progress, lock or threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._progress, name)
        if not callable(target):
            return target

        def call(*args: Any, **kw: Any) -> Any:
            with self._lock:
                return target(*args, **kw)

        return call

    def labelled(self, label: str) -> Any:
        """This display for one cell of several running at once: a lane of its own where the display has lanes
        (the CLI's: its own bars), else the cell's name given with each repetition's start, under the one lock."""
        if hasattr(self._progress, "lane"):
            return _LockedProgress(self._progress.lane(label), self._lock)
        shared = self

        class Labelled:
            def __getattr__(self, name: str) -> Any:
                return getattr(shared, name)

            def repetition_started(self, index: int, total: int) -> None:
                with shared._lock:
                    shared._progress.scenario_started(label)
                    shared._progress.repetition_started(index, total)

        return Labelled()


def _labelled(options: RunOptions, label: str) -> RunOptions:
    """`options` whose progress (a _LockedProgress, or None) names `label`, the cell, as each repetition starts."""
    if not isinstance(options.progress, _LockedProgress):
        return options
    return replace(options, progress=options.progress.labelled(label))  # type: ignore[arg-type]


def _new_cell(scenario: Scenario, ex: Executor, backend: str, options: RunOptions) -> RunResult:
    """An empty result for one scenario x kernel cell, filled as the executor's repetitions arrive."""
    import secrets
    import time

    from ..environment import host_environment

    env = host_environment()
    env.update(kernel_release=ex.release, link_backend=backend, tags=dict(options.tags), label=options.label)
    env.update(baseline_environment(scenario))
    return RunResult(run_id=secrets.token_hex(5), scenario=scenario.name, scenario_hash=scenario.content_hash, label=options.label,
                     kernel=ex.release, scheduler=scenario.mptcp.scheduler, path_manager=scenario.mptcp.path_manager,
                     backend=backend, status="running", started_at=round(time.time(), 6), environment=env)


def table_rows(cells: list[Cell], metric: str | None = None) -> list[dict[str, Any]]:
    """One row per cell: medians with CIs and the change relative to the first kernel of its scenario, judged by
    `metric` (None: each scenario's main metric, metrics.result_main_metric, as compare and history judge it)."""
    from ..metrics import metric as metric_def, repetition_metrics, result_main_metric

    def indexed(res: RunResult, name: str) -> list[tuple[float, int]]:
        reps = [r for r in res.repetitions if not r.warmup and r.baseline_path is None
                and (r.completed or metric_def(name).all_repetitions)]
        return [(v[name], r.index) for v, r in zip(map(repetition_metrics, reps), reps) if name in v]

    def values(res: RunResult, name: str) -> list[float]:
        return [v for v, _ in indexed(res, name)]

    rows = []
    first: dict[str, RunResult] = {}
    for cell in cells:
        res = cell.result
        base = first.setdefault(cell.scenario, res)
        judged = metric or result_main_metric(res)
        good = [r.goodput_mbps for r in res.repetitions if not r.warmup and r.completed and r.baseline_path is None]
        failed = sum(1 for r in res.repetitions if not r.warmup and r.fails_run)
        row: dict[str, Any] = {"scenario": cell.scenario, "kernel": cell.kernel, "n": len(good), "failed": failed,
                               "goodput": res.summary.get("goodput_mbps"), "completion": res.summary.get("completion_s"),
                               "pass_rate": res.summary.get("pass_rate"), "metric": judged, "median": res.summary.get(judged),
                               "cpu_saturated": bool(res.environment.get("guest_cpu", {}).get("saturated")),
                               # UML under time travel: computation takes no simulated time, so no CPU can saturate
                               "cpu_applicable": res.environment.get("time_mode") != "travel",
                               "change": None, "verdict": None, "conditions": []}
        if base is not res:
            base_values, cand_values = values(base, judged), values(res, judged)
            if base_values and cand_values:  # paired when both kernels ran deterministically with one seed base
                cmp = compare_samples(base_values, cand_values, scenario=cell.scenario, metric=judged,
                                      better=metric_def(judged).better,
                                      baseline_draws=result_draws(base.environment, [i for _, i in indexed(base, judged)]),
                                      candidate_draws=result_draws(res.environment, [i for _, i in indexed(res, judged)]))
                row["change"], row["verdict"] = cmp.change, cmp.verdict
            row["conditions"] = differing_lines([conditions(base.environment, base.backend)],
                                                [conditions(res.environment, res.backend)],
                                                what=f"{cell.scenario} on {cell.kernel}", sides=(base.kernel, cell.kernel))
        rows.append(row)
    return rows
