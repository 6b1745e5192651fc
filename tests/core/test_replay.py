"""Tests for core.replay: reading event logs from binary streams into process state."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_ledger.core.decode import parse_event
from energy_ledger.core.marker import parse_marker
from energy_ledger.core.process import summarize_process
from energy_ledger.core.replay import (
    MAX_LINE_BYTES,
    ReplayCursor,
    replay_bytes,
    replay_stream,
)
from energy_ledger.core.state import ProcessState, apply
from energy_ledger.exceptions import FormatError, UnsupportedVersionError
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import ticking_clock

PATH = "raw/exp-1/process_0.events.jsonl"
T0 = 1700000000.0

STARTED: dict[str, Any] = {
    "type": "process_started",
    "experiment_id": "exp-1",
    "run_id": "run-1",
    "process_index": 0,
    "world_size": 1,
    "gpu_id": 0,
}


def _line(seq: int, body: dict[str, Any], *, t: float | None = None) -> bytes:
    obj = {"v": 1, "seq": seq, "t": T0 + seq if t is None else t, **body}
    return orjson.dumps(obj) + b"\n"


def _log(*bodies: dict[str, Any]) -> bytes:
    """A valid log: ``process_started`` then ``bodies``, numbered from seq 1."""
    return _line(0, STARTED) + b"".join(_line(i + 1, b) for i, b in enumerate(bodies))


WINDOW: dict[str, Any] = {"type": "window_started"}
"""Requests count only inside the measured window, so logs that count them open one first."""


def _open_log(*bodies: dict[str, Any]) -> bytes:
    """A valid log with the window open: started (seq 0), window (seq 1), ``bodies`` from 2."""
    return _log(WINDOW, *bodies)


def _req(latency: Any = 10.0, n_in: Any = 3, n_out: Any = 4, **extra: Any) -> dict[str, Any]:
    return {
        "type": "request",
        "latency_ms": latency,
        "input_tokens": n_in,
        "output_tokens": n_out,
        **extra,
    }


def _replay(data: bytes, **kwargs: Any) -> ReplayCursor:
    return replay_stream(io.BytesIO(data), path=PATH, **kwargs)


def _typed_fold(data: bytes) -> ProcessState:
    """The reference fold: every line through ``parse_event`` and ``apply``."""
    state = ProcessState()
    for line in data.splitlines():
        apply(state, parse_event(orjson.loads(line)))
    return state


class TestReplayStream:
    """``replay_stream`` folds the complete lines of an open binary stream."""

    def test_counts_requests_and_tokens(self) -> None:
        """Requests are counted and their tokens and latencies summed and kept."""
        data = _open_log(_req(10.0, 3, 4), _req(20.5, 5, 6, ttft_ms=2.0, itl_ms=[1.0, 1.5]))
        cur = _replay(data)
        state = cur.state
        assert (state.requests, state.input_tokens, state.output_tokens) == (2, 8, 10)
        assert list(state.latencies_ms) == [10.0, 20.5]
        assert list(state.ttft_ms) == [2.0]
        assert list(state.itl_ms) == [1.0, 1.5]

    def test_cursor_accounts_for_every_byte(self) -> None:
        """After a full replay the cursor's offset, line count and digest cover the whole log."""
        data = _log(_req(), {"type": "warning", "message": "hi"})
        cur = _replay(data)
        assert cur.offset == len(data)
        assert cur.lines == 3
        assert cur.torn_bytes == 0
        assert cur.sha256 == hashlib.sha256(data).hexdigest()
        assert (cur.state.last_seq, cur.state.next_seq, cur.state.events) == (2, 3, 3)

    def test_empty_stream(self) -> None:
        """An empty log gives an empty state and a cursor at offset 0."""
        cur = _replay(b"")
        assert (cur.offset, cur.lines, cur.state.events) == (0, 0, 0)
        assert cur.sha256 == hashlib.sha256(b"").hexdigest()

    def test_replay_bytes_is_replay_stream(self) -> None:
        """``replay_bytes`` gives the same state as ``replay_stream`` over a BytesIO."""
        data = _log(_req(), _req(5, 1, 1))
        assert replay_bytes(data).state == _replay(data).state

    def test_reads_from_a_real_file(self, tmp_path: Path) -> None:
        """A log on disk opened in binary mode replays like its bytes in memory."""
        data = _log(_req(), _req(7.5, 2, 2))
        path = tmp_path / "process_0.events.jsonl"
        path.write_bytes(data)
        with path.open("rb") as fp:
            assert replay_stream(fp).state == _replay(data).state

    def test_resume_reads_only_appended_lines(self) -> None:
        """Resuming a cursor after more lines were appended folds just the new lines."""
        first = _open_log(_req(1.0, 1, 1))
        more = _line(3, _req(2.0, 10, 20))
        cur = _replay(first)
        cur = _replay(first + more, cursor=cur)
        assert (cur.state.requests, cur.state.input_tokens, cur.state.output_tokens) == (2, 11, 21)
        assert cur.offset == len(first + more)
        assert cur.sha256 == hashlib.sha256(first + more).hexdigest()

    @pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1 << 20])
    def test_chunk_size_does_not_matter(self, chunk_bytes: int) -> None:
        """Any read size gives the same state and cursor as the default."""
        data = _log(*[_req(float(i), i, 2 * i) for i in range(20)])
        small = _replay(data, chunk_bytes=chunk_bytes)
        assert small.state == _replay(data).state
        assert (small.offset, small.lines, small.sha256) == (
            len(data),
            21,
            hashlib.sha256(data).hexdigest(),
        )


class TestTornLastLine:
    """A last line without its newline is not an event yet."""

    def test_torn_line_is_ignored(self) -> None:
        """A torn last line is neither folded nor an error, and its bytes are counted as torn."""
        whole = _open_log(_req(1.0, 1, 1))
        torn = _line(3, _req(2.0, 5, 5))[:-1]
        cur = _replay(whole + torn)
        assert cur.state.requests == 1
        assert cur.offset == len(whole)
        assert cur.torn_bytes == len(torn)
        assert cur.sha256 == hashlib.sha256(whole).hexdigest()

    def test_torn_half_a_json_object_is_ignored(self) -> None:
        """A last line cut in the middle of its JSON is ignored, not reported as corrupt."""
        whole = _open_log(_req())
        cur = _replay(whole + _line(3, _req())[:17])
        assert cur.state.requests == 1
        assert cur.problems == []

    def test_torn_line_is_read_once_its_newline_arrives(self) -> None:
        """Resuming after the newline arrived folds the formerly torn line exactly once."""
        whole = _open_log(_req(1.0, 1, 1))
        line = _line(3, _req(2.0, 5, 5))
        cur = _replay(whole + line[:-1])
        cur = _replay(whole + line, cursor=cur)
        assert cur.state.requests == 2
        assert cur.state.input_tokens == 6
        assert (cur.offset, cur.torn_bytes, cur.lines) == (len(whole + line), 0, 4)
        assert cur.state == _replay(whole + line).state

    def test_torn_line_growing_in_pieces(self) -> None:
        """A line that arrives a few bytes at a time is folded once, when complete."""
        whole = _open_log()
        line = _line(2, _req(2.0, 5, 5))
        cur = _replay(whole)
        for end in range(1, len(line) + 1, 9):
            cur = _replay(whole + line[:end], cursor=cur)
            assert cur.state.requests == 0
        cur = _replay(whole + line, cursor=cur)
        assert cur.state.requests == 1

    def test_torn_invalid_utf8_is_ignored(self) -> None:
        """A torn line that ends inside a multi-byte UTF-8 character is still just torn."""
        whole = _log()
        line = _line(1, {"type": "warning", "message": "température"})
        cut = line.index("é".encode()) + 1
        cur = _replay(whole + line[:cut])
        assert (cur.offset, cur.torn_bytes) == (len(whole), cut)


class TestCorruptLines:
    """A complete line that is not a valid event is an error naming file and line."""

    @pytest.mark.parametrize(
        ("bad_line", "reason"),
        [
            (b'{"v":1,"seq":2,"t":1.0,"type":"request","latency_ms":', "not valid JSON"),
            (b"this is not json", "not valid JSON"),
            (b"", "not valid JSON"),
            (b"   ", "not valid JSON"),
            (b"[1, 2, 3]", "not a JSON object"),
            (b"42", "not a JSON object"),
            (b'"request"', "not a JSON object"),
            (b"null", "not a JSON object"),
            (b'{"v":1,"seq":2,"t":1.0,"type":"request"}', "latency_ms"),
            (b"\xff\xfe{}", "not valid JSON"),
        ],
    )
    def test_corrupt_middle_line_names_path_and_line(self, bad_line: bytes, reason: str) -> None:
        """A bad line between good ones raises ``FormatError`` with path and 1-based line number."""
        head = _log(_req())
        tail = _line(3, _req())
        with pytest.raises(FormatError) as info:
            _replay(head + bad_line + b"\n" + tail)
        assert info.value.path == PATH
        assert info.value.line == 3
        assert str(info.value).startswith(f"{PATH}:3: ")
        assert reason in str(info.value)

    def test_line_number_counts_across_chunks_and_resumes(self) -> None:
        """The line number is right when the bad line comes after earlier reads and resumes."""
        head = _log(*[_req() for _ in range(9)])
        cur = _replay(head, chunk_bytes=5)
        with pytest.raises(FormatError) as info:
            _replay(head + b"{oops}\n", cursor=cur, chunk_bytes=5)
        assert info.value.line == 11

    def test_in_memory_stream_without_path(self) -> None:
        """Without a path the message names ``<stream>`` and the line."""
        with pytest.raises(FormatError, match=r"^<stream>:2: "):
            replay_stream(io.BytesIO(_log() + b"nope\n"))

    def test_corrupt_last_complete_line_is_an_error(self) -> None:
        """A bad line that does end with a newline is corrupt, not torn."""
        with pytest.raises(FormatError, match=r":2: "):
            _replay(_log() + b'{"v":1,"seq":1\n')

    @pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 16])
    def test_crlf_line_ending_is_an_error_naming_the_line(self, chunk_bytes: int) -> None:
        """``\\r\\n`` is refused (format §2.1) at the first such line, in any chunking."""
        good = _open_log(_req())
        with pytest.raises(FormatError, match=r"^raw/exp-1/process_0\.events\.jsonl:4: .*CRLF"):
            _replay(good + _line(3, _req()).replace(b"\n", b"\r\n"), chunk_bytes=chunk_bytes)

    def test_crlf_is_refused_on_the_block_path_too(self) -> None:
        """A block of valid events that all end in ``\\r\\n`` fails at line 1, not silently."""
        data = _open_log(*[_req() for _ in range(50)]).replace(b"\n", b"\r\n")
        with pytest.raises(FormatError, match=r":1: line ends with \\r\\n") as info:
            _replay(data)
        assert info.value.line == 1

    def test_crlf_line_is_skipped_in_lenient_mode(self) -> None:
        """``recover`` skips a CRLF line like any other bad line and keeps the rest."""
        data = _open_log(_req()) + _line(3, _req()).replace(b"\n", b"\r\n")
        cur = _replay(data, strict=False)
        assert cur.state.requests == 1
        assert len(cur.problems) == 1 and ":4: line ends with" in cur.problems[0]

    def test_a_carriage_return_inside_a_line_is_json_whitespace(self) -> None:
        """Only the line ending is ruled; a ``\\r`` between JSON tokens is whitespace."""
        line = _line(2, _req()).replace(b'{"v"', b'{\r"v"')
        assert _replay(_log(WINDOW) + line).state.requests == 1


class TestLineLength:
    """A line may hold ``max_line_bytes``; a longer one is an error, never an unbounded buffer."""

    LIMIT = 300

    def test_line_at_the_limit_is_read(self) -> None:
        """A valid line of exactly the limit is an ordinary event."""
        head = _open_log()
        line = _line(2, {"type": "warning", "message": ""})
        pad = self.LIMIT - len(line) + 1
        line = _line(2, {"type": "warning", "message": "x" * pad})
        assert len(line) - 1 == self.LIMIT
        cur = _replay(head + line, max_line_bytes=self.LIMIT)
        assert cur.offset == len(head) + len(line)

    @pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 16])
    def test_long_complete_line_names_its_line(self, chunk_bytes: int) -> None:
        """A line one byte over the limit fails at its number; the lines before it are folded."""
        head = _open_log(_req())
        line = _line(3, {"type": "warning", "message": "x" * self.LIMIT})
        with pytest.raises(FormatError, match=r":4: line is longer than") as info:
            _replay(head + line, max_line_bytes=self.LIMIT, chunk_bytes=chunk_bytes)
        assert info.value.line == 4

    def test_long_torn_line_is_an_error_once_over_the_limit(self) -> None:
        """A last line without newline is torn only while it could still be a line."""
        head = _open_log()
        assert _replay(head + b"x" * self.LIMIT, max_line_bytes=self.LIMIT).torn_bytes == 300
        with pytest.raises(FormatError, match=r":3: line is longer than"):
            _replay(head + b"x" * (self.LIMIT + 1), max_line_bytes=self.LIMIT)

    def test_reader_never_holds_much_more_than_the_limit(self) -> None:
        """Following a stream of gigabytes without a newline reads only about the limit."""

        class Endless(io.RawIOBase):
            def __init__(self) -> None:
                self.served = 0

            def readable(self) -> bool:
                return True

            def seek(self, offset: int, whence: int = 0) -> int:
                return 0

            def read(self, size: int = -1) -> bytes:
                self.served += max(size, 0)
                return b"x" * max(size, 0)

        stream = Endless()
        with pytest.raises(FormatError, match=r":1: line is longer than"):
            replay_stream(stream, max_line_bytes=1 << 20)  # type: ignore[arg-type]
        assert stream.served <= 3 << 20

    def test_default_limit_is_16_mib(self) -> None:
        """The documented limit (docs/format.md §2.1)."""
        assert MAX_LINE_BYTES == 16 * 1024 * 1024


class TestCursorAfterAnError:
    """After an error the cursor stands at the bad line, so the read can be retried later."""

    @pytest.mark.parametrize("chunk_bytes", [1, 50, 1 << 16])
    def test_cursor_covers_exactly_the_lines_before_the_bad_one(self, chunk_bytes: int) -> None:
        """Offset, digest, line count and state are those of the good prefix."""
        good = _open_log(_req(), _req())
        bad = b"\x00" * 40 + _line(4, _req())
        cur = ReplayCursor()
        with pytest.raises(FormatError, match=r":5: "):
            replay_stream(io.BytesIO(good + bad), cur, path=PATH, chunk_bytes=chunk_bytes)
        clean = _replay(good)
        assert (cur.offset, cur.lines, cur.sha256) == (len(good), 4, clean.sha256)
        assert cur.state == clean.state

    def test_retry_after_the_bytes_are_fixed_equals_one_clean_read(self) -> None:
        """A hole of NULs, later filled with the real line: the retried cursor reads on."""
        good = _open_log(_req())
        missing = _line(3, _req())
        rest = _line(4, _req()) + _line(5, {"type": "process_finished"})
        cur = ReplayCursor()
        with pytest.raises(FormatError):
            replay_stream(io.BytesIO(good + b"\x00" * len(missing) + rest), cur, path=PATH)
        replay_stream(io.BytesIO(good + missing + rest), cur, path=PATH)
        clean = _replay(good + missing + rest)
        assert (cur.offset, cur.lines, cur.sha256) == (clean.offset, clean.lines, clean.sha256)
        assert cur.state == clean.state and cur.state.requests == 3


class TestSeqOrder:
    """``seq`` must count 0, 1, 2, ... with no gap or repeat, starting at process_started."""

    def test_gap_is_an_error(self) -> None:
        """A skipped ``seq`` raises ``FormatError`` naming the expected and the found value."""
        data = _log(_req()) + _line(3, _req())
        with pytest.raises(FormatError, match=r":3: seq gap: expected 2, got 3") as info:
            _replay(data)
        assert info.value.line == 3

    def test_duplicate_is_an_error(self) -> None:
        """A repeated ``seq`` raises ``FormatError``."""
        data = _log(_req()) + _line(1, _req())
        with pytest.raises(FormatError, match=r":3: duplicate or out-of-order seq 1"):
            _replay(data)

    def test_going_back_is_an_error(self) -> None:
        """A ``seq`` lower than the previous one raises ``FormatError``."""
        data = _log(_req(), _req()) + _line(0, STARTED)
        with pytest.raises(FormatError, match="duplicate or out-of-order"):
            _replay(data)

    def test_log_must_not_start_at_seq_one(self) -> None:
        """A log whose first line has ``seq`` 1 has a gap at its start."""
        with pytest.raises(FormatError, match=r":1: seq gap: expected 0, got 1"):
            _replay(_line(1, STARTED))

    @pytest.mark.parametrize(
        "first",
        [
            {"type": "warning", "message": "x"},
            {"type": "window_started"},
            _req(),
            {"type": "sample", "power_w": 100.0},
        ],
    )
    def test_first_event_must_be_process_started(self, first: dict[str, Any]) -> None:
        """A log whose seq 0 is anything but ``process_started`` is rejected."""
        with pytest.raises(FormatError, match="process_started"):
            _replay(_line(0, first))

    def test_second_process_started_is_an_error(self) -> None:
        """``process_started`` after seq 0 is rejected."""
        with pytest.raises(FormatError, match=r":2: process_started may only be the first"):
            _replay(_log(STARTED))


class TestUnknownTypes:
    """Events of unknown types are skipped with a warning, and their seq still counts."""

    def test_unknown_type_is_skipped_and_counted(self, caplog: pytest.LogCaptureFixture) -> None:
        """An unknown event is skipped, logged with path and line, and counted by type."""
        data = _open_log(
            {"type": "gpu_clock", "mhz": 1980},
            _req(),
            {"type": "gpu_clock", "mhz": 1700},
            {"type": "nccl_stats"},
        )
        with caplog.at_level(logging.WARNING, logger="energy_ledger.core.replay"):
            cur = _replay(data)
        assert cur.state.unknown_types == {"gpu_clock": 2, "nccl_stats": 1}
        assert cur.state.requests == 1
        assert cur.state.next_seq == 6
        assert cur.problems == []
        messages = [r.getMessage() for r in caplog.records]
        assert any(f"{PATH}:3:" in m and "'gpu_clock'" in m for m in messages)
        assert any(f"{PATH}:6:" in m and "'nccl_stats'" in m for m in messages)
        assert all(r.levelno == logging.WARNING for r in caplog.records)

    def test_unknown_type_still_needs_a_valid_envelope(self) -> None:
        """An unknown event with a seq gap is still a gap."""
        with pytest.raises(FormatError, match="seq gap"):
            _replay(_log() + _line(5, {"type": "gpu_clock"}))


class TestNewerVersion:
    """An event of a newer format version is refused, even in lenient mode."""

    @pytest.mark.parametrize("strict", [True, False])
    def test_newer_version_is_refused(self, strict: bool) -> None:
        """A ``v`` of 2 raises ``UnsupportedVersionError`` with path and line."""
        data = _log(_req()) + orjson.dumps({**_req(), "v": 2, "seq": 2, "t": T0}) + b"\n"
        with pytest.raises(UnsupportedVersionError) as info:
            _replay(data, strict=strict)
        assert info.value.line == 3
        assert PATH in str(info.value)


class TestLenientMode:
    """With ``strict=False`` bad lines are recorded as problems and the replay goes on."""

    def test_corrupt_line_is_recorded_and_skipped(self, caplog: pytest.LogCaptureFixture) -> None:
        """A corrupt middle line becomes a problem naming path and line; later events count."""
        data = _open_log(_req(1.0, 1, 1)) + b"garbage\n" + _line(3, _req(2.0, 2, 2))
        with caplog.at_level(logging.WARNING, logger="energy_ledger.core.replay"):
            cur = _replay(data, strict=False)
        assert cur.state.requests == 2
        assert len(cur.problems) == 1
        assert cur.problems[0].startswith(f"{PATH}:4: ")
        assert cur.offset == len(data)
        assert any(f"{PATH}:4:" in r.getMessage() for r in caplog.records)

    def test_gap_is_recorded_and_what_follows_is_kept(self) -> None:
        """After a gap, lenient mode records it and folds the events that follow."""
        data = _open_log(_req(1.0, 1, 1)) + _line(5, _req(2.0, 2, 2)) + _line(6, _req(3.0, 3, 3))
        cur = _replay(data, strict=False)
        assert cur.state.requests == 3
        assert cur.state.next_seq == 7
        assert len(cur.problems) == 1
        assert "seq gap" in cur.problems[0]

    def test_duplicate_is_recorded_and_dropped(self) -> None:
        """A duplicate line is recorded as a problem and not folded twice."""
        req = _line(2, _req(1.0, 1, 1))
        cur = _replay(_open_log() + req + req, strict=False)
        assert cur.state.requests == 1
        assert len(cur.problems) == 1

    def test_invalid_field_is_recorded(self) -> None:
        """An event with a wrongly typed field is recorded, and its seq is then missing."""
        data = _open_log(_req(n_in=True)) + _line(3, _req())
        cur = _replay(data, strict=False)
        assert cur.state.requests == 1
        assert len(cur.problems) == 2
        assert "input_tokens" in cur.problems[0]

    def test_strict_mode_raises_on_the_same_log(self) -> None:
        """The log that lenient mode accepts with problems fails in strict mode."""
        data = _log(_req()) + b"garbage\n" + _line(2, _req())
        with pytest.raises(FormatError):
            _replay(data)


class TestMarkerDigest:
    """The replay's digest matches what the writer promises in its marker."""

    def test_marker_matches_cursor(self, tmp_path: Path) -> None:
        """For a writer-produced log, the marker's sha256, bytes and final seq match the replay."""
        writer = EventLogWriter.open(tmp_path, "exp-1", 0, clock=ticking_clock(T0))
        writer.append("process_started", **{k: v for k, v in STARTED.items() if k != "type"})
        writer.append("window_started", energy_mj=1000)
        for i in range(5):
            writer.append("request", latency_ms=10.0 + i, input_tokens=i, output_tokens=2)
        writer.append("window_ended", energy_mj=9000)
        marker = writer.close()
        on_disk = parse_marker(writer.marker_path.read_bytes())
        assert on_disk == marker
        with writer.path.open("rb") as fp:
            cur = replay_stream(fp, path=str(writer.path))
        assert cur.sha256 == marker.log_sha256
        assert cur.offset == marker.log_bytes
        assert cur.state.last_seq == marker.final_seq
        assert cur.state.finished


class TestFastPathParity:
    """The replay's fast path for requests and samples agrees with the typed fold."""

    @pytest.mark.parametrize(
        "event",
        [
            _req(10.0, 3, 4),
            _req(10, 3, 4),
            _req(0, 0, 0),
            _req(10.0, 3, 4, ttft_ms=1.5),
            _req(10.0, 3, 4, ttft_ms=2),
            _req(10.0, 3, 4, ttft_ms=None, itl_ms=None),
            _req(10.0, 3, 4, itl_ms=[]),
            _req(10.0, 3, 4, itl_ms=[1, 2.5, 3]),
            _req(10.0, 3, 4, extra_field="ignored"),
            {"type": "sample", "power_w": 100},
            {"type": "sample", "power_w": 100.5, "energy_mj": 5, "throttle_reasons": 0x20},
            {"type": "sample", "temperature_c": 70, "sm_util_pct": 99, "memory_used_mb": 1024},
            {"type": "sample", "power_w": None, "throttle_reasons": None},
        ],
    )
    def test_valid_event_folds_like_the_typed_fold(self, event: dict[str, Any]) -> None:
        """A valid request or sample (in and around the window) gives the typed fold's state."""
        data = _log(
            event,
            {"type": "window_started", "energy_mj": 1},
            event,
            event,
            {"type": "window_ended", "energy_mj": 2},
            event,
        )
        assert _replay(data).state == _typed_fold(data)

    def test_int_and_float_latency_give_the_same_summary(self) -> None:
        """A latency written as an integer gives the same summary as the same float."""
        as_int = summarize_process(_replay(_open_log(_req(12, 1, 1))).state)
        as_float = summarize_process(_replay(_open_log(_req(12.0, 1, 1))).state)
        assert as_int.raw.model_dump() == as_float.raw.model_dump()
        assert list(as_int.latencies_ms) == list(as_float.latencies_ms) == [12.0]

    @pytest.mark.parametrize(
        ("event", "field"),
        [
            (_req(n_in=True), "input_tokens"),
            (_req(n_out=False), "output_tokens"),
            (_req(latency=True), "latency_ms"),
            (_req(n_in=3.0), "input_tokens"),
            (_req(latency="10"), "latency_ms"),
            (_req(ttft_ms=True), "ttft_ms"),
            (_req(itl_ms=[1.0, True]), "itl_ms"),
            (_req(itl_ms={"a": 1}), "itl_ms"),
            ({"type": "sample", "power_w": True}, "power_w"),
            ({"type": "sample", "throttle_reasons": 4.0}, "throttle_reasons"),
            ({"type": "sample", "throttle_reasons": True}, "throttle_reasons"),
            ({"type": "sample", "energy_mj": "1"}, "energy_mj"),
        ],
    )
    def test_invalid_field_goes_to_the_slow_path_and_is_rejected(
        self, event: dict[str, Any], field: str
    ) -> None:
        """A request or sample the fast path cannot take is rejected by the careful path."""
        with pytest.raises(FormatError, match=rf":2: .*{field}"):
            _replay(_log(event))
        with pytest.raises(FormatError):
            parse_event({"v": 1, "seq": 1, "t": T0, **event})

    @pytest.mark.parametrize(
        "envelope",
        [
            pytest.param({"v": True}, id="v-true"),
            pytest.param({"v": 1.0}, id="v-float"),
            pytest.param({"seq": 1.0}, id="seq-float"),
            pytest.param({"seq": True}, id="seq-true"),
        ],
    )
    @pytest.mark.parametrize("body", [_req(), {"type": "sample", "power_w": 1.0}])
    def test_bad_envelope_is_rejected_on_the_fast_path(
        self, envelope: dict[str, Any], body: dict[str, Any]
    ) -> None:
        """A request or sample with a bool or float ``v``/``seq`` is rejected like elsewhere."""
        line = orjson.dumps({"v": 1, "seq": 1, "t": T0, **body, **envelope}) + b"\n"
        with pytest.raises(FormatError):
            _replay(_log() + line)


class TestBatchDecoding:
    """Batched decoding must not let lines that are not one JSON object each through."""

    def test_two_objects_on_one_line_are_rejected(self) -> None:
        """A line holding two events is corrupt even when a later line makes the counts match."""
        two = (
            b'{"v":1,"seq":1,"t":1.0,"type":"warning","message":"a"},'
            b'{"v":1,"seq":2,"t":1.0,"type":"warning","message":"b"}\n'
        )
        split = b'{"v":1,"seq":3,"t":1.0,"type":"warning","message":"c\nd"}\n'
        with pytest.raises(FormatError):
            _replay(_log() + two + split)

    def test_two_objects_on_one_line_alone_are_rejected(self) -> None:
        """A line holding two events, with nothing to compensate, is corrupt."""
        two = (
            b'{"v":1,"seq":1,"t":1.0,"type":"warning","message":"a"},'
            b'{"v":1,"seq":2,"t":1.0,"type":"warning","message":"b"}\n'
        )
        with pytest.raises(FormatError, match=":2: "):
            _replay(_log() + two)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "format.md"


class TestFormatDocExample:
    """The example in docs/format.md is a valid log with a valid marker."""

    def _blocks(self) -> tuple[bytes, bytes]:
        text = DOCS.read_text(encoding="utf-8")
        section = text[text.index("## 5. Example") :]
        blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)
        log = next(body for lang, body in blocks if lang == "jsonl").encode()
        marker = next(body for lang, body in blocks if lang == "json").encode()
        return log, marker

    def test_example_replays_and_its_marker_matches(self) -> None:
        """The example log replays, and its marker's bytes, digest and final seq agree with it."""
        log, marker_bytes = self._blocks()
        marker = parse_marker(marker_bytes)
        cur = replay_bytes(log)
        assert cur.lines == 4
        assert marker.log_bytes == len(log) == cur.offset
        assert marker.log_sha256 == hashlib.sha256(log).hexdigest() == cur.sha256
        assert marker.final_seq == cur.state.last_seq
        summary = summarize_process(cur.state)
        assert summary.inference_time_sec == pytest.approx(0.75)
        assert summary.energy_j == pytest.approx(60.5)
        assert summary.energy_source == "counter"
