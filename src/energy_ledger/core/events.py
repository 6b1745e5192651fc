"""Ledger events: frozen values with a ``type`` tag, and their wire form (format version 1).

Each event kind is a frozen dataclass. ``parse_event`` turns one decoded JSON object into an event
and ``event_to_dict`` turns an event back into the object a writer puts on one line. Both are pure.
The replay's hot path does not build these objects for ``sample`` and ``request`` events (see
``replay``); everything else goes through ``parse_event``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from energy_ledger.exceptions import FormatError, UnsupportedVersionError

FORMAT_VERSION = 1
"""The ledger format version this package writes and the newest it reads."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Envelope:
    seq: int
    t: float
    v: int = FORMAT_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessStarted(_Envelope):
    """First event of every log (``seq`` 0): who this process is and what it measures."""

    TYPE: ClassVar[str] = "process_started"
    experiment_id: str
    run_id: str
    process_index: int
    world_size: int
    gpu_id: int
    gpu_uuid: str | None = None
    gpu_name: str | None = None
    gpu_is_mig: bool = False
    gpu_mig_profile: str | None = None
    hostname: str | None = None
    pid: int | None = None
    backend: str = "pytorch"
    backend_version: str | None = None
    config_name: str | None = None
    model_name: str | None = None
    measurement_config_hash: str | None = None
    measurement_methodology: str = "total"
    effective_config: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline(_Envelope):
    """Idle power of this process's GPU, measured before the window (or taken from a cache)."""

    TYPE: ClassVar[str] = "baseline"
    power_w: float
    duration_sec: float
    method: str | None = None
    measured_at: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Warmup(_Envelope):
    """Outcome of the warm-up phase (the fields of ``WarmupResult``)."""

    TYPE: ClassVar[str] = "warmup"
    converged: bool
    final_cv: float
    iterations_completed: int
    target_cv: float
    max_prompts: int
    latencies_ms: tuple[float, ...] = ()
    thermal_floor_wait_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowStarted(_Envelope):
    """Start of the measured window, with the NVML energy counter read at that moment."""

    TYPE: ClassVar[str] = "window_started"
    energy_mj: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample(_Envelope):
    """One reading of the background sampler."""

    TYPE: ClassVar[str] = "sample"
    power_w: float | None = None
    energy_mj: float | None = None
    temperature_c: float | None = None
    sm_util_pct: float | None = None
    memory_used_mb: float | None = None
    throttle_reasons: int | None = None


SAMPLE_FIELDS = (
    "power_w",
    "energy_mj",
    "temperature_c",
    "sm_util_pct",
    "memory_used_mb",
    "throttle_reasons",
)
"""The readings a ``sample`` carries, in field order (the sampler and the fake GPU use it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(_Envelope):
    """One completed inference request."""

    TYPE: ClassVar[str] = "request"
    latency_ms: float
    input_tokens: int
    output_tokens: int
    ttft_ms: float | None = None
    itl_ms: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowEnded(_Envelope):
    """End of the measured window, with the NVML energy counter read at that moment."""

    TYPE: ClassVar[str] = "window_ended"
    energy_mj: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Compute(_Envelope):
    """FLOPs and memory figures of the measured work."""

    TYPE: ClassVar[str] = "compute"
    flops_total: float
    peak_memory_mb: float | None = None
    model_memory_mb: float | None = None
    flops_method: str | None = None
    flops_confidence: str | None = None
    compute_precision: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WarningEvent(_Envelope):
    """A warning the writer wants carried into the result."""

    TYPE: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessFinished(_Envelope):
    """Last event of a process that completed its work."""

    TYPE: ClassVar[str] = "process_finished"
    status: str = "ok"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessFailed(_Envelope):
    """Last event of a process that raised; it writes no marker."""

    TYPE: ClassVar[str] = "process_failed"
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
    | ProcessFinished
    | ProcessFailed
)

EVENT_CLASSES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ProcessStarted,
        Baseline,
        Warmup,
        WindowStarted,
        Sample,
        Request,
        WindowEnded,
        Compute,
        WarningEvent,
        ProcessFinished,
        ProcessFailed,
    )
}


class UnknownEventType(Exception):
    """Raised by ``parse_event`` for a ``type`` this version does not know (skipped upstream)."""

    def __init__(self, type_name: object) -> None:
        super().__init__(f"unknown event type {type_name!r}")
        self.type_name = type_name


# Field kinds for validation, keyed by the annotation text of the dataclass fields.
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(name: str, annotation: str, value: object) -> object:
    """Validate one field value against its annotation; return the value to store."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None:
        if optional:
            return None
        raise ValueError(f"field {name!r} must not be null")
    if base == "float":
        if _is_number(value):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base == "str":
        if isinstance(value, str):
            return value
    elif base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "dict[str, Any]":
        if isinstance(value, dict):
            return value
    elif base == "tuple[float, ...]":
        if isinstance(value, list | tuple) and all(_is_number(x) for x in value):
            return tuple(value)
    else:  # pragma: no cover - a new annotation without a rule is a programming error
        raise AssertionError(f"no validation rule for {annotation}")
    raise ValueError(f"field {name!r} must be {base}, got {type(value).__name__}")


_FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    type_name: tuple(
        (
            f.name,
            str(f.type),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
        if f.name not in ("seq", "t", "v")
    )
    for type_name, cls in EVENT_CLASSES.items()
}


def check_envelope(obj: dict[str, Any]) -> tuple[int, float, str]:
    """Validate the envelope (``v``, ``seq``, ``t``, ``type``) of a decoded line.

    Raises:
        UnsupportedVersionError: ``v`` is newer than ``FORMAT_VERSION``.
        FormatError: a field is missing or of the wrong type.
    """
    v = obj.get("v")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise FormatError(f"event has no valid format version 'v' (got {v!r})")
    if v > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"event format version {v} is newer than this energy-ledger reads "
            f"({FORMAT_VERSION}); upgrade energy-ledger"
        )
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise FormatError(f"event has no valid 'seq' (got {seq!r})")
    t = obj.get("t")
    if not _is_number(t):
        raise FormatError(f"event has no valid time 't' (got {t!r})")
    type_name = obj.get("type")
    if not isinstance(type_name, str):
        raise FormatError(f"event has no 'type' string (got {type_name!r})")
    return seq, float(t), type_name  # type: ignore[arg-type]


def parse_event(obj: dict[str, Any]) -> Event:
    """Turn one decoded JSON object into a typed event.

    Unknown keys are ignored (newer writers may add optional fields).

    Raises:
        UnknownEventType: the ``type`` is not one this version knows.
        UnsupportedVersionError: the event's ``v`` is too new.
        FormatError: the envelope or a field is invalid.
    """
    seq, t, type_name = check_envelope(obj)
    cls = EVENT_CLASSES.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    kwargs: dict[str, Any] = {"seq": seq, "t": t, "v": obj["v"]}
    for name, annotation, required in _FIELDS[type_name]:
        if name not in obj:
            if required:
                raise FormatError(f"{type_name} event lacks required field {name!r}")
            continue
        try:
            kwargs[name] = _check(name, annotation, obj[name])
        except ValueError as exc:
            raise FormatError(f"{type_name} event: {exc}") from None
    return cls(**kwargs)


def event_to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event: envelope first, then its fields; ``None`` fields are left out."""
    out: dict[str, Any] = {"v": event.v, "seq": event.seq, "t": event.t, "type": event.TYPE}
    for name, _annotation, _required in _FIELDS[event.TYPE]:
        value = getattr(event, name)
        if value is None:
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def make_event(type_name: str, *, seq: int, t: float, **fields: Any) -> Event:
    """Build an event of ``type_name`` from keyword fields, validating them like ``parse_event``."""
    return parse_event({"v": FORMAT_VERSION, "seq": seq, "t": t, "type": type_name, **fields})


__all__ = [
    "EVENT_CLASSES",
    "FORMAT_VERSION",
    "SAMPLE_FIELDS",
    "Baseline",
    "Compute",
    "Event",
    "ProcessFailed",
    "ProcessFinished",
    "ProcessStarted",
    "Request",
    "Sample",
    "UnknownEventType",
    "Warmup",
    "WarningEvent",
    "WindowEnded",
    "WindowStarted",
    "check_envelope",
    "event_to_dict",
    "make_event",
    "parse_event",
]
