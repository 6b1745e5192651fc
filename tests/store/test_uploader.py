"""Tests for energy_ledger.store.uploader and ``SegmentedLogWriter(background=True)``.

Puts are driven by hand: a put that waits on an event shows what runs while a put is in
flight, without timing anything.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from energy_ledger.exceptions import FormatError, LedgerError, StoreWriteError
from energy_ledger.recorder.guard import LossGuard, is_write_failure
from energy_ledger.store.objects import LocalObjects, ObjectInfo, PreconditionFailed
from energy_ledger.store.segments import SegmentedLogWriter, segment_key
from energy_ledger.store.uploader import SegmentUploader
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import ticking_clock, wait_for
from tests.store.test_segments import (
    EXP,
    STARTED,
    T0,
    FailingObjects,
    _segments,
    _some_events,
    _start,
    _tail,
)


class GatedPuts:
    """A ``put`` callable that records ``(number, data)`` and waits for ``gate`` first."""

    def __init__(self, *, fail_at: int | None = None) -> None:
        self.gate = threading.Event()
        self.started: list[int] = []
        self.done: list[tuple[int, bytes]] = []
        self.fail_at = fail_at

    def __call__(self, number: int, data: bytes) -> None:
        self.started.append(number)
        self.gate.wait(10)
        if self.fail_at is not None and len(self.started) >= self.fail_at:
            raise StoreWriteError(f"put {number} refused")
        self.done.append((number, data))


class TestSegmentUploader:
    """One thread, in order, bounded; the first failure ends it."""

    def test_puts_in_order_and_drain_waits(self) -> None:
        """Submits return while puts wait; ``drain`` returns once all are put, in order."""
        puts = GatedPuts()
        uploader = SegmentUploader(puts, max_pending=8)
        for n in range(5):
            uploader.submit(n, b"%d\n" % n)
        assert puts.done == [] and uploader.pending == 5
        puts.gate.set()
        uploader.drain()
        assert [n for n, _ in puts.done] == [0, 1, 2, 3, 4]
        assert uploader.pending == 0 and uploader.puts == 5 and uploader.error is None

    def test_submit_waits_for_room(self) -> None:
        """With ``max_pending`` segments pending, the next submit waits for a put to end."""
        puts = GatedPuts()
        uploader = SegmentUploader(puts, max_pending=2)
        uploader.submit(0, b"a\n")
        uploader.submit(1, b"b\n")
        third = threading.Thread(target=uploader.submit, args=(2, b"c\n"))
        third.start()
        third.join(0.2)
        assert third.is_alive()  # no room while 0 is in flight and 1 queued
        puts.gate.set()
        third.join(10)
        uploader.drain()
        assert [n for n, _ in puts.done] == [0, 1, 2]

    def test_failure_drops_the_queue_and_stops(self) -> None:
        """A failed put keeps its error; what was queued is never put, later submits neither."""
        puts = GatedPuts(fail_at=2)
        uploader = SegmentUploader(puts, max_pending=8)
        for n in range(4):
            uploader.submit(n, b"x\n")
        puts.gate.set()
        uploader.drain()
        assert isinstance(uploader.error, StoreWriteError)
        uploader.submit(9, b"late\n")
        assert puts.started == [0, 1] and [n for n, _ in puts.done] == [0]

    def test_discard_does_not_wait(self) -> None:
        """``discard`` returns while a put is in flight and drops what is queued."""
        puts = GatedPuts()
        uploader = SegmentUploader(puts, max_pending=8)
        for n in range(3):
            uploader.submit(n, b"x\n")
        wait_for(lambda: puts.started == [0], "the first put to start")
        uploader.discard()
        puts.gate.set()
        uploader.drain()
        assert puts.started == [0]


class SlowObjects(LocalObjects):
    """A ``LocalObjects`` whose puts wait for ``gate`` (a slow bucket, held by the test)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        self.gate.wait(10)
        return super().put(key, data, create=create, if_match=if_match)


def _background(objects: object, **options: object) -> SegmentedLogWriter:
    return SegmentedLogWriter(
        objects,  # type: ignore[arg-type]
        EXP,
        0,
        clock=ticking_clock(T0, 0.5),
        segment_sec=3600.0,
        background=True,
        **options,  # type: ignore[arg-type]
    )


class TestBackgroundWriter:
    """``SegmentedLogWriter(background=True)``: the same segments, put off the appending call."""

    def test_appends_do_not_wait_for_puts(self, tmp_path: Path) -> None:
        """Cuts are handed over while every put is held; ``close`` puts them, then the marker."""
        objects = SlowObjects(tmp_path)
        writer = _background(objects, segment_events=4)
        _start(writer)
        _some_events(writer, 20)
        assert not (tmp_path / "raw").exists()  # five cuts made, none put yet
        objects.gate.set()
        marker = writer.close()
        assert len(marker.segments) == len(_segments(tmp_path)) == 6
        assert [s.bytes for s in marker.segments] == [len(s) for s in _segments(tmp_path)]
        tail = _tail(LocalObjects(tmp_path))
        assert tail.error is None and tail.cursor.state.finished

    def test_same_bytes_as_the_appended_log(self, tmp_path: Path) -> None:
        """The segments, end to end, are what ``EventLogWriter`` writes for the same appends."""
        log_writer = EventLogWriter.open(
            tmp_path / "a", EXP, 0, clock=ticking_clock(T0, 0.5), flush_every_sec=3600.0
        )
        writer = _background(LocalObjects(tmp_path / "b"), segment_events=3)
        for w in (log_writer, writer):
            _start(w)
            _some_events(w, 30)
        v1 = log_writer.close()
        v2 = writer.close()
        assert b"".join(_segments(tmp_path / "b")) == log_writer.path.read_bytes()
        assert v2.log_bytes == v1.log_bytes and v2.final_seq == v1.final_seq

    def test_failed_put_is_raised_by_a_later_cut(self, tmp_path: Path) -> None:
        """The second put fails on the uploader: a later cut raises it, a write failure, and
        the writer is closed; nothing after the gap is put."""
        objects = FailingObjects(tmp_path, fail_at=2)
        writer = _background(objects, segment_events=2)
        _start(writer)
        writer.append("warning", message="a")  # cut 0
        writer.append("warning", message="b")
        writer.append("warning", message="c")  # cut 1: fails on the uploader
        wait_for(lambda: len(objects.puts) == 2, "the failed put")
        writer.append("warning", message="d")
        with pytest.raises(StoreWriteError, match="No space left on device") as info:
            writer.append("warning", message="e")  # cut 2 finds the failure
        assert is_write_failure(info.value) and isinstance(info.value.__cause__, OSError)
        assert writer.closed and objects.puts == [segment_key(EXP, 0, 0), segment_key(EXP, 0, 1)]
        assert len(_segments(tmp_path)) == 1
        assert not (tmp_path / "raw" / EXP / "process_0.done").exists()

    def test_close_raises_a_failure_and_puts_no_marker(self, tmp_path: Path) -> None:
        """Behind ``LossGuard``: the failure surfaces at ``close``, which returns ``None``."""
        objects = FailingObjects(tmp_path, fail_at=1)
        guard = LossGuard(_background(objects, segment_events=2))
        guard.append("process_started", **STARTED)
        guard.append("warning", message="a")  # cut 0, which will fail
        assert guard.close() is None
        assert guard.lost is not None and "No space left on device" in guard.lost
        assert objects.puts == [segment_key(EXP, 0, 0)]
        assert not (tmp_path / "raw" / EXP / "process_0.done").exists()

    def test_a_bug_in_the_store_is_not_a_write_failure(self, tmp_path: Path) -> None:
        """A put that raises something other than a storage error: raised as it is."""

        class Broken(LocalObjects):
            def put(
                self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
            ) -> ObjectInfo:
                raise TypeError("a bug")

        writer = _background(Broken(tmp_path))
        _start(writer)
        with pytest.raises(TypeError, match="a bug") as info:
            writer.close()
        assert not is_write_failure(info.value)

    def test_abandon_drops_what_is_queued(self, tmp_path: Path) -> None:
        """``abandon`` returns at once; segments still queued are never put."""
        objects = SlowObjects(tmp_path)
        writer = _background(objects, segment_events=2)
        _start(writer)
        for k in range(6):
            writer.append("warning", message=f"w{k}")
        writer.abandon()
        objects.gate.set()
        with pytest.raises(LedgerError, match="writer is closed"):
            writer.append("warning", message="late")
        assert writer._uploader is not None
        writer._uploader.drain()  # the put that was in flight, if any, has ended
        folder = tmp_path / "raw" / EXP
        put = sorted(p.name for p in folder.rglob("*.jsonl")) if folder.exists() else []
        assert put in ([], ["00000000.jsonl"])
        assert not (folder / "process_0.done").exists()


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (_caused(LedgerError("cannot append"), OSError(errno.EIO, "I/O error")), True),
        (StoreWriteError("cannot put raw/x into s3://b/root: GenericError: 503"), True),
        (_caused(StoreWriteError("exists"), PreconditionFailed("object exists")), True),
        (LedgerError("writer is closed"), False),
        (_caused(LedgerError("x"), PreconditionFailed("object exists")), False),
        (FormatError("input_tokens must be >= 0"), False),
        (TypeError("a bug"), False),
    ],
)
def test_is_write_failure(exc: BaseException, expected: bool) -> None:
    """Storage failures are recognised; a plain ``LedgerError``, a bad value or a bug is not."""
    assert is_write_failure(exc) is expected
