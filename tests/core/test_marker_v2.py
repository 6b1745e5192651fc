"""Tests for the version-2 marker of the segmented layout (docs/format.md §7.3, §7.4).

Parsing is ``core.marker``; the verdict on a marker against the segments seen is
``core.completeness``. Both are pure, so these are tables over bytes and evidence built by hand.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
import pytest

from energy_ledger.core.completeness import ProcessEvidence, SegmentsSeen, check_completeness
from energy_ledger.core.marker import (
    MAX_MARKER_BYTES,
    MAX_SEGMENTS,
    SEGMENT_ENTRY_BYTES,
    Marker,
    SegmentDigest,
    SegmentedMarker,
    max_marker_bytes,
    parse_any_marker,
    parse_marker,
)
from energy_ledger.core.process import facts_of
from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

SHA_A = "0123456789abcdef" * 4
SHA_B = "fedcba9876543210" * 4
VALID: dict[str, Any] = {
    "v": 2,
    "process_index": 3,
    "run_id": "run-1",
    "final_seq": 41,
    "segments": [{"bytes": 300, "sha256": SHA_A}, {"bytes": 150, "sha256": SHA_B}],
}
PATH = "raw/exp-1/process_3.done"


def _bytes(obj: Any) -> bytes:
    return orjson.dumps(obj)


class TestParseSegmentedMarker:
    """``parse_any_marker`` reads version 2 into a ``SegmentedMarker``."""

    def test_valid_marker(self) -> None:
        """A valid version-2 marker parses into its fields, entries in order."""
        marker = parse_any_marker(_bytes(VALID))
        assert marker == SegmentedMarker(
            process_index=3,
            run_id="run-1",
            final_seq=41,
            segments=(SegmentDigest(300, SHA_A), SegmentDigest(150, SHA_B)),
        )
        assert isinstance(marker, SegmentedMarker)
        assert marker.log_bytes == 450

    def test_to_bytes_round_trips(self) -> None:
        """``to_bytes`` writes one compact line, in the documented key order, that parses back."""
        marker = parse_any_marker(_bytes(VALID))
        assert isinstance(marker, SegmentedMarker)
        data = marker.to_bytes()
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        assert list(orjson.loads(data)) == list(VALID)
        assert data == _bytes(VALID) + b"\n"
        assert parse_any_marker(data) == marker

    def test_unknown_keys_are_ignored(self) -> None:
        """Keys a newer writer may add, at the top or in an entry, change nothing."""
        extra = {
            **VALID,
            "host": "node-1",
            "segments": [{**entry, "etag": "x"} for entry in VALID["segments"]],
        }
        assert parse_any_marker(_bytes(extra)) == parse_any_marker(_bytes(VALID))

    def test_version_1_still_parses_as_before(self) -> None:
        """``parse_any_marker`` of a version-1 marker is what ``parse_marker`` gives."""
        v1 = {"v": 1, "process_index": 0, "run_id": "r", "final_seq": 3}
        v1 |= {"log_bytes": 452, "log_sha256": SHA_A}
        data = _bytes(v1)
        assert parse_any_marker(data) == parse_marker(data)
        assert isinstance(parse_any_marker(data), Marker)

    def test_newer_version_is_refused(self) -> None:
        """Version 3 is newer than this reader: ``UnsupportedVersionError`` naming the file."""
        with pytest.raises(UnsupportedVersionError, match=re.escape(PATH)):
            parse_any_marker(_bytes({**VALID, "v": 3}), path=PATH)

    def test_a_marker_may_list_the_most_segments(self) -> None:
        """``MAX_SEGMENTS`` entries are allowed (the check is about the count, not time)."""
        entries = [{"bytes": 1, "sha256": SHA_A}] * MAX_SEGMENTS
        marker = parse_any_marker(_bytes({**VALID, "segments": entries}))
        assert isinstance(marker, SegmentedMarker)
        assert len(marker.segments) == MAX_SEGMENTS


class TestInvalidSegmentedMarker:
    """Version-2 markers that break §7.3 raise ``FormatError`` naming the file and the fault."""

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("process_index", -1, "negative number"),
            ("process_index", True, "'process_index' must be int"),
            ("run_id", 7, "'run_id' must be str"),
            ("final_seq", 41.0, "'final_seq' must be int"),
            ("final_seq", -1, "negative number"),
            ("segments", None, "'segments' must be list, got None"),
            ("segments", {"bytes": 1}, "'segments' must be list"),
            ("segments", [], "lists no segment"),
        ],
    )
    def test_bad_field(self, field: str, value: object, message: str) -> None:
        """A field of the wrong type or sign, or an empty list, is refused with its name."""
        with pytest.raises(FormatError, match=re.escape(message)) as info:
            parse_any_marker(_bytes({**VALID, field: value}), path=PATH)
        assert not isinstance(info.value, UnsupportedVersionError)
        assert str(info.value).startswith(PATH)

    @pytest.mark.parametrize("field", sorted(VALID))
    def test_missing_field(self, field: str) -> None:
        """A marker without one of its five fields raises ``FormatError``."""
        obj = {k: v for k, v in VALID.items() if k != field}
        with pytest.raises(FormatError):
            parse_any_marker(_bytes(obj), path=PATH)

    @pytest.mark.parametrize(
        "entry",
        [
            {"bytes": 0, "sha256": SHA_A},
            {"bytes": -3, "sha256": SHA_A},
            {"bytes": 1.0, "sha256": SHA_A},
            {"bytes": True, "sha256": SHA_A},
            {"bytes": "1", "sha256": SHA_A},
            {"sha256": SHA_A},
            {"bytes": 1},
            {"bytes": 1, "sha256": SHA_A.upper()},
            {"bytes": 1, "sha256": SHA_A[:-1]},
            {"bytes": 1, "sha256": SHA_A + "\n"},
            {"bytes": 1, "sha256": 12},
            [1, SHA_A],
            None,
            "00000001.jsonl",
        ],
    )
    def test_bad_entry_is_named_by_number(self, entry: object) -> None:
        """An entry that is not ``{"bytes": int >= 1, "sha256": hex}`` is named by its number."""
        obj = {**VALID, "segments": [VALID["segments"][0], entry]}
        with pytest.raises(FormatError, match=r"marker segment 1 must be \{"):
            parse_any_marker(_bytes(obj), path=PATH)

    def test_too_many_segments(self) -> None:
        """More than ``MAX_SEGMENTS`` entries is refused before any entry is examined."""
        obj = {**VALID, "segments": [0] * (MAX_SEGMENTS + 1)}
        with pytest.raises(FormatError, match="1,048,577 segments, more than the 1,048,576"):
            parse_any_marker(_bytes(obj), path=PATH)

    def test_v1_parser_refuses_version_2(self) -> None:
        """``parse_marker`` (the appending layout's) names the segmented layout for a v2 one."""
        with pytest.raises(FormatError, match="segmented layout"):
            parse_marker(_bytes(VALID), path=PATH)


class TestMarkerSizeBound:
    """A version-2 marker is bounded by the segments it describes (docs/format.md §7.3)."""

    def test_bound_grows_per_segment(self) -> None:
        """64 KiB plus 128 bytes per segment, capped at ``MAX_SEGMENTS`` segments."""
        assert max_marker_bytes(0) == MAX_MARKER_BYTES
        assert max_marker_bytes(1000) == MAX_MARKER_BYTES + 1000 * SEGMENT_ENTRY_BYTES
        assert max_marker_bytes(10 * MAX_SEGMENTS) == max_marker_bytes(MAX_SEGMENTS)

    def test_a_compact_entry_fits_its_allowance(self) -> None:
        """The largest compact entry (a 64 MiB segment) is well under ``SEGMENT_ENTRY_BYTES``."""
        entries = [{"bytes": 64 << 20, "sha256": SHA_A}] * 1000
        marker = {**VALID, "run_id": "r" * 100, "segments": entries}
        assert len(_bytes(marker)) <= max_marker_bytes(1000)


# The verdict: a version-2 marker against the segments a reader saw (core.completeness).

STARTED = {
    "type": "process_started",
    "experiment_id": "exp-1",
    "run_id": "run-1",
    "process_index": 0,
    "world_size": 1,
    "gpu_id": 0,
}


def _lines() -> list[bytes]:
    bodies = [
        STARTED,
        {"type": "window_started"},
        {"type": "warning", "message": "w"},
        {"type": "window_ended"},
        {"type": "process_finished"},
    ]
    return [
        orjson.dumps({"v": 1, "seq": seq, "t": 1.0 + seq, **body}) + b"\n"
        for seq, body in enumerate(bodies)
    ]


SEGMENTS = [b"".join(_lines()[:2]), b"".join(_lines()[2:4]), _lines()[4]]
"""Three segments of one finished log."""


def _digest(data: bytes) -> SegmentDigest:
    return SegmentDigest(len(data), hashlib.sha256(data).hexdigest())


MARKER = SegmentedMarker(0, "run-1", 4, tuple(map(_digest, SEGMENTS)))


def _evidence(
    segments: list[bytes],
    present: tuple[int, ...] | None = None,
    marker: Marker | SegmentedMarker | None = MARKER,
) -> ProcessEvidence:
    """What a reader gathers having read ``segments`` and listed ``present``."""
    cursor = replay_bytes(b"".join(segments))
    return ProcessEvidence(
        index=0,
        summary=facts_of(cursor.state, 0),
        complete_bytes=cursor.offset,
        sha256=cursor.sha256,
        last_seq=cursor.state.last_seq,
        marker=marker,
        segments=SegmentsSeen(
            read=tuple(map(_digest, segments)),
            present=tuple(range(len(segments))) if present is None else present,
        ),
    )


def _verdict(ev: ProcessEvidence) -> tuple[str, str]:
    report = check_completeness("exp-1", [ev])
    return report.state, " | ".join(report.reasons)


class TestSegmentedVerdict:
    """Each way a segmented log can disagree with its marker has its verdict and reason."""

    def test_all_segments_as_listed_is_complete(self) -> None:
        """Every segment present, of the listed size and digest, ending at ``final_seq``."""
        report = check_completeness("exp-1", [_evidence(SEGMENTS)])
        assert report.is_complete, report.reasons
        assert report.marker_status == {0: True}

    def test_missing_last_segment_is_pending(self) -> None:
        """A listed segment not there yet: pending, naming it."""
        state, reasons = _verdict(_evidence(SEGMENTS[:2]))
        assert state == "pending"
        assert "marker lists 3 segments; segments [2] are not there yet, 2 read so far" in reasons

    def test_gap_is_pending(self) -> None:
        """Segment 1 missing, 2 listed (so not read): pending, naming the missing one."""
        state, reasons = _verdict(_evidence(SEGMENTS[:1], present=(0, 2)))
        assert state == "pending"
        assert "segments [1] are not there yet, 1 read so far (not yet)" in reasons

    def test_wrong_size_is_invalid(self) -> None:
        """A segment whose size is not its entry's: invalid, naming the segment."""
        changed = [SEGMENTS[0], SEGMENTS[1].replace(b'"w"', b'"ww"'), SEGMENTS[2]]
        state, reasons = _verdict(_evidence(changed))
        assert state == "invalid"
        size = len(SEGMENTS[1])
        assert f"segment 00000001 is {size + 1} bytes, its marker says {size}" in reasons

    def test_wrong_digest_is_invalid(self) -> None:
        """Same size, other bytes: invalid, the digest named."""
        changed = [SEGMENTS[0], SEGMENTS[1].replace(b'"w"', b'"x"'), SEGMENTS[2]]
        state, reasons = _verdict(_evidence(changed))
        assert state == "invalid"
        assert "segment 00000001 does not match its marker's SHA-256" in reasons

    def test_extra_segment_is_invalid(self) -> None:
        """A segment numbered beyond the marker's list: invalid (written after the marker)."""
        state, reasons = _verdict(_evidence(SEGMENTS, present=(0, 1, 2, 3)))
        assert state == "invalid"
        assert "segments beyond the 3 its marker lists: [3] (written after the marker?)" in reasons

    def test_final_seq_mismatch_is_invalid(self) -> None:
        """A marker whose ``final_seq`` is not the last event's: invalid, both named."""
        marker = SegmentedMarker(0, "run-1", 5, MARKER.segments)
        state, reasons = _verdict(_evidence(SEGMENTS, marker=marker))
        assert state == "invalid"
        assert "marker says the last seq is 5, the segments end at 4" in reasons

    def test_stale_run_id_is_invalid(self) -> None:
        """A marker of another run is stale, as in version 1."""
        marker = SegmentedMarker(0, "run-0", 4, MARKER.segments)
        state, reasons = _verdict(_evidence(SEGMENTS, marker=marker))
        assert state == "invalid"
        assert "marker is stale: it belongs to run 'run-0'" in reasons

    def test_version_1_marker_beside_segments_is_invalid(self) -> None:
        """A version-1 marker cannot vouch for segments."""
        data = b"".join(SEGMENTS)
        v1 = Marker(0, "run-1", 4, len(data), hashlib.sha256(data).hexdigest())
        state, reasons = _verdict(_evidence(SEGMENTS, marker=v1))
        assert state == "invalid"
        assert "marker is version 1 (one appended log) but the process wrote segments" in reasons

    def test_version_2_marker_beside_an_appended_log_is_invalid(self) -> None:
        """A version-2 marker beside an appended log (no segments seen) is invalid."""
        ev = _evidence(SEGMENTS)
        appended = ProcessEvidence(**{**_fields(ev), "segments": None})
        state, reasons = _verdict(appended)
        assert state == "invalid"
        assert "marker is version 2 (segmented layout) but its log is one appended file" in reasons


def _fields(ev: ProcessEvidence) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in ev.__dataclass_fields__}
