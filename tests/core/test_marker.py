"""Tests for energy_ledger.core.marker: the ``process_<i>.done`` completion marker."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from energy_ledger.core.marker import Marker, parse_marker
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

SHA = "0123456789abcdef" * 4
VALID: dict[str, Any] = {
    "v": 1,
    "process_index": 3,
    "run_id": "run-1",
    "final_seq": 41,
    "log_bytes": 9876,
    "log_sha256": SHA,
}
PATH = "raw/exp-1/process_3.done"


def _bytes(obj: Any) -> bytes:
    return orjson.dumps(obj)


class TestParseMarker:
    """``parse_marker`` accepts exactly the documented marker objects."""

    def test_valid_marker(self) -> None:
        """A valid marker parses into its fields."""
        marker = parse_marker(_bytes(VALID))
        assert marker == Marker(
            process_index=3, run_id="run-1", final_seq=41, log_bytes=9876, log_sha256=SHA, v=1
        )

    @pytest.mark.parametrize("suffix", [b"", b"\n", b"  \n"])
    def test_trailing_whitespace_is_fine(self, suffix: bytes) -> None:
        """A marker with or without a final newline parses the same."""
        assert parse_marker(_bytes(VALID) + suffix) == parse_marker(_bytes(VALID))

    def test_unknown_keys_are_ignored(self) -> None:
        """Keys a newer writer may add do not make the marker invalid."""
        assert parse_marker(_bytes({**VALID, "host": "node-1"})) == parse_marker(_bytes(VALID))

    def test_zero_values_are_valid(self) -> None:
        """Zero is a valid index, seq and byte count."""
        marker = parse_marker(_bytes({**VALID, "process_index": 0, "final_seq": 0, "log_bytes": 0}))
        assert (marker.process_index, marker.final_seq, marker.log_bytes) == (0, 0, 0)

    def test_to_bytes_round_trips(self) -> None:
        """``to_bytes`` writes one line in a fixed key order that parses back to the marker."""
        marker = parse_marker(_bytes(VALID))
        data = marker.to_bytes()
        assert data.endswith(b"\n")
        assert data.count(b"\n") == 1
        assert list(orjson.loads(data)) == list(VALID)
        assert parse_marker(data) == marker


class TestInvalidMarker:
    """Markers that break the contract raise ``FormatError`` naming the file."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("process_index", True),
            ("process_index", "3"),
            ("process_index", 3.0),
            ("process_index", -1),
            ("process_index", None),
            ("run_id", 7),
            ("run_id", None),
            ("run_id", ["run-1"]),
            ("final_seq", False),
            ("final_seq", 41.0),
            ("final_seq", -1),
            ("log_bytes", "9876"),
            ("log_bytes", True),
            ("log_bytes", -5),
            ("log_sha256", SHA.upper()),
            ("log_sha256", SHA[:-1]),
            ("log_sha256", SHA + "0"),
            ("log_sha256", "g" * 64),
            ("log_sha256", SHA[:-1] + "\n"),
            ("log_sha256", SHA + "\n"),  # a final newline: $ would pass it, fullmatch does not
            ("log_sha256", 12),
            ("v", 0),
            ("v", True),
            ("v", 1.0),
            ("v", "1"),
            ("v", None),
        ],
    )
    def test_bad_field(self, field: str, value: object) -> None:
        """A field of the wrong type, sign or shape raises ``FormatError`` with the path."""
        with pytest.raises(FormatError) as info:
            parse_marker(_bytes({**VALID, field: value}), path=PATH)
        assert not isinstance(info.value, UnsupportedVersionError)
        assert info.value.path == PATH
        assert str(info.value).startswith(PATH)

    @pytest.mark.parametrize("field", sorted(VALID))
    def test_missing_field(self, field: str) -> None:
        """A marker without one of its six fields raises ``FormatError``."""
        obj = {k: v for k, v in VALID.items() if k != field}
        with pytest.raises(FormatError):
            parse_marker(_bytes(obj), path=PATH)

    @pytest.mark.parametrize(
        "data", [b"", b"{", b"not json", b"[1, 2]", b'"done"', b"null", b"\xff"]
    )
    def test_not_a_json_object(self, data: bytes) -> None:
        """Bytes that are not one JSON object raise ``FormatError``."""
        with pytest.raises(FormatError, match=re.escape(PATH)):
            parse_marker(data, path=PATH)

    @pytest.mark.parametrize("v", [3, 99])
    def test_newer_version_is_refused(self, v: int) -> None:
        """A marker of a newer format version raises ``UnsupportedVersionError``."""
        with pytest.raises(UnsupportedVersionError, match=re.escape(PATH)):
            parse_marker(_bytes({**VALID, "v": v}), path=PATH)

    def test_version_2_is_not_a_version_1_marker(self) -> None:
        """A version-2 (segmented) marker is a ``FormatError`` here, naming its layout."""
        v2 = {**VALID, "v": 2, "segments": [{"bytes": 9876, "sha256": SHA}]}
        with pytest.raises(FormatError, match="version 2, the segmented layout") as info:
            parse_marker(_bytes(v2), path=PATH)
        assert not isinstance(info.value, UnsupportedVersionError)
