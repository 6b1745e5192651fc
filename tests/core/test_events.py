"""Tests for energy_ledger.core.events: parsing, validation and the wire form of ledger events."""

from __future__ import annotations

from typing import Any

import pytest

from energy_ledger.core.decode import (
    UnknownEventType,
    decode_block,
    decode_line,
    make_event,
    parse_event,
    parse_record,
)
from energy_ledger.core.events import (
    EVENT_CLASSES,
    FORMAT_VERSION,
    MAX_NESTING,
    Baseline,
    Clock,
    Compute,
    ProcessFailed,
    ProcessFinished,
    ProcessStarted,
    Request,
    Sample,
    UnknownEvent,
    Warmup,
    WarningEvent,
    WindowEnded,
    WindowStarted,
    event_to_dict,
)
from energy_ledger.exceptions import FormatError, UnsupportedVersionError


def _env(type_name: str, seq: int = 1, t: float = 1700000000.25) -> dict[str, Any]:
    return {"v": 1, "seq": seq, "t": t, "type": type_name}


# Every event type with every field filled in (lists as JSON gives them), as a writer sends them.
FULL: dict[str, dict[str, Any]] = {
    "process_started": {
        **_env("process_started", seq=0),
        "experiment_id": "exp-1",
        "run_id": "run-1",
        "process_index": 1,
        "world_size": 4,
        "gpu_id": 1,
        "gpu_uuid": "GPU-0000",
        "gpu_name": "NVIDIA H100",
        "gpu_is_mig": True,
        "gpu_mig_profile": "1g.10gb",
        "hostname": "node-7",
        "pid": 4242,
        "backend": "vllm",
        "backend_version": "0.6.0",
        "config_name": "cfg",
        "model_name": "gpt2",
        "measurement_config_hash": "abc123",
        "measurement_methodology": "steady_state",
        "effective_config": {"batch_size": 8, "nested": {"a": [1, 2]}},
        "environment": {"gpu": {"name": "H100"}},
        "counts_requests": False,
    },
    "baseline": {
        **_env("baseline"),
        "power_w": 61.5,
        "duration_sec": 30,
        "method": "fresh",
        "measured_at": "2026-01-01T00:00:00+00:00",
    },
    "warmup": {
        **_env("warmup"),
        "converged": True,
        "final_cv": 0.04,
        "iterations_completed": 12,
        "target_cv": 0.05,
        "max_prompts": 50,
        "latencies_ms": [10.5, 11, 9.75],
        "thermal_floor_wait_s": 2.5,
    },
    "window_started": {**_env("window_started"), "energy_mj": 123456789},
    "sample": {
        **_env("sample"),
        "power_w": 250.5,
        "energy_mj": 123460000,
        "temperature_c": 65,
        "sm_util_pct": 97.5,
        "memory_used_mb": 40000.0,
        "throttle_reasons": 0x24,
    },
    "request": {
        **_env("request"),
        "latency_ms": 812.25,
        "input_tokens": 128,
        "output_tokens": 64,
        "ttft_ms": 40.0,
        "itl_ms": [12.0, 12.5, 13],
    },
    "window_ended": {**_env("window_ended"), "energy_mj": 123999999.5},
    "compute": {
        **_env("compute"),
        "flops_total": 1.5e15,
        "peak_memory_mb": 50000.0,
        "model_memory_mb": 480.5,
        "flops_method": "calflops",
        "flops_confidence": "high",
        "compute_precision": "bf16",
    },
    "warning": {**_env("warning"), "message": "GPU 0 is shared\nwith another job ✓"},
    "clock": {
        **_env("clock"),
        "monotonic_sec": 5123.25,
        "wall_t": 1700000000.5,
        "fs_offset_sec": -0.012,
        "fs_offset_error_sec": 0.002,
    },
    "process_finished": {**_env("process_finished"), "status": "ok"},
    "process_failed": {**_env("process_failed"), "error": "RuntimeError: CUDA out of memory"},
}

CLASSES: dict[str, type] = {
    "process_started": ProcessStarted,
    "baseline": Baseline,
    "warmup": Warmup,
    "window_started": WindowStarted,
    "sample": Sample,
    "request": Request,
    "window_ended": WindowEnded,
    "compute": Compute,
    "warning": WarningEvent,
    "clock": Clock,
    "process_finished": ProcessFinished,
    "process_failed": ProcessFailed,
}

# The required fields of each type, as docs/format.md lists them.
REQUIRED: dict[str, tuple[str, ...]] = {
    "process_started": ("experiment_id", "run_id", "process_index", "world_size", "gpu_id"),
    "baseline": ("power_w", "duration_sec"),
    "warmup": ("converged", "final_cv", "iterations_completed", "target_cv", "max_prompts"),
    "window_started": (),
    "sample": (),
    "request": ("latency_ms", "input_tokens", "output_tokens"),
    "window_ended": (),
    "compute": ("flops_total",),
    "warning": ("message",),
    "clock": ("monotonic_sec",),
    "process_finished": (),
    "process_failed": ("error",),
}

ENVELOPE = ("v", "seq", "t", "type")


def _minimal(type_name: str) -> dict[str, Any]:
    full = FULL[type_name]
    return {k: v for k, v in full.items() if k in ENVELOPE or k in REQUIRED[type_name]}


class TestEventTable:
    """The tables in this file cover exactly the event types the package knows."""

    def test_every_type_is_covered(self) -> None:
        """The event types known to the code are exactly the twelve of format version 1."""
        assert set(EVENT_CLASSES) == set(FULL) == set(CLASSES) == set(REQUIRED)

    def test_format_version_is_one(self) -> None:
        """This package writes and reads format version 1."""
        assert FORMAT_VERSION == 1


class TestParseEvent:
    """``parse_event`` turns decoded JSON objects into typed, frozen events."""

    @pytest.mark.parametrize("type_name", sorted(FULL))
    def test_full_event_parses_to_its_class(self, type_name: str) -> None:
        """An event with every field parses to its class, keeping every field value."""
        obj = FULL[type_name]
        event = parse_event(obj)
        assert type(event) is CLASSES[type_name]
        assert (event.v, event.seq, event.t) == (1, obj["seq"], obj["t"])
        for name, value in obj.items():
            if name in ENVELOPE:
                continue
            got = getattr(event, name)
            assert (list(got) if isinstance(got, tuple) else got) == value, name

    @pytest.mark.parametrize("type_name", sorted(FULL))
    def test_full_event_round_trips(self, type_name: str) -> None:
        """``event_to_dict`` gives back exactly the object an event was parsed from."""
        obj = FULL[type_name]
        assert event_to_dict(parse_event(obj)) == obj

    @pytest.mark.parametrize("type_name", sorted(FULL))
    def test_minimal_event_round_trips(self, type_name: str) -> None:
        """An event with only its required fields parses and parses again from its wire form."""
        event = parse_event(_minimal(type_name))
        assert parse_event(event_to_dict(event)) == event

    def test_wire_form_starts_with_the_envelope(self) -> None:
        """The wire form puts ``v``, ``seq``, ``t``, ``type`` first, in that order."""
        assert list(event_to_dict(parse_event(FULL["request"])))[:4] == list(ENVELOPE)

    @pytest.mark.parametrize(
        ("type_name", "field", "default"),
        [
            ("process_started", "gpu_is_mig", False),
            ("process_started", "backend", "pytorch"),
            ("process_started", "measurement_methodology", "total"),
            ("process_started", "gpu_uuid", None),
            ("warmup", "latencies_ms", ()),
            ("warmup", "thermal_floor_wait_s", 0.0),
            ("process_finished", "status", "ok"),
            ("request", "ttft_ms", None),
            ("request", "itl_ms", None),
            ("sample", "throttle_reasons", None),
            ("window_started", "energy_mj", None),
        ],
    )
    def test_optional_fields_take_their_defaults(
        self, type_name: str, field: str, default: object
    ) -> None:
        """A left-out optional field takes the default that docs/format.md documents."""
        assert getattr(parse_event(_minimal(type_name)), field) == default

    @pytest.mark.parametrize(
        ("type_name", "field"),
        [("request", "ttft_ms"), ("request", "itl_ms"), ("sample", "power_w")],
    )
    def test_null_optional_field_means_absent(self, type_name: str, field: str) -> None:
        """An optional field given as JSON null is the same as leaving it out."""
        assert getattr(parse_event({**FULL[type_name], field: None}), field) is None

    def test_unknown_keys_are_ignored(self) -> None:
        """Keys a newer writer may add are ignored, not rejected."""
        event = parse_event({**FULL["request"], "new_field": {"x": 1}})
        assert event == parse_event(FULL["request"])

    def test_integer_time_becomes_float(self) -> None:
        """An integer ``t`` is stored as a float."""
        event = parse_event({**FULL["warning"], "t": 17})
        assert type(event.t) is float
        assert event.t == 17.0

    def test_list_fields_become_tuples(self) -> None:
        """List fields are stored as tuples, so that events stay hashable values."""
        event = parse_event(FULL["request"])
        assert isinstance(event, Request)
        assert event.itl_ms == (12.0, 12.5, 13)

    def test_events_are_frozen(self) -> None:
        """Assigning to an event's field raises."""
        event = parse_event(FULL["request"])
        with pytest.raises(AttributeError):
            event.latency_ms = 1.0  # type: ignore[misc]

    def test_make_event_validates_like_parse_event(self) -> None:
        """``make_event`` builds the same event as parsing, and rejects the same bad fields."""
        fields = {k: v for k, v in FULL["request"].items() if k not in ENVELOPE}
        made = make_event("request", seq=1, t=1700000000.25, **fields)
        assert made == parse_event(FULL["request"])
        with pytest.raises(FormatError):
            make_event("request", seq=1, t=1.0, **{**fields, "input_tokens": "128"})


MISSING = [(type_name, name) for type_name, names in REQUIRED.items() for name in names]


class TestRequiredFields:
    """Every required field must be present and not null."""

    @pytest.mark.parametrize(("type_name", "field"), MISSING)
    def test_missing_required_field_is_a_format_error(self, type_name: str, field: str) -> None:
        """Leaving out a required field raises ``FormatError`` naming the field."""
        obj = {k: v for k, v in FULL[type_name].items() if k != field}
        with pytest.raises(FormatError, match=repr(field)):
            parse_event(obj)

    @pytest.mark.parametrize(("type_name", "field"), MISSING)
    def test_null_required_field_is_a_format_error(self, type_name: str, field: str) -> None:
        """A required field given as JSON null raises ``FormatError`` naming the field."""
        with pytest.raises(FormatError, match=repr(field)):
            parse_event({**FULL[type_name], field: None})


WRONG_TYPES = [
    ("request", "latency_ms", True),
    ("request", "latency_ms", "812"),
    ("request", "latency_ms", [1.0]),
    ("request", "input_tokens", False),
    ("request", "input_tokens", 1.5),
    ("request", "input_tokens", 128.0),
    ("request", "output_tokens", "64"),
    ("request", "ttft_ms", True),
    ("request", "itl_ms", [1.0, True]),
    ("request", "itl_ms", [1.0, "2"]),
    ("request", "itl_ms", 12.0),
    ("sample", "power_w", True),
    ("sample", "energy_mj", "1"),
    ("sample", "throttle_reasons", True),
    ("sample", "throttle_reasons", 4.0),
    ("window_started", "energy_mj", False),
    ("window_ended", "energy_mj", {"mj": 1}),
    ("baseline", "power_w", True),
    ("baseline", "method", 1),
    ("warmup", "converged", 1),
    ("warmup", "iterations_completed", True),
    ("warmup", "latencies_ms", [1.0, None]),
    ("process_started", "process_index", True),
    ("process_started", "world_size", "4"),
    ("process_started", "gpu_id", 0.0),
    ("process_started", "run_id", 7),
    ("process_started", "gpu_is_mig", "false"),
    ("process_started", "gpu_is_mig", 0),
    ("process_started", "effective_config", [1, 2]),
    ("process_started", "environment", "x"),
    ("compute", "flops_total", True),
    ("warning", "message", 5),
    ("process_finished", "status", False),
    ("process_failed", "error", ["boom"]),
]


class TestFieldTypes:
    """Field values must have the JSON type the format gives them."""

    @pytest.mark.parametrize(("type_name", "field", "value"), WRONG_TYPES)
    def test_wrong_type_is_a_format_error(self, type_name: str, field: str, value: object) -> None:
        """A field of the wrong JSON type (a bool is never a number) raises ``FormatError``."""
        with pytest.raises(FormatError, match=repr(field)):
            parse_event({**FULL[type_name], field: value})

    @pytest.mark.parametrize(
        ("type_name", "field", "value"),
        [
            ("request", "latency_ms", 812),
            ("request", "ttft_ms", 0),
            ("sample", "power_w", 250),
            ("baseline", "duration_sec", 30),
            ("warmup", "final_cv", 0),
            ("compute", "flops_total", 10**18),
        ],
    )
    def test_integer_is_a_number(self, type_name: str, field: str, value: int) -> None:
        """An integer is accepted where the format asks for a number."""
        assert getattr(parse_event({**FULL[type_name], field: value}), field) == value


class TestEnvelope:
    """The envelope ``v``/``seq``/``t``/``type`` is checked before anything else."""

    @pytest.mark.parametrize("v", [2, 3, 1000])
    def test_newer_version_is_refused(self, v: int) -> None:
        """An event of a newer format version raises ``UnsupportedVersionError``."""
        with pytest.raises(UnsupportedVersionError, match="upgrade"):
            parse_event({**FULL["request"], "v": v})

    def test_newer_version_wins_over_unknown_type(self) -> None:
        """A newer ``v`` is refused even when its type is unknown here."""
        with pytest.raises(UnsupportedVersionError):
            parse_event({**_env("brand_new"), "v": 2})

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("v", 0),
            ("v", -1),
            ("v", "1"),
            ("v", 1.0),
            ("v", True),
            ("v", None),
            ("seq", -1),
            ("seq", 1.0),
            ("seq", True),
            ("seq", "1"),
            ("t", "1700000000"),
            ("t", True),
            ("t", None),
            ("type", 5),
            ("type", None),
        ],
    )
    def test_bad_envelope_is_a_format_error(self, field: str, value: object) -> None:
        """A bad envelope field raises ``FormatError``, not ``UnsupportedVersionError``."""
        with pytest.raises(FormatError) as info:
            parse_event({**FULL["request"], field: value})
        assert not isinstance(info.value, UnsupportedVersionError)
        assert repr(field) in str(info.value)

    @pytest.mark.parametrize("field", ENVELOPE)
    def test_missing_envelope_field_is_a_format_error(self, field: str) -> None:
        """An event without one of the four envelope fields raises ``FormatError``."""
        obj = {k: v for k, v in FULL["request"].items() if k != field}
        with pytest.raises(FormatError):
            parse_event(obj)


class TestUnknownType:
    """Types this version does not know become ``UnknownEvent`` values the fold counts."""

    def test_unknown_type_is_a_value_with_its_envelope(self) -> None:
        """``parse_record`` keeps an unknown event's ``seq``, ``t`` (as a float) and type name."""
        event = parse_record({"v": 1, "seq": 7, "t": 3, "type": "gpu_clock", "mhz": 1980})
        assert event == UnknownEvent(v=1, seq=7, t=3.0, type_name="gpu_clock")
        assert type(event.t) is float

    @pytest.mark.parametrize("type_name", ["gpu_clock", "Request", "", "request "])
    def test_parse_event_refuses_an_unknown_type(self, type_name: str) -> None:
        """``parse_event`` (the writer's check) raises ``UnknownEventType`` with the name."""
        with pytest.raises(UnknownEventType) as info:
            parse_event({**_env(type_name), "anything": 1})
        assert info.value.type_name == type_name

    def test_unknown_type_is_a_format_error_for_a_writer(self) -> None:
        """A writer that names an unknown type gets a ``FormatError`` (nothing is written)."""
        with pytest.raises(FormatError, match="gpu_clock"):
            make_event("gpu_clock", seq=1, t=1.0)


IMPOSSIBLE = [
    ("request", "input_tokens", -1),
    ("request", "output_tokens", 2**63),
    ("request", "latency_ms", -0.5),
    ("request", "ttft_ms", -1),
    ("request", "itl_ms", [1.0, -2.0]),
    ("sample", "power_w", -3.0),
    ("sample", "energy_mj", -1),
    ("sample", "sm_util_pct", 100.5),
    ("sample", "memory_used_mb", -1),
    ("sample", "throttle_reasons", -4),
    ("baseline", "power_w", -60.0),
    ("baseline", "duration_sec", -1),
    ("warmup", "iterations_completed", -1),
    ("warmup", "latencies_ms", [-1.0]),
    ("window_started", "energy_mj", -5),
    ("compute", "flops_total", -1e12),
    ("process_started", "world_size", 0),
    ("process_started", "gpu_id", -1),
    ("process_started", "pid", -7),
]


class TestValueRules:
    """The format's value rules are declared on the fields and checked on every line."""

    @pytest.mark.parametrize(("type_name", "field", "value"), IMPOSSIBLE)
    def test_impossible_value_is_a_format_error(
        self, type_name: str, field: str, value: object
    ) -> None:
        """Negative counts, latencies, power or energy and out-of-range values are refused."""
        with pytest.raises(FormatError, match=repr(field)):
            parse_event({**FULL[type_name], field: value})

    @pytest.mark.parametrize("value", [0, 1, 2**63 - 1])
    def test_counts_cover_the_64_bit_range(self, value: int) -> None:
        """Zero and every value up to the largest signed 64-bit integer are valid counts."""
        assert parse_event({**FULL["request"], "input_tokens": value}).input_tokens == value

    def test_negative_time_is_refused(self) -> None:
        """An event time before 1970 is not a UNIX time."""
        with pytest.raises(FormatError, match="'t'"):
            parse_event({**FULL["warning"], "t": -1.0})

    def test_index_must_be_below_world_size(self) -> None:
        """A process cannot be process 4 of a world of 4."""
        with pytest.raises(FormatError, match="not below world_size"):
            parse_event({**FULL["process_started"], "process_index": 4, "world_size": 4})

    @pytest.mark.parametrize("field", ["effective_config", "environment"])
    def test_object_fields_are_nested_at_most_max_nesting(self, field: str) -> None:
        """A configuration nested one level deeper than ``MAX_NESTING`` is refused."""
        value: dict[str, Any] = {}
        inner = value
        for _ in range(MAX_NESTING - 1):
            inner["a"] = {}
            inner = inner["a"]
        assert getattr(parse_event({**FULL["process_started"], field: value}), field) == value
        inner["a"] = {}
        with pytest.raises(FormatError, match=f"{field}.*nested deeper than {MAX_NESTING}"):
            parse_event({**FULL["process_started"], field: value})

    def test_deep_line_is_a_format_error_not_a_crash(self) -> None:
        """A line nested 100,000 levels deep is a ``FormatError``, never a ``RecursionError``."""
        line = b'{"v":1,"seq":1,"t":1.0,"type":"warning","message":"m","x":'
        line += b"[" * 100_000 + b"]" * 100_000 + b"}"
        with pytest.raises(FormatError, match="nested too deeply"):
            decode_line(line)

    def test_overflowing_float_is_refused(self) -> None:
        """``1e999`` is not a finite number, so it is not a power reading."""
        line = b'{"v":1,"seq":1,"t":1.0,"type":"sample","power_w":1e999}'
        with pytest.raises(FormatError, match="too large for a 64-bit float"):
            decode_line(line)

    def test_integer_beyond_64_bits_is_refused(self) -> None:
        """A token count of 2**64 is refused whether the line decodes alone or in a block."""
        line = b'{"v":1,"seq":1,"t":1.0,"type":"request","latency_ms":1,'
        line += b'"input_tokens":18446744073709551616,"output_tokens":1}'
        with pytest.raises(FormatError, match="'input_tokens'"):
            decode_line(line)
        assert decode_block([line]) is None
