"""Outputs on an object store root: results created once, the CSV replaced by compare-and-swap.

A bucket has no rename and no lock, so the folder's rules (atomic files, replaced under the
outputs lock) become conditional writes here (docs/object-storage.md, "Guarantees"):

- ``aggregated/<id>.json`` is created with ``put(create=True)`` (``If-None-Match: *``): of any
  number of replays racing, exactly one creates it and the others find it there. One already
  there with the very same bytes is up to date, and nothing is written. One with other bytes
  (written by another version of energy-ledger, whose figures or schema differ) is left as it
  is and reported (``kept``), unless ``replace`` (``replay --force``): then it is replaced with
  ``put(if_match=<the ETag read>)``, so a replace never overwrites a version it has not read,
  and of two forced replays one wins and the other, reading again, finds the winner's bytes.
- ``aggregated/<id>.partial.json`` (``recover``) is derived and always brought up to date the
  same way, by compare-and-swap; it is deleted once the full result is there.
- ``aggregated/results.csv`` is rebuilt from the result objects and created, or replaced with
  ``if_match`` on the version read *before* the results were listed; when another writer
  replaced it meanwhile, the whole rebuild starts again (at most ``CSV_ATTEMPTS`` times, then
  a ``LedgerError``). So every write is built from a listing taken after the CSV it replaces
  was written, and a row another writer added cannot be lost. A CSV whose header is not
  energy-ledger's is first copied aside to ``results.csv.foreign-<n>``, never deleted; one
  with energy-ledger's header is replaced (a bucket root has no sources file to tell a hand
  edit from an older rebuild).

Every key is built from a checked experiment id and checked again (``check_key``); keys are
relative to the root, so nothing is written outside the root's prefix. A result's bytes are
held in memory: a put sends one body.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.models.results import is_partial
from energy_ledger.store.exporters import (
    CSV_HEADER,
    PREVIOUS_HEADERS,
    csv_row,
    render_csv,
    result_json_chunks,
)
from energy_ledger.store.layout import AGGREGATED_DIR, CSV_NAME, check_experiment_id
from energy_ledger.store.objectstore import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    check_key,
)
from energy_ledger.store.results import (
    PARTIAL_SUFFIX,
    RESULT_SUFFIX,
    parse_result,
    parse_result_name,
)

__all__ = [
    "CSV_ATTEMPTS",
    "CSV_KEY",
    "OUTPUTS_PREFIX",
    "PUT_ATTEMPTS",
    "CsvSync",
    "KnownRows",
    "Put",
    "put_derived",
    "put_result",
    "remove_partial",
    "result_key",
    "sync_bucket_csv",
]

logger = logging.getLogger(__name__)

OUTPUTS_PREFIX = f"{AGGREGATED_DIR}/"
CSV_KEY = f"{OUTPUTS_PREFIX}{CSV_NAME}"
FOREIGN_INFIX = ".foreign-"
MAX_ASIDE = 10_000
PUT_ATTEMPTS = 8
"""Reads and conditional writes of one result before giving up: each lost condition means
another writer changed the object in between, which two replays of one root do at most once."""
CSV_ATTEMPTS = 16
"""Rebuilds of the CSV before giving up: one per other writer that replaced it meanwhile."""
CSV_BACKOFF_SEC = 0.05
"""The first pause after a lost CSV write; it doubles (up to 1 s), with jitter, so that
writers racing on the CSV spread out instead of colliding again."""

Action = Literal["created", "up-to-date", "replaced", "kept"]
KnownRows = Mapping[str, tuple[str, tuple[str, ...]]]
"""Result key -> (ETag, CSV row) of results a caller has just written or checked, so that the
CSV rebuild need not fetch them again (used only while the listed ETag is that one)."""


@dataclass(frozen=True, slots=True)
class Put:
    """What became of one derived object.

    Attributes:
        key: its key.
        action: ``created``; ``up-to-date`` (it held these bytes); ``replaced`` (compare-and-
            swap); ``kept`` (it holds other bytes, left as they are).
        etag: the version there now, as far as it is known.
    """

    key: str
    action: Action
    etag: str

    @property
    def changed(self) -> bool:
        """True when this call wrote the object."""
        return self.action in ("created", "replaced")


def result_key(experiment_id: str, *, partial: bool = False) -> str:
    """``aggregated/<id>.json`` or ``aggregated/<id>.partial.json``, after checking the id."""
    suffix = PARTIAL_SUFFIX if partial else RESULT_SUFFIX
    return check_key(f"{OUTPUTS_PREFIX}{check_experiment_id(experiment_id)}{suffix}")


def put_result(
    objects: ObjectStore,
    result: ExperimentResult,
    *,
    force: bool = False,
    current: ObjectInfo | None = None,
) -> Put:
    """Write a result: a complete one created once (``force``: replaced when it differs), a
    partial one brought up to date whenever its bytes change (see the module doc).

    Args:
        objects: the root's store.
        result: what to write (its bytes are ``exporters.result_json_chunks``', a file's).
        force: replace a complete result that holds other bytes.
        current: the object's listing entry when the caller knows it is there (no create is
            tried first, which would send the body in vain).

    Raises:
        LedgerError: a write failed, or the object kept changing under it.
    """
    partial = is_partial(result)
    key = result_key(result.experiment_id, partial=partial)
    data = b"".join(result_json_chunks(result))
    return put_derived(objects, key, data, replace=force or partial, current=current)


def put_derived(
    objects: ObjectStore,
    key: str,
    data: bytes,
    *,
    replace: bool,
    current: ObjectInfo | None = None,
) -> Put:
    """Create ``key`` with ``data``, or find it holding them, or (``replace``) swap them in.

    Raises:
        LedgerError: a write failed, or it changed under each of ``PUT_ATTEMPTS`` reads.
    """
    check_key(key)
    for _ in range(PUT_ATTEMPTS):
        if current is None:
            try:
                return Put(key, "created", objects.put(key, data, create=True).etag)
            except PreconditionFailed:
                current = objects.head(key)
                if current is None:  # deleted meanwhile: create it again
                    continue
        if current.size == len(data):
            try:
                same = objects.get(key) == data
            except ObjectNotFound:
                current = None
                continue
            if same:
                return Put(key, "up-to-date", current.etag)
        if not replace:
            return Put(key, "kept", current.etag)
        try:
            return Put(key, "replaced", objects.put(key, data, if_match=current.etag).etag)
        except PreconditionFailed:
            current = objects.head(key)
    raise LedgerError(
        f"cannot write {objects.url}/{key}: another writer changed it each of the "
        f"{PUT_ATTEMPTS} times it was read"
    )


def remove_partial(objects: ObjectStore, experiment_id: str) -> None:
    """Delete ``<id>.partial.json``: the complete result beside it supersedes it."""
    key = result_key(experiment_id, partial=True)
    objects.delete(key)
    logger.info("removed %s/%s: the complete result supersedes it", objects.url, key)


@dataclass(frozen=True, slots=True)
class CsvSync:
    """What a rebuild of the CSV did.

    Attributes:
        key: ``aggregated/results.csv``.
        written: its bytes changed.
        rows: rows it holds now.
        moved_to: where a CSV that was not energy-ledger's was copied, when one was.
        unreadable: result objects that have no row, each with the reason.
    """

    key: str
    written: bool
    rows: int
    moved_to: str | None = None
    unreadable: tuple[str, ...] = ()


def sync_bucket_csv(
    objects: ObjectStore,
    known: KnownRows | None = None,
    *,
    learned: dict[str, tuple[str, tuple[str, ...]]] | None = None,
) -> CsvSync:
    """Rebuild ``aggregated/results.csv`` from the result objects (see the module doc).

    Nothing is written when it already holds these bytes, or when there is neither a CSV nor
    a result.

    Args:
        objects: the root's store.
        known: rows of results the caller has just written or checked.
        learned: filled with the row of every result read here, under its key and ETag: a
            daemon that syncs again and again passes one dict as both ``known`` and
            ``learned``, so it reads each result once.

    Raises:
        LedgerError: a read or write failed, or another writer replaced the CSV during each
            of ``CSV_ATTEMPTS`` rebuilds.
    """
    known = known or {}
    for attempt in range(CSV_ATTEMPTS):
        current = objects.head(CSV_KEY)
        old: bytes | None = None
        if current is not None:
            try:
                old = objects.get(CSV_KEY)
            except ObjectNotFound:
                current = None
        # Listed after the version was read: a result created before that version was
        # written is in this listing, so a successful swap never drops a row.
        rows, unreadable = _rows(objects, objects.list(OUTPUTS_PREFIX), known, learned)
        data = render_csv(rows)
        if old == data or (current is None and not rows):
            return CsvSync(CSV_KEY, False, len(rows), None, unreadable)
        moved_to: str | None = None
        try:
            if current is None:
                objects.put(CSV_KEY, data, create=True)
            else:
                assert old is not None
                reason = _foreign_reason(old)
                if reason is not None:
                    moved_to = _copy_aside(objects, old, reason)
                objects.put(CSV_KEY, data, if_match=current.etag)
        except PreconditionFailed:
            time.sleep(min(1.0, CSV_BACKOFF_SEC * 2**attempt) * random.uniform(0.5, 1.0))
            continue
        return CsvSync(CSV_KEY, True, len(rows), moved_to, unreadable)
    raise LedgerError(
        f"cannot write {objects.url}/{CSV_KEY}: another writer replaced it during each of "
        f"{CSV_ATTEMPTS} rebuilds; run the replay again"
    )


def _rows(
    objects: ObjectStore,
    listing: Sequence[ObjectInfo],
    known: KnownRows,
    learned: dict[str, tuple[str, tuple[str, ...]]] | None = None,
) -> tuple[list[tuple[str, ...]], tuple[str, ...]]:
    """The CSV's rows, sorted by id (a complete result's over a partial one's), and the
    result objects that could not be read as results."""
    chosen: dict[str, tuple[bool, tuple[str, ...]]] = {}
    unreadable: list[str] = []
    for info in listing:  # sorted: <id>.json comes before <id>.partial.json
        name = info.key.removeprefix(OUTPUTS_PREFIX)
        parsed = None if "/" in name else parse_result_name(name)
        if parsed is None:
            continue
        experiment_id, partial = parsed
        held = chosen.get(experiment_id)
        if held is not None and not held[0]:
            continue  # the complete result's row is taken; the partial one is not read
        hit = known.get(info.key)
        if hit is not None and hit[0] == info.etag:
            row = hit[1]
        else:
            try:
                data = objects.get(info.key)
                row = tuple(csv_row(parse_result(data, f"{objects.url}/{info.key}")))
            except ObjectNotFound:
                continue  # deleted since the listing (a partial result superseded)
            except LedgerError as exc:
                unreadable.append(str(exc))
                logger.warning("%s; it has no row in %s/%s", exc, objects.url, CSV_KEY)
                continue
            if learned is not None:
                learned[info.key] = (info.etag, row)
        chosen[experiment_id] = (partial, row)
    return [chosen[k][1] for k in sorted(chosen)], tuple(unreadable)


def _foreign_reason(data: bytes) -> str | None:
    """Why a CSV must be kept aside before it is replaced: its header is not ours."""
    try:
        header = next(csv.reader(io.StringIO(data.decode("utf-8"))), None)
    except (UnicodeDecodeError, csv.Error):
        return "it is not a UTF-8 CSV file"
    if header is None or tuple(header) == CSV_HEADER or tuple(header) in PREVIOUS_HEADERS:
        return None
    return "its header is not energy-ledger's"


def _copy_aside(objects: ObjectStore, data: bytes, reason: str) -> str:
    """Create ``results.csv.foreign-<n>`` (the first free ``n``) holding ``data``; its key."""
    for n in range(1, MAX_ASIDE + 1):
        key = f"{CSV_KEY}{FOREIGN_INFIX}{n}"
        try:
            objects.put(key, data, create=True)
        except PreconditionFailed:
            continue
        logger.warning(
            "%s/%s: %s; copied it to %s/%s (nothing deleted) and rebuilt it from the JSON results",
            objects.url,
            CSV_KEY,
            reason,
            objects.url,
            key,
        )
        return key
    raise LedgerError(f"cannot copy {objects.url}/{CSV_KEY} aside: {MAX_ASIDE} copies are there")
