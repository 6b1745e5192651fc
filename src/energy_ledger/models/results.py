"""Per-process and aggregated experiment result models of schema 2.0."""

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from energy_ledger.models.environment import EnvironmentSnapshot
from energy_ledger.models.metrics import (
    ComputeMetrics,
    EnergyBreakdown,
    EnergyMetrics,
    ExtendedEfficiencyMetrics,
    InferenceMetrics,
    LatencyStatistics,
    MultiGPUMetrics,
    ThermalThrottleInfo,
    Timestamps,
    WarmupResult,
)
from energy_ledger.models.samples import Samples, SamplesField

SCHEMA_VERSION: Final = "2.0"
"""Result schema version written by and expected from these models."""

_DEFAULT_REPRODUCIBILITY_NOTES = (
    "Energy measured via NVML polling. Accuracy +/-5%. "
    "Results may vary with thermal state and system load."
)


class AggregationMetadata(BaseModel):
    """How per-process results were combined; extra keys are kept as-is."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    method: str = "sum_energy_avg_throughput"
    num_processes: int
    temporal_overlap_verified: bool = False
    gpu_attribution_verified: bool = False
    warnings: list[str] = Field(default_factory=list)


class RawProcessResult(BaseModel):
    """Measurements of a single worker process on a single GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_version: str = SCHEMA_VERSION
    experiment_id: str
    backend: str = "pytorch"
    backend_version: str | None = None
    process_index: int
    gpu_id: int
    gpu_name: str = ""
    gpu_is_mig: bool = False
    gpu_mig_profile: str | None = None
    energy_measurement_warning: str | None = None
    config_name: str
    model_name: str
    timestamps: Timestamps
    inference_metrics: InferenceMetrics
    energy_metrics: EnergyMetrics
    compute_metrics: ComputeMetrics
    effective_config: dict[str, Any] = Field(default_factory=dict)
    extended_metrics: ExtendedEfficiencyMetrics = Field(default_factory=ExtendedEfficiencyMetrics)
    per_request_latencies_ms: SamplesField = Field(default_factory=Samples)
    gpu_utilisation_samples: SamplesField = Field(default_factory=Samples)
    energy_breakdown: EnergyBreakdown | None = None
    thermal_throttle: ThermalThrottleInfo | None = None
    warmup_result: WarmupResult | None = None


class ExperimentResult(BaseModel):
    """Final result of one experiment, aggregated over all its processes."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_version: str = SCHEMA_VERSION
    experiment_id: str
    measurement_config_hash: str
    backend: str = "pytorch"
    backend_version: str | None = None
    measurement_methodology: Literal["total", "steady_state", "windowed"]
    steady_state_window: tuple[float, float] | None = None
    total_tokens: int
    total_energy_j: float
    total_inference_time_sec: float
    avg_tokens_per_second: float
    avg_energy_per_token_j: float
    total_flops: float
    flops_per_output_token: float | None = None
    flops_per_input_token: float | None = None
    flops_per_second: float | None = None
    baseline_power_w: float | None = None
    energy_adjusted_j: float | None = None
    energy_per_device_j: list[float] | None = None
    energy_breakdown: EnergyBreakdown | None = None
    multi_gpu: MultiGPUMetrics | None = None
    environment_snapshot: EnvironmentSnapshot | None = None
    measurement_warnings: list[str] = Field(default_factory=list)
    warmup_excluded_samples: int | None = None
    reproducibility_notes: str = _DEFAULT_REPRODUCIBILITY_NOTES
    timeseries: str | None = None
    start_time: datetime
    end_time: datetime
    effective_config: dict[str, Any] = Field(default_factory=dict)
    process_results: list[RawProcessResult] = Field(default_factory=list)
    aggregation: AggregationMetadata | None = None
    thermal_throttle: ThermalThrottleInfo | None = None
    warmup_result: WarmupResult | None = None
    latency_stats: LatencyStatistics | None = None
    extended_metrics: ExtendedEfficiencyMetrics | None = None


def is_partial(result: ExperimentResult) -> bool:
    """True when the result says it is partial (``aggregation.partial``, written by ``recover``)."""
    extra = result.aggregation.model_extra if result.aggregation is not None else None
    return bool((extra or {}).get("partial"))
