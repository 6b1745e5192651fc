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
``ZSTD_LEVEL``, format 2.6, data page v1, dictionaries for the few columns that repeat,
statistics, no page index or checksums), row groups are exactly ``BUFFER_ROWS`` rows (the last
one fewer) wherever the replay's batches fall, and Parquet stores no timestamp. The footer's
``created_by`` names the pyarrow version (``parquet-cpp-arrow version 26.0.1``): constant for
one pyarrow version, so the bytes are stable across runs and machines with the same pyarrow,
and may change when pyarrow is upgraded. The key-value metadata holds ``experiment_id`` and
``energy_ledger_version`` (and pyarrow's own ``ARROW:schema``).

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
import logging
import math
import os
import tempfile
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from energy_ledger._version import __version__
from energy_ledger.core.events import Event, Request, UnknownEvent, WindowEnded, WindowStarted
from energy_ledger.core.replay import Observer
from energy_ledger.core.resample import READING_COLUMNS, GpuSeries, SecondBins, combine_by_gpu
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import FILE_MODE, fsync_dir, write_if_changed
from energy_ledger.store.files import open_regular
from energy_ledger.store.layout import ResultsLayout, check_experiment_id
from energy_ledger.store.parquet import arrow, write_options
from energy_ledger.store.reader import ExperimentScan, scan_experiment

logger = logging.getLogger(__name__)

TIMESERIES_SUFFIX = ".timeseries.parquet"
REQUESTS_SUFFIX = ".requests.parquet"
BUFFER_ROWS = 65_536
"""Rows per row group (requests are buffered this many at a time; 65,536 rows is about 2 MB)."""
ZSTD_LEVEL = 3
"""zstd's default level: most of the ratio of higher levels at a fraction of the time."""
COMPARE_CHUNK_BYTES = 1 << 20


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


REQUEST_COLUMNS = (
    ("process_index", "int32"),
    ("t", "float64"),
    ("latency_ms", "float64"),
    ("ttft_ms", "float64"),
    ("input_tokens", "int64"),
    ("output_tokens", "int64"),
    ("in_window", "bool_"),
)
"""The request table's columns and their Arrow types, in file order."""
TIMESERIES_COLUMNS = (
    ("gpu", "string"),
    ("hostname", "string"),
    ("gpu_id", "int32"),
    ("t_sec", "int64"),
    ("in_window", "bool_"),
    *((name, "float64") for name in READING_COLUMNS),
    ("throttle_reasons", "int64"),
    ("samples", "int32"),
    ("requests", "int32"),
    ("output_tokens_per_sec", "float64"),
)
"""The time series' columns and their Arrow types, in file order."""


def _schema(columns: Sequence[tuple[str, str]], experiment_id: str) -> Any:
    """A ``pyarrow.Schema`` of ``columns``, with the file's key-value metadata."""
    pa, _ = arrow()
    metadata = {"experiment_id": experiment_id, "energy_ledger_version": __version__}
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in columns], metadata=metadata)


def _parquet_writer(where: Any, schema: Any, dictionary: list[str]) -> Any:
    """A ``ParquetWriter`` with every option that shapes the bytes fixed.

    Dictionary encoding only for ``dictionary``, the columns of few distinct values: on
    measured floats (nearly all distinct) it made the files larger and cost memory.
    """
    _, pq = arrow()
    return pq.ParquetWriter(
        where,
        schema,
        use_dictionary=dictionary,
        write_page_index=False,
        write_page_checksum=False,
        **write_options(ZSTD_LEVEL),
    )


Numbers = np.ndarray[Any, Any]
_NUMPY_TYPES = {"int32": np.int32, "int64": np.int64, "double": np.float64}
"""The numpy type of each Arrow type a numeric column has (by the Arrow type's name)."""


def _column(kind: Any, values: Numbers, nulls: Numbers | None = None) -> Any:
    """An Arrow array over a numpy array's bytes, null where ``nulls`` is true.

    Built from buffers rather than with ``pyarrow.array``, which imports pandas when it is
    installed (some 50 MB of memory, in a replay that has a memory budget).
    """
    pa, _ = arrow()
    validity, null_count = None, 0
    if nulls is not None and nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
        null_count = int(nulls.sum())
    data = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[str(kind)])
    return pa.Array.from_buffers(kind, len(data), [validity, pa.py_buffer(data)], null_count)


def _floats(values: Numbers) -> Any:
    """A float64 column, null where a value is NaN (a reading or TTFT that was not logged)."""
    pa, _ = arrow()
    return _column(pa.float64(), values, np.isnan(values))


def _bools(values: Numbers) -> Any:
    pa, _ = arrow()
    bits = np.packbits(np.asarray(values, dtype=np.bool_), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _repeated(text: str | None, n: int) -> Any:
    """A string column holding ``text`` (null for ``None``) ``n`` times."""
    pa, _ = arrow()
    data = (text or "").encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    validity = None if text is not None else pa.py_buffer(np.zeros((n + 7) // 8, np.uint8))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(data * n)]
    return pa.Array.from_buffers(pa.string(), n, buffers, 0 if text is not None else n)


class _RequestSink:
    """Request rows, ``BUFFER_ROWS`` at a time, streamed as row groups into a temp file."""

    def __init__(
        self, path: Path, experiment_id: str, make_folder: Callable[[], Path] | None = None
    ) -> None:
        self.path = path
        self.experiment_id = experiment_id
        self._make_folder = make_folder
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

    def add(self, index: int, requests: Sequence[Request], inside: bool) -> None:
        """Buffer the rows of some of process ``index``'s requests, in log order.

        Args:
            index: the process.
            requests: its next requests.
            inside: whether they were all logged inside the window.
        """
        if requests:
            self.extend(
                index,
                [r.t for r in requests],
                [r.latency_ms for r in requests],
                [math.nan if r.ttft_ms is None else r.ttft_ms for r in requests],
                [r.input_tokens for r in requests],
                [r.output_tokens for r in requests],
                array("b", [inside]) * len(requests),
            )

    def extend(
        self,
        index: int,
        t: Sequence[float],
        latency_ms: Sequence[float],
        ttft_ms: Sequence[float],
        input_tokens: Sequence[int],
        output_tokens: Sequence[int],
        inside: Sequence[bool] | array[int],
    ) -> None:
        """Buffer rows of process ``index`` given as columns (TTFT NaN where not logged).

        Every full ``BUFFER_ROWS`` is written out as one row group, wherever the batches of
        the replay fall, so the file's row groups depend on the rows only.
        """
        if index != self._last_index:
            if index < self._last_index or index in self.rows_of:
                # Row order is by process, then log order: the logs must be fed one by one.
                raise LedgerError(f"request rows of process {index} came out of process order")
            self._last_index = index
        n = len(t)
        self.rows_of[index] = self.rows_of.get(index, 0) + n
        self._index.extend(array("i", [index]) * n)
        # Each column through a new array: ``array.extend`` copies another array's bytes at
        # once but takes a list item by item.
        self._t.extend(array("d", t))
        self._latency_ms.extend(array("d", latency_ms))
        self._ttft_ms.extend(array("d", ttft_ms))
        self._input_tokens.extend(array("q", input_tokens))
        self._output_tokens.extend(array("q", output_tokens))
        self._in_window.extend(inside if isinstance(inside, array) else array("b", inside))
        while len(self._t) >= BUFFER_ROWS:
            self.flush(BUFFER_ROWS)

    def _open(self) -> Any:
        if self._writer is None:
            if self._make_folder is not None:
                self._make_folder()
            fd, self.tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
            )
            self._fh = os.fdopen(fd, "wb")
            os.fchmod(self._fh.fileno(), FILE_MODE)
            self._writer = _parquet_writer(
                self._fh, _schema(REQUEST_COLUMNS, self.experiment_id), ["process_index"]
            )
        return self._writer

    def flush(self, rows: int | None = None) -> None:
        """Write the first ``rows`` buffered rows (all by default) as one row group.

        An I/O error becomes a ``LedgerError``: this runs inside the replay, where an
        ``OSError`` would be taken for a log that cannot be read.
        """
        try:
            self._write_rows(len(self._t) if rows is None else rows)
        except OSError as exc:
            raise LedgerError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _write_rows(self, n: int) -> None:
        writer = self._open()
        if not n:
            return
        pa, _ = arrow()
        columns = [
            _column(pa.int32(), np.frombuffer(self._index, dtype=np.int32)[:n]),
            _column(pa.float64(), np.frombuffer(self._t)[:n]),
            _column(pa.float64(), np.frombuffer(self._latency_ms)[:n]),
            _floats(np.frombuffer(self._ttft_ms)[:n]),
            _column(pa.int64(), np.frombuffer(self._input_tokens, dtype=np.int64)[:n]),
            _column(pa.int64(), np.frombuffer(self._output_tokens, dtype=np.int64)[:n]),
            _bools(np.frombuffer(self._in_window, dtype=np.int8)[:n]),
        ]
        writer.write_batch(pa.record_batch(columns, schema=writer.schema))
        # New arrays for the rows left: the written ones are still viewed by numpy and Arrow,
        # and an array that exports its buffer cannot grow.
        self._index, self._t = self._index[n:], self._t[n:]
        self._latency_ms, self._ttft_ms = self._latency_ms[n:], self._ttft_ms[n:]
        self._input_tokens, self._output_tokens = self._input_tokens[n:], self._output_tokens[n:]
        self._in_window = self._in_window[n:]

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
        if _EDGES.isdisjoint(map(type, events)):
            requests = [e for e in events if isinstance(e, Request)]
            self.sink.add(self.index, requests, self.started and not self.ended)
            return
        # A batch holding an edge of the window (the replay folds those one line at a time).
        for event in events:
            if isinstance(event, Request):
                self.sink.add(self.index, [event], self.started and not self.ended)
            elif isinstance(event, WindowStarted):
                self.started = True
            elif isinstance(event, WindowEnded):
                self.ended = True


_EDGES = frozenset({WindowStarted, WindowEnded})


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
        arrow()
        self.layout = layout
        self.experiment_id = experiment_id
        # aggregated/ is made only when a file must go there (the first row group of a long
        # run, or the write): a scan that finds the experiment incomplete leaves no trace.
        outputs = layout.outputs_dir()
        self.timeseries_path = layout.check_output_file(outputs / timeseries_name(experiment_id))
        self.requests_path = layout.check_output_file(outputs / requests_name(experiment_id))
        self._feeds: dict[int, _ProcessFeed] = {}
        self._sink = _RequestSink(
            self.requests_path, experiment_id, lambda: layout.outputs_dir(create=True)
        )

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
        if scan.experiment_id != self.experiment_id:
            raise LedgerError(f"a scan of {scan.experiment_id} given for {self.experiment_id}")
        if scan.legacy:
            return SeriesFiles(None, None, changed=False)
        replayed = {ev.index for ev in scan.evidence if ev.summary is not None}
        self.layout.outputs_dir(create=True)
        try:
            series = combine_by_gpu(  # each process's bins freed once it has its rows
                self._feeds.pop(index).bins.series(index)
                for index in sorted(self._feeds)
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
            # The bins are done with: free them before the result's JSON is written, the
            # pipeline's peak of memory (a long run's bins are tens of MB).
            self._feeds.clear()
        return SeriesFiles(self.timeseries_path, self.requests_path, changed)

    def _without_processes(self, tmp: str, dropped: set[int]) -> str:
        """A new temp file without the rows of ``dropped`` (rare: a log that did not replay).

        It is read back a row group at a time and written again through a fresh sink, so the
        rows kept, and how they fall into row groups, are as if ``dropped`` had never been fed.
        """
        _, pq = arrow()
        sink = _RequestSink(self.requests_path, self.experiment_id)
        try:
            with open(tmp, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=BUFFER_ROWS):
                    for row in batch.to_pylist():
                        if row["process_index"] not in dropped:
                            ttft = row["ttft_ms"]
                            sink.extend(
                                row["process_index"],
                                [row["t"]],
                                [row["latency_ms"]],
                                [math.nan if ttft is None else ttft],
                                [row["input_tokens"]],
                                [row["output_tokens"]],
                                [row["in_window"]],
                            )
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
    pa, _ = arrow()
    schema = _schema(TIMESERIES_COLUMNS, experiment_id)
    parts = [_gpu_table(pa, schema, s) for s in series if len(s.columns)]
    sink = pa.BufferOutputStream()
    writer = _parquet_writer(sink, schema, ["gpu", "hostname"])
    try:
        if parts:
            writer.write_table(pa.concat_tables(parts), row_group_size=BUFFER_ROWS)
    finally:
        writer.close()
    return bytes(sink.getvalue().to_pybytes())


def _gpu_table(pa: Any, schema: Any, s: GpuSeries) -> Any:
    c = s.columns
    n = len(c)
    gpu_id = np.full(n, s.gpu_id if s.gpu_id is not None else 0, dtype=np.int32)
    columns = [
        _repeated(s.gpu_key, n),
        _repeated(s.hostname, n),
        _column(pa.int32(), gpu_id, np.full(n, s.gpu_id is None)),
        _column(pa.int64(), c.t_sec),
        _bools(c.in_window),
        *(_floats(getattr(c, name)) for name in READING_COLUMNS),
        _column(pa.int64(), c.throttle_reasons),
        _column(pa.int32(), c.samples),
        _column(pa.int32(), c.requests),
        _column(pa.float64(), c.output_tokens_per_sec),
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
        # Light states: this read only feeds the recorder (the result has its own replay).
        scan = scan_experiment(
            directory, layout=layout, strict=strict, observe=recorder.observe, light=True
        )
        return recorder.write(scan)


__all__ = [
    "BUFFER_ROWS",
    "REQUESTS_SUFFIX",
    "REQUEST_COLUMNS",
    "TIMESERIES_COLUMNS",
    "TIMESERIES_SUFFIX",
    "ZSTD_LEVEL",
    "SeriesFiles",
    "SeriesRecorder",
    "requests_name",
    "timeseries_name",
    "write_series",
]
