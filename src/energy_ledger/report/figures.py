"""The report's figures, drawn with matplotlib from the page views, as SVG text (and PNG bytes).

``experiment_figures`` draws an ``ExperimentView`` (power over time, energy per GPU, latency
histograms); ``comparison_figures`` draws a ``ComparisonView`` (latency/energy Pareto plots and
one scatter per varying parameter). Nothing here computes a page number: the values come from
the views, and the percentile lines of a histogram are the result's own figures where it has
them, so a figure never disagrees with the table next to it.

Three properties matter to the pages that inline the SVG, and each has its reason:

* **No global state.** Figures are ``matplotlib.figure.Figure`` objects saved directly, never
  ``pyplot``, so drawing leaves no open figures behind. The rc settings apply only inside
  ``_style``, which starts from matplotlib's defaults so that a user's ``matplotlibrc`` cannot
  change the bytes (``rc_context`` is process-global while it is open: draw from one thread).
* **Same view, same bytes.** No dates or version strings are written, and the ids matplotlib
  hashes (clip paths, markers) are salted with the figure's name: deterministic, and distinct
  between the figures of one page, so an inlined figure never picks up another's definition.
* **Inline-ready.** The text starts at ``<svg``, references nothing outside itself, scales with
  its container (``width="100%"``, no fixed height), and carries ``id``s only where tests and
  styles need them (``set_gid``); matplotlib's numbered group ids, which would repeat between
  the figures of a page, are dropped.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.style
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import NDArray

from energy_ledger.report.model import (
    ExperimentView,
    PowerSeries,
    Span,
)
from energy_ledger.report.svgtext import inline_ready

Floats = NDArray[np.float64]

PNG_DPI = 100
WIDTH_IN = 8.0
GPU_HEIGHT_IN = 2.2
"""Height of one GPU's power subplot while the stack fits ``TIMELINE_MAX_HEIGHT_IN``."""
TIMELINE_MAX_HEIGHT_IN = 12.0
MIN_GPU_HEIGHT_IN = 1.0
"""Below this a subplot is unreadable, so past 12 GPUs the figure grows instead."""
HIST_SIZE_IN = (5.0, 3.0)
MAX_BINS = 60
"""Histogram bins at most: the SVG holds one path per non-empty bin, whatever the sample count."""
TAIL_QUANTILE = 99.5
"""A histogram is cut here when the values beyond it span more than everything below it."""
THROTTLE_GAP_FRACTION = 1e-3
"""Throttle spans closer than this share of the time axis are drawn as one (sub-pixel gaps)."""

PHASE_COLOURS = {"baseline": "#dcdcdc", "warm-up": "#fde5b8", "measured window": "#d5ecd0"}
EXTRA_PHASE_COLOURS = ("#d4e4f7", "#f3d5e8", "#e5dcf3")
"""For phase names the timeline might add later, in order of first appearance."""
THROTTLE_COLOUR = "#d62728"
THROTTLE_BAND = (0.9, 1.0)
"""Where throttling is marked, as fractions of a subplot's height: above the highest power."""
LINE_COLOUR = "#1f5f9f"
PCTS = ("p50", "p95", "p99")
PERCENTILE_STYLES = (("p50", "#333333", "-"), ("p95", "#d95f02", "--"), ("p99", "#7570b3", ":"))

HISTOGRAMS = (
    # figure name, distribution key, figure-key prefix, title, x label, y label
    ("latency-e2e", "e2e_latency_ms", "e2e_latency", "End-to-end latency", "end-to-end latency",
     "requests"),
    ("latency-ttft", "ttft_ms", "ttft", "Time to first token", "time to first token", "requests"),
    ("latency-itl", "itl_ms", "itl", "Inter-token latency", "inter-token latency", "intervals"),
)  # fmt: skip
_SVG_METADATA = ("Date", "Creator", "Format", "Type")
"""What matplotlib would write into an SVG's <metadata> (a date, its version, a URL): none."""


@dataclass(frozen=True, slots=True)
class FigureOut:
    """One drawn figure.

    Attributes:
        name: a file-safe slug, unique on its page ("power-timeline").
        title: the caption.
        svg: an ``<svg>`` element to inline into HTML (no XML declaration, no DOCTYPE).
        png: the same figure as PNG, when asked for.
    """

    name: str
    title: str
    svg: str
    png: bytes | None


@contextmanager
def _style(name: str) -> Iterator[None]:
    """Matplotlib's defaults plus the house settings, whatever the user's ``matplotlibrc``.

    The rc dict is written in the call so that the type checker checks its keys.
    """
    with (
        mpl.style.context("default"),
        mpl.rc_context(
            {
                "svg.fonttype": "none",
                "svg.image_inline": True,
                "font.family": "sans-serif",
                "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
                "font.size": 9.0,
                "axes.titlesize": 9.0,
                "axes.labelsize": 9.0,
                "legend.fontsize": 8.0,
                "xtick.labelsize": 8.0,
                "ytick.labelsize": 8.0,
                "path.simplify": True,
                "svg.hashsalt": f"energy-ledger:{name}",
            }
        ),
    ):
        yield


def draw_figure(
    name: str,
    title: str,
    size_in: tuple[float, float],
    png: bool,
    draw: Callable[[Figure], None],
) -> FigureOut:
    """Draw a figure with ``draw`` under the house rc settings and save it."""
    with _style(name):
        fig = Figure(figsize=size_in, layout="constrained")
        draw(fig)
        svg = io.BytesIO()
        fig.savefig(svg, format="svg", metadata={k: None for k in _SVG_METADATA})
        png_bytes = None
        if png:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
            png_bytes = buf.getvalue()
    return FigureOut(name, title, inline_ready(svg.getvalue().decode("utf-8")), png_bytes)


def message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#555555")


def blank(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    message(ax, text)


# --- experiment page ----------------------------------------------------------------------


def experiment_figures(view: ExperimentView, *, png: bool = False) -> list[FigureOut]:
    """The experiment page's figures, in page order.

    ``power-timeline``, ``energy-per-gpu``, then ``latency-e2e``, ``latency-ttft`` and
    ``latency-itl`` for each distribution that holds values (the page says which are missing).
    """
    out = [_power_timeline(view, png), _energy_per_gpu(view, png)]
    for spec in HISTOGRAMS:
        values = view.distributions.get(spec[1])
        if values is not None:
            values = values[np.isfinite(values)]
            if len(values):
                out.append(_histogram(view, spec, values, png))
    return out


def _timeline_height_in(gpus: int) -> float:
    if gpus <= 1:
        return GPU_HEIGHT_IN + 0.6
    per = max(MIN_GPU_HEIGHT_IN, min(GPU_HEIGHT_IN, TIMELINE_MAX_HEIGHT_IN / gpus))
    return per * gpus + 0.6


def _phase_colours(view: ExperimentView) -> dict[str, str]:
    colours = dict(PHASE_COLOURS)
    extra = iter(EXTRA_PHASE_COLOURS * (1 + len(view.series)))
    for s in view.series:
        for span in s.phases:
            if span.name not in colours:
                colours[span.name] = next(extra)
    return colours


def merge_spans(spans: Sequence[Span], gap_sec: float) -> list[tuple[float, float]]:
    """The spans as (start, end), sorted, with those less than ``gap_sec`` apart joined."""
    out: list[tuple[float, float]] = []
    for s in sorted(spans, key=lambda s: s.start_sec):
        if out and s.start_sec - out[-1][1] < gap_sec:
            out[-1] = (out[-1][0], max(out[-1][1], s.end_sec))
        else:
            out.append((s.start_sec, s.end_sec))
    return out


def _power_timeline(view: ExperimentView, png: bool) -> FigureOut:
    series = view.series
    colours = _phase_colours(view)

    def draw(fig: Figure) -> None:
        if not series:
            blank(fig, "no samples")
            return
        axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        edges = [t for s in series for t in _series_edges(s)]
        gap_sec = (max(edges) - min(edges)) * THROTTLE_GAP_FRACTION if edges else 0.0
        seen: list[str] = []
        for i, (ax, s) in enumerate(zip(axes, series, strict=True)):
            for span in s.phases:
                ax.axvspan(span.start_sec, span.end_sec, color=colours[span.name], lw=0, zorder=0)
                if span.name not in seen:
                    seen.append(span.name)
            if len(s.t_sec):
                (line,) = ax.plot(s.t_sec, s.power_w, color=LINE_COLOUR, lw=0.8)
                line.set_gid(f"power-{i}")
                top_w = max(float(np.max(s.power_w)), 1.0)
                ax.set_ylim(0.0, top_w / THROTTLE_BAND[0])
            else:
                message(ax, "no power samples")
            bands = merge_spans(s.throttled, gap_sec)
            lo, hi = THROTTLE_BAND
            if bands:
                ax.add_collection(
                    PolyCollection(
                        [[(a, lo), (b, lo), (b, hi), (a, hi)] for a, b in bands],
                        transform=ax.get_xaxis_transform(),
                        facecolors=THROTTLE_COLOUR,
                        edgecolors=THROTTLE_COLOUR,
                        linewidths=0.3,
                        gid=f"throttled-{i}",
                    ),
                    autolim=False,
                )
            ax.set_title(_series_title(s), loc="left")
            ax.set_ylabel("power (W)")
        axes[-1].set_xlabel("time since the first event (s)")
        handles: list[Artist] = [Patch(color=colours[name], label=name) for name in seen]
        handles.append(Patch(color=THROTTLE_COLOUR, label="throttled"))
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)

    size = (WIDTH_IN, _timeline_height_in(len(series)))
    return draw_figure("power-timeline", "Power over time, per GPU", size, png, draw)


def _series_edges(s: PowerSeries) -> list[float]:
    out = [x for span in (*s.phases, *s.throttled) for x in (span.start_sec, span.end_sec)]
    if len(s.t_sec):
        out += [float(s.t_sec[0]), float(s.t_sec[-1])]
    return out


def _series_title(s: PowerSeries) -> str:
    who = "process" if len(s.process_indices) == 1 else "processes"
    indices = ", ".join(str(i) for i in s.process_indices)
    return f"{s.label} · {who} {indices} · {s.samples:,} samples"


def _energy_per_gpu(view: ExperimentView, png: bool) -> FigureOut:
    gpus = view.gpus

    def draw(fig: Figure) -> None:
        if not gpus:
            blank(fig, "no GPU energy")
            return
        ax = fig.add_subplot()
        x = np.arange(len(gpus), dtype=np.float64)
        width = 0.38
        raw = ax.bar(x - width / 2, [g.energy_j for g in gpus], width, label="raw", color="C0")
        for i, bar in enumerate(raw.patches):
            bar.set_gid(f"bar-raw-{i}")
        known = [i for i, g in enumerate(gpus) if g.adjusted_j is not None]
        adjusted = ax.bar(
            x[known] + width / 2,
            [gpus[i].adjusted_j or 0.0 for i in known],
            width,
            label="above idle baseline",
            color="C2",
        )
        for i, bar in zip(known, adjusted.patches, strict=True):
            bar.set_gid(f"bar-adjusted-{i}")
        if len(gpus) <= 8:
            for container in (raw, adjusted):
                ax.bar_label(container, fmt="{:,.0f}", fontsize=7, padding=2)
        ax.set_xticks(x, [g.label for g in gpus])
        if len(gpus) > 3:
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        ax.set_ylabel("energy (J)")
        ax.margins(y=0.12)
        ax.legend(loc="upper right", frameon=False, ncols=2)

    size = (min(WIDTH_IN, max(5.0, 1.1 * len(gpus) + 2.0)), 3.6)
    return draw_figure(
        "energy-per-gpu", "Energy per GPU: raw and above the idle baseline", size, png, draw
    )


def histogram_counts(values: Floats) -> tuple[NDArray[np.int64], Floats, int]:
    """The bins a latency histogram draws: (counts, edges, values beyond the last edge).

    Rice's rule gives the bin count, capped at ``MAX_BINS``. A long tail would squeeze every
    value into the first bins, so when the values above the ``TAIL_QUANTILE`` spread wider than
    all the others, the bins stop there and the figure says how many it left out.
    """
    lo, hi = float(values.min()), float(values.max())
    over = 0
    cut = float(np.percentile(values, TAIL_QUANTILE, method="linear"))
    if hi - cut > cut - lo and cut > lo:
        over = int(np.count_nonzero(values > cut))
        hi = cut
    bins = max(1, min(MAX_BINS, math.ceil(2.0 * len(values) ** (1 / 3))))
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return counts.astype(np.int64), edges.astype(np.float64), over


def _histogram(
    view: ExperimentView, spec: tuple[str, str, str, str, str, str], values: Floats, png: bool
) -> FigureOut:
    name, _, prefix, title, xlabel, ylabel = spec
    known = {f.key: f.value for f in view.figures}
    counts, edges, over = histogram_counts(values)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        filled = np.flatnonzero(counts)
        ax.add_collection(
            PolyCollection(
                [
                    [(edges[j], 0), (edges[j + 1], 0), (edges[j + 1], c), (edges[j], c)]
                    for j, c in zip(filled.tolist(), counts[filled].tolist(), strict=True)
                ],
                facecolors="#7fa7d1",
                edgecolors="#ffffff",
                linewidths=0.3,
                gid=f"hist-{name}",
            )
        )
        marks = _percentiles(values, {label: known.get(f"{prefix}_{label}_ms") for label in PCTS})
        ax.set_xlim(float(edges[0]), max(float(edges[-1]), *marks.values()))
        ax.set_ylim(0.0, float(counts.max()) * 1.08)
        for label, colour, dashes in PERCENTILE_STYLES:
            value = marks[label]
            line = ax.axvline(
                value, color=colour, ls=dashes, lw=1.0, label=f"{label} {value:.3g} ms"
            )
            line.set_gid(f"{name}-{label}")
        ax.set_xlabel(f"{xlabel} (ms)" + (f"\n{_tail_note(values, edges, over)}" if over else ""))
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right", frameon=False)

    count = f"{len(values):,} {ylabel}"
    return draw_figure(name, f"{title} ({count})", HIST_SIZE_IN, png, draw)


def _percentiles(values: Floats, given: dict[str, float | int | None]) -> dict[str, float]:
    """p50/p95/p99: the result's own figure where it has one, else computed from ``values``."""
    return {
        label: float(v)
        if (v := given.get(label)) is not None
        else float(np.percentile(values, float(label[1:]), method="linear"))
        for label in PCTS
    }


def _tail_note(values: Floats, edges: Floats, over: int) -> str:
    what = "value" if over == 1 else "values"
    return f"{over:,} {what} above {edges[-1]:.3g} ms not drawn (max {values.max():.3g} ms)"


__all__ = [
    "FigureOut",
    "blank",
    "draw_figure",
    "experiment_figures",
    "histogram_counts",
    "merge_spans",
    "message",
]
