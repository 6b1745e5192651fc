"""The segmented layout (docs/format.md §7): one process's log as immutable, numbered segments.

An object store cannot append, so a process writes its log as segments instead: each one a
batch of complete lines, created once (``put(create=True)``) and never changed, then a version-2
marker that lists every segment's size and SHA-256, created once too. A folder (``LocalObjects``)
holds the same layout, so one format serves buckets and folders.

- ``SegmentedLogWriter`` has ``EventLogWriter``'s append API. It buffers lines in memory and cuts
  a segment every ``segment_events`` events, ``segment_bytes`` bytes or ``segment_sec`` seconds
  (checked at each append, as ``EventLogWriter`` checks its flush); ``close()`` puts the last
  segment and then the marker. The segments, end to end, are byte for byte the log
  ``EventLogWriter`` writes for the same appends. With ``background=True`` (the recorder's
  choice) the puts run on a ``store.uploader.SegmentUploader`` thread, off the appending one.

Reading them back is ``store.segment_tail``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, cast

import orjson

from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.core.marker import (
    MAX_SEGMENTS,
    SegmentDigest,
    SegmentedMarker,
)
from energy_ledger.exceptions import LedgerError, StoreWriteError, UnsafePathError
from energy_ledger.store.clock import AnchoredClock
from energy_ledger.store.layout import (
    experiment_key,
    marker_name,
    segment_name,
    segments_name,
)
from energy_ledger.store.objects import (
    ObjectStore,
    PreconditionFailed,
    open_objects,
)
from energy_ledger.store.uploader import DEFAULT_MAX_PENDING, SegmentUploader
from energy_ledger.store.writer import EventAppender

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "DEFAULT_SEGMENT_EVENTS",
    "DEFAULT_SEGMENT_SEC",
    "MAX_SEGMENT_BYTES",
    "SegmentedLogWriter",
    "marker_key",
    "segment_key",
    "segments_prefix",
]

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_EVENTS = 8192
"""Cut a segment at this many events: about 1 MB of ordinary events, a few seconds of a busy
server's requests, so memory stays small and a crash loses little."""
DEFAULT_SEGMENT_SEC = 5.0
"""Cut a segment at the first append this long after the last cut: a put every few seconds per
process (17,280 a day), cheap for a bucket, and at most this much of a run lost to a crash."""
DEFAULT_SEGMENT_BYTES = 8 << 20
"""Cut a segment once this many bytes are buffered, whatever the count, so a segment stays far
below ``MAX_SEGMENT_BYTES`` even with long lines."""
MAX_SEGMENT_BYTES = 64 << 20
"""The largest segment the format allows (docs/format.md §7.2); a reader fetches none larger."""


def segments_prefix(experiment_id: str, process_index: int) -> str:
    """``raw/<experiment_id>/process_<i>.segments/``: the key prefix of a process's segments."""
    return f"{experiment_key(experiment_id)}{segments_name(process_index)}/"


def segment_key(experiment_id: str, process_index: int, number: int) -> str:
    """The key of segment ``number`` of a process's log."""
    return segments_prefix(experiment_id, process_index) + segment_name(number)


def marker_key(experiment_id: str, process_index: int) -> str:
    """The key of a process's completion marker (either layout)."""
    return experiment_key(experiment_id) + marker_name(process_index)


class SegmentedLogWriter(EventAppender):
    """Write one process's log as segments, then its version-2 marker, into an object store.

    The API is ``EventLogWriter``'s: ``append``, ``append_raw``, ``append_clock``, ``flush``,
    ``close`` (the marker), ``fail`` (no marker), ``abandon``, ``next_seq``, ``closed``. Not
    thread-safe, like it: one writer per process, called from one thread at a time.

    A put that fails (a full disk, a bucket that refuses, another writer's segment already
    there) raises ``StoreWriteError`` from the call that cut the segment, as a failed write
    does from ``EventLogWriter``; its cause is the ``OSError`` when there is one, so the
    recorder's ``LossGuard`` marks the process as not recorded. The writer is then closed:
    nothing more is put, and no marker, since the segments stored no longer hold every event.

    With ``background=True`` a cut only hands the segment to a ``SegmentUploader`` thread,
    which puts the segments in order while appends go on. A put that fails there is raised by
    the next cut, or by ``close``/``fail``, which wait for every segment handed over (the
    marker is put only after all of them); an append in between buffers as usual, for nothing.
    ``segments`` then fills as the puts succeed, and is complete after ``close``.

    Args:
        objects: the results root's store.
        experiment_id: the experiment.
        process_index: the process's index.
        segment_events: cut a segment when this many events are buffered.
        segment_sec: cut at the first append this long after the last cut (``monotonic``).
        segment_bytes: cut when this many bytes are buffered.
        clock: Unix seconds for events appended without a ``t``; default a new
            ``AnchoredClock``, which never goes backwards.
        monotonic: the clock ``segment_sec`` is measured on (tests inject one).
        background: put segments on an uploader thread instead of in the cutting call.
        max_pending: with ``background``, segments cut and not yet put before a cut waits.

    Raises:
        LedgerError: the process already has a log, segments or a marker in the store (a log
            is written once), or the store cannot be listed.
    """

    def __init__(
        self,
        objects: ObjectStore,
        experiment_id: str,
        process_index: int,
        *,
        segment_events: int = DEFAULT_SEGMENT_EVENTS,
        segment_sec: float = DEFAULT_SEGMENT_SEC,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        background: bool = False,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if process_index < 0:
            raise LedgerError(f"process index must be >= 0, got {process_index}")
        self.objects = objects
        self.process_index = process_index
        self.prefix = segments_prefix(experiment_id, process_index)
        self.marker_key = marker_key(experiment_id, process_index)
        self._segment_events = max(1, segment_events)
        self._segment_sec = segment_sec
        self._segment_bytes = max(1, min(segment_bytes, MAX_SEGMENT_BYTES // 2))
        self._clock = AnchoredClock().now if clock is None else clock
        self._monotonic = monotonic
        self._seq = 0
        self._run_id: str | None = None
        # One bytearray, not a list of lines: with thousands of lines buffered, a list of
        # small bytes objects made appends 3 to 4 times slower (measured), a bytearray not.
        self._buffer = bytearray()
        self._buffered_events = 0
        self._last_cut = monotonic()
        self._last_clock_monotonic_sec: float | None = None
        self.segments: list[SegmentDigest] = []
        self._cuts = 0
        self._closed = False
        self._check_unused(experiment_id)
        self._uploader = (
            SegmentUploader(
                self._store_segment,
                max_pending=max_pending,
                name=f"energy-ledger-uploader-{process_index}",
            )
            if background
            else None
        )

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        experiment_id: str,
        process_index: int,
        **options: Any,
    ) -> SegmentedLogWriter:
        """The writer of process ``process_index`` of ``experiment_id`` under ``root`` (a folder
        or a bucket URL, ``store.objects.open_objects``)."""
        return cls(open_objects(root), experiment_id, process_index, **options)

    def _check_unused(self, experiment_id: str) -> None:
        """Refuse a process that already wrote something: one list call of its names."""
        stem = f"{experiment_key(experiment_id)}process_{self.process_index}."
        try:
            found = self.objects.list(stem)
        except (OSError, LedgerError) as exc:
            raise LedgerError(f"cannot list {self.objects.url}/{stem}*: {exc}") from exc
        if found:
            raise LedgerError(
                f"{self.objects.url}/{found[0].key} already exists: a ledger is written once; "
                "use a new experiment id or run id"
            )

    @property
    def path(self) -> str:
        """Where the segments go (for messages): the store's root and the segments' prefix."""
        return f"{self.objects.url.rstrip('/')}/{self.prefix}"

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event gets."""
        return self._seq

    @property
    def closed(self) -> bool:
        """True after ``close()``, ``fail()``, ``abandon()`` or a failed put."""
        return self._closed

    @property
    def fs_offset(self) -> None:
        """Always ``None``: an object store has no mtime a put could be timed against."""
        return None

    @property
    def last_clock_monotonic_sec(self) -> float | None:
        """``monotonic_sec`` of the last ``clock`` event appended (``None`` before the first)."""
        return self._last_clock_monotonic_sec

    def append_raw(self, obj: dict[str, Any]) -> None:
        """Append an already-valid wire-form event (the hot path; ``seq`` is set here)."""
        if self._closed:
            raise LedgerError(f"{self.path}: writer is closed")
        obj["seq"] = self._seq
        obj.setdefault("v", FORMAT_VERSION)
        buffer = self._buffer
        buffer += orjson.dumps(obj)
        buffer += b"\n"
        self._buffered_events += 1
        self._seq += 1
        if (
            self._buffered_events >= self._segment_events
            or len(buffer) >= self._segment_bytes
            or self._monotonic() - self._last_cut >= self._segment_sec
        ):
            self.flush()

    def append_clock(self, t: float, monotonic_sec: float, wall_t: float | None = None) -> None:
        """Append a ``clock`` event, without a filesystem offset (see ``fs_offset``).

        Raises:
            LedgerError: the writer is closed, nothing was written yet, or a put failed.
        """
        self.append_raw(self._clock_body(t, monotonic_sec, wall_t))
        self._last_clock_monotonic_sec = monotonic_sec

    def flush(self, *, measure_fs_offset: bool = False) -> None:
        """Cut a segment of the buffered events and put it (nothing buffered: nothing put).

        Args:
            measure_fs_offset: accepted for ``EventLogWriter``'s callers; nothing is measured.

        Raises:
            StoreWriteError: the put failed (or, with ``background``, an earlier one did);
                the writer is closed (see the class doc).
        """
        # The last segment the format allows (``MAX_SEGMENTS``, some 60 days of a process at
        # the defaults) is cut at close only: it takes whatever comes after, in memory.
        if self._buffer and self._cuts < MAX_SEGMENTS - 1:
            self._cut()

    def _cut(self) -> None:
        """Put what is buffered as the next segment (or hand it to the uploader)."""
        # The buffer itself is handed over, not a copy: copying a segment of megabytes took
        # 1 to 25 ms here (measured), inside the request() that cuts it. Nothing touches it
        # again, and every store writes a bytearray as it would bytes (a buffer to os.write
        # and to obstore), hence the cast.
        data = cast(bytes, self._buffer)
        self._buffer = bytearray()
        self._buffered_events = 0
        number = self._cuts
        self._cuts += 1
        uploader = self._uploader
        if uploader is None:
            try:
                self._store_segment(number, data)
            except StoreWriteError:
                self._lose()
                raise
        else:
            self._check_uploads()
            uploader.submit(number, data)
        self._last_cut = self._monotonic()

    def _store_segment(self, number: int, data: bytes) -> None:
        """Create segment ``number`` and keep its digest (on the uploader's thread, if any)."""
        self._put(self.prefix + segment_name(number), data, what=f"segment {number:08d}")
        self.segments.append(SegmentDigest(len(data), hashlib.sha256(data).hexdigest()))

    def _check_uploads(self) -> None:
        """Raise what a background put raised (the writer is closed first)."""
        uploader = self._uploader
        if uploader is not None and (error := uploader.error) is not None:
            self._lose()
            raise error

    def _put(self, key: str, data: bytes, *, what: str) -> None:
        """``put(create=True)``; a failure of the store is a ``StoreWriteError``, caused by the
        ``OSError`` if there is one. Touches no state of the writer: it may run on the
        uploader's thread."""
        try:
            self.objects.put(key, data, create=True)
        except PreconditionFailed as exc:
            raise StoreWriteError(
                f"cannot put {what} of process {self.process_index}: {key} already exists in "
                f"{self.objects.url} (another writer for the same process?)"
            ) from exc
        except UnsafePathError:  # the key is ours: a bug, not the store's doing
            raise
        except (OSError, LedgerError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreWriteError(f"cannot put {key} into {self.objects.url}: {reason}") from cause

    def _lose(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._buffered_events = 0

    def close(self, status: str = "ok") -> SegmentedMarker:
        """Append ``process_finished``, put the last segment, then create the marker.

        Returns:
            The marker written.

        Raises:
            StoreWriteError: a put failed (no marker is written), or another writer's marker
                is there already.
        """
        if self._run_id is None:
            raise LedgerError("cannot finish a log without process_started")
        self.append("process_finished", status=status)
        final_seq = self._seq - 1
        self._finish()
        marker = SegmentedMarker(
            process_index=self.process_index,
            run_id=self._run_id,
            final_seq=final_seq,
            segments=tuple(self.segments),
        )
        try:
            self._put(self.marker_key, marker.to_bytes(), what="the marker")
        except StoreWriteError:
            self._lose()
            raise
        return marker

    def fail(self, error: str) -> None:
        """Append ``process_failed``, put what is buffered, and close without a marker."""
        if self._closed:
            return
        if self._seq > 0:
            self.append("process_failed", error=error)
        self._finish()

    def abandon(self) -> None:
        """Close without putting anything more (what a crash would leave); never waits."""
        self._lose()
        if self._uploader is not None:
            self._uploader.discard()

    def _finish(self) -> None:
        """Put what is buffered, then wait for the uploader: every segment is stored after."""
        try:
            if self._buffer:
                self._cut()
            if self._uploader is not None:
                self._uploader.drain()
                self._check_uploads()
        finally:
            self._closed = True

    def __enter__(self) -> SegmentedLogWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._closed:
            return
        if exc is None:
            self.close()
        else:
            self.fail(f"{type(exc).__name__}: {exc}")
