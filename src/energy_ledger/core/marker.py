"""The completion marker ``process_<i>.done``: its two versions, wire forms and parsers (pure).

Version 1 (``Marker``) describes one appended log by its length and SHA-256 (docs/format.md §3).
Version 2 (``SegmentedMarker``) describes a log written as numbered, immutable segments, the
layout an object store can hold, by each segment's length and SHA-256 (docs/format.md §7). The
events inside are version 1 either way. Which version belongs where is the layout's business:
``parse_marker`` reads version 1 only, as it always did, ``parse_any_marker`` either, and the
completeness check says when a marker's version does not fit the files beside it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

_HEX64 = re.compile(r"[0-9a-f]{64}")
"""A SHA-256 in hex, always matched whole (``fullmatch``: a ``$`` would also pass a final
``\\n``)."""

SEGMENTED_VERSION = 2
"""The marker version of the segmented layout (docs/format.md §7)."""
MARKER_VERSION = SEGMENTED_VERSION
"""The newest marker version this energy-ledger reads; a newer one is refused."""
MAX_MARKER_BYTES = 64 << 10
"""A version-1 marker is one short JSON object (about 200 bytes); a bigger file is not read."""
SEGMENT_ENTRY_BYTES = 128
"""What one entry of a version-2 marker's ``segments`` list may take, separators included: a
compact one (``{"bytes":1234567,"sha256":"<64 hex>"}``) is about 95 bytes."""
MAX_SEGMENTS = 1 << 20
"""The most segments one process's log may have: 1,048,576, some 60 days of one process at the
writer's default of a segment every 5 s. It bounds what a marker costs to read and check."""


@dataclass(frozen=True, slots=True)
class Marker:
    """What a finished process promises about its log.

    Attributes:
        process_index: the rank the marker belongs to.
        run_id: the run the process took part in.
        final_seq: ``seq`` of the log's last event (``process_finished``).
        log_bytes: the log's length in bytes when the marker was written.
        log_sha256: hex SHA-256 of those ``log_bytes`` bytes.
    """

    process_index: int
    run_id: str
    final_seq: int
    log_bytes: int
    log_sha256: str
    v: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        """The marker file's content (fixed key order, one line)."""
        return (
            orjson.dumps(
                {
                    "v": self.v,
                    "process_index": self.process_index,
                    "run_id": self.run_id,
                    "final_seq": self.final_seq,
                    "log_bytes": self.log_bytes,
                    "log_sha256": self.log_sha256,
                }
            )
            + b"\n"
        )


@dataclass(frozen=True, slots=True)
class SegmentDigest:
    """One segment of a segmented log, as a version-2 marker lists it (and a reader saw it).

    Attributes:
        bytes: the segment's length in bytes.
        sha256: hex SHA-256 of its bytes.
    """

    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SegmentedMarker:
    """What a finished process promises about its segmented log (marker version 2).

    Attributes:
        process_index: the rank the marker belongs to.
        run_id: the run the process took part in.
        final_seq: ``seq`` of the log's last event (``process_finished``).
        segments: every segment, in order: entry ``n`` is segment ``n``.
    """

    process_index: int
    run_id: str
    final_seq: int
    segments: tuple[SegmentDigest, ...]
    v: int = SEGMENTED_VERSION

    @property
    def log_bytes(self) -> int:
        """The bytes of all segments together: the log they make end to end."""
        return sum(segment.bytes for segment in self.segments)

    def to_bytes(self) -> bytes:
        """The marker file's content (fixed key order, one line)."""
        return (
            orjson.dumps(
                {
                    "v": self.v,
                    "process_index": self.process_index,
                    "run_id": self.run_id,
                    "final_seq": self.final_seq,
                    "segments": [{"bytes": s.bytes, "sha256": s.sha256} for s in self.segments],
                }
            )
            + b"\n"
        )


def max_marker_bytes(segment_count: int) -> int:
    """The largest marker file a reader reads for a log of ``segment_count`` segments.

    ``MAX_MARKER_BYTES`` plus ``SEGMENT_ENTRY_BYTES`` per segment: a reader that lists the
    segments first bounds the marker by what is there, so a marker cannot cost more to read
    than the segments it describes (and 64 KiB of slack covers some 500 not yet listed).
    """
    return MAX_MARKER_BYTES + SEGMENT_ENTRY_BYTES * max(0, min(segment_count, MAX_SEGMENTS))


def parse_marker(data: bytes, *, path: str | None = None) -> Marker:
    """Parse a version-1 marker (the appending layout, docs/format.md §3).

    Raises:
        FormatError: not JSON, a field missing or of the wrong type, or a version-2 marker
            (the segmented layout's, read by ``parse_any_marker``).
        UnsupportedVersionError: the marker's ``v`` is newer than this version reads.
    """
    marker = parse_any_marker(data, path=path)
    if isinstance(marker, SegmentedMarker):
        raise FormatError(
            "marker is version 2, the segmented layout's (process_<i>.segments/), "
            "where a version 1 marker of an appended log is expected",
            path=path,
        )
    return marker


def parse_any_marker(data: bytes, *, path: str | None = None) -> Marker | SegmentedMarker:
    """Parse a marker of either version: ``Marker`` (v1) or ``SegmentedMarker`` (v2).

    Raises:
        FormatError: not JSON, or a field missing or of the wrong type.
        UnsupportedVersionError: the marker's ``v`` is newer than this version reads.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FormatError(f"marker is not valid JSON ({exc})", path=path) from None
    if not isinstance(obj, dict):
        raise FormatError("marker is not a JSON object", path=path)
    v = obj.get("v")
    if type(v) is not int or v < 1:
        raise FormatError(f"marker has no valid version 'v' (got {v!r})", path=path)
    if v > MARKER_VERSION:
        raise UnsupportedVersionError(
            f"marker format version {v} is newer than this energy-ledger reads", path=path
        )
    if v == SEGMENTED_VERSION:
        return _parse_segmented(obj, path)
    fields: dict[str, type] = {
        "process_index": int,
        "run_id": str,
        "final_seq": int,
        "log_bytes": int,
        "log_sha256": str,
    }
    for name, kind in fields.items():
        value = obj.get(name)
        if type(value) is not kind:
            raise FormatError(
                f"marker field {name!r} must be {kind.__name__}, got {value!r}", path=path
            )
    if not _HEX64.fullmatch(obj["log_sha256"]):
        raise FormatError("marker field 'log_sha256' is not 64 lowercase hex digits", path=path)
    if obj["log_bytes"] < 0 or obj["final_seq"] < 0 or obj["process_index"] < 0:
        raise FormatError("marker has a negative number", path=path)
    return Marker(
        process_index=obj["process_index"],
        run_id=obj["run_id"],
        final_seq=obj["final_seq"],
        log_bytes=obj["log_bytes"],
        log_sha256=obj["log_sha256"],
        v=v,
    )


def _parse_segmented(obj: dict[str, Any], path: str | None) -> SegmentedMarker:
    """The fields of a version-2 marker, checked (docs/format.md §7.3)."""
    fields: dict[str, type] = {
        "process_index": int,
        "run_id": str,
        "final_seq": int,
        "segments": list,
    }
    for name, kind in fields.items():
        value = obj.get(name)
        if type(value) is not kind:
            shown = f"a list of {len(value):,} items" if isinstance(value, list) else repr(value)
            raise FormatError(
                f"marker field {name!r} must be {kind.__name__}, got {shown}", path=path
            )
    if obj["final_seq"] < 0 or obj["process_index"] < 0:
        raise FormatError("marker has a negative number", path=path)
    entries: list[Any] = obj["segments"]
    if not entries:
        raise FormatError(
            "marker field 'segments' lists no segment (a log has at least one)", path=path
        )
    if len(entries) > MAX_SEGMENTS:
        raise FormatError(
            f"marker lists {len(entries):,} segments, more than the {MAX_SEGMENTS:,} "
            "a log may have",
            path=path,
        )
    return SegmentedMarker(
        process_index=obj["process_index"],
        run_id=obj["run_id"],
        final_seq=obj["final_seq"],
        segments=_segment_digests(entries, path),
        v=SEGMENTED_VERSION,
    )


def _segment_digests(entries: Sequence[Any], path: str | None) -> tuple[SegmentDigest, ...]:
    """Each entry of ``segments`` as a ``SegmentDigest``; the first bad one is named by number."""
    digests: list[SegmentDigest] = []
    hex64 = _HEX64.fullmatch
    for n, entry in enumerate(entries):
        size = entry.get("bytes") if type(entry) is dict else None
        digest = entry.get("sha256") if type(entry) is dict else None
        if type(size) is not int or size < 1 or type(digest) is not str or not hex64(digest):
            raise FormatError(
                f'marker segment {n} must be {{"bytes": int >= 1, "sha256": 64 lowercase '
                f"hex digits}}, got {entry!r:.200}",
                path=path,
            )
        digests.append(SegmentDigest(size, digest))
    return tuple(digests)
