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


class TestRequestOwnership:
    """``request_ownership``: the first rank of each tensor-parallel group counts its requests."""

    @pytest.mark.parametrize(
        ("rank", "world", "tp_size", "override"),
        [
            (0, 4, 2, None),
            (1, 4, 2, None),
            (2, 4, 2, None),
            (3, 4, 2, None),
            (3, 4, 1, None),
            (0, 8, 4, None),
            (5, 8, 4, None),
            (4, 8, 4, None),
            (7, 8, 8, None),
            (0, 1, 1, None),
        ],
    )
    def test_first_rank_of_each_group(
        self, rank: int, world: int, tp_size: int, override: bool | None
    ) -> None:
        """Rank r of groups of k consecutive ranks counts when it is its group's first."""
        groups = [list(range(start, start + tp_size)) for start in range(0, world, tp_size)]
        first_ranks = {group[0] for group in groups}
        assert payloads.request_ownership(rank, world, tp_size, override) is (rank in first_ranks)

    @pytest.mark.parametrize(
        ("rank", "tp_size", "override", "expected"),
        [
            (0, None, None, None),
            (3, None, None, None),
            (1, 2, True, True),
            (0, 2, False, False),
            (1, None, False, False),
            (0, None, True, True),
        ],
    )
    def test_default_and_override(
        self, rank: int, tp_size: int | None, override: bool | None, expected: bool | None
    ) -> None:
        """No size and no override: ``None`` (nothing to write); an override wins."""
        assert payloads.request_ownership(rank, 4, tp_size, override) is expected

    @pytest.mark.parametrize(
        ("world", "tp_size", "override", "match"),
        [
            (4, 0, None, "int >= 1"),
            (4, -2, None, "int >= 1"),
            (4, 3, None, "does not divide"),
            (6, 4, None, "does not divide"),
            (2, 4, None, "does not divide"),
            (4, True, None, "int >= 1"),
            (4, 2.0, None, "int >= 1"),
            (4, 3, True, "does not divide"),
            (4, None, "yes", "must be a bool"),
            (4, None, 1, "must be a bool"),
        ],
    )
    def test_refuses(self, world: int, tp_size: Any, override: Any, match: str) -> None:
        """A size below 1, not an int, or not dividing the world size, and a non-bool
        override, are ``LedgerError``s (a bad size even with an override)."""
        with pytest.raises(LedgerError, match=match):
            payloads.request_ownership(0, world, tp_size, override)

    @pytest.mark.parametrize("value", [True, False])
    def test_started_fields_carry_it(self, value: bool) -> None:
        """``started_fields`` writes ``counts_requests`` when known and leaves it out when not."""
        assert started(counts_requests=value)["counts_requests"] is value
        assert "counts_requests" not in started()


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
