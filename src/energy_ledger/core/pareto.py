"""The Pareto frontier of experiments that trade latency against energy (pure).

Lower is better on both axes (latency in ms, energy in J per output token). A point is on the
frontier when no other point is at least as good on both axes and strictly better on one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, ordered by the first coordinate.

    Points with a NaN or infinite coordinate take no part. Equal points are all kept (none
    dominates another). O(n log n): sort by x then y, and keep each point whose y is below
    every y seen at a smaller x.
    """
    order = sorted(
        (i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)),
        key=lambda i: (points[i][0], points[i][1]),
    )
    front: list[int] = []
    best_y = math.inf
    last: tuple[float, float] | None = None
    for i in order:
        point = points[i]
        if point == last:
            front.append(i)  # a duplicate of a frontier point is not dominated by it
        elif point[1] < best_y:
            front.append(i)
            best_y = point[1]
            last = point
    return front


__all__ = ["pareto_front"]
