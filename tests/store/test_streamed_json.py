"""The streamed result file: the same bytes as ``result_to_json_bytes``, written in chunks.

``result_json_chunks`` dumps the model with a placeholder for each sample list and writes the
lists in their places, formatted as orjson indents a list; ``write_chunks_if_changed`` streams
the pieces into a temp file and compares the old file by size and SHA-256. These tests hold the
streamed bytes equal to today's whole-document dump (``orjson.dumps(model_dump(mode="json"),
OPT_INDENT_2)``) on simulated results of every shape (ITL lists, empty lists, partial results,
several processes, warm-up), on LLenergyMeasure's own file, and on random floats; and they check
the writer's file handling (unchanged file untouched, FIFO never opened, no temp file left).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import (
    ComputeMetrics,
    EnergyMetrics,
    ExperimentResult,
    InferenceMetrics,
    RawProcessResult,
    Timestamps,
)
from energy_ledger.models.samples import Samples
from energy_ledger.pipeline import aggregate_scan, process_experiment
from energy_ledger.simulate import simulate
from energy_ledger.store import exporters
from energy_ledger.store.atomic import write_chunks_if_changed
from energy_ledger.store.exporters import (
    result_json_chunks,
    result_to_json_bytes,
    write_result_json,
)
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.reader import scan_experiment

GPT2_FILE = "gpt2_pytorch_v2.0.json"
START = datetime(2026, 3, 13, 14, 21, 11, tzinfo=UTC)

CASES = {
    "itl, 3 processes": {"processes": 3, "requests": 40, "seed": 1},
    "no itl, 1 process": {"processes": 1, "requests": 60, "itl": False, "seed": 2},
    "no requests": {"processes": 2, "requests": 0, "seed": 3},
    "warm-up sweep": {"experiments": 2, "processes": 2, "requests": 20, "sweep": True, "seed": 4},
    "partial (a process died)": {"processes": 3, "requests": 30, "crash": 1, "seed": 5},
}


def today(result: ExperimentResult) -> bytes:
    """What the result file held before streaming: the whole dump, indented by orjson."""
    return orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def streamed(result: ExperimentResult) -> bytes:
    """The streamed pieces, joined."""
    return b"".join(result_json_chunks(result))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExperimentResult]:
    """One simulated result per case (the last experiment of each), aggregated as replay does."""
    out = {}
    for name, options in CASES.items():
        root = tmp_path_factory.mktemp("streamed")
        truths = simulate(root, **options)
        scan = scan_experiment(root / "raw" / truths[-1].experiment_id)
        out[name] = aggregate_scan(scan, partial=not scan.report.is_complete)
    return out


def _raw(
    index: int, latencies: list[float], ttft: list[float], itl: list[float]
) -> RawProcessResult:
    return RawProcessResult(
        experiment_id="exp",
        process_index=index,
        gpu_id=index,
        config_name="cfg",
        model_name="m",
        timestamps=Timestamps(start=START, end=START, duration_sec=0.0),
        inference_metrics=InferenceMetrics(
            total_tokens=0,
            input_tokens=0,
            output_tokens=0,
            inference_time_sec=0.0,
            tokens_per_second=0.0,
            latency_per_token_ms=0.0,
            latency_measurements={
                "ttft_ms": Samples(ttft),
                "itl_full_ms": Samples(itl),
                "itl_trimmed_ms": Samples(itl[1:-1]),
                "request_count": len(latencies),
            },
        ),
        energy_metrics=EnergyMetrics(total_energy_j=0.0, duration_sec=0.0),
        compute_metrics=ComputeMetrics(flops_total=0.0),
        per_request_latencies_ms=latencies,
        gpu_utilisation_samples=itl,
    )


class TestSameBytesAsToday:
    """The streamed file is byte for byte the whole-document dump."""

    @pytest.mark.parametrize("case", list(CASES))
    def test_simulated_results(self, results: dict[str, ExperimentResult], case: str) -> None:
        """Every simulated shape streams to exactly today's bytes."""
        result = results[case]
        assert streamed(result) == today(result) == result_to_json_bytes(result)

    @pytest.mark.parametrize("case", list(CASES))
    def test_indentation_is_orjsons_own(
        self, results: dict[str, ExperimentResult], case: str
    ) -> None:
        """Parsed and dumped again by orjson alone (plain lists), the bytes do not change."""
        data = streamed(results[case])
        assert orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2) + b"\n" == data

    def test_the_cases_cover_every_shape(self, results: dict[str, ExperimentResult]) -> None:
        """ITL lists, empty lists, several processes and a partial result are all exercised."""
        docs = {name: orjson.loads(streamed(r)) for name, r in results.items()}
        measured = docs["itl, 3 processes"]["process_results"]
        assert len(measured) == 3
        assert all(
            len(p["inference_metrics"]["latency_measurements"]["itl_full_ms"]) for p in measured
        )
        no_itl = docs["no itl, 1 process"]["process_results"][0]["inference_metrics"]
        assert no_itl["latency_measurements"]["itl_full_ms"] == []
        assert docs["no requests"]["process_results"][0]["per_request_latencies_ms"] == []
        assert docs["partial (a process died)"]["aggregation"]["partial"] is True
        assert docs["warm-up sweep"]["warmup_result"] is not None

    @pytest.mark.parametrize("chunk", [1, 2, 3, 7])
    def test_chunk_boundaries_do_not_show(
        self, results: dict[str, ExperimentResult], chunk: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """However the lists are cut into chunks, the bytes are the same."""
        monkeypatch.setattr(exporters, "SAMPLES_PER_CHUNK", chunk)
        result = results["itl, 3 processes"]
        assert streamed(result) == today(result)

    def test_llenergymeasure_file(self, compat_dir: Path) -> None:
        """LLenergyMeasure's own result (lists as loaded from JSON) streams to the same bytes."""
        result = ExperimentResult.model_validate_json((compat_dir / GPT2_FILE).read_bytes())
        assert streamed(result) == today(result)

    def test_a_rebuilt_result_streams_alike(self, results: dict[str, ExperimentResult]) -> None:
        """A result aggregated again from its own process results gives the same bytes."""
        result = results["itl, 3 processes"]
        again = aggregate_results(result.process_results, result.experiment_id)
        assert streamed(again) == today(again)

    def test_strings_like_placeholders_are_kept(self) -> None:
        """A string that looks like a placeholder is an ordinary string in the file."""
        raw = _raw(0, [1.0, 2.0], [0.5], [0.1, 0.2, 0.3])
        lookalike = raw.model_copy(update={"config_name": "energy-ledger-samples-0"})
        result = aggregate_results([lookalike], "exp")
        data = streamed(result)
        assert data == today(result)
        assert b'"config_name": "energy-ledger-samples-0"' in data

    @settings(max_examples=60, deadline=None)
    @given(
        lists=st.lists(
            st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=12),
            min_size=3,
            max_size=9,
        )
    )
    def test_random_floats(self, lists: list[list[float]]) -> None:
        """Any finite floats (subnormal, huge, negative zero, integral) come out as orjson's."""
        raws = [
            _raw(i, lists[i % len(lists)], lists[(i + 1) % len(lists)], lists[(i + 2) % len(lists)])
            for i in range(len(lists) // 3)
        ]
        result = ExperimentResult(
            experiment_id="exp",
            measurement_config_hash="",
            measurement_methodology="total",
            total_tokens=0,
            total_energy_j=0.0,
            total_inference_time_sec=0.0,
            avg_tokens_per_second=0.0,
            avg_energy_per_token_j=0.0,
            total_flops=0.0,
            start_time=START,
            end_time=START,
            process_results=raws,
        )
        assert streamed(result) == today(result)


class TestWriteResultJson:
    """``write_result_json`` writes the streamed bytes, and only when they change."""

    def test_writes_then_leaves_an_unchanged_file_alone(
        self, results: dict[str, ExperimentResult], tmp_path: Path
    ) -> None:
        """First call writes today's bytes; the second returns False and touches nothing."""
        result = results["itl, 3 processes"]
        path = tmp_path / "r.json"
        assert write_result_json(path, result) is True
        assert path.read_bytes() == today(result)
        before = os.stat(path)
        assert write_result_json(path, result) is False
        after = os.stat(path)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    @pytest.mark.parametrize("old", [b"", b"{}\n", None], ids=["empty", "shorter", "same size"])
    def test_other_content_is_replaced(
        self, results: dict[str, ExperimentResult], tmp_path: Path, old: bytes | None
    ) -> None:
        """Empty, shorter or same-sized but different content is replaced by the new bytes."""
        result = results["no itl, 1 process"]
        new = today(result)
        path = tmp_path / "r.json"
        path.write_bytes(new[:-2] + b"X\n" if old is None else old)
        assert write_result_json(path, result) is True
        assert path.read_bytes() == new
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    def test_pipeline_writes_the_streamed_bytes(self, tmp_path: Path) -> None:
        """``process_experiment`` leaves exactly today's bytes in ``aggregated/<id>.json``."""
        truths = simulate(tmp_path, processes=2, requests=25, seed=9)
        layout = ResultsLayout.at(tmp_path)
        experiment_id = truths[0].experiment_id
        assert process_experiment(layout, experiment_id).action == "written"
        written = layout.result_path(experiment_id).read_bytes()
        # The time series file, when pyarrow is installed, is named by the pipeline itself.
        timeseries = orjson.loads(written)["timeseries"]
        scan = scan_experiment(tmp_path / "raw" / experiment_id)
        expected = aggregate_scan(scan).model_copy(update={"timeseries": timeseries})
        assert written == today(expected)


class TestWriteChunksIfChanged:
    """The streaming atomic write: temp file, SHA-256 comparison, rename."""

    def test_chunks_are_joined(self, tmp_path: Path) -> None:
        """The file holds the chunks' bytes in order."""
        path = tmp_path / "f"
        assert write_chunks_if_changed(path, [b"ab", b"", b"cd"]) is True
        assert path.read_bytes() == b"abcd"
        assert write_chunks_if_changed(path, iter([b"a", b"bcd"])) is False

    def test_a_fifo_is_replaced_without_being_opened(self, tmp_path: Path) -> None:
        """A FIFO at the path is never read (it would block); it is replaced by the file."""
        path = tmp_path / "f"
        os.mkfifo(path)
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(write_chunks_if_changed(path, [b"data"])), daemon=True
        )
        thread.start()
        thread.join(5.0)
        if thread.is_alive():  # unblock it before failing
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        assert outcome == [True]
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert path.read_bytes() == b"data"

    def test_an_error_while_streaming_leaves_the_old_file(self, tmp_path: Path) -> None:
        """A producer that fails midway leaves the old file as it was, and no temp file."""
        path = tmp_path / "f"
        path.write_bytes(b"old")

        def failing() -> Iterator[bytes]:
            yield b"new"
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            write_chunks_if_changed(path, failing())
        assert path.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["f"]

    def test_an_unwritable_folder_is_a_ledger_error(self, tmp_path: Path) -> None:
        """An OS error becomes a ``LedgerError`` naming the file."""
        blocker = tmp_path / "not-a-folder"
        blocker.write_bytes(b"")
        with pytest.raises(LedgerError, match="cannot write"):
            write_chunks_if_changed(blocker / "f", [b"x"])

    def test_a_big_old_file_is_compared_by_hash(self, tmp_path: Path) -> None:
        """A file larger than one read chunk is compared in chunks (equal: not rewritten)."""
        data = hashlib.sha256(b"seed").digest() * 100_000  # 3.2 MB, several read chunks
        path = tmp_path / "f"
        path.write_bytes(data)
        assert write_chunks_if_changed(path, [data[:1000], data[1000:]]) is False
        changed = data[:-1] + b"!"
        assert write_chunks_if_changed(path, [changed]) is True
        assert path.read_bytes() == changed
