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
- ``SegmentTail`` follows one process's segments: each ``refresh`` takes the experiment's
  listing (one list call for all its processes), fetches only the segments it has not read, and
  folds them through ``core.replay`` into one ``ReplayCursor``, keeping each segment's size and
  SHA-256 for the marker's check (``seen``). It has ``LogTail``'s shape (``cursor``, ``error``,
  ``latched``, ``unread``, ``hole``), so ``store.reader`` builds the same ``ProcessEvidence``.

Segments are immutable, so a segment that changed size, vanished after it was read, is empty or
does not end with ``\\n`` is an integrity error that stays (``latched``); so is a line that does
not decode, since no later look can see other bytes. A segment missing before one that is there
(a gap) is "not yet" (``unread``): a listing may lag the writes it lists.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from energy_ledger.core.completeness import ProcessEvidence, SegmentsSeen
from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.core.marker import (
    MAX_SEGMENTS,
    Marker,
    SegmentDigest,
    SegmentedMarker,
    max_marker_bytes,
)
from energy_ledger.core.process import facts_of
from energy_ledger.core.replay import FrozenDigestError, Observer, ReplayCursor, replay_stream
from energy_ledger.core.state import ProcessState
from energy_ledger.exceptions import FormatError, LedgerError, StoreWriteError, UnsafePathError
from energy_ledger.store.clock import AnchoredClock
from energy_ledger.store.layout import (
    SEGMENT_RE,
    experiment_key,
    marker_name,
    segment_name,
    segments_name,
)
from energy_ledger.store.objects import (
    ObjectInfo,
    ObjectNotFound,
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
    "MarkerReader",
    "SegmentTail",
    "SegmentedLogWriter",
    "fold_segments",
    "marker_key",
    "segment_evidence",
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


class _SegmentIntegrityError(Exception):
    """A segment broke the layout's promises (changed, vanished, empty, torn): final."""


class _At(io.BytesIO):
    """One segment's bytes, seen at the offset where it starts in the log they make together.

    ``replay_stream`` seeks to the cursor's offset, which counts every earlier segment's bytes.
    """

    def __init__(self, data: bytes, start: int) -> None:
        super().__init__(data)
        self._start = start

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        if whence == io.SEEK_SET:
            return super().seek(offset - self._start) + self._start
        return super().seek(offset, whence) + self._start


@dataclass(slots=True)
class SegmentTail:
    """One process's segments, followed by a resumable replay cursor over all of them.

    Attributes:
        prefix: the segments' key prefix in the store (``raw/<id>/process_<i>.segments/``, or
            relative to whatever root the store has).
        cursor: the fold of every segment read, end to end (``offset``, ``sha256`` and
            ``lines`` count them all; ``torn_bytes`` is always 0).
        read: size and SHA-256 of each segment read, in order (entry ``n`` is segment ``n``).
        present: every segment number in the last listing, sorted.
        strays: other names under ``prefix`` in the last listing (ignored).
        error: why the segments cannot be read (``latched``: final; otherwise tried again).
        latched: ``error`` is final (a segment broke its promises, or a line does not decode).
        unread: a gap: the next segment is not listed, but a later one is (pending).
        hole: always False (a segment is written whole); kept for ``LogTail``'s shape.
        gets: objects fetched so far (each segment once).
    """

    prefix: str
    cursor: ReplayCursor = field(default_factory=ReplayCursor)
    read: list[SegmentDigest] = field(default_factory=list)
    present: tuple[int, ...] = ()
    strays: tuple[str, ...] = ()
    error: str | None = None
    latched: bool = False
    unread: str | None = None
    hole: bool = False
    gets: int = 0

    @property
    def folder(self) -> str:
        """The segments' folder name (``process_<i>.segments``), for messages."""
        return self.prefix.rstrip("/").rpartition("/")[2]

    @property
    def size(self) -> int:
        """Bytes of the segments read (what ``LogTail.size`` is to a log)."""
        return self.cursor.offset

    def seen(self, where: str = "") -> SegmentsSeen:
        """What the completeness check compares with a version-2 marker (``where``: see
        ``SegmentsSeen``)."""
        return SegmentsSeen(read=tuple(self.read), present=self.present, where=where)

    def refresh(
        self, objects: ObjectStore, listing: Sequence[ObjectInfo], *, strict: bool = True
    ) -> bool:
        """Fold the segments of ``listing`` not read yet; return True when anything changed.

        Args:
            objects: the store the listing came from.
            listing: objects sorted by key (``ObjectStore.list``), holding at least every key
                under ``prefix``: a listing of the whole experiment serves all its processes.
            strict: reject a line that does not decode (``True``) or skip it (``False``).
        """
        before = (self.cursor.offset, self.present, self.error, self.unread)
        if self.latched:
            return False
        sizes, strays = self._listed(listing)
        self.present, self.strays = tuple(sorted(sizes)), strays
        self.error = self.unread = None
        try:
            try:
                self._check_read(sizes)
                self._read_new(objects, sizes, strict)
            except FrozenDigestError:
                # Replayed in a worker process: read every segment again here.
                self.cursor, self.read = ReplayCursor(observer=self.cursor.observer), []
                self._read_new(objects, sizes, strict)
        except _SegmentIntegrityError as exc:
            self.error, self.latched = str(exc), True
        if self.error is None:
            n = len(self.read)
            later = [k for k in self.present if k > n]
            if n not in sizes and later:
                self.unread = (
                    f"{self.folder}/{segment_name(n)} is not there yet, but "
                    f"{segment_name(later[0])} is (segments are numbered without gaps)"
                )
        return (self.cursor.offset, self.present, self.error, self.unread) != before

    def _listed(self, listing: Sequence[ObjectInfo]) -> tuple[dict[int, int], tuple[str, ...]]:
        """Segment number -> size for the keys under ``prefix``; the other names there."""
        sizes: dict[int, int] = {}
        strays: list[str] = []
        prefix = self.prefix
        start = bisect.bisect_left(listing, prefix, key=lambda info: info.key)
        for info in listing[start:]:
            if not info.key.startswith(prefix):
                break
            name = info.key[len(prefix) :]
            match = SEGMENT_RE.fullmatch(name)
            if match:
                sizes[int(match.group(1))] = info.size
            else:
                strays.append(name)
        if strays:
            logger.debug("%s: ignored names that are not segments: %s", self.folder, strays)
        return sizes, tuple(strays)

    def _check_read(self, sizes: dict[int, int]) -> None:
        """Every segment read is still listed, at the size it had."""
        for n, segment in enumerate(self.read):
            name = f"{self.folder}/{segment_name(n)}"
            size = sizes.get(n)
            if size is None:
                raise _SegmentIntegrityError(
                    f"{name} vanished after it was read (a segment is written once and never "
                    "removed)"
                )
            if size != segment.bytes:
                raise _SegmentIntegrityError(
                    f"{name} is now {size} bytes, {segment.bytes} when it was read (a segment "
                    "is written once and never changed)"
                )

    def _read_new(self, objects: ObjectStore, sizes: dict[int, int], strict: bool) -> None:
        n = len(self.read)
        while n in sizes:
            name = f"{self.folder}/{segment_name(n)}"
            if sizes[n] > MAX_SEGMENT_BYTES:
                raise _SegmentIntegrityError(
                    f"{name} is {sizes[n]:,} bytes, more than the {MAX_SEGMENT_BYTES:,} a "
                    "segment may hold; not read"
                )
            try:
                data = objects.get(self.prefix + segment_name(n))
            except ObjectNotFound:
                self.error = f"{name}: listed, but gone when read"
                return
            except (OSError, LedgerError) as exc:
                self.error = f"{name}: cannot read: {exc}"
                return
            self.gets += 1
            if len(data) != sizes[n]:
                raise _SegmentIntegrityError(
                    f"{name} is {len(data)} bytes, {sizes[n]} when listed (a segment is "
                    "written once and never changed)"
                )
            if not data.endswith(b"\n"):
                what = "is empty" if not data else "does not end with \\n"
                raise _SegmentIntegrityError(
                    f"{name} {what}; a segment holds one or more complete lines"
                )
            self._fold(data, name, strict)
            self.read.append(SegmentDigest(len(data), hashlib.sha256(data).hexdigest()))
            n += 1

    def _fold(self, data: bytes, name: str, strict: bool) -> None:
        """Fold one segment; messages name it and count its lines from 1."""
        cur = self.cursor
        lines_before, cur.lines = cur.lines, 0
        try:
            replay_stream(_At(data, cur.offset), cur, path=name, strict=strict)
        except FormatError as exc:
            where = f":{exc.line}" if exc.line is not None else ""
            raise _SegmentIntegrityError(f"{name}{where}: {exc.reason}") from None
        finally:
            cur.lines += lines_before

    def __str__(self) -> str:
        return self.prefix


def segment_evidence(
    tail: SegmentTail,
    index: int,
    marker: Marker | SegmentedMarker | None,
    marker_error: str | None,
    *,
    where: str = "",
) -> ProcessEvidence:
    """The completeness evidence of a segmented process, as ``store.reader`` builds a log's.

    ``where``: the segments' location for the reasons that name one (``SegmentsSeen``).
    """
    if tail.error is not None:
        return ProcessEvidence(index=index, log_error=tail.error, segments=tail.seen(where))
    cur = tail.cursor
    return ProcessEvidence(
        index=index,
        summary=facts_of(cur.state, index),
        complete_bytes=cur.offset,
        torn_bytes=0,
        sha256=cur.sha256,
        last_seq=cur.state.last_seq,
        marker=marker,
        marker_error=marker_error,
        # With a marker, its check says which segments are missing; without, the gap does.
        read_error=tail.unread if marker is None and marker_error is None else None,
        segments=tail.seen(where),
    )


MarkerReader = Callable[[int], tuple[Marker | SegmentedMarker | None, str | None]]
"""Reads one process's marker, at most the number of bytes given: the marker or why not."""


def fold_segments(
    objects: ObjectStore,
    listing: Sequence[ObjectInfo],
    index: int,
    prefix: str,
    tails: dict[int, SegmentTail],
    *,
    read_marker: MarkerReader | None,
    strict: bool = True,
    observe: Callable[[int], Observer] | None = None,
    light: bool = False,
    where: str = "",
) -> ProcessEvidence:
    """One segmented process's evidence, for a folder's reader and a bucket's alike.

    Its tail (made on first use, kept in ``tails``) folds the segments of ``listing`` it has
    not read; then its marker is read, bounded by the segments listed
    (``core.marker.max_marker_bytes``), unless the segments already cannot be read.

    Args:
        objects: the store ``listing`` came from.
        listing: the experiment's objects, sorted by key (one list call for all processes).
        index: the process.
        prefix: its segments' key prefix in ``objects``.
        tails: the tails by index, updated in place.
        read_marker: reads its marker; ``None`` when the listing shows none.
        strict: reject a line that does not decode (``True``) or skip it (``False``).
        observe: the observer of a tail made here, by index (``core.timeline``).
        light: a tail made here folds into ``ProcessState.light`` states.
        where: the segments' location for the reasons that name one (``SegmentsSeen``).
    """
    tail = tails.get(index)
    if tail is None:
        tail = tails[index] = SegmentTail(prefix)
        if light:
            tail.cursor = ReplayCursor(state=ProcessState.light())
        if observe is not None:
            tail.cursor.observer = observe(index)
    tail.refresh(objects, listing, strict=strict)
    marker, marker_error = (None, None)
    if tail.error is None and read_marker is not None:
        marker, marker_error = read_marker(max_marker_bytes(len(tail.present)))
    return segment_evidence(tail, index, marker, marker_error, where=where)
