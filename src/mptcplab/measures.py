"""What a measurement is: a metric's definition, and what a workload kind declares it measures.

The bottom of the metric contract: it imports nothing, so the workload specs
(`workload_specs.py`, pure scenario data) can declare their metrics here and
`metrics.py` can build its tables from them without an import circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Better = Literal["higher", "lower"]
#: "repetition": a key of Repetition.metrics; "subflow": a key of SubflowResult.metrics, one value per path,
#: stored and compared as "<path>.<name>" (e.g. "wifi.idle_queued_share")
Scope = Literal["repetition", "subflow"]


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: the name stored, its unit, which way is better, what it means."""

    name: str
    unit: str
    better: Better
    description: str
    #: a proportion over repetitions (each repetition contributes 0 or 1), compared with Fisher's exact test
    proportion: bool = False
    #: taken from every non-warm-up repetition, not only completed ones
    all_repetitions: bool = False
    scope: Scope = "repetition"


@dataclass(frozen=True)
class Measures:
    """What one workload kind measures, declared on its spec class (`MEASURES`); metrics.py builds its tables from it.

    `main`: what every verdict judges a case of this kind by unless `--metric`
    names another (compare, history, runs, show, suite, the report index): the
    tail (p99) for latency kinds, where a scheduler's mistakes show first.
    `baseline`: what `mptcp_vs_best_path` compares: the median (p50) for
    latency kinds, the typical transaction against the best path alone, which
    a few slow tail transactions must not decide. `metrics`: the metrics only
    this kind measures (Repetition.metrics keys; goodput, completion time and
    the scheduler metrics every kind has are in metrics.COMMON). `series`: the
    per-event series it records (Repetition.series key -> (what one value is,
    its unit)), for plots.
    """

    main: str
    baseline: str
    metrics: tuple[Metric, ...] = ()
    series: dict[str, tuple[str, str]] = field(default_factory=dict)
