"""LLenergyMeasure 0.7.0's results bundles of a root, written: one folder per experiment.

``export_bundles`` writes ``<out>/<bundle name>/`` (default ``out``: ``ROOT/exports/lem-bundle``)
for every experiment with a result, the complete one where there is one, else the partial. The
files' contents come from ``export.lem``; ``timeseries.parquet`` is converted from our
``aggregated/<id>.timeseries.parquet`` when that file exists (pyarrow, the ``parquet`` extra).

The output is deterministic (same results, same bytes), and every file is written atomically
and only when its bytes change, so a second export writes nothing. Nothing is written through a
symbolic link: the output folder, a bundle folder or a file in it that is a link is refused.
The output folder may not lie in ``raw/``, ``aggregated/`` or the daemon's state folder.
No study ``manifest.json`` is written: 0.7.0's loader does not read one (docs/data.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.export import lem
from energy_ledger.models import ExperimentResult
from energy_ledger.store.atomic import fsync_dir, write_if_changed
from energy_ledger.store.layout import ResultsLayout, inside, real_folder, results_root
from energy_ledger.store.parquet import arrow, write_options
from energy_ledger.store.results import (
    ResultFile,
    list_results,
    load_result,
    preferred,
    read_regular_file,
)

logger = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
BUNDLE_DIR = "lem-bundle"
TIMESERIES_SUFFIX = ".timeseries.parquet"
"""Our per-experiment time series beside its result: ``aggregated/<id>.timeseries.parquet``."""

SOURCE_COLUMNS = (
    "gpu",
    "hostname",
    "gpu_id",
    "t_sec",
    "in_window",
    "power_w",
    "temperature_c",
    "sm_util_pct",
    "memory_used_mb",
    "throttle_reasons",
)
"""The columns of our time series the conversion reads (it has others it does not need)."""

Status = Literal["written", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """What happened to one experiment's bundle.

    Attributes:
        experiment_id: the experiment.
        status: ``written`` (some file changed), ``unchanged`` or ``failed``.
        folder: the bundle folder (``None`` when the result could not be read).
        detail: why it failed, or what was left out (the time series), in words.
    """

    experiment_id: str
    status: Status
    folder: Path | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BundleExport:
    """Everything one export did: the output folder, each experiment's outcome, the problems.

    ``problems`` names every result that could not be read or written, and every time series
    that could not be converted, in words (never a traceback).
    """

    out: Path
    outcomes: list[BundleOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        """Bundles in which at least one file was written or removed."""
        return sum(o.status == "written" for o in self.outcomes)

    @property
    def unchanged(self) -> int:
        """Bundles that already held exactly these bytes."""
        return sum(o.status == "unchanged" for o in self.outcomes)

    @property
    def folders(self) -> list[Path]:
        """The bundle folders of this export, in experiment-id order."""
        return [o.folder for o in self.outcomes if o.folder is not None and o.status != "failed"]


def output_folder(layout: ResultsLayout, out: str | os.PathLike[str] | None) -> Path:
    """The checked output folder: ``out``, or ``ROOT/exports/lem-bundle``; made if missing.

    Under the root every folder from the root down must be real; for an ``out`` given, its
    parents are the caller's, but ``out`` itself must be real and may not lie in ``raw/``,
    ``aggregated/`` or the state folder (the pipeline owns those).

    Raises:
        UnsafePathError: a folder on the way is a symbolic link, or ``out`` is in a folder
            the pipeline owns.
        LedgerError: a folder cannot be made or is a file.
    """
    if out is None:
        return real_folder(real_folder(layout.root / EXPORTS_DIR) / BUNDLE_DIR)
    target = Path(os.path.abspath(out))
    for owned in (layout.raw_dir, layout.aggregated_dir, layout.state_dir):
        if inside(owned, target):
            raise UnsafePathError(f"{target} is inside {owned}; choose a folder outside it")
    if not target.parent.is_dir():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create {target.parent}: {exc.strerror or exc}") from exc
    return real_folder(target)


def _lem_columns(rows: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """0.7.0's columns from our in-window rows, sorted by (second, GPU), and the GPUs named."""
    keys = sorted({r["gpu"] for r in rows})
    pairs = sorted({(r["gpu"], r["gpu_id"]) for r in rows}, key=lambda p: (p[0], str(p[1])))
    ids = dict(pairs)  # a key with several ids keeps the last in this fixed order
    if len(pairs) == len(keys) == len(set(ids.values())) and all(
        isinstance(i, int) for i in ids.values()
    ):
        index = ids
    else:
        index = {key: i for i, key in enumerate(keys)}
    t0 = min((r["t_sec"] for r in rows), default=0)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["t_sec"], index[rows[i]["gpu"]]))
    ordered = [rows[i] for i in order]
    columns: dict[str, list[Any]] = {
        "timestamp_s": [float(r["t_sec"] - t0) for r in ordered],
        "gpu_index": [index[r["gpu"]] for r in ordered],
        "power_w": [r["power_w"] for r in ordered],
        "temperature_c": [r["temperature_c"] for r in ordered],
        "memory_used_mb": [r["memory_used_mb"] for r in ordered],
        "memory_total_mb": [None] * len(ordered),
        "sm_utilisation_pct": [r["sm_util_pct"] for r in ordered],
        "throttle_reasons": [r["throttle_reasons"] for r in ordered],
    }
    hosts: dict[str, Any] = {}
    for r in rows:
        hosts.setdefault(r["gpu"], r["hostname"])
    gpus = [
        {"gpu_index": index[key], "gpu": key, "gpu_id": ids[key], "hostname": hosts[key]}
        for key in sorted(keys, key=lambda k: (index[k], k))
    ]
    return columns, gpus


def lem_timeseries_bytes(source: bytes, *, experiment_id: str, declared_config_hash: str) -> bytes:
    """Our time series (Parquet bytes) as 0.7.0's ``timeseries.parquet`` (Parquet bytes).

    In-window rows only (the bundle describes the measured window), one row per (second, GPU):
    ``timestamp_s`` counts seconds from the first such second; ``gpu_index`` is our
    ``gpu_id`` (the CUDA index) while it names each GPU once, else the GPU's place in the
    sorted GPU keys (several hosts); ``memory_total_mb`` is null (we do not record it per GPU).
    The file's metadata holds ``experiment_id``, ``declared_config_hash`` and, under
    ``energy_ledger_gpus``, which of our GPUs each ``gpu_index`` is.

    Raises:
        LedgerError: pyarrow is not installed, or the bytes are not our time series.
    """
    pa, pq = arrow()
    try:
        table = pq.read_table(pa.BufferReader(source))
    except (pa.ArrowException, OSError) as exc:
        raise LedgerError(f"not a Parquet file ({exc})") from None
    missing = [c for c in SOURCE_COLUMNS if c not in table.column_names]
    if missing:
        raise LedgerError(f"not our time series: no column {', '.join(missing)}")
    rows = [r for r in table.select(list(SOURCE_COLUMNS)).to_pylist() if r["in_window"]]
    try:
        columns, gpus = _lem_columns(rows)
    except (TypeError, KeyError, ValueError) as exc:
        raise LedgerError(f"not our time series: {exc!r}") from None
    metadata = {
        "experiment_id": experiment_id,
        "declared_config_hash": declared_config_hash,
        "energy_ledger_gpus": orjson.dumps(gpus, option=orjson.OPT_SORT_KEYS).decode(),
    }
    f32 = pa.float32()
    schema = pa.schema(
        [
            ("timestamp_s", pa.float64()),
            ("gpu_index", pa.int32()),
            ("power_w", f32),
            ("temperature_c", f32),
            ("memory_used_mb", f32),
            ("memory_total_mb", f32),
            ("sm_utilisation_pct", f32),
            ("throttle_reasons", pa.int64()),
        ],
        metadata=metadata,
    )
    try:
        out_table = pa.table(columns, schema=schema)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise LedgerError(f"not our time series: {exc}") from None
    sink = io.BytesIO()
    pq.write_table(out_table, sink, **write_options(3))
    return sink.getvalue()


def _timeseries(layout: ResultsLayout, result: ExperimentResult) -> tuple[bytes | None, str]:
    """The bundle's ``timeseries.parquet`` bytes, or ``None`` and why (``""``: no source)."""
    source = layout.aggregated_dir / f"{result.experiment_id}{TIMESERIES_SUFFIX}"
    try:
        os.lstat(source)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"{source}: cannot read: {exc.strerror or exc}"
    try:
        data = lem_timeseries_bytes(
            read_regular_file(source),
            experiment_id=result.experiment_id,
            declared_config_hash=result.measurement_config_hash,
        )
    except LedgerError as exc:
        text = str(exc)
        return None, text if text.startswith(str(source)) else f"{source}: {text}"
    return data, ""


def _remove_stale(folder: Path, name: str) -> bool:
    """Remove a file this export owns but no longer writes (a link is removed, not followed)."""
    path = folder / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise LedgerError(f"{path} is a folder; refusing to remove it")
    os.unlink(path)
    fsync_dir(folder)
    return True


def write_bundle(folder: Path, files: dict[str, bytes]) -> bool:
    """Write one bundle's files into ``folder`` (a real folder, made if missing).

    Sidecars first and ``result.json`` last, so a reader that finds the new ``result.json``
    finds what it names. A file of ``lem.BUNDLE_FILES`` not in ``files`` is removed (an older
    export's time series, say). Returns True when anything changed.

    Raises:
        UnsafePathError: the folder is a symbolic link.
        LedgerError: a file cannot be written or removed.
    """
    real_folder(folder)
    changed = False
    for name in sorted(files, key=lambda n: (n == lem.RESULT_FILE, n)):
        changed |= write_if_changed(folder / name, files[name])
    for name in lem.BUNDLE_FILES:
        if name not in files:
            try:
                changed |= _remove_stale(folder, name)
            except OSError as exc:
                raise LedgerError(f"cannot remove {folder / name}: {exc.strerror or exc}") from exc
    return changed


def _bundle_bytes(
    layout: ResultsLayout, result: ExperimentResult, problems: list[str]
) -> tuple[dict[str, bytes], str]:
    series, why = _timeseries(layout, result)
    if why:
        problems.append(why)
    payloads = lem.bundle_files(result, timeseries=series is not None)
    files = {name: lem.to_json_bytes(payload) for name, payload in payloads.items()}
    if series is not None:
        files[lem.TIMESERIES_FILE] = series
    return files, why


def export_bundles(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    progress: Callable[[BundleOutcome], None] | None = None,
) -> BundleExport:
    """Write LLenergyMeasure 0.7.0's bundle of every experiment with a result under ``root``.

    Args:
        root: the results root.
        out: the folder to write the bundles into (default ``ROOT/exports/lem-bundle``).
        progress: called after each experiment with its outcome.

    Returns:
        What was written; unreadable results and unwritable bundles are in ``problems``
        (the others are still written).

    Raises:
        LedgerError: ``root`` is not a results root, or the output folder cannot be used
            (``UnsafePathError`` for a symbolic link or a folder the pipeline owns).
    """
    layout = results_root(root)
    target = output_folder(layout, out)
    report = BundleExport(target)
    loaded: list[tuple[ResultFile, ExperimentResult]] = []
    for file in preferred(list_results(layout)):
        try:
            loaded.append((file, load_result(file.path)))
        except LedgerError as exc:
            report.problems.append(str(exc))
            _record(report, BundleOutcome(file.experiment_id, "failed", None, str(exc)), progress)
    names = lem.bundle_names(result for _, result in loaded)
    for _file, result in loaded:
        folder = target / names[result.experiment_id]
        try:
            files, why = _bundle_bytes(layout, result, report.problems)
            status: Status = "written" if write_bundle(folder, files) else "unchanged"
            outcome = BundleOutcome(result.experiment_id, status, folder, why)
        except LedgerError as exc:
            report.problems.append(str(exc))
            outcome = BundleOutcome(result.experiment_id, "failed", folder, str(exc))
        _record(report, outcome, progress)
    report.outcomes.sort(key=lambda o: o.experiment_id)
    with contextlib.suppress(OSError):
        fsync_dir(target)
    return report


def _record(
    report: BundleExport, outcome: BundleOutcome, progress: Callable[[BundleOutcome], None] | None
) -> None:
    report.outcomes.append(outcome)
    if outcome.status == "failed":
        logger.warning("%s: bundle not written: %s", outcome.experiment_id, outcome.detail)
    if progress is not None:
        progress(outcome)


__all__ = [
    "BUNDLE_DIR",
    "EXPORTS_DIR",
    "SOURCE_COLUMNS",
    "TIMESERIES_SUFFIX",
    "BundleExport",
    "BundleOutcome",
    "export_bundles",
    "lem_timeseries_bytes",
    "output_folder",
    "write_bundle",
]
