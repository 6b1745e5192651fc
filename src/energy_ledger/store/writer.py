"""``EventLogWriter``: the low-level, crash-safe writer of one process's ledger.

Events are serialised with orjson into an in-memory buffer and appended to the log with one
``write`` per flush. ``flush_every_events`` and ``flush_every_sec`` bound what a crash can lose;
``fsync`` says when the bytes are forced to disk ("close": only at the end, "flush": at every
flush). ``close()`` appends ``process_finished``, flushes, fsyncs, then writes the marker
atomically (temp + fsync + rename + fsync folder). ``fail(error)`` appends ``process_failed`` and
writes no marker, so ``recover`` can account for the process.

Events are stamped by a monotonic-anchored clock (``store.clock.AnchoredClock``) unless the caller
gives one, so ``t`` never decreases even when the system clock is stepped back. A flush asked to
(``flush(measure_fs_offset=True)``; ``append_clock`` does) also estimates this host's wall clock
minus the results filesystem's clock from the mtime its write left, and ``append_clock`` writes
the latest estimate into a ``clock`` event. Ordinary flushes do not measure: on NFS an ``fstat``
sends the written pages to the server and waits for it, which would make every flush a round trip.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson

from energy_ledger.core.decode import make_event
from energy_ledger.core.events import FORMAT_VERSION, Event, event_to_dict
from energy_ledger.core.marker import Marker
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import fsync_dir, write_atomic
from energy_ledger.store.clock import AnchoredClock, FsOffset, estimate_fs_offset
from energy_ledger.store.layout import ResultsLayout

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["close", "flush"]


class EventAppender:
    """What both log writers share: the checked ``append`` and the ``clock`` event's body.

    ``EventLogWriter`` appends to one file, ``store.segments.SegmentedLogWriter`` to segments
    it puts to an object store; both keep these attributes and give ``append_raw``.
    """

    path: Any
    _closed: bool
    _seq: int
    _run_id: str | None
    _clock: Callable[[], float]

    def append_raw(self, obj: dict[str, Any]) -> None:  # pragma: no cover - each writer's own
        raise NotImplementedError

    def append(self, type_name: str, *, t: float | None = None, **fields: Any) -> Event:
        """Validate and append an event of ``type_name``; returns it (with its ``seq``).

        Raises:
            FormatError: a field is missing or of the wrong type (nothing is written).
            LedgerError: the writer is closed, the first event is not ``process_started``, or
                the write failed.
        """
        if self._closed:
            raise LedgerError(f"{self.path}: writer is closed")
        if self._seq == 0 and type_name != "process_started":
            raise LedgerError("the first event must be process_started")
        if self._seq > 0 and type_name == "process_started":
            raise LedgerError("process_started may only be the first event")
        event = make_event(type_name, seq=self._seq, t=self._clock() if t is None else t, **fields)
        if type_name == "process_started":
            self._run_id = fields["run_id"]
        self.append_raw(event_to_dict(event))
        return event

    def _clock_body(self, t: float, monotonic_sec: float, wall_t: float | None) -> dict[str, Any]:
        """A ``clock`` event's wire form, before any filesystem offset (checks the writer)."""
        if self._closed:
            raise LedgerError(f"{self.path}: writer is closed")
        if self._seq == 0:
            raise LedgerError("the first event must be process_started")
        obj: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "seq": 0,
            "t": t,
            "type": "clock",
            "monotonic_sec": monotonic_sec,
        }
        if wall_t is not None:
            obj["wall_t"] = wall_t
        return obj


class EventLogWriter(EventAppender):
    """Append events to ``<root>/raw/<experiment_id>/process_<i>.events.jsonl``.

    Use :meth:`open`; the first event written must be ``process_started``.
    Not thread-safe: one writer per process, called from one thread at a time (the recorder
    serialises its sampler thread and the caller with a lock).

    Args:
        path: the log file to create.
        marker_path: where ``close()`` writes the marker.
        process_index: the process's index (written into the marker).
        flush_every_events: flush when this many events are buffered.
        flush_every_sec: flush at the first append this long after the last flush.
        fsync: ``"close"`` (fsync once, at the end) or ``"flush"`` (at every flush).
        clock: Unix seconds for events appended without a ``t``; default a new
            ``AnchoredClock``, which never goes backwards.
    """

    def __init__(
        self,
        path: Path,
        marker_path: Path,
        *,
        process_index: int,
        flush_every_events: int = 256,
        flush_every_sec: float = 1.0,
        fsync: FsyncPolicy = "close",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = path
        self.marker_path = marker_path
        self.process_index = process_index
        self._flush_every_events = max(1, flush_every_events)
        self._flush_every_sec = flush_every_sec
        self._fsync = fsync
        self._clock = AnchoredClock().now if clock is None else clock
        self._fs_offset: FsOffset | None = None
        self._last_clock_monotonic_sec: float | None = None
        self._mtime_subsecond_seen = False
        self._seq = 0
        self._run_id: str | None = None
        self._buffer: list[bytes] = []
        self._last_flush = time.monotonic()
        self._bytes = 0
        self._digest = hashlib.sha256()
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            raise LedgerError(
                f"{path} already exists: a ledger is append-only and written once; "
                "use a new experiment id or run id"
            ) from None
        except OSError as exc:
            raise LedgerError(f"cannot create {path}: {exc.strerror or exc}") from exc
        fsync_dir(path.parent)

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        experiment_id: str,
        process_index: int,
        **options: Any,
    ) -> EventLogWriter:
        """Create the log of process ``process_index`` of ``experiment_id`` under ``root``."""
        if process_index < 0:
            raise LedgerError(f"process index must be >= 0, got {process_index}")
        layout = ResultsLayout.at(root)
        return cls(
            layout.log_path(experiment_id, process_index),
            layout.marker_path(experiment_id, process_index),
            process_index=process_index,
            **options,
        )

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event gets."""
        return self._seq

    @property
    def closed(self) -> bool:
        """True after ``close()`` or ``fail()``."""
        return self._closed

    @property
    def fs_offset(self) -> FsOffset | None:
        """The latest estimate of this host's wall clock minus the filesystem's (or ``None``)."""
        return self._fs_offset

    @property
    def last_clock_monotonic_sec(self) -> float | None:
        """``monotonic_sec`` of the last ``clock`` event appended (``None`` before the first)."""
        return self._last_clock_monotonic_sec

    def append_raw(self, obj: dict[str, Any]) -> None:
        """Append an already-valid wire-form event (the hot path; ``seq`` is set here)."""
        obj["seq"] = self._seq
        obj.setdefault("v", FORMAT_VERSION)
        self._buffer.append(orjson.dumps(obj))
        self._seq += 1
        if (
            len(self._buffer) >= self._flush_every_events
            or time.monotonic() - self._last_flush >= self._flush_every_sec
        ):
            self.flush()

    def append_clock(self, t: float, monotonic_sec: float, wall_t: float | None = None) -> None:
        """Append a ``clock`` event with the filesystem offset measured by flushing first.

        The flush writes what is buffered and times that write (``flush``), so the offset is
        measured just before this event; with nothing buffered the event carries the latest
        earlier estimate, and none when there never was one.

        Args:
            t: the event's time, from the same reading as ``monotonic_sec``.
            monotonic_sec: ``time.monotonic()`` at ``t``.
            wall_t: ``time.time()`` at ``t``.

        Raises:
            LedgerError: the writer is closed, nothing was written yet, or the write failed.
        """
        obj = self._clock_body(t, monotonic_sec, wall_t)
        self.flush(measure_fs_offset=True)
        offset = self._fs_offset
        if offset is not None:
            obj["fs_offset_sec"] = offset.offset_sec
            obj["fs_offset_error_sec"] = offset.error_sec
        self.append_raw(obj)
        self._last_clock_monotonic_sec = monotonic_sec

    def flush(self, *, measure_fs_offset: bool = False) -> None:
        """Write the buffered events to the log (and fsync, with ``fsync="flush"``).

        Args:
            measure_fs_offset: also estimate this host's wall clock minus the filesystem's,
                from ``time.time()`` just before the write, the mtime ``fstat`` reads after it,
                and ``time.time()`` after the ``fstat`` (``store.clock.estimate_fs_offset``).
                Until an mtime with a non-zero sub-second part is seen, the filesystem is taken
                to keep whole seconds and the estimate's error includes a second. Nothing
                buffered: nothing written, nothing measured.
        """
        if not self._buffer:
            return
        data = b"\n".join(self._buffer) + b"\n"
        self._buffer.clear()
        if measure_fs_offset:
            self._write_measured(data)
        else:
            self._write(data)
        if self._fsync == "flush":
            os.fsync(self._fd)
        self._last_flush = time.monotonic()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise LedgerError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        self._digest.update(data)
        self._bytes += len(data)

    def _write_measured(self, data: bytes) -> None:
        before_sec = time.time()
        self._write(data)
        try:
            mtime_ns = os.fstat(self._fd).st_mtime_ns
        except OSError as exc:
            logger.debug("no filesystem clock offset for %s: fstat failed: %s", self.path, exc)
            return
        after_sec = time.time()
        if mtime_ns % 1_000_000_000:
            self._mtime_subsecond_seen = True
        estimate = estimate_fs_offset(
            before_sec, after_sec, mtime_ns, whole_second_mtime=not self._mtime_subsecond_seen
        )
        if estimate is not None:
            self._fs_offset = estimate

    def close(self, status: str = "ok") -> Marker:
        """Append ``process_finished``, make the log durable, then write the marker.

        Returns:
            The marker written.
        """
        if self._run_id is None:
            raise LedgerError("cannot finish a log without process_started")
        self.append("process_finished", status=status)
        final_seq = self._seq - 1
        self._finish()
        marker = Marker(
            process_index=self.process_index,
            run_id=self._run_id,
            final_seq=final_seq,
            log_bytes=self._bytes,
            log_sha256=self._digest.hexdigest(),
        )
        write_atomic(self.marker_path, marker.to_bytes())
        return marker

    def fail(self, error: str) -> None:
        """Append ``process_failed`` and close without a marker."""
        if self._closed:
            return
        if self._seq > 0:
            self.append("process_failed", error=error)
        self._finish()

    def abandon(self) -> None:
        """Close the file without writing anything more (what a crash would leave)."""
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def _finish(self) -> None:
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> EventLogWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._closed:
            return
        if exc is None:
            self.close()
        else:
            self.fail(f"{type(exc).__name__}: {exc}")
