"""Exporters: the JSON result and the CSV table, deterministic and written atomically.

The same inputs give the same bytes: keys keep the schema's order, floats use the shortest
representation that round-trips (orjson and ``repr``), rows are sorted by experiment id.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.models import ExperimentResult
from energy_ledger.store.atomic import write_atomic, write_if_changed

logger = logging.getLogger(__name__)


def result_to_json_bytes(result: ExperimentResult) -> bytes:
    """The result file's bytes: indented JSON in schema key order, ending with a newline."""
    return orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def export_result_json(result: ExperimentResult, path: str | os.PathLike[str]) -> bool:
    """Write ``result`` to ``path`` atomically; return False when the file already held it."""
    return write_if_changed(Path(path), result_to_json_bytes(result))


def _agg(result: ExperimentResult, key: str) -> Any:
    extra = result.aggregation.model_extra if result.aggregation is not None else None
    return (extra or {}).get(key)


def _latency(result: ExperimentResult, name: str) -> float | None:
    stats = result.latency_stats
    return getattr(stats, name) if stats is not None else None


def _e2e(result: ExperimentResult, name: str) -> float | None:
    ext = result.extended_metrics
    return getattr(ext.request_latency, name) if ext is not None else None


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
)
"""The CSV's columns, in order; one row per experiment."""


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


def _row(result: ExperimentResult) -> list[str]:
    return [_cell(get(result)) for _, get in CSV_COLUMNS]


def _render(rows: dict[str, list[str]]) -> bytes:
    """The header and ``rows`` (keyed by experiment id), sorted by experiment id."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in CSV_COLUMNS])
    for key in sorted(rows):
        writer.writerow(rows[key])
    return buffer.getvalue().encode()


def csv_bytes(results: Sequence[ExperimentResult]) -> bytes:
    """The CSV table's bytes: a header and one row per result, sorted by experiment id."""
    return _render({result.experiment_id: _row(result) for result in results})


def _parse_rows(data: bytes) -> dict[str, list[str]] | None:
    """Rows of an existing CSV keyed by experiment id; ``None`` when its header differs."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8", errors="replace"))))
    if not rows or rows[0] != [name for name, _ in CSV_COLUMNS]:
        return None
    return {row[0]: row for row in rows[1:] if row}


def upsert_csv(results: Sequence[ExperimentResult], path: str | os.PathLike[str]) -> bool:
    """Insert or replace the rows of ``results`` in the CSV at ``path``, keeping other rows.

    The table stays sorted by experiment id, so the bytes depend only on the set of rows. A file
    whose header is not this version's is rebuilt from ``results`` alone (and a warning logged).

    Returns:
        True when the file was written, False when it already held these rows.
    """
    target = Path(path)
    try:
        existing = _parse_rows(target.read_bytes())
    except FileNotFoundError:
        existing = {}
    except OSError:
        existing = None
    if existing is None:
        logger.warning("%s has another header or cannot be read: rebuilding it", target)
        existing = {}
    for result in results:
        existing[result.experiment_id] = _row(result)
    return write_if_changed(target, _render(existing))


def export_aggregated_to_csv(
    results: Sequence[ExperimentResult], path: str | os.PathLike[str]
) -> bool:
    """Write one CSV row per experiment to ``path`` atomically; False when already up to date."""
    return write_if_changed(Path(path), csv_bytes(results))


__all__ = [
    "CSV_COLUMNS",
    "csv_bytes",
    "export_aggregated_to_csv",
    "export_result_json",
    "result_to_json_bytes",
    "upsert_csv",
    "write_atomic",
]
