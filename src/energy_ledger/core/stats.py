"""Descriptive statistics computed once over concatenated raw samples (pure).

Percentiles use linear interpolation between closest ranks, numpy's default ("linear", type 7 of
Hyndman and Fan): for sorted values ``x[0..n-1]`` and ``q`` in [0, 100], ``h = (n - 1) * q / 100``
and the result is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.

numpy sorts: an experiment's latency lists hold a value per request (millions for a long run),
and sorting them as Python floats took most of an aggregation's time. Means use ``math.fsum``,
which is exactly rounded and so independent of the order of the values: replaying processes in
another order cannot change a bit of the result.

Memory: the processes' lists are never joined into Python lists. ``summarize_pooled`` copies
every process's values once, into one float64 array (8 bytes a value), and sorts that copy in
place; ``mean_pooled`` reads the lists where they are. So a summary costs one copy of one list
at a time, whatever the number of processes.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from energy_ledger.models.samples import Samples

Values = Sequence[float] | NDArray[np.float64] | Any
"""A list, an ``array('d')``, a ``Samples`` or a numpy array of floats."""


def _copy_into(out: NDArray[np.float64], values: Values) -> None:
    """Copy non-empty ``values`` into ``out`` (as long), from their buffer when they have one."""
    if isinstance(values, Samples):
        view = values.memoryview()
        try:
            out[:] = np.frombuffer(view, dtype=np.float64)
        finally:
            view.release()  # the fold may append to the array again
    elif isinstance(values, array) and values.typecode == "d":
        out[:] = np.frombuffer(values, dtype=np.float64)
    else:
        out[:] = np.asarray(values, dtype=np.float64)


def pooled(parts: Iterable[Values]) -> NDArray[np.float64]:
    """Every part's values, in order, in one new float64 array: the one copy a summary makes."""
    parts = list(parts)
    out = np.empty(sum(len(part) for part in parts), dtype=np.float64)
    start = 0
    for part in parts:
        end = start + len(part)
        if end > start:
            _copy_into(out[start:end], part)
        start = end
    return out


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


def mean_pooled(parts: Sequence[Values]) -> float | None:
    """The mean of every part's values together, ``None`` when there are none; nothing copied."""
    count = sum(len(part) for part in parts)
    if count == 0:
        return None
    return math.fsum(itertools.chain.from_iterable(parts)) / count


def summarize(values: Values) -> Summary | None:
    """Summary statistics of ``values`` (any order), or ``None`` when there are none."""
    return summarize_pooled((values,))


def summarize_pooled(parts: Iterable[Values]) -> Summary | None:
    """Summary statistics of every part's values together (``pooled``), ``None`` without any."""
    ordered = pooled(parts)
    if ordered.size == 0:
        return None
    ordered.sort()  # our own copy: sorted in place, no second one
    return Summary(
        # fsum is exactly rounded, so the sum over the sorted copy is the sum in any order;
        # a memoryview yields Python floats one at a time, where ``tolist`` would hold them all.
        mean=math.fsum(ordered.data) / ordered.size,
        median=percentile_sorted(ordered, 50.0),
        p95=percentile_sorted(ordered, 95.0),
        p99=percentile_sorted(ordered, 99.0),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        count=int(ordered.size),
    )
