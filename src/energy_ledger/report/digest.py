"""The fields of a result file that the report reads, decoded fast (pure).

A result file holds every latency of every process (megabytes for a long run). The comparison
page reads a thousand of them, so it decodes each into ``ResultDigest``: msgspec skips every
field not named here, at about a gigabyte a second, instead of building the full pydantic
model. The names and shapes are the schema-2.0 ``ExperimentResult``'s, field for field; a test
checks every path here against the model, so the two cannot drift apart. The experiment page
decodes its result the same way, so both pages take their numbers from one reading.
"""

from __future__ import annotations

from typing import Any

import msgspec

from energy_ledger.exceptions import FormatError


class _Struct(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    pass


class LatencyMeasurements(_Struct, frozen=True):
    """``process_results[].inference_metrics.latency_measurements``: the raw samples."""

    ttft_ms: list[float] = []
    itl_full_ms: list[float] = []
    request_count: int | None = None


class InferenceDigest(_Struct, frozen=True):
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    inference_time_sec: float = 0.0
    tokens_per_second: float = 0.0
    latency_measurements: LatencyMeasurements | None = None


class EnergyDigest(_Struct, frozen=True):
    total_energy_j: float = 0.0
    gpu_power_w: float = 0.0
    duration_sec: float = 0.0


class ProcessDigest(_Struct, frozen=True):
    """One ``process_results`` entry."""

    process_index: int
    gpu_id: int
    inference_metrics: InferenceDigest
    energy_metrics: EnergyDigest
    gpu_name: str = ""
    config_name: str = ""
    model_name: str = ""
    energy_measurement_warning: str | None = None
    per_request_latencies_ms: list[float] = []


class GpuDigest(_Struct, frozen=True):
    """One ``aggregation.gpus`` entry: a physical GPU's energy (core.energy)."""

    key: str
    uuid: str | None = None
    hostname: str | None = None
    process_indices: list[int] = []
    energy_j: float = 0.0
    energy_source: str = ""
    span_sec: float = 0.0
    intervals: list[tuple[float, float]] = []
    baseline_power_w: float | None = None
    adjusted_j: float | None = None
    avg_power_w: float | None = None
    power_limit_w: float | None = None


class CompletenessDigest(_Struct, frozen=True):
    """``aggregation.completeness`` of a partial result (``recover``): why it is incomplete."""

    error_message: str | None = None


class AggregationDigest(_Struct, frozen=True):
    num_processes: int = 0
    partial: bool = False
    completeness: CompletenessDigest | None = None
    run_id: str | list[str] | None = None
    """One run id, or the sorted list when the processes name several (the aggregator's rule)."""
    output_tokens_per_second: float | None = None
    gpus: list[GpuDigest] = []
    warnings: list[str] = []


class LatencyStatsDigest(_Struct, frozen=True):
    ttft_mean_ms: float | None = None
    ttft_median_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None
    ttft_samples: int = 0
    itl_mean_ms: float | None = None
    itl_median_ms: float | None = None
    itl_p95_ms: float | None = None
    itl_p99_ms: float | None = None
    itl_samples: int = 0


class RequestLatencyDigest(_Struct, frozen=True):
    e2e_latency_mean_ms: float | None = None
    e2e_latency_median_ms: float | None = None
    e2e_latency_p95_ms: float | None = None
    e2e_latency_p99_ms: float | None = None
    e2e_latency_samples: int = 0


class ExtendedDigest(_Struct, frozen=True):
    tpot_ms: float | None = None
    request_latency: RequestLatencyDigest | None = None


class ThrottleDigest(_Struct, frozen=True):
    detected: bool = False
    thermal: bool = False
    power: bool = False
    throttle_duration_sec: float = 0.0
    max_temperature_c: float | None = None


class EnergyBreakdownDigest(_Struct, frozen=True):
    raw_j: float | None = None
    adjusted_j: float | None = None
    baseline_power_w: float | None = None
    baseline_method: str | None = None


class ResultDigest(_Struct, frozen=True):
    """The report's view of one ``ExperimentResult`` (same names, fewer fields)."""

    experiment_id: str
    measurement_config_hash: str = ""
    backend: str = ""
    backend_version: str | None = None
    measurement_methodology: str = "total"
    steady_state_window: tuple[float, float] | None = None
    total_tokens: int = 0
    total_energy_j: float = 0.0
    total_inference_time_sec: float = 0.0
    avg_tokens_per_second: float = 0.0
    avg_energy_per_token_j: float = 0.0
    baseline_power_w: float | None = None
    energy_adjusted_j: float | None = None
    energy_per_device_j: list[float] | None = None
    energy_breakdown: EnergyBreakdownDigest | None = None
    measurement_warnings: list[str] = []
    start_time: str = ""
    end_time: str = ""
    effective_config: dict[str, Any] = {}
    process_results: list[ProcessDigest] = []
    aggregation: AggregationDigest | None = None
    thermal_throttle: ThrottleDigest | None = None
    latency_stats: LatencyStatsDigest | None = None
    extended_metrics: ExtendedDigest | None = None

    @property
    def partial(self) -> bool:
        """Whether the result is an explicitly partial one (``recover``)."""
        return self.aggregation is not None and self.aggregation.partial


_decoder = msgspec.json.Decoder(ResultDigest)


def decode_digest(data: bytes, *, path: str | None = None) -> ResultDigest:
    """Decode a result file's bytes.

    Raises:
        FormatError: the bytes are not a result (the message says which field, and where).
    """
    try:
        return _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise FormatError(f"not a result file: {exc}", path=path) from None


__all__ = [
    "AggregationDigest",
    "GpuDigest",
    "ProcessDigest",
    "ResultDigest",
    "decode_digest",
]
