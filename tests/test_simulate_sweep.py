"""``simulate(..., sweep=True)``: a batch-size sweep with a warm-up phase before each window.

The aggregated results are compared with the simulator's ground truth (counter readings at the
window's edges) and with the event logs themselves, read here line by line.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.cli import cli
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import ExperimentTruth, simulate
from tests.helpers import read_events

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
REQUESTS = 400


def result_of(root: Path, experiment_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (root / "aggregated" / f"{experiment_id}.json").read_bytes()
    )
    return loaded


def log_of(root: Path, experiment_id: str, index: int = 0) -> list[dict[str, Any]]:
    return read_events(root / "raw" / experiment_id / f"process_{index}.events.jsonl")


def output_tokens(result: dict[str, Any]) -> int:
    return sum(p["inference_metrics"]["output_tokens"] for p in result["process_results"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ExperimentTruth]]:
    """Seven experiments (the sixth batch size wraps back to 1), one process, 400 requests."""
    root = tmp_path_factory.mktemp("sweep")
    truths = simulate(root, experiments=7, processes=1, requests=REQUESTS, sweep=True)
    outcomes = replay_root(root)
    assert [o.action for o in outcomes] == ["written"] * 7
    return root, truths


@pytest.fixture(scope="module")
def sweep_two_gpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ExperimentTruth]]:
    """Two experiments of three processes (three GPUs), swept."""
    root = tmp_path_factory.mktemp("sweep3")
    truths = simulate(root, experiments=2, processes=3, requests=60, sweep=True, seed=5)
    replay_root(root)
    return root, truths


class TestBatchSize:
    """Experiment ``n`` runs at batch size ``(1, 2, 4, 8, 16, 32)[n % 6]``."""

    def test_effective_config(self, sweep: tuple[Path, list[ExperimentTruth]]) -> None:
        """The batch size is in the logged ``effective_config`` and in the result's."""
        root, truths = sweep
        for n, truth in enumerate(truths):
            expected = BATCH_SIZES[n % 6]
            events = log_of(root, truth.experiment_id)
            (started,) = [e for e in events if e["type"] == "process_started"]
            assert started["effective_config"]["batch_size"] == expected
            assert result_of(root, truth.experiment_id)["effective_config"]["batch_size"] == (
                expected
            )

    def test_cli_flag(self, tmp_path: Path) -> None:
        """``energy-ledger simulate --sweep`` writes the same sweep."""
        args = ["--experiments", "3", "--processes", "1", "--requests", "5", "--sweep"]
        assert cli("simulate", str(tmp_path), *args) == 0
        sizes = [
            next(e for e in log_of(tmp_path, f"sim-{n:04d}") if e["type"] == "process_started")[
                "effective_config"
            ]["batch_size"]
            for n in range(3)
        ]
        assert sizes == [1, 2, 4]


class TestWarmUp:
    """Warm-up samples lie before the window and do not count in the energy."""

    def test_log_has_warmup_and_samples_before_the_window(
        self, sweep: tuple[Path, list[ExperimentTruth]]
    ) -> None:
        """Each log has one ``warmup`` event, samples before ``window_started``, and the warm-up
        samples already read a counter below the window's start reading."""
        root, truths = sweep
        for truth in truths:
            events = log_of(root, truth.experiment_id)
            types = [e["type"] for e in events]
            assert types.count("warmup") == 1
            start = types.index("window_started")
            assert types.index("warmup") < start
            before = [e for e in events[:start] if e["type"] == "sample"]
            assert len(before) >= 10
            window_mj = events[start]["energy_mj"]
            assert window_mj == truth.processes[0].counter_start_mj
            assert all(e["t"] < events[start]["t"] for e in before)
            assert before[0]["energy_mj"] < window_mj

    @pytest.mark.parametrize("which", ["sweep", "sweep_two_gpus"])
    def test_energy_per_gpu_is_the_window_counter_difference(
        self, request: pytest.FixtureRequest, which: str
    ) -> None:
        """Per GPU: counter at window end minus counter at window start, from the truth; the
        warm-up's energy (from the first warm-up sample on) would be visibly more."""
        root, truths = request.getfixturevalue(which)
        for truth in truths:
            result = result_of(root, truth.experiment_id)
            gpus = {g["uuid"]: g["energy_j"] for g in result["aggregation"]["gpus"]}
            expected = {
                p.gpu_uuid: (p.counter_end_mj - p.counter_start_mj) / 1000.0
                for p in truth.processes
            }
            assert gpus.keys() == expected.keys()
            for uuid, energy_j in gpus.items():
                assert energy_j == pytest.approx(expected[uuid], rel=1e-12)
            assert result["total_energy_j"] == pytest.approx(truth.energy_j, rel=1e-12)
            assert result["total_energy_j"] == pytest.approx(
                math.fsum(expected.values()), rel=1e-12
            )
            for p in truth.processes:
                events = log_of(root, truth.experiment_id, p.process_index)
                first = next(e for e in events if e["type"] == "sample")
                with_warmup_j = (p.counter_end_mj - first["energy_mj"]) / 1000.0
                assert with_warmup_j > expected[p.gpu_uuid] + 1.0

    def test_average_power_is_the_window_samples(
        self, sweep: tuple[Path, list[ExperimentTruth]]
    ) -> None:
        """A GPU's average power is that of the samples inside the window (within 2 %), not
        pulled down by the ramping warm-up samples."""
        root, truths = sweep
        for truth in truths:
            (gpu,) = result_of(root, truth.experiment_id)["aggregation"]["gpus"]
            p = truth.processes[0]
            samples = [
                e["power_w"]
                for e in log_of(root, truth.experiment_id)
                if e["type"] == "sample" and p.window_start_t <= e["t"] <= p.window_end_t
            ]
            assert len(samples) >= 5
            assert gpu["avg_power_w"] == pytest.approx(statistics.fmean(samples), rel=0.02)

    def test_warmup_result(self, sweep: tuple[Path, list[ExperimentTruth]]) -> None:
        """The result carries the logged warm-up outcome."""
        root, truths = sweep
        for truth in truths:
            (logged,) = [e for e in log_of(root, truth.experiment_id) if e["type"] == "warmup"]
            warmup = result_of(root, truth.experiment_id)["warmup_result"]
            assert warmup is not None
            for key in ("converged", "final_cv", "iterations_completed", "target_cv"):
                assert warmup[key] == logged[key]


class TestTradeOff:
    """Bigger batches: less energy per output token, longer end-to-end latency."""

    def test_monotone_over_the_sweep(self, sweep: tuple[Path, list[ExperimentTruth]]) -> None:
        """Over batch sizes 1 to 32, J per output token falls and e2e p50 rises, strictly; the
        aggregated figures equal the ones computed from the truth."""
        root, truths = sweep
        energy_per_token: list[float] = []
        e2e_p50: list[float] = []
        for truth in truths[:6]:
            result = result_of(root, truth.experiment_id)
            tokens = sum(p.output_tokens for p in truth.processes)
            assert output_tokens(result) == tokens
            energy_per_token.append(result["total_energy_j"] / tokens)
            assert energy_per_token[-1] == pytest.approx(truth.energy_j / tokens, rel=1e-12)
            latency = result["extended_metrics"]["request_latency"]
            assert latency["e2e_latency_samples"] == REQUESTS
            e2e_p50.append(latency["e2e_latency_median_ms"])
            assert e2e_p50[-1] == pytest.approx(statistics.median(truth.latencies_ms), rel=1e-9)
        assert all(a > b for a, b in itertools.pairwise(energy_per_token))
        assert all(a < b for a, b in itertools.pairwise(e2e_p50))
        # Far apart, not marginal: batch 32 costs at most a third of batch 1's J per token.
        assert energy_per_token[-1] < energy_per_token[0] / 3
        assert e2e_p50[-1] > 1.5 * e2e_p50[0]


class TestWithoutSweep:
    """``sweep=False`` (the default) writes what it always did: no batch size, no warm-up."""

    def test_shape(self, tmp_path: Path) -> None:
        """No ``batch_size`` key, no ``warmup`` event, no sample before the window."""
        truths = simulate(tmp_path, experiments=2, processes=2, requests=20)
        replay_root(tmp_path)
        for truth in truths:
            for p in truth.processes:
                events = log_of(tmp_path, truth.experiment_id, p.process_index)
                types = [e["type"] for e in events]
                assert "warmup" not in types
                start = types.index("window_started")
                assert "sample" not in types[:start]
                assert types[:3] == ["process_started", "baseline", "window_started"]
                assert events[0]["effective_config"] == {
                    "model": "sim-gpt",
                    "n": 40,
                    "simulated": True,
                }
            result = result_of(tmp_path, truth.experiment_id)
            assert "batch_size" not in result["effective_config"]
            assert result["warmup_result"] is None
            assert result["total_energy_j"] == pytest.approx(truth.energy_j, rel=1e-12)

    def test_same_seed_same_files_either_way(self, tmp_path: Path) -> None:
        """Same seed, same files: a sweep is as reproducible as a plain run, and differs."""
        roots = [tmp_path / name for name in ("a", "b", "c")]
        simulate(roots[0], experiments=2, processes=1, requests=10, sweep=True)
        simulate(roots[1], experiments=2, processes=1, requests=10, sweep=True)
        simulate(roots[2], experiments=2, processes=1, requests=10)

        def files(root: Path) -> dict[str, bytes]:
            return {
                str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
            }

        assert files(roots[0]) == files(roots[1])
        assert files(roots[0]).keys() == files(roots[2]).keys()
        assert files(roots[0]) != files(roots[2])
