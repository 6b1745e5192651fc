"""A deterministic stand-in for NVML, for tests, ``simulate`` and trying the recorder without a GPU.

Each fake GPU draws a power that is a pure function of the clock::

    power_w(t)  = base_w + swing_w * sin(2π (t - epoch) / period_sec)
    energy_mj(t) = floor(1000 * ∫ power_w from epoch to t)        (closed form, integer like NVML)

so a test can compute the energy of any span independently of the recorder. GPU ``i`` has
``base_w = 100 + 25 i`` and the UUID ``GPU-fa4e0000-0000-4000-8000-<i as 12 digits>``, so every
fake GPU is distinct. Faults are injected with ``FakeFaults``: NVML errors on chosen calls, a
counter reset, a GPU without an energy counter, or an NVML that cannot start.

Selected by ``open_backend("fake")`` or ``ENERGY_LEDGER_NVML=fake``; ``FakeNvml.from_env`` then
reads ``ENERGY_LEDGER_FAKE_GPUS`` (device count, default 8) and ``ENERGY_LEDGER_FAKE_FAULTS`` (see
``FakeFaults.parse``).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from energy_ledger.core.events import SAMPLE_FIELDS
from energy_ledger.exceptions import NvmlError, NvmlNotSupportedError, NvmlUnavailableError
from energy_ledger.gpu.protocol import DeviceInfo, cuda_version_text

FAKE_GPUS_ENV_VAR = "ENERGY_LEDGER_FAKE_GPUS"
FAKE_FAULTS_ENV_VAR = "ENERGY_LEDGER_FAKE_FAULTS"

DEFAULT_EPOCH_SEC = 1_700_000_000.0
"""When the fake driver "loaded": the counter counts from here (Unix time)."""

READINGS = SAMPLE_FIELDS
"""The ``GpuDevice`` reads a fault can target."""

ALWAYS: frozenset[int] = frozenset({0})
"""Marker call set meaning "every call fails" (call numbers start at 1)."""


@dataclass(frozen=True)
class FakeFaults:
    """Faults a ``FakeNvml`` injects.

    Attributes:
        fail_calls: per reading name (see ``READINGS``), the 1-based call numbers that raise
            ``NvmlError`` on each device; ``ALWAYS`` makes every call fail.
        counter_reset_at_read: from this 1-based energy read on, the counter restarts at 0 as
            after a driver reload.
        no_energy_counter: the energy read raises ``NvmlNotSupportedError`` (pre-Volta GPUs).
        unavailable: creating the backend raises ``NvmlUnavailableError`` (no driver).
    """

    fail_calls: Mapping[str, frozenset[int]] = field(default_factory=dict)
    counter_reset_at_read: int | None = None
    no_energy_counter: bool = False
    unavailable: bool = False

    def fails(self, reading: str, call_number: int) -> bool:
        """True when call ``call_number`` (1-based) of ``reading`` must raise."""
        calls = self.fail_calls.get(reading)
        return calls is not None and (0 in calls or call_number in calls)

    @classmethod
    def parse(cls, spec: str) -> FakeFaults:
        """Parse a fault spec such as ``"power_w@3,4;temperature_c@*;reset@5;no_energy"``.

        Items are separated by ``;``: ``<reading>@<calls>`` (comma-separated call numbers or
        ``*`` for all), ``reset@<n>``, ``no_energy`` and ``unavailable``.

        Raises:
            NvmlError: the spec is malformed.
        """
        fail_calls: dict[str, frozenset[int]] = {}
        reset_at: int | None = None
        no_energy = unavailable = False
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            name, _, arg = item.partition("@")
            try:
                if name == "no_energy" and not arg:
                    no_energy = True
                elif name == "unavailable" and not arg:
                    unavailable = True
                elif name == "reset":
                    reset_at = int(arg)
                elif name in READINGS and arg:
                    fail_calls[name] = (
                        ALWAYS if arg == "*" else frozenset(int(n) for n in arg.split(","))
                    )
                else:
                    raise ValueError(item)
            except ValueError:
                raise NvmlError(f"bad fake NVML fault {item!r} in {spec!r}") from None
        return cls(fail_calls, reset_at, no_energy, unavailable)


class FakeNvml:
    """A ``GpuBackend`` with ``gpus`` deterministic fake GPUs.

    Args:
        gpus: number of physical GPUs.
        faults: faults to inject.
        clock: the time source of the traces; give the recorder the same one.
        mig_instances: MIG instances on GPU 0 (named ``MIG-fa4e0000-...-<n>``); 0 disables MIG.
        epoch_sec: when the fake driver loaded.
    """

    name = "fake"

    def __init__(
        self,
        gpus: int = 8,
        *,
        faults: FakeFaults | None = None,
        clock: Callable[[], float] = time.time,
        mig_instances: int = 0,
        epoch_sec: float = DEFAULT_EPOCH_SEC,
    ) -> None:
        self.faults = faults or FakeFaults()
        if self.faults.unavailable:
            raise NvmlUnavailableError("fake NVML: injected 'unavailable' fault")
        self.clock = clock
        self.epoch_sec = epoch_sec
        self.devices = [FakeDevice(self, i) for i in range(gpus)]
        self.mig_devices = [FakeDevice(self, 0, mig_slot=n) for n in range(mig_instances)]
        self.shut_down = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FakeNvml:
        """A fake configured by ``ENERGY_LEDGER_FAKE_GPUS`` and ``ENERGY_LEDGER_FAKE_FAULTS``."""
        env = os.environ if environ is None else environ
        try:
            gpus = int(env.get(FAKE_GPUS_ENV_VAR, "8"))
        except ValueError:
            raise NvmlError(f"{FAKE_GPUS_ENV_VAR} must be an integer") from None
        return cls(gpus, faults=FakeFaults.parse(env.get(FAKE_FAULTS_ENV_VAR, "")))

    def device_count(self) -> int:
        """Number of fake physical GPUs."""
        return len(self.devices)

    def open_device(self, spec: str) -> FakeDevice:
        """The fake device an index, UUID (prefix) or MIG UUID names."""
        spec = spec.strip()
        if spec.isdigit():
            if int(spec) < len(self.devices):
                return self.devices[int(spec)]
        else:
            found = [d for d in (*self.devices, *self.mig_devices) if d.uuid.startswith(spec)]
            if len(found) == 1:
                return found[0]
            if found:
                raise NvmlError(f"{spec!r} matches {len(found)} fake GPUs: give more of the UUID")
        raise NvmlError(f"no fake GPU matches {spec!r} ({len(self.devices)} fake GPUs)")

    def driver_version(self) -> str | None:
        """A fixed fake driver version."""
        return "999.99.99-fake"

    def cuda_driver_version(self) -> str | None:
        """A fixed fake CUDA driver version."""
        return cuda_version_text(12040)

    def shutdown(self) -> None:
        """Nothing to release."""
        self.shut_down = True


def fake_uuid(index: int) -> str:
    """The UUID of fake GPU ``index``."""
    return f"GPU-fa4e0000-0000-4000-8000-{index:012d}"


class FakeDevice:
    """One fake GPU (or MIG instance on GPU 0) with a sine power trace."""

    period_sec = 10.0
    swing_w = 20.0

    def __init__(self, backend: FakeNvml, index: int, *, mig_slot: int | None = None) -> None:
        self._backend = backend
        self.index = index
        self.base_w = 100.0 + 25.0 * index
        self.uuid = fake_uuid(index)
        self.mig_slot = mig_slot
        if mig_slot is not None:
            self.uuid = f"MIG-fa4e0000-0000-4000-9000-{mig_slot:012d}"
        self._lock = threading.Lock()
        self._calls = dict.fromkeys(READINGS, 0)
        self._reset_base_mj: int | None = None

    def _count(self, reading: str) -> int:
        """Count one call of ``reading``; raise if a fault says so."""
        with self._lock:
            self._calls[reading] += 1
            number = self._calls[reading]
        if self._backend.faults.fails(reading, number):
            raise NvmlError(f"fake NVML: injected error on {reading} call {number}")
        return number

    def calls(self, reading: str) -> int:
        """How many times ``reading`` was called (faulty calls included)."""
        return self._calls[reading]

    def power_at(self, t: float) -> float:
        """The trace's power in watts at Unix time ``t``."""
        phase = 2 * math.pi * (t - self._backend.epoch_sec) / self.period_sec
        return self.base_w + self.swing_w * math.sin(phase)

    def energy_at(self, t: float) -> int:
        """The (reset-free) counter in mJ at Unix time ``t``: the exact integral of the trace."""
        elapsed = t - self._backend.epoch_sec
        phase = 2 * math.pi * elapsed / self.period_sec
        joules = self.base_w * elapsed + self.swing_w * self.period_sec / (2 * math.pi) * (
            1 - math.cos(phase)
        )
        return math.floor(joules * 1000)

    def info(self) -> DeviceInfo:
        """Facts of an H100-like fake."""
        is_mig = self.mig_slot is not None
        return DeviceInfo(
            index=self.index,
            uuid=self.uuid,
            parent_uuid=fake_uuid(self.index),
            name="Fake NVIDIA H100 80GB HBM3" + (" MIG 1g.10gb" if is_mig else ""),
            is_mig=is_mig,
            mig_profile="1g.10gb" if is_mig else None,
            mig_enabled=bool(self._backend.mig_devices) and self.index == 0,
            vram_total_mb=9856.0 if is_mig else 81559.0,
            compute_capability="9.0",
            pcie_gen=5,
            power_limit_w=700.0,
            default_power_limit_w=700.0,
            persistence_mode=True,
            temperature_c=30.0 + self.base_w / 10,
        )

    def power_w(self) -> float:
        """Power of the trace now."""
        self._count("power_w")
        return self.power_at(self._backend.clock())

    def energy_mj(self) -> int:
        """The counter now, after any injected reset."""
        number = self._count("energy_mj")
        faults = self._backend.faults
        if faults.no_energy_counter:
            raise NvmlNotSupportedError("fake NVML: this GPU has no energy counter")
        value = self.energy_at(self._backend.clock())
        reset_at = faults.counter_reset_at_read
        if reset_at is not None and number >= reset_at:
            with self._lock:
                if self._reset_base_mj is None:
                    self._reset_base_mj = value
            value -= self._reset_base_mj
        return value

    def temperature_c(self) -> float:
        """A temperature that follows the power."""
        self._count("temperature_c")
        return round(30.0 + self.power_at(self._backend.clock()) / 10, 1)

    def sm_util_pct(self) -> float:
        """A utilisation that follows the power."""
        self._count("sm_util_pct")
        return round(min(100.0, self.power_at(self._backend.clock()) / 2), 1)

    def memory_used_mb(self) -> float:
        """A constant memory use per GPU."""
        self._count("memory_used_mb")
        return 1024.0 * (self.index + 1)

    def throttle_reasons(self) -> int:
        """The software-power-cap bit near the top of the sine, else 0."""
        self._count("throttle_reasons")
        top = self.base_w + 0.9 * self.swing_w
        return 0x4 if self.power_at(self._backend.clock()) > top else 0


__all__ = [
    "ALWAYS",
    "DEFAULT_EPOCH_SEC",
    "FAKE_FAULTS_ENV_VAR",
    "FAKE_GPUS_ENV_VAR",
    "READINGS",
    "FakeDevice",
    "FakeFaults",
    "FakeNvml",
    "fake_uuid",
]
