"""Measurement models (inference, energy, compute, efficiency) of the schema-2.0 result."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from energy_ledger.models.samples import FreeForm

_NESTED_CONFIG = ConfigDict(extra="ignore", protected_namespaces=())


class InferenceMetrics(BaseModel):
    """Token counts, throughput and latency of one inference run."""

    model_config = _NESTED_CONFIG

    total_tokens: int
    input_tokens: int
    output_tokens: int
    inference_time_sec: float
    tokens_per_second: float
    latency_per_token_ms: float
    time_to_first_token_ms: float | None = None
    latency_measurements: FreeForm | None = None


class EnergyMetrics(BaseModel):
    """Energy, power and emissions measured for one process."""

    model_config = _NESTED_CONFIG

    total_energy_j: float
    gpu_energy_j: float = 0.0
    cpu_energy_j: float = 0.0
    ram_energy_j: float = 0.0
    gpu_power_w: float = 0.0
    cpu_power_w: float = 0.0
    duration_sec: float
    emissions_kg_co2: float = 0.0
    energy_per_token_j: float = 0.0


class ComputeMetrics(BaseModel):
    """FLOP counts and memory use of one process."""

    model_config = _NESTED_CONFIG

    flops_total: float
    flops_per_token: float = 0.0
    flops_per_second: float = 0.0
    peak_memory_mb: float = 0.0
    model_memory_mb: float = 0.0
    flops_method: str = "unknown"
    flops_confidence: str = "unknown"
    compute_precision: str = "fp16"


class EnergyBreakdown(BaseModel):
    """Raw energy and its baseline-adjusted counterpart."""

    model_config = _NESTED_CONFIG

    raw_j: float
    adjusted_j: float | None = None
    baseline_power_w: float | None = None
    baseline_method: str | None = None
    baseline_timestamp: datetime | None = None
    baseline_cache_age_sec: float | None = None


class MultiGPUMetrics(BaseModel):
    """Energy split across the GPUs of a multi-GPU run."""

    model_config = _NESTED_CONFIG

    num_gpus: int
    energy_per_gpu_j: list[float]
    energy_total_j: float
    energy_per_output_token_j: float


class ThermalThrottleInfo(BaseModel):
    """Thermal and power throttling observed during the measurement."""

    model_config = _NESTED_CONFIG

    detected: bool = False
    thermal: bool = False
    power: bool = False
    sw_thermal: bool = False
    hw_thermal: bool = False
    hw_power: bool = False
    throttle_duration_sec: float = 0.0
    max_temperature_c: float | None = None
    throttle_timestamps: list[float] = Field(default_factory=list)


class WarmupResult(BaseModel):
    """Outcome of the warm-up phase and its convergence check."""

    model_config = _NESTED_CONFIG

    converged: bool
    final_cv: float
    iterations_completed: int
    target_cv: float
    max_prompts: int
    latencies_ms: list[float] = Field(default_factory=list)
    thermal_floor_wait_s: float = Field(default=0.0, ge=0.0)


class LatencyStatistics(BaseModel):
    """Time-to-first-token and inter-token latency statistics."""

    model_config = _NESTED_CONFIG

    ttft_mean_ms: float
    ttft_median_ms: float
    ttft_p95_ms: float
    ttft_p99_ms: float
    ttft_min_ms: float
    ttft_max_ms: float
    ttft_samples: int
    itl_mean_ms: float | None = None
    itl_median_ms: float | None = None
    itl_p95_ms: float | None = None
    itl_p99_ms: float | None = None
    itl_samples: int = 0
    itl_full_mean_ms: float | None = None
    itl_full_p99_ms: float | None = None


class MemoryEfficiencyMetrics(BaseModel):
    """GPU memory use and memory-efficiency ratios."""

    model_config = _NESTED_CONFIG

    total_vram_mb: float = 0.0
    model_memory_mb: float = 0.0
    peak_memory_mb: float = 0.0
    inference_memory_mb: float = 0.0
    kv_cache_mb: float | None = None
    tokens_per_gb_vram: float | None = None
    model_memory_utilisation: float | None = None
    kv_cache_memory_ratio: float | None = None


class GPUUtilisationMetrics(BaseModel):
    """Sampled streaming-multiprocessor and memory-bandwidth utilisation."""

    model_config = _NESTED_CONFIG

    sm_utilisation_mean: float | None = None
    sm_utilisation_samples: int = 0
    memory_bandwidth_utilisation: float | None = None


class BatchEfficiencyMetrics(BaseModel):
    """Batch size, fill and padding statistics."""

    model_config = _NESTED_CONFIG

    effective_batch_size: float | None = None
    batch_utilisation: float | None = None
    padding_overhead: float | None = None
    num_batches: int | None = None


class KVCacheEfficiencyMetrics(BaseModel):
    """KV-cache hit rate and block usage."""

    model_config = _NESTED_CONFIG

    kv_cache_hit_rate: float | None = None
    kv_cache_blocks_used: int | None = None
    kv_cache_blocks_total: int | None = None


class RequestLatencyMetrics(BaseModel):
    """End-to-end request latency statistics."""

    model_config = _NESTED_CONFIG

    e2e_latency_mean_ms: float | None = None
    e2e_latency_median_ms: float | None = None
    e2e_latency_p95_ms: float | None = None
    e2e_latency_p99_ms: float | None = None
    e2e_latency_samples: int = 0


class ExtendedEfficiencyMetrics(BaseModel):
    """Grouped secondary efficiency metrics (memory, utilisation, batching, caching)."""

    model_config = _NESTED_CONFIG

    tpot_ms: float | None = None
    token_efficiency_index: float | None = None
    memory: MemoryEfficiencyMetrics = Field(default_factory=MemoryEfficiencyMetrics)
    gpu_utilisation: GPUUtilisationMetrics = Field(default_factory=GPUUtilisationMetrics)
    batch: BatchEfficiencyMetrics = Field(default_factory=BatchEfficiencyMetrics)
    kv_cache: KVCacheEfficiencyMetrics = Field(default_factory=KVCacheEfficiencyMetrics)
    request_latency: RequestLatencyMetrics = Field(default_factory=RequestLatencyMetrics)


class Timestamps(BaseModel):
    """Start, end and duration of one process's measurement."""

    model_config = _NESTED_CONFIG

    start: datetime
    end: datetime
    duration_sec: float
