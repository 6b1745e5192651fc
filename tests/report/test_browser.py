"""The report pages in headless Chromium: they load clean and offline, sort, filter, and show
the result's own numbers.

The pages are the real ones: simulated experiments (one crashed and recovered as partial),
replayed, then written by ``report.build``. Chromium comes from the ``browser`` fixture
(tests/report/conftest.py), which skips when playwright or chromium is missing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.report.build import write_comparison_report, write_experiment_report
from energy_ledger.simulate import simulate

pytestmark = pytest.mark.slow

EXPERIMENTS = ("crashed-0000", "mid-0000", "small-0000", "wide-0000")
PARTIAL = "crashed-0000"
PAGES = ("comparison", *EXPERIMENTS)

EXPERIMENT_FIGURES = (
    "power-timeline",
    "energy-per-gpu",
    "latency-e2e",
    "latency-ttft",
    "latency-itl",
)
COMPARISON_FIGURES = ("pareto-p50", "pareto-p95", "param-n")
NAMESPACES = frozenset({"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"})
PAGE_BYTES_MAX = 2_000_000
"""The issue's page weight: a typical experiment's page stays under ~2 MB."""


@dataclass(frozen=True)
class Site:
    """A results root with every report page written."""

    root: Path
    pages: dict[str, Path]

    def result(self, experiment_id: str) -> dict[str, Any]:
        """The experiment's result file, read independently of the report."""
        aggregated = self.root / "aggregated"
        path = aggregated / f"{experiment_id}.json"
        if not path.exists():
            path = aggregated / f"{experiment_id}.partial.json"
        with path.open(encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
        return data


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """Four experiments of different sizes (so different ``effective_config``), pages written."""
    root = tmp_path_factory.mktemp("report") / "results"
    simulate(root, processes=2, requests=100, seed=1, prefix="small")
    simulate(root, processes=3, requests=80, seed=2, prefix="mid")
    simulate(root, processes=4, requests=120, seed=3, prefix="wide")
    simulate(root, processes=3, requests=60, seed=4, prefix="crashed", crash=1)
    replay_root(root)
    recover_experiment(root / "raw" / PARTIAL)
    pages = {name: write_experiment_report(root / "raw" / name).page for name in EXPERIMENTS}
    pages["comparison"] = write_comparison_report(root).page
    return Site(root, pages)


@dataclass
class Loaded:
    """An open page and what it did while loading."""

    page: Any
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@contextmanager
def opened(browser: Any, path: Path) -> Iterator[Loaded]:
    """Open ``path`` in a fresh context that aborts (and counts) every non-file request."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        loaded = Loaded(page, path.as_uri())

        def route(r: Any) -> None:
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                loaded.blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page.on(
            "console",
            lambda msg: (
                loaded.errors.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: loaded.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda req: loaded.requests.append(req.url))
        page.goto(loaded.url)
        page.wait_for_load_state("load")
        yield loaded
    finally:
        context.close()


def column_values(page: Any, key: str) -> list[str]:
    """The comparison table's cells of one column, in row order: ``data-value`` or text."""
    values: list[str] = page.eval_on_selector(
        f'#comparison-table th[data-col="{key}"]',
        """th => {
            const i = Array.from(th.parentNode.children).indexOf(th);
            return Array.from(th.closest("table").tBodies[0].rows, row => {
                const cell = row.cells[i];
                return cell.hasAttribute("data-value")
                    ? cell.getAttribute("data-value") : cell.textContent.trim();
            });
        }""",
    )
    return values


def shown_rows(page: Any) -> list[str]:
    """The experiment ids of the comparison rows not hidden, in order."""
    rows: list[str] = page.eval_on_selector_all(
        "#comparison-table tbody tr",
        "rows => rows.filter(r => !r.hidden).map(r => r.dataset.experiment)",
    )
    return rows


class TestLoading:
    """Every page loads with no error and fetches nothing but itself."""

    @pytest.mark.parametrize("name", PAGES)
    def test_clean_and_offline(self, browser: Any, site: Site, name: str) -> None:
        """No console error, no page error, and the only request is the page's own file."""
        with opened(browser, site.pages[name]) as loaded:
            assert loaded.errors == []
            assert loaded.blocked == []
            assert loaded.requests == [loaded.url]

    @pytest.mark.parametrize("name", PAGES)
    def test_no_url_in_source(self, site: Site, name: str) -> None:
        """The page's text names no URL but the SVG namespaces, and no ``src`` attribute."""
        text = site.pages[name].read_text(encoding="utf-8")
        urls = set(re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", text))
        assert urls <= NAMESPACES, urls - NAMESPACES
        assert not re.search(r"\bsrc\s*=", text, re.IGNORECASE)
        assert len(text.encode()) < PAGE_BYTES_MAX

    @pytest.mark.parametrize("name", PAGES)
    def test_figures_drawn(self, browser: Any, site: Site, name: str) -> None:
        """Every figure is there, with an SVG of non-zero size holding drawn paths."""
        expected = COMPARISON_FIGURES if name == "comparison" else EXPERIMENT_FIGURES
        with opened(browser, site.pages[name]) as loaded:
            page = loaded.page
            names = page.eval_on_selector_all(
                "[data-figure]", "els => els.map(e => e.dataset.figure)"
            )
            assert sorted(names) == sorted(expected)
            for figure in names:
                if figure.startswith("pareto-"):
                    page.select_option("#pareto-latency", figure.removeprefix("pareto-"))
                svg = page.locator(f'[data-figure="{figure}"] > svg')
                box = svg.bounding_box()
                assert box is not None and box["width"] > 0 and box["height"] > 0, figure
                drawn = svg.evaluate(
                    """svg => Array.from(svg.querySelectorAll("path")).filter(p => {
                        const b = p.getBBox(); return b.width > 0 || b.height > 0;
                    }).length"""
                )
                assert drawn >= 3, f"{figure}: {drawn} drawn paths"

    def test_links(self, browser: Any, site: Site) -> None:
        """Each comparison row links to its experiment's page file; the pages link back."""
        with opened(browser, site.pages["comparison"]) as loaded:
            hrefs = loaded.page.eval_on_selector_all(
                "#comparison-table tbody a", "links => links.map(a => a.href)"
            )
        assert hrefs == [site.pages[name].as_uri() for name in EXPERIMENTS]
        with opened(browser, site.pages[EXPERIMENTS[0]]) as loaded:
            back = loaded.page.eval_on_selector_all(
                'a[href="report.html"]', "links => links.map(a => a.href)"
            )
        assert back and set(back) == {site.pages["comparison"].as_uri()}


class TestComparisonTable:
    """The comparison table sorts, filters and marks rows."""

    @pytest.mark.parametrize(
        "key", ["energy_per_output_token_j", "e2e_latency_p95_ms", "total_energy_j", "param:n"]
    )
    def test_sorts_numbers(self, browser: Any, site: Site, key: str) -> None:
        """A click sorts the rows ascending by the column's exact numbers, another descending."""
        with opened(browser, site.pages["comparison"]) as loaded:
            page = loaded.page
            values = [float(v) for v in column_values(page, key)]
            assert len(values) == len(EXPERIMENTS)
            assert not any(math.isnan(v) for v in values)
            header = page.locator(f'#comparison-table th[data-col="{key}"]')
            header.click()
            assert [float(v) for v in column_values(page, key)] == sorted(values)
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            assert [float(v) for v in column_values(page, key)] == sorted(values, reverse=True)
            assert header.get_attribute("aria-sort") == "descending"

    def test_sorts_text(self, browser: Any, site: Site) -> None:
        """A text column sorts by its text, and the other headers lose their sort mark."""
        with opened(browser, site.pages["comparison"]) as loaded:
            page = loaded.page
            page.locator('#comparison-table th[data-col="total_energy_j"]').click()
            header = page.locator('#comparison-table th[data-col="experiment_id"]')
            header.click()
            header.click()
            assert column_values(page, "experiment_id") == sorted(EXPERIMENTS, reverse=True)
            assert page.locator("#comparison-table th[aria-sort]").count() == 1

    def test_filter(self, browser: Any, site: Site) -> None:
        """The filter box hides rows without the text (any case); the count follows."""
        with opened(browser, site.pages["comparison"]) as loaded:
            page = loaded.page
            assert shown_rows(page) == list(EXPERIMENTS)
            page.fill("#filter", "WIDE")
            assert shown_rows(page) == ["wide-0000"]
            assert page.text_content("#row-count") == f"1 of {len(EXPERIMENTS)} shown"
            assert page.locator('tr[data-experiment="small-0000"]').is_hidden()
            page.fill("#filter", "no such text")
            assert shown_rows(page) == []
            page.fill("#filter", "")
            assert shown_rows(page) == list(EXPERIMENTS)

    def test_hide_partial_and_warnings(self, browser: Any, site: Site) -> None:
        """The checkboxes hide the partial rows and the rows with warnings."""
        with opened(browser, site.pages["comparison"]) as loaded:
            page = loaded.page
            classes = dict(
                page.eval_on_selector_all(
                    "#comparison-table tbody tr",
                    "rows => rows.map(r => [r.dataset.experiment, r.className])",
                )
            )
            assert "row-partial" in classes[PARTIAL].split()
            assert not any("row-partial" in c for n, c in classes.items() if n != PARTIAL)
            page.check("#hide-partial")
            assert shown_rows(page) == [n for n in EXPERIMENTS if n != PARTIAL]
            page.uncheck("#hide-partial")
            page.check("#hide-warn")
            assert shown_rows(page) == [n for n in EXPERIMENTS if "row-warn" not in classes[n]]
            for n in EXPERIMENTS:
                has_warnings = bool(site.result(n)["measurement_warnings"])
                assert ("row-warn" in classes[n].split()) is has_warnings

    def test_pareto_selector(self, browser: Any, site: Site) -> None:
        """The latency selector shows the matching Pareto figure and hides the other."""
        with opened(browser, site.pages["comparison"]) as loaded:
            page = loaded.page
            p50, p95 = page.locator("#fig-pareto-p50"), page.locator("#fig-pareto-p95")
            assert p50.is_visible() and p95.is_hidden()
            page.select_option("#pareto-latency", "p95")
            assert p95.is_visible() and p50.is_hidden()
            page.select_option("#pareto-latency", "p50")
            assert p50.is_visible() and p95.is_hidden()


def expected_figures(result: dict[str, Any]) -> dict[str, float | int | None]:
    """The key figures, read from the result JSON by their documented fields."""
    lat = result["latency_stats"]
    e2e = result["extended_metrics"]["request_latency"]
    gpus = result["aggregation"]["gpus"]
    requests = e2e["e2e_latency_samples"]
    powers = [g["avg_power_w"] for g in gpus if g["avg_power_w"] is not None]
    return {
        "energy_per_output_token_j": result["avg_energy_per_token_j"],
        "energy_per_request_j": result["total_energy_j"] / requests,
        "total_energy_j": result["total_energy_j"],
        "energy_adjusted_j": result["energy_adjusted_j"],
        "avg_power_w": sum(powers),
        "tokens_per_second": result["avg_tokens_per_second"],
        "output_tokens_per_second": result["aggregation"]["output_tokens_per_second"],
        "requests": requests,
        "output_tokens": sum(
            p["inference_metrics"]["output_tokens"] for p in result["process_results"]
        ),
        "inference_time_sec": result["total_inference_time_sec"],
        "ttft_p50_ms": lat["ttft_median_ms"],
        "ttft_p95_ms": lat["ttft_p95_ms"],
        "ttft_p99_ms": lat["ttft_p99_ms"],
        "itl_p50_ms": lat["itl_median_ms"],
        "itl_p95_ms": lat["itl_p95_ms"],
        "itl_p99_ms": lat["itl_p99_ms"],
        "e2e_latency_p50_ms": e2e["e2e_latency_median_ms"],
        "e2e_latency_p95_ms": e2e["e2e_latency_p95_ms"],
        "e2e_latency_p99_ms": e2e["e2e_latency_p99_ms"],
    }


class TestExperimentPage:
    """The experiment page shows the result's own numbers."""

    @pytest.mark.parametrize("name", EXPERIMENTS)
    def test_numbers_equal_result(self, browser: Any, site: Site, name: str) -> None:
        """Every key figure's ``data-value`` equals the result JSON's number exactly."""
        result = site.result(name)
        with opened(browser, site.pages[name]) as loaded:
            page = loaded.page
            shown = dict(
                page.eval_on_selector_all(
                    "[data-key]", "els => els.map(e => [e.dataset.key, e.dataset.value])"
                )
            )
            energies = page.eval_on_selector_all(
                "#gpu-table tbody tr",
                "rows => rows.map(r => [r.dataset.gpu, r.cells[3].getAttribute('data-value')])",
            )
            badge = page.locator("#partial-badge")
            assert (badge.count() == 1 and badge.is_visible()) is (name == PARTIAL)
        expected = expected_figures(result)
        assert set(shown) == set(expected)
        for key, value in expected.items():
            assert value is not None, key
            assert float(shown[key]) == float(value), key
        gpus = {g["key"]: g["energy_j"] for g in result["aggregation"]["gpus"]}
        assert {k: float(v) for k, v in energies} == gpus

    def test_process_table_sorts(self, browser: Any, site: Site) -> None:
        """The per-process table sorts by energy too."""
        with opened(browser, site.pages["wide-0000"]) as loaded:
            page = loaded.page
            header = page.locator("#process-table th", has_text="Energy (J)")
            header.click()
            header.click()
            energies = page.eval_on_selector_all(
                "#process-table tbody tr", "rows => rows.map(r => r.cells[5].dataset.value)"
            )
        values = [float(v) for v in energies]
        assert len(values) == 4
        assert values == sorted(values, reverse=True)
