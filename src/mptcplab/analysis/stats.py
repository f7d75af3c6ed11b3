"""Medians and their confidence intervals across repetitions.

Repetitions are few (3-10) and their distribution is unknown, so the
interval is a percentile bootstrap of the median with a fixed seed
(reproducible output); with one repetition it is that value.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..result import Estimate

BOOTSTRAP_RESAMPLES = 4000
SEED = 20261125


def median_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values")
    med = float(np.median(data))
    if data.size == 1 or np.all(data == data[0]):
        return Estimate(median=med, ci95=(med, med), n=int(data.size))
    rng = np.random.default_rng(SEED)
    samples = rng.choice(data, size=(BOOTSTRAP_RESAMPLES, data.size), replace=True)
    medians = np.median(samples, axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(medians, [alpha, 1 - alpha])
    return Estimate(median=med, ci95=(float(lo), float(hi)), n=int(data.size))
