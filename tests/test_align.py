"""Under time travel each repetition's traffic starts on a grid of simulated time (runner.align_start), so the
lab's own Python before it, whose simulated cost differs by install, does not shift the traffic against the
kernel's timers. The grid itself, on the real clock, and the job that carries it into a guest."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from mptcplab.executors import job as jobs
from mptcplab.runner import RunOptions, align_start
from mptcplab.scenario import load_scenario

from .conftest import write_scenario

pytestmark = pytest.mark.light  # the real monotonic clock and a job's JSON; no lab, no guest

GRID_S = 0.05


def test_align_start_waits_for_the_next_multiple_of_the_grid() -> None:
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    reached = align_start(GRID_S)
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert abs(reached / GRID_S - round(reached / GRID_S)) < 1e-6  # a multiple of the grid
    assert before + 1e-3 <= reached <= after  # at least 1 ms ahead, and really waited for
    assert reached - before <= GRID_S + 1e-3  # never a whole grid more than needed


def test_the_grid_travels_in_a_guest_job_and_defaults_to_none(tmp_path: Path) -> None:
    scenario = load_scenario(write_scenario(tmp_path, """
        name = "aligned"
        [[path]]
        name = "a"
        rate = "10mbit"
        [workload]
        size = "1MiB"
    """))
    aligned = jobs.decode_options(jobs.encode(scenario, RunOptions(align_start_s=1.0), False, 1, "uml"), None, [])
    assert aligned.align_start_s == 1.0
    plain = jobs.decode_options(jobs.encode(scenario, RunOptions(), False, 1, "qemu"), None, [])
    assert plain.align_start_s == 0.0
    old = jobs.encode(scenario, RunOptions(), False, 1, "qemu")
    del old["align_start_s"]  # a job from a lab that did not know the grid
    assert jobs.decode_options(old, None, []).align_start_s == 0.0
