"""Min/max downsampling for figures, against buckets worked out here with exact fractions.

Times are whole seconds (with or without a UNIX-epoch offset), so that the equal spans computed
here with ``Fraction`` and any float arithmetic of the code agree on which bucket a point is in.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.downsample import minmax_downsample

LAWS = settings(max_examples=100, deadline=None)

values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, math.nan]),
)


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-decreasing whole-second times, values with some NaN, and a bucket count."""
    n = draw(st.integers(min_value=0, max_value=120))
    steps = draw(st.lists(st.integers(min_value=0, max_value=5), min_size=n, max_size=n))
    offset = draw(st.sampled_from([0, 1_700_000_000]))
    t = np.asarray(np.cumsum(steps) + offset, dtype=np.float64)
    y = np.asarray(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
    return t, y, draw(st.integers(min_value=1, max_value=12))


def _positions(t_out: np.ndarray, y_out: np.ndarray, t: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices into ``(t, y)`` that the output takes, matched in order; fails if it is not a
    subsequence."""
    out: list[int] = []
    i = 0
    for a, b in zip(t_out.tolist(), y_out.tolist(), strict=True):
        while i < len(t) and not (t[i] == a and y[i] == b):
            i += 1
        assert i < len(t), f"({a}, {b}) is not in the input after position {out[-1:]}"
        out.append(i)
        i += 1
    return out


def _bucket_of(t: np.ndarray, buckets: int) -> list[int]:
    """The bucket of each time: ``buckets`` equal spans from t[0] to t[-1], the last closed."""
    t0, t1 = Fraction(t[0]), Fraction(t[-1])
    span = t1 - t0
    return [min(int((Fraction(x) - t0) * buckets / span), buckets - 1) for x in t.tolist()]


class TestDownsampleLaws:
    """Laws of ``minmax_downsample`` on random series."""

    @LAWS
    @given(case=series())
    def test_a_subsequence_of_at_most_four_per_bucket(self, case: tuple) -> None:
        """The output is input points in input order, no NaN, at most 4 per bucket."""
        t, y, buckets = case
        t_out, y_out = minmax_downsample(t, y, buckets)
        keep = ~np.isnan(y)
        _positions(t_out, y_out, t[keep], y[keep])
        assert len(t_out) == len(y_out) <= 4 * buckets
        assert not np.isnan(y_out).any()

    @LAWS
    @given(case=series())
    def test_global_extremes_survive(self, case: tuple) -> None:
        """The lowest and highest values of the series are among the points kept."""
        t, y, buckets = case
        _, y_out = minmax_downsample(t, y, buckets)
        finite = y[~np.isnan(y)]
        if len(finite):
            assert finite.min() in y_out and finite.max() in y_out

    @LAWS
    @given(case=series())
    def test_each_buckets_extremes_and_edges_survive(self, case: tuple) -> None:
        """In every equal span of time, its first, last, lowest and highest points are kept."""
        t, y, buckets = case
        keep = ~np.isnan(y)
        t, y = t[keep], y[keep]
        t_out, y_out = minmax_downsample(t, y, buckets)
        if len(t) <= 4 * buckets or t[-1] == t[0]:
            return
        _positions(t_out, y_out, t, y)
        # Identical (t, y) points cannot be told apart: compare points, not input positions.
        where = np.concatenate((t, t_out))
        bucket = _bucket_of(where, buckets)
        into, out_of = bucket[: len(t)], bucket[len(t) :]
        for k in range(buckets):
            members = [
                (a, b) for a, b, j in zip(t.tolist(), y.tolist(), into, strict=True) if j == k
            ]
            if not members:
                continue
            kept = {
                (a, b)
                for a, b, j in zip(t_out.tolist(), y_out.tolist(), out_of, strict=True)
                if j == k
            }
            assert members[0] in kept and members[-1] in kept
            values_kept = {b for _, b in kept}
            assert min(b for _, b in members) in values_kept
            assert max(b for _, b in members) in values_kept

    @LAWS
    @given(case=series())
    def test_short_series_come_back_whole(self, case: tuple) -> None:
        """A series of at most ``4 * buckets`` non-NaN points is returned as it is, less NaN."""
        t, y, buckets = case
        keep = ~np.isnan(y)
        if keep.sum() > 4 * buckets:
            return
        t_out, y_out = minmax_downsample(t, y, buckets)
        np.testing.assert_array_equal(t_out, t[keep])
        np.testing.assert_array_equal(y_out, y[keep])


class TestDownsampleCases:
    """Hand-worked cases and argument checks."""

    @pytest.mark.parametrize("buckets", [0, -1])
    def test_fewer_than_one_bucket_is_refused(self, buckets: int) -> None:
        """``buckets`` below 1 is a ValueError, whatever the series."""
        with pytest.raises(ValueError, match="buckets"):
            minmax_downsample(np.arange(3.0), np.arange(3.0), buckets)

    def test_one_bucket_keeps_first_min_max_last(self) -> None:
        """Ten points in one bucket: first (t=0), min (t=3), max (t=6), last (t=9)."""
        t = np.arange(10.0)
        y = np.array([5.0, 4.0, 6.0, -2.0, 1.0, 3.0, 9.0, 2.0, 0.0, 4.5])
        t_out, y_out = minmax_downsample(t, y, 1)
        assert t_out.tolist() == [0.0, 3.0, 6.0, 9.0]
        assert y_out.tolist() == [5.0, -2.0, 9.0, 4.5]

    def test_nan_is_dropped_before_anything(self) -> None:
        """NaN values go first; a spike next to them survives."""
        t = np.arange(6.0)
        y = np.array([math.nan, 1.0, math.nan, 50.0, math.nan, 2.0])
        t_out, y_out = minmax_downsample(t, y, 1)
        assert t_out.tolist() == [1.0, 3.0, 5.0]
        assert y_out.tolist() == [1.0, 50.0, 2.0]

    def test_all_nan_gives_nothing(self) -> None:
        """A series with no value left is empty."""
        t_out, y_out = minmax_downsample(np.arange(3.0), np.full(3, math.nan), 1)
        assert len(t_out) == len(y_out) == 0
