"""An experiment's time series and request table as Parquet files in ``aggregated/`` (I/O shell).

Two files per experiment, derived from the logs like the result and rebuilt by a replay:

- ``aggregated/<id>.timeseries.parquet``: the 1 Hz series of each physical GPU
  (``core.resample``; its docstring gives the formulas), sorted by GPU key, then second.
- ``aggregated/<id>.requests.parquet``: one row per ``request`` event, by process index, then
  log order.

Both come out of one scan of the logs (``store.reader.scan_experiment``): each process's
replay observer feeds a ``SecondBins`` (memory per second of the run) and a request sink that
holds at most ``BUFFER_ROWS`` rows, writing each full buffer as one row group of a temp file
beside the output. So memory stays bounded however long the log is.

Deterministic: the same logs give the same bytes. The writer's options are fixed here (zstd at
``ZSTD_LEVEL``, format 2.6, data page v1, dictionaries, statistics, no page index or checksums),
row groups are exactly ``BUFFER_ROWS`` rows (the last one fewer), and Parquet stores no
timestamp. The footer's ``created_by`` names the pyarrow version
(``parquet-cpp-arrow version 26.0.1``): constant for one pyarrow version, so bytes are stable
across runs and machines with the same pyarrow, and may change when pyarrow is upgraded. The
key-value metadata holds ``experiment_id`` and ``energy_ledger_version`` (and pyarrow's own
``ARROW:schema``).

Missing values: a reading no sample of a second carried (NaN in ``core.resample``) and a TTFT
that was not logged are Parquet nulls, which pandas, polars and DuckDB skip in aggregates (a
NaN would poison a mean). Logged readings are always finite (the decoder refuses others), so a
null means only "not logged".

Safety: both outputs are checked (``ResultsLayout.check_output_file``: a regular file directly
in the real ``aggregated/``, never a symbolic link) before anything is read or written, and
written atomically (temp, fsync, rename, fsync the folder, as ``store.atomic``), and only when
their bytes change. A temp file is removed on any error.

pyarrow is imported on first use only (``parquet_available`` says whether it is installed), so
this module can be imported, and its absence reported, without it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import tempfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from energy_ledger._version import __version__
from energy_ledger.core.events import Event, Request, UnknownEvent, WindowEnded, WindowStarted
from energy_ledger.core.replay import Observer
from energy_ledger.core.resample import GpuSeries, SecondBins, combine_by_gpu
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import FILE_MODE, fsync_dir, write_if_changed
from energy_ledger.store.files import open_regular
from energy_ledger.store.layout import ResultsLayout, check_experiment_id
from energy_ledger.store.reader import ExperimentScan, scan_experiment

logger = logging.getLogger(__name__)

TIMESERIES_SUFFIX = ".timeseries.parquet"
REQUESTS_SUFFIX = ".requests.parquet"
BUFFER_ROWS = 65_536
"""Rows per row group (requests are buffered this many at a time; 65,536 rows is about 2 MB)."""
ZSTD_LEVEL = 3
"""zstd's default level: most of the ratio of higher levels at a fraction of the time."""
COMPARE_CHUNK_BYTES = 1 << 20
PARQUET_HINT = "writing Parquet needs pyarrow: pip install 'energy-ledger[parquet]'"


def parquet_available() -> bool:
    """True when pyarrow is installed (without importing it)."""
    return importlib.util.find_spec("pyarrow") is not None


def timeseries_name(experiment_id: str) -> str:
    """The time series' file name in ``aggregated/``."""
    return f"{check_experiment_id(experiment_id)}{TIMESERIES_SUFFIX}"


def requests_name(experiment_id: str) -> str:
    """The request table's file name in ``aggregated/``."""
    return f"{check_experiment_id(experiment_id)}{REQUESTS_SUFFIX}"


@dataclass(frozen=True, slots=True)
class SeriesFiles:
    """What ``write_series`` left in ``aggregated/``.

    Attributes:
        timeseries, requests: the two files; ``None`` for an experiment of LLenergyMeasure's
            older layout, which has no events to derive them from (nothing is written).
        changed: whether either file's bytes changed.
    """

    timeseries: Path | None
    requests: Path | None
    changed: bool


def _arrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a ``LedgerError`` saying what to install."""
    # import_module rather than an import statement: pyarrow ships no type information, and
    # this keeps mypy quiet whether or not a stub package or an override is installed.
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise LedgerError(PARQUET_HINT) from exc


def _metadata(experiment_id: str) -> dict[str, str]:
    return {"experiment_id": experiment_id, "energy_ledger_version": __version__}


def requests_schema(experiment_id: str) -> Any:
    """The request table's ``pyarrow.Schema`` (with the file's key-value metadata)."""
    pa, _ = _arrow()
    fields = [
        ("process_index", pa.int32()),
        ("t", pa.float64()),
        ("latency_ms", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("in_window", pa.bool_()),
    ]
    return pa.schema(fields, metadata=_metadata(experiment_id))


def timeseries_schema(experiment_id: str) -> Any:
    """The time series' ``pyarrow.Schema`` (with the file's key-value metadata)."""
    pa, _ = _arrow()
    fields = [
        ("gpu", pa.string()),
        ("hostname", pa.string()),
        ("gpu_id", pa.int32()),
        ("t_sec", pa.int64()),
        ("in_window", pa.bool_()),
        ("power_w", pa.float64()),
        ("energy_mj", pa.float64()),
        ("temperature_c", pa.float64()),
        ("sm_util_pct", pa.float64()),
        ("memory_used_mb", pa.float64()),
        ("throttle_reasons", pa.int64()),
        ("samples", pa.int32()),
        ("requests", pa.int32()),
        ("output_tokens_per_sec", pa.float64()),
    ]
    return pa.schema(fields, metadata=_metadata(experiment_id))


def _parquet_writer(where: Any, schema: Any) -> Any:
    """A ``ParquetWriter`` with every option that shapes the bytes fixed."""
    _, pq = _arrow()
    return pq.ParquetWriter(
        where,
        schema,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        version="2.6",
        data_page_version="1.0",
        use_dictionary=True,
        write_statistics=True,
        write_page_index=False,
        write_page_checksum=False,
        store_schema=True,
    )


def _floats(values: array[float], *, nulls: bool = False) -> Any:
    pa, _ = _arrow()
    data = np.frombuffer(values, dtype=np.float64) if len(values) else np.empty(0)
    return pa.array(data, type=pa.float64(), mask=np.isnan(data) if nulls else None)


class _RequestSink:
    """Request rows, ``BUFFER_ROWS`` at a time, streamed as row groups into a temp file."""

    def __init__(self, path: Path, experiment_id: str) -> None:
        self.path = path
        self.experiment_id = experiment_id
        self.tmp: str | None = None
        self.rows_of: dict[int, int] = {}
        self._fh: IO[bytes] | None = None
        self._writer: Any = None
        self._last_index = -1
        self._clear()

    def _clear(self) -> None:
        self._index: array[int] = array("i")
        self._t: array[float] = array("d")
        self._latency_ms: array[float] = array("d")
        self._ttft_ms: array[float] = array("d")
        self._input_tokens: array[int] = array("q")
        self._output_tokens: array[int] = array("q")
        self._in_window: array[int] = array("b")

    def add(
        self,
        index: int,
        t: float,
        latency_ms: float,
        ttft_ms: float | None,
        input_tokens: int,
        output_tokens: int,
        inside: bool,
    ) -> None:
        """Buffer one row; a full buffer is written out."""
        if index != self._last_index:
            if index < self._last_index or index in self.rows_of:
                # Row order is by process, then log order: the logs must be fed one by one.
                raise LedgerError(f"request rows of process {index} came out of process order")
            self._last_index = index
        self.rows_of[index] = self.rows_of.get(index, 0) + 1
        self._index.append(index)
        self._t.append(t)
        self._latency_ms.append(latency_ms)
        self._ttft_ms.append(np.nan if ttft_ms is None else ttft_ms)
        self._input_tokens.append(input_tokens)
        self._output_tokens.append(output_tokens)
        self._in_window.append(1 if inside else 0)
        if len(self._t) >= BUFFER_ROWS:
            self.flush()

    def _open(self) -> Any:
        if self._writer is None:
            fd, self.tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
            )
            self._fh = os.fdopen(fd, "wb")
            os.fchmod(self._fh.fileno(), FILE_MODE)
            self._writer = _parquet_writer(self._fh, requests_schema(self.experiment_id))
        return self._writer

    def flush(self) -> None:
        """Write the buffered rows as one row group (none: nothing).

        An I/O error becomes a ``LedgerError``: this runs inside the replay, where an
        ``OSError`` would be taken for a log that cannot be read.
        """
        try:
            self._write_buffer()
        except OSError as exc:
            raise LedgerError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _write_buffer(self) -> None:
        writer = self._open()
        if not self._t:
            return
        pa, _ = _arrow()
        columns = [
            pa.array(np.frombuffer(self._index, dtype=np.int32), type=pa.int32()),
            _floats(self._t),
            _floats(self._latency_ms),
            _floats(self._ttft_ms, nulls=True),
            pa.array(np.frombuffer(self._input_tokens, dtype=np.int64), type=pa.int64()),
            pa.array(np.frombuffer(self._output_tokens, dtype=np.int64), type=pa.int64()),
            pa.array(np.frombuffer(self._in_window, dtype=np.int8).astype(np.bool_)),
        ]
        writer.write_batch(pa.record_batch(columns, schema=writer.schema))
        self._clear()

    def finish(self) -> str:
        """Write what is left, close and fsync the temp file; its name."""
        self.flush()
        self._writer.close()
        self._writer = None
        fh, self._fh = self._fh, None
        assert fh is not None and self.tmp is not None
        with fh:
            fh.flush()
            os.fsync(fh.fileno())
        return self.tmp

    def discard(self) -> None:
        """Close and remove the temp file, if any (on an error, or once it has been used)."""
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
        self._writer = self._fh = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


class _ProcessFeed:
    """One process's observer: its ``SecondBins`` and its rows in the request sink."""

    __slots__ = ("bins", "ended", "index", "sink", "started")

    def __init__(self, index: int, sink: _RequestSink) -> None:
        self.index = index
        self.sink = sink
        self.bins = SecondBins()
        self.started = self.ended = False

    def __call__(self, events: Sequence[Event | UnknownEvent]) -> None:
        self.bins.feed(events)
        for event in events:
            if isinstance(event, Request):
                self.sink.add(
                    self.index,
                    event.t,
                    event.latency_ms,
                    event.ttft_ms,
                    event.input_tokens,
                    event.output_tokens,
                    self.started and not self.ended,
                )
            elif isinstance(event, WindowStarted):
                self.started = True
            elif isinstance(event, WindowEnded):
                self.ended = True


class SeriesRecorder:
    """Collects one experiment's series during a scan, then writes both files.

    For a caller that scans anyway (the pipeline), so that one replay gives the result and the
    series::

        with SeriesRecorder(layout, experiment_id) as recorder:
            scan = scan_experiment(directory, layout=layout, observe=recorder.observe)
            files = recorder.write(scan)

    The outputs are checked when it is made; its temp file is removed when the block ends,
    whatever happened. Logs must be replayed one after another (``scan_experiment`` does),
    so that request rows come out in process order.

    Raises:
        LedgerError: pyarrow is missing; ``aggregated/`` cannot be used (``UnsafePathError``:
            it, or an output, is a link or not a regular file).
    """

    def __init__(self, layout: ResultsLayout, experiment_id: str) -> None:
        _arrow()
        self.layout = layout
        self.experiment_id = experiment_id
        outputs = layout.outputs_dir(create=True)
        self.timeseries_path = layout.check_output_file(outputs / timeseries_name(experiment_id))
        self.requests_path = layout.check_output_file(outputs / requests_name(experiment_id))
        self._feeds: dict[int, _ProcessFeed] = {}
        self._sink = _RequestSink(self.requests_path, experiment_id)

    def observe(self, index: int) -> Observer:
        """The replay observer of process ``index`` (``scan_experiment``'s ``observe``)."""
        feed = self._feeds[index] = _ProcessFeed(index, self._sink)
        return feed

    def __enter__(self) -> SeriesRecorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sink.discard()

    def write(self, scan: ExperimentScan) -> SeriesFiles:
        """Write both files from what the scan fed (the processes whose logs replayed).

        A process whose log could not be replayed (no summary in the scan) is left out of both,
        as it is of the result, though its lines before the bad one were fed.

        Raises:
            LedgerError: a write failed (the old files are untouched, no temp file is left).
        """
        if scan.legacy:
            return SeriesFiles(None, None, changed=False)
        replayed = {ev.index for ev in scan.evidence if ev.summary is not None}
        try:
            series = combine_by_gpu(
                feed.bins.series(index)
                for index, feed in sorted(self._feeds.items())
                if index in replayed
            )
            table = _timeseries_bytes(series, self.experiment_id)
            tmp = self._sink.finish()
            dropped = {i for i, n in self._sink.rows_of.items() if n and i not in replayed}
            if dropped:
                tmp = self._without_processes(tmp, dropped)
            # Both files are ready before either is replaced.
            changed = write_if_changed(self.layout.check_output_file(self.timeseries_path), table)
            changed = self._replace_if_changed(tmp) or changed
        except OSError as exc:
            raise LedgerError(f"cannot write the series of {self.experiment_id}: {exc}") from exc
        finally:
            self._sink.discard()
        return SeriesFiles(self.timeseries_path, self.requests_path, changed)

    def _without_processes(self, tmp: str, dropped: set[int]) -> str:
        """A new temp file without the rows of ``dropped`` (rare: a log that did not replay).

        It is read back a row group at a time and written again through a fresh sink, so the
        rows kept, and how they fall into row groups, are as if ``dropped`` had never been fed.
        """
        _, pq = _arrow()
        sink = _RequestSink(self.requests_path, self.experiment_id)
        try:
            with open(tmp, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=BUFFER_ROWS):
                    for row in batch.to_pylist():
                        if row["process_index"] not in dropped:
                            sink.add(*row.values())  # the columns are in its argument order
            new = sink.finish()
        except BaseException:
            sink.discard()
            raise
        self._sink.discard()
        self._sink = sink
        return new

    def _replace_if_changed(self, tmp: str) -> bool:
        """Move the finished temp file into place unless the output already holds its bytes."""
        path = self.requests_path
        if _same_bytes(Path(tmp), path):
            return False
        os.replace(tmp, self.layout.check_output_file(path))
        self._sink.tmp = None
        fsync_dir(path.parent)
        return True


def _same_bytes(new: Path, old: Path) -> bool:
    """True when ``old`` is a regular file holding exactly ``new``'s bytes (read in chunks)."""
    try:
        with open(new, "rb") as a, open_regular(old) as b:
            if os.fstat(a.fileno()).st_size != os.fstat(b.fileno()).st_size:
                return False
            while True:
                chunk = a.read(COMPARE_CHUNK_BYTES)
                if chunk != b.read(COMPARE_CHUNK_BYTES):
                    return False
                if not chunk:
                    return True
    except OSError:  # missing, or not a regular file: replace it
        return False


def _timeseries_bytes(series: Sequence[GpuSeries], experiment_id: str) -> bytes:
    """The time series file's bytes: every GPU's rows, in the order given."""
    pa, _ = _arrow()
    schema = timeseries_schema(experiment_id)
    parts = [_gpu_table(pa, schema, s) for s in series if len(s.columns)]
    sink = pa.BufferOutputStream()
    writer = _parquet_writer(sink, schema)
    try:
        if parts:
            writer.write_table(pa.concat_tables(parts), row_group_size=BUFFER_ROWS)
    finally:
        writer.close()
    return bytes(sink.getvalue().to_pybytes())


def _gpu_table(pa: Any, schema: Any, s: GpuSeries) -> Any:
    c = s.columns
    n = len(c)

    def nullable(values: np.ndarray[Any, Any]) -> Any:
        return pa.array(values, type=pa.float64(), mask=np.isnan(values))

    columns = [
        pa.array([s.gpu_key] * n, type=pa.string()),
        pa.array([s.hostname] * n, type=pa.string()),
        pa.array([s.gpu_id] * n, type=pa.int32()),
        pa.array(c.t_sec, type=pa.int64()),
        pa.array(c.in_window, type=pa.bool_()),
        nullable(c.power_w),
        nullable(c.energy_mj),
        nullable(c.temperature_c),
        nullable(c.sm_util_pct),
        nullable(c.memory_used_mb),
        pa.array(c.throttle_reasons, type=pa.int64()),
        pa.array(c.samples.astype(np.int32), type=pa.int32()),
        pa.array(c.requests.astype(np.int32), type=pa.int32()),
        pa.array(c.output_tokens_per_sec, type=pa.float64()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_series(
    experiment_dir: Path, *, layout: ResultsLayout, strict: bool = True
) -> SeriesFiles:
    """Scan one experiment folder and write its time series and request table.

    Args:
        experiment_dir: ``<root>/raw/<experiment_id>``.
        layout: its results root.
        strict: reject corrupt lines (``True``) or skip them (``False``, as ``recover`` does).

    Raises:
        LedgerError: pyarrow is missing, the folder cannot be scanned, or an output is unsafe
            (``UnsafePathError``) or cannot be written; nothing is left half-written.
    """
    directory = Path(os.path.abspath(experiment_dir))
    with SeriesRecorder(layout, directory.name) as recorder:
        scan = scan_experiment(directory, layout=layout, strict=strict, observe=recorder.observe)
        return recorder.write(scan)


__all__ = [
    "BUFFER_ROWS",
    "REQUESTS_SUFFIX",
    "TIMESERIES_SUFFIX",
    "ZSTD_LEVEL",
    "SeriesFiles",
    "SeriesRecorder",
    "parquet_available",
    "requests_name",
    "requests_schema",
    "timeseries_name",
    "timeseries_schema",
    "write_series",
]
