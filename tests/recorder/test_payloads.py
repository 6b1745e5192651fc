"""Tests of ``recorder.payloads``: the fields the recorder writes, built and checked purely."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.protocol import DeviceInfo
from energy_ledger.recorder import payloads, recorder
from energy_ledger.recorder.launch import LaunchInfo

LAUNCH = LaunchInfo(1, 2, 1, "run-1", "1")
GPU = DeviceInfo(index=3, uuid="GPU-a", parent_uuid="GPU-a", name="H100")
MIG = DeviceInfo(index=0, uuid="MIG-b", parent_uuid="GPU-p", is_mig=True, mig_profile="1g.10gb")


class RunConfig(BaseModel):
    """A pydantic experiment config, as a caller might pass one."""

    model_name: str
    batch: int


def started(info: DeviceInfo = GPU, **changes: Any) -> dict[str, Any]:
    """``started_fields`` with fixed process facts, changed by keyword."""
    kwargs: dict[str, Any] = {
        "hostname": "node-1",
        "pid": 42,
        "backend": "pytorch",
        "backend_version": None,
        "environment": None,
        "config": None,
    }
    return payloads.started_fields("exp", LAUNCH, info, **(kwargs | changes))


class TestConfig:
    """Configs are hashed stably and stored as JSON-ready dicts."""

    def test_hash_ignores_key_order_and_sees_values(self) -> None:
        """Equal configs hash alike whatever their key order; another value hashes otherwise."""
        a = payloads.config_hash({"a": 1, "b": [Path("/x")]})
        assert a == payloads.config_hash({"b": ["/x"], "a": 1})
        assert a != payloads.config_hash({"a": 2, "b": ["/x"]})
        assert len(a) == 16 and int(a, 16) >= 0

    def test_recorder_still_exports_the_hash(self) -> None:
        """``config_hash`` stays importable from ``recorder.recorder``, where it used to live."""
        assert recorder.config_hash is payloads.config_hash

    @pytest.mark.parametrize(
        ("config", "expected"),
        [
            (None, None),
            ({"model_name": "m", "path": Path("/x")}, {"model_name": "m", "path": "/x"}),
            (RunConfig(model_name="m", batch=8), {"model_name": "m", "batch": 8}),
        ],
    )
    def test_normalise(self, config: Any, expected: dict[str, Any] | None) -> None:
        """A mapping or pydantic model becomes a JSON-ready dict; ``None`` stays ``None``."""
        assert payloads.normalise_config(config) == expected

    @pytest.mark.parametrize("config", [["model_name", "m"], "m", 3])
    def test_refuses_what_is_not_a_mapping(self, config: Any) -> None:
        """Anything but a mapping or a pydantic model is a ``LedgerError``."""
        with pytest.raises(LedgerError, match="config must be a mapping"):
            payloads.normalise_config(config)


class TestStartedFields:
    """``process_started`` names the run and the physical GPU and leaves out unknowns."""

    def test_fields_in_order_without_none(self) -> None:
        """The fields come in a fixed order; those that are ``None`` are left out."""
        assert list(started()) == [
            "experiment_id",
            "run_id",
            "process_index",
            "world_size",
            "gpu_id",
            "gpu_uuid",
            "gpu_name",
            "gpu_is_mig",
            "hostname",
            "pid",
            "backend",
        ]
        assert started()["gpu_id"] == 3 and started()["process_index"] == 1

    def test_mig_instance_is_named_by_its_parent(self) -> None:
        """A MIG instance's ``gpu_uuid`` is its parent GPU's, with its profile beside it."""
        fields = started(MIG)
        assert (fields["gpu_uuid"], fields["gpu_mig_profile"]) == ("GPU-p", "1g.10gb")

    def test_config_adds_itself_its_hash_and_its_names(self) -> None:
        """A config adds ``effective_config``, its hash and its string name fields only."""
        config = {"model_name": "m", "config_name": 7, "batch": 8}
        fields = started(config=config)
        assert fields["effective_config"] == config
        assert fields["measurement_config_hash"] == payloads.config_hash(config)
        assert fields["model_name"] == "m" and "config_name" not in fields


class TestDeviceWarnings:
    """Readings that are not a real, whole GPU's are said first."""

    @pytest.mark.parametrize(
        ("info", "backend", "expected"),
        [
            (GPU, "nvml", []),
            (GPU, "fake", ["not from a real GPU"]),
            (MIG, "nvml", ["whole parent GPU GPU-p"]),
            (MIG, "fake", ["not from a real GPU", "whole parent GPU GPU-p"]),
        ],
    )
    def test_warnings(self, info: DeviceInfo, backend: str, expected: list[str]) -> None:
        """The fake backend's warning comes before the MIG one; a real whole GPU has none."""
        messages = payloads.device_warnings(info, backend)
        assert len(messages) == len(expected)
        assert all(part in message for part, message in zip(expected, messages, strict=True))


class TestRequestValues:
    """Number-like request values are converted; what JSON or the format cannot hold is not."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(1, 1.0), (np.float32(2.5), 2.5), (np.int64(3), 3.0), (fractions.Fraction(3, 2), 1.5)],
    )
    def test_as_number(self, value: object, expected: float) -> None:
        """Ints, numpy scalars and fractions become floats."""
        got = payloads.as_number("x", value)
        assert type(got) is float and got == expected

    @pytest.mark.parametrize("value", [True, "fast", None, [1.0]])
    def test_as_number_refuses(self, value: object) -> None:
        """Bools and non-numbers are refused, naming the field."""
        with pytest.raises(LedgerError, match="x must be a number"):
            payloads.as_number("x", value)

    def test_normalise_request_converts(self) -> None:
        """Latency becomes a float and token counts ints, in place."""
        obj = {"latency_ms": np.float64(1.5), "input_tokens": np.int64(4), "output_tokens": 2}
        payloads.normalise_request(obj)
        assert obj == {"latency_ms": 1.5, "input_tokens": 4, "output_tokens": 2}
        assert type(obj["latency_ms"]) is float and type(obj["input_tokens"]) is int

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"latency_ms": float("nan")}, "latency_ms must be finite"),
            ({"latency_ms": -1}, "latency_ms must be finite"),
            ({"input_tokens": True}, "input_tokens must be an int"),
            ({"output_tokens": 2.0}, "output_tokens must be an int"),
            ({"output_tokens": -1}, "output_tokens must be >= 0"),
        ],
    )
    def test_normalise_request_refuses(self, changes: dict[str, Any], match: str) -> None:
        """NaN, negatives, bools and non-integral token counts are refused."""
        obj = {"latency_ms": 1.0, "input_tokens": 1, "output_tokens": 1} | changes
        with pytest.raises(LedgerError, match=match):
            payloads.normalise_request(obj)

    @pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (np.float32(0.5), 0.5), (0.0, 0.0)])
    def test_ttft(self, value: object, expected: float) -> None:
        """A time to first token is converted to a float."""
        assert payloads.checked_ttft_ms(value) == expected

    @pytest.mark.parametrize(
        ("value", "match"),
        [(-1.0, "finite and >= 0"), (float("inf"), "finite and >= 0"), ("x", "a number")],
    )
    def test_ttft_refuses(self, value: object, match: str) -> None:
        """A negative, infinite or non-number time to first token is refused."""
        with pytest.raises(LedgerError, match=match):
            payloads.checked_ttft_ms(value)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [([1, 2.5], [1.0, 2.5]), ((), []), (np.array([0.5, 1.0]), [0.5, 1.0])],
    )
    def test_itl(self, value: Any, expected: list[float]) -> None:
        """Sequences and arrays of numbers become lists of floats."""
        assert payloads.itl_values(value) == expected

    @pytest.mark.parametrize(
        ("value", "match"),
        [
            (["a"], "sequence of numbers"),
            ("ab", "sequence of numbers"),
            ([1.0, float("nan")], "finite numbers"),
            ([1e308, 1e308], "finite numbers"),
        ],
    )
    def test_itl_refuses(self, value: Any, match: str) -> None:
        """Non-numbers, NaN and values whose sum overflows are refused."""
        with pytest.raises(LedgerError, match=match):
            payloads.itl_values(value)
