"""Fixtures of the report tests: hand-built views, fake figures, and a headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from energy_ledger.report.checks import Check
from energy_ledger.report.model import (
    ComparisonRow,
    ComparisonView,
    ExperimentView,
    GpuRow,
    KeyFigure,
    ProcessRow,
)
from energy_ledger.report.numbers import FIGURES

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@dataclass(frozen=True)
class FakeFigure:
    """Stands in for ``report.figures.FigureOut``: a name, a title and SVG text."""

    name: str
    title: str
    svg: str
    png: bytes | None = None


def fake_svg(label: str) -> str:
    """A small SVG document with the prolog and DOCTYPE matplotlib writes."""
    return (
        '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
        '  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
        '<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="320pt" height="200pt" '
        'viewBox="0 0 320 200" xmlns="http://www.w3.org/2000/svg" version="1.1">'
        f'<rect x="10" y="10" width="300" height="180" fill="#cde"/><text x="20" y="40">{label}'
        "</text></svg>\n"
    )


@pytest.fixture
def sample_experiment() -> ExperimentView:
    """A complete two-GPU experiment with one warning and every key figure but one."""
    values: dict[str, float | int | None] = {
        key: 1.0 + i / 7 for i, (key, _, _) in enumerate(FIGURES)
    }
    values["requests"] = 200
    values["output_tokens"] = 12_345
    values["energy_per_output_token_j"] = 0.1 + 0.2
    values["total_energy_j"] = 12345.678901234567
    values["itl_p99_ms"] = None
    return ExperimentView(
        experiment_id="exp-1",
        partial=False,
        partial_reason=None,
        methodology="total",
        config_hash="abc123",
        run_id="run-1",
        start_time="2026-01-01T00:00:00+00:00",
        end_time="2026-01-01T00:01:00+00:00",
        t0=0.0,
        checks=(
            Check("Processes", "ok", "2 of 2 expected processes in the result"),
            Check("Measured window", "warn", "shortest 2.00 s (at least 10.0 s wanted)"),
            Check("Clock skew", "info", "one host"),
            Check("Completion markers", "fail", "1 valid markers for 2 logs"),
        ),
        warnings=("short_measurement_duration: measured span 2.381 s is under 10 s",),
        figures=tuple(KeyFigure(k, label, values[k], unit) for k, label, unit in FIGURES),
        gpus=tuple(
            GpuRow(
                key=f"uuid:GPU-{i}",
                label=f"node: …GPU-{i}",
                hostname="node",
                process_indices=(i,),
                energy_j=1000.0 + i,
                adjusted_j=800.0 + i if i else None,
                baseline_power_w=65.0,
                avg_power_w=300.0 - i,
                energy_source="counter",
                span_sec=3.5,
            )
            for i in range(2)
        ),
        processes=tuple(
            ProcessRow(
                process_index=i,
                gpu_id=i,
                gpu_name="Simulated GPU 80GB",
                requests=100,
                output_tokens=6000 + i,
                energy_j=1000.0 + i,
                avg_power_w=300.0 - i,
                duration_sec=3.5,
                tokens_per_second=1700.25,
                warning="counter wrapped" if i else None,
            )
            for i in range(2)
        ),
        series=(),
        distributions={
            "e2e_latency_ms": np.array([1.0, 2.0]),
            "ttft_ms": np.array([], dtype=np.float64),
            "itl_ms": np.array([0.5]),
        },
        effective_config={"model": "sim-gpt", "sampling": {"batch_size": 8}},
        environment={"python_version": "3.11"},
    )


@pytest.fixture
def sample_experiment_figures() -> list[FakeFigure]:
    """Figures of an experiment page, as ``report.figures`` names them (no TTFT histogram)."""
    return [
        FakeFigure("power", "Power per GPU", fake_svg("power")),
        FakeFigure("energy-per-gpu", "Energy per GPU", fake_svg("bars")),
        FakeFigure("hist-e2e", "End-to-end latency", fake_svg("e2e")),
    ]


def comparison_row(n: int, **changes: Any) -> ComparisonRow:
    """A comparison row with figures that vary with ``n``."""
    row = ComparisonRow(
        experiment_id=f"exp-{n}",
        model_name="sim-gpt",
        config_name="simulated",
        gpu_name="Simulated GPU 80GB",
        backend="pytorch",
        partial=False,
        warnings=(),
        figures={
            "processes": 2,
            "gpus": 2,
            "energy_per_output_token_j": 0.1 * (n + 1) + 0.2,
            "energy_per_request_j": 3.0 + n,
            "total_energy_j": 1000.0 / (n + 1),
            "energy_adjusted_j": None,
            "tokens_per_second": 100.0 * (n + 1),
            "ttft_p50_ms": 5.0,
            "ttft_p95_ms": 9.0,
            "itl_p50_ms": 0.4,
            "e2e_latency_p50_ms": 40.0 + n,
            "e2e_latency_p95_ms": 80.0 - n,
            "e2e_latency_p99_ms": 120.0,
            "requests": 100 * (n + 1),
        },
        params={"n": 100.0 * (n + 1), "sampling.temperature": 0.5 + n / 10},
        page=f"exp-{n}.report.html",
    )
    return replace(row, **changes)


@pytest.fixture
def make_row() -> Callable[..., ComparisonRow]:
    """``comparison_row`` as a fixture: ``make_row(n, **changes)``."""
    return comparison_row


@pytest.fixture
def svg_document() -> str:
    """An SVG document as matplotlib writes one (prolog and DOCTYPE included)."""
    return fake_svg("figure")


@pytest.fixture
def sample_comparison() -> ComparisonView:
    """Three rows: a plain one, a partial one without a page, one with two warnings."""
    rows = (
        comparison_row(0),
        comparison_row(1, partial=True, page=None),
        comparison_row(2, warnings=("first warning", "second <b>warning</b>")),
    )
    return ComparisonView(
        rows=rows,
        params=("n", "sampling.temperature"),
        frontier_p50=(0,),
        frontier_p95=(0, 2),
        problems=("aggregated/bad.json: not a result file",),
    )


@pytest.fixture
def sample_comparison_figures() -> list[FakeFigure]:
    """The comparison page's figures: both Pareto charts and one per parameter."""
    return [
        FakeFigure("pareto-p50", "Pareto p50", fake_svg("p50")),
        FakeFigure("pareto-p95", "Pareto p95", fake_svg("p95")),
        FakeFigure("param-n", "J per output token against n", fake_svg("n")),
        FakeFigure("param-sampling.temperature", "against temperature", fake_svg("t")),
    ]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium through playwright, or a skip saying what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed: {exc}")
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(executable):
        pytest.skip("chromium not found (install Debian's chromium package)")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    except Exception as exc:
        playwright.stop()
        pytest.skip(f"chromium does not start: {exc}")
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()
