"""Fewer points for a picture, the same shape (pure).

A 1M-event log holds some 100,000 power samples per GPU; a figure a few hundred pixels wide shows
no more than one value per pixel column. ``minmax_downsample`` keeps, for each of ``buckets``
equal spans of time, the first, lowest, highest and last point, so every peak and dip of the
series survives and a line drawn through the points covers the same pixels. Only figures use it:
every number on a page is computed from the full data.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]


def minmax_downsample(t: Floats, y: Floats, buckets: int) -> tuple[Floats, Floats]:
    """At most ``4 * buckets`` points of ``(t, y)`` that keep each bucket's extremes.

    ``t`` must be non-decreasing (a log's times are). NaN values of ``y`` are dropped first.
    The points returned are a subsequence of the input, in time order; a series short enough
    is returned whole.
    """
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    keep = ~np.isnan(y)
    t, y = t[keep], y[keep]
    n = len(t)
    if n <= 4 * buckets:
        return t.copy(), y.copy()
    span = float(t[-1] - t[0])
    if span <= 0.0:
        edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    else:
        cut = t[0] + span * np.arange(1, buckets) / buckets
        edges = np.concatenate(([0], np.searchsorted(t, cut, side="left"), [n]))
    chosen: list[int] = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if hi <= lo:
            continue
        part = y[lo:hi]
        chosen += [lo, lo + int(np.argmin(part)), lo + int(np.argmax(part)), hi - 1]
    index = np.unique(np.asarray(chosen, dtype=np.int64))
    return t[index], y[index]


__all__ = ["minmax_downsample"]
