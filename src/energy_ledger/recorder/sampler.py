"""Background sampling of one GPU: ``DeviceReader`` reads, ``Sampler`` runs it on a thread.

``DeviceReader.read`` takes one reading of every field and never raises for NVML trouble: a failed
read leaves the field out and produces a warning message (the first failure of each field; later
ones are only counted, so a dead sensor does not flood the log). A field the device does not
support is not asked for again. A counter that goes backwards is reported once as a reset. The
counter reads at the start and at the window's edges go through the reader too, so that once
the device is open every NVML error the recorder meets becomes a message in this module, and
none reaches the measured program.

``Sampler`` calls the reader at a fixed rate on a daemon thread and hands each reading to an
``emit`` callback (the recorder's, which stamps the time and appends the event under its lock).
About 10 Hz is the useful maximum: NVML's power and energy values change only every ~100 ms.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from energy_ledger.core.events import SAMPLE_FIELDS
from energy_ledger.exceptions import LedgerError, NvmlError, NvmlNotSupportedError
from energy_ledger.gpu.protocol import GpuDevice

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_HZ = 10.0
"""Background sampling rate: the energy counter does not change faster (NVML-FACTS.md)."""


class DeviceReader:
    """Read samples from a device, turning NVML failures into warning messages.

    Args:
        device: the device to read.
        read_energy: False when the device has no energy counter (do not ask for it).

    Attributes:
        has_counter: False when the device has no energy counter (set by ``probe_counter``).
        failures: per field, how many reads failed.
        unsupported: fields the device does not offer (no longer read).
        counter_reset: True once the energy counter went backwards.
    """

    def __init__(self, device: GpuDevice, *, read_energy: bool = True) -> None:
        self._device = device
        self.has_counter = read_energy
        self.failures: dict[str, int] = dict.fromkeys(SAMPLE_FIELDS, 0)
        self.unsupported: set[str] = set() if read_energy else {"energy_mj"}
        self.counter_reset = False
        self.last_energy_mj: int | None = None
        self._reads: dict[str, Callable[[], float | int]] = {
            name: getattr(device, name) for name in SAMPLE_FIELDS
        }

    def read(self) -> tuple[dict[str, Any], list[str]]:
        """One reading of every supported field.

        Returns:
            The fields read (failed ones left out) and warning messages to log as events.
        """
        fields: dict[str, Any] = {}
        warnings: list[str] = []
        for name, read in self._reads.items():
            if name in self.unsupported:
                continue
            try:
                fields[name] = read()
            except NvmlNotSupportedError as exc:
                self.unsupported.add(name)
                warnings.append(f"NVML cannot read {name} on this GPU ({exc}); it is not sampled")
            except NvmlError as exc:
                self.failures[name] += 1
                if self.failures[name] == 1:
                    warnings.append(
                        f"NVML read of {name} failed ({exc}); the sample leaves it out "
                        "(further failures of this read are counted at the end of the window)"
                    )
        energy = fields.get("energy_mj")
        if energy is not None:
            warning = self.check_energy(energy)
            if warning:
                warnings.append(warning)
        return fields, warnings

    def probe_counter(self, gpu_uuid: str) -> str | None:
        """Read the energy counter once before the run: is there one, and does it answer?

        A GPU without one (pre-Volta) is not asked again, so energy comes from the power
        samples; a failed read is only reported, and the counter is read again at the window.

        Returns:
            A warning message, or ``None`` when the counter answered.
        """
        try:
            self._device.energy_mj()
        except NvmlNotSupportedError:
            self.has_counter = False
            self.unsupported.add("energy_mj")
            return (
                f"GPU {gpu_uuid} has no NVML energy counter: energy is integrated "
                "from power samples"
            )
        except NvmlError as exc:
            return f"NVML energy counter probe failed ({exc}); will retry"
        return None

    def edge_energy(self, where: str) -> tuple[int | None, str | None]:
        """Read the counter at a window edge (``where``, e.g. ``"window start"``).

        Returns:
            The counter in mJ, or ``None`` when there is no counter or the read failed (the
            window's energy is then integrated from power samples), and a warning message for a
            failed read or a counter that went backwards.
        """
        if not self.has_counter:
            return None, None
        try:
            value = self._device.energy_mj()
        except NvmlError as exc:
            return None, (
                f"NVML energy counter read at {where} failed ({exc}); energy of "
                "this window is integrated from power samples"
            )
        return value, self.check_energy(value)

    def check_energy(self, energy_mj: int) -> str | None:
        """Track the counter; return a warning the first time it goes backwards."""
        previous = self.last_energy_mj
        self.last_energy_mj = energy_mj
        if previous is not None and energy_mj < previous and not self.counter_reset:
            self.counter_reset = True
            return (
                f"energy counter reset ({previous} -> {energy_mj} mJ; driver reload?): "
                "energy of this window is integrated from power samples instead"
            )
        return None

    def failure_summary(self) -> list[str]:
        """One message per field that failed more than once (the first was already reported)."""
        return [
            f"NVML read of {name} failed {count} times in total"
            for name, count in self.failures.items()
            if count > 1
        ]


class Sampler:
    """Call ``reader.read`` every ``1 / sample_hz`` seconds on a daemon thread.

    Args:
        reader: what to read.
        emit: receives ``(fields, warnings)`` of each reading; called on the sampler thread.
        sample_hz: readings per second.

    Attributes:
        cpu_sec: CPU time the sampler thread used (read after ``stop``).
        samples: readings taken.
        error: the exception that stopped the thread early (``emit`` failed), if any.
    """

    def __init__(
        self,
        reader: DeviceReader,
        emit: Callable[[dict[str, Any], list[str]], None],
        *,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
    ) -> None:
        if not sample_hz > 0:
            raise LedgerError(f"sample rate must be > 0 Hz, got {sample_hz}")
        self._reader = reader
        self._emit = emit
        self.interval_sec = 1.0 / sample_hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="energy-ledger-sampler", daemon=True)
        self.cpu_sec = 0.0
        self.samples = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start sampling (the first reading comes one interval from now)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread (at most one reading's time)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        next_t = time.monotonic() + self.interval_sec
        try:
            while not self._stop.wait(max(0.0, next_t - time.monotonic())):
                fields, warnings = self._reader.read()
                self._emit(fields, warnings)
                self.samples += 1
                next_t += self.interval_sec
                now = time.monotonic()
                if next_t < now:  # fell behind (slow reads): skip, do not burst
                    next_t = now + self.interval_sec
        except Exception as exc:  # the measured program must not die with its sampler
            self.error = exc
            logger.error("energy-ledger sampler stopped: %s", exc)
        finally:
            self.cpu_sec = time.thread_time() - cpu0


def measure_power(
    device: GpuDevice, seconds: float, sample_hz: float = DEFAULT_SAMPLE_HZ
) -> tuple[float | None, float, str | None]:
    """Average the device's power over ``seconds`` (the baseline), reading at ``sample_hz``.

    Returns:
        The mean power in watts (``None`` when every read failed), the seconds spent, and a
        warning message when some reads failed.
    """
    readings: list[float] = []
    errors: list[str] = []
    interval_sec = 1.0 / sample_hz
    t0 = time.monotonic()
    while True:
        try:
            readings.append(device.power_w())
        except NvmlError as exc:
            errors.append(str(exc))
        if time.monotonic() + interval_sec > t0 + seconds:
            break
        time.sleep(interval_sec)
    duration_sec = time.monotonic() - t0
    warning = None
    if errors:
        warning = f"{len(errors)} of {len(readings) + len(errors)} power reads failed ({errors[0]})"
    mean_w = sum(readings) / len(readings) if readings else None
    return mean_w, duration_sec, warning


def baseline_fields(
    device: GpuDevice, seconds: float, sample_hz: float, power_w: float | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The fields of a ``baseline`` event: power measured now ("fresh"), or a known one.

    Args:
        device: the GPU, idle.
        seconds: how long to average its power (``measure_power``).
        sample_hz: reads per second.
        power_w: a known baseline (recorded as "cached", for ``seconds``) instead of a reading.

    Returns:
        The fields (``None`` when no power read succeeded) and a warning about failed reads.
    """
    method, duration_sec, warning = "cached", seconds, None
    if power_w is None:
        method = "fresh"
        power_w, duration_sec, warning = measure_power(device, seconds, sample_hz)
        if power_w is None:
            return None, warning
    measured_at = datetime.now(UTC).isoformat()
    fields = {"power_w": power_w, "duration_sec": duration_sec, "method": method}
    return {**fields, "measured_at": measured_at}, warning


__all__ = [
    "DEFAULT_SAMPLE_HZ",
    "SAMPLE_FIELDS",
    "DeviceReader",
    "Sampler",
    "baseline_fields",
    "measure_power",
]
