"""Late aggregation: many ``ProcessSummary`` values into one ``ExperimentResult`` (pure).

Raw samples are concatenated across processes and statistics computed once. The definitions
(documented in docs/metrics.md, where each choice is argued):

- ``total_tokens`` = sum over the processes that count their requests (``counts_requests``) of
  their in-window input + output tokens.
- ``total_inference_time_sec`` = wall-clock span: latest window end minus earliest window start.
- ``avg_tokens_per_second`` = ``total_tokens / total_inference_time_sec``.
- Energy is counted once per physical GPU, named by its UUID, over the union of its processes'
  windows (``core.energy``); ``total_energy_j`` is the sum over GPUs.
- ``avg_energy_per_token_j`` = ``total_energy_j / output_tokens`` (``total_tokens`` if none).
- Baseline: per GPU, the mean baseline power of its processes; adjusted energy per GPU is
  ``max(0, energy_j - baseline_power_w * covered_sec)``; ``energy_adjusted_j`` is their sum and
  top-level ``baseline_power_w`` the sum of per-GPU baselines (idle power of all GPUs used).
- Percentiles: linear interpolation over the processes' lists pooled (``stats``; one copy of one
  list at a time, sorted in place); ``latency_stats`` as LLenergyMeasure means it
  (``core.latency``: ``itl_*`` trimmed, ``itl_full_*`` not).
- ``extended_metrics.tpot_ms`` = mean over requests of ``(latency - ttft) / (output_tokens - 1)``;
  ``aggregation.output_tokens_per_second`` = ``output_tokens / total_inference_time_sec``.
- Warm-up: merged over processes (``_merge_warmup``); a partial result says so in
  ``measurement_warnings`` and ``reproducibility_notes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast

from energy_ledger._version import __version__
from energy_ledger.core.energy import gpu_energy, group_by_gpu
from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.core.latency import latency_statistics
from energy_ledger.core.legacy import summary_from_raw
from energy_ledger.core.process import ProcessSummary, utc
from energy_ledger.core.stats import ExactSum, mean_pooled, summarize_pooled
from energy_ledger.core.validity import validity_warnings
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import (
    AggregationMetadata,
    EnergyBreakdown,
    EnvironmentSnapshot,
    ExperimentResult,
    ExtendedEfficiencyMetrics,
    GPUUtilisationMetrics,
    MemoryEfficiencyMetrics,
    MultiGPUMetrics,
    RawProcessResult,
    RequestLatencyMetrics,
    ThermalThrottleInfo,
    WarmupResult,
)

SHORT_MEASUREMENT_SEC = 10.0
"""Spans shorter than this get the short-measurement warning."""

REPRODUCIBILITY_NOTES = (
    "Energy from the NVML total-energy counter read at the edges of each process's measured "
    "window and counted once per physical GPU (power samples integrated where no counter was "
    "available). Aggregated late by energy-ledger from append-only event logs: replaying the "
    "same logs reproduces this file byte for byte."
)

PARTIAL_NOTES = (
    " PARTIAL RESULT: recovered from an incomplete run ({reason}). Its figures cover only the "
    "processes, requests and time that were logged; do not compare it with complete results."
)
"""Appended to ``reproducibility_notes`` of a partial result (``{reason}``: why incomplete)."""

INCOMPLETE_WARNING = "Incomplete results: {reason}"
"""The ``measurement_warnings`` entry of a partial result, worded as LLenergyMeasure words it
when it aggregates an incomplete experiment with ``strict=False``."""

Methodology = Literal["total", "steady_state", "windowed"]


def _merge_throttle(processes: Sequence[ProcessSummary]) -> ThermalThrottleInfo | None:
    infos = [p.raw.thermal_throttle for p in processes if p.raw.thermal_throttle is not None]
    if not infos:
        return None
    temps = [i.max_temperature_c for i in infos if i.max_temperature_c is not None]
    return ThermalThrottleInfo(
        detected=any(i.detected for i in infos),
        thermal=any(i.thermal for i in infos),
        power=any(i.power for i in infos),
        sw_thermal=any(i.sw_thermal for i in infos),
        hw_thermal=any(i.hw_thermal for i in infos),
        hw_power=any(i.hw_power for i in infos),
        throttle_duration_sec=max(i.throttle_duration_sec for i in infos),
        max_temperature_c=max(temps) if temps else None,
        throttle_timestamps=sorted(t for i in infos for t in i.throttle_timestamps),
    )


def _merge_warmup(
    processes: Sequence[ProcessSummary], warnings: list[str]
) -> tuple[WarmupResult | None, int | None]:
    """The experiment's warm-up outcome and the warm-up prompts run, over all processes.

    Each process warms its own GPU, so the experiment is warmed up only when every process is:
    ``converged`` is the AND, ``final_cv`` the worst (largest) CV, ``iterations_completed`` the
    longest warm-up (comparable with ``max_prompts``, a per-process limit), ``latencies_ms``
    concatenated in process order, ``thermal_floor_wait_s`` the longest wait (processes wait in
    parallel). ``target_cv`` and ``max_prompts`` are settings: the largest is kept, with a
    warning when processes disagree. The second value, ``warmup_excluded_samples``, is the sum of
    ``iterations_completed``: every warm-up prompt that was kept out of the window.
    """
    pairs = [(p.process_index, p.raw.warmup_result) for p in processes if p.raw.warmup_result]
    results = [w for _, w in pairs]
    if not results:
        return None, None
    if len(pairs) < len(processes):
        have = {i for i, _ in pairs}
        missing = [p.process_index for p in processes if p.process_index not in have]
        warnings.append(f"no warm-up result for processes {missing}: merged from the others")
    if len({(w.target_cv, w.max_prompts) for w in results}) > 1:
        warnings.append("processes used different warm-up settings (target_cv, max_prompts)")
    excluded = sum(w.iterations_completed for w in results)
    if len(results) == 1:
        return results[0], excluded
    merged = WarmupResult(
        converged=all(w.converged for w in results),
        final_cv=max(w.final_cv for w in results),
        iterations_completed=max(w.iterations_completed for w in results),
        target_cv=max(w.target_cv for w in results),
        max_prompts=max(w.max_prompts for w in results),
        latencies_ms=[x for w in results for x in w.latencies_ms],
        thermal_floor_wait_s=max(w.thermal_floor_wait_s for w in results),
    )
    return merged, excluded


def _tpot_ms(processes: Sequence[ProcessSummary], warnings: list[str]) -> float | None:
    """Mean time per output token over every request that has one, all processes together.

    ``None`` when no request has one, or when a process's file cannot give its requests' TPOT
    (older per-process files) while it has TTFT samples: a mean over the other processes only
    would not describe the experiment.
    """
    unknown = [p.process_index for p in processes if p.tpot_ms is None and len(p.ttft_ms)]
    if unknown:
        warnings.append(
            f"tpot_ms left out: the files of processes {unknown} carry no per-request output tokens"
        )
        return None
    total = ExactSum()
    for p in processes:
        if p.tpot_ms is not None:
            total = total.merged(p.tpot_ms)
    return total.mean()


def _environment(
    processes: Sequence[ProcessSummary], warnings: list[str]
) -> EnvironmentSnapshot | None:
    for p in processes:
        if p.environment:
            try:
                return EnvironmentSnapshot.model_validate(p.environment)
            except ValueError as exc:  # pydantic.ValidationError is a ValueError
                warnings.append(
                    f"process {p.process_index} environment snapshot is unreadable "
                    f"({str(exc).splitlines()[0]}); left out"
                )
                return None
    return None


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def aggregate_results(
    raw_results: Sequence[ProcessSummary | RawProcessResult],
    experiment_id: str,
    measurement_config_hash: str | None = None,
    measurement_methodology: Methodology = "total",
    *,
    partial: bool = False,
    partial_reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> ExperimentResult:
    """Combine per-process results into one ``ExperimentResult`` (late aggregation).

    Args:
        raw_results: replayed processes (``ProcessSummary``) or plain ``RawProcessResult`` values
            (LLenergyMeasure's files; their GPU identity is then only ``gpu_id``).
        experiment_id: the experiment's id.
        measurement_config_hash: defaults to the first process's hash (or "").
        measurement_methodology: ``total``, ``steady_state`` or ``windowed``.
        partial: mark the result as partial (``recover``): ``aggregation.partial``, an
            "Incomplete results" entry first in ``measurement_warnings`` and in
            ``aggregation.warnings``, and a sentence in ``reproducibility_notes``.
        partial_reason: why it is incomplete (the completeness report's reasons).
        extra: more facts for ``aggregation`` (completeness report, coverage).

    Raises:
        LedgerError: there is no process to aggregate.
    """
    if not raw_results:
        raise LedgerError(f"{experiment_id}: no process results to aggregate")
    processes = sorted(
        (r if isinstance(r, ProcessSummary) else summary_from_raw(r) for r in raw_results),
        key=lambda p: p.process_index,
    )
    agg_warnings: list[str] = []
    measurement_warnings: list[str] = []
    for p in processes:
        measurement_warnings.extend(f"process {p.process_index}: {w}" for w in p.warnings)

    groups = group_by_gpu(processes, agg_warnings)
    gpus = [gpu_energy(key, members, agg_warnings) for key, members in groups.items()]
    measurement_warnings.extend(validity_warnings(processes, gpus, measurement_methodology))
    total_energy_j = math.fsum(g.energy_j for g in gpus)

    windows = [p for p in processes if p.has_window]
    if windows:
        starts = [cast(float, p.window_start_t) for p in windows]
        ends = [cast(float, p.window_end_t) for p in windows]
        start_t, end_t = min(starts), max(ends)
        overlap = max(starts) < min(ends)
    else:
        start_t = min((p.raw.timestamps.start.timestamp() for p in processes), default=0.0)
        end_t = max((p.raw.timestamps.end.timestamp() for p in processes), default=start_t)
        overlap = False
        agg_warnings.append("no process has a complete measured window")
    span_sec = end_t - start_t
    if windows and not overlap and len(windows) > 1:
        agg_warnings.append("Processes did not overlap in time: the wall-clock span includes gaps")
    if span_sec < SHORT_MEASUREMENT_SEC:
        measurement_warnings.append(
            f"short_measurement_duration: measured span {span_sec:.3f} s is under "
            f"{SHORT_MEASUREMENT_SEC:.0f} s; energy figures carry more error"
        )
    backends = sorted({p.backend for p in processes})
    if len(backends) > 1:
        agg_warnings.append(f"Mixed backends in one experiment: {', '.join(backends)}")
    if any(p.gpu_is_mig for p in processes):
        agg_warnings.append(
            "MIG instances detected: each energy figure reflects the whole parent GPU"
        )
    if len({p.run_id for p in processes}) > 1:
        agg_warnings.append("processes belong to different runs")

    counting = [p for p in processes if p.counts_requests]
    if not counting:
        agg_warnings.append("no process counts its requests (counts_requests is false on all)")
    input_tokens = sum(p.input_tokens for p in counting)
    output_tokens = sum(p.output_tokens for p in counting)
    total_tokens = input_tokens + output_tokens
    per_token_div = output_tokens or total_tokens
    total_flops = math.fsum(p.flops_total for p in processes)

    have_baseline = all(g.baseline_power_w is not None for g in gpus)
    adjusted_j = math.fsum(cast(float, g.adjusted_j) for g in gpus) if have_baseline else None
    baseline_w = math.fsum(cast(float, g.baseline_power_w) for g in gpus) if have_baseline else None
    if not have_baseline and any(g.baseline_power_w is not None for g in gpus):
        agg_warnings.append("some GPUs have no baseline: energy_adjusted_j is left out")
    methods = sorted({p.baseline_method for p in processes if p.baseline_method})
    measured_at = sorted(p.baseline_measured_at for p in processes if p.baseline_measured_at)
    first_raw_breakdown = next(
        (
            p.raw.energy_breakdown
            for p in processes
            if p.raw.energy_breakdown and p.raw.energy_breakdown.baseline_timestamp
        ),
        None,
    )
    baseline_ts = first_raw_breakdown.baseline_timestamp if first_raw_breakdown else None
    breakdown = EnergyBreakdown(
        raw_j=total_energy_j,
        adjusted_j=adjusted_j,
        baseline_power_w=baseline_w,
        baseline_method=(methods[0] if len(methods) == 1 else "mixed") if methods else None,
        baseline_timestamp=baseline_ts if measured_at else None,
        baseline_cache_age_sec=(
            start_t - baseline_ts.timestamp()
            if baseline_ts is not None and baseline_ts.tzinfo is not None
            else None
        ),
    )

    # Each list pooled in process-index order, one at a time (these lists hold every request).
    latency_stats = latency_statistics(
        [p.ttft_ms for p in counting],
        [p.itl_trimmed_ms for p in counting],
        [p.itl_ms for p in counting],
    )
    e2e = summarize_pooled(p.latencies_ms for p in counting)
    sm = [p.sm_util_pct for p in processes]
    environment = _environment(processes, agg_warnings)
    peaks = [p.peak_memory_mb for p in processes if p.peak_memory_mb is not None]
    model_mem = max((p.raw.compute_metrics.model_memory_mb for p in processes), default=0.0)
    peak_mem = max(peaks) if peaks else 0.0
    vram = environment.hardware.gpu.vram_total_mb if environment else 0.0
    extended = ExtendedEfficiencyMetrics(
        tpot_ms=_tpot_ms(counting, agg_warnings),
        memory=MemoryEfficiencyMetrics(
            total_vram_mb=vram,
            model_memory_mb=model_mem,
            peak_memory_mb=peak_mem,
            inference_memory_mb=max(0.0, peak_mem - model_mem),
        ),
        gpu_utilisation=GPUUtilisationMetrics(
            sm_utilisation_mean=mean_pooled(sm),
            sm_utilisation_samples=sum(len(values) for values in sm),
        ),
        request_latency=RequestLatencyMetrics(
            e2e_latency_mean_ms=e2e.mean if e2e else None,
            e2e_latency_median_ms=e2e.median if e2e else None,
            e2e_latency_p95_ms=e2e.p95 if e2e else None,
            e2e_latency_p99_ms=e2e.p99 if e2e else None,
            e2e_latency_samples=e2e.count if e2e else 0,
        ),
    )
    multi = (
        MultiGPUMetrics(
            num_gpus=len(gpus),
            energy_per_gpu_j=[g.energy_j for g in gpus],
            energy_total_j=total_energy_j,
            energy_per_output_token_j=total_energy_j / per_token_div if per_token_div else 0.0,
        )
        if len(gpus) > 1
        else None
    )
    warmup, warmup_excluded = _merge_warmup(processes, agg_warnings)
    notes = REPRODUCIBILITY_NOTES
    if partial:
        reason = partial_reason or "marked partial: the run may not have finished"
        agg_warnings.insert(0, INCOMPLETE_WARNING.format(reason=reason))
        measurement_warnings.insert(0, INCOMPLETE_WARNING.format(reason=reason))
        notes += PARTIAL_NOTES.format(reason=reason)
    run_ids = sorted({p.run_id for p in processes if p.run_id})
    aggregation = AggregationMetadata(
        method="late_concatenation_energy_per_physical_gpu",
        num_processes=len(processes),
        temporal_overlap_verified=overlap,
        gpu_attribution_verified=all(p.gpu_uuid for p in processes),
        warnings=_dedup(agg_warnings),
        tool="energy-ledger",
        tool_version=__version__,
        ledger_format=FORMAT_VERSION,
        run_id=run_ids[0] if len(run_ids) == 1 else run_ids,
        partial=partial,
        output_tokens_per_second=output_tokens / span_sec if span_sec > 0 else None,
        gpus=[g.to_dict() for g in gpus],
        **(extra or {}),
    )
    first = processes[0]
    config_hash = measurement_config_hash or first.measurement_config_hash or ""
    return ExperimentResult(
        experiment_id=experiment_id,
        measurement_config_hash=config_hash,
        backend=first.backend,
        backend_version=first.raw.backend_version,
        measurement_methodology=measurement_methodology,
        total_tokens=total_tokens,
        total_energy_j=total_energy_j,
        total_inference_time_sec=span_sec,
        avg_tokens_per_second=total_tokens / span_sec if span_sec > 0 else 0.0,
        avg_energy_per_token_j=total_energy_j / per_token_div if per_token_div else 0.0,
        total_flops=total_flops,
        # None, not 0.0, without FLOPs: LLenergyMeasure's contract for these three fields.
        flops_per_output_token=total_flops / output_tokens
        if total_flops and output_tokens
        else None,
        flops_per_input_token=total_flops / input_tokens if total_flops and input_tokens else None,
        flops_per_second=total_flops / span_sec if total_flops and span_sec > 0 else None,
        baseline_power_w=baseline_w,
        energy_adjusted_j=adjusted_j,
        energy_per_device_j=[g.energy_j for g in gpus],
        energy_breakdown=breakdown,
        multi_gpu=multi,
        environment_snapshot=environment,
        measurement_warnings=_dedup(measurement_warnings + agg_warnings),
        warmup_excluded_samples=warmup_excluded,
        reproducibility_notes=notes,
        start_time=utc(start_t),
        end_time=utc(end_t),
        effective_config=first.effective_config,
        process_results=[p.raw for p in processes],
        aggregation=aggregation,
        thermal_throttle=_merge_throttle(processes),
        warmup_result=warmup,
        latency_stats=latency_stats,
        extended_metrics=extended,
    )
