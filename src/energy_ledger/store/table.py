"""``aggregated/results.csv``, a derived output: rebuilt from the JSON results, never patched.

The table holds one row per experiment that has a result file: ``<id>.json``, or else
``<id>.partial.json`` (a ``recover`` result; its ``partial`` cell says ``true``). Every change
rebuilds the whole file from the result files present, while the caller holds the outputs lock
(``store.lock``), and writes it atomically, sorted by experiment id, so its bytes depend only on
the results. So a row can be missing only while its JSON is, and two writers can never each
rebuild from a different set and drop the other's row.

To keep a rebuild cheap with thousands of results (each a megabyte or more of JSON), the rows
are kept in a sources file, ``aggregated/.results.csv.sources``, with each result file's
identity (inode, size, mtime and ctime in ns; results are replaced by rename, so a rewrite
always brings a new inode). Only a result whose identity changed is read again. For complete
results the sources file also keeps a digest of the experiment folder's listing at the time
the result was derived (``inputs_digest``), which ``pipeline.up_to_date`` compares for
equality: a log that grew has another size whatever the timestamp granularity, so no ordering
of coarse mtimes is trusted.

A ``results.csv`` that was not the one written last (its SHA-256 is not the one recorded) is
looked at before it is replaced. When its header is not energy-ledger's, or it holds a row the
JSON results do not reproduce (edited by hand, or from results since deleted), it is moved aside
to ``results.csv.foreign-<n>`` (the first free ``n``) with a warning naming both files; it is
never deleted. A missing CSV is simply written again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import fsync_dir, write_atomic, write_if_changed
from energy_ledger.store.exporters import CSV_HEADER, PREVIOUS_HEADERS, csv_row, render_csv
from energy_ledger.store.layout import ResultsLayout, inside
from energy_ledger.store.results import (
    identity_of,
    list_results,
    load_result,
    read_regular_file,
)

logger = logging.getLogger(__name__)

SOURCES_NAME = ".results.csv.sources"
"""The sources file beside the CSV (hidden, and not named ``*.json``: it is not a result)."""
SOURCES_FORMAT = 1
FOREIGN_INFIX = ".foreign-"
MAX_ASIDE = 10_000

Identity = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Source:
    """What the table knows of one result file.

    Attributes:
        identity: the file's ``(inode, size, mtime_ns, ctime_ns)`` when its row was made.
        row: its CSV cells, or ``None`` when it could not be read as a result.
        error: why it could not be read.
        inputs: digest of the experiment folder it was derived from (``inputs_digest``), when
            the writer knew it.
    """

    identity: Identity
    row: tuple[str, ...] | None
    error: str | None = None
    inputs: str | None = None


@dataclass(frozen=True, slots=True)
class Fresh:
    """A result file a writer has just written or checked, with what it already knows."""

    identity: Identity
    row: tuple[str, ...]
    inputs: str | None = None


@dataclass(frozen=True, slots=True)
class Sources:
    """The sources file: the header the rows were made for, the CSV written, each result."""

    header: tuple[str, ...] = CSV_HEADER
    csv_identity: Identity | None = None
    csv_sha256: str | None = None
    files: Mapping[str, Source] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Deterministic JSON (sorted keys)."""
        return orjson.dumps(
            {
                "format": SOURCES_FORMAT,
                "header": list(self.header),
                "csv_identity": self.csv_identity,
                "csv_sha256": self.csv_sha256,
                "files": {
                    name: {
                        "identity": list(s.identity),
                        "row": None if s.row is None else list(s.row),
                        "error": s.error,
                        "inputs": s.inputs,
                    }
                    for name, s in self.files.items()
                },
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Sources:
        """Parse a sources file; raises ``ValueError``/``KeyError``/``TypeError`` if malformed."""
        raw = orjson.loads(data)
        if raw["format"] != SOURCES_FORMAT:
            raise ValueError(f"format {raw['format']!r}")
        ident = raw["csv_identity"]
        return cls(
            header=tuple(raw["header"]),
            csv_identity=None if ident is None else _identity(ident),
            csv_sha256=raw["csv_sha256"],
            files={
                str(name): Source(
                    _identity(s["identity"]),
                    None if s["row"] is None else tuple(str(c) for c in s["row"]),
                    s["error"],
                    s["inputs"],
                )
                for name, s in raw["files"].items()
            },
        )


def _identity(value: Sequence[int]) -> Identity:
    a, b, c, d = (int(v) for v in value)
    return (a, b, c, d)


@dataclass(frozen=True, slots=True)
class TableSync:
    """What a rebuild did.

    Attributes:
        path: ``aggregated/results.csv``.
        written: the CSV's bytes changed.
        rows: rows it holds now.
        moved_to: where a CSV that was not ours went, when one was moved aside.
        unreadable: result files that have no row, each with the reason.
    """

    path: Path
    written: bool
    rows: int
    moved_to: Path | None = None
    unreadable: tuple[str, ...] = ()


_cache: dict[str, tuple[Identity, Sources]] = {}
_CACHE_SIZE = 16


def read_sources(layout: ResultsLayout) -> Sources | None:
    """The sources file of a root, or ``None`` when there is none or it is unusable.

    Parsed files are kept by path and identity, so that ``up_to_date`` over a thousand
    experiments reads the file once, not a thousand times.
    """
    path = layout.aggregated_dir / SOURCES_NAME
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    key, ident = str(path), identity_of(st)
    cached = _cache.get(key)
    if cached is not None and cached[0] == ident:
        return cached[1]
    try:
        sources = Sources.from_bytes(read_regular_file(path))
    except (LedgerError, ValueError, KeyError, TypeError) as exc:
        logger.info("%s is unusable (%s); the CSV will be rebuilt from every result", path, exc)
        return None
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = (ident, sources)
    return sources


def _lstat_identity(path: Path) -> Identity | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return identity_of(st) if stat.S_ISREG(st.st_mode) else None


def current_source(layout: ResultsLayout, name: str) -> Source | None:
    """The source of ``aggregated/<name>`` when the CSV on disk holds its current row.

    ``None`` when the CSV is missing or not the one last written, when the file has changed
    since its row was made, or when it had no row. Reads no result file.
    """
    sources = read_sources(layout)
    if sources is None or sources.header != CSV_HEADER or sources.csv_identity is None:
        return None
    if _lstat_identity(layout.csv_path) != sources.csv_identity:
        return None
    source = sources.files.get(name)
    if source is None or source.row is None:
        return None
    if _lstat_identity(layout.aggregated_dir / name) != source.identity:
        return None
    return source


def inputs_digest(layout: ResultsLayout, directory: Path) -> str | None:
    """A digest of an experiment folder's listing: each entry's name, size and mtime in ns.

    Logs are append-only and markers are written once, so any change an aggregation could see
    changes a size or adds a name; timestamps are compared for equality only. A link that stays
    inside the root is described by its target; one that leads out is described by itself (it
    is never read). ``None`` when the folder cannot be listed.
    """
    lines: list[str] = []
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            try:
                link = entry.is_symlink()
                follow = link and inside(layout.root, Path(entry.path))
                st = entry.stat(follow_symlinks=follow)
            except OSError:
                lines.append(f"{entry.name}\0?")
                continue
            lines.append(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\0{int(link)}")
    except OSError:
        return None
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def sync_table(layout: ResultsLayout, fresh: Mapping[str, Fresh] | None = None) -> TableSync:
    """Rebuild ``results.csv`` from the result files; call it holding ``outputs_lock``.

    Args:
        layout: the results root.
        fresh: result files (by name) the caller has just written or checked, with their rows
            and input digests, so they need not be read again; used only while a file's
            identity is still the one given.

    Raises:
        UnsafePathError: ``aggregated/`` or ``results.csv`` is a symbolic link.
        LedgerError: the CSV or the sources file cannot be written.
    """
    fresh = fresh or {}
    csv_path = layout.csv_path
    old = read_sources(layout) or Sources()
    known = old.files if old.header == CSV_HEADER else {}
    files: dict[str, Source] = {}
    chosen: dict[str, tuple[bool, tuple[str, ...]]] = {}
    unreadable: list[str] = []
    for result in list_results(layout):
        name = result.name
        given = fresh.get(name)
        source = known.get(name)
        if given is not None and given.identity == result.identity:
            source = Source(result.identity, given.row, None, given.inputs)
        elif source is None or source.identity != result.identity:
            try:
                source = Source(result.identity, tuple(csv_row(load_result(result.path))))
            except LedgerError as exc:
                source = Source(result.identity, None, str(exc))
                logger.warning("%s; it has no row in %s", exc, csv_path)
        files[name] = source
        if source.row is None:
            unreadable.append(f"{result.path}: {source.error}")
            continue
        held = chosen.get(result.experiment_id)
        if held is None or (held[0] and not result.partial):  # <id>.json wins over the partial
            chosen[result.experiment_id] = (result.partial, source.row)
    rows = [chosen[k][1] for k in sorted(chosen)]
    data = render_csv(rows)
    layout.check_output_file(csv_path)
    current = _read_if_present(csv_path)
    moved_to: Path | None = None
    written = False
    if current != data and (rows or current is not None):
        if current is not None and hashlib.sha256(current).hexdigest() != old.csv_sha256:
            reason = foreign_reason(current, rows)
            if reason is not None:
                moved_to = move_aside(csv_path, reason)
        elif current is None and old.csv_identity is not None:
            logger.info("%s was deleted; writing it again from %d result(s)", csv_path, len(rows))
        write_atomic(csv_path, data)
        written = True
    csv_identity = _lstat_identity(csv_path)
    sources = Sources(
        CSV_HEADER,
        csv_identity,
        hashlib.sha256(data).hexdigest() if csv_identity is not None else None,
        files,
    )
    if csv_identity is not None or files:
        sources_path = layout.check_output_file(layout.aggregated_dir / SOURCES_NAME)
        write_if_changed(sources_path, sources.to_bytes())
    return TableSync(csv_path, written, len(rows), moved_to, tuple(unreadable))


def _read_if_present(path: Path) -> bytes | None:
    try:
        return read_regular_file(path)
    except LedgerError:
        if not os.path.lexists(path):
            return None
        raise


def foreign_reason(data: bytes, rows: Sequence[Sequence[str]]) -> str | None:
    """Why an existing CSV must be kept aside rather than replaced, or ``None`` if it may go.

    It may be replaced when its header is this version's or an earlier one's and every row it
    holds is reproduced, cell for cell, by ``rows`` (the rebuilt table).
    """
    try:
        table = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        return "it is not a UTF-8 CSV file"
    if not table:
        return None
    header = tuple(table[0])
    if header != CSV_HEADER and header not in PREVIOUS_HEADERS:
        return "its header is not energy-ledger's"
    rebuilt = {tuple(row[: len(header)]) for row in rows}
    lost = [row for row in table[1:] if row and tuple(row) not in rebuilt]
    if not lost:
        return None
    return (
        f"it holds {len(lost)} row(s) that the JSON results do not reproduce (the first for "
        f"{lost[0][0]!r}): edited by hand, or their results were removed"
    )


def move_aside(path: Path, reason: str) -> Path:
    """Give ``path`` a new name, ``<name>.foreign-<n>`` (first free ``n``); return it.

    A hard link is made first (it fails rather than overwrite), so the original name keeps its
    content until the caller replaces it; where links are not supported the file is renamed.

    Raises:
        LedgerError: no name could be made.
    """
    for n in itertools.count(1):
        aside = path.with_name(f"{path.name}{FOREIGN_INFIX}{n}")
        if n > MAX_ASIDE:
            break
        try:
            os.link(path, aside, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:
            if os.path.lexists(aside):
                continue
            try:
                os.rename(path, aside)
            except OSError as exc:
                raise LedgerError(f"cannot move {path} aside: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):
            fsync_dir(path.parent)
        logger.warning(
            "%s: %s; moved it to %s (nothing deleted) and rebuilt %s from the JSON results",
            path,
            reason,
            aside,
            path,
        )
        return aside
    raise LedgerError(f"cannot move {path} aside: {MAX_ASIDE} earlier copies are in the way")


def fresh_entry(path: Path, row: Sequence[str], inputs: str | None) -> Fresh | None:
    """A ``Fresh`` for a result file just written or checked, or ``None`` if it is gone."""
    ident = _lstat_identity(path)
    return None if ident is None else Fresh(ident, tuple(row), inputs)


__all__ = [
    "SOURCES_NAME",
    "Fresh",
    "Source",
    "Sources",
    "TableSync",
    "current_source",
    "foreign_reason",
    "fresh_entry",
    "inputs_digest",
    "move_aside",
    "read_sources",
    "sync_table",
]
