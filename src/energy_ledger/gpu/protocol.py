"""What the recorder needs from a GPU: ``DeviceInfo``, ``GpuDevice`` and ``GpuBackend``.

``GpuBackend`` is NVML as a whole (driver versions, finding the device a
``CUDA_VISIBLE_DEVICES`` entry names); ``GpuDevice`` is what is read from one device.
``gpu.nvml`` implements them over nvidia-ml-py and ``gpu.fake`` with deterministic traces; both
import this module and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

NVML_ENV_VAR = "ENERGY_LEDGER_NVML"
"""Environment variable that picks the backend: ``fake``, ``nvml`` or unset (same as ``nvml``)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Static facts about one device, for ``process_started`` and the environment snapshot.

    Every field that NVML could not give is ``None`` (the snapshot says "unknown" instead).

    Attributes:
        index: NVML index of the physical GPU (NVML ignores ``CUDA_VISIBLE_DEVICES``).
        uuid: UUID of the device the process uses (a ``MIG-...`` UUID for a MIG instance).
        parent_uuid: UUID of the physical GPU whose power and energy counter are read.
        name: marketing name, e.g. ``NVIDIA H100 80GB HBM3``.
        is_mig: True when the process uses a MIG instance.
        mig_profile: the MIG profile (e.g. ``1g.10gb``) of a MIG instance.
        mig_enabled: whether MIG mode is on for the physical GPU.
    """

    index: int
    uuid: str
    parent_uuid: str
    name: str | None = None
    is_mig: bool = False
    mig_profile: str | None = None
    mig_enabled: bool = False
    vram_total_mb: float | None = None
    compute_capability: str | None = None
    pcie_gen: int | None = None
    power_limit_w: float | None = None
    default_power_limit_w: float | None = None
    persistence_mode: bool | None = None
    temperature_c: float | None = None


class GpuDevice(Protocol):
    """Readings of one device. Each method raises ``NvmlError`` when the read fails."""

    def info(self) -> DeviceInfo:
        """Static facts (never raises: unknown facts are ``None``)."""
        ...

    def power_w(self) -> float:
        """Current board power draw in watts (about 2 us a read)."""
        ...

    def energy_mj(self) -> int:
        """Energy counter in millijoules since the driver loaded (about 3 ms a read)."""
        ...

    def temperature_c(self) -> float:
        """GPU core temperature in degrees Celsius."""
        ...

    def sm_util_pct(self) -> float:
        """SM utilisation over the last sample period, in percent."""
        ...

    def memory_used_mb(self) -> float:
        """Device memory in use, in MiB."""
        ...

    def throttle_reasons(self) -> int:
        """NVML clocks-event-reason bitmask."""
        ...


class GpuBackend(Protocol):
    """NVML as a whole: versions, and finding devices."""

    name: str
    """``nvml`` or ``fake``; written to the log so a fake run is never mistaken for a real one."""

    def device_count(self) -> int:
        """Number of physical GPUs NVML sees."""
        ...

    def open_device(self, spec: str) -> GpuDevice:
        """The device named by one ``CUDA_VISIBLE_DEVICES`` entry.

        Args:
            spec: an NVML index (``"3"``), a GPU UUID or unique prefix (``"GPU-8a4c..."``), or a
                MIG id (``"MIG-<uuid>"`` or the older ``"MIG-GPU-<uuid>/<gi>/<ci>"``).

        Raises:
            NvmlError: no such device.
        """
        ...

    def driver_version(self) -> str | None:
        """The NVIDIA driver version, or ``None``."""
        ...

    def cuda_driver_version(self) -> str | None:
        """The CUDA version the driver supports (``"12.4"``), or ``None``."""
        ...

    def shutdown(self) -> None:
        """Release NVML (idempotent)."""
        ...


def cuda_version_text(version: int) -> str:
    """NVML's integer CUDA version (``12040``) as text (``"12.4"``)."""
    return f"{version // 1000}.{(version % 1000) // 10}"
