"""Decoding log lines into events: one typed decoder, one careful path, the same answer.

Every line is decoded by ``msgspec`` against the tagged union of ``core.events``, which checks
every field's type and value rule in C. ``decode_block`` decodes many lines at once and answers
``None`` as soon as any line is not a current, well-formed event; the replay then takes the lines
one at a time through ``decode_line``, which first tries the same typed decoder and only on
failure finds out why: not JSON, not an object, a bad envelope, a newer or older format version
(older records go through ``core.upcast``), an unknown type, or a field that breaks a rule. So
a line decodes to the same event, or fails with the same message, whatever lines surround it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from energy_ledger.core.events import (
    EVENT_CLASSES,
    FORMAT_VERSION,
    Count,
    Event,
    NonNegative,
    UnknownEvent,
)
from energy_ledger.core.upcast import upcast
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

_decode: Any = msgspec.json.Decoder(Event).decode
_decode_any = msgspec.json.Decoder().decode
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
"""What the typed decoder raises for a line that is not a current, valid event. msgspec raises
``RecursionError`` for JSON nested about a thousand levels deep; it is a property of the line,
not of the reader, so it is a format error like any other."""


class _Head(msgspec.Struct, frozen=True, gc=False):
    """The envelope of a line whose body did not decode: enough to say why."""

    seq: Count
    t: NonNegative
    type: str


class UnknownEventType(FormatError):
    """Raised by ``parse_event`` for a ``type`` this version does not know."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown event type {type_name!r}")
        self.type_name = type_name


def decode_block(lines: list[bytes]) -> list[Event] | None:
    """All ``lines`` as events, or ``None`` when any of them needs ``decode_line`` to say why."""
    try:
        return list(map(_decode, lines))
    except DECODE_ERRORS:
        return None


def decode_line(line: bytes) -> Event | UnknownEvent:
    """One line (without its ``\\n``) as an event.

    Raises:
        UnsupportedVersionError: the line's format version is newer than this package reads.
        FormatError: the line is not a valid event; the message says what is wrong.
    """
    try:
        event: Event = _decode(line)
        return event
    except DECODE_ERRORS:
        pass
    try:
        obj = _decode_any(line)
    except msgspec.DecodeError as exc:
        if str(exc).startswith("Number out of range"):
            raise FormatError("line holds a number too large for a 64-bit float") from None
        raise FormatError(f"line is not valid JSON ({exc})") from None
    except RecursionError:
        raise FormatError("line is nested too deeply to be an event") from None
    return parse_record(obj)


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def parse_record(obj: object) -> Event | UnknownEvent:
    """A decoded JSON value as an event (the careful path; see the module docstring).

    Raises:
        UnsupportedVersionError: ``v`` is newer than ``FORMAT_VERSION``.
        FormatError: anything else that keeps the value from being an event.
    """
    if not isinstance(obj, dict):
        kind = _JSON_TYPES.get(type(obj), "number")
        raise FormatError(f"line is not a JSON object (got {kind})")
    v = obj.get("v")
    if type(v) is not int:
        raise FormatError(f"event has no valid format version 'v' (got {v!r})")
    if v > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"event format version {v} is newer than this energy-ledger reads "
            f"({FORMAT_VERSION}); upgrade energy-ledger"
        )
    try:
        head = msgspec.convert(obj, _Head)
    except msgspec.ValidationError as exc:
        raise FormatError(f"event envelope: {_explain(exc)}") from None
    record = upcast(obj)
    cls = EVENT_CLASSES.get(record.get("type"))  # type: ignore[arg-type]
    if cls is None:
        return UnknownEvent(v=v, seq=head.seq, t=head.t, type_name=str(record.get("type")))
    try:
        event: Event = msgspec.convert(record, cls)
    except msgspec.ValidationError as exc:
        raise FormatError(f"{cls.TYPE} event: {_explain(exc)}") from None
    return event


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def _explain(exc: msgspec.ValidationError) -> str:
    """msgspec's message in this package's words: the field named the way the tests and docs do."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    what, path = match["what"], match["path"] or ""
    missing = _MISSING.match(what)
    if missing:
        return f"lacks required field {missing['name']!r}"
    what = what.replace("`", "")
    what = what[:1].lower() + what[1:]
    if not path:
        return what
    name = re.split(r"[.\[]", path.lstrip("."), maxsplit=1)[0]
    rest = path.lstrip(".")[len(name) :]
    return f"field {name!r}{f' at {rest}' if rest else ''}: {what}"


def parse_event(obj: dict[str, Any]) -> Event:
    """A decoded JSON object as an event of a known type.

    Raises:
        UnknownEventType: the ``type`` is not one this version knows.
        UnsupportedVersionError: the event's ``v`` is too new.
        FormatError: the envelope or a field is invalid.
    """
    event = parse_record(obj)
    if isinstance(event, UnknownEvent):
        raise UnknownEventType(event.type_name)
    return event


def make_event(type_name: str, *, seq: int, t: float, **fields: Any) -> Event:
    """Build an event of ``type_name`` from keyword fields, checked exactly like a log line."""
    return parse_event({"v": FORMAT_VERSION, "seq": seq, "t": t, "type": type_name, **fields})


__all__ = [
    "DECODE_ERRORS",
    "UnknownEventType",
    "decode_block",
    "decode_line",
    "make_event",
    "parse_event",
    "parse_record",
]
