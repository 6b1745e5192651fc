"""Tests for core.aggregation: late aggregation against ground truth and hand-made cases.

Expected figures come from the simulator's ground truth (computed from the values it generated,
not by the aggregator), from ``statistics`` in the standard library, or are worked out by hand in
the test. Logs are written with the real ``EventLogWriter`` and read back with the real scanner.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.process import ProcessSummary
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult, RawProcessResult
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import ExperimentTruth, simulate
from energy_ledger.store.reader import scan_experiment
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import RAW_PROCESS_SCHEMA, RESULT_SCHEMA, compat_schema

EXPERIMENT = "exp-agg"

Sample = tuple[float, float | None, float | None]
"""(t, power_w, energy_mj) of one sampler reading."""


def write_process(
    root: Path,
    index: int,
    *,
    world_size: int = 2,
    run_id: str = "run-1",
    gpu_uuid: str | None = None,
    hostname: str = "node-a",
    backend: str = "pytorch",
    gpu_is_mig: bool = False,
    window: tuple[float, float] = (10.0, 11.0),
    counter_mj: tuple[int, int] | None = (1_000_000, 1_100_000),
    baseline_w: float | None = None,
    samples: Sequence[Sample] = (),
    requests: Sequence[tuple[float, int, int]] = ((40.0, 10, 20),),
) -> None:
    """Write one finished process log (and its marker) through the real writer."""
    writer = EventLogWriter.open(root, EXPERIMENT, index)
    start_t, end_t = window
    writer.append(
        "process_started",
        t=start_t - 1.0,
        experiment_id=EXPERIMENT,
        run_id=run_id,
        process_index=index,
        world_size=world_size,
        gpu_id=index,
        gpu_uuid=gpu_uuid if gpu_uuid is not None else f"GPU-{index}",
        hostname=hostname,
        backend=backend,
        gpu_is_mig=gpu_is_mig,
    )
    if baseline_w is not None:
        writer.append("baseline", t=start_t - 0.5, power_w=baseline_w, duration_sec=5.0)
    writer.append("window_started", t=start_t, energy_mj=counter_mj[0] if counter_mj else None)
    for t, power_w, energy_mj in samples:
        writer.append("sample", t=t, power_w=power_w, energy_mj=energy_mj)
    for latency_ms, n_in, n_out in requests:
        writer.append(
            "request",
            t=end_t,
            latency_ms=latency_ms,
            input_tokens=n_in,
            output_tokens=n_out,
            ttft_ms=latency_ms / 4,
        )
    writer.append("window_ended", t=end_t, energy_mj=counter_mj[1] if counter_mj else None)
    writer.close()


def summaries(root: Path) -> list[ProcessSummary]:
    """The replayed processes of the experiment under ``root`` (which must be complete)."""
    scan = scan_experiment(root / "raw" / EXPERIMENT)
    assert scan.report.is_complete, scan.report.error_message
    return scan.summaries


def aggregate(root: Path) -> ExperimentResult:
    """Aggregate the experiment written under ``root``."""
    return aggregate_results(summaries(root), EXPERIMENT)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentTruth, dict[str, Any]]:
    """A simulated 4-process run, replayed once: its ground truth and the emitted JSON."""
    root = tmp_path_factory.mktemp("sim4")
    (truth,) = simulate(root, processes=4, requests=60, seed=7)
    outcomes = replay_root(root)
    assert [(o.experiment_id, o.action) for o in outcomes] == [(truth.experiment_id, "written")]
    emitted = json.loads((root / "aggregated" / f"{truth.experiment_id}.json").read_bytes())
    return truth, emitted


class TestGroundTruth:
    """A simulated 4-process run aggregates to exactly what the simulator wrote."""

    def test_total_tokens(self, simulated: tuple[ExperimentTruth, dict[str, Any]]) -> None:
        """``total_tokens`` is the sum of every input and output token written."""
        truth, emitted = simulated
        assert emitted["total_tokens"] == truth.total_tokens

    def test_total_energy_from_counters(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]]
    ) -> None:
        """``total_energy_j`` is the counter delta of every GPU, summed."""
        truth, emitted = simulated
        assert emitted["total_energy_j"] == truth.energy_j

    def test_wall_clock_span(self, simulated: tuple[ExperimentTruth, dict[str, Any]]) -> None:
        """``total_inference_time_sec`` is the latest window end minus the earliest start."""
        truth, emitted = simulated
        assert emitted["total_inference_time_sec"] == truth.span_sec

    def test_throughput(self, simulated: tuple[ExperimentTruth, dict[str, Any]]) -> None:
        """``avg_tokens_per_second`` is total tokens over the wall-clock span."""
        truth, emitted = simulated
        assert emitted["avg_tokens_per_second"] == truth.total_tokens / truth.span_sec

    def test_e2e_p95_of_concatenated_latencies(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]]
    ) -> None:
        """The e2e p95 is the linear-interpolation percentile of all latencies concatenated."""
        truth, emitted = simulated
        expected = statistics.quantiles(truth.latencies_ms, n=100, method="inclusive")[94]
        request_latency = emitted["extended_metrics"]["request_latency"]
        assert request_latency["e2e_latency_p95_ms"] == pytest.approx(expected, rel=1e-12)
        assert request_latency["e2e_latency_samples"] == len(truth.latencies_ms)

    def test_ttft_p95_of_concatenated_values(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]]
    ) -> None:
        """The TTFT p95 is computed once over every process's TTFT values."""
        truth, emitted = simulated
        ttft = [x for p in truth.processes for x in p.ttft_ms]
        expected = statistics.quantiles(ttft, n=100, method="inclusive")[94]
        assert emitted["latency_stats"]["ttft_p95_ms"] == pytest.approx(expected, rel=1e-12)
        assert emitted["latency_stats"]["ttft_samples"] == len(ttft)

    def test_every_process_embedded(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]]
    ) -> None:
        """``process_results`` holds one entry per process, in index order."""
        truth, emitted = simulated
        indices = [p["process_index"] for p in emitted["process_results"]]
        assert indices == [p.process_index for p in truth.processes] == [0, 1, 2, 3]


class TestCompatSchema:
    """Emitted files validate against LLenergyMeasure's published JSON Schemas."""

    def test_experiment_result_validates(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]], compat_dir: Path
    ) -> None:
        """The aggregated JSON is a valid schema-2.0 ExperimentResult."""
        _truth, emitted = simulated
        schema = compat_schema(compat_dir, RESULT_SCHEMA)
        jsonschema.Draft202012Validator(schema).validate(emitted)

    def test_each_process_result_validates(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]], compat_dir: Path
    ) -> None:
        """Every embedded process result is a valid schema-2.0 RawProcessResult."""
        _truth, emitted = simulated
        schema = compat_schema(compat_dir, RAW_PROCESS_SCHEMA)
        validator = jsonschema.Draft202012Validator(schema)
        assert len(emitted["process_results"]) == 4
        for process in emitted["process_results"]:
            validator.validate(process)

    def test_schema_rejects_a_broken_result(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]], compat_dir: Path
    ) -> None:
        """The schema check is not vacuous: an unknown top-level key fails it."""
        _truth, emitted = simulated
        schema = compat_schema(compat_dir, RESULT_SCHEMA)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(schema).validate({**emitted, "not_in_schema": 1})


class TestSharedGpu:
    """Energy is counted once per physical GPU (its UUID)."""

    @pytest.mark.parametrize(
        ("host_1", "uuid_1", "energy_j", "devices", "duplicate_warning"),
        [
            # One counter shared: (max end - min start) / 1000 = (1_600_000 - 1_000_000) / 1000.
            ("node-a", "GPU-shared", 600.0, [600.0], True),
            # A UUID names one physical GPU whatever the host says (containers on one node).
            ("node-b", "GPU-shared", 600.0, [600.0], True),
            # Different UUIDs on one host: 400 + 550.
            ("node-a", "GPU-other", 950.0, [400.0, 550.0], False),
        ],
    )
    def test_energy_per_physical_gpu(
        self,
        tmp_path: Path,
        host_1: str,
        uuid_1: str,
        energy_j: float,
        devices: list[float],
        duplicate_warning: bool,
    ) -> None:
        """Processes on one GPU share its counter; on distinct GPUs their energies add up."""
        write_process(tmp_path, 0, gpu_uuid="GPU-shared", counter_mj=(1_000_000, 1_400_000))
        write_process(
            tmp_path, 1, gpu_uuid=uuid_1, hostname=host_1, counter_mj=(1_050_000, 1_600_000)
        )
        result = aggregate(tmp_path)
        assert result.total_energy_j == energy_j
        assert result.energy_per_device_j == devices
        warned = any("share GPU GPU-shared" in w for w in result.measurement_warnings)
        assert warned is duplicate_warning

    def test_multi_gpu_filled_for_two_gpus(self, tmp_path: Path) -> None:
        """Two GPUs give ``multi_gpu`` with per-GPU energy and energy per output token."""
        write_process(tmp_path, 0, counter_mj=(1_000_000, 1_100_000), requests=[(40.0, 10, 20)])
        write_process(tmp_path, 1, counter_mj=(2_000_000, 2_060_000), requests=[(40.0, 5, 30)])
        result = aggregate(tmp_path)
        assert result.multi_gpu is not None
        assert result.multi_gpu.num_gpus == 2
        assert result.multi_gpu.energy_per_gpu_j == [100.0, 60.0]
        assert result.multi_gpu.energy_total_j == 160.0
        assert result.multi_gpu.energy_per_output_token_j == 160.0 / 50

    def test_no_multi_gpu_for_one_shared_gpu(self, tmp_path: Path) -> None:
        """Two processes on one GPU are one device: no ``multi_gpu`` block."""
        write_process(tmp_path, 0, gpu_uuid="GPU-x")
        write_process(tmp_path, 1, gpu_uuid="GPU-x")
        result = aggregate(tmp_path)
        assert result.multi_gpu is None
        assert result.energy_per_device_j == [100.0]


class TestBaseline:
    """Baseline-adjusted energy is computed per GPU, floored at zero, then summed."""

    def test_adjusted_energy_floored_per_gpu(self, tmp_path: Path) -> None:
        """GPU 0: 100 J - 50 W x 1 s = 50 J; GPU 1: 10 J - 50 J floors at 0; total 50 J."""
        write_process(tmp_path, 0, counter_mj=(1_000_000, 1_100_000), baseline_w=50.0)
        write_process(tmp_path, 1, counter_mj=(2_000_000, 2_010_000), baseline_w=50.0)
        result = aggregate(tmp_path)
        assert result.total_energy_j == 110.0
        assert result.energy_adjusted_j == 50.0
        assert result.baseline_power_w == 100.0
        assert result.energy_breakdown is not None
        assert result.energy_breakdown.raw_j == 110.0
        assert result.energy_breakdown.adjusted_j == 50.0
        assert result.energy_breakdown.baseline_power_w == 100.0

    def test_shared_gpu_uses_mean_baseline_over_its_span(self, tmp_path: Path) -> None:
        """One GPU, baselines 40 and 60 W (mean 50), span 10..12 s: 600 J - 100 J = 500 J."""
        write_process(
            tmp_path, 0, gpu_uuid="G", window=(10.0, 11.0), counter_mj=(0, 300_000), baseline_w=40.0
        )
        write_process(
            tmp_path,
            1,
            gpu_uuid="G",
            window=(11.0, 12.0),
            counter_mj=(300_000, 600_000),
            baseline_w=60.0,
        )
        result = aggregate(tmp_path)
        assert result.total_energy_j == 600.0
        assert result.energy_adjusted_j == 500.0
        assert result.baseline_power_w == 50.0

    def test_no_baseline_leaves_adjusted_empty(self, tmp_path: Path) -> None:
        """Without baseline events there is no adjusted energy."""
        write_process(tmp_path, 0)
        write_process(tmp_path, 1)
        result = aggregate(tmp_path)
        assert result.energy_adjusted_j is None
        assert result.baseline_power_w is None


class TestWarnings:
    """Mixed backends, non-overlapping windows and MIG give the warnings users know."""

    @pytest.mark.parametrize(
        ("process_1", "needle"),
        [
            ({"backend": "vllm"}, "Mixed backends in one experiment: pytorch, vllm"),
            ({"window": (20.0, 21.0)}, "Processes did not overlap in time"),
            ({"gpu_is_mig": True}, "MIG instances detected"),
        ],
    )
    def test_warning_given(self, tmp_path: Path, process_1: dict[str, Any], needle: str) -> None:
        """The odd second process triggers its warning."""
        write_process(tmp_path, 0)
        write_process(tmp_path, 1, **process_1)
        result = aggregate(tmp_path)
        assert any(needle in w for w in result.measurement_warnings)
        assert result.aggregation is not None
        assert any(needle in w for w in result.aggregation.warnings)

    @pytest.mark.parametrize(
        "needle", ["Mixed backends", "did not overlap", "MIG", "Duplicate GPU IDs"]
    )
    def test_warning_absent_for_a_clean_run(self, tmp_path: Path, needle: str) -> None:
        """Two overlapping pytorch processes on two full GPUs get none of these warnings."""
        write_process(tmp_path, 0)
        write_process(tmp_path, 1)
        result = aggregate(tmp_path)
        assert not any(needle in w for w in result.measurement_warnings)

    def test_gap_counts_in_the_span(self, tmp_path: Path) -> None:
        """Non-overlapping windows 10..11 and 20..21 give a span of 11 s, not 2 s."""
        write_process(tmp_path, 0, window=(10.0, 11.0))
        write_process(tmp_path, 1, window=(20.0, 21.0))
        result = aggregate(tmp_path)
        assert result.total_inference_time_sec == 11.0
        assert result.aggregation is not None
        assert result.aggregation.temporal_overlap_verified is False


class TestEnergyFallbacks:
    """Without usable counter readings the power samples are integrated (trapezoid)."""

    # Trapezoid by hand: 0.25 s x (100 + 200) / 2 + 0.5 s x (200 + 300) / 2 = 37.5 + 125 = 162.5,
    # plus the first reading held from the window's start at 10.0 to 10.25: 0.25 s x 100 W = 25.
    TRAPEZOID_J = 162.5 + 25.0

    @pytest.mark.parametrize(
        ("counter_mj", "energies", "warning"),
        [
            (None, (None, None, None), "no energy counter readings"),
            ((4_000, 9_000), (5_000, 6_000, 1_000), "counter reset"),
        ],
        ids=["no-counter", "counter-reset"],
    )
    def test_power_integral(
        self,
        tmp_path: Path,
        counter_mj: tuple[int, int] | None,
        energies: tuple[float | None, ...],
        warning: str,
    ) -> None:
        """The energy is the trapezoid of the power samples, and a warning says why."""
        times_powers = [(10.25, 100.0), (10.5, 200.0), (11.0, 300.0)]
        samples = [(t, p, e) for (t, p), e in zip(times_powers, energies, strict=True)]
        write_process(tmp_path, 0, world_size=1, counter_mj=counter_mj, samples=samples)
        result = aggregate(tmp_path)
        assert result.total_energy_j == self.TRAPEZOID_J
        assert any(warning in w for w in result.measurement_warnings)
        assert result.aggregation is not None
        gpus = (result.aggregation.model_extra or {})["gpus"]
        assert [g["energy_source"] for g in gpus] == ["power_integral"]

    def test_counter_preferred_when_it_is_good(self, tmp_path: Path) -> None:
        """With a monotonic counter the counter delta wins over the samples."""
        samples = [(10.25, 100.0, 1_001_000.0), (10.5, 200.0, 1_050_000.0)]
        write_process(tmp_path, 0, world_size=1, samples=samples)
        result = aggregate(tmp_path)
        assert result.total_energy_j == 100.0


class TestOrderIndependence:
    """The order in which process results are handed over does not change the result."""

    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_shuffled_simulated_summaries(self, tmp_path: Path, seed: int) -> None:
        """Shuffled summaries of a simulated run give an identical ``model_dump()``."""
        (truth,) = simulate(tmp_path, processes=4, requests=15, seed=3)
        scan = scan_experiment(tmp_path / "raw" / truth.experiment_id)
        reference = aggregate_results(scan.summaries, truth.experiment_id).model_dump()
        shuffled = list(scan.summaries)
        random.Random(seed).shuffle(shuffled)
        assert aggregate_results(shuffled, truth.experiment_id).model_dump() == reference

    def test_reversed_shared_gpu(self, tmp_path: Path) -> None:
        """Processes sharing a GPU aggregate the same in reverse order."""
        write_process(tmp_path, 0, gpu_uuid="G", counter_mj=(1_000_000, 1_400_000), baseline_w=9)
        write_process(tmp_path, 1, gpu_uuid="G", counter_mj=(1_050_000, 1_600_000), baseline_w=3)
        found = summaries(tmp_path)
        forward = aggregate_results(found, EXPERIMENT).model_dump()
        assert aggregate_results(found[::-1], EXPERIMENT).model_dump() == forward


class TestRawProcessResultInput:
    """LLenergyMeasure's own ``RawProcessResult`` values aggregate too."""

    def test_raw_results_of_a_simulated_run(
        self, simulated: tuple[ExperimentTruth, dict[str, Any]]
    ) -> None:
        """Process results taken from an emitted file give the same tokens and energy."""
        truth, emitted = simulated
        raws = [RawProcessResult.model_validate(p) for p in emitted["process_results"]]
        result = aggregate_results(raws, truth.experiment_id)
        assert result.total_tokens == truth.total_tokens
        assert result.total_energy_j == truth.energy_j
        # Timestamps in RawProcessResult keep microseconds only.
        assert result.total_inference_time_sec == pytest.approx(truth.span_sec, abs=2e-6)
        assert result.process_results == raws

    def test_mixed_with_summaries(self, tmp_path: Path) -> None:
        """A ``RawProcessResult`` and a replayed summary aggregate side by side."""
        write_process(tmp_path, 0, counter_mj=(1_000_000, 1_100_000))
        write_process(tmp_path, 1, counter_mj=(2_000_000, 2_030_000))
        first, second = summaries(tmp_path)
        result = aggregate_results([first, second.raw], EXPERIMENT)
        assert result.total_energy_j == 130.0
        assert result.total_tokens == 60

    def test_nothing_to_aggregate(self) -> None:
        """An empty list is an error, not an empty result."""
        with pytest.raises(LedgerError, match="no process results"):
            aggregate_results([], EXPERIMENT)
