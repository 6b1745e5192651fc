"""Older files: LLenergyMeasure's own per-process results, read for aggregation (pure).

Before the ledger, LLenergyMeasure wrote one ``RawProcessResult`` JSON file per process
(``process_<i>.json``) and a ``.completed_<i>`` marker. A results root may still hold such
experiments; ``summary_from_raw`` wraps one parsed file as a ``ProcessSummary`` so that the same
completeness check and aggregation apply to it. Reading the files is ``store.reader``'s job.

Our own aggregated results embed the same ``RawProcessResult`` values, with the raw TTFT and
inter-token samples in ``latency_measurements``, so a result can be rebuilt from its process
results: the latency statistics come out the same (tests/core/test_interop.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from energy_ledger.core.latency import read_latency_measurements
from energy_ledger.core.process import ProcessSummary
from energy_ledger.models import RawProcessResult
from energy_ledger.models.samples import Samples

NAIVE_TIMESTAMPS_WARNING = (
    "timestamps carry no time zone: read as UTC (LLenergyMeasure writes UTC times; "
    "reading them in the local zone would shift the window by the host's offset)"
)


def _unix(moment: datetime) -> float:
    """Unix seconds of ``moment``; a naive datetime is taken as UTC, never as local time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _samples(values: Sequence[float]) -> Samples:
    """``values`` as ``Samples``: shared when the model holds them so (it always does once
    validated), copied otherwise."""
    return values if isinstance(values, Samples) else Samples(values)


def summary_from_raw(raw: RawProcessResult) -> ProcessSummary:
    """Wrap a plain ``RawProcessResult`` (LLenergyMeasure's own files) for aggregation.

    Such files carry no GPU UUID, host or counter readings: the GPU is identified by ``gpu_id``
    alone and the process's own energy figure is used. TTFT and inter-token latencies are taken
    from ``inference_metrics.latency_measurements`` (LLenergyMeasure's ``ttft_ms``,
    ``itl_full_ms``, ``itl_trimmed_ms``). Per-request time per output token cannot be rebuilt
    (the file has no per-request output tokens): ``tpot_ms`` is ``None``, unknown.

    Timestamps without a time zone are read as UTC, with a warning: ``datetime.timestamp()``
    would read them in the host's zone, and the same file would aggregate differently on
    another machine.
    """
    ttft, itl, trimmed = read_latency_measurements(raw.inference_metrics.latency_measurements)
    start_t = _unix(raw.timestamps.start)
    end_t = _unix(raw.timestamps.end)
    breakdown = raw.energy_breakdown
    warnings: tuple[str, ...] = ()
    if raw.energy_measurement_warning:
        warnings = (raw.energy_measurement_warning,)
    if raw.timestamps.start.tzinfo is None or raw.timestamps.end.tzinfo is None:
        warnings = (*warnings, NAIVE_TIMESTAMPS_WARNING)
    return ProcessSummary(
        raw=raw,
        process_index=raw.process_index,
        run_id=None,
        world_size=None,
        experiment_id=raw.experiment_id,
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
        latencies_ms=_samples(raw.per_request_latencies_ms),
        ttft_ms=ttft,
        itl_ms=itl,
        sm_util_pct=_samples(raw.gpu_utilisation_samples),
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
        itl_trimmed_ms=trimmed,
        tpot_ms=None,
    )
