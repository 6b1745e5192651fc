"""From folded ``ProcessState`` to ``ProcessSummary``: one process's figures, ready to aggregate.

A ``ProcessSummary`` holds the schema-2.0 ``RawProcessResult`` plus the ledger facts that the
result schema has no place for but late aggregation needs: the GPU's UUID and host (to count a
shared GPU once), the raw energy-counter readings, the raw TTFT and inter-token latency lists,
the run id and world size (for the completeness check). Pure: no I/O.

The sample lists (latencies, TTFT, inter-token latencies, SM utilisation) are not copied: the
summary and its ``RawProcessResult`` hold ``Samples`` views of the state's arrays (8 bytes a
value, shared), which the fold only ever appends to. A state that is folded further after it
was summarised leaves the summary as it was (``models.samples``).

Per-process formulas (also in docs/metrics.md):
    inference_time_sec   = window_ended.t - window_started.t
    energy_j             = (window_ended.energy_mj - window_started.energy_mj) / 1000 when both
                           counter readings exist and the counter did not go backwards, else the
                           trapezoid integral of sample.power_w over the samples in the window
    tokens_per_second    = (input_tokens + output_tokens) / inference_time_sec
    latency_per_token_ms = 1000 * inference_time_sec / output_tokens
    gpu_power_w          = energy_j / inference_time_sec
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from energy_ledger.core.latency import latency_measurements
from energy_ledger.core.state import (
    THROTTLE_ANY,
    THROTTLE_HW_POWER_BRAKE,
    THROTTLE_HW_THERMAL,
    THROTTLE_SW_POWER_CAP,
    THROTTLE_SW_THERMAL,
    ProcessState,
    tpot_total,
)
from energy_ledger.core.stats import ExactSum, mean
from energy_ledger.models import (
    ComputeMetrics,
    EnergyBreakdown,
    EnergyMetrics,
    ExtendedEfficiencyMetrics,
    InferenceMetrics,
    RawProcessResult,
    ThermalThrottleInfo,
    Timestamps,
    WarmupResult,
)
from energy_ledger.models.samples import Samples

EnergySource = Literal["counter", "power_integral", "none"]
WindowState = Literal["none", "open", "closed"]


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    """What the completeness check needs to know about a process: cheap to get at any time.

    ``ProcessSummary`` has the same attributes, so either can stand as a process's evidence.
    """

    process_index: int
    run_id: str | None
    world_size: int | None
    experiment_id: str | None
    finished: bool
    failed_error: str | None
    window: WindowState


def window_state(state: ProcessState) -> WindowState:
    """``none`` before ``window_started``, ``open`` until ``window_ended``, then ``closed``."""
    if state.window_start_t is None:
        return "none"
    return "open" if state.window_end_t is None else "closed"


def facts_of(state: ProcessState, process_index: int) -> ProcessFacts:
    """The completeness facts of a folded state (``process_index`` when the log has no start)."""
    started = state.started
    return ProcessFacts(
        process_index=started.process_index if started is not None else process_index,
        run_id=started.run_id if started is not None else None,
        world_size=started.world_size if started is not None else None,
        experiment_id=started.experiment_id if started is not None else None,
        finished=state.finished,
        failed_error=state.failed_error,
        window=window_state(state),
    )


def utc(t: float) -> datetime:
    """A Unix time in seconds as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(t, tz=UTC)


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """One process, summarised for aggregation.

    Attributes:
        raw: the schema-2.0 per-process result.
        process_index: rank (from the log; from the file name when the log has no start).
        run_id, world_size, experiment_id: what the process said about its run.
        window_start_t, window_end_t: the measured window (Unix seconds).
        energy_j, energy_source: the process's own energy figure and where it came from.
        counter_start_mj, counter_end_mj: raw counter readings at the window edges.
        baseline_power_w, baseline_method, baseline_measured_at: idle power, when measured.
        latencies_ms, ttft_ms, itl_ms: raw latency lists for late aggregation (views of the
            state's arrays, shared with ``raw``).
        itl_trimmed_ms: the inter-token latencies without each request's first and last.
        tpot_ms: the exact sum and count of the requests' times per output token (their mean
            is all a result reports); ``None`` when unknown (a file that does not give
            per-request output tokens, see ``core.legacy``).
        finished, failed_error: how the process ended (as far as the log says).
        warnings: warnings from the log and from the summary.
        window: ``none``, ``open`` or ``closed``: how far the log got with its window.
        counts_requests: whether its requests count toward the experiment's (tensor parallel
            ranks other than a group's first do not).
        requests_outside_window: requests logged outside the window, not counted.
        power_limit_w: the GPU's power limit, from the environment snapshot.
        clock_offset_sec, clock_offset_error_sec: this host's wall clock minus the shared
            filesystem's, from the ``clock`` events (the best-bounded estimate).
        wall_step_sec: the largest change of ``wall_t - t`` over the log's ``clock`` events.
    """

    raw: RawProcessResult
    process_index: int
    run_id: str | None
    world_size: int | None
    experiment_id: str | None
    gpu_uuid: str | None
    hostname: str | None
    window_start_t: float | None
    window_end_t: float | None
    energy_j: float
    energy_source: EnergySource
    counter_start_mj: float | None
    counter_end_mj: float | None
    baseline_power_w: float | None
    baseline_method: str | None
    baseline_measured_at: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    latencies_ms: Samples = field(repr=False)
    ttft_ms: Samples = field(repr=False)
    itl_ms: Samples = field(repr=False)
    sm_util_pct: Samples = field(repr=False)
    finished: bool
    failed_error: str | None
    warnings: tuple[str, ...]
    backend: str
    measurement_config_hash: str | None
    measurement_methodology: str
    environment: dict[str, Any] | None
    effective_config: dict[str, Any]
    gpu_is_mig: bool
    max_temperature_c: float | None
    peak_memory_mb: float | None
    flops_total: float
    itl_trimmed_ms: Samples = field(default_factory=Samples, repr=False)
    tpot_ms: ExactSum | None = field(default=None, repr=False)
    window: WindowState = "closed"
    counts_requests: bool = True
    requests_outside_window: int = 0
    power_limit_w: float | None = None
    clock_offset_sec: float | None = None
    clock_offset_error_sec: float | None = None
    wall_step_sec: float = 0.0

    @property
    def has_window(self) -> bool:
        """True when both window edges were logged."""
        return self.window_start_t is not None and self.window_end_t is not None

    @property
    def inference_time_sec(self) -> float:
        """Length of the measured window (0 when it is not closed)."""
        if self.window_start_t is None or self.window_end_t is None:
            return 0.0
        return self.window_end_t - self.window_start_t


def _parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 time as a datetime, or ``None`` when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _energy(state: ProcessState) -> tuple[float, EnergySource, list[str]]:
    warnings: list[str] = []
    start, end = state.window_start_energy_mj, state.window_end_energy_mj
    if end is None and state.window_end_t is None:
        end = state.sample_energy_mj  # an unclosed window: the last sampled counter
    if start is not None and end is not None:
        if end >= start and not state.counter_reset:
            return (end - start) / 1000.0, "counter", warnings
        warnings.append(
            "energy counter reset during the window: energy integrated from power samples"
        )
    elif state.window_start_t is not None:
        warnings.append(
            "no energy counter readings at the window edges: energy integrated from power samples"
        )
    if state.power_samples >= 2:
        return _power_integral_j(state), "power_integral", warnings
    if state.window_start_t is not None:
        warnings.append("no energy figure: neither counter readings nor two power samples")
    return 0.0, "none", warnings


def _power_integral_j(state: ProcessState) -> float:
    """The trapezoid integral of the power samples, held flat out to the window's edges.

    The sampler's first reading comes just after ``window_started`` and its last just before
    ``window_ended``; the edges are filled with the nearest reading rather than left at 0 W.
    """
    total = state.power_integral_j
    start_t, end_t = state.window_start_t, state.window_end_t or state.prev_power_t
    if start_t is not None and state.first_power_t is not None and state.first_power_w is not None:
        total += max(0.0, state.first_power_t - start_t) * state.first_power_w
    if end_t is not None and state.prev_power_t is not None and state.prev_power_w is not None:
        total += max(0.0, end_t - state.prev_power_t) * state.prev_power_w
    return total


def _clock_facts(state: ProcessState) -> tuple[float | None, float | None, float]:
    """(offset, its error, the largest wall-clock step) from the ``clock`` events.

    ``fs_offset_sec`` is the system clock (``wall_t``) minus the filesystem's; the events are
    stamped with ``t``, so the offset that places this process's events against the shared
    clock is ``(t - wall_t) + fs_offset_sec``. The estimate with the smallest error wins.
    """
    offsets = [
        (err, off + (t - wall if wall is not None else 0.0))
        for t, _m, wall, off, err in state.clocks
        if off is not None
    ]
    offset = error = None
    if offsets:
        error, offset = min(offsets, key=lambda pair: (pair[0] or 0.0, pair[1]))
        error = error or 0.0
    gaps = [wall - t for t, _m, wall, _o, _e in state.clocks if wall is not None]
    step = max(gaps) - min(gaps) if gaps else 0.0
    return offset, error, step


def _power_limit_w(environment: dict[str, Any] | None) -> float | None:
    try:
        value = environment["hardware"]["gpu"]["power_limit_w"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _throttle(state: ProcessState) -> ThermalThrottleInfo:
    bits = state.throttle_bits
    sw_thermal = bool(bits & THROTTLE_SW_THERMAL)
    hw_thermal = bool(bits & THROTTLE_HW_THERMAL)
    return ThermalThrottleInfo(
        detected=bool(bits & THROTTLE_ANY),
        thermal=sw_thermal or hw_thermal,
        power=bool(bits & THROTTLE_SW_POWER_CAP),
        sw_thermal=sw_thermal,
        hw_thermal=hw_thermal,
        hw_power=bool(bits & THROTTLE_HW_POWER_BRAKE),
        throttle_duration_sec=state.throttle_duration_sec,
        max_temperature_c=state.max_temperature_c,
        throttle_timestamps=list(state.throttle_timestamps),
    )


def summarize_process(state: ProcessState, process_index: int | None = None) -> ProcessSummary:
    """Summarise a folded state. ``process_index`` is used when the log has no start event."""
    started = state.started
    facts = facts_of(state, process_index or 0)
    index = facts.process_index
    energy_j, source, warnings = _energy(state)
    warnings = [*state.warnings, *warnings]
    if state.requests_outside_window:
        warnings.append(
            f"{state.requests_outside_window} requests logged outside the measured window "
            "(warm-up or after its end) are not counted"
        )
    if started is not None and not started.counts_requests:
        warnings.append("counts_requests is false: this process's requests are not counted")
    offset, offset_error, wall_step = _clock_facts(state)
    # A rank whose requests another rank counts (tensor parallelism) reports none, so that
    # whoever sums the process results (LLenergyMeasure re-aggregating, or ``summary_from_raw``)
    # counts each request once.
    rs = state if started is None or started.counts_requests else ProcessState()
    if started is not None and started.gpu_is_mig:
        warnings.append(
            "MIG instance: the energy counter reflects the whole parent GPU, not this instance"
        )
    start_t = state.window_start_t
    end_t = state.window_end_t
    if start_t is not None and end_t is None and state.prev_sample_t is not None:
        # A window that was never closed (the process died): it covers up to the last sample.
        end_t = state.prev_sample_t
        warnings.append(
            f"measured window was never closed: counted up to the last sample at t={end_t:.3f}"
        )
    if start_t is None or end_t is None:
        lo = start_t if start_t is not None else (state.first_t or 0.0)
        hi = end_t if end_t is not None else (state.last_t or lo)
    else:
        lo, hi = start_t, end_t
    duration_sec = max(0.0, hi - lo) if start_t is not None and end_t is not None else 0.0
    total_tokens = rs.input_tokens + rs.output_tokens
    compute = state.compute
    flops_total = compute.flops_total if compute is not None else 0.0
    per_token_div = rs.output_tokens or total_tokens
    baseline = state.baseline
    adjusted = (
        max(0.0, energy_j - baseline.power_w * duration_sec) if baseline is not None else None
    )
    peak_memory = (
        compute.peak_memory_mb
        if compute is not None and compute.peak_memory_mb is not None
        else state.max_memory_used_mb
    )
    warmup = state.warmup
    # Views of the state's arrays, shared by the summary and its RawProcessResult: no copy.
    latencies = Samples.view(rs.latencies_ms)
    tpot = tpot_total(rs)
    ttft = Samples.view(rs.ttft_ms)
    itl = Samples.view(rs.itl_ms)
    itl_trimmed = Samples.view(rs.itl_trimmed_ms)
    sm_util = Samples.view(state.sm_util_pct)
    raw = RawProcessResult(
        experiment_id=started.experiment_id if started else "",
        backend=started.backend if started else "pytorch",
        backend_version=started.backend_version if started else None,
        process_index=index,
        gpu_id=started.gpu_id if started else 0,
        gpu_name=(started.gpu_name or "") if started else "",
        gpu_is_mig=started.gpu_is_mig if started else False,
        gpu_mig_profile=started.gpu_mig_profile if started else None,
        energy_measurement_warning="; ".join(warnings) if warnings else None,
        config_name=(started.config_name or "") if started else "",
        model_name=(started.model_name or "") if started else "",
        timestamps=Timestamps(start=utc(lo), end=utc(hi), duration_sec=duration_sec),
        inference_metrics=InferenceMetrics(
            total_tokens=total_tokens,
            input_tokens=rs.input_tokens,
            output_tokens=rs.output_tokens,
            inference_time_sec=duration_sec,
            tokens_per_second=total_tokens / duration_sec if duration_sec > 0 else 0.0,
            latency_per_token_ms=(
                1000.0 * duration_sec / rs.output_tokens if rs.output_tokens else 0.0
            ),
            time_to_first_token_ms=mean(rs.ttft_ms) if rs.ttft_ms else None,
            latency_measurements=latency_measurements(
                ttft,
                itl,
                itl_trimmed,
                request_count=rs.requests,
                output_tokens=rs.output_tokens,
                warmup_requests=warmup.iterations_completed if warmup else 0,
            ),
        ),
        energy_metrics=EnergyMetrics(
            total_energy_j=energy_j,
            gpu_energy_j=energy_j,
            gpu_power_w=energy_j / duration_sec if duration_sec > 0 else 0.0,
            duration_sec=duration_sec,
            energy_per_token_j=energy_j / per_token_div if per_token_div else 0.0,
        ),
        compute_metrics=ComputeMetrics(
            flops_total=flops_total,
            flops_per_token=flops_total / per_token_div if per_token_div else 0.0,
            flops_per_second=flops_total / duration_sec if duration_sec > 0 else 0.0,
            peak_memory_mb=peak_memory or 0.0,
            model_memory_mb=(compute.model_memory_mb or 0.0) if compute else 0.0,
            flops_method=(compute.flops_method or "unknown") if compute else "unknown",
            flops_confidence=(compute.flops_confidence or "unknown") if compute else "unknown",
            compute_precision=(compute.compute_precision or "fp16") if compute else "fp16",
        ),
        effective_config=dict(started.effective_config or {}) if started else {},
        extended_metrics=ExtendedEfficiencyMetrics(tpot_ms=tpot.mean()),
        per_request_latencies_ms=latencies,
        gpu_utilisation_samples=sm_util,
        energy_breakdown=EnergyBreakdown(
            raw_j=energy_j,
            adjusted_j=adjusted,
            baseline_power_w=baseline.power_w if baseline else None,
            baseline_method=baseline.method if baseline else None,
            baseline_timestamp=_parse_iso(baseline.measured_at) if baseline else None,
        ),
        thermal_throttle=_throttle(state),
        warmup_result=(
            WarmupResult(
                converged=warmup.converged,
                final_cv=warmup.final_cv,
                iterations_completed=warmup.iterations_completed,
                target_cv=warmup.target_cv,
                max_prompts=warmup.max_prompts,
                latencies_ms=list(warmup.latencies_ms),
                thermal_floor_wait_s=warmup.thermal_floor_wait_s,
            )
            if warmup
            else None
        ),
    )
    hostname = started.hostname if started else None
    uuid = started.gpu_uuid if started else None
    return ProcessSummary(
        raw=raw,
        process_index=index,
        run_id=facts.run_id,
        world_size=facts.world_size,
        experiment_id=facts.experiment_id,
        gpu_uuid=uuid,
        hostname=hostname,
        window_start_t=start_t,
        window_end_t=end_t,
        energy_j=energy_j,
        energy_source=source,
        counter_start_mj=state.window_start_energy_mj if source == "counter" else None,
        counter_end_mj=(
            (state.window_end_energy_mj if end_t == state.window_end_t else state.sample_energy_mj)
            if source == "counter"
            else None
        ),
        baseline_power_w=baseline.power_w if baseline else None,
        baseline_method=baseline.method if baseline else None,
        baseline_measured_at=baseline.measured_at if baseline else None,
        requests=rs.requests,
        input_tokens=rs.input_tokens,
        output_tokens=rs.output_tokens,
        latencies_ms=latencies,
        ttft_ms=ttft,
        itl_ms=itl,
        itl_trimmed_ms=itl_trimmed,
        tpot_ms=tpot,
        sm_util_pct=sm_util,
        finished=facts.finished,
        failed_error=facts.failed_error,
        warnings=tuple(warnings),
        backend=raw.backend,
        measurement_config_hash=started.measurement_config_hash if started else None,
        measurement_methodology=started.measurement_methodology if started else "total",
        environment=started.environment if started else None,
        effective_config=raw.effective_config,
        gpu_is_mig=raw.gpu_is_mig,
        max_temperature_c=state.max_temperature_c,
        peak_memory_mb=peak_memory,
        flops_total=flops_total,
        window=window_state(state),
        counts_requests=started.counts_requests if started else True,
        requests_outside_window=state.requests_outside_window,
        power_limit_w=_power_limit_w(started.environment if started else None),
        clock_offset_sec=offset,
        clock_offset_error_sec=offset_error,
        wall_step_sec=wall_step,
    )
