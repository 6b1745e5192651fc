"""Descriptive statistics computed once over concatenated raw samples (pure).

Percentiles use linear interpolation between closest ranks, numpy's default ("linear", type 7 of
Hyndman and Fan): for sorted values ``x[0..n-1]`` and ``q`` in [0, 100], ``h = (n - 1) * q / 100``
and the result is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile_sorted(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted, non-empty ``values``."""
    if not values:
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


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean of non-empty ``values`` (``math.fsum``, so the order does not matter)."""
    if not values:
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


def summarize(values: Sequence[float]) -> Summary | None:
    """Summary statistics of ``values`` (any order), or ``None`` when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return Summary(
        mean=mean(ordered),
        median=percentile_sorted(ordered, 50.0),
        p95=percentile_sorted(ordered, 95.0),
        p99=percentile_sorted(ordered, 99.0),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        count=len(ordered),
    )
