"""Descriptive statistics computed once over concatenated raw samples (pure).

Percentiles use linear interpolation between closest ranks, numpy's default ("linear", type 7 of
Hyndman and Fan): for sorted values ``x[0..n-1]`` and ``q`` in [0, 100], ``h = (n - 1) * q / 100``
and the result is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.

Order statistics are selected, not sorted: an experiment's latency lists hold a value per
request (millions for a long run), and a sorted copy of one doubled its memory at the peak of
a pipeline. ``summarize_pooled`` counts the values into bins in one pass and sorts only the
few values of the bins that hold a wanted rank in a second (``_order_statistics``): the same
bits as a full sort, in memory of a chunk, and a test compares the two on random values.
Means use ``math.fsum``, which is exactly rounded and so independent of the order of the
values: replaying processes in another order cannot change a bit of the result.

Memory: the processes' lists are never joined. ``summarize_pooled`` and ``mean_pooled`` read
them where they are, a chunk (``SELECT_CHUNK`` values) copied at a time.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from energy_ledger.models.samples import Samples

Values = Sequence[float] | NDArray[np.float64] | Any
"""A list, an ``array('d')``, a ``Samples`` or a numpy array of floats."""


def _copy_into(out: NDArray[np.float64], values: Values, start: int = 0) -> None:
    """Copy ``values[start:start + len(out)]`` into ``out`` (from their buffer if they have one)."""
    end = start + len(out)
    if isinstance(values, Samples):
        view = values.memoryview()
        try:
            out[:] = np.frombuffer(view, dtype=np.float64)[start:end]
        finally:
            view.release()  # the fold may append to the array again
    elif isinstance(values, array) and values.typecode == "d":
        out[:] = np.frombuffer(values, dtype=np.float64)[start:end]
    else:
        out[:] = np.asarray(values[start:end], dtype=np.float64)


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
    return _percentile(values.__getitem__, len(values), q)


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
    """Summary statistics of every part's values together, ``None`` without any.

    Nothing is copied whole: the order statistics the percentiles need are selected exactly
    (``_order_statistics``), the mean is ``math.fsum`` over the parts where they are.
    """
    parts = [part for part in parts if len(part)]
    n = sum(len(part) for part in parts)
    if n == 0:
        return None
    low, high = math.inf, -math.inf
    for chunk in _chunks(parts):
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    ranks = sorted({r for q in _QUANTILES for r in _ranks(n, q)})
    at = _order_statistics(parts, ranks, low, high)
    return Summary(
        mean=math.fsum(itertools.chain.from_iterable(parts)) / n,
        median=_percentile(at.__getitem__, n, 50.0),
        p95=_percentile(at.__getitem__, n, 95.0),
        p99=_percentile(at.__getitem__, n, 99.0),
        min=low,
        max=high,
        count=n,
    )


_QUANTILES = (50.0, 95.0, 99.0)
SELECT_CHUNK = 1 << 16
"""Values looked at together while selecting (512 KB of float64, and as much of bin numbers)."""
SELECT_BINS = 1 << 14
"""Bins of the counting pass: a bin holds about ``n / SELECT_BINS`` values of a smooth
distribution, and only the bins holding a wanted rank are gathered and sorted."""


def _ranks(n: int, q: float) -> tuple[int, ...]:
    """The 0-based ranks the ``q``-th percentile of ``n`` values reads (one or two)."""
    h = (n - 1) * (q / 100.0)
    lo = math.floor(h)
    return (lo,) if h == lo or lo + 1 >= n else (lo, lo + 1)


def _chunks(parts: Sequence[Values]) -> Iterator[NDArray[np.float64]]:
    """Every part's values as float64 arrays of at most ``SELECT_CHUNK``, copied a chunk at a
    time (a part's buffer is never held while the caller works on a chunk)."""
    for part in parts:
        for start in range(0, len(part), SELECT_CHUNK):
            out = np.empty(min(SELECT_CHUNK, len(part) - start), dtype=np.float64)
            _copy_into(out, part, start)
            yield out


def _order_statistics(
    parts: Sequence[Values], ranks: Sequence[int], low: float, high: float
) -> dict[int, float]:
    """The values of 0-based ``ranks`` in the sorted pooled values, exactly, in O(chunk) memory.

    A counting pass puts each value in one of ``SELECT_BINS`` bins by a monotone function
    (``floor((x - low) * scale)``: subtraction, multiplication by a positive number and floor
    never reverse an order, even rounded), so all values of a lower bin are <= those of a
    higher one and the cumulative counts say which bin holds each rank; a second pass gathers
    the values of those bins only, which are sorted. Where no finite scale exists (all values
    equal, or a range too wide or too narrow for floats), every value falls in one bin: the
    gathered bin is then the whole copy the plain sort would make.
    """
    span = high - low
    scale = SELECT_BINS / span if span > 0 else 0.0
    if not math.isfinite(scale):
        scale = 0.0

    def bins_of(chunk: NDArray[np.float64]) -> NDArray[np.int64]:
        if scale == 0.0:  # one bin (``x - low`` could even overflow here)
            return np.zeros(len(chunk), dtype=np.int64)
        shifted = chunk - low
        shifted *= scale
        of = shifted.astype(np.int64)
        np.minimum(of, SELECT_BINS - 1, out=of)
        return of

    counts = np.zeros(SELECT_BINS, dtype=np.int64)
    for chunk in _chunks(parts):
        counts += np.bincount(bins_of(chunk), minlength=SELECT_BINS)
    before = np.concatenate(([0], np.cumsum(counts)))  # values in the bins below each bin
    where = {r: int(np.searchsorted(before, r, side="right")) - 1 for r in ranks}
    wanted = sorted(set(where.values()))
    gathered: dict[int, list[NDArray[np.float64]]] = {b: [] for b in wanted}
    for chunk in _chunks(parts):
        of = bins_of(chunk)
        for b in wanted:
            gathered[b].append(chunk[of == b])
    ordered = {b: np.sort(np.concatenate(gathered[b])) for b in wanted}
    return {r: float(ordered[b][r - int(before[b])]) for r, b in where.items()}


def _percentile(value_at: Callable[[int], float], n: int, q: float) -> float:
    """The ``q``-th percentile of ``n`` values, ``value_at(i)`` being the ``i``-th smallest."""
    h = (n - 1) * (q / 100.0)
    lo = math.floor(h)
    frac = h - lo
    if frac == 0.0 or lo + 1 >= n:
        return float(value_at(lo))
    a = float(value_at(lo))
    b = float(value_at(lo + 1))
    return a + frac * (b - a)


_UNIT_SHIFT = 1074
"""Every finite float is an integer times ``2 ** -1074`` (the smallest subnormal)."""
_EXACT_CHUNK = 1 << 14
"""Values added together by ``ExactSum.add`` (its temporaries are some 40 bytes a value); the
halves of their integer mantissas (< 2^27) sum exactly in float64 up to 2^26 of them."""


class ExactSum:
    """The exact sum of the floats added so far, and their count: a mean without the values.

    The sum is one Python integer in units of ``2 ** -1074``, so adding is exact and
    associative: adding in any batches, or merging sums of parts, gives the same integer, and
    ``total()`` rounds it once, correctly, to the float ``math.fsum`` gives for the same
    values. Adding is vectorised (``numpy.frexp`` splits each value into an integer mantissa
    and an exponent; mantissas are summed per exponent).
    """

    __slots__ = ("count", "units")

    def __init__(self, units: int = 0, count: int = 0) -> None:
        self.units = units
        self.count = count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExactSum):
            return NotImplemented
        return self.units == other.units and self.count == other.count

    def __repr__(self) -> str:
        return f"ExactSum(total={self.total()!r}, count={self.count})"

    def add(self, values: Values) -> None:
        """Add finite ``values`` (a list, an ``array('d')``, a ``Samples`` or numpy array)."""
        n = len(values)
        for start in range(0, n, _EXACT_CHUNK):
            chunk = np.empty(min(_EXACT_CHUNK, n - start), dtype=np.float64)
            _copy_into(chunk, values, start)
            self._add_chunk(chunk)
        self.count += n

    def _add_chunk(self, chunk: NDArray[np.float64]) -> None:
        mantissa, exponent = np.frexp(chunk)  # chunk = mantissa * 2**exponent, |mantissa| < 1
        whole = (mantissa * 2.0**53).astype(np.int64)  # exact: 53 bits
        shifts, at = np.unique(exponent.astype(np.int64) - 53 + _UNIT_SHIFT, return_inverse=True)
        high = np.bincount(at, weights=(whole >> 26).astype(np.float64))
        low = np.bincount(at, weights=(whole & ((1 << 26) - 1)).astype(np.float64))
        for shift, h, lo in zip(shifts.tolist(), high.tolist(), low.tolist(), strict=True):
            total = (int(h) << 26) + int(lo)
            # A subnormal's mantissa has trailing zero bits: a negative shift drops only those.
            self.units += total << shift if shift >= 0 else total >> -shift

    def merged(self, other: ExactSum) -> ExactSum:
        """The sum of both (neither is changed)."""
        return ExactSum(self.units + other.units, self.count + other.count)

    def total(self) -> float:
        """The sum, correctly rounded (``OverflowError`` beyond the largest float, as fsum)."""
        return self.units / (1 << _UNIT_SHIFT)

    def mean(self) -> float | None:
        """The mean of the values, ``None`` when there are none."""
        return self.total() / self.count if self.count else None
