"""The latency/energy Pareto frontier, against a brute-force dominance check written here."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.pareto import pareto_front

LAWS = settings(max_examples=200, deadline=None)

# Few distinct values, so that ties on one axis and exact duplicates are common.
coordinate = st.sampled_from([0.0, -0.0, 1.0, 1.5, 2.0, 3.0, 10.0, 1e300, math.nan, math.inf])
points = st.lists(st.tuples(coordinate, coordinate), max_size=14)


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` is at least as good as ``b`` on both axes and strictly better on one."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def _brute_front(pts: list[tuple[float, float]]) -> set[int]:
    """Indices of the finite points that no other finite point dominates (O(n^2))."""
    finite = [i for i, (x, y) in enumerate(pts) if math.isfinite(x) and math.isfinite(y)]
    return {i for i in finite if not any(_dominates(pts[j], pts[i]) for j in finite if j != i)}


class TestParetoLaws:
    """Laws of ``pareto_front`` on random point sets."""

    @LAWS
    @given(pts=points)
    def test_exactly_the_non_dominated_points(self, pts: list[tuple[float, float]]) -> None:
        """The result is the brute-force frontier, each index once."""
        front = pareto_front(pts)
        assert len(front) == len(set(front))
        assert set(front) == _brute_front(pts)

    @LAWS
    @given(pts=points)
    def test_ordered_by_latency(self, pts: list[tuple[float, float]]) -> None:
        """The frontier is listed by its first coordinate, lowest first."""
        xs = [pts[i][0] for i in pareto_front(pts)]
        assert xs == sorted(xs)

    @LAWS
    @given(pts=points, data=st.data())
    def test_permutation_invariant(
        self, pts: list[tuple[float, float]], data: st.DataObject
    ) -> None:
        """Shuffling the input moves the indices, not the set of frontier points."""
        perm = data.draw(st.permutations(range(len(pts))))
        shuffled = [pts[k] for k in perm]
        assert {perm[j] for j in pareto_front(shuffled)} == set(pareto_front(pts))

    @LAWS
    @given(pts=points)
    def test_non_finite_points_take_no_part(self, pts: list[tuple[float, float]]) -> None:
        """A NaN or infinite coordinate keeps a point off the frontier and changes no other."""
        front = pareto_front(pts)
        assert all(math.isfinite(pts[i][0]) and math.isfinite(pts[i][1]) for i in front)
        kept = [i for i, (x, y) in enumerate(pts) if math.isfinite(x) and math.isfinite(y)]
        assert [kept[j] for j in pareto_front([pts[i] for i in kept])] == front


class TestParetoCases:
    """Hand-worked frontiers."""

    @pytest.mark.parametrize(
        ("pts", "expected"),
        [
            ([], []),
            ([(1.0, 1.0)], [0]),
            ([(3.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 3.0)], [1, 2, 0]),
            ([(1.0, 2.0), (1.0, 2.0), (1.0, 2.0)], [0, 1, 2]),  # duplicates all kept
            ([(1.0, 2.0), (1.0, 3.0)], [0]),  # same latency, more energy: dominated
            ([(1.0, 2.0), (2.0, 2.0)], [0]),  # same energy, more latency: dominated
            ([(2.0, 5.0), (2.0, 5.0), (1.0, 1.0)], [2]),  # dominated duplicates both go
            ([(math.nan, 0.0), (0.0, math.inf), (5.0, 5.0)], [2]),
            ([(0.0, 1.0), (-0.0, 1.0)], [0, 1]),  # -0.0 equals 0.0
        ],
    )
    def test_frontier(self, pts: list[tuple[float, float]], expected: list[int]) -> None:
        """Worked out by hand from the dominance rule."""
        assert pareto_front(pts) == expected
