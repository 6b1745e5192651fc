"""The report pages as HTML bytes: the views laid out with jinja2 (pure but for package data).

``render_experiment`` and ``render_comparison`` fill the templates in ``templates/`` and inline
``static/report.css`` and ``static/report.js``, so a page is one file that opens offline and
fetches nothing. The figures arrive as SVG text (``report.figures`` draws them) and are inlined
as given, less any XML prolog or DOCTYPE, which have no place inside HTML.

Every number shown is formatted here (``display_number``); each one a test or the page's
sorting reads also goes out exact in a ``data-value`` attribute (``exact_number``: Python's
``repr`` of the float, ``str`` of the int, empty for a missing value). No time or date is
written, so the same view gives the same bytes.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Protocol

import jinja2
from markupsafe import Markup

from energy_ledger.report.model import ComparisonView, ExperimentView, to_json_text

PACKAGE = "energy_ledger.report"

MISSING = "—"
"""Shown in place of a number the result does not have."""

DISTRIBUTION_LABELS: Mapping[str, str] = {
    "e2e_latency_ms": "end-to-end latency",
    "ttft_ms": "TTFT",
    "itl_ms": "ITL",
}
"""How the page names ``ExperimentView.distributions`` keys ("no TTFT samples")."""


class FigureLike(Protocol):
    """A drawn figure: ``report.figures.FigureOut`` has these and more."""

    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def svg(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Column:
    """A numeric column of the comparison table: a ``figures_of`` key and its header."""

    key: str
    header: str
    unit: str = ""


COMPARISON_COLUMNS: tuple[Column, ...] = (
    Column("processes", "Processes"),
    Column("gpus", "GPUs"),
    Column("energy_per_output_token_j", "J / output token", "J"),
    Column("energy_per_request_j", "J / request", "J"),
    Column("total_energy_j", "Total energy", "J"),
    Column("energy_adjusted_j", "Above idle", "J"),
    Column("tokens_per_second", "Tokens/s", "tokens/s"),
    Column("ttft_p50_ms", "TTFT p50", "ms"),
    Column("ttft_p95_ms", "TTFT p95", "ms"),
    Column("itl_p50_ms", "ITL p50", "ms"),
    Column("e2e_latency_p50_ms", "e2e p50", "ms"),
    Column("e2e_latency_p95_ms", "e2e p95", "ms"),
    Column("e2e_latency_p99_ms", "e2e p99", "ms"),
    Column("requests", "Requests"),
)
"""The comparison table's numeric columns, after the text ones, in order."""

PARETO_LATENCIES: tuple[str, ...] = ("p50", "p95")
"""The latencies the Pareto selector offers; figure ``pareto-<latency>`` shows each."""


def exact_number(value: float | int | None) -> str:
    """The exact text of a number for ``data-value``: ``repr`` of a float, empty for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return repr(float(value))


def display_number(value: float | int | None) -> str:
    """A number as the page shows it: four significant digits, thousands separated."""
    if value is None:
        return MISSING
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    magnitude = abs(number)
    if magnitude == 0.0:
        return "0"
    if magnitude >= 1e4:
        return f"{number:,.0f}"
    if magnitude >= 1e-3:
        decimals = max(0, 3 - math.floor(math.log10(magnitude)))
        return f"{number:,.{decimals}f}"
    return f"{number:.3e}"


def display_param(value: float | int | None) -> str:
    """A configuration value: whole numbers without decimals, others as Python's ``g``."""
    if value is None:
        return ""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return format(number, "g")


def inline_svg(svg: str) -> Markup:
    """SVG text ready to sit inside HTML: anything before the ``<svg`` element is dropped."""
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else svg)


_VIEW_BOX = re.compile(r'viewBox="[-0-9.]+ [-0-9.]+ ([0-9.]+) [0-9.]+"')


def natural_width_pt(svg: str) -> str | None:
    """The width an SVG was drawn at (its ``viewBox`` width, in pt), or None when it has none.

    The page lays figures out at about that width, so their text keeps the size it was drawn
    with.
    """
    start = svg.find("<svg")
    root = svg[start : svg.find(">", start)] if start >= 0 else ""
    found = _VIEW_BOX.search(root)
    return found.group(1) if found else None


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = display_number
    env.filters["exact"] = exact_number
    env.filters["param"] = display_param
    env.filters["svg"] = inline_svg
    env.filters["width_pt"] = natural_width_pt
    env.filters["json"] = to_json_text
    return env


@cache
def _static(name: str) -> Markup:
    text = (resources.files(PACKAGE) / "static" / name).read_text(encoding="utf-8")
    return Markup(text)


def _render(template: str, **context: object) -> bytes:
    page = (
        _environment()
        .get_template(template)
        .render(css=_static("report.css"), js=_static("report.js"), **context)
    )
    return page.encode("utf-8")


def _missing_distributions(view: ExperimentView) -> list[str]:
    return [
        DISTRIBUTION_LABELS.get(name, name)
        for name, samples in view.distributions.items()
        if len(samples) == 0
    ]


def render_experiment(
    view: ExperimentView, figures: Sequence[FigureLike], *, generated_by: str
) -> bytes:
    """The experiment page (``aggregated/<id>.report.html``) as UTF-8 bytes.

    Args:
        view: what the page shows.
        figures: the drawn figures, in page order.
        generated_by: the tool and version, for the footer ("energy-ledger 0.1.0").
    """
    statuses = {c.status for c in view.checks}
    overall = next((s for s in ("fail", "warn") if s in statuses), "ok")
    return _render(
        "experiment.html.j2",
        view=view,
        figures=list(figures),
        overall=overall,
        missing=_missing_distributions(view),
        generated_by=generated_by,
    )


def render_comparison(
    view: ComparisonView, figures: Sequence[FigureLike], *, generated_by: str
) -> bytes:
    """The comparison page (``aggregated/report.html``) as UTF-8 bytes.

    Figures named ``pareto-p50`` and ``pareto-p95`` go behind the latency selector, those
    named ``param-*`` into the configuration section, any other after them.
    """
    by_name = {f.name: f for f in figures}
    pareto = [
        (latency, by_name[f"pareto-{latency}"])
        for latency in PARETO_LATENCIES
        if f"pareto-{latency}" in by_name
    ]
    taken = {f"pareto-{latency}" for latency in PARETO_LATENCIES}
    params = [f for f in figures if f.name.startswith("param-")]
    others = [f for f in figures if f.name not in taken and not f.name.startswith("param-")]
    fronts_of = (("p50", frozenset(view.frontier_p50)), ("p95", frozenset(view.frontier_p95)))
    fronts = [
        tuple(latency for latency, members in fronts_of if i in members)
        for i in range(len(view.rows))
    ]
    return _render(
        "comparison.html.j2",
        view=view,
        columns=COMPARISON_COLUMNS,
        pareto=pareto,
        param_figures=params,
        other_figures=others,
        fronts=fronts,
        generated_by=generated_by,
    )


__all__ = [
    "COMPARISON_COLUMNS",
    "FigureLike",
    "display_number",
    "display_param",
    "exact_number",
    "inline_svg",
    "natural_width_pt",
    "render_comparison",
    "render_experiment",
]
