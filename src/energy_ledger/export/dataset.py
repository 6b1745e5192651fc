"""The Parquet dataset of every result: ``aggregated/results.parquet/``, one file per experiment.

Each experiment with a readable result file has one fragment, ``<experiment_id>.parquet``,
holding one row: the CSV's columns (same names, same order, typed), then a few more
(``EXTRA_COLUMNS``). Every fragment has the one schema ``SCHEMA``, so pandas, polars, pyarrow
and DuckDB read the folder as one table (docs/data.md). The row comes from
``aggregated/<id>.json``, or from ``<id>.partial.json`` where there is no readable complete
result: the CSV's rule, so the two tables always hold the same experiments.

The dataset is rebuilt incrementally. The sources file beside the folder,
``aggregated/.results.parquet.sources`` (beside, not inside: the folder then holds nothing but
fragments, so ``polars.read_parquet(folder)`` works), records for each fragment the identity
of the result file it was made from and the identity of the fragment as written. A fragment
whose result file and own file are both unchanged is not read or written again; any other is
rebuilt and compared byte for byte with the one on disk, so touching a result rewrites nothing.
The record is only trusted for the writer that made it (``fingerprint``: this module's format,
energy-ledger's and pyarrow's versions and the schema), so an upgrade rebuilds every fragment.
A fragment whose experiment has no readable result any more is removed; a ``*.parquet`` file
energy-ledger did not write is left where it is and reported.

Bytes are deterministic (fixed writer options, zstd at a fixed level, no timestamps in the
metadata), and every write is atomic (``store.atomic``), made holding the outputs lock. The
folder must be a real folder directly in ``aggregated/`` and every fragment a regular file: a
symbolic link anywhere on the way is refused (``UnsafePathError``) before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from pydantic import ValidationError

from energy_ledger._version import __version__
from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.models import ExperimentResult
from energy_ledger.report.digest import decode_digest
from energy_ledger.report.model import numeric_params
from energy_ledger.report.numbers import figures_of
from energy_ledger.store.atomic import fsync_dir, write_if_changed
from energy_ledger.store.exporters import CSV_COLUMNS
from energy_ledger.store.files import open_regular
from energy_ledger.store.layout import ResultsLayout, real_folder, results_root
from energy_ledger.store.lock import outputs_lock
from energy_ledger.store.parquet import write_options
from energy_ledger.store.results import ResultFile, identity_of, list_results, read_regular_file

logger = logging.getLogger(__name__)

DATASET_NAME = "results.parquet"
"""The dataset folder, in ``aggregated/``."""
SOURCES_NAME = ".results.parquet.sources"
"""The sources file, in ``aggregated/`` beside the folder (hidden: it is not a result)."""
FRAGMENT_SUFFIX = ".parquet"
DATASET_FORMAT = 1
ZSTD_LEVEL = 9
_TEMP_RE = re.compile(r"\..+\.parquet\..+\.tmp")
"""A temp file of ``store.atomic.write_temp`` for a fragment."""
MARKER_KEY = b"energy_ledger.dataset"
"""Schema metadata key that tells a fragment of ours from a foreign Parquet file."""

_STR = pa.string()
_INT = pa.int64()
_FLOAT = pa.float64()
_BOOL = pa.bool_()
_TIME = pa.timestamp("us", tz="UTC")

_TYPED: tuple[tuple[Any, str], ...] = (
    (_STR, "experiment_id run_id measurement_config_hash backend measurement_methodology"),
    (_STR, "model_name config_name gpu_name warnings_text"),
    (_INT, "num_processes num_gpus input_tokens output_tokens total_tokens warnings"),
    (_TIME, "start_time end_time"),
    (_BOOL, "throttle_detected partial"),
    (_FLOAT, "total_inference_time_sec total_energy_j energy_adjusted_j baseline_power_w"),
    (_FLOAT, "avg_tokens_per_second avg_energy_per_token_j total_flops max_temperature_c"),
    (_FLOAT, "ttft_mean_ms ttft_p50_ms ttft_p95_ms ttft_p99_ms"),
    (_FLOAT, "itl_mean_ms itl_p50_ms itl_p95_ms itl_p99_ms"),
    (_FLOAT, "e2e_latency_mean_ms e2e_latency_p50_ms e2e_latency_p95_ms e2e_latency_p99_ms"),
)

CSV_TYPES: Mapping[str, Any] = {name: kind for kind, names in _TYPED for name in names.split()}
"""The Parquet type of each CSV column. A column the CSV gains later and this table lacks is a
string (a test holds this table complete)."""

EXTRA_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("requests", _INT),
    ("energy_per_request_j", _FLOAT),
    ("avg_power_w", _FLOAT),
    ("output_tokens_per_second", _FLOAT),
    ("config_params", pa.map_(_STR, _FLOAT)),
    ("effective_config_json", _STR),
    ("result_file", _STR),
)
"""The columns after the CSV's, in order (docs/data.md says what each holds)."""

SCHEMA: Any = pa.schema(
    [pa.field(name, CSV_TYPES.get(name, _STR)) for name, _ in CSV_COLUMNS]
    + [pa.field(name, kind) for name, kind in EXTRA_COLUMNS],
    metadata={MARKER_KEY: str(DATASET_FORMAT).encode()},
)
"""The one schema of every fragment."""

_CSV_CELLS = tuple((name, get, SCHEMA.field(name).type) for name, get in CSV_COLUMNS)

Identity = tuple[int, int, int, int]
NO_FILE: Identity = (-1, -1, -1, -1)


def _cell(kind: Any, value: Any) -> Any:
    """A CSV getter's value as the column's Parquet value (a list of run ids is joined by ``;``,
    as in the CSV; a time is parsed back from the CSV's text)."""
    if value is None:
        return None
    if kind == _STR:
        return ";".join(map(str, value)) if isinstance(value, list) else str(value)
    if kind == _INT:
        return int(value)
    if kind == _FLOAT:
        return float(value)
    if kind == _TIME and isinstance(value, str):  # the CSV's ISO 8601 text, read back exactly
        return datetime.fromisoformat(value)
    return value


def dataset_row(result: ExperimentResult, result_bytes: bytes, file_name: str) -> dict[str, Any]:
    """The row of one result, by column (pure).

    Args:
        result: the result, validated.
        result_bytes: its file's bytes (decoded again as a ``ResultDigest`` for the report's
            figures, so the dataset and the report cannot disagree).
        file_name: the result file's name (``<id>.json`` or ``<id>.partial.json``).

    Raises:
        FormatError: the bytes are not a result.
    """
    row = {name: _cell(kind, get(result)) for name, get, kind in _CSV_CELLS}
    digest = decode_digest(result_bytes, path=file_name)
    figures = figures_of(digest)
    config = digest.effective_config
    row.update(
        requests=figures["requests"],
        energy_per_request_j=figures["energy_per_request_j"],
        avg_power_w=figures["avg_power_w"],
        output_tokens_per_second=figures["output_tokens_per_second"],
        config_params=list(numeric_params(config).items()),
        effective_config_json=json.dumps(
            config, sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ),
        result_file=file_name,
    )
    return row


def fragment_bytes(row: Mapping[str, Any]) -> bytes:
    """One row as a Parquet file's bytes: same row, same bytes (pure).

    Raises:
        LedgerError: a value does not fit its column (an integer beyond 64 bits).
    """
    try:
        table = pa.Table.from_pydict({name: [row[name]] for name in SCHEMA.names}, schema=SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, use_dictionary=False, **write_options(ZSTD_LEVEL))
    except (pa.ArrowException, OverflowError) as exc:
        raise LedgerError(f"a value does not fit the dataset's schema: {exc}") from None
    data: bytes = sink.getvalue().to_pybytes()
    return data


def fingerprint() -> str:
    """What a fragment's bytes depend on besides its result: a record made by another writer
    (another energy-ledger or pyarrow, another schema) is not trusted."""
    text = "\n".join(
        (str(DATASET_FORMAT), __version__, pa.__version__, str(ZSTD_LEVEL), SCHEMA.to_string())
    )
    return hashlib.sha256(text.encode()).hexdigest()


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the sources file knows of one fragment: the result file it was made from, that
    file's identity then, and the fragment's identity as written."""

    result_file: str
    identity: Identity
    fragment_identity: Identity


class Sources(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The sources file: its format, the writer's fingerprint and each fragment's record.

    Unreadable result files are not remembered: they are read again on every export (a read
    that failed once may not fail again, and such files are few).
    """

    format: int = DATASET_FORMAT
    fingerprint: str = ""
    fragments: dict[str, Record] = {}

    def to_bytes(self) -> bytes:
        """Deterministic JSON (sorted keys)."""
        return msgspec.json.encode(self, order="sorted")

    @classmethod
    def from_bytes(cls, data: bytes) -> Sources:
        """Parse a sources file; raises ``ValueError`` if it is malformed or of another format."""
        try:
            sources = msgspec.json.decode(data, type=cls)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(str(exc)) from None
        if sources.format != DATASET_FORMAT:
            raise ValueError(f"format {sources.format!r}")
        return sources


@dataclass(frozen=True, slots=True)
class DatasetExport:
    """What an export did.

    Attributes:
        path: the dataset folder, ``aggregated/results.parquet``.
        rows: fragments (experiments) it holds now.
        written: fragments written (new, or their bytes changed).
        unchanged: fragments already up to date.
        removed: fragments removed (their experiment has no readable result any more).
        problems: result files that have no row, and foreign files in the folder, each named
            with the reason.
    """

    path: Path
    rows: int
    written: int
    unchanged: int
    removed: int
    problems: tuple[str, ...] = ()


def _layout(root: str | os.PathLike[str]) -> ResultsLayout:
    layout = ResultsLayout.at(root)
    return layout if layout.aggregated_dir.is_dir() else results_root(root)


def dataset_dir(layout: ResultsLayout) -> Path:
    """``aggregated/results.parquet``, created if missing, checked to be a real folder.

    Raises:
        UnsafePathError: it is a symbolic link, or not a folder, or leads out of the root.
        LedgerError: it cannot be created.
    """
    folder = layout.outputs_dir(create=True) / DATASET_NAME
    real_folder(folder)
    return layout.check_inside(folder)


def _scan(folder: Path) -> dict[str, Identity]:
    """The ``*.parquet`` files of the folder with their identities; refuses any that is not a
    regular file (nothing is written through a link).

    A temp file left by an export that died mid-write is removed: only an export writes here,
    and it holds the outputs lock, so no temp file can be another's work in progress (and
    polars refuses a folder holding other files than its fragments).
    """
    found: dict[str, Identity] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise LedgerError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    for entry in entries:
        if _TEMP_RE.fullmatch(entry.name) and not entry.is_symlink():
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            continue
        if entry.name.startswith(".") or not entry.name.endswith(FRAGMENT_SUFFIX):
            continue
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise UnsafePathError(f"{entry.path} is {kind}; refusing to write the dataset")
        found[entry.name] = identity_of(st)
    return found


def _read_sources(path: Path) -> Sources:
    try:
        return Sources.from_bytes(read_regular_file(path))
    except (LedgerError, ValueError) as exc:
        if os.path.lexists(path):
            logger.info("%s is unusable (%s); every fragment will be rebuilt", path, exc)
        return Sources()


def _load(file: ResultFile) -> bytes:
    """A result file as its fragment's bytes; ``LedgerError`` names the file and the problem."""
    data = read_regular_file(file.path)
    try:
        result = ExperimentResult.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise LedgerError(
            f"{file.path}: not an ExperimentResult ({exc.error_count()} problems; first: "
            f"{where}: {first['msg']})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise LedgerError(f"{file.path}: not an ExperimentResult ({exc})") from None
    try:
        return fragment_bytes(dataset_row(result, data, file.name))
    except LedgerError as exc:
        raise LedgerError(f"{file.path}: {exc}") from None


def _is_ours(path: Path) -> bool:
    """True when a Parquet file carries this module's schema marker (read from its footer)."""
    try:
        with open_regular(path) as fh:
            meta = pq.read_metadata(fh).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return MARKER_KEY in meta


class _Export:
    """One export's bookkeeping: the loop over experiments, then the stale fragments."""

    def __init__(self, folder: Path, old: Sources, on_disk: dict[str, Identity]) -> None:
        self.folder = folder
        current = old.fingerprint == fingerprint()
        self.known = old.fragments if current else {}
        self.on_disk = on_disk
        self.fragments: dict[str, Record] = {}
        self.problems: list[str] = []
        self.written = self.unchanged = 0

    def experiment(self, experiment_id: str, files: list[ResultFile]) -> None:
        """Bring one experiment's fragment up to date from the first readable of its files."""
        name = f"{experiment_id}{FRAGMENT_SUFFIX}"
        for file in files:
            record = self.known.get(name)
            on_disk = self.on_disk.get(name)
            if record is not None and record == Record(
                file.name, file.identity, on_disk or NO_FILE
            ):
                self.fragments[name] = record
                self.unchanged += 1
                return
            try:
                data = _load(file)
            except LedgerError as exc:
                self.problems.append(str(exc))
                logger.warning("%s; it has no row in %s", exc, self.folder)
                continue
            path = self.folder / name
            if write_if_changed(path, data):
                self.written += 1
            else:
                self.unchanged += 1
            self.fragments[name] = Record(file.name, file.identity, identity_of(os.lstat(path)))
            return

    def remove_stale(self, recorded: Mapping[str, Record]) -> int:
        """Remove the fragments of ours that no experiment has now; report foreign files."""
        removed = 0
        for name in sorted(set(self.on_disk) - set(self.fragments)):
            path = self.folder / name
            if name not in recorded and not _is_ours(path):
                self.problems.append(
                    f"{path}: not written by energy-ledger; left in place (readers of the "
                    "dataset will read it too)"
                )
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LedgerError(f"cannot remove {path}: {exc.strerror or exc}") from exc
            removed += 1
        if removed:
            fsync_dir(self.folder)
        return removed


def export_dataset(
    root: str | os.PathLike[str], *, progress: Callable[[int, int], None] | None = None
) -> DatasetExport:
    """Bring ``aggregated/results.parquet/`` up to date with the result files of ``root``.

    Holds the outputs lock (``store.lock``) throughout, so a replay or the daemon waits rather
    than change results half-way through.

    Args:
        root: the results root (holding ``raw/`` or ``aggregated/``).
        progress: called as ``progress(done, total)`` after each experiment.

    Raises:
        UnsafePathError: ``aggregated/``, the dataset folder, a fragment or the sources file is
            a symbolic link or not what it should be; nothing is written then.
        LedgerError: the root is not a results root, or a file cannot be written.
    """
    layout = _layout(root)
    with outputs_lock(layout):
        sources_path = layout.check_output_file(layout.aggregated_dir / SOURCES_NAME)
        folder = dataset_dir(layout)
        on_disk = _scan(folder)
        old = _read_sources(sources_path)
        export = _Export(folder, old, on_disk)
        by_id: dict[str, list[ResultFile]] = {}
        for file in list_results(layout):  # complete before partial
            by_id.setdefault(file.experiment_id, []).append(file)
        for done, experiment_id in enumerate(sorted(by_id), 1):
            export.experiment(experiment_id, by_id[experiment_id])
            if progress is not None:
                progress(done, len(by_id))
        removed = export.remove_stale(old.fragments)
        sources = Sources(DATASET_FORMAT, fingerprint(), export.fragments)
        write_if_changed(sources_path, sources.to_bytes())
    return DatasetExport(
        folder,
        len(export.fragments),
        export.written,
        export.unchanged,
        removed,
        tuple(export.problems),
    )


__all__ = [
    "CSV_TYPES",
    "DATASET_NAME",
    "EXTRA_COLUMNS",
    "SCHEMA",
    "SOURCES_NAME",
    "DatasetExport",
    "dataset_dir",
    "dataset_row",
    "export_dataset",
    "fingerprint",
    "fragment_bytes",
]
