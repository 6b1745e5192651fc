"""Ledger events (format version 1): the one definition of what a log line may hold.

Each event kind is a frozen msgspec struct tagged by ``type``. The value rules of the format are
declared on the fields (counts, latencies, power and energy are ``>= 0``; integers fit in 64
bits; times are ``>= 0``), so the decoder checks them in C for every line, whichever way the
line is read. msgspec's JSON decoder refuses numbers that overflow a float, so every float is
finite. Two rules need code, in ``__post_init__``: a JSON object field may be nested at most
``MAX_NESTING`` levels deep, and a process's index must be below its world size.

``core.decode`` turns bytes into these values; ``core.state`` folds them. Constructing an event in
Python does not check the field rules; ``make_event`` does (it decodes like a log line).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Final

import msgspec

FORMAT_VERSION: Final = 1
"""The ledger format version this package writes and the newest it reads."""

MAX_NESTING: Final = 32
"""Deepest nesting of objects and arrays a JSON object field (``effective_config``,
``environment``) may have. Real configurations are a few levels deep; the bound keeps a
hostile or broken line from exhausting the stack of every reader."""

_INT64_MAX: Final = 2**63 - 1

Count = Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]
"""A count (tokens, iterations, an index): a non-negative 64-bit integer."""
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
"""A physical magnitude that cannot be negative (ms, W, mJ, MB, FLOPs, seconds)."""
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Bits = Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]
"""A bitmask (NVML's clocks-event reasons; every defined bit is below bit 63)."""
JsonObject = dict[str, Any]


def _check_json(name: str, value: JsonObject | None) -> None:
    """Refuse a JSON object field nested deeper than ``MAX_NESTING`` or holding a non-finite float.

    Iterative, so the check itself cannot exhaust the stack.
    """
    if value is None:
        return
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"field {name!r} holds a non-finite number")
            continue
        if depth > MAX_NESTING:
            raise ValueError(f"field {name!r} is nested deeper than {MAX_NESTING} levels")
        stack.extend((child, depth + 1) for child in children)


class _Envelope(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type"):
    """Fields every event carries: format version, sequence number, UNIX time in seconds."""

    TYPE: ClassVar[str]
    v: Annotated[int, msgspec.Meta(ge=FORMAT_VERSION, le=FORMAT_VERSION)] = FORMAT_VERSION
    seq: Count
    t: NonNegative


class ProcessStarted(_Envelope, tag="process_started", frozen=True):
    """First event of every log (``seq`` 0): who this process is and what it measures."""

    experiment_id: str
    run_id: str
    process_index: Count
    world_size: Annotated[int, msgspec.Meta(ge=1, le=_INT64_MAX)]
    gpu_id: Count
    gpu_uuid: str | None = None
    gpu_name: str | None = None
    gpu_is_mig: bool = False
    gpu_mig_profile: str | None = None
    hostname: str | None = None
    pid: Count | None = None
    backend: str = "pytorch"
    backend_version: str | None = None
    config_name: str | None = None
    model_name: str | None = None
    measurement_config_hash: str | None = None
    measurement_methodology: str = "total"
    effective_config: JsonObject | None = None
    environment: JsonObject | None = None
    counts_requests: bool = True

    def __post_init__(self) -> None:
        if self.process_index >= self.world_size:
            raise ValueError(
                f"process_index {self.process_index} is not below world_size {self.world_size}"
            )
        _check_json("effective_config", self.effective_config)
        _check_json("environment", self.environment)


class Baseline(_Envelope, tag="baseline", frozen=True):
    """Idle power of this process's GPU, measured before the window (or taken from a cache)."""

    power_w: NonNegative
    duration_sec: NonNegative
    method: str | None = None
    measured_at: str | None = None


class Warmup(_Envelope, tag="warmup", frozen=True):
    """Outcome of the warm-up phase (the fields of ``WarmupResult``)."""

    converged: bool
    final_cv: NonNegative
    iterations_completed: Count
    target_cv: NonNegative
    max_prompts: Count
    latencies_ms: tuple[NonNegative, ...] = ()
    thermal_floor_wait_s: NonNegative = 0.0


class WindowStarted(_Envelope, tag="window_started", frozen=True):
    """Start of the measured window, with the NVML energy counter read at that moment."""

    energy_mj: NonNegative | None = None


class Sample(_Envelope, tag="sample", frozen=True):
    """One reading of the background sampler."""

    power_w: NonNegative | None = None
    energy_mj: NonNegative | None = None
    temperature_c: float | None = None
    sm_util_pct: Percent | None = None
    memory_used_mb: NonNegative | None = None
    throttle_reasons: Bits | None = None


SAMPLE_FIELDS = (
    "power_w",
    "energy_mj",
    "temperature_c",
    "sm_util_pct",
    "memory_used_mb",
    "throttle_reasons",
)
"""The readings a ``sample`` carries, in field order (the sampler and the fake GPU use it)."""


class Request(_Envelope, tag="request", frozen=True):
    """One completed inference request."""

    latency_ms: NonNegative
    input_tokens: Count
    output_tokens: Count
    ttft_ms: NonNegative | None = None
    itl_ms: tuple[NonNegative, ...] | None = None


class WindowEnded(_Envelope, tag="window_ended", frozen=True):
    """End of the measured window, with the NVML energy counter read at that moment."""

    energy_mj: NonNegative | None = None


class Compute(_Envelope, tag="compute", frozen=True):
    """FLOPs and memory figures of the measured work."""

    flops_total: NonNegative
    peak_memory_mb: NonNegative | None = None
    model_memory_mb: NonNegative | None = None
    flops_method: str | None = None
    flops_confidence: str | None = None
    compute_precision: str | None = None


class WarningEvent(_Envelope, tag="warning", frozen=True):
    """A warning the writer wants carried into the result."""

    message: str


class Clock(_Envelope, tag="clock", frozen=True):
    """A reading of this process's clocks at one instant, for drift and cross-host skew.

    ``t`` is the time the writer stamps on its events. ``monotonic_sec`` is the host's
    monotonic clock at the same instant and ``wall_t`` the host's wall clock (``time.time()``),
    which can differ from ``t`` when the writer stamps events from a monotonic-anchored clock
    and the system clock was stepped. ``fs_offset_sec`` estimates this host's wall clock minus
    the shared results filesystem's clock, to within ``fs_offset_error_sec``; processes on
    different hosts compare it to estimate their clock skew (docs/metrics.md).
    """

    monotonic_sec: NonNegative
    wall_t: NonNegative | None = None
    fs_offset_sec: float | None = None
    fs_offset_error_sec: NonNegative | None = None


class ProcessFinished(_Envelope, tag="process_finished", frozen=True):
    """Last event of a process that completed its work."""

    status: str = "ok"


class ProcessFailed(_Envelope, tag="process_failed", frozen=True):
    """Last event of a process that raised; it writes no marker."""

    error: str


Event = (
    ProcessStarted
    | Baseline
    | Warmup
    | WindowStarted
    | Sample
    | Request
    | WindowEnded
    | Compute
    | WarningEvent
    | Clock
    | ProcessFinished
    | ProcessFailed
)

EVENT_CLASSES: dict[str, type[Event]] = {}
for _cls in (
    ProcessStarted,
    Baseline,
    Warmup,
    WindowStarted,
    Sample,
    Request,
    WindowEnded,
    Compute,
    WarningEvent,
    Clock,
    ProcessFinished,
    ProcessFailed,
):
    _cls.TYPE = str(_cls.__struct_config__.tag)
    EVENT_CLASSES[_cls.TYPE] = _cls


class UnknownEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A line of a ``type`` this version does not know: folded as a count, its fields unread.

    Newer writers may add event types; a reader skips them (with a warning) instead of refusing
    the log, and the fold keeps the sequence numbering intact.
    """

    TYPE: ClassVar[str] = "unknown"
    v: int
    seq: int
    t: float
    type_name: str


def field_names(cls: type[Event]) -> tuple[str, ...]:
    """The fields of an event class after the envelope, in definition order."""
    return tuple(name for name in cls.__struct_fields__ if name not in ("v", "seq", "t"))


_FIELDS: dict[str, tuple[str, ...]] = {
    name: field_names(cls) for name, cls in EVENT_CLASSES.items()
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event: envelope first, then its fields; ``None`` fields are left out."""
    out: dict[str, Any] = {"v": event.v, "seq": event.seq, "t": event.t, "type": event.TYPE}
    for name in _FIELDS[event.TYPE]:
        value = getattr(event, name)
        if value is None:
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


__all__ = [
    "EVENT_CLASSES",
    "FORMAT_VERSION",
    "MAX_NESTING",
    "SAMPLE_FIELDS",
    "Baseline",
    "Clock",
    "Compute",
    "Count",
    "Event",
    "NonNegative",
    "ProcessFailed",
    "ProcessFinished",
    "ProcessStarted",
    "Request",
    "Sample",
    "UnknownEvent",
    "Warmup",
    "WarningEvent",
    "WindowEnded",
    "WindowStarted",
    "event_to_dict",
    "field_names",
]
