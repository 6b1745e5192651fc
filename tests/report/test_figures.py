"""Tests of ``report.figures``: the figures of views built from simulated experiments."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pytest

import energy_ledger.report.figures as figs
import energy_ledger.report.scatter as scatter
from energy_ledger.core.replay import Observer
from energy_ledger.core.timeline import TimelineBuilder
from energy_ledger.pipeline import replay_root
from energy_ledger.report.digest import decode_digest
from energy_ledger.report.model import (
    ComparisonView,
    ExperimentView,
    KeyFigure,
    Span,
    comparison_row,
    comparison_view,
    experiment_view,
)
from energy_ledger.report.svgtext import compact_path
from energy_ledger.simulate import simulate
from energy_ledger.store.reader import scan_experiment

SVG = "{http://www.w3.org/2000/svg}"
NAMESPACES = frozenset({"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"})
EXPERIMENT_NAMES = [
    "power-timeline",
    "energy-per-gpu",
    "latency-e2e",
    "latency-ttft",
    "latency-itl",
]
PROCESSES = 4


def parse(svg: str) -> ET.Element:
    """The SVG element tree (raises on malformed text)."""
    return ET.fromstring(svg)


def ids(svg: str) -> list[str]:
    """Every ``id`` of an SVG, in document order."""
    return [i for el in parse(svg).iter() if (i := el.get("id")) is not None]


def markers(svg: str, gid: str) -> int:
    """How many markers the points artist ``gid`` draws (matplotlib writes a ``<use>`` each);
    0 when the figure has no such artist."""
    found = [el for el in parse(svg).iter() if el.get("id") == gid]
    return sum(1 for el in found[0].iter() if el.tag.endswith("use")) if found else 0


def group(svg: str, gid: str) -> ET.Element:
    """The element with id ``gid`` (the test fails when there is none)."""
    found = [el for el in parse(svg).iter() if el.get("id") == gid]
    assert len(found) == 1, f"{len(found)} elements with id {gid!r}"
    return found[0]


def texts(svg: str) -> list[str]:
    """The text of every <text> element."""
    return ["".join(el.itertext()) for el in parse(svg).iter(f"{SVG}text")]


def by_name(out: list[figs.FigureOut]) -> dict[str, figs.FigureOut]:
    return {f.name: f for f in out}


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three simulated experiments of four processes, replayed."""
    root = tmp_path_factory.mktemp("figures")
    simulate(root, experiments=3, processes=PROCESSES, requests=300, seed=5)
    assert {o.state for o in replay_root(root)} == {"complete"}
    return root


@pytest.fixture(scope="module")
def sim_view(sim_root: Path) -> ExperimentView:
    """The experiment view of ``sim-0000``, timelines included, as the report builds it."""
    builders: dict[int, TimelineBuilder] = {}

    def observe(i: int) -> Observer:
        builders[i] = TimelineBuilder()
        return builders[i].feed

    scan = scan_experiment(sim_root / "raw" / "sim-0000", observe=observe)
    d = decode_digest((sim_root / "aggregated" / "sim-0000.json").read_bytes())
    return experiment_view(
        d,
        [b.build(i) for i, b in builders.items()],
        scan.summaries,
        expected_processes=PROCESSES,
        markers=(PROCESSES, PROCESSES),
    )


@pytest.fixture(scope="module")
def sim_comparison(sim_root: Path) -> ComparisonView:
    """The three experiments, with a varying batch size; one partial, one with a warning."""
    rows = []
    for n, path in enumerate(sorted((sim_root / "aggregated").glob("sim-*.json"))):
        row = comparison_row(decode_digest(path.read_bytes()))
        rows.append(
            replace(
                row,
                params={**row.params, "sampling.batch_size": float(2**n)},
                partial=n == 1,
                warnings=("short window",) if n == 2 else (),
            )
        )
    return comparison_view(rows)


@pytest.fixture(scope="module")
def drawn(sim_view: ExperimentView) -> list[figs.FigureOut]:
    """The experiment figures of ``sim_view``, drawn once for the module."""
    return figs.experiment_figures(sim_view)


@pytest.fixture(scope="module")
def drawn_comparison(sim_comparison: ComparisonView) -> list[figs.FigureOut]:
    """The comparison figures of ``sim_comparison``, drawn once for the module."""
    return scatter.comparison_figures(sim_comparison)


@pytest.fixture
def all_drawn(
    drawn: list[figs.FigureOut], drawn_comparison: list[figs.FigureOut]
) -> list[figs.FigureOut]:
    """Every figure of both pages."""
    return drawn + drawn_comparison


class TestSvgText:
    """Every figure is an <svg> element that can be inlined as it is."""

    def test_parses_as_an_svg_element(self, all_drawn: list[figs.FigureOut]) -> None:
        """The text starts at <svg (no prolog, no DOCTYPE) and is well-formed XML."""
        for fig in all_drawn:
            assert fig.svg.startswith("<svg"), fig.name
            assert "<?xml" not in fig.svg and "<!DOCTYPE" not in fig.svg
            assert parse(fig.svg).tag == f"{SVG}svg"

    def test_scales_with_its_container(self, all_drawn: list[figs.FigureOut]) -> None:
        """The root keeps its viewBox and has no fixed size in pt."""
        for fig in all_drawn:
            root = parse(fig.svg)
            assert root.get("viewBox"), fig.name
            assert root.get("width") == "100%"
            assert root.get("height") is None
            assert "pt" in (root.get("style") or "")  # the natural size, as a max-width

    def test_references_nothing_outside_itself(self, all_drawn: list[figs.FigureOut]) -> None:
        """Links point inside the document; the only URLs are the SVG namespace names."""
        for fig in all_drawn:
            for el in parse(fig.svg).iter():
                for key, value in el.attrib.items():
                    if key.endswith("href"):
                        assert value.startswith("#"), (fig.name, key, value)
                    if "url(" in value:
                        assert "url(#" in value and "url(http" not in value
            stripped = fig.svg
            for ns in NAMESPACES:
                stripped = stripped.replace(ns, "")
            assert "http" not in stripped, fig.name

    def test_ids_are_unique_on_the_experiment_page(self, drawn: list[figs.FigureOut]) -> None:
        """No id repeats within a figure nor between the figures of one page."""
        every = [i for fig in drawn for i in ids(fig.svg)]
        assert len(every) == len(set(every))

    def test_defs_differ_between_figures(self, drawn_comparison: list[figs.FigureOut]) -> None:
        """Hashed definition ids (clip paths, markers) are salted per figure."""
        seen: set[str] = set()
        for fig in drawn_comparison:
            own = {i for i in ids(fig.svg) if not i.startswith(("points-", "frontier"))}
            assert not own & seen, fig.name
            seen |= own


class TestDeterminism:
    """The same view gives the same bytes, whatever the caller's matplotlib settings."""

    def test_same_view_same_svg(
        self, sim_view: ExperimentView, drawn: list[figs.FigureOut]
    ) -> None:
        """Drawing twice gives identical SVG text."""
        assert [f.svg for f in figs.experiment_figures(sim_view)] == [f.svg for f in drawn]

    def test_user_rc_settings_change_nothing(
        self, sim_comparison: ComparisonView, drawn_comparison: list[figs.FigureOut]
    ) -> None:
        """Settings a user's matplotlibrc could hold do not reach the figures."""
        with mpl.rc_context({"lines.linewidth": 4.0, "font.size": 20.0, "svg.hashsalt": None}):
            again = scatter.comparison_figures(sim_comparison)
        assert [f.svg for f in again] == [f.svg for f in drawn_comparison]


class TestExperimentFigures:
    """The experiment page's figures from a four-GPU simulated experiment."""

    def test_names_and_order(self, drawn: list[figs.FigureOut]) -> None:
        """Power, energy, then the three latency histograms, each with a caption."""
        assert [f.name for f in drawn] == EXPERIMENT_NAMES
        assert all(f.title for f in drawn)
        assert all(f.png is None for f in drawn)

    def test_one_power_line_per_gpu(
        self, sim_view: ExperimentView, drawn: list[figs.FigureOut]
    ) -> None:
        """Each GPU's series is one line, ``power-<index>``."""
        lines = [i for i in ids(drawn[0].svg) if i.startswith("power-")]
        assert len(sim_view.gpus) == len(sim_view.series) == PROCESSES
        assert lines == [f"power-{i}" for i in range(PROCESSES)]

    def test_power_legend_and_titles(
        self, sim_view: ExperimentView, drawn: list[figs.FigureOut]
    ) -> None:
        """The legend names the phases and throttling; each subplot names its GPU."""
        words = texts(drawn[0].svg)
        phases = {span.name for s in sim_view.series for span in s.phases}
        assert phases and phases <= set(words)
        assert "throttled" in words
        for s in sim_view.series:
            assert any(w.startswith(s.label) for w in words)
        throttled = [s for s in sim_view.series if s.throttled]
        assert throttled  # the simulator throttles now and then
        for i, s in enumerate(sim_view.series):
            assert (f"throttled-{i}" in ids(drawn[0].svg)) == bool(s.throttled)

    def test_power_figure_is_small(self, drawn: list[figs.FigureOut]) -> None:
        """The simulated experiment's power figure stays far below 300 kB."""
        assert len(drawn[0].svg.encode()) < 100_000

    def test_eight_full_gpus_stay_under_300_kb(self, sim_view: ExperimentView) -> None:
        """Eight GPUs of 2,400 noisy points (the downsampler's most) still fit in 300 kB."""
        rng = np.random.default_rng(0)
        first = sim_view.series[0]
        series = tuple(
            replace(
                first,
                t_sec=np.linspace(0.0, 600.0, 2400),
                power_w=300.0 + 40.0 * rng.standard_normal(2400),
                throttled=tuple(Span("throttled", a, a + 0.1) for a in np.arange(10, 590, 0.3)),
            )
            for _ in range(8)
        )
        (power, *_) = figs.experiment_figures(replace(sim_view, series=series))
        assert len(power.svg.encode()) < 300_000
        assert len([i for i in ids(power.svg) if i.startswith("power-")]) == 8

    def test_no_series_says_so(self, sim_view: ExperimentView) -> None:
        """Without timelines the power figure is still there, saying "no samples"."""
        (power, *_) = figs.experiment_figures(replace(sim_view, series=()))
        assert "no samples" in texts(power.svg)
        assert not [i for i in ids(power.svg) if i.startswith("power-")]

    def test_series_without_points_keeps_its_phases(self, sim_view: ExperimentView) -> None:
        """A GPU without samples gets its shading and "no power samples", the others lines."""
        empty = replace(sim_view.series[1], t_sec=np.empty(0), power_w=np.empty(0))
        series = (sim_view.series[0], empty)
        (power, *_) = figs.experiment_figures(replace(sim_view, series=series))
        assert texts(power.svg).count("no power samples") == 1
        assert [i for i in ids(power.svg) if i.startswith("power-")] == ["power-0"]
        assert "baseline" in texts(power.svg)

    def test_one_bar_pair_per_gpu(
        self, sim_view: ExperimentView, drawn: list[figs.FigureOut]
    ) -> None:
        """Raw and baseline-adjusted energy: one bar each per GPU, labelled with the GPU."""
        found = ids(drawn[1].svg)
        n = len(sim_view.gpus)
        assert [i for i in found if i.startswith("bar-raw-")] == [f"bar-raw-{i}" for i in range(n)]
        assert [i for i in found if i.startswith("bar-adjusted-")] == [
            f"bar-adjusted-{i}" for i in range(n)
        ]
        words = texts(drawn[1].svg)
        assert all(g.label in words for g in sim_view.gpus)

    def test_missing_adjusted_energy_draws_no_bar(self, sim_view: ExperimentView) -> None:
        """A GPU without a baseline gets its raw bar only."""
        gpus = (replace(sim_view.gpus[0], adjusted_j=None), *sim_view.gpus[1:])
        (_, bars, *_) = figs.experiment_figures(replace(sim_view, series=(), gpus=gpus))
        adjusted = [i for i in ids(bars.svg) if i.startswith("bar-adjusted-")]
        assert "bar-adjusted-0" not in adjusted and len(adjusted) == len(gpus) - 1

    @pytest.mark.parametrize("key", ["e2e_latency_ms", "ttft_ms", "itl_ms"])
    def test_empty_distribution_has_no_histogram(self, sim_view: ExperimentView, key: str) -> None:
        """A histogram whose samples are missing is left out; the others stay in order."""
        dists = {**sim_view.distributions, key: np.empty(0)}
        view = replace(sim_view, series=(), distributions=dists)
        names = [f.name for f in figs.experiment_figures(view)]
        gone = {"e2e_latency_ms": "latency-e2e", "ttft_ms": "latency-ttft", "itl_ms": "latency-itl"}
        assert names == [n for n in EXPERIMENT_NAMES if n != gone[key]]

    def test_png_on_request(self, sim_view: ExperimentView) -> None:
        """``png=True`` adds PNG bytes to every figure; the SVG is the same as without."""
        view = replace(sim_view, series=sim_view.series[:1])
        with_png = figs.experiment_figures(view, png=True)
        assert all(f.png is not None and f.png.startswith(b"\x89PNG\r\n\x1a\n") for f in with_png)
        assert [f.svg for f in with_png] == [f.svg for f in figs.experiment_figures(view)]


def small_view(sim_view: ExperimentView, values: list[float]) -> ExperimentView:
    """``sim_view`` whose only latency samples are ``values`` (as e2e latency)."""
    empty = np.empty(0)
    dists = {"e2e_latency_ms": np.asarray(values), "ttft_ms": empty, "itl_ms": empty}
    return replace(sim_view, series=(), gpus=(), distributions=dists)


def hist_of(view: ExperimentView) -> figs.FigureOut:
    return by_name(figs.experiment_figures(view))["latency-e2e"]


class TestHistograms:
    """Histograms draw one bar per non-empty bin and mark the result's own percentiles."""

    def test_counts_cover_every_value(self, sim_view: ExperimentView) -> None:
        """The bins and the values left beyond them add up to every sample."""
        for values in sim_view.distributions.values():
            counts, edges, over = figs.histogram_counts(values)
            assert int(counts.sum()) + over == len(values)
            assert len(edges) == len(counts) + 1 <= figs.MAX_BINS + 1

    def test_one_bar_per_filled_bin(self, sim_view: ExperimentView) -> None:
        """Three clusters of values make three bars, however many bins lie between them."""
        values = [10.0] * 5 + [50.0] * 3 + [90.0, 90.0]
        bars = group(hist_of(small_view(sim_view, values)).svg, "hist-latency-e2e")
        assert len(bars.findall(f"{SVG}path")) == 3

    def test_sim_histogram_bars_match_numpy(
        self, sim_view: ExperimentView, drawn: list[figs.FigureOut]
    ) -> None:
        """The ITL figure holds one bar per bin numpy fills with the same edges."""
        values = sim_view.distributions["itl_ms"]
        _, edges, _ = figs.histogram_counts(values)
        counts, _ = np.histogram(values, bins=edges)
        bars = group(by_name(drawn)["latency-itl"].svg, "hist-latency-itl")
        assert len(bars.findall(f"{SVG}path")) == np.count_nonzero(counts)

    def test_long_tail_is_cut_and_said(self, sim_view: ExperimentView) -> None:
        """One far outlier does not squash the histogram: it is counted in a note instead."""
        values = [*np.linspace(1.0, 2.0, 999).tolist(), 1000.0]
        counts, edges, over = figs.histogram_counts(np.asarray(values))
        assert over == len(values) - int(counts.sum()) >= 1
        assert edges[-1] < 1000.0
        note = " ".join(texts(hist_of(small_view(sim_view, values)).svg))
        assert "not drawn" in note and "max 1e+03 ms" in note

    def test_percentiles_come_from_the_result(
        self, sim_view: ExperimentView, drawn: list[figs.FigureOut]
    ) -> None:
        """p50/p95/p99 lines show the result's figures, as the table beside them does."""
        figures = {f.key: f.value for f in sim_view.figures}
        words = texts(by_name(drawn)["latency-ttft"].svg)
        for p in ("p50", "p95", "p99"):
            value = figures[f"ttft_{p}_ms"]
            assert isinstance(value, float)
            assert f"{p} {value:.3g} ms" in words

    def test_percentiles_computed_when_the_result_has_none(self, sim_view: ExperimentView) -> None:
        """Without the result's figure, the line is numpy's linear percentile of the samples."""
        values = [1.0, 2.0, 3.0, 4.0, 100.0]
        view = small_view(sim_view, values)
        view = replace(
            view,
            figures=tuple(
                KeyFigure(f.key, f.label, None, f.unit) if f.key.startswith("e2e") else f
                for f in view.figures
            ),
        )
        words = texts(hist_of(view).svg)
        for p in (50, 95, 99):
            expected = float(np.percentile(values, p, method="linear"))
            assert f"p{p} {expected:.3g} ms" in words


class TestComparisonFigures:
    """Pareto plots and parameter scatters of three simulated experiments."""

    def test_names_and_order(self, drawn_comparison: list[figs.FigureOut]) -> None:
        """Both Pareto plots, then one scatter per varying parameter, slugged."""
        names = [f.name for f in drawn_comparison]
        assert names == ["pareto-p50", "pareto-p95", "param-sampling-batch-size"]

    def test_one_point_per_row_with_both_values(
        self, sim_comparison: ComparisonView, drawn_comparison: list[figs.FigureOut]
    ) -> None:
        """Every row with a latency and an energy per token is one marker, in its kind's group."""
        kinds = {
            "points-complete": sum(
                1 for r in sim_comparison.rows if not r.partial and not r.warnings
            ),
            "points-with-warnings": sum(
                1 for r in sim_comparison.rows if not r.partial and r.warnings
            ),
            "points-partial": sum(1 for r in sim_comparison.rows if r.partial and not r.warnings),
        }
        for fig in drawn_comparison:
            for gid, want in kinds.items():
                got = markers(fig.svg, gid)
                assert got == want, (fig.name, gid, got, want)

    def test_rows_missing_a_value_are_not_drawn(self, sim_comparison: ComparisonView) -> None:
        """A row without energy per token has no marker in any figure."""
        rows = list(sim_comparison.rows)
        rows[0] = replace(rows[0], figures={**rows[0].figures, "energy_per_output_token_j": None})
        view = comparison_view(rows)
        for fig in scatter.comparison_figures(view):
            drawn = sum(markers(fig.svg, i) for i in ids(fig.svg) if i.startswith("points-"))
            assert drawn == len(rows) - 1, fig.name

    def test_frontier_is_drawn_and_labelled(
        self, sim_comparison: ComparisonView, drawn_comparison: list[figs.FigureOut]
    ) -> None:
        """The frontier is one step line; its points carry their experiment ids."""
        for fig, front in zip(
            drawn_comparison[:2],
            (sim_comparison.frontier_p50, sim_comparison.frontier_p95),
            strict=True,
        ):
            assert front
            group(fig.svg, "frontier")
            words = texts(fig.svg)
            for i, row in enumerate(sim_comparison.rows):
                assert (row.experiment_id in words) == (i in front), (fig.name, i)
        assert "frontier" not in ids(drawn_comparison[2].svg)

    def test_partial_and_warned_rows_are_told_apart(
        self, drawn_comparison: list[figs.FigureOut]
    ) -> None:
        """The legend names each kind of point present."""
        for fig in drawn_comparison:
            words = texts(fig.svg)
            assert {"complete", "partial", "with warnings"} <= set(words), fig.name

    def test_axes_say_their_units(self, drawn_comparison: list[figs.FigureOut]) -> None:
        """Latency in ms, energy per output token in J."""
        words = texts(drawn_comparison[0].svg)
        assert "end-to-end latency p50 (ms)" in words
        assert "energy per output token (J)" in words

    def test_no_rows_says_so(self) -> None:
        """Without results both Pareto figures remain, saying "no results"."""
        out = scatter.comparison_figures(comparison_view([]))
        assert [f.name for f in out] == ["pareto-p50", "pareto-p95"]
        assert all("no results" in texts(f.svg) for f in out)

    def test_param_slugs_stay_unique(self, sim_comparison: ComparisonView) -> None:
        """Two parameters with the same slug get distinct figure names."""
        view = replace(sim_comparison, params=("a.b", "a_b"))
        names = [f.name for f in scatter.comparison_figures(view)]
        assert names[2:] == ["param-a-b", "param-a-b-2"]


class TestHelpers:
    """The small pure helpers."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("sampling.batch_size", "sampling-batch-size"), ("Max Tokens", "max-tokens"), ("n", "n")],
    )
    def test_slug(self, text: str, expected: str) -> None:
        """Lowercase, every character outside [a-z0-9] a dash."""
        assert scatter.slug(text) == expected

    @pytest.mark.parametrize(
        ("d", "expected"),
        [
            ("M 1.234567 2 \nL 3.06 4 \nL 5 6 \nz\n", "M 1.2 2 3.1 4 5 6 z"),
            ("M 0 0 \nC 1 1 2 2 3 3 \nL 4 4 \nL 5 5", "M 0 0 C 1 1 2 2 3 3 L 4 4 5 5"),
            ("M -0.01 10.0", "M 0 10"),
        ],
    )
    def test_compact_path(self, d: str, expected: str) -> None:
        """Coordinates lose digits below a tenth of a point; repeated L letters go."""
        assert compact_path(d) == expected

    def test_merge_spans_joins_close_ones(self) -> None:
        """Spans closer than the gap merge; far ones stay apart; order does not matter."""
        spans = [Span("throttled", 5.0, 6.0), Span("throttled", 0.0, 1.0), Span("t", 1.05, 2.0)]
        assert figs.merge_spans(spans, 0.1) == [(0.0, 2.0), (5.0, 6.0)]
