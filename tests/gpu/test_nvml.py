"""Tests of the real NVML backend's error translation and device mapping (with a stub pynvml)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from energy_ledger.exceptions import NvmlError, NvmlNotSupportedError, NvmlUnavailableError
from energy_ledger.gpu.nvml import NvmlBackend, mig_profile_from_name

NOT_SUPPORTED = 3
UNKNOWN = 999


class StubNVMLError(Exception):
    """pynvml's error type: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass(eq=False)
class Handle:
    """A stub NVML device handle."""

    uuid: str
    power_mw: int = 100_000
    migs: list[Handle] = field(default_factory=list)
    gi: int = 0
    ci: int = 0
    name: str = "NVIDIA H100 80GB HBM3"


def stub_pynvml(gpus: list[Handle], *, init_error: int | None = None) -> types.ModuleType:
    """A module that answers like pynvml for the calls the backend makes."""
    nv = types.ModuleType("pynvml")

    def fail(code: int) -> Any:
        def call(*_args: Any) -> Any:
            raise StubNVMLError(code)

        return call

    def init() -> None:
        if init_error is not None:
            raise StubNVMLError(init_error)

    def mig_mode(h: Handle) -> tuple[int, int]:
        return (1, 1) if h.migs else (0, 0)

    def mig_by_index(h: Handle, i: int) -> Handle:
        if i >= len(h.migs):
            raise StubNVMLError(UNKNOWN)
        return h.migs[i]

    def power(h: Handle) -> int:
        if h.power_mw < 0:
            raise StubNVMLError(NOT_SUPPORTED)
        return h.power_mw

    attrs: dict[str, Any] = {
        "NVMLError": StubNVMLError,
        "NVML_ERROR_NOT_SUPPORTED": NOT_SUPPORTED,
        "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
        "NVML_DEVICE_MIG_ENABLE": 1,
        "NVML_FEATURE_ENABLED": 1,
        "NVML_TEMPERATURE_GPU": 0,
        "nvmlInit": init,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i],
        "nvmlDeviceGetUUID": lambda h: h.uuid.encode(),
        "nvmlDeviceGetName": lambda h: h.name,
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_by_index,
        "nvmlDeviceGetGpuInstanceId": lambda h: h.gi,
        "nvmlDeviceGetComputeInstanceId": lambda h: h.ci,
        "nvmlDeviceGetPowerUsage": power,
        "nvmlDeviceGetTotalEnergyConsumption": fail(NOT_SUPPORTED),
        "nvmlDeviceGetTemperature": fail(UNKNOWN),
        "nvmlDeviceGetFanSpeed": fail(UNKNOWN),
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12040,
        "__getattr__": lambda name: fail(NOT_SUPPORTED),
    }
    for key, value in attrs.items():
        if callable(value) and key.startswith("nvml"):
            value.__name__ = key  # pynvml's functions carry their NVML names
        setattr(nv, key, value)
    return nv


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> list[Handle]:
    """Two stub GPUs; the second has two MIG instances."""
    migs = [
        Handle("MIG-aaaa-1111", gi=1, ci=0, name="NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
        Handle("MIG-bbbb-2222", gi=2, ci=0, name="NVIDIA H100 80GB HBM3 MIG 3g.40gb"),
    ]
    gpus = [Handle("GPU-0000-aaaa"), Handle("GPU-1111-bbbb", power_mw=250_000, migs=migs)]
    monkeypatch.setitem(sys.modules, "pynvml", stub_pynvml(gpus))
    return gpus


class TestNvmlUnavailable:
    def test_pynvml_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without pynvml the error says so and points at the fake backend."""
        monkeypatch.setitem(sys.modules, "pynvml", None)
        with pytest.raises(NvmlUnavailableError, match="ENERGY_LEDGER_NVML=fake"):
            NvmlBackend()

    def test_init_fails(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An NVML that cannot initialise (no driver) is NvmlUnavailableError, not a crash."""
        monkeypatch.setitem(sys.modules, "pynvml", stub_pynvml([], init_error=12))
        with pytest.raises(NvmlUnavailableError, match="NVML is unavailable"):
            NvmlBackend()


class TestErrorTranslation:
    def test_not_supported(self, machine: list[Handle]) -> None:
        """NVML_ERROR_NOT_SUPPORTED becomes NvmlNotSupportedError."""
        device = NvmlBackend().open_device("0")
        with pytest.raises(NvmlNotSupportedError):
            device.energy_mj()

    def test_other_errors(self, machine: list[Handle]) -> None:
        """Any other NVML error becomes NvmlError naming the call, with the cause chained."""
        device = NvmlBackend().open_device("0")
        with pytest.raises(NvmlError, match="nvmlDeviceGetTemperature") as info:
            device.temperature_c()
        assert not isinstance(info.value, NvmlNotSupportedError)
        assert isinstance(info.value.__cause__, StubNVMLError)

    def test_info_never_raises(self, machine: list[Handle]) -> None:
        """Facts NVML cannot give are None in DeviceInfo."""
        info = NvmlBackend().open_device("0").info()
        assert info.uuid == "GPU-0000-aaaa" and info.temperature_c is None


class TestDeviceMapping:
    @pytest.mark.parametrize(
        ("spec", "uuid", "power_w"),
        [
            ("1", "GPU-1111-bbbb", 250.0),
            ("GPU-0000-aaaa", "GPU-0000-aaaa", 100.0),
            ("GPU-1111", "GPU-1111-bbbb", 250.0),
            ("MIG-bbbb-2222", "MIG-bbbb-2222", 250.0),
            ("MIG-GPU-1111-bbbb/1/0", "MIG-aaaa-1111", 250.0),
        ],
    )
    def test_specs(self, machine: list[Handle], spec: str, uuid: str, power_w: float) -> None:
        """Indices, UUID prefixes and both MIG id forms map to the right device."""
        device = NvmlBackend().open_device(spec)
        info = device.info()
        assert info.uuid == uuid
        assert device.power_w() == power_w

    def test_mig_reads_parent(self, machine: list[Handle]) -> None:
        """A MIG instance reports its parent GPU and profile."""
        info = NvmlBackend().open_device("MIG-aaaa").info()
        assert (info.is_mig, info.parent_uuid, info.mig_profile, info.index) == (
            True,
            "GPU-1111-bbbb",
            "1g.10gb",
            1,
        )

    @pytest.mark.parametrize(
        "spec", ["2", "GPU-9999", "GPU-", "MIG-cccc", "MIG-", "MIG-GPU-1111-bbbb/5/0"]
    )
    def test_unknown(self, machine: list[Handle], spec: str) -> None:
        """A spec that matches nothing, or more than one device, is an NvmlError."""
        with pytest.raises(NvmlError, match="GPU"):
            NvmlBackend().open_device(spec)

    def test_cuda_version_text(self, machine: list[Handle]) -> None:
        """NVML's integer CUDA version is rendered as major.minor."""
        assert NvmlBackend().cuda_driver_version() == "12.4"

    @pytest.mark.parametrize(
        ("name", "profile"),
        [("NVIDIA A100 MIG 1g.5gb", "1g.5gb"), ("NVIDIA A100", None), (None, None)],
    )
    def test_mig_profile(self, name: str | None, profile: str | None) -> None:
        """The profile is the text after ' MIG ' in a device name."""
        assert mig_profile_from_name(name) == profile
