"""What the report pages show, as plain values: built from results and timelines (pure).

``experiment_view`` turns one result (its ``ResultDigest``), the process timelines and the
process summaries into an ``ExperimentView``; ``comparison_view`` turns many digests into a
``ComparisonView``. Neither draws or formats anything: ``report.figures`` draws the views and
``report.html`` lays them out. Every number comes from the result as written
(``report.numbers``); the banner's checks are in ``report.checks``. The timelines feed only the
pictures, downsampled for display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from energy_ledger.core.downsample import minmax_downsample
from energy_ledger.core.pareto import pareto_front
from energy_ledger.core.process import ProcessSummary
from energy_ledger.core.timeline import ProcessTimeline
from energy_ledger.report.checks import Check, gpu_label, gpu_row_label, validity_checks
from energy_ledger.report.digest import ResultDigest
from energy_ledger.report.numbers import FIGURES, figures_of, request_count

Floats = NDArray[np.float64]

TIMELINE_BUCKETS = 600
"""Time buckets per power series on the experiment page (at most 4 points each)."""


@dataclass(frozen=True, slots=True)
class KeyFigure:
    """A number on a page: ``key`` is its name in ``figures_of`` (units in the name)."""

    key: str
    label: str
    value: float | int | None
    unit: str


@dataclass(frozen=True, slots=True)
class GpuRow:
    """A physical GPU's energy, as ``aggregation.gpus`` gives it."""

    key: str
    label: str
    hostname: str | None
    process_indices: tuple[int, ...]
    energy_j: float
    adjusted_j: float | None
    baseline_power_w: float | None
    avg_power_w: float | None
    energy_source: str
    span_sec: float


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One process's figures, as its ``process_results`` entry gives them."""

    process_index: int
    gpu_id: int
    gpu_name: str
    requests: int | None
    output_tokens: int
    energy_j: float
    avg_power_w: float
    duration_sec: float
    tokens_per_second: float
    warning: str | None


@dataclass(frozen=True, slots=True)
class Span:
    """A shaded span of a timeline, in seconds from the experiment's start."""

    name: str
    start_sec: float
    end_sec: float


@dataclass(frozen=True, slots=True)
class PowerSeries:
    """One GPU's power over time, downsampled for display (``TIMELINE_BUCKETS``).

    ``t_sec`` counts from ``ExperimentView.t0``. ``samples`` is the number of samples the
    full series holds (before downsampling).
    """

    gpu_key: str
    label: str
    process_indices: tuple[int, ...]
    t_sec: Floats
    power_w: Floats
    samples: int
    phases: tuple[Span, ...]
    throttled: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class ExperimentView:
    """Everything the experiment page shows."""

    experiment_id: str
    partial: bool
    partial_reason: str | None
    methodology: str
    config_hash: str
    run_id: str | None
    start_time: str
    end_time: str
    t0: float
    checks: tuple[Check, ...]
    warnings: tuple[str, ...]
    figures: tuple[KeyFigure, ...]
    gpus: tuple[GpuRow, ...]
    processes: tuple[ProcessRow, ...]
    series: tuple[PowerSeries, ...]
    distributions: Mapping[str, Floats]
    effective_config: Mapping[str, Any]
    environment: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One experiment on the comparison page.

    ``figures`` holds ``figures_of(digest)``; ``params`` the numeric ``effective_config``
    values, by dotted path (``sampling.batch_size``); ``page`` the experiment page's file
    name, when it exists.
    """

    experiment_id: str
    model_name: str
    config_name: str
    gpu_name: str
    backend: str
    partial: bool
    warnings: tuple[str, ...]
    figures: Mapping[str, float | int | None]
    params: Mapping[str, float]
    page: str | None = None


@dataclass(frozen=True, slots=True)
class ComparisonView:
    """Everything the comparison page shows.

    ``params`` names the ``effective_config`` parameters that are numeric in at least two
    experiments and take at least two values (the ones worth a scatter plot). ``frontier_p50``
    and ``frontier_p95`` are indices into ``rows`` of the latency/energy Pareto frontier, with
    e2e latency p50 and p95 as the latency.
    """

    rows: tuple[ComparisonRow, ...]
    params: tuple[str, ...]
    frontier_p50: tuple[int, ...]
    frontier_p95: tuple[int, ...]
    problems: tuple[str, ...] = field(default=())


def _rel(t: float, t0: float) -> float:
    return t - t0


def _series(timelines: Sequence[ProcessTimeline], t0: float) -> list[PowerSeries]:
    """One power series per physical GPU: the samples of its first process that has any.

    Processes sharing a GPU read the same power, so one of them is drawn (the energy is
    counted once too). Phases and throttle spans come from the same process.
    """
    by_gpu: dict[str, list[ProcessTimeline]] = {}
    for tl in sorted(timelines, key=lambda x: x.process_index):
        by_gpu.setdefault(tl.gpu_key, []).append(tl)
    out: list[PowerSeries] = []
    for key, members in by_gpu.items():
        drawn = next((m for m in members if len(m.sample_t)), members[0])
        t, p = minmax_downsample(drawn.sample_t, drawn.power_w, TIMELINE_BUCKETS)
        out.append(
            PowerSeries(
                gpu_key=key,
                label=gpu_label(key, drawn.gpu_uuid, drawn.hostname, drawn.gpu_id),
                process_indices=tuple(m.process_index for m in members),
                t_sec=t - t0,
                power_w=p,
                samples=int(np.count_nonzero(~np.isnan(drawn.power_w))),
                phases=tuple(
                    Span(ph.name, _rel(ph.start_t, t0), _rel(ph.end_t, t0)) for ph in drawn.phases()
                ),
                throttled=tuple(
                    Span("throttled", _rel(a, t0), _rel(b, t0))
                    for a, b in drawn.throttle_intervals()
                ),
            )
        )
    return out


def _distributions(d: ResultDigest) -> dict[str, Floats]:
    """The raw samples of the result, by figure: e2e latency, TTFT, ITL (untrimmed)."""
    e2e: list[float] = []
    ttft: list[float] = []
    itl: list[float] = []
    for p in d.process_results:
        e2e += p.per_request_latencies_ms
        lm = p.inference_metrics.latency_measurements
        if lm is not None:
            ttft += lm.ttft_ms
            itl += lm.itl_full_ms
    return {
        "e2e_latency_ms": np.asarray(e2e, dtype=np.float64),
        "ttft_ms": np.asarray(ttft, dtype=np.float64),
        "itl_ms": np.asarray(itl, dtype=np.float64),
    }


def _unix(text: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _run_id(d: ResultDigest) -> str | None:
    """The run id, or the run ids joined when the processes name several."""
    run = d.aggregation.run_id if d.aggregation else None
    if isinstance(run, list):
        return ", ".join(run) or None
    return run


def _partial_reason(d: ResultDigest) -> str | None:
    """Why a partial result is incomplete, in the completeness report's words."""
    agg = d.aggregation
    if agg is None or not agg.partial or agg.completeness is None:
        return None
    return agg.completeness.error_message


def experiment_view(
    d: ResultDigest,
    timelines: Sequence[ProcessTimeline] = (),
    summaries: Sequence[ProcessSummary] = (),
    *,
    environment: Mapping[str, Any] | None = None,
    expected_processes: int | None = None,
    markers: tuple[int, int] | None = None,
) -> ExperimentView:
    """The experiment page's content.

    Args:
        d: the result, as written (or as it would be written, for a partial one).
        timelines: the processes' timelines (for the power figure); may be empty.
        summaries: the processes' summaries (for the clock-skew estimate); may be empty.
        environment: the environment snapshot to fold away on the page.
        expected_processes: the world size the logs declare.
        markers: (valid markers, logs), when the logs were read.
    """
    starts = [t for t in (tl.first_t for tl in timelines) if t is not None]
    t0 = min(starts) if starts else (_unix(d.start_time) or 0.0)
    figures = figures_of(d)
    gpus = d.aggregation.gpus if d.aggregation else []
    return ExperimentView(
        experiment_id=d.experiment_id,
        partial=d.partial,
        partial_reason=_partial_reason(d),
        methodology=d.measurement_methodology,
        config_hash=d.measurement_config_hash,
        run_id=_run_id(d),
        start_time=d.start_time,
        end_time=d.end_time,
        t0=t0,
        checks=tuple(validity_checks(d, summaries, expected_processes, markers)),
        warnings=tuple(d.measurement_warnings),
        figures=tuple(KeyFigure(k, label, figures[k], unit) for k, label, unit in FIGURES),
        gpus=tuple(
            GpuRow(
                key=g.key,
                label=gpu_row_label(g, d),
                hostname=g.hostname,
                process_indices=tuple(g.process_indices),
                energy_j=g.energy_j,
                adjusted_j=g.adjusted_j,
                baseline_power_w=g.baseline_power_w,
                avg_power_w=g.avg_power_w,
                energy_source=g.energy_source,
                span_sec=g.span_sec,
            )
            for g in gpus
        ),
        processes=tuple(
            ProcessRow(
                process_index=p.process_index,
                gpu_id=p.gpu_id,
                gpu_name=p.gpu_name,
                requests=request_count(p),
                output_tokens=p.inference_metrics.output_tokens,
                energy_j=p.energy_metrics.total_energy_j,
                avg_power_w=p.energy_metrics.gpu_power_w,
                duration_sec=p.energy_metrics.duration_sec,
                tokens_per_second=p.inference_metrics.tokens_per_second,
                warning=p.energy_measurement_warning,
            )
            for p in sorted(d.process_results, key=lambda p: p.process_index)
        ),
        series=tuple(_series(timelines, t0)),
        distributions=_distributions(d),
        effective_config=d.effective_config,
        environment=environment or {},
    )


def numeric_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a configuration, by dotted path (booleans are not numbers)."""
    out: dict[str, float] = {}
    stack: list[tuple[str, Any]] = [(prefix, config)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping):
            for k, v in value.items():
                stack.append((f"{path}.{k}" if path else str(k), v))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float (only foreign files have one)
                continue
            if math.isfinite(number):
                out[path] = number
    return dict(sorted(out.items()))


def _first(values: Iterable[str]) -> str:
    distinct = sorted({v for v in values if v})
    return distinct[0] if len(distinct) == 1 else ", ".join(distinct)


def comparison_row(d: ResultDigest, page: str | None = None) -> ComparisonRow:
    """One experiment's row of the comparison page."""
    warnings = tuple(d.measurement_warnings)
    return ComparisonRow(
        experiment_id=d.experiment_id,
        model_name=_first(p.model_name for p in d.process_results),
        config_name=_first(p.config_name for p in d.process_results),
        gpu_name=_first(p.gpu_name for p in d.process_results),
        backend=d.backend,
        partial=d.partial,
        warnings=warnings,
        figures=figures_of(d),
        params=numeric_params(d.effective_config),
        page=page,
    )


def _front(rows: Sequence[ComparisonRow], latency: str) -> tuple[int, ...]:
    points = [
        (
            _finite(r.figures.get(latency)),
            _finite(r.figures.get("energy_per_output_token_j")),
        )
        for r in rows
    ]
    return tuple(pareto_front(points))


def _finite(value: float | int | None) -> float:
    return float(value) if value is not None else math.nan


def comparison_view(rows: Iterable[ComparisonRow], problems: Iterable[str] = ()) -> ComparisonView:
    """The comparison page's content, rows ordered by experiment id."""
    ordered = tuple(sorted(rows, key=lambda r: r.experiment_id))
    values: dict[str, set[float]] = {}
    for r in ordered:
        for name, v in r.params.items():
            values.setdefault(name, set()).add(v)
    counts = {name: sum(1 for r in ordered if name in r.params) for name in values}
    params = tuple(
        sorted(name for name, vs in values.items() if len(vs) >= 2 and counts[name] >= 2)
    )
    return ComparisonView(
        rows=ordered,
        params=params,
        frontier_p50=_front(ordered, "e2e_latency_p50_ms"),
        frontier_p95=_front(ordered, "e2e_latency_p95_ms"),
        problems=tuple(problems),
    )


def to_json_text(value: Mapping[str, Any]) -> str:
    """A configuration as indented JSON for the page (keys sorted, so the page is stable)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


__all__ = [
    "ComparisonRow",
    "ComparisonView",
    "ExperimentView",
    "GpuRow",
    "KeyFigure",
    "PowerSeries",
    "ProcessRow",
    "Span",
    "comparison_row",
    "comparison_view",
    "experiment_view",
    "numeric_params",
    "to_json_text",
]
