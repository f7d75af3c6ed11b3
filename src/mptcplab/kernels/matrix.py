"""Every scenario on every kernel, kernels interleaved between repetitions.

One guest per kernel is booted (in parallel) and kept up; repetition r of
every scenario runs on kernel 1, then kernel 2, ... before repetition r+1
starts, so slow drift of the machine hits all kernels alike. Each
scenario x kernel cell is one RunResult in the schema of `run --json`,
its `kernel` the guest's release, stored through the run's sinks.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.compare import compare_samples
from ..result import RunResult
from ..runner import RunOptions, summarize_run
from ..scenario import Scenario
from .catalog import Kernel
from .guest import GuestConfig, GuestSession


@dataclass
class Cell:
    scenario: str
    kernel: str
    result: RunResult


def _merge(cell: RunResult, one: RunResult, index: int) -> None:
    """Append the single repetition of `one` to the cell's result, renumbered."""
    for rep in one.repetitions:
        cell.repetitions.append(rep.model_copy(update={"index": index}))
    cpu = cell.environment.setdefault("guest_cpu", {"per_repetition": [], "saturated": False, "max_busy": 0.0})
    new = one.environment.get("guest_cpu", {})
    if cpu is not new:
        cpu["per_repetition"] = cpu.get("per_repetition", []) + new.get("per_repetition", [])
        cpu["saturated"] = bool(cpu.get("saturated")) or bool(new.get("saturated"))
        cpu["max_busy"] = max(cpu.get("max_busy", 0.0), new.get("max_busy", 0.0))
        cpu["qemu_host_cpu"] = cpu.get("qemu_host_cpu", []) + new.get("qemu_host_cpu", [])
    cell.errors.extend(e for e in one.errors if e not in cell.errors)
    for key in ("ended_at", "status"):  # the cell ends when its last repetition does
        if getattr(one, key, None) is not None:
            setattr(cell, key, getattr(one, key))
    if "load_after" in one.environment:
        cell.environment["load_after"] = one.environment["load_after"]


def run_matrix(scenarios: list[Scenario], kernels: list[Kernel], repeat: int | None = None,
               options: RunOptions | None = None, cfg: GuestConfig | None = None,
               timeseries: bool = True) -> list[Cell]:
    """Run the matrix; cells in scenario-major, kernel-minor order."""
    options = options or RunOptions()
    sinks = list(getattr(options, "sinks", []) or [])
    progress = options.progress
    one = replace(options, repeat=1, progress=progress)
    if hasattr(one, "sinks"):
        one.sinks = []  # type: ignore[attr-defined]  # the host stores the merged cells, not each boot's fragment
    if hasattr(one, "warmup"):
        one.warmup = 0  # type: ignore[attr-defined]
    cells: dict[tuple[int, int], RunResult] = {}
    reps = {i: repeat or s.run.repeat for i, s in enumerate(scenarios)}
    with ExitStack() as stack:
        guests = [stack.enter_context(GuestSession(k, cfg)) for k in kernels]  # all boot at once
        for g in guests:
            g.wait_ready()
        try:
            for r in range(max(reps.values())):
                for si, scenario in enumerate(scenarios):
                    if r >= reps[si]:
                        continue
                    for ki, guest in enumerate(guests):
                        if progress is not None and hasattr(progress, "scenario_started"):
                            progress.scenario_started(f"{scenario.name} @ {guest.kernel.release} [{r + 1}/{reps[si]}]")
                        res = guest.run(scenario, one, timeseries)
                        if (si, ki) not in cells:
                            cells[(si, ki)] = res.model_copy(update={"repetitions": []}, deep=True)
                            for sink in sinks:
                                sink.run_started(cells[(si, ki)], scenario)
                        _merge(cells[(si, ki)], res, r)
                        for sink in sinks:
                            sink.repetition_finished(cells[(si, ki)], cells[(si, ki)].repetitions[-1])
        finally:
            for cell in cells.values():
                summarize_run(cell)
                for sink in sinks:
                    sink.run_finished(cell)
    return [Cell(scenarios[si].name, kernels[ki].release, cells[(si, ki)]) for si in range(len(scenarios))
            for ki in range(len(kernels)) if (si, ki) in cells]


def table_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per cell: medians with CIs and the change relative to the first kernel of its scenario."""
    rows = []
    first: dict[str, RunResult] = {}
    for cell in cells:
        res = cell.result
        base = first.setdefault(cell.scenario, res)
        good = [r.goodput_mbps for r in res.repetitions if not getattr(r, "warmup", False)]
        row: dict[str, Any] = {"scenario": cell.scenario, "kernel": cell.kernel, "n": len(good),
                               "goodput": res.summary.get("goodput_mbps"), "completion": res.summary.get("completion_s"),
                               "cpu_saturated": bool(res.environment.get("guest_cpu", {}).get("saturated")),
                               "change": None, "verdict": None}
        if base is not res:
            base_good = [r.goodput_mbps for r in base.repetitions if not getattr(r, "warmup", False)]
            cmp = compare_samples(base_good, good, scenario=cell.scenario)
            row["change"], row["verdict"] = cmp.change, cmp.verdict
        rows.append(row)
    return rows
