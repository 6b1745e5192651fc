"""Tests for core.upcast: older event shapes are brought to the current one by pure steps."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from energy_ledger.core import upcast as upcast_module
from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.core.replay import replay_stream
from energy_ledger.core.upcast import UPCASTERS, Record, readable_versions, upcast, v1_identity
from energy_ledger.exceptions import FormatError


def _v1_to_v2(record: Record) -> Record:
    """An imagined v2 renames ``sample.power_w`` to ``board_power_w``."""
    if record.get("type") != "sample" or "power_w" not in record:
        return record
    out = {k: v for k, v in record.items() if k != "power_w"}
    return {**out, "board_power_w": record["power_w"]}


class TestUpcast:
    """``upcast`` runs the steps from a record's version to the current one."""

    def test_current_version_reads_version_one(self) -> None:
        """Format version 1 is current and its step is the identity."""
        assert FORMAT_VERSION == 1
        assert readable_versions() == (1,)
        assert UPCASTERS[1] is v1_identity
        record = {"v": 1, "seq": 3, "t": 1.0, "type": "sample", "power_w": 100.0}
        assert upcast(dict(record)) == record

    def test_steps_run_in_turn_and_set_the_version(self) -> None:
        """A v1 record read by a v2 reader gets the v2 shape and ``v`` 2; the input is unchanged."""
        record = {"v": 1, "seq": 3, "t": 1.0, "type": "sample", "power_w": 100.0}
        chain = {1: _v1_to_v2, 2: v1_identity}
        got = upcast(record, upcasters=chain, current=2)
        assert got == {"v": 2, "seq": 3, "t": 1.0, "type": "sample", "board_power_w": 100.0}
        assert record["power_w"] == 100.0

    def test_a_version_without_a_step_is_a_format_error(self) -> None:
        """A version no step reads is refused, naming the versions that are read."""
        with pytest.raises(FormatError, match=r"'v' 0 .*reads 1"):
            upcast({"v": 0, "seq": 1, "t": 1.0, "type": "sample"})


class TestReplayUsesTheUpcasters:
    """An old line in a log goes through the registered steps before it is decoded."""

    def test_an_older_line_is_upgraded_then_folded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With a step for an imagined v0 (power in mW), a v0 sample folds as watts."""

        def v0_to_v1(record: Record) -> Record:
            out: dict[str, Any] = {k: v for k, v in record.items() if k != "power_mw"}
            if "power_mw" in record:
                out["power_w"] = record["power_mw"] / 1000.0
            return out

        monkeypatch.setattr(upcast_module, "UPCASTERS", {0: v0_to_v1, 1: v1_identity})
        monkeypatch.setattr(
            upcast,
            "__kwdefaults__",
            {"upcasters": upcast_module.UPCASTERS, "current": FORMAT_VERSION},
        )
        lines = [
            {
                "v": 1,
                "seq": 0,
                "t": 10.0,
                "type": "process_started",
                "experiment_id": "e",
                "run_id": "r",
                "process_index": 0,
                "world_size": 1,
                "gpu_id": 0,
            },
            {"v": 1, "seq": 1, "t": 11.0, "type": "window_started"},
            {"v": 0, "seq": 2, "t": 12.0, "type": "sample", "power_mw": 250000},
            {"v": 1, "seq": 3, "t": 13.0, "type": "sample", "power_w": 250.0},
            {"v": 1, "seq": 4, "t": 14.0, "type": "window_ended"},
        ]
        data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        state = replay_stream(io.BytesIO(data)).state
        assert state.samples == 2
        assert state.power_integral_j == pytest.approx(250.0)

    def test_without_the_step_the_older_line_is_refused(self) -> None:
        """The same v0 line without a registered step is a format error at its line."""
        data = b"".join(
            orjson.dumps(line) + b"\n"
            for line in [
                {
                    "v": 1,
                    "seq": 0,
                    "t": 10.0,
                    "type": "process_started",
                    "experiment_id": "e",
                    "run_id": "r",
                    "process_index": 0,
                    "world_size": 1,
                    "gpu_id": 0,
                },
                {"v": 0, "seq": 1, "t": 12.0, "type": "sample", "power_mw": 250000},
            ]
        )
        with pytest.raises(FormatError) as info:
            replay_stream(io.BytesIO(data))
        assert info.value.line == 2
