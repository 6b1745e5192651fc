"""Older files: LLenergyMeasure's own per-process results, read for aggregation (pure).

Before the ledger, LLenergyMeasure wrote one ``RawProcessResult`` JSON file per process
(``process_<i>.json``) and a ``.completed_<i>`` marker. A results root may still hold such
experiments; ``summary_from_raw`` wraps one parsed file as a ``ProcessSummary`` so that the same
completeness check and aggregation apply to it. Reading the files is ``store.reader``'s job.
"""

from __future__ import annotations

from array import array

from energy_ledger.core.process import ProcessSummary
from energy_ledger.models import RawProcessResult


def _float_list(value: object) -> array[float]:
    if isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return array("d", value)
    return array("d")


def summary_from_raw(raw: RawProcessResult) -> ProcessSummary:
    """Wrap a plain ``RawProcessResult`` (LLenergyMeasure's own files) for aggregation.

    Such files carry no GPU UUID, host or counter readings: the GPU is identified by ``gpu_id``
    alone and the process's own energy figure is used. TTFT and inter-token latencies are taken
    from ``inference_metrics.latency_measurements`` when it holds ``ttft_ms`` / ``itl_full_ms``
    (or ``itl_ms``) lists.
    """
    measurements = raw.inference_metrics.latency_measurements
    ttft = array("d")
    itl = array("d")
    if isinstance(measurements, dict):
        ttft = _float_list(measurements.get("ttft_ms"))
        itl = _float_list(measurements.get("itl_full_ms", measurements.get("itl_ms")))
    start_t = raw.timestamps.start.timestamp()
    end_t = raw.timestamps.end.timestamp()
    breakdown = raw.energy_breakdown
    warnings = (raw.energy_measurement_warning,) if raw.energy_measurement_warning else ()
    return ProcessSummary(
        raw=raw,
        process_index=raw.process_index,
        run_id=None,
        world_size=None,
        experiment_id=raw.experiment_id,
        gpu_key=f"?/gpu{raw.gpu_id}",
        gpu_uuid=None,
        hostname=None,
        window_start_t=start_t,
        window_end_t=end_t,
        energy_j=raw.energy_metrics.total_energy_j,
        energy_source="counter",
        counter_start_mj=0.0,
        counter_end_mj=raw.energy_metrics.total_energy_j * 1000.0,
        baseline_power_w=breakdown.baseline_power_w if breakdown else None,
        baseline_method=breakdown.baseline_method if breakdown else None,
        baseline_measured_at=(
            breakdown.baseline_timestamp.isoformat()
            if breakdown and breakdown.baseline_timestamp
            else None
        ),
        requests=len(raw.per_request_latencies_ms),
        input_tokens=raw.inference_metrics.input_tokens,
        output_tokens=raw.inference_metrics.output_tokens,
        latencies_ms=array("d", raw.per_request_latencies_ms),
        ttft_ms=ttft,
        itl_ms=itl,
        sm_util_pct=array("d", raw.gpu_utilisation_samples),
        finished=True,
        failed_error=None,
        warnings=warnings,
        backend=raw.backend,
        measurement_config_hash=None,
        measurement_methodology="total",
        environment=None,
        effective_config=raw.effective_config,
        gpu_is_mig=raw.gpu_is_mig,
        max_temperature_c=raw.thermal_throttle.max_temperature_c if raw.thermal_throttle else None,
        peak_memory_mb=raw.compute_metrics.peak_memory_mb,
        flops_total=raw.compute_metrics.flops_total,
    )
