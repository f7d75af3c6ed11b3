"""Every scenario on every kernel, kernels interleaved between repetitions.

One executor per kernel (a guest, booted in parallel and kept up; None in
`kernels` is this machine's own kernel); repetition r of
every scenario runs on kernel 1, then kernel 2, ... before repetition r+1
starts, so slow drift of the machine hits all kernels alike. Each
scenario x kernel cell is one RunResult in the schema of `run --json`,
its `kernel` the guest's release, stored through the run's sinks as each
repetition ends. A repetition that fails is a result like any other; a
guest that dies ends only its own kernel's remaining cells.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.compare import compare_samples, result_draws
from ..analysis.conditions import conditions, differing_lines
from ..analysis.stats import conclude_run
from ..errors import LabError, UnsupportedError
from ..result import RunResult
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
    try:
        for r in range(max(reps.values())):
            for si, scenario in enumerate(scenarios):
                if r >= reps[si]:
                    continue
                for ki, ex in enumerate(executors):
                    done += 1
                    cell = cells.get((si, ki))
                    if cell is None:
                        cell = cells[(si, ki)] = _new_cell(scenario, ex, backend, options)
                        for sink in sinks:
                            sink.run_started(cell, scenario)
                    if not ex.alive:
                        continue  # its error is in every cell it left unfinished
                    if progress is not None:
                        progress.scenario_started(f"[{done}/{total}] {scenario.name} @ {ex.release}, "
                                                  f"repetition {r + 1}/{reps[si]}")
                    try:
                        ex.run(scenario, one, into=cell, finish=False, timeseries=timeseries)
                    except LabError as e:
                        if options.fail_fast:
                            raise
                        if progress is not None:
                            progress.status(f"kernel {ex.release}: {e.message}")
    finally:
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


def table_rows(cells: list[Cell], metric: str = "goodput_mbps") -> list[dict[str, Any]]:
    """One row per cell: medians with CIs and the change relative to the first kernel of its scenario."""
    rows = []
    first: dict[str, RunResult] = {}
    for cell in cells:
        res = cell.result
        base = first.setdefault(cell.scenario, res)
        measured = [r for r in res.repetitions if not r.warmup and r.completed and r.baseline_path is None]
        good = [r.goodput_mbps for r in measured]
        failed = sum(1 for r in res.repetitions if not r.warmup and r.fails_run)
        row: dict[str, Any] = {"scenario": cell.scenario, "kernel": cell.kernel, "n": len(good), "failed": failed,
                               "goodput": res.summary.get("goodput_mbps"), "completion": res.summary.get("completion_s"),
                               "pass_rate": res.summary.get("pass_rate"),
                               "cpu_saturated": bool(res.environment.get("guest_cpu", {}).get("saturated")),
                               # UML under time travel: computation takes no simulated time, so no CPU can saturate
                               "cpu_applicable": res.environment.get("time_mode") != "travel",
                               "change": None, "verdict": None, "conditions": []}
        if base is not res:
            base_measured = [r for r in base.repetitions if not r.warmup and r.completed and r.baseline_path is None]
            base_good = [r.goodput_mbps for r in base_measured]
            if base_good and good:  # paired when both kernels ran deterministically with one seed base
                cmp = compare_samples(base_good, good, scenario=cell.scenario,
                                      baseline_draws=result_draws(base.environment, [r.index for r in base_measured]),
                                      candidate_draws=result_draws(res.environment, [r.index for r in measured]))
                row["change"], row["verdict"] = cmp.change, cmp.verdict
            row["conditions"] = differing_lines([conditions(base.environment, base.backend)],
                                                [conditions(res.environment, res.backend)],
                                                what=f"{cell.scenario} on {cell.kernel}", sides=(base.kernel, cell.kernel))
        rows.append(row)
    return rows
