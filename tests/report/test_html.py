"""Tests of ``report.html``: the pages' markup from hand-built views and fake figures."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from energy_ledger.report.html import (
    FigureLike,
    display_number,
    exact_number,
    inline_svg,
    render_comparison,
    render_experiment,
)
from energy_ledger.report.model import ComparisonRow, ComparisonView, ExperimentView

MakeRow = Callable[..., ComparisonRow]

GENERATED_BY = "energy-ledger 0.0.0-test"
NAMESPACES = frozenset({"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"})
"""The only URLs a page may contain: SVG namespace names, which are never fetched."""


class Elements(HTMLParser):
    """Every start tag of a page, with its attributes, and the text of each element by id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def with_attr(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.tags if name in attrs]


def parse(page: bytes) -> Elements:
    parser = Elements()
    parser.feed(page.decode("utf-8"))
    parser.close()
    return parser


def experiment_page(view: ExperimentView, figures: Sequence[FigureLike]) -> str:
    return render_experiment(view, figures, generated_by=GENERATED_BY).decode("utf-8")


def comparison_page(view: ComparisonView, figures: Sequence[FigureLike]) -> str:
    return render_comparison(view, figures, generated_by=GENERATED_BY).decode("utf-8")


class TestNumbers:
    """The exact and displayed text of numbers."""

    @pytest.mark.parametrize(
        ("value", "text"),
        [(None, ""), (3, "3"), (0.1 + 0.2, "0.30000000000000004"), (1e-05, "1e-05"), (2.0, "2.0")],
    )
    def test_exact(self, value: float | int | None, text: str) -> None:
        """``data-value`` text is Python's repr of the float, str of the int, empty for None."""
        assert exact_number(value) == text

    def test_exact_numpy(self) -> None:
        """A numpy float gives the plain float's repr, not ``np.float64(...)``."""
        import numpy as np

        assert exact_number(np.float64(0.25)) == "0.25"
        assert exact_number(np.int64(7)) == "7"

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (None, "—"),
            (0, "0"),
            (12345, "12,345"),
            (0.0, "0"),
            (0.30000000000000004, "0.3000"),
            (12.3456, "12.35"),
            (1234.6, "1,235"),
            (123456.7, "123,457"),
            (0.00012345, "1.234e-04"),
            (float("nan"), "nan"),
        ],
    )
    def test_display(self, value: float | int | None, text: str) -> None:
        """Shown numbers keep four significant digits and separate thousands."""
        assert display_number(value) == text

    def test_inline_svg_drops_prolog(self, svg_document: str) -> None:
        """The XML declaration and DOCTYPE (which names a DTD URL) do not reach the page."""
        assert "<!DOCTYPE" in svg_document
        svg = str(inline_svg(svg_document))
        assert svg.startswith("<svg")
        assert "DOCTYPE" not in svg and "<?xml" not in svg


class TestExperimentPage:
    """The experiment page."""

    def test_key_figures_exact(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """Each key figure's ``data-value`` is the repr of its exact value (empty for None)."""
        page = render_experiment(
            sample_experiment, sample_experiment_figures, generated_by=GENERATED_BY
        )
        found = {a["data-key"]: a["data-value"] for a in parse(page).with_attr("data-key")}
        assert found == {f.key: exact_number(f.value) for f in sample_experiment.figures}
        assert found["energy_per_output_token_j"] == "0.30000000000000004"
        assert found["total_energy_j"] == "12345.678901234567"
        assert found["requests"] == "200"
        assert found["itl_p99_ms"] == ""

    def test_missing_figure_shown_as_dash(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """A key figure the result lacks shows a dash."""
        page = experiment_page(sample_experiment, sample_experiment_figures)
        assert re.search(r'data-key="itl_p99_ms" data-value="">—</span>', page)

    def test_every_figure_present(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """Every figure given is on the page, by ``data-figure`` and ``id``, with its SVG."""
        page = render_experiment(
            sample_experiment, sample_experiment_figures, generated_by=GENERATED_BY
        )
        figures = [a for a in parse(page).with_attr("data-figure")]
        assert [a["data-figure"] for a in figures] == [f.name for f in sample_experiment_figures]
        assert [a["id"] for a in figures] == [f"fig-{f.name}" for f in sample_experiment_figures]
        text = page.decode()
        assert text.count("<svg") == len(sample_experiment_figures)
        for fig in sample_experiment_figures:
            assert f"<figcaption>{fig.title}</figcaption>" in text

    def test_empty_distribution_said(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """An empty distribution is named in place of its histogram."""
        page = experiment_page(sample_experiment, sample_experiment_figures)
        assert "No TTFT samples" in page
        assert "No ITL samples" not in page

    @pytest.mark.parametrize("partial", [False, True])
    def test_partial_badge(
        self,
        sample_experiment: ExperimentView,
        sample_experiment_figures: Sequence[FigureLike],
        partial: bool,
    ) -> None:
        """The PARTIAL badge and the reason are shown exactly when the result is partial."""
        view = replace(
            sample_experiment,
            partial=partial,
            partial_reason="process 2 has no completion marker" if partial else None,
        )
        page = experiment_page(view, sample_experiment_figures)
        assert ('id="partial-badge"' in page) is partial
        assert (">PARTIAL<" in page) is partial
        assert ("process 2 has no completion marker" in page) is partial

    def test_checks_and_warnings(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """Every check is listed with its status pill, and every warning in words."""
        page = render_experiment(
            sample_experiment, sample_experiment_figures, generated_by=GENERATED_BY
        )
        statuses = [a["data-status"] for a in parse(page).with_attr("data-status")]
        assert statuses == [c.status for c in sample_experiment.checks]
        text = page.decode()
        for check in sample_experiment.checks:
            assert check.detail in text
            assert f'class="pill pill-{check.status}"' in text
        for warning in sample_experiment.warnings:
            assert f"<li>{warning}</li>" in text
        assert "validity-fail" in text

    def test_no_warnings_said(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """Without warnings the banner says there are none."""
        page = experiment_page(replace(sample_experiment, warnings=()), sample_experiment_figures)
        assert "No measurement warnings." in page

    def test_escaping(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """Text from the result is escaped: an id or warning cannot inject markup."""
        view = replace(
            sample_experiment,
            experiment_id='<script>alert("id")</script>',
            warnings=("<script>alert(1)</script> & <b>bold</b>",),
            effective_config={"model": "</pre><script>x()</script>"},
        )
        page = experiment_page(view, sample_experiment_figures)
        assert "<script>alert" not in page
        assert "<b>bold</b>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
        assert "</pre><script>x()" not in page
        assert page.count("<script>") == 1  # the page's own script, inlined

    def test_tables(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """The GPU and process tables have a row each, numbers exact in ``data-value``."""
        page = experiment_page(sample_experiment, sample_experiment_figures)
        assert page.count("<tr data-gpu=") == len(sample_experiment.gpus)
        assert 'id="gpu-table"' in page and 'id="process-table"' in page
        assert 'data-value="1001.0"' in page
        assert "counter wrapped" in page
        assert page.count('class="sortable"') == 2

    def test_config_folded(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """The configuration and the environment are in ``<details>``, as sorted JSON."""
        page = html.unescape(experiment_page(sample_experiment, sample_experiment_figures))
        assert '"batch_size": 8' in page
        assert '"python_version": "3.11"' in page
        assert page.count("<details>") == 2

    def test_footer(
        self, sample_experiment: ExperimentView, sample_experiment_figures: Sequence[FigureLike]
    ) -> None:
        """The footer names the generator and links to the comparison page beside it."""
        page = experiment_page(sample_experiment, sample_experiment_figures)
        assert f"Generated by {GENERATED_BY}." in page
        assert '<a href="report.html">' in page


class TestComparisonPage:
    """The comparison page."""

    def test_rows_and_links(
        self, sample_comparison: ComparisonView, sample_comparison_figures: Sequence[FigureLike]
    ) -> None:
        """One row per experiment; the id links to its page only when there is one."""
        page = render_comparison(
            sample_comparison, sample_comparison_figures, generated_by=GENERATED_BY
        )
        parsed = parse(page)
        rows = parsed.with_attr("data-experiment")
        assert [r["data-experiment"] for r in rows] == ["exp-0", "exp-1", "exp-2"]
        links = [a["href"] for tag, a in parsed.tags if tag == "a" and "href" in a]
        pages = [r.page for r in sample_comparison.rows if r.page is not None]
        assert [h for h in links if h.endswith(".report.html")] == pages
        assert "exp-1.report.html" not in page.decode()

    def test_link_quoted(
        self, sample_comparison_figures: Sequence[FigureLike], make_row: MakeRow
    ) -> None:
        """A page name is percent-encoded, so it cannot start another scheme or break out."""
        row = make_row(0, page='javascript:alert("x").html')
        view = ComparisonView(rows=(row,), params=(), frontier_p50=(), frontier_p95=())
        page = comparison_page(view, sample_comparison_figures)
        assert 'href="javascript%3Aalert%28%22x%22%29.html"' in page

    def test_row_marks(
        self, sample_comparison: ComparisonView, sample_comparison_figures: Sequence[FigureLike]
    ) -> None:
        """Partial rows and rows with warnings carry their classes and badges."""
        page = render_comparison(
            sample_comparison, sample_comparison_figures, generated_by=GENERATED_BY
        )
        rows = {
            r["data-experiment"]: r.get("class", "")
            for r in parse(page).with_attr("data-experiment")
        }
        assert rows == {"exp-0": "", "exp-1": "row-partial", "exp-2": "row-warn"}
        text = page.decode()
        assert ">partial</span>" in text
        assert ">2 warnings</span>" in text
        assert 'title="first warning\nsecond &lt;b&gt;warning&lt;/b&gt;"' in text
        assert "<li>second &lt;b&gt;warning&lt;/b&gt;</li>" in text

    def test_numeric_cells_exact(
        self, sample_comparison: ComparisonView, sample_comparison_figures: Sequence[FigureLike]
    ) -> None:
        """Numeric cells carry the exact numbers; parameter columns follow ``view.params``."""
        page = comparison_page(sample_comparison, sample_comparison_figures)
        assert f'data-value="{0.1 * 1 + 0.2!r}"' in page
        assert 'data-value="0.30000000000000004"' in page
        assert 'data-col="param:sampling.temperature"' in page
        assert 'data-value="0.7">0.7</td>' in page
        assert 'data-value="300.0">300</td>' in page

    def test_controls_and_figures(
        self, sample_comparison: ComparisonView, sample_comparison_figures: Sequence[FigureLike]
    ) -> None:
        """The filter, the checkboxes, the Pareto selector and every figure are there."""
        page = render_comparison(
            sample_comparison, sample_comparison_figures, generated_by=GENERATED_BY
        )
        parsed = parse(page)
        ids = {a["id"] for a in parsed.with_attr("id")}
        assert {"filter", "hide-partial", "hide-warn", "row-count", "pareto-latency"} <= ids
        figures = [a["data-figure"] for a in parsed.with_attr("data-figure")]
        assert sorted(figures) == sorted(f.name for f in sample_comparison_figures)
        options = [a["value"] for tag, a in parsed.tags if tag == "option"]
        assert options == ["p50", "p95"]
        text = page.decode()
        assert "Energy per output token against configuration parameters" in text
        assert "3 of 3 shown" in text
        assert "aggregated/bad.json: not a result file" in text

    def test_frontier_badges(
        self, sample_comparison: ComparisonView, sample_comparison_figures: Sequence[FigureLike]
    ) -> None:
        """Rows on a Pareto frontier say which."""
        page = comparison_page(sample_comparison, sample_comparison_figures)
        assert page.count(">frontier p50 p95</span>") == 1
        assert page.count(">frontier p95</span>") == 1
        assert page.count('class="badge badge-front"') == 2

    def test_no_params_no_section(self, sample_comparison: ComparisonView) -> None:
        """Without parameter figures the section is left out."""
        page = comparison_page(replace(sample_comparison, params=()), [])
        assert "against configuration parameters" not in page
        assert 'id="pareto-latency"' not in page

    def test_escaping(
        self, sample_comparison_figures: Sequence[FigureLike], make_row: MakeRow
    ) -> None:
        """An experiment id with markup is escaped in the table."""
        row = make_row(0, experiment_id="<script>bad()</script>", page=None)
        view = ComparisonView(rows=(row,), params=(), frontier_p50=(), frontier_p95=())
        page = comparison_page(view, sample_comparison_figures)
        assert "<script>bad()" not in page
        assert "&lt;script&gt;bad()&lt;/script&gt;" in page


class TestSelfContained:
    """Both pages open offline and are reproducible."""

    def pages(
        self,
        sample_experiment: ExperimentView,
        sample_experiment_figures: Sequence[FigureLike],
        sample_comparison: ComparisonView,
        sample_comparison_figures: Sequence[FigureLike],
    ) -> list[bytes]:
        return [
            render_experiment(
                sample_experiment, sample_experiment_figures, generated_by=GENERATED_BY
            ),
            render_comparison(
                sample_comparison, sample_comparison_figures, generated_by=GENERATED_BY
            ),
        ]

    def test_nothing_external(
        self,
        sample_experiment: ExperimentView,
        sample_experiment_figures: Sequence[FigureLike],
        sample_comparison: ComparisonView,
        sample_comparison_figures: Sequence[FigureLike],
    ) -> None:
        """No URL but SVG namespaces, no ``src=``, no stylesheet link, no import."""
        for page in self.pages(
            sample_experiment,
            sample_experiment_figures,
            sample_comparison,
            sample_comparison_figures,
        ):
            text = page.decode()
            urls = set(re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", text))
            assert urls <= NAMESPACES, urls - NAMESPACES
            assert not re.search(r"\bsrc\s*=", text, re.IGNORECASE)
            assert "<link" not in text
            assert "@import" not in text and "url(" not in text
            assert text.count("<style>") == 1 and text.count("<script>") == 1

    def test_deterministic(
        self,
        sample_experiment: ExperimentView,
        sample_experiment_figures: Sequence[FigureLike],
        sample_comparison: ComparisonView,
        sample_comparison_figures: Sequence[FigureLike],
    ) -> None:
        """The same views give the same bytes."""
        first = self.pages(
            sample_experiment,
            sample_experiment_figures,
            sample_comparison,
            sample_comparison_figures,
        )
        again = self.pages(
            sample_experiment,
            sample_experiment_figures,
            sample_comparison,
            sample_comparison_figures,
        )
        assert first == again

    def test_valid_structure(
        self,
        sample_experiment: ExperimentView,
        sample_experiment_figures: Sequence[FigureLike],
        sample_comparison: ComparisonView,
        sample_comparison_figures: Sequence[FigureLike],
    ) -> None:
        """Every page starts with a DOCTYPE, declares UTF-8 and has unique ids."""
        for page in self.pages(
            sample_experiment,
            sample_experiment_figures,
            sample_comparison,
            sample_comparison_figures,
        ):
            assert page.startswith(b"<!DOCTYPE html>\n")
            assert b'<meta charset="utf-8">' in page
            ids = [a["id"] for a in parse(page).with_attr("id")]
            assert len(ids) == len(set(ids))


class TestEmpty:
    """Pages of views with nothing in them still render."""

    def test_empty_comparison(self) -> None:
        """No rows: an empty table, no selector, a zero count."""
        view = ComparisonView(rows=(), params=(), frontier_p50=(), frontier_p95=())
        page = comparison_page(view, [])
        assert "0 of 0 shown" in page
        assert 'id="pareto-latency"' not in page
        assert "<tbody>\n    </tbody>" in page

    def test_bare_experiment(self, sample_experiment: ExperimentView) -> None:
        """No GPUs, no processes, no figures, no distributions: said in words."""
        view = replace(sample_experiment, gpus=(), processes=(), distributions={}, run_id=None)
        page = experiment_page(view, [])
        assert "No GPU energy in this result." in page
        assert "No figures." in page
        assert 'id="gpu-table"' not in page
