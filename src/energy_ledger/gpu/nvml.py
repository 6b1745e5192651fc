"""The real GPU backend: the one module that imports ``pynvml``.

``NvmlBackend`` and ``NvmlDevice`` implement ``gpu.protocol`` over nvidia-ml-py. Every
``pynvml`` error is translated here into ``NvmlError`` (or ``NvmlNotSupportedError`` when the
device lacks the feature) and an NVML that cannot start into ``NvmlUnavailableError``, so no
other module ever sees a ``pynvml`` type.

``pynvml`` is imported lazily, inside ``NvmlBackend``, so importing energy-ledger (for example to
aggregate on a machine without a GPU) never loads the NVML library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from energy_ledger.exceptions import NvmlError, NvmlNotSupportedError, NvmlUnavailableError
from energy_ledger.gpu.protocol import NVML_ENV_VAR, DeviceInfo, cuda_version_text

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def mig_profile_from_name(name: str | None) -> str | None:
    """The profile of a MIG device name such as ``NVIDIA A100 ... MIG 1g.10gb`` (else ``None``)."""
    if name and " MIG " in name:
        return name.rsplit(" MIG ", 1)[1].strip() or None
    return None


class NvmlBackend:
    """``GpuBackend`` over the real NVML (nvidia-ml-py).

    Raises:
        NvmlUnavailableError: pynvml is not installed or NVML cannot initialise (no driver/GPU).
    """

    name = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise NvmlUnavailableError(
                "the nvidia-ml-py package (pynvml) is not installed; "
                f"install it, or set {NVML_ENV_VAR}=fake to try the recorder without a GPU"
            ) from exc
        self._nv: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailableError(
                f"NVML is unavailable on this machine ({exc}): no NVIDIA driver or GPU? "
                f"Set {NVML_ENV_VAR}=fake to try the recorder without a GPU"
            ) from exc
        self._open = True

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call a pynvml function, translating its errors into energy-ledger's."""
        try:
            return fn(*args)
        except self._nv.NVMLError as exc:
            name = getattr(fn, "__name__", "nvml call")
            if getattr(exc, "value", None) in (
                self._nv.NVML_ERROR_NOT_SUPPORTED,
                self._nv.NVML_ERROR_FUNCTION_NOT_FOUND,
            ):
                raise NvmlNotSupportedError(f"{name}: not supported on this device") from exc
            raise NvmlError(f"{name} failed: {exc}") from exc

    def device_count(self) -> int:
        """Number of physical GPUs."""
        return int(self.call(self._nv.nvmlDeviceGetCount))

    def _uuid(self, handle: Any) -> str:
        return _text(self.call(self._nv.nvmlDeviceGetUUID, handle))

    def _mig_handles(self, parent: Any) -> list[Any]:
        """The MIG devices of ``parent`` (empty when MIG is off or unsupported)."""
        nv = self._nv
        try:
            current, _pending = self.call(nv.nvmlDeviceGetMigMode, parent)
            if current != nv.NVML_DEVICE_MIG_ENABLE:
                return []
            count = int(self.call(nv.nvmlDeviceGetMaxMigDeviceCount, parent))
        except NvmlError:
            return []
        handles = []
        for i in range(count):
            try:
                handles.append(self.call(nv.nvmlDeviceGetMigDeviceHandleByIndex, parent, i))
            except NvmlError:
                continue  # empty slot
        return handles

    def open_device(self, spec: str) -> NvmlDevice:
        """The device one ``CUDA_VISIBLE_DEVICES`` entry names, mapped through its UUID."""
        nv = self._nv
        spec = spec.strip()
        count = self.device_count()
        if spec.isdigit():
            index = int(spec)
            if index >= count:
                raise NvmlError(f"GPU index {index} does not exist (NVML sees {count} GPUs)")
            handle = self.call(nv.nvmlDeviceGetHandleByIndex, index)
            return NvmlDevice(self, handle, handle, index)
        if spec.startswith("MIG-GPU-") and spec.count("/") == 2:
            return self._open_old_mig(spec, count)
        found: list[NvmlDevice] = []
        for index in range(count):
            parent = self.call(nv.nvmlDeviceGetHandleByIndex, index)
            candidates = self._mig_handles(parent) if spec.startswith("MIG-") else [parent]
            found += [
                NvmlDevice(self, h, parent, index)
                for h in candidates
                if self._uuid(h).startswith(spec)
            ]
        if len(found) == 1:
            return found[0]
        if found:
            raise NvmlError(f"{spec!r} matches {len(found)} GPUs: give more of the UUID")
        raise NvmlError(f"no GPU or MIG device matches {spec!r} (NVML sees {count} GPUs)")

    def _open_old_mig(self, spec: str, count: int) -> NvmlDevice:
        """A MIG id of the pre-R470 form ``MIG-GPU-<uuid>/<gi>/<ci>``."""
        nv = self._nv
        gpu_uuid, gi, ci = spec.removeprefix("MIG-").split("/")
        for index in range(count):
            parent = self.call(nv.nvmlDeviceGetHandleByIndex, index)
            if self._uuid(parent) != gpu_uuid:
                continue
            for mig in self._mig_handles(parent):
                gi_ok = str(self.call(nv.nvmlDeviceGetGpuInstanceId, mig)) == gi
                if gi_ok and str(self.call(nv.nvmlDeviceGetComputeInstanceId, mig)) == ci:
                    return NvmlDevice(self, mig, parent, index)
        raise NvmlError(f"no MIG device matches {spec!r}")

    def driver_version(self) -> str | None:
        """The driver version, or ``None``."""
        try:
            return _text(self.call(self._nv.nvmlSystemGetDriverVersion))
        except NvmlError:
            return None

    def cuda_driver_version(self) -> str | None:
        """The CUDA version the driver supports, or ``None``."""
        try:
            return cuda_version_text(int(self.call(self._nv.nvmlSystemGetCudaDriverVersion_v2)))
        except NvmlError:
            return None

    def shutdown(self) -> None:
        """Release NVML."""
        if self._open:
            self._open = False
            try:
                self.call(self._nv.nvmlShutdown)
            except NvmlError as exc:
                logger.debug("nvmlShutdown: %s", exc)


class NvmlDevice:
    """``GpuDevice`` over one NVML handle.

    For a MIG instance, power, energy and temperature come from the parent GPU (NVML offers them
    only there): they cover every instance on that GPU. Memory and utilisation come from the
    instance itself where NVML supports it.
    """

    def __init__(self, backend: NvmlBackend, handle: Any, parent: Any, index: int) -> None:
        self._b = backend
        self._nv = backend._nv
        self._h = handle
        self._parent = parent
        self._index = index
        self._is_mig = handle is not parent

    def _get(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        try:
            return self._b.call(fn, *args)
        except NvmlError as exc:
            logger.debug("%s", exc)
            return None

    def info(self) -> DeviceInfo:
        """Static facts; unknown ones are ``None``."""
        nv, h, p = self._nv, self._h, self._parent
        name = self._get(nv.nvmlDeviceGetName, h)
        memory = self._get(nv.nvmlDeviceGetMemoryInfo, h)
        cc = self._get(nv.nvmlDeviceGetCudaComputeCapability, p)
        mig_mode = self._get(nv.nvmlDeviceGetMigMode, p)
        limit_mw = self._get(nv.nvmlDeviceGetPowerManagementLimit, p)
        default_mw = self._get(nv.nvmlDeviceGetPowerManagementDefaultLimit, p)
        persistence = self._get(nv.nvmlDeviceGetPersistenceMode, p)
        temperature = self._get(nv.nvmlDeviceGetTemperature, p, nv.NVML_TEMPERATURE_GPU)
        pcie = self._get(nv.nvmlDeviceGetCurrPcieLinkGeneration, p)
        uuid = self._b._uuid(h)
        name_text = _text(name) if name is not None else None
        return DeviceInfo(
            index=self._index,
            uuid=uuid,
            parent_uuid=self._b._uuid(p) if self._is_mig else uuid,
            name=name_text,
            is_mig=self._is_mig,
            mig_profile=mig_profile_from_name(name_text) if self._is_mig else None,
            mig_enabled=bool(mig_mode and mig_mode[0] == nv.NVML_DEVICE_MIG_ENABLE),
            vram_total_mb=memory.total / 2**20 if memory is not None else None,
            compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
            pcie_gen=int(pcie) if pcie is not None else None,
            power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
            default_power_limit_w=default_mw / 1000 if default_mw is not None else None,
            persistence_mode=(
                persistence == nv.NVML_FEATURE_ENABLED if persistence is not None else None
            ),
            temperature_c=float(temperature) if temperature is not None else None,
        )

    def power_w(self) -> float:
        """Board power in watts (of the parent GPU for MIG)."""
        return float(self._b.call(self._nv.nvmlDeviceGetPowerUsage, self._parent)) / 1000.0

    def energy_mj(self) -> int:
        """Energy counter in mJ (of the parent GPU for MIG)."""
        return int(self._b.call(self._nv.nvmlDeviceGetTotalEnergyConsumption, self._parent))

    def temperature_c(self) -> float:
        """Core temperature in °C."""
        nv = self._nv
        return float(
            self._b.call(nv.nvmlDeviceGetTemperature, self._parent, nv.NVML_TEMPERATURE_GPU)
        )

    def sm_util_pct(self) -> float:
        """SM utilisation in percent."""
        return float(self._b.call(self._nv.nvmlDeviceGetUtilizationRates, self._h).gpu)

    def memory_used_mb(self) -> float:
        """Memory in use in MiB."""
        return float(self._b.call(self._nv.nvmlDeviceGetMemoryInfo, self._h).used) / 2**20

    def throttle_reasons(self) -> int:
        """Clocks-event-reason bits (the call was renamed from ``...ThrottleReasons``)."""
        nv = self._nv
        fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        fn = fn or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(self._b.call(fn, self._parent))


def _text(value: Any) -> str:
    """NVML strings arrive as ``bytes`` in old pynvml releases and ``str`` in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["NvmlBackend", "NvmlDevice", "mig_profile_from_name"]
