"""The GPU check's independent references, read with pynvml directly (never through energy_ledger).

Two readings of the GPU are polled by this (parent) process while the case's recorder processes
run, each on its own thread:

- the **energy counter** (``nvmlDeviceGetTotalEnergyConsumption``, mJ) in a loop with a short
  sleep between reads (a read costs ~3 ms on an H100, and the value changes only every ~100 ms);
- the **power** (``nvmlDeviceGetPowerUsage``, mW) every 10 ms, and beside it, where the GPU offers
  it, the instantaneous power field (``NVML_FI_DEV_POWER_INSTANT``): on Ampere-and-newer GPUs
  other than the A100, ``nvmlDeviceGetPowerUsage`` is documented to be a one-second average, which
  lags the load at the edges of a window.

Each reading is stamped with ``time.time()`` at the middle of its NVML call. The pure functions
below then turn the polls into energies over the ledger's intervals: the counter interpolated
linearly between the two polls around an instant, and the trapezoid integral of the power with its
ends interpolated the same way. ``FakePynvml`` answers the same calls from energy_ledger's
``FakeNvml`` (without faults), so ``--fake`` runs the same code.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

Poll = tuple[float, float]
"""(Unix time at the middle of the read, value)."""

VALUE_TYPES = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
"""``c_nvmlValue_t`` members by ``valueType`` (NVML_VALUE_TYPE_DOUBLE = 0, ...)."""


class SetupError(Exception):
    """The check cannot run here (no GPU, no pynvml, a bad option): exit status 2."""


def text(value: Any) -> str:
    """pynvml strings are bytes in old releases and str in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


class FakePynvml:
    """The pynvml calls this check makes, answered by energy_ledger's fake GPUs (no faults)."""

    NVML_FI_DEV_POWER_INSTANT = 186

    def __init__(self, gpus: int) -> None:
        from energy_ledger.gpu.fake import FakeNvml

        self.fake = FakeNvml(gpus)

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        pass

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.fake.device_count()

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:  # noqa: N802
        return self.fake.devices[i]

    def nvmlDeviceGetUUID(self, h: Any) -> str:  # noqa: N802
        return str(h.uuid)

    def nvmlDeviceGetName(self, h: Any) -> str:  # noqa: N802
        return str(h.info().name)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:  # noqa: N802
        return round(float(h.info().power_limit_w) * 1000)

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return str(self.fake.driver_version())

    def nvmlSystemGetNVMLVersion(self) -> str:  # noqa: N802
        return "fake"

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return 12040

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:  # noqa: N802
        return int(h.energy_mj())

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:  # noqa: N802
        return round(float(h.power_w()) * 1000)

    def nvmlDeviceGetFieldValues(self, h: Any, ids: list[int]) -> Any:  # noqa: N802
        raise NotImplementedError("the fake has no field values")


def open_pynvml(fake: bool, fake_gpus: int) -> Any:
    """pynvml (initialised), or its fake stand-in.

    Raises:
        SetupError: nvidia-ml-py is missing or NVML does not start (no driver or GPU).
    """
    if fake:
        return FakePynvml(fake_gpus)
    try:
        import pynvml
    except ImportError:
        raise SetupError(
            "nvidia-ml-py (pynvml) is not installed: `pip install nvidia-ml-py`, or use --fake"
        ) from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        raise SetupError(
            f"NVML is not usable here ({exc}): this check needs an NVIDIA GPU and its driver; "
            "use --fake to try it without one"
        ) from None
    return pynvml


def resolve_gpu(nv: Any, spec: str) -> tuple[int, Any, str]:
    """(NVML index, handle, UUID) of the GPU an index or a UUID (prefix) names.

    Raises:
        SetupError: no GPU, or none (or several) match.
    """
    count = int(nv.nvmlDeviceGetCount())
    if count == 0:
        raise SetupError("NVML sees no GPU")
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    uuids = [text(nv.nvmlDeviceGetUUID(h)) for h in handles]
    spec = spec.strip()
    if spec.isdigit():
        matches = [int(spec)] if int(spec) < count else []
    else:
        matches = [i for i, u in enumerate(uuids) if u.startswith(spec)]
    if len(matches) != 1:
        raise SetupError(f"--gpu {spec!r} names {len(matches)} of the {count} GPUs {uuids}")
    i = matches[0]
    return i, handles[i], uuids[i]


def gpu_facts(nv: Any, index: int, handle: Any, gpu_uuid: str) -> dict[str, Any]:
    """Name, UUID, driver, NVML and CUDA driver versions, power limit (None when unreadable)."""

    def get(fn: str, *args: Any) -> Any:
        try:
            return getattr(nv, fn)(*args)
        except Exception:
            return None

    cuda = get("nvmlSystemGetCudaDriverVersion")
    limit_mw = get("nvmlDeviceGetEnforcedPowerLimit", handle)
    name, driver, nvml = (
        get("nvmlDeviceGetName", handle),
        get("nvmlSystemGetDriverVersion"),
        get("nvmlSystemGetNVMLVersion"),
    )
    return {
        "index": index,
        "uuid": gpu_uuid,
        "name": None if name is None else text(name),
        "driver": None if driver is None else text(driver),
        "nvml_version": None if nvml is None else text(nvml),
        "cuda_driver_version": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
        "cuda_driver_major": None if cuda is None else cuda // 1000,
        "power_limit_w": None if limit_mw is None else limit_mw / 1000,
    }


class Poller:
    """Poll one GPU's energy counter (as often as ``counter_sleep_sec`` allows) and its power
    (every ``power_interval_sec``) on two daemon threads, from ``start()`` to ``stop()``.

    Attributes:
        counter: (t, mJ) polls. ``counter_cost_sec``: how long each counter read took.
        power: (t, W) polls of ``nvmlDeviceGetPowerUsage``.
        power_instant: (t, W) polls of ``NVML_FI_DEV_POWER_INSTANT`` (empty when unsupported).
        errors: failed reads, per reading.
    """

    def __init__(
        self,
        nv: Any,
        handle: Any,
        *,
        counter_sleep_sec: float = 0.005,
        power_interval_sec: float = 0.010,
    ) -> None:
        self.nv = nv
        self.handle = handle
        self.counter_sleep_sec = counter_sleep_sec
        self.power_interval_sec = power_interval_sec
        self.counter: list[Poll] = []
        self.counter_cost_sec: list[float] = []
        self.power: list[Poll] = []
        self.power_instant: list[Poll] = []
        self.errors = {"counter": 0, "power": 0, "power_instant": 0}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll_counter, daemon=True, name="counter-poller"),
            threading.Thread(target=self._poll_power, daemon=True, name="power-poller"),
        ]

    def start(self) -> None:
        """Start both threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads and wait for them."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def _poll_counter(self) -> None:
        read = self.nv.nvmlDeviceGetTotalEnergyConsumption
        while not self._stop.is_set():
            t0 = time.time()
            try:
                value = read(self.handle)
            except Exception:
                self.errors["counter"] += 1
            else:
                t1 = time.time()
                self.counter.append(((t0 + t1) / 2, float(value)))
                self.counter_cost_sec.append(t1 - t0)
            self._stop.wait(self.counter_sleep_sec)

    def _read_instant_w(self) -> float | None:
        field = self.nv.nvmlDeviceGetFieldValues(self.handle, [self.nv.NVML_FI_DEV_POWER_INSTANT])
        value = field[0]
        if value.nvmlReturn != 0 or not 0 <= value.valueType < len(VALUE_TYPES):
            return None
        return float(getattr(value.value, VALUE_TYPES[value.valueType])) / 1000

    def _poll_power(self) -> None:
        read = self.nv.nvmlDeviceGetPowerUsage
        instant_ok = True
        next_t = time.monotonic()
        while not self._stop.is_set():
            t0 = time.time()
            try:
                watts = read(self.handle) / 1000
            except Exception:
                self.errors["power"] += 1
            else:
                self.power.append(((t0 + time.time()) / 2, float(watts)))
            if instant_ok:
                t0 = time.time()
                try:
                    instant_w = self._read_instant_w()
                except Exception:
                    instant_w = None
                if instant_w is None:
                    # Unsupported here (or the fake): stop asking, as the recorder does.
                    instant_ok = bool(self.power_instant)
                    self.errors["power_instant"] += 1
                else:
                    self.power_instant.append(((t0 + time.time()) / 2, instant_w))
            next_t += self.power_interval_sec
            self._stop.wait(max(0.0, next_t - time.monotonic()))


# Pure functions -------------------------------------------------------------------------------


def merge_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Windows merged into disjoint runs (overlapping or touching windows join), as the
    aggregator does for the processes of one GPU."""
    runs: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return runs


def interpolate(polls: Sequence[Poll], t: float) -> float:
    """The polled value at ``t``, linear between the two polls around it.

    Raises:
        ValueError: ``t`` is outside the polled span (the poller must bracket every window).
    """
    times = [p[0] for p in polls]
    i = bisect.bisect_left(times, t)
    if i < len(polls) and times[i] == t:
        return polls[i][1]
    if i == 0 or i == len(polls):
        span = f"[{times[0]:.3f}, {times[-1]:.3f}]" if polls else "(no polls)"
        raise ValueError(f"t={t:.3f} is outside the polled span {span}")
    (t0, v0), (t1, v1) = polls[i - 1], polls[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def counter_delta_j(polls: Sequence[Poll], runs: Sequence[tuple[float, float]]) -> float:
    """Σ over runs of the interpolated counter at the run's end minus at its start, in J."""
    return sum(interpolate(polls, b) - interpolate(polls, a) for a, b in runs) / 1000


def power_integral_j(polls: Sequence[Poll], runs: Sequence[tuple[float, float]]) -> float:
    """Σ over runs of the trapezoid integral of the polled power, ends interpolated, in J."""
    total = 0.0
    for a, b in runs:
        inside = [p for p in polls if a < p[0] < b]
        points = [(a, interpolate(polls, a)), *inside, (b, interpolate(polls, b))]
        total += sum((q[0] - p[0]) * (p[1] + q[1]) / 2 for p, q in itertools.pairwise(points))
    return total


def change_intervals_sec(polls: Sequence[Poll]) -> list[float]:
    """Seconds between consecutive changes of a polled counter (its update period)."""
    changes = [q[0] for p, q in itertools.pairwise(polls) if q[1] != p[1]]
    return [b - a for a, b in itertools.pairwise(changes)]


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float | None:
    """The median, None when empty."""
    return statistics.median(values) if values else None
