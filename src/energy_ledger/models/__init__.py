"""The schema-2.0 pydantic models of LLenergyMeasure results, re-exported.

``results`` holds ``ExperimentResult`` and ``RawProcessResult``, ``metrics`` their parts
(energy, inference, latency, compute, thermal), ``environment`` the ``EnvironmentSnapshot``.
They validate against LLenergyMeasure's JSON Schemas (tests read them from ``shared/compat``).
Models import pydantic and the pure standard library only; the core builds them, the store
writes them. This ``__init__`` only re-exports.
"""

from energy_ledger.models.environment import (
    ContainerEnvironment,
    CPUEnvironment,
    CUDAEnvironment,
    EnvironmentMetadata,
    EnvironmentSnapshot,
    GPUEnvironment,
    ThermalEnvironment,
)
from energy_ledger.models.metrics import (
    BatchEfficiencyMetrics,
    ComputeMetrics,
    EnergyBreakdown,
    EnergyMetrics,
    ExtendedEfficiencyMetrics,
    GPUUtilisationMetrics,
    InferenceMetrics,
    KVCacheEfficiencyMetrics,
    LatencyStatistics,
    MemoryEfficiencyMetrics,
    MultiGPUMetrics,
    RequestLatencyMetrics,
    ThermalThrottleInfo,
    Timestamps,
    WarmupResult,
)
from energy_ledger.models.results import (
    SCHEMA_VERSION,
    AggregationMetadata,
    ExperimentResult,
    RawProcessResult,
)

__all__ = [
    "SCHEMA_VERSION",
    "AggregationMetadata",
    "BatchEfficiencyMetrics",
    "CPUEnvironment",
    "CUDAEnvironment",
    "ComputeMetrics",
    "ContainerEnvironment",
    "EnergyBreakdown",
    "EnergyMetrics",
    "EnvironmentMetadata",
    "EnvironmentSnapshot",
    "ExperimentResult",
    "ExtendedEfficiencyMetrics",
    "GPUEnvironment",
    "GPUUtilisationMetrics",
    "InferenceMetrics",
    "KVCacheEfficiencyMetrics",
    "LatencyStatistics",
    "MemoryEfficiencyMetrics",
    "MultiGPUMetrics",
    "RawProcessResult",
    "RequestLatencyMetrics",
    "ThermalEnvironment",
    "ThermalThrottleInfo",
    "Timestamps",
    "WarmupResult",
]
