"""Tests for energy_ledger.store.segments: the segmented layout on real files (docs/format.md §7).

Every store here is a ``LocalObjects`` on ``tmp_path`` (or on a temporary folder, under
hypothesis), sometimes behind a thin wrapper that counts what is fetched or makes a put fail.
"""

from __future__ import annotations

import errno
import hashlib
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.marker import SegmentDigest, SegmentedMarker, parse_any_marker
from energy_ledger.core.process import summarize_process
from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import LedgerError
from energy_ledger.recorder.guard import LossGuard, is_write_failure
from energy_ledger.store.objects import LocalObjects, ObjectInfo, PreconditionFailed
from energy_ledger.store.reader import scan_experiment
from energy_ledger.store.segment_tail import SegmentTail
from energy_ledger.store.segments import (
    SegmentedLogWriter,
    marker_key,
    segment_key,
    segments_prefix,
)
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import ticking_clock

T0 = 1700000000.0
EXP = "exp-1"
PREFIX = segments_prefix(EXP, 0)
STARTED: dict[str, Any] = {
    "experiment_id": EXP,
    "run_id": "run-1",
    "process_index": 0,
    "world_size": 1,
    "gpu_id": 0,
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "format.md"


class CountingObjects:
    """A ``LocalObjects`` that counts the calls made to it and the bytes fetched."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalObjects(root)
        self.gets: list[str] = []
        self.bytes_fetched = 0
        self.lists = 0
        self.puts: list[str] = []

    @property
    def url(self) -> str:
        return self.inner.url

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self.lists += 1
        return self.inner.list(prefix)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def get(self, key: str, start: int = 0) -> bytes:
        data = self.inner.get(key, start)
        self.gets.append(key)
        self.bytes_fetched += len(data)
        return data

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        self.puts.append(key)
        return self.inner.put(key, data, create=create, if_match=if_match)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


class FailingObjects(CountingObjects):
    """Puts fail with ``ENOSPC`` from the ``fail_at``-th put on (1-based), as a full disk."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.fail_at = fail_at

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        if len(self.puts) + 1 >= self.fail_at:
            self.puts.append(key)
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().put(key, data, create=create, if_match=if_match)


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _writer(objects: Any, index: int = 0, **options: Any) -> SegmentedLogWriter:
    options.setdefault("clock", ticking_clock(T0, 0.5))
    options.setdefault("segment_sec", 3600.0)
    return SegmentedLogWriter(objects, EXP, index, **options)


def _start(writer: SegmentedLogWriter | EventLogWriter, index: int = 0) -> None:
    writer.append("process_started", **{**STARTED, "process_index": index, "world_size": 16})


def _some_events(writer: SegmentedLogWriter | EventLogWriter, n: int) -> float:
    """``n`` events after ``process_started``: a window of requests and raw samples; the
    last event's ``t``."""
    t = writer.append("window_started", energy_mj=1000.0).t
    for k in range(n):
        if k % 3:
            event = writer.append(
                "request", latency_ms=10.0 + k, input_tokens=k, output_tokens=2 * k
            )
            t = event.t
        else:  # the recorder's hot path: a wire-form event with the time of the last one
            writer.append_raw({"type": "sample", "t": t, "power_w": 100.0 + k, "energy_mj": 1e4})
    return writer.append("window_ended", energy_mj=2000.0).t


def _segments(root: Path, index: int = 0) -> list[bytes]:
    folder = root / "raw" / EXP / f"process_{index}.segments"
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def _tail(objects: Any, prefix: str = PREFIX, *, strict: bool = True) -> SegmentTail:
    tail = SegmentTail(prefix)
    tail.refresh(objects, objects.list(prefix), strict=strict)
    return tail


class TestWriterLayout:
    """``SegmentedLogWriter`` puts numbered segments, then a version-2 marker, where §7 says."""

    def test_keys(self) -> None:
        """Segments are ``raw/<id>/process_<i>.segments/<8 digits>.jsonl``; the marker beside."""
        assert segment_key(EXP, 3, 12) == "raw/exp-1/process_3.segments/00000012.jsonl"
        assert marker_key(EXP, 3) == "raw/exp-1/process_3.done"

    def test_nothing_is_put_before_the_first_cut(self, tmp_path: Path) -> None:
        """Opening and appending below every threshold puts nothing."""
        objects = CountingObjects(tmp_path)
        writer = _writer(objects)
        _start(writer)
        assert objects.puts == [] and not (tmp_path / "raw").exists()
        writer.abandon()

    def test_close_puts_the_last_segment_then_the_marker(self, tmp_path: Path) -> None:
        """``close`` puts what is buffered as one segment, then the marker that lists it."""
        objects = CountingObjects(tmp_path)
        writer = _writer(objects)
        _start(writer)
        _some_events(writer, 5)
        marker = writer.close()
        assert objects.puts == [segment_key(EXP, 0, 0), marker_key(EXP, 0)]
        (data,) = _segments(tmp_path)
        assert marker == SegmentedMarker(
            0, "run-1", 8, (SegmentDigest(len(data), hashlib.sha256(data).hexdigest()),)
        )
        on_disk = (tmp_path / "raw" / EXP / "process_0.done").read_bytes()
        assert on_disk == marker.to_bytes()
        assert parse_any_marker(on_disk) == marker
        assert writer.closed

    def test_refuses_a_process_that_already_wrote(self, tmp_path: Path) -> None:
        """A log, a segment or a marker of the process already there: ``LedgerError``."""
        for name in ("process_0.events.jsonl", "process_0.segments/00000000.jsonl"):
            LocalObjects(tmp_path).put(f"raw/{EXP}/{name}", b"x\n")
            with pytest.raises(LedgerError, match="already exists: a ledger is written once"):
                _writer(LocalObjects(tmp_path))
            LocalObjects(tmp_path).delete(f"raw/{EXP}/{name}")
        _writer(LocalObjects(tmp_path), 1).abandon()  # process_1 is free
        LocalObjects(tmp_path).put(marker_key(EXP, 0), b"{}")
        with pytest.raises(LedgerError, match=re.escape("process_0.done already exists")):
            _writer(LocalObjects(tmp_path))

    def test_process_10_is_not_process_1(self, tmp_path: Path) -> None:
        """The check lists ``process_1.``, so process 10's files do not block process 1."""
        LocalObjects(tmp_path).put(segment_key(EXP, 10, 0), b"x\n")
        _writer(LocalObjects(tmp_path), 1).abandon()

    def test_fail_puts_process_failed_and_no_marker(self, tmp_path: Path) -> None:
        """``fail`` appends ``process_failed``, puts it, and writes no marker."""
        writer = _writer(LocalObjects(tmp_path))
        _start(writer)
        writer.fail("boom")
        (data,) = _segments(tmp_path)
        assert orjson.loads(data.splitlines()[-1])["type"] == "process_failed"
        assert not (tmp_path / "raw" / EXP / "process_0.done").exists()
        assert writer.closed

    def test_context_manager(self, tmp_path: Path) -> None:
        """Leaving ``with`` closes (marker); leaving it by an exception fails (no marker)."""
        with _writer(LocalObjects(tmp_path)) as writer:
            _start(writer)
        assert (tmp_path / "raw" / EXP / "process_0.done").exists()
        with pytest.raises(RuntimeError), _writer(LocalObjects(tmp_path), 1) as other:
            _start(other, 1)
            raise RuntimeError("x")
        assert not (tmp_path / "raw" / EXP / "process_1.done").exists()
        assert b"RuntimeError: x" in _segments(tmp_path, 1)[-1]

    def test_first_event_must_be_process_started(self, tmp_path: Path) -> None:
        """The same order rules as ``EventLogWriter``."""
        writer = _writer(LocalObjects(tmp_path))
        with pytest.raises(LedgerError, match="first event must be process_started"):
            writer.append("warning", message="x")
        _start(writer)
        with pytest.raises(LedgerError, match="may only be the first event"):
            _start(writer)
        writer.abandon()


class TestCutting:
    """Segments are cut by count, by bytes and by time, checked at each append."""

    def test_cut_every_n_events(self, tmp_path: Path) -> None:
        """With ``segment_events=4``, 10 events make segments of 4, 4 and 2 lines."""
        writer = _writer(LocalObjects(tmp_path), segment_events=4)
        _start(writer)
        for k in range(8):
            writer.append("warning", message=f"w{k}")
        writer.close()
        assert [s.count(b"\n") for s in _segments(tmp_path)] == [4, 4, 2]
        assert [s.bytes for s in writer.segments] == [len(s) for s in _segments(tmp_path)]

    def test_cut_by_time(self, tmp_path: Path) -> None:
        """An append ``segment_sec`` after the last cut cuts, whatever the count."""
        clock = FakeMonotonic()
        objects = CountingObjects(tmp_path)
        writer = _writer(objects, segment_sec=5.0, monotonic=clock)
        _start(writer)
        clock.now += 4.9
        writer.append("warning", message="a")
        assert objects.puts == []
        clock.now += 0.1
        writer.append("warning", message="b")
        assert objects.puts == [segment_key(EXP, 0, 0)]
        clock.now += 4.0
        writer.append("warning", message="c")
        assert len(objects.puts) == 1  # 4 s since that cut
        clock.now += 1.0
        writer.append("warning", message="d")
        writer.close()
        assert [s.count(b"\n") for s in _segments(tmp_path)] == [3, 2, 1]

    def test_cut_by_bytes(self, tmp_path: Path) -> None:
        """Once ``segment_bytes`` are buffered, the append cuts."""
        writer = _writer(LocalObjects(tmp_path), segment_bytes=500)
        _start(writer)
        for _ in range(10):
            writer.append("warning", message="x" * 100)
        writer.close()
        sizes = [len(s) for s in _segments(tmp_path)]
        assert len(sizes) > 2
        assert all(size < 500 + 200 for size in sizes)

    def test_flush_cuts_now(self, tmp_path: Path) -> None:
        """``flush`` cuts what is buffered; with nothing buffered it puts nothing."""
        objects = CountingObjects(tmp_path)
        writer = _writer(objects)
        _start(writer)
        writer.flush()
        writer.flush()
        assert objects.puts == [segment_key(EXP, 0, 0)]
        writer.abandon()


class TestByteIdentity:
    """The segments, end to end, are the log ``EventLogWriter`` writes for the same appends."""

    @pytest.mark.parametrize("segment_events", [1, 2, 7, 10_000])
    def test_concatenation_is_the_appended_log(self, tmp_path: Path, segment_events: int) -> None:
        """Same appends, same clock: the same bytes; the v1 digest is the concatenation's."""
        log_writer = EventLogWriter.open(
            tmp_path / "a", EXP, 0, clock=ticking_clock(T0, 0.5), flush_every_sec=3600.0
        )
        seg_writer = _writer(LocalObjects(tmp_path / "b"), segment_events=segment_events)
        for writer in (log_writer, seg_writer):
            _start(writer)
            last_t = _some_events(writer, 20)
            writer.append_clock(last_t, 123.0, last_t + 0.25)
        v1 = log_writer.close()
        v2 = seg_writer.close()
        log = log_writer.path.read_bytes()
        joined = b"".join(_segments(tmp_path / "b"))
        assert joined == _without_fs_offset(log)
        assert v2.final_seq == v1.final_seq
        assert v2.log_bytes == len(joined)
        tail = _tail(LocalObjects(tmp_path / "b"))
        assert tail.error is None
        assert len(tail.cursor.state.clocks) == 1
        cursor = tail.cursor
        assert cursor.sha256 == hashlib.sha256(joined).hexdigest()

    def test_identical_without_clock_events(self, tmp_path: Path) -> None:
        """Without ``clock`` events (the one thing a store cannot measure) bytes are equal."""
        log_writer = EventLogWriter.open(
            tmp_path / "a", EXP, 0, clock=ticking_clock(T0, 0.5), flush_every_sec=3600.0
        )
        seg_writer = _writer(LocalObjects(tmp_path / "b"), segment_events=3)
        for writer in (log_writer, seg_writer):
            _start(writer)
            _some_events(writer, 30)
        v1 = log_writer.close()
        seg_writer.close()
        joined = b"".join(_segments(tmp_path / "b"))
        assert joined == log_writer.path.read_bytes()
        assert hashlib.sha256(joined).hexdigest() == v1.log_sha256


def _without_fs_offset(log: bytes) -> bytes:
    """The log with ``fs_offset_*`` taken out of its ``clock`` events (a store has no mtime)."""
    lines = []
    for line in log.splitlines():
        obj = orjson.loads(line)
        if obj["type"] == "clock":
            obj.pop("fs_offset_sec", None)
            obj.pop("fs_offset_error_sec", None)
            line = orjson.dumps(obj)
        lines.append(line + b"\n")
    return b"".join(lines)


class TestFailedPut:
    """A put that fails is a write failure, as a full disk is to ``EventLogWriter``."""

    def test_failed_segment_put_raises_once_and_closes(self, tmp_path: Path) -> None:
        """The cutting append raises ``LedgerError`` caused by the ``OSError``; then closed."""
        objects = FailingObjects(tmp_path, fail_at=2)
        writer = _writer(objects, segment_events=2)
        _start(writer)
        writer.append("warning", message="a")  # cut 0: fine
        writer.append("warning", message="b")
        with pytest.raises(LedgerError, match="No space left on device") as info:
            writer.append("warning", message="c")  # cut 1 fails
        assert is_write_failure(info.value)
        assert isinstance(info.value.__cause__, OSError)
        assert writer.closed
        with pytest.raises(LedgerError, match="writer is closed"):
            writer.append("warning", message="d")
        assert len(_segments(tmp_path)) == 1
        assert not (tmp_path / "raw" / EXP / "process_0.done").exists()

    def test_loss_guard_marks_not_recorded(self, tmp_path: Path) -> None:
        """Behind the recorder's ``LossGuard``: nothing raises, no marker, the loss recorded."""
        objects = FailingObjects(tmp_path, fail_at=1)
        guard = LossGuard(_writer(objects, segment_events=2))
        guard.append("process_started", **STARTED)
        guard.append("warning", message="a")  # the cut fails here
        guard.append("warning", message="b")
        assert guard.lost is not None and "No space left on device" in guard.lost
        assert guard.close() is None
        assert objects.puts == [segment_key(EXP, 0, 0)]

    def test_failed_marker_put_leaves_no_marker(self, tmp_path: Path) -> None:
        """The segments landed, the marker's put failed: no marker, ``LedgerError``."""
        objects = FailingObjects(tmp_path, fail_at=2)
        writer = _writer(objects)
        _start(writer)
        with pytest.raises(LedgerError) as info:
            writer.close()
        assert is_write_failure(info.value)
        assert len(_segments(tmp_path)) == 1
        assert not (tmp_path / "raw" / EXP / "process_0.done").exists()


class TestExactlyOnce:
    """Conditional creates: of two writers of one process, one log and one marker."""

    def test_second_writer_loses_at_its_first_segment(self, tmp_path: Path) -> None:
        """Both opened before either wrote: the later cut finds segment 0 taken."""
        first = _writer(LocalObjects(tmp_path))
        second = _writer(LocalObjects(tmp_path), clock=ticking_clock(T0 + 7, 0.5))
        _start(first)
        _start(second)
        marker = first.close()
        with pytest.raises(LedgerError, match=r"already exists .*another writer"):
            second.close()
        assert parse_any_marker((tmp_path / "raw" / EXP / "process_0.done").read_bytes()) == marker
        assert _tail(LocalObjects(tmp_path)).read == list(marker.segments)

    def test_marker_is_created_once(self, tmp_path: Path) -> None:
        """A marker that appeared meanwhile is not replaced; the second ``close`` raises."""
        writer = _writer(LocalObjects(tmp_path))
        _start(writer)
        LocalObjects(tmp_path).put(marker_key(EXP, 0), b"theirs\n", create=True)
        with pytest.raises(LedgerError, match=r"the marker of process 0: .* already exists"):
            writer.close()
        assert (tmp_path / "raw" / EXP / "process_0.done").read_bytes() == b"theirs\n"

    def test_store_refuses_a_second_create(self, tmp_path: Path) -> None:
        """The store's own rule the writer builds on: ``create=True`` fails when the key exists."""
        objects = LocalObjects(tmp_path)
        objects.put("raw/x/process_0.done", b"a", create=True)
        with pytest.raises(PreconditionFailed):
            objects.put("raw/x/process_0.done", b"b", create=True)


class TestTailRoundTrip:
    """What the writer puts, ``SegmentTail`` folds into the state of the appended log."""

    def test_tail_equals_replay_of_the_concatenation(self, tmp_path: Path) -> None:
        """Same state, offset, line count and digest as replaying the joined bytes."""
        writer = _writer(LocalObjects(tmp_path), segment_events=5)
        _start(writer)
        _some_events(writer, 23)
        marker = writer.close()
        tail = _tail(LocalObjects(tmp_path))
        once = replay_bytes(b"".join(_segments(tmp_path)))
        assert tail.error is None and tail.unread is None
        assert tail.cursor.state == once.state
        assert (tail.cursor.offset, tail.cursor.lines) == (once.offset, once.lines)
        assert tail.cursor.sha256 == once.sha256
        assert tail.read == list(marker.segments) == writer.segments
        assert tail.present == tuple(range(len(marker.segments)))

    def test_incremental_refresh_reads_only_new_segments(self, tmp_path: Path) -> None:
        """Each refresh fetches the segments added since, once; an unchanged listing, none."""
        objects = CountingObjects(tmp_path)
        writer = _writer(LocalObjects(tmp_path), segment_events=4)
        _start(writer)
        for k in range(11):
            writer.append("warning", message=f"w{k}")  # cuts 0, 1, 2
        tail = SegmentTail(PREFIX)
        assert tail.refresh(objects, objects.list(PREFIX))
        assert objects.gets == [segment_key(EXP, 0, n) for n in range(3)]
        fetched = objects.bytes_fetched
        assert fetched == sum(len(s) for s in _segments(tmp_path)) == tail.cursor.offset
        assert not tail.refresh(objects, objects.list(PREFIX))
        assert len(objects.gets) == 3 and objects.bytes_fetched == fetched
        writer.close()  # cuts 3 (the last warnings and process_finished)
        assert tail.refresh(objects, objects.list(PREFIX))
        assert objects.gets[3:] == [segment_key(EXP, 0, 3)]
        assert objects.bytes_fetched - fetched == len(_segments(tmp_path)[3])
        assert tail.cursor.state.finished

    def test_tail_from_another_process_reads_again(self, tmp_path: Path) -> None:
        """A pickled tail (parallel replay) carries a frozen digest: it reads everything again."""
        writer = _writer(LocalObjects(tmp_path), segment_events=4)
        _start(writer)
        for k in range(6):
            writer.append("warning", message=f"w{k}")
        objects = LocalObjects(tmp_path)
        tail = pickle.loads(pickle.dumps(_tail(objects)))
        writer.close()
        assert tail.refresh(objects, objects.list(PREFIX))
        whole = replay_bytes(b"".join(_segments(tmp_path)))
        assert tail.error is None
        assert (tail.cursor.state, tail.cursor.sha256) == (whole.state, whole.sha256)
        assert tail.cursor.lines == whole.lines

    def test_one_listing_serves_every_process(self, tmp_path: Path) -> None:
        """A listing of the experiment feeds each process's tail its own segments only."""
        objects = CountingObjects(tmp_path)
        for index in (0, 1, 10):
            writer = _writer(LocalObjects(tmp_path), index, segment_events=3)
            _start(writer, index)
            _some_events(writer, 4 + index)
            writer.close()
        listing = objects.list(f"raw/{EXP}/")
        tails = {i: SegmentTail(segments_prefix(EXP, i)) for i in (0, 1, 10)}
        for tail in tails.values():
            tail.refresh(objects, listing)
        assert objects.lists == 1
        for index, tail in tails.items():
            assert tail.error is None
            started = tail.cursor.state.started
            assert started is not None and started.process_index == index
            assert tail.cursor.offset == sum(len(s) for s in _segments(tmp_path, index))


class TestTailIntegrity:
    """Segments are immutable: a change, a vanishing, a torn or bad segment is final."""

    def _written(self, root: Path) -> LocalObjects:
        writer = _writer(LocalObjects(root), segment_events=3)
        _start(writer)
        _some_events(writer, 6)
        writer.close()
        return LocalObjects(root)

    def test_segment_that_changed_size_is_latched(self, tmp_path: Path) -> None:
        """A segment read before, now of another size: an error naming it, which stays."""
        objects = self._written(tmp_path)
        tail = _tail(objects)
        path = tmp_path / PREFIX / "00000001.jsonl"
        size = path.stat().st_size
        path.write_bytes(path.read_bytes() + b"\n")
        tail.refresh(objects, objects.list(PREFIX))
        assert tail.latched
        assert tail.error == (
            f"process_0.segments/00000001.jsonl is now {size + 1} bytes, {size} when it was "
            "read (a segment is written once and never changed)"
        )
        path.write_bytes(path.read_bytes()[:-1])
        assert not tail.refresh(objects, objects.list(PREFIX))
        assert tail.latched

    def test_segment_that_vanished_is_latched(self, tmp_path: Path) -> None:
        """A segment read before, gone from the listing: an integrity error naming it."""
        objects = self._written(tmp_path)
        tail = _tail(objects)
        (tmp_path / PREFIX / "00000000.jsonl").unlink()
        tail.refresh(objects, objects.list(PREFIX))
        assert tail.latched
        assert tail.error is not None
        assert tail.error.startswith("process_0.segments/00000000.jsonl vanished after it was read")

    def test_listing_and_bytes_disagree(self, tmp_path: Path) -> None:
        """A get that returns another size than the listing said is an integrity error."""
        objects = self._written(tmp_path)
        listing = objects.list(PREFIX)
        stale = [ObjectInfo(i.key, i.size + 1, i.etag) if i.key.endswith("1.jsonl") else i
                 for i in listing]  # fmt: skip
        tail = SegmentTail(PREFIX)
        tail.refresh(objects, stale)
        assert tail.latched
        assert tail.error is not None and "00000001.jsonl is " in tail.error
        assert "when listed" in tail.error
        assert len(tail.read) == 1

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"", "process_0.segments/00000000.jsonl is empty; a segment holds one or more"),
            (b'{"v":1', "00000000.jsonl does not end with \\n; a segment holds one or more"),
        ],
    )
    def test_empty_or_torn_segment(self, tmp_path: Path, content: bytes, message: str) -> None:
        """A segment must hold complete lines: empty or torn is an error, not "not yet"."""
        LocalObjects(tmp_path).put(segment_key(EXP, 0, 0), content)
        tail = _tail(LocalObjects(tmp_path))
        assert tail.latched
        assert tail.error is not None and message in tail.error

    def test_bad_line_names_segment_and_its_line(self, tmp_path: Path) -> None:
        """A line that does not decode: the message names the segment and its own line number."""
        objects = self._written(tmp_path)
        path = tmp_path / PREFIX / "00000001.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[0] + b"not json\n" + b"".join(lines[2:]))
        tail = _tail(objects)
        assert tail.latched
        assert tail.error is not None
        assert tail.error.startswith("process_0.segments/00000001.jsonl:2: line is not valid JSON")
        assert tail.cursor.lines == 4  # segment 0's three lines, and the one before the bad one

    def test_lenient_mode_skips_and_names_the_line(self, tmp_path: Path) -> None:
        """``strict=False`` skips the bad line as a problem naming segment and line."""
        objects = self._written(tmp_path)
        path = tmp_path / PREFIX / "00000001.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[0] + b"not json\n" + b"".join(lines[2:]))
        tail = _tail(objects, strict=False)
        assert tail.error is None
        assert len(tail.cursor.problems) >= 1
        assert tail.cursor.problems[0].startswith("process_0.segments/00000001.jsonl:2: ")

    def test_gap_is_not_yet(self, tmp_path: Path) -> None:
        """Segment 1 missing, 2 there: 0 read, the gap named; when 1 lands, 1 and 2 are read."""
        objects = self._written(tmp_path)
        hidden = tmp_path / "hidden"
        (tmp_path / PREFIX / "00000001.jsonl").rename(hidden)
        tail = _tail(objects)
        assert tail.error is None and len(tail.read) == 1
        assert tail.unread == (
            "process_0.segments/00000001.jsonl is not there yet, but 00000002.jsonl is "
            "(segments are numbered without gaps)"
        )
        hidden.rename(tmp_path / PREFIX / "00000001.jsonl")
        assert tail.refresh(objects, objects.list(PREFIX))
        assert tail.unread is None and len(tail.read) == len(tail.present) > 2

    def test_strays_are_ignored(self, tmp_path: Path) -> None:
        """Names that are not segments (``1.jsonl``, ``x``) are set aside, not read."""
        objects = self._written(tmp_path)
        objects.put(PREFIX + "1.jsonl", b"junk")
        objects.put(PREFIX + "notes/x", b"junk")
        tail = _tail(objects)
        assert tail.error is None and tail.cursor.state.finished
        assert tail.strays == ("1.jsonl", "notes/x")


# The law: segments, wherever they are cut, fold to what the whole log folds to.

bodies = st.lists(
    st.one_of(
        st.builds(
            lambda latency, n: {
                "type": "request",
                "latency_ms": latency,
                "input_tokens": n,
                "output_tokens": n + 1,
            },
            st.floats(min_value=0, max_value=1e4),
            st.integers(min_value=0, max_value=1000),
        ),
        st.builds(
            lambda power: {"type": "sample", "power_w": power, "energy_mj": 1.0},
            st.floats(min_value=0, max_value=700),
        ),
        st.builds(lambda text: {"type": "warning", "message": text}, st.text(max_size=20)),
    ),
    max_size=30,
)


@st.composite
def logs(draw: st.DrawFn) -> list[bytes]:
    """The lines of a finished log, with requests, samples and warnings in its window."""
    events: list[dict[str, Any]] = [
        {"type": "process_started", **STARTED},
        *draw(bodies),
        {"type": "window_started", "energy_mj": 0.0},
        *draw(bodies),
        {"type": "window_ended", "energy_mj": 5000.0},
        *draw(bodies),
        {"type": "process_finished"},
    ]
    return [
        orjson.dumps({"v": 1, "seq": seq, "t": T0 + 0.25 * seq, **body}) + b"\n"
        for seq, body in enumerate(events)
    ]


class TestFoldLaw:
    """Folding via segments equals folding the concatenated version-1 log."""

    @settings(max_examples=60, deadline=None)
    @given(
        lines=logs(),
        cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=8),
        refresh_every=st.integers(min_value=1, max_value=4),
    )
    def test_segments_fold_like_the_whole_log(
        self, lines: list[bytes], cuts: list[float], refresh_every: int
    ) -> None:
        """Random cut points, refreshes after every few segments: the same state and digest."""
        points = sorted({int(c * (len(lines) - 1)) + 1 for c in cuts} | {len(lines)})
        pieces = [b"".join(lines[a:b]) for a, b in zip([0, *points], points, strict=False)]
        with tempfile.TemporaryDirectory() as folder:
            objects = LocalObjects(Path(folder))
            tail = SegmentTail(PREFIX)
            for n, piece in enumerate(pieces):
                objects.put(segment_key(EXP, 0, n), piece, create=True)
                if n % refresh_every == 0:
                    tail.refresh(objects, objects.list(PREFIX))
            tail.refresh(objects, objects.list(PREFIX))
        whole = replay_bytes(b"".join(lines))
        assert tail.error is None
        assert tail.cursor.state == whole.state
        assert (tail.cursor.offset, tail.cursor.lines, tail.cursor.sha256) == (
            whole.offset,
            whole.lines,
            whole.sha256,
        )
        assert [s.bytes for s in tail.read] == [len(p) for p in pieces]
        a, b = summarize_process(tail.cursor.state), summarize_process(whole.state)
        assert a.raw.model_dump() == b.raw.model_dump()


# scan_experiment over a local folder of segmented processes.


def _experiment(root: Path, *, segmented: tuple[int, ...], world_size: int = 2) -> Path:
    """An experiment of ``world_size`` processes; those in ``segmented`` write segments."""
    for index in range(world_size):
        clock = ticking_clock(T0 + index, 0.5)
        writer: SegmentedLogWriter | EventLogWriter
        if index in segmented:
            writer = _writer(LocalObjects(root), index, segment_events=4, clock=clock)
        else:
            writer = EventLogWriter.open(root, EXP, index, clock=clock, flush_every_sec=3600.0)
        writer.append(
            "process_started",
            **{**STARTED, "process_index": index, "world_size": world_size, "gpu_id": index},
        )
        _some_events(writer, 10)
        writer.close()
    return root / "raw" / EXP


def _reasons(folder: Path) -> tuple[str, str]:
    scan = scan_experiment(folder)
    return scan.report.state, " | ".join(scan.report.reasons)


class TestScanExperiment:
    """``scan_experiment`` reads segmented processes beside appended ones."""

    @pytest.mark.parametrize("segmented", [(0, 1), (1,)])
    def test_complete_and_equal_to_the_appended_layout(
        self, tmp_path: Path, segmented: tuple[int, ...]
    ) -> None:
        """Same appends in either layout: complete, with the same per-process figures."""
        seg = scan_experiment(_experiment(tmp_path / "s", segmented=segmented))
        app = scan_experiment(_experiment(tmp_path / "a", segmented=()))
        assert seg.report.is_complete, seg.report.reasons
        assert seg.report.marker_status == {0: True, 1: True}
        assert [s.raw.model_dump() for s in seg.summaries] == [
            s.raw.model_dump() for s in app.summaries
        ]

    def test_segment_tails_resume(self, tmp_path: Path) -> None:
        """Given ``segment_tails``, a second scan fetches nothing again."""
        folder = _experiment(tmp_path, segmented=(0, 1))
        tails: dict[int, SegmentTail] = {}
        scan_experiment(folder, segment_tails=tails)
        gets = {i: t.gets for i, t in tails.items()}
        assert all(gets.values())
        assert scan_experiment(folder, segment_tails=tails).report.is_complete
        assert {i: t.gets for i, t in tails.items()} == gets

    def test_no_marker_is_pending(self, tmp_path: Path) -> None:
        """Segments without a marker: pending, like a log without one."""
        folder = _experiment(tmp_path, segmented=(0,))
        (folder / "process_0.done").unlink()
        state, reasons = _reasons(folder)
        assert state == "pending"
        assert "process 0 has no completion marker (process_0.done)" in reasons

    def test_missing_segment_is_pending(self, tmp_path: Path) -> None:
        """The last listed segment not there: pending, naming it."""
        folder = _experiment(tmp_path, segmented=(0,))
        last = sorted((folder / "process_0.segments").iterdir())[-1]
        last.unlink()
        state, reasons = _reasons(folder)
        assert state == "pending"
        assert re.search(r"process 0 marker lists \d+ segments; segments \[\d+\] are not", reasons)

    def test_gap_is_pending(self, tmp_path: Path) -> None:
        """A segment missing before others, marker there: pending, the gap named."""
        folder = _experiment(tmp_path, segmented=(0,))
        (folder / "process_0.segments" / "00000001.jsonl").unlink()
        state, reasons = _reasons(folder)
        assert state == "pending"
        assert "segments [1] are not there yet, 1 read so far (not yet)" in reasons

    def test_gap_without_marker_is_pending(self, tmp_path: Path) -> None:
        """A gap and no marker: pending, and the reason says which segment is awaited."""
        folder = _experiment(tmp_path, segmented=(0,))
        (folder / "process_0.done").unlink()
        (folder / "process_0.segments" / "00000001.jsonl").unlink()
        state, reasons = _reasons(folder)
        assert state == "pending"
        assert (
            "process 0 log cannot be read further yet: process_0.segments/00000001.jsonl is "
            "not there yet, but 00000002.jsonl is (segments are numbered without gaps)"
        ) in reasons

    def test_wrong_size(self, tmp_path: Path) -> None:
        """A segment rewritten to another size: invalid, segment and sizes named."""
        folder = _experiment(tmp_path, segmented=(0,))
        path = folder / "process_0.segments" / "00000001.jsonl"
        size = path.stat().st_size
        path.write_bytes(path.read_bytes().replace(b'"latency_ms":', b'"latency_ms": '))
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert f"segment 00000001 is {path.stat().st_size} bytes, its marker says {size}" in reasons

    def test_wrong_digest(self, tmp_path: Path) -> None:
        """A segment rewritten to other bytes of the same size: invalid, the digest named."""
        folder = _experiment(tmp_path, segmented=(0,))
        path = folder / "process_0.segments" / "00000001.jsonl"
        path.write_bytes(path.read_bytes().replace(b'"latency_ms":1', b'"latency_ms":2', 1))
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert "process 0 segment 00000001 does not match its marker's SHA-256" in reasons

    def test_extra_segment(self, tmp_path: Path) -> None:
        """A segment after the marker's last: invalid (events after the marker)."""
        folder = _experiment(tmp_path, segmented=(0,))
        marker = parse_any_marker((folder / "process_0.done").read_bytes())
        assert isinstance(marker, SegmentedMarker)
        n = len(marker.segments)
        extra = {"v": 1, "seq": marker.final_seq + 1, "t": T0 + 999, "type": "warning"}
        LocalObjects(tmp_path).put(
            segment_key(EXP, 0, n), orjson.dumps({**extra, "message": "late"}) + b"\n"
        )
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert f"has segments beyond the {n} its marker lists: [{n}]" in reasons

    def test_final_seq_mismatch(self, tmp_path: Path) -> None:
        """A marker whose ``final_seq`` is not the last event's: invalid."""
        folder = _experiment(tmp_path, segmented=(0,))
        marker = orjson.loads((folder / "process_0.done").read_bytes())
        last = marker["final_seq"]
        (folder / "process_0.done").write_bytes(orjson.dumps({**marker, "final_seq": last + 1}))
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert f"marker says the last seq is {last + 1}, the segments end at {last}" in reasons

    def test_both_layouts(self, tmp_path: Path) -> None:
        """A process with an appended log and segments: invalid, and neither is read."""
        folder = _experiment(tmp_path, segmented=(0,))
        other = _experiment(tmp_path / "other", segmented=())
        (folder / "process_0.events.jsonl").write_bytes(
            (other / "process_0.events.jsonl").read_bytes()
        )
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert (
            "process 0 wrote both an appended log (process_0.events.jsonl) and segments "
            "(process_0.segments/); a process writes one layout only"
        ) in reasons

    def test_version_1_marker_beside_segments(self, tmp_path: Path) -> None:
        """A version-1 marker cannot vouch for segments: invalid."""
        folder = _experiment(tmp_path, segmented=(0,))
        other = _experiment(tmp_path / "other", segmented=())
        (folder / "process_0.done").write_bytes((other / "process_0.done").read_bytes())
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert "marker is version 1 (one appended log) but the process wrote segments" in reasons

    def test_version_2_marker_beside_an_appended_log(self, tmp_path: Path) -> None:
        """A version-2 marker beside an appended log: invalid, the layouts named."""
        folder = _experiment(tmp_path, segmented=())
        other = _experiment(tmp_path / "other", segmented=(0,))
        (folder / "process_0.done").write_bytes((other / "process_0.done").read_bytes())
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert "marker is version 2 (segmented layout) but its log is one appended file" in reasons

    def test_marker_larger_than_its_segments_need(self, tmp_path: Path) -> None:
        """A marker beyond 64 KiB plus 128 bytes per segment present is not read."""
        folder = _experiment(tmp_path, segmented=(0,))
        marker = orjson.loads((folder / "process_0.done").read_bytes())
        (folder / "process_0.done").write_bytes(
            orjson.dumps({**marker, "padding": "x" * (70 << 10)})
        )
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert "cannot read process_0.done: larger than" in reasons

    def test_segments_folder_that_is_a_link(self, tmp_path: Path) -> None:
        """``process_<i>.segments`` as a symbolic link (inside the root) is not followed."""
        folder = _experiment(tmp_path, segmented=(0,))
        real = folder / "process_0.segments"
        real.rename(tmp_path / "elsewhere")
        real.symlink_to(tmp_path / "elsewhere")
        state, reasons = _reasons(folder)
        assert state == "invalid"
        assert "process_0.segments is a symbolic link; segments are read from a real" in reasons

    def test_orphan_marker_is_not_reported_for_segments(self, tmp_path: Path) -> None:
        """A segmented process's marker has no log beside it, and that is as it should be."""
        scan = scan_experiment(_experiment(tmp_path, segmented=(0, 1)))
        assert scan.problems == []


class TestDocExample:
    """The example of docs/format.md §7.6 is what the writer's rules give for §5's log."""

    def test_example_marker_matches_its_segments(self, tmp_path: Path) -> None:
        """§5's log cut after its second line gives §7.6's marker, and it is valid."""
        text = DOCS.read_text(encoding="utf-8")
        log = re.findall(r"```jsonl\n(.*?)```", text[text.index("## 5. Example") :], re.DOTALL)
        lines = log[0].encode().splitlines(keepends=True)
        section = text[text.index("### 7.6 Example") :]
        (marker_text,) = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
        marker = parse_any_marker(marker_text.encode())
        assert isinstance(marker, SegmentedMarker)
        objects = LocalObjects(tmp_path)
        for n, piece in enumerate((b"".join(lines[:2]), b"".join(lines[2:]))):
            objects.put(f"raw/llama-8b-tp2/process_0.segments/{n:08d}.jsonl", piece, create=True)
        objects.put("raw/llama-8b-tp2/process_0.done", marker_text.encode(), create=True)
        assert marker.to_bytes() == marker_text.encode()
        scan = scan_experiment(tmp_path / "raw" / "llama-8b-tp2")
        assert scan.report.is_complete, scan.report.reasons
        (summary,) = scan.summaries
        assert summary.inference_time_sec == pytest.approx(0.75)
        assert summary.energy_j == pytest.approx(60.5)
