"""Hardware and software environment models captured alongside a schema-2.0 result."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

_NESTED_CONFIG = ConfigDict(extra="ignore", protected_namespaces=())


class GPUEnvironment(BaseModel):
    """Static description of the GPU an experiment ran on."""

    model_config = _NESTED_CONFIG

    name: str
    vram_total_mb: float
    compute_capability: str | None = None
    pcie_gen: int | None = None
    mig_enabled: bool = False


class CUDAEnvironment(BaseModel):
    """CUDA runtime, driver and cuDNN versions seen by the process."""

    model_config = _NESTED_CONFIG

    version: str
    driver_version: str
    cudnn_version: str | None = None


class ThermalEnvironment(BaseModel):
    """GPU thermal and power-limit state at collection time."""

    model_config = _NESTED_CONFIG

    temperature_c: float | None = None
    power_limit_w: float | None = None
    default_power_limit_w: float | None = None
    fan_speed_pct: float | None = None


class CPUEnvironment(BaseModel):
    """Host CPU model, frequency governor and operating-system platform."""

    model_config = _NESTED_CONFIG

    governor: str = "unknown"
    model: str | None = None
    platform: str


class ContainerEnvironment(BaseModel):
    """Whether the run happened inside a container, and which runtime."""

    model_config = _NESTED_CONFIG

    detected: bool = False
    runtime: str | None = None


class EnvironmentMetadata(BaseModel):
    """Hardware facts gathered once before the measurement starts."""

    model_config = _NESTED_CONFIG

    gpu: GPUEnvironment
    cuda: CUDAEnvironment
    thermal: ThermalEnvironment = Field(default_factory=ThermalEnvironment)
    cpu: CPUEnvironment
    container: ContainerEnvironment = Field(default_factory=ContainerEnvironment)
    collected_at: datetime


class EnvironmentSnapshot(BaseModel):
    """Hardware metadata plus the Python software stack of the run."""

    model_config = _NESTED_CONFIG

    hardware: EnvironmentMetadata
    python_version: str
    installed_packages: list[str]
    tool_version: str
    cuda_version: str | None = None
    cuda_version_source: str | None = None
