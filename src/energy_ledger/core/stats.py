"""Descriptive statistics computed once over concatenated raw samples (pure).

Percentiles use linear interpolation between closest ranks, numpy's default ("linear", type 7 of
Hyndman and Fan): for sorted values ``x[0..n-1]`` and ``q`` in [0, 100], ``h = (n - 1) * q / 100``
and the result is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.

numpy sorts: an experiment's latency lists hold a value per request (millions for a long run),
and sorting them as Python floats took most of an aggregation's time. Means use ``math.fsum``,
which is exactly rounded and so independent of the order of the values: replaying processes in
another order cannot change a bit of the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Values = Sequence[float] | NDArray[np.float64] | Any
"""A list, an ``array('d')`` or a numpy array of floats."""


def _array(values: Values) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def percentile_sorted(values: Values, q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted, non-empty ``values``."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    h = (len(values) - 1) * (q / 100.0)
    lo = math.floor(h)
    frac = h - lo
    if frac == 0.0 or lo + 1 >= len(values):
        return float(values[lo])
    a = float(values[lo])
    b = float(values[lo + 1])
    return a + frac * (b - a)


def mean(values: Values) -> float:
    """Arithmetic mean of non-empty ``values``, exactly rounded (``math.fsum``)."""
    if len(values) == 0:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean, median, p95, p99, min, max and count of a set of values."""

    mean: float
    median: float
    p95: float
    p99: float
    min: float
    max: float
    count: int


def summarize(values: Values) -> Summary | None:
    """Summary statistics of ``values`` (any order), or ``None`` when there are none."""
    ordered = np.sort(_array(values))
    if ordered.size == 0:
        return None
    return Summary(
        mean=math.fsum(ordered.tolist()) / ordered.size,
        median=percentile_sorted(ordered, 50.0),
        p95=percentile_sorted(ordered, 95.0),
        p99=percentile_sorted(ordered, 99.0),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        count=int(ordered.size),
    )
