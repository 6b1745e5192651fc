"""Tests for energy_ledger.store.writer: the crash-safe ``EventLogWriter``."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from energy_ledger.core.marker import parse_marker
from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import FormatError, LedgerError, UnsafePathError
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import read_events, ticking_clock

T0 = 1700000000.0
EXP = "exp-1"

STARTED: dict[str, Any] = {
    "experiment_id": EXP,
    "run_id": "run-1",
    "process_index": 0,
    "world_size": 1,
    "gpu_id": 0,
}


def _open(root: Path, index: int = 0, **options: Any) -> EventLogWriter:
    options.setdefault("clock", ticking_clock(T0, 0.5))
    options.setdefault("flush_every_sec", 3600.0)
    return EventLogWriter.open(root, EXP, index, **options)


class TestOpen:
    """``EventLogWriter.open`` creates the log at its place in the layout, exactly once."""

    def test_creates_the_log_file(self, tmp_path: Path) -> None:
        """Opening creates ``raw/<id>/process_<i>.events.jsonl``, empty, and no marker."""
        writer = _open(tmp_path, 3)
        expected = tmp_path / "raw" / EXP / "process_3.events.jsonl"
        assert writer.path == expected
        assert writer.marker_path == tmp_path / "raw" / EXP / "process_3.done"
        assert expected.read_bytes() == b""
        assert not writer.marker_path.exists()
        writer.abandon()

    def test_refuses_to_overwrite_an_existing_log(self, tmp_path: Path) -> None:
        """A second writer for the same log raises ``LedgerError`` and leaves the file alone."""
        first = _open(tmp_path)
        first.append("process_started", **STARTED)
        first.flush()
        before = first.path.read_bytes()
        with pytest.raises(LedgerError, match="already exists"):
            _open(tmp_path)
        assert first.path.read_bytes() == before
        first.abandon()

    def test_refuses_an_unsafe_experiment_id(self, tmp_path: Path) -> None:
        """An experiment id that could leave the root raises ``UnsafePathError``."""
        with pytest.raises(UnsafePathError):
            EventLogWriter.open(tmp_path, "../escape", 0)
        assert not (tmp_path.parent / "escape").exists()

    def test_refuses_a_negative_index(self, tmp_path: Path) -> None:
        """A negative process index raises ``LedgerError``."""
        with pytest.raises(LedgerError):
            EventLogWriter.open(tmp_path, EXP, -1)

    def test_unwritable_folder_is_a_ledger_error(self, tmp_path: Path) -> None:
        """A root that is a regular file gives a ``LedgerError`` naming the log."""
        root = tmp_path / "not-a-folder"
        root.write_text("x")
        with pytest.raises(LedgerError, match=r"process_0\.events\.jsonl"):
            EventLogWriter.open(root, EXP, 0)


class TestAppend:
    """Events are validated, numbered and serialised one per line."""

    def test_first_event_must_be_process_started(self, tmp_path: Path) -> None:
        """Appending anything before ``process_started`` raises and writes nothing."""
        writer = _open(tmp_path)
        with pytest.raises(LedgerError, match="process_started"):
            writer.append("request", latency_ms=1.0, input_tokens=1, output_tokens=1)
        writer.flush()
        assert writer.path.read_bytes() == b""
        assert writer.next_seq == 0
        writer.abandon()

    def test_events_are_numbered_from_zero(self, tmp_path: Path) -> None:
        """Appended events get ``seq`` 0, 1, 2, ... and the clock's times, one line each."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.append("window_started", energy_mj=10)
        writer.append("request", latency_ms=5.0, input_tokens=2, output_tokens=3, t=T0 + 99)
        writer.flush()
        lines = read_events(writer.path)
        assert [line["seq"] for line in lines] == [0, 1, 2]
        assert [line["t"] for line in lines] == [T0, T0 + 0.5, T0 + 99]
        assert [line["type"] for line in lines] == ["process_started", "window_started", "request"]
        assert all(line["v"] == 1 for line in lines)
        assert writer.path.read_bytes().endswith(b"\n")
        writer.abandon()

    def test_invalid_event_is_refused_and_not_written(self, tmp_path: Path) -> None:
        """An event with a bad field raises ``FormatError``, writes nothing and keeps its seq."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        with pytest.raises(FormatError, match="input_tokens"):
            writer.append("request", latency_ms=1.0, input_tokens=True, output_tokens=1)
        assert writer.next_seq == 1
        writer.append("warning", message="still fine")
        writer.flush()
        assert [line["seq"] for line in read_events(writer.path)] == [0, 1]
        writer.abandon()

    def test_second_process_started_is_refused(self, tmp_path: Path) -> None:
        """A second ``process_started`` raises, since the replay would reject the log."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        try:
            with pytest.raises(LedgerError):
                writer.append("process_started", **STARTED)
        finally:
            writer.abandon()

    def test_append_after_close_is_refused(self, tmp_path: Path) -> None:
        """Appending to a closed writer raises ``LedgerError``."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.close()
        with pytest.raises(LedgerError, match="closed"):
            writer.append("warning", message="late")


class TestFlushPolicy:
    """Events are buffered and written in batches."""

    def test_nothing_on_disk_before_the_batch_is_full(self, tmp_path: Path) -> None:
        """With ``flush_every_events=3`` the file stays empty until the third event."""
        writer = _open(tmp_path, flush_every_events=3)
        writer.append("process_started", **STARTED)
        writer.append("warning", message="one")
        assert writer.path.read_bytes() == b""
        writer.append("warning", message="two")
        assert len(read_events(writer.path)) == 3
        writer.append("warning", message="three")
        assert len(read_events(writer.path)) == 3
        writer.abandon()

    def test_explicit_flush_writes_the_buffer(self, tmp_path: Path) -> None:
        """``flush()`` writes buffered events at once, as whole lines."""
        writer = _open(tmp_path, flush_every_events=1000)
        writer.append("process_started", **STARTED)
        writer.append("warning", message="one")
        assert writer.path.read_bytes() == b""
        writer.flush()
        data = writer.path.read_bytes()
        assert data.count(b"\n") == 2
        assert data.endswith(b"\n")
        writer.abandon()

    def test_time_based_flush(self, tmp_path: Path) -> None:
        """With ``flush_every_sec=0`` every append is written at once."""
        writer = _open(tmp_path, flush_every_events=1000, flush_every_sec=0.0)
        writer.append("process_started", **STARTED)
        assert len(read_events(writer.path)) == 1
        writer.abandon()

    def test_abandon_loses_only_the_buffer(self, tmp_path: Path) -> None:
        """A crash (``abandon``) leaves the flushed events and no marker."""
        writer = _open(tmp_path, flush_every_events=2)
        writer.append("process_started", **STARTED)
        writer.append("warning", message="flushed")
        writer.append("warning", message="lost")
        writer.abandon()
        assert [line["seq"] for line in read_events(writer.path)] == [0, 1]
        assert not writer.marker_path.exists()


class TestClose:
    """``close()`` ends the log with ``process_finished`` and writes a valid marker."""

    def test_close_writes_finished_and_a_matching_marker(self, tmp_path: Path) -> None:
        """The marker parses and its digest, byte count and final seq describe the file."""
        writer = _open(tmp_path, 2, flush_every_events=4)
        writer.append("process_started", **{**STARTED, "process_index": 2, "world_size": 3})
        for i in range(10):
            writer.append("request", latency_ms=float(i), input_tokens=i, output_tokens=1)
        returned = writer.close()
        data = writer.path.read_bytes()
        lines = read_events(writer.path)
        marker = parse_marker(writer.marker_path.read_bytes())
        assert marker == returned
        assert lines[-1]["type"] == "process_finished"
        assert lines[-1]["status"] == "ok"
        assert marker.final_seq == lines[-1]["seq"] == 11
        assert marker.log_bytes == len(data)
        assert marker.log_sha256 == hashlib.sha256(data).hexdigest()
        assert (marker.process_index, marker.run_id) == (2, "run-1")
        assert writer.closed

    def test_closed_log_replays_finished(self, tmp_path: Path) -> None:
        """The closed log replays without error into a finished state with every request."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.append("window_started")
        writer.append("request", latency_ms=1.0, input_tokens=4, output_tokens=5)
        writer.append("window_ended")
        writer.close(status="partial")
        state = replay_bytes(writer.path.read_bytes()).state
        assert state.finished
        assert (state.requests, state.input_tokens, state.output_tokens) == (1, 4, 5)
        assert read_events(writer.path)[-1]["status"] == "partial"

    def test_close_without_start_is_refused(self, tmp_path: Path) -> None:
        """Closing a writer that never wrote ``process_started`` raises and writes no marker."""
        writer = _open(tmp_path)
        with pytest.raises(LedgerError):
            writer.close()
        assert not writer.marker_path.exists()
        writer.abandon()

    def test_no_temp_files_are_left(self, tmp_path: Path) -> None:
        """After ``close()`` the folder holds exactly the log and the marker."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.close()
        names = sorted(p.name for p in writer.path.parent.iterdir())
        assert names == ["process_0.done", "process_0.events.jsonl"]


class TestFail:
    """``fail()`` ends the log with ``process_failed`` and writes no marker."""

    def test_fail_writes_failed_and_no_marker(self, tmp_path: Path) -> None:
        """The last line is ``process_failed`` with the error, and there is no marker."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.fail("RuntimeError: boom")
        lines = read_events(writer.path)
        assert lines[-1] == {**lines[-1], "type": "process_failed", "error": "RuntimeError: boom"}
        assert lines[-1]["seq"] == 1
        assert not writer.marker_path.exists()
        assert writer.closed
        assert replay_bytes(writer.path.read_bytes()).state.failed_error == "RuntimeError: boom"

    def test_fail_twice_is_harmless(self, tmp_path: Path) -> None:
        """A second ``fail()`` writes nothing more."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.fail("first")
        writer.fail("second")
        assert [line["type"] for line in read_events(writer.path)] == [
            "process_started",
            "process_failed",
        ]


class TestContextManager:
    """``with EventLogWriter...`` closes on success and fails on an exception."""

    def test_clean_exit_closes(self, tmp_path: Path) -> None:
        """Leaving the block normally writes ``process_finished`` and the marker."""
        with _open(tmp_path) as writer:
            writer.append("process_started", **STARTED)
        assert read_events(writer.path)[-1]["type"] == "process_finished"
        assert parse_marker(writer.marker_path.read_bytes()).final_seq == 1

    def test_exception_fails_and_propagates(self, tmp_path: Path) -> None:
        """An exception in the block writes ``process_failed``, no marker, and propagates."""
        with pytest.raises(ValueError, match="bad batch"), _open(tmp_path) as writer:
            writer.append("process_started", **STARTED)
            raise ValueError("bad batch")
        last = read_events(writer.path)[-1]
        assert last["type"] == "process_failed"
        assert last["error"] == "ValueError: bad batch"
        assert not writer.marker_path.exists()


class TestClock:
    """Events are stamped by a clock that never goes backwards unless one is given."""

    def test_default_clock_survives_a_wall_clock_step_back(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no clock given, ``t`` keeps increasing after the system clock is set back."""
        writer = EventLogWriter.open(tmp_path, EXP, 0)
        writer.append("process_started", **STARTED)
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)
        for _ in range(20):
            writer.append("warning", message="after the step")
        writer.flush()
        times = [line["t"] for line in read_events(writer.path)]
        assert times == sorted(times)
        assert times[-1] > time.time() + 3000.0
        writer.abandon()

    def test_given_clock_is_used(self, tmp_path: Path) -> None:
        """A clock passed in stamps the events (tests rely on it)."""
        writer = _open(tmp_path, clock=ticking_clock(T0, 2.0))
        writer.append("process_started", **STARTED)
        writer.append("warning", message="x")
        writer.flush()
        assert [line["t"] for line in read_events(writer.path)] == [T0, T0 + 2.0]
        writer.abandon()


def _whole_second_fstat(real_fstat: Any) -> Any:
    """An ``os.fstat`` whose mtime has lost its sub-second part, as on Lustre."""

    def fstat(fd: int) -> SimpleNamespace:
        mtime_ns = real_fstat(fd).st_mtime_ns
        return SimpleNamespace(st_mtime_ns=mtime_ns - mtime_ns % 1_000_000_000)

    return fstat


class TestFsOffset:
    """A measured flush estimates this host's wall clock minus the filesystem's."""

    def test_local_file_offset_is_zero_within_its_error(self, tmp_path: Path) -> None:
        """On a local file the kernel stamps mtime with this host's clock: the offset is 0."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.flush(measure_fs_offset=True)
        offset = writer.fs_offset
        assert offset is not None
        assert abs(offset.offset_sec) <= offset.error_sec
        assert offset.error_sec < 0.5 or offset.whole_second_mtime
        writer.abandon()

    def test_host_clock_ahead_is_measured(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With ``time.time`` 3 s ahead of the clock that stamps mtimes, the estimate is +3 s."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 3.0)
        writer.flush(measure_fs_offset=True)
        offset = writer.fs_offset
        assert offset is not None
        assert abs(offset.offset_sec - 3.0) <= offset.error_sec
        assert offset.error_sec < 0.5 or offset.whole_second_mtime
        writer.abandon()

    def test_ordinary_flushes_do_not_measure(self, tmp_path: Path) -> None:
        """Only a flush asked to measure runs ``fstat`` (on NFS it waits for the server)."""
        writer = _open(tmp_path, flush_every_events=1)
        writer.append("process_started", **STARTED)
        for i in range(5):
            writer.append("warning", message=str(i))
        writer.flush()
        assert writer.fs_offset is None
        writer.close()
        assert writer.fs_offset is None

    def test_whole_second_mtimes_widen_the_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """mtimes in whole seconds add a second of error, until a sub-second one is seen."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        monkeypatch.setattr(os, "fstat", _whole_second_fstat(os.fstat))
        writer.flush(measure_fs_offset=True)
        coarse = writer.fs_offset
        monkeypatch.undo()
        assert coarse is not None and coarse.whole_second_mtime
        assert coarse.error_sec >= 1.0
        assert abs(coarse.offset_sec) <= coarse.error_sec
        writer.append("warning", message="second write")
        writer.flush(measure_fs_offset=True)
        fine = writer.fs_offset
        assert fine is not None
        real_whole = os.stat(writer.path).st_mtime_ns % 1_000_000_000 == 0
        assert fine.whole_second_mtime is real_whole
        writer.abandon()

    def test_nothing_buffered_measures_nothing(self, tmp_path: Path) -> None:
        """A measured flush with an empty buffer writes nothing and keeps the last estimate."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.flush()
        writer.flush(measure_fs_offset=True)
        assert writer.fs_offset is None
        writer.abandon()


class TestAppendClock:
    """``append_clock`` writes a ``clock`` event with the offset measured just before it."""

    def test_clock_event_fields_and_replay(self, tmp_path: Path) -> None:
        """The event carries the given readings and the writer's fresh offset, and replays."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.append_clock(T0 + 0.25, 123.5, T0 + 0.375)
        offset = writer.fs_offset
        assert offset is not None
        writer.close()
        clock = [line for line in read_events(writer.path) if line["type"] == "clock"]
        assert clock == [
            {
                "v": 1,
                "seq": 1,
                "t": T0 + 0.25,
                "type": "clock",
                "monotonic_sec": 123.5,
                "wall_t": T0 + 0.375,
                "fs_offset_sec": offset.offset_sec,
                "fs_offset_error_sec": offset.error_sec,
            }
        ]
        state = replay_bytes(writer.path.read_bytes()).state
        assert len(state.clocks) == 1 and state.finished

    def test_without_wall_time(self, tmp_path: Path) -> None:
        """``wall_t`` is optional and left out when not given."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        writer.append_clock(T0, 1.0)
        writer.flush()
        assert "wall_t" not in read_events(writer.path)[-1]
        writer.abandon()

    def test_remembers_the_last_monotonic_reading(self, tmp_path: Path) -> None:
        """``last_clock_monotonic_sec`` is ``None`` until a clock event, then the latest's."""
        writer = _open(tmp_path)
        writer.append("process_started", **STARTED)
        assert writer.last_clock_monotonic_sec is None
        writer.append_clock(T0, 1.5)
        writer.append_clock(T0 + 1.0, 2.5)
        assert writer.last_clock_monotonic_sec == 2.5
        writer.abandon()

    def test_refused_before_start_and_after_close(self, tmp_path: Path) -> None:
        """A clock event cannot be first, nor follow ``process_finished``."""
        writer = _open(tmp_path)
        with pytest.raises(LedgerError, match="process_started"):
            writer.append_clock(T0, 1.0)
        writer.append("process_started", **STARTED)
        writer.close()
        with pytest.raises(LedgerError, match="closed"):
            writer.append_clock(T0, 1.0)
