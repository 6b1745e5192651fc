"""Upcasters: small pure functions that bring an older event shape to the current one.

A log is never rewritten, so a reader must keep reading every format version it ever wrote.
When format version 2 changes the shape of an event, the change gets one step here that turns a
version-1 record (the decoded JSON object) into a version-2 record, and ``upcast`` runs the steps
in turn until the record is current. The step registered for the current version is the
identity. The typed decoder then checks the upgraded record exactly like a current line, so the
value rules live in one place (``core.events``).

Only lines whose ``v`` is older than ``FORMAT_VERSION`` reach this module; current lines decode
straight into events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.exceptions import FormatError

Record = dict[str, Any]
Upcaster = Callable[[Record], Record]


def v1_identity(record: Record) -> Record:
    """Version 1 is the current shape: nothing to change."""
    return record


UPCASTERS: Mapping[int, Upcaster] = {1: v1_identity}
"""For each format version this package reads, the step from that version's shape to the next
one's; the current version's step is the identity."""


def readable_versions(upcasters: Mapping[int, Upcaster] | None = None) -> tuple[int, ...]:
    """The format versions a reader with these upcasters (default ``UPCASTERS``) accepts."""
    return tuple(sorted(UPCASTERS if upcasters is None else upcasters))


def upcast(
    record: Record,
    *,
    upcasters: Mapping[int, Upcaster] | None = None,
    current: int = FORMAT_VERSION,
) -> Record:
    """Bring ``record`` (with an integer ``v`` no newer than ``current``) to version ``current``.

    Each step sees the record in its own version's shape and returns the next version's shape;
    ``upcast`` sets ``v`` after each step, so a step only moves fields. ``upcasters`` defaults
    to ``UPCASTERS``, looked up at each call.

    Raises:
        FormatError: no chain of steps leads from the record's version to ``current``.
    """
    chain = UPCASTERS if upcasters is None else upcasters
    version = record["v"]
    while True:
        step = chain.get(version)
        if step is None:
            known = ", ".join(map(str, readable_versions(chain)))
            raise FormatError(
                f"event format version 'v' {version} is not one this energy-ledger reads "
                f"(it reads {known})"
            )
        record = step(record)
        if version >= current:
            return record
        version += 1
        record = {**record, "v": version}


__all__ = ["UPCASTERS", "Record", "Upcaster", "readable_versions", "upcast", "v1_identity"]
