"""The completion marker ``process_<i>.done``: its model, wire form and parser (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


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


def parse_marker(data: bytes, *, path: str | None = None) -> Marker:
    """Parse a marker file's bytes.

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
    if v > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"marker format version {v} is newer than this energy-ledger reads", path=path
        )
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
    if not _HEX64.match(obj["log_sha256"]):
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
