"""Exporters: the JSON result and the CSV table's bytes, deterministic.

The same inputs give the same bytes: keys keep the schema's order, floats use the shortest
representation that round-trips (orjson and ``repr``), rows are sorted by experiment id.
``aggregated/results.csv`` itself is rebuilt from the JSON results by ``store.table``.

A result of a long run holds millions of samples (a latency per request), so its file is
streamed (``result_json_chunks``): the model is dumped with a placeholder string for each
sample list (``models.samples.SampleSink``), and each list is written in its place in chunks,
formatted exactly as orjson indents a list. The bytes are those of ``result_to_json_bytes``
(tests/store/test_streamed_json.py), without a Python float per sample or the whole file in
memory.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.models.samples import Samples, SampleSink
from energy_ledger.store.atomic import write_atomic, write_chunks_if_changed, write_if_changed

SAMPLES_PER_CHUNK = 8_192
"""Values formatted at a time when a sample list is streamed: about 260 KB of Python floats,
and orjson reserves some 250 bytes a value for its output before it knows the length."""


def result_to_json_bytes(result: ExperimentResult) -> bytes:
    """The result file's bytes: indented JSON in schema key order, ending with a newline."""
    return orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def result_json_chunks(result: ExperimentResult) -> Iterator[bytes]:
    """``result_to_json_bytes(result)`` in pieces, the sample lists formatted chunk by chunk.

    The placeholder holds a random token, so no string of the result can pass for one; every
    placeholder must come back exactly once, in order, or nothing is produced.
    """
    sink = SampleSink(f"energy-ledger-samples-{secrets.token_hex(16)}-")
    dumped = result.model_dump(mode="json", context=sink)
    skeleton = orjson.dumps(dumped, option=orjson.OPT_INDENT_2) + b"\n"
    del dumped
    pattern = re.compile(b'"' + re.escape(sink.prefix.encode()) + rb'(\d+)"')
    matches = list(pattern.finditer(skeleton))
    if [int(m.group(1)) for m in matches] != list(range(len(sink.collected))):
        raise LedgerError(f"{result.experiment_id}: the streamed result lost a sample list")
    start = 0
    for match, samples in zip(matches, sink.collected, strict=True):
        yield skeleton[start : match.start()]
        yield from _list_chunks(samples, _indent_of_line(skeleton, match.start()))
        start = match.end()
    yield skeleton[start:]


def _indent_of_line(text: bytes, position: int) -> int:
    """How many spaces start the line that ``position`` is on."""
    line_start = text.rfind(b"\n", 0, position) + 1
    line = text[line_start:position]
    return len(line) - len(line.lstrip(b" "))


def _list_chunks(samples: Samples, indent: int) -> Iterator[bytes]:
    """``samples`` as orjson's ``OPT_INDENT_2`` writes a list whose line is indented ``indent``.

    An empty list is ``[]``; otherwise ``[``, one value a line indented two spaces more, and
    ``]`` back at ``indent``. Each chunk is formatted by orjson itself (compact: values joined
    by bare commas, which no float contains), so every value reads as it always did.
    """
    if not samples:
        yield b"[]"
        return
    separator = b",\n" + b" " * (indent + 2)
    opening = b"[\n" + b" " * (indent + 2)
    for values in samples.lists(SAMPLES_PER_CHUNK):
        yield opening + orjson.dumps(values)[1:-1].replace(b",", separator)
        opening = separator
    yield b"\n" + b" " * indent + b"]"


def write_result_json(path: Path, result: ExperimentResult) -> bool:
    """Stream ``result`` into ``path`` atomically; False when the file already held its bytes."""
    return write_chunks_if_changed(path, result_json_chunks(result))


def export_result_json(result: ExperimentResult, path: str | os.PathLike[str]) -> bool:
    """Write ``result`` to ``path`` atomically; return False when the file already held it."""
    return write_result_json(Path(path), result)


def _agg(result: ExperimentResult, key: str) -> Any:
    extra = result.aggregation.model_extra if result.aggregation is not None else None
    return (extra or {}).get(key)


def _latency(result: ExperimentResult, name: str) -> float | None:
    stats = result.latency_stats
    return getattr(stats, name) if stats is not None else None


def _e2e(result: ExperimentResult, name: str) -> float | None:
    ext = result.extended_metrics
    return getattr(ext.request_latency, name) if ext is not None else None


def _distinct(values: Iterable[str]) -> str:
    """The distinct non-empty values, sorted, joined by ``;`` (one value: itself)."""
    return ";".join(sorted({v for v in values if v}))


Column = tuple[str, Callable[[ExperimentResult], Any]]

CSV_COLUMNS: tuple[Column, ...] = (
    ("experiment_id", lambda r: r.experiment_id),
    ("run_id", lambda r: _agg(r, "run_id")),
    ("measurement_config_hash", lambda r: r.measurement_config_hash),
    ("backend", lambda r: r.backend),
    ("measurement_methodology", lambda r: r.measurement_methodology),
    ("num_processes", lambda r: len(r.process_results)),
    ("num_gpus", lambda r: len(r.energy_per_device_j or [])),
    ("start_time", lambda r: r.start_time.isoformat()),
    ("end_time", lambda r: r.end_time.isoformat()),
    ("total_inference_time_sec", lambda r: r.total_inference_time_sec),
    ("input_tokens", lambda r: sum(p.inference_metrics.input_tokens for p in r.process_results)),
    ("output_tokens", lambda r: sum(p.inference_metrics.output_tokens for p in r.process_results)),
    ("total_tokens", lambda r: r.total_tokens),
    ("total_energy_j", lambda r: r.total_energy_j),
    ("energy_adjusted_j", lambda r: r.energy_adjusted_j),
    ("baseline_power_w", lambda r: r.baseline_power_w),
    ("avg_tokens_per_second", lambda r: r.avg_tokens_per_second),
    ("avg_energy_per_token_j", lambda r: r.avg_energy_per_token_j),
    ("total_flops", lambda r: r.total_flops),
    ("ttft_mean_ms", lambda r: _latency(r, "ttft_mean_ms")),
    ("ttft_p95_ms", lambda r: _latency(r, "ttft_p95_ms")),
    ("ttft_p99_ms", lambda r: _latency(r, "ttft_p99_ms")),
    ("itl_mean_ms", lambda r: _latency(r, "itl_mean_ms")),
    ("itl_p95_ms", lambda r: _latency(r, "itl_p95_ms")),
    ("e2e_latency_mean_ms", lambda r: _e2e(r, "e2e_latency_mean_ms")),
    ("e2e_latency_p95_ms", lambda r: _e2e(r, "e2e_latency_p95_ms")),
    ("e2e_latency_p99_ms", lambda r: _e2e(r, "e2e_latency_p99_ms")),
    ("throttle_detected", lambda r: bool(r.thermal_throttle and r.thermal_throttle.detected)),
    (
        "max_temperature_c",
        lambda r: r.thermal_throttle.max_temperature_c if r.thermal_throttle else None,
    ),
    ("warnings", lambda r: len(r.measurement_warnings)),
    ("partial", lambda r: _agg(r, "partial") is True),
    # Added in 0.2 (at the end, so that existing columns keep their places):
    ("model_name", lambda r: _distinct(p.model_name for p in r.process_results)),
    ("config_name", lambda r: _distinct(p.config_name for p in r.process_results)),
    ("gpu_name", lambda r: _distinct(p.gpu_name for p in r.process_results)),
    ("ttft_p50_ms", lambda r: _latency(r, "ttft_median_ms")),
    ("itl_p50_ms", lambda r: _latency(r, "itl_median_ms")),
    ("itl_p99_ms", lambda r: _latency(r, "itl_p99_ms")),
    ("e2e_latency_p50_ms", lambda r: _e2e(r, "e2e_latency_median_ms")),
    ("warnings_text", lambda r: WARNING_SEPARATOR.join(r.measurement_warnings)),
)
"""The CSV's columns, in order; one row per experiment. ``partial`` is ``true`` for a row taken
from ``<id>.partial.json`` (``recover``): its figures cover only what the crashed run logged.
``model_name``, ``config_name`` and ``gpu_name`` hold the processes' distinct values (joined by
``;`` when they differ); ``warnings_text`` every ``measurement_warnings`` entry, joined by
`` | ``."""

WARNING_SEPARATOR = " | "
"""Between two warnings in ``warnings_text`` (a warning never holds it)."""

CSV_HEADER: tuple[str, ...] = tuple(name for name, _ in CSV_COLUMNS)
"""The header row of this version's CSV."""

PREVIOUS_HEADERS: tuple[tuple[str, ...], ...] = (CSV_HEADER[:30], CSV_HEADER[:31])
"""Headers that earlier versions of energy-ledger wrote (before ``partial``; before the 0.2
columns): such a file is ours, and is rebuilt in place when the JSON results reproduce every row
it holds (in the columns it has)."""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return ";".join(map(str, value))
    return str(value)


def csv_row(result: ExperimentResult) -> list[str]:
    """The CSV cells of one result, in ``CSV_COLUMNS`` order."""
    return [_cell(get(result)) for _, get in CSV_COLUMNS]


def render_csv(rows: Iterable[Sequence[str]]) -> bytes:
    """The header and ``rows`` (already in their order), as the CSV file's bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def csv_bytes(results: Sequence[ExperimentResult]) -> bytes:
    """The CSV table's bytes: a header and one row per result, sorted by experiment id."""
    rows = {result.experiment_id: csv_row(result) for result in results}
    return render_csv(rows[key] for key in sorted(rows))


def export_aggregated_to_csv(
    results: Sequence[ExperimentResult], path: str | os.PathLike[str]
) -> bool:
    """Write one CSV row per experiment to ``path`` atomically; False when already up to date.

    This writes exactly the results given, anywhere; ``replay`` and the daemon keep
    ``aggregated/results.csv`` in step with the JSON results through ``store.table`` instead.
    """
    return write_if_changed(Path(path), csv_bytes(results))


__all__ = [
    "CSV_COLUMNS",
    "CSV_HEADER",
    "PREVIOUS_HEADERS",
    "csv_bytes",
    "csv_row",
    "export_aggregated_to_csv",
    "export_result_json",
    "render_csv",
    "result_json_chunks",
    "result_to_json_bytes",
    "write_atomic",
    "write_result_json",
]
