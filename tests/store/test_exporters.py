"""Tests for energy_ledger.store.exporters: the CSV table and the JSON result, byte for byte.

The expected column list is written out here by hand: a change to it must be a deliberate edit
of this test (and of the users' notebooks that read the CSV), never an accident.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.models import ExperimentResult
from energy_ledger.simulate import simulate
from energy_ledger.store.exporters import (
    PREVIOUS_HEADERS,
    csv_bytes,
    export_aggregated_to_csv,
    export_result_json,
    result_to_json_bytes,
)
from energy_ledger.store.reader import scan_experiment
from tests.helpers import RESULT_SCHEMA, compat_schema

COLUMNS = [
    "experiment_id",
    "run_id",
    "measurement_config_hash",
    "backend",
    "measurement_methodology",
    "num_processes",
    "num_gpus",
    "start_time",
    "end_time",
    "total_inference_time_sec",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "total_energy_j",
    "energy_adjusted_j",
    "baseline_power_w",
    "avg_tokens_per_second",
    "avg_energy_per_token_j",
    "total_flops",
    "ttft_mean_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "itl_mean_ms",
    "itl_p95_ms",
    "e2e_latency_mean_ms",
    "e2e_latency_p95_ms",
    "e2e_latency_p99_ms",
    "throttle_detected",
    "max_temperature_c",
    "warnings",
    "partial",
    # 0.2: the columns an analyst filters on, appended.
    "model_name",
    "config_name",
    "gpu_name",
    "ttft_p50_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "e2e_latency_p50_ms",
    "warnings_text",
]

FLOAT_COLUMNS: dict[str, Callable[[ExperimentResult], Any]] = {
    "total_inference_time_sec": lambda r: r.total_inference_time_sec,
    "total_energy_j": lambda r: r.total_energy_j,
    "energy_adjusted_j": lambda r: r.energy_adjusted_j,
    "baseline_power_w": lambda r: r.baseline_power_w,
    "avg_tokens_per_second": lambda r: r.avg_tokens_per_second,
    "avg_energy_per_token_j": lambda r: r.avg_energy_per_token_j,
    "total_flops": lambda r: r.total_flops,
    "ttft_p95_ms": lambda r: r.latency_stats.ttft_p95_ms,
    "itl_mean_ms": lambda r: r.latency_stats.itl_mean_ms,
    "e2e_latency_p99_ms": lambda r: r.extended_metrics.request_latency.e2e_latency_p99_ms,
    "ttft_p50_ms": lambda r: r.latency_stats.ttft_median_ms,
    "itl_p50_ms": lambda r: r.latency_stats.itl_median_ms,
    "itl_p99_ms": lambda r: r.latency_stats.itl_p99_ms,
    "e2e_latency_p50_ms": lambda r: r.extended_metrics.request_latency.e2e_latency_median_ms,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[ExperimentResult]:
    """Three aggregated simulated experiments, in id order."""
    root = tmp_path_factory.mktemp("exporters")
    truths = simulate(root, experiments=3, processes=2, requests=8, seed=21)
    out = []
    for truth in truths:
        scan = scan_experiment(root / "raw" / truth.experiment_id)
        out.append(aggregate_results(scan.summaries, truth.experiment_id))
    return out


def rows(data: bytes) -> list[dict[str, str]]:
    """The CSV's data rows as dicts (header from the file)."""
    return list(csv.DictReader(io.StringIO(data.decode())))


class TestCsvLayout:
    """One header, one row per experiment, in a fixed order."""

    def test_header_is_the_documented_column_list(self, results: list[ExperimentResult]) -> None:
        """The header row is exactly ``COLUMNS``, in this order."""
        header = next(csv.reader(io.StringIO(csv_bytes(results).decode())))
        assert header == COLUMNS

    def test_header_of_an_empty_table(self) -> None:
        """No results still give the header (and nothing else)."""
        assert csv_bytes([]) == (",".join(COLUMNS) + "\n").encode()

    def test_one_row_per_experiment_sorted_by_id(self, results: list[ExperimentResult]) -> None:
        """Rows come out sorted by experiment id whatever the input order."""
        data = csv_bytes(results[::-1])
        assert [r["experiment_id"] for r in rows(data)] == ["sim-0000", "sim-0001", "sim-0002"]

    def test_counts_and_text_cells(self, results: list[ExperimentResult]) -> None:
        """Integer and text columns hold what the result says."""
        row = rows(csv_bytes(results[:1]))[0]
        result = results[0]
        assert row["run_id"] == "run-21-0"
        assert row["backend"] == "pytorch"
        assert row["num_processes"] == "2"
        assert row["num_gpus"] == "2"
        assert int(row["total_tokens"]) == result.total_tokens
        assert row["start_time"] == result.start_time.isoformat()


class TestCsvValues:
    """Cells read back to the same numbers; missing values are empty cells."""

    @pytest.mark.parametrize("column", sorted(FLOAT_COLUMNS))
    def test_float_round_trip(self, results: list[ExperimentResult], column: str) -> None:
        """``float(cell)`` equals the result's value exactly."""
        for result, row in zip(results, rows(csv_bytes(results)), strict=True):
            expected = FLOAT_COLUMNS[column](result)
            assert expected is not None
            assert float(row[column]) == expected

    def test_awkward_float_round_trips(self, results: list[ExperimentResult]) -> None:
        """A float with no short decimal form (0.1 + 0.2) survives exactly."""
        odd = results[0].model_copy(update={"total_energy_j": 0.1 + 0.2})
        (row,) = rows(csv_bytes([odd]))
        assert float(row["total_energy_j"]) == 0.1 + 0.2

    def test_none_is_an_empty_cell(self, results: list[ExperimentResult]) -> None:
        """``None`` is written as an empty cell, which pandas reads as NaN."""
        bare = results[0].model_copy(
            update={"energy_adjusted_j": None, "baseline_power_w": None, "latency_stats": None}
        )
        (row,) = rows(csv_bytes([bare]))
        for column in ("energy_adjusted_j", "baseline_power_w", "ttft_mean_ms", "itl_p95_ms"):
            assert row[column] == ""
        assert "None" not in csv_bytes([bare]).decode()

    def test_booleans_are_lowercase_words(self, results: list[ExperimentResult]) -> None:
        """``throttle_detected`` is ``true`` or ``false`` (pandas reads both as booleans)."""
        cells = {r["throttle_detected"] for r in rows(csv_bytes(results))}
        assert cells <= {"true", "false"}
        assert cells

    def test_partial_column(self, tmp_path: Path, results: list[ExperimentResult]) -> None:
        """``partial`` is ``false`` for a complete result and ``true`` for a partial one."""
        assert {r["partial"] for r in rows(csv_bytes(results))} == {"false"}
        simulate(tmp_path, processes=2, requests=8, seed=21, crash=1)
        scan = scan_experiment(tmp_path / "raw" / "sim-0000", strict=False)
        partial = aggregate_results(scan.summaries, "sim-0000", partial=True, partial_reason="x")
        (row,) = rows(csv_bytes([partial]))
        assert row["partial"] == "true"

    def test_previous_headers_are_prefixes_of_this_one(self) -> None:
        """The earlier headers are today's up to ``warnings`` (before ``partial``) and up to
        ``partial`` (before the 0.2 columns), so an older file is recognised."""
        upto = COLUMNS.index
        assert (
            tuple(COLUMNS[: upto("warnings") + 1]),
            tuple(COLUMNS[: upto("partial") + 1]),
        ) == PREVIOUS_HEADERS


class TestCsvFiles:
    """Files are deterministic and rows are upserted in place."""

    def test_same_results_same_bytes(self, results: list[ExperimentResult], tmp_path: Path) -> None:
        """Two exports of the same results, in any order, are byte-identical."""
        assert export_aggregated_to_csv(results, tmp_path / "a.csv") is True
        assert export_aggregated_to_csv(results[::-1], tmp_path / "b.csv") is True
        assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()

    def test_export_again_writes_nothing(
        self, results: list[ExperimentResult], tmp_path: Path
    ) -> None:
        """Exporting the same rows again reports no change and keeps the mtime."""
        path = tmp_path / "results.csv"
        export_aggregated_to_csv(results, path)
        mtime = path.stat().st_mtime_ns
        assert export_aggregated_to_csv(results, path) is False
        assert path.stat().st_mtime_ns == mtime


class TestJson:
    """The JSON result is deterministic and loads back to the same value."""

    def test_bytes_are_deterministic(self, results: list[ExperimentResult]) -> None:
        """Serialising twice, or a deep copy, gives the same bytes."""
        result = results[0]
        copy = ExperimentResult.model_validate_json(result_to_json_bytes(result))
        assert result_to_json_bytes(result) == result_to_json_bytes(result)
        assert result_to_json_bytes(copy) == result_to_json_bytes(result)

    def test_file_loads_back_equal(self, results: list[ExperimentResult], tmp_path: Path) -> None:
        """The exported file validates back into a result equal to the original."""
        path = tmp_path / "r.json"
        assert export_result_json(results[0], path) is True
        assert ExperimentResult.model_validate_json(path.read_bytes()) == results[0]
        assert export_result_json(results[0], path) is False

    def test_different_results_different_bytes(self, results: list[ExperimentResult]) -> None:
        """Two different experiments do not serialise alike (the checks above can fail)."""
        assert result_to_json_bytes(results[0]) != result_to_json_bytes(results[1])

    def test_top_level_key_order_follows_the_compat_schema(
        self, results: list[ExperimentResult], compat_dir: Path
    ) -> None:
        """Top-level keys appear in the order of LLenergyMeasure's schema."""
        schema = compat_schema(compat_dir, RESULT_SCHEMA)
        emitted = json.loads(result_to_json_bytes(results[0]))
        assert list(emitted) == list(schema["properties"])

    def test_ends_with_one_newline_and_is_indented(self, results: list[ExperimentResult]) -> None:
        """The file is indented JSON ending with exactly one newline."""
        data = result_to_json_bytes(results[0])
        assert data.endswith(b"}\n")
        assert not data.endswith(b"\n\n")
        assert data.startswith(b'{\n  "schema_version": "2.0"')


class TestAnalystColumns:
    """The 0.2 columns: what an analyst filters on, at the end of the row."""

    def test_names_and_warnings_text(self, results: list[ExperimentResult]) -> None:
        """Names are the processes' (one distinct value each here); the warnings' text is every
        ``measurement_warnings`` entry, in order, joined by `` | ``."""
        with_warning = results[0].model_copy(
            update={"measurement_warnings": ["first: a", "second: b"]}
        )
        table = list(csv.DictReader(io.StringIO(csv_bytes([with_warning, *results[1:]]).decode())))
        row = table[0]
        process = results[0].process_results[0]
        assert row["model_name"] == process.model_name
        assert row["config_name"] == process.config_name
        assert row["gpu_name"] == process.gpu_name
        assert row["warnings_text"] == "first: a | second: b"
        assert row["warnings"] == "2"
        assert table[1]["warnings_text"] == " | ".join(results[1].measurement_warnings)

    def test_distinct_names_are_joined(self, results: list[ExperimentResult]) -> None:
        """Processes that ran different models give both names, sorted, joined by ``;``."""
        first, second = results[0].process_results[:2]
        mixed = results[0].model_copy(
            update={
                "process_results": [
                    first.model_copy(update={"model_name": "zeta"}),
                    second.model_copy(update={"model_name": "alpha"}),
                ]
            }
        )
        row = next(csv.DictReader(io.StringIO(csv_bytes([mixed]).decode())))
        assert row["model_name"] == "alpha;zeta"
