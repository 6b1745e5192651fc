"""Reading the segmented layout back (docs/format.md §7): one process's segments, folded.

``SegmentTail`` follows one process's segments: each ``refresh`` takes the experiment's listing
(one list call for all its processes), fetches only the segments it has not read, and folds
them through ``core.replay`` into one ``ReplayCursor``, keeping each segment's size and SHA-256
for the marker's check (``seen``). It has ``LogTail``'s shape (``cursor``, ``error``,
``latched``, ``unread``, ``hole``), so ``store.reader`` builds the same ``ProcessEvidence``;
``fold_segments`` does that for a folder and a bucket alike. Writing them is
``store.segments``.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from energy_ledger.core.completeness import ProcessEvidence, SegmentsSeen
from energy_ledger.core.marker import (
    Marker,
    SegmentDigest,
    SegmentedMarker,
    max_marker_bytes,
)
from energy_ledger.core.process import facts_of
from energy_ledger.core.replay import FrozenDigestError, Observer, ReplayCursor, replay_stream
from energy_ledger.core.state import ProcessState
from energy_ledger.exceptions import FormatError, LedgerError
from energy_ledger.store.layout import (
    SEGMENT_RE,
    segment_name,
)
from energy_ledger.store.objects import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
)
from energy_ledger.store.segments import MAX_SEGMENT_BYTES

__all__ = ["MarkerReader", "SegmentTail", "fold_segments", "segment_evidence"]

logger = logging.getLogger(__name__)


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
