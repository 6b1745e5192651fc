"""The comparison page's figures: energy per output token against latency and parameters.

``comparison_figures`` draws a ``ComparisonView``: the latency/energy Pareto plots (e2e latency
p50 and p95, the frontier as a step line, its experiments named) and one scatter per
``effective_config`` parameter that varies. Points are drawn one artist per kind (complete,
with warnings, partial), so a thousand experiments draw in a fraction of a second. The drawing
rules (style, determinism, inline-ready SVG) are ``report.figures``'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from energy_ledger.report.figures import FigureOut, blank, draw_figure, message
from energy_ledger.report.model import ComparisonRow, ComparisonView

SCATTER_SIZE_IN = (6.4, 4.2)
ENERGY_KEY = "energy_per_output_token_j"
ENERGY_LABEL = "energy per output token (J)"

# (partial, has warnings) -> legend label, marker, face colour, edge colour
POINT_STYLES: dict[tuple[bool, bool], tuple[str, str, str, str]] = {
    (False, False): ("complete", "o", "#1f77b4", "#1f77b4"),
    (False, True): ("with warnings", "^", "#ff7f0e", "#ff7f0e"),
    (True, False): ("partial", "s", "none", "#7f7f7f"),
    (True, True): ("partial, with warnings", "D", "none", "#ff7f0e"),
}


def comparison_figures(view: ComparisonView, *, png: bool = False) -> list[FigureOut]:
    """The comparison page's figures: ``pareto-p50``, ``pareto-p95``, then ``param-<slug>``.

    One parameter scatter per name in ``view.params``; two names with the same slug get
    ``-2``, ``-3`` suffixes so that every name stays unique on the page.
    """
    out = [
        _pareto(view, "p50", view.frontier_p50, png),
        _pareto(view, "p95", view.frontier_p95, png),
    ]
    taken = {f.name for f in out}
    for param in view.params:
        name = unique_name(f"param-{slug(param)}", taken)
        taken.add(name)
        out.append(_param_scatter(view, param, name, png))
    return out


def slug(text: str) -> str:
    """``text`` lowercased, with every character outside [a-z0-9] made "-"."""
    return re.sub(r"[^a-z0-9]", "-", text.lower())


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : the first one not in ``taken``."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _number(value: float | int | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _points(
    rows: Sequence[ComparisonRow], x_of: Callable[[ComparisonRow], float | int | None]
) -> dict[int, tuple[float, float]]:
    """(x, energy per output token) of every row that has both, by row index."""
    out: dict[int, tuple[float, float]] = {}
    for i, row in enumerate(rows):
        x, y = _number(x_of(row)), _number(row.figures.get(ENERGY_KEY))
        if x is not None and y is not None:
            out[i] = (x, y)
    return out


def _scatter(
    ax: Axes, rows: Sequence[ComparisonRow], points: dict[int, tuple[float, float]]
) -> list[Artist]:
    """Draw the points, one artist per kind (``points-<kind>``); return the legend handles.

    One artist a kind, not a point: a thousand experiments draw in a tenth of the time, and the
    SVG holds one marker definition per kind and a ``<use>`` per point.
    """
    by_kind: dict[tuple[bool, bool], list[tuple[float, float]]] = {}
    for i, point in points.items():
        by_kind.setdefault((rows[i].partial, bool(rows[i].warnings)), []).append(point)
    handles: list[Artist] = []
    for kind, (label, marker, face, edge) in POINT_STYLES.items():
        group = by_kind.get(kind)
        if not group:
            continue
        (drawn,) = ax.plot(
            [x for x, _ in group],
            [y for _, y in group],
            marker=marker,
            ls="none",
            ms=6,
            mfc=face,
            mec=edge,
            mew=1.2,
            zorder=3,
            label=label,
        )
        drawn.set_gid(f"points-{slug(label)}")
        handles.append(drawn)
    return handles


def _pareto(view: ComparisonView, latency: str, frontier: Sequence[int], png: bool) -> FigureOut:
    key = f"e2e_latency_{latency}_ms"
    rows = view.rows
    points = _points(rows, lambda r: r.figures.get(key))

    def draw(fig: Figure) -> None:
        if not rows:
            blank(fig, "no results")
            return
        ax = fig.add_subplot()
        if not points:
            message(ax, f"no experiment has both e2e latency {latency} and energy per token")
        handles = _scatter(ax, rows, points)
        front = [i for i in frontier if i in points]
        if front:
            (line,) = ax.step(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                where="post",
                color="#2ca02c",
                lw=1.2,
                zorder=2,
                label="Pareto frontier",
            )
            line.set_gid("frontier")
            handles.append(line)
            for i in front:
                ax.annotate(
                    rows[i].experiment_id,
                    points[i],
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=6.5,
                    color="#333333",
                )
        ax.margins(0.08)
        ax.set_xlabel(f"end-to-end latency {latency} (ms)")
        ax.set_ylabel(ENERGY_LABEL)
        if handles:
            ax.legend(handles=handles, loc="upper right", frameon=False)

    title = f"Energy per output token against end-to-end latency {latency}"
    return draw_figure(f"pareto-{latency}", title, SCATTER_SIZE_IN, png, draw)


def _param_scatter(view: ComparisonView, param: str, name: str, png: bool) -> FigureOut:
    rows = view.rows
    points = _points(rows, lambda r: r.params.get(param))

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if not points:
            message(ax, "no experiment has both values")
        handles = _scatter(ax, rows, points)
        ax.margins(0.08)
        ax.set_xlabel(param)
        ax.set_ylabel(ENERGY_LABEL)
        if handles:
            ax.legend(handles=handles, loc="upper right", frameon=False)

    return draw_figure(name, f"Energy per output token against {param}", SCATTER_SIZE_IN, png, draw)


__all__ = ["POINT_STYLES", "comparison_figures", "slug", "unique_name"]
