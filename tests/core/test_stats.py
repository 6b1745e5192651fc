"""Tests for energy_ledger.core.stats: percentiles (numpy's linear method) and means."""

from __future__ import annotations

import itertools
import math
import statistics
from array import array
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from energy_ledger.core.stats import Summary, mean, percentile_sorted, summarize


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch that hypothesis may reuse across examples (each sets what it needs)."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


class TestPercentileSorted:
    """``percentile_sorted`` interpolates linearly between closest ranks."""

    @pytest.mark.parametrize(
        ("values", "q", "expected"),
        [
            ([7.0], 0.0, 7.0),
            ([7.0], 50.0, 7.0),
            ([7.0], 100.0, 7.0),
            ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
            ([1.0, 2.0, 3.0, 4.0], 100.0, 4.0),
            ([1.0, 2.0, 3.0, 4.0], 50.0, 2.5),  # h = 1.5
            ([1.0, 2.0, 3.0, 4.0], 25.0, 1.75),  # h = 0.75
            ([1.0, 2.0, 3.0, 4.0], 75.0, 3.25),  # h = 2.25
            ([1.0, 2.0, 3.0, 4.0, 5.0], 50.0, 3.0),  # h = 2, no interpolation
            ([1.0, 2.0, 3.0, 4.0, 5.0], 95.0, 4.8),  # h = 3.8
            ([1.0, 2.0, 3.0, 4.0, 5.0], 99.0, 4.96),  # h = 3.96
            ([0.0, 10.0], 33.0, 3.3),
            ([10.0, 20.0, 30.0], 90.0, 28.0),  # h = 1.8
            ([-5.0, 5.0], 50.0, 0.0),
            ([2.0, 2.0, 2.0, 9.0], 50.0, 2.0),
            ([1, 3], 50.0, 2.0),
        ],
    )
    def test_hand_computed_values(self, values: list[float], q: float, expected: float) -> None:
        """The result matches a value computed by hand with ``h = (n - 1) * q / 100``."""
        assert percentile_sorted(values, q) == pytest.approx(expected, rel=1e-12, abs=1e-12)

    def test_returns_a_float(self) -> None:
        """Integer inputs give a float result."""
        assert type(percentile_sorted([1, 2, 3], 50.0)) is float

    def test_no_values(self) -> None:
        """The percentile of nothing raises ``ValueError``."""
        with pytest.raises(ValueError, match="no values"):
            percentile_sorted([], 50.0)

    @pytest.mark.parametrize("q", [-0.1, 100.1, math.inf, -math.inf, math.nan])
    def test_q_out_of_range(self, q: float) -> None:
        """A percentile outside [0, 100] raises ``ValueError``."""
        with pytest.raises(ValueError, match="percentile"):
            percentile_sorted([1.0, 2.0], q)

    @settings(max_examples=200, deadline=None)
    @given(
        data=st.lists(
            st.floats(min_value=1.0, max_value=1e6, allow_nan=False), min_size=2, max_size=200
        )
    )
    def test_matches_statistics_quantiles_inclusive(self, data: list[float]) -> None:
        """Percentiles 1..99 equal ``statistics.quantiles(n=100, method="inclusive")``."""
        ordered = sorted(data)
        reference = statistics.quantiles(data, n=100, method="inclusive")
        ours = [percentile_sorted(ordered, q) for q in range(1, 100)]
        assert ours == pytest.approx(reference, rel=1e-12)


class TestMean:
    """``mean`` is the exactly rounded arithmetic mean."""

    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            ([5.0], 5.0),
            ([1.0, 2.0, 3.0, 4.0], 2.5),
            ([1, 2], 1.5),
            ([1e100, 1.0, -1e100], 1.0 / 3.0),
            ([0.1] * 10, 0.1),
        ],
    )
    def test_values(self, values: list[float], expected: float) -> None:
        """The mean matches a hand-computed value, without cancellation error."""
        assert mean(values) == pytest.approx(expected, rel=1e-15)

    def test_order_does_not_matter(self) -> None:
        """The mean of a permutation is bit-for-bit the same."""
        values = [1e16, 1.0, -1e16, 3.5, 0.25, 7e-3]
        assert mean(values) == mean(list(reversed(values))) == mean(sorted(values))

    def test_no_values(self) -> None:
        """The mean of nothing raises ``ValueError``."""
        with pytest.raises(ValueError, match="no values"):
            mean([])


class TestSummarize:
    """``summarize`` sorts once and reports the usual statistics."""

    def test_unsorted_input(self) -> None:
        """Unsorted values give the statistics of their sorted order."""
        summary = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
        assert summary == Summary(
            mean=3.0, median=3.0, p95=4.8, p99=pytest.approx(4.96), min=1.0, max=5.0, count=5
        )

    def test_no_values(self) -> None:
        """Nothing to summarise gives ``None``."""
        assert summarize([]) is None


def _textbook(values: list[float], q: float) -> float:
    """The linear-interpolation percentile of a Python-sorted list, written out again here."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * (q / 100.0)
    lo = math.floor(h)
    if h == lo or lo + 1 >= len(ordered):
        return ordered[lo]
    return ordered[lo] + (h - lo) * (ordered[lo + 1] - ordered[lo])


_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(0.0, 1e-300),  # spans too narrow for a finite scale
    st.sampled_from([0.0, -0.0, 5e-324, 1.0, 1e308, -1e308, 2.5]),
)


class TestSelectionLaws:
    """``summarize_pooled`` selects order statistics without sorting a copy; it must give the
    very bits a full sort gives, however the values fall into bins and chunks."""

    @settings(max_examples=300, deadline=None)
    @given(
        parts=st.lists(st.lists(_FLOATS, max_size=40), min_size=1, max_size=4),
        chunk=st.sampled_from([1, 3, 7, 1 << 16]),
        bins=st.sampled_from([1, 2, 5, 1 << 16]),
        kind=st.sampled_from(["list", "array", "numpy"]),
    )
    def test_equals_a_full_sort(
        self, parts: list[list[float]], chunk: int, bins: int, kind: str, monkeypatch_module: Any
    ) -> None:
        import numpy as np

        from energy_ledger.core import stats

        monkeypatch_module.setattr(stats, "SELECT_CHUNK", chunk)
        monkeypatch_module.setattr(stats, "SELECT_BINS", bins)
        make = {"list": list, "array": lambda v: array("d", v), "numpy": np.array}[kind]
        everything = [x for part in parts for x in part]
        try:
            math.fsum(everything)
        except OverflowError:  # the mean's own limit, the same as before selection
            assume(False)
        summary = stats.summarize_pooled([make(part) for part in parts])
        if not everything:
            assert summary is None
            return
        assert summary is not None
        assert summary.count == len(everything)
        assert summary.min == min(everything) and summary.max == max(everything)
        for q, got in ((50.0, summary.median), (95.0, summary.p95), (99.0, summary.p99)):
            expected = _textbook(everything, q)
            assert got == expected or (math.isnan(got) and math.isnan(expected)), q


class TestExactSumLaws:
    """``ExactSum`` is ``math.fsum`` however the values are batched or merged."""

    @settings(max_examples=300, deadline=None)
    @given(
        values=st.lists(_FLOATS, max_size=60),
        cuts=st.lists(st.integers(0, 60), max_size=4),
        chunk=st.sampled_from([1, 2, 7, 1 << 14]),
    )
    def test_any_batches_and_merges_give_fsum(
        self, values: list[float], cuts: list[int], chunk: int, monkeypatch_module: Any
    ) -> None:
        from energy_ledger.core import stats

        monkeypatch_module.setattr(stats, "_EXACT_CHUNK", chunk)
        try:
            expected = math.fsum(values)
        except OverflowError:
            assume(False)
        bounds = sorted({0, len(values), *(c for c in cuts if c < len(values))})
        parts = []
        for lo, hi in itertools.pairwise(bounds):
            part = stats.ExactSum()
            part.add(array("d", values[lo:hi]))
            parts.append(part)
        total = stats.ExactSum()
        for part in parts:
            total = total.merged(part)
        assert total.count == len(values)
        assert total.total() == expected or (expected == 0.0 and total.total() == 0.0)
        assert total.mean() == (expected / len(values) if values else None) or expected == 0.0
