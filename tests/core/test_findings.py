"""The numbers issue's findings, each on a hand-built ledger, against figures worked out here.

Each ledger is written as another writer (a vLLM plugin, a Slurm wrapper) could write it within
the format. The expected figures are computed in the test from the values written, never by
calling the code under test. Findings 8, 10 and 11 (older files, definitions, interop) are in
test_legacy.py, test_definitions.py and test_interop.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.completeness import ProcessEvidence, check_completeness
from energy_ledger.core.process import ProcessSummary, facts_of, summarize_process
from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import FormatError
from energy_ledger.models import ExperimentResult
from energy_ledger.store.reader import scan_experiment

T0 = 1_700_000_000.0
Body = tuple[float, dict[str, Any]]


def _started(index: int, world_size: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "process_started",
        "experiment_id": "exp",
        "run_id": "run",
        "process_index": index,
        "world_size": world_size,
        "gpu_id": 0,
        "hostname": "node",
        **extra,
    }


def _req(latency_ms: float, n_in: int, n_out: int) -> dict[str, Any]:
    return {
        "type": "request",
        "latency_ms": latency_ms,
        "input_tokens": n_in,
        "output_tokens": n_out,
    }


def _bytes(bodies: list[Body]) -> bytes:
    return b"".join(
        orjson.dumps({"v": 1, "seq": seq, "t": T0 + t, **body}) + b"\n"
        for seq, (t, body) in enumerate(bodies)
    )


def _summary(bodies: list[Body]) -> ProcessSummary:
    return summarize_process(replay_bytes(_bytes(bodies)).state)


def _result(*logs: list[Body], methodology: Any = "total") -> ExperimentResult:
    return aggregate_results(
        [_summary(b) for b in logs], "exp", measurement_methodology=methodology
    )


class TestFinding1UnnamedGpus:
    """Two GPUs without UUIDs are never merged on ``gpu_id`` 0."""

    def test_two_isolated_gpus_add_up(self) -> None:
        """Each GPU used 100 J (its own counter); the total is 200 J, not a cross-difference."""
        logs = [
            [
                (0.0, _started(i, 2)),
                (1.0, {"type": "window_started", "energy_mj": base}),
                (11.0, {"type": "window_ended", "energy_mj": base + 100_000}),
                (11.0, {"type": "process_finished"}),
            ]
            for i, base in ((0, 5_000_000), (1, 90_000_000))
        ]
        result = _result(*logs)
        assert result.energy_per_device_j == [100.0, 100.0]
        assert result.total_energy_j == 200.0
        assert any("name no GPU UUID" in w for w in result.measurement_warnings)


def _window_log(requests_before: int, requests_inside: int) -> list[Body]:
    """Warm-up requests of 500 ms before the window, 10 ms requests inside it."""
    bodies: list[Body] = [(0.0, _started(0, 1, gpu_uuid="GPU-a"))]
    bodies += [(1.0 + i * 0.01, _req(500.0, 100, 100)) for i in range(requests_before)]
    bodies.append((2.0, {"type": "window_started", "energy_mj": 0}))
    bodies += [(3.0 + i * 0.01, _req(10.0, 10, 10)) for i in range(requests_inside)]
    bodies.append((12.0, {"type": "window_ended", "energy_mj": 1_000_000}))
    bodies.append((12.0, {"type": "process_finished"}))
    return bodies


class TestFinding2RequestsOutsideTheWindow:
    """Requests count only inside their process's window."""

    def test_warm_up_requests_are_left_out(self) -> None:
        """Ten 200-token warm-up requests leave the 10 x 20 tokens and the 10 ms p50 alone."""
        result = _result(_window_log(requests_before=10, requests_inside=10))
        assert result.total_tokens == 10 * (10 + 10)
        stats = result.extended_metrics.request_latency
        assert stats.e2e_latency_median_ms == 10.0
        assert stats.e2e_latency_samples == 10
        assert any("10 requests logged outside" in w for w in result.measurement_warnings)


class TestFinding3NoWindow:
    """A process that never opened a window is not complete; if recovered it adds nothing."""

    def _log(self, index: int, window: bool) -> list[Body]:
        bodies: list[Body] = [(0.0, _started(index, 2, gpu_uuid=f"GPU-{index}"))]
        if window:
            bodies.append((1.0, {"type": "window_started", "energy_mj": 0}))
        bodies.append((2.0, _req(10.0, 5, 5)))
        if window:
            bodies.append((11.0, {"type": "window_ended", "energy_mj": 500_000}))
        bodies.append((11.0, {"type": "process_finished"}))
        return bodies

    def test_completeness_says_why(self) -> None:
        """The report is invalid and names the process that never opened its window."""
        evidence = [
            ProcessEvidence(
                index=i, summary=facts_of(replay_bytes(_bytes(self._log(i, i == 0))).state, i)
            )
            for i in (0, 1)
        ]
        report = check_completeness("exp", evidence, 2)
        assert report.state == "invalid"
        assert any(
            "process 1 finished but never opened its measured window" in r for r in report.reasons
        )

    def test_recovered_it_adds_no_tokens_and_says_so(self) -> None:
        """Aggregated anyway (``recover``), it adds 0 J and 0 tokens, with a warning."""
        result = _result(self._log(0, True), self._log(1, False))
        assert result.total_tokens == 10
        assert result.total_energy_j == 500.0
        assert any(
            "process 1" in w and "outside the measured window" in w
            for w in result.measurement_warnings
        )


class TestFinding4DisjointWindowsOnOneGpu:
    """One GPU, two processes, disjoint windows: the idle gap is not energy."""

    def _log(self, index: int, window: tuple[float, float], counter: tuple[int, int] | None,
             baseline_w: float, power_w: float = 20.0) -> list[Body]:  # fmt: skip
        lo, hi = window
        bodies: list[Body] = [
            (0.0, _started(index, 2, gpu_uuid="GPU-shared")),
            (0.5, {"type": "baseline", "power_w": baseline_w, "duration_sec": 1.0}),
            (lo, {"type": "window_started", **({"energy_mj": counter[0]} if counter else {})}),
            (lo, {"type": "sample", "power_w": power_w}),
            (hi, {"type": "sample", "power_w": power_w}),
            (hi, {"type": "window_ended", **({"energy_mj": counter[1]} if counter else {})}),
            (hi, {"type": "process_finished"}),
        ]
        return bodies

    def test_the_gap_is_left_out_and_the_baseline_matches(self) -> None:
        """Windows 1-6 s and 11-16 s at 20 W: 200 J measured, not the 400 J of the span."""
        # A counter rising at 20 W throughout: 20_000 mJ a second from 0 at t = 0.
        first = self._log(0, (1.0, 6.0), (20_000, 120_000), baseline_w=5.0)
        second = self._log(1, (11.0, 16.0), (220_000, 320_000), baseline_w=5.0)
        result = _result(first, second)
        assert result.total_energy_j == 100.0 + 100.0
        # The baseline is taken off the 10 s measured, not the 15 s span.
        assert result.energy_adjusted_j == 200.0 - 5.0 * 10.0

    def test_without_a_counter_energy_and_baseline_cover_the_same_seconds(self) -> None:
        """Overlapping windows 1-11 s (counter) and 6-16 s (no counter) on one GPU at 20 W."""
        with_counter = self._log(0, (1.0, 11.0), (20_000, 220_000), baseline_w=5.0)
        without = self._log(1, (6.0, 16.0), None, baseline_w=5.0)
        result = _result(with_counter, without)
        # The run 1-16 s has a process without a counter: the largest process figure is used,
        # 200 J (both are 20 W x 10 s; the counter's is first by index), and it covers 10 s.
        assert result.total_energy_j == 200.0
        assert result.energy_adjusted_j == 200.0 - 5.0 * 10.0


class TestFinding5PowerIntegral:
    """A sample without ``power_w`` does not cut its interval out of the integral."""

    def test_four_samples_at_100_w_over_3_s(self) -> None:
        """100 W at 0, 1, 2 and 3 s, with a power-less sample at 1.5 s: 300 J."""
        bodies: list[Body] = [
            (0.0, _started(0, 1, gpu_uuid="GPU-a")),
            (1.0, {"type": "window_started"}),
            (1.0, {"type": "sample", "power_w": 100.0}),
            (2.0, {"type": "sample", "power_w": 100.0}),
            (2.5, {"type": "sample", "temperature_c": 60.0}),
            (3.0, {"type": "sample", "power_w": 100.0}),
            (4.0, {"type": "sample", "power_w": 100.0}),
            (4.0, {"type": "window_ended"}),
            (4.0, {"type": "process_finished"}),
        ]
        assert _result(bodies).total_energy_j == 100.0 * 3.0


class TestFinding6ImpossibleValues:
    """Impossible values are refused where they are read, naming file and line."""

    def _root(self, tmp_path: Path, bodies: list[Body]) -> Path:
        folder = tmp_path / "raw" / "exp"
        folder.mkdir(parents=True)
        (folder / "process_0.events.jsonl").write_bytes(_bytes(bodies))
        return folder

    @pytest.mark.parametrize(
        ("bad", "words"),
        [
            (_req(10.0, -200, 5), "'input_tokens'"),
            (_req(-4.0, 2, 5), "'latency_ms'"),
            ({"type": "sample", "power_w": -50.0}, "'power_w'"),
        ],
    )
    def test_negative_values_name_file_and_line(
        self, tmp_path: Path, bad: dict[str, Any], words: str
    ) -> None:
        """A negative count, latency or power makes the log invalid at its line (line 3)."""
        folder = self._root(
            tmp_path,
            [(0.0, _started(0, 1)), (1.0, {"type": "window_started"}), (2.0, bad)],
        )
        scan = scan_experiment(folder)
        assert scan.report.state == "invalid"
        reason = " ".join(scan.report.reasons)
        assert "process_0.events.jsonl:3" in reason
        assert words in reason

    def test_a_window_that_ends_before_it_starts(self) -> None:
        """An end stamped before the start is a time going backwards, at the end's line."""
        bodies: list[Body] = [
            (0.0, _started(0, 1)),
            (5.0, {"type": "window_started"}),
            (2.0, {"type": "window_ended"}),
        ]
        with pytest.raises(FormatError, match=r":3: time goes backwards"):
            replay_bytes(_bytes(bodies))


class TestFinding7CounterResetBeforeTheFirstSample:
    """A reset between ``window_started`` and the first sample is seen."""

    def test_reset_falls_back_to_power_with_a_warning(self) -> None:
        """Counter 5,000,000 at the start, 1,000 at the first sample: power is integrated."""
        bodies: list[Body] = [
            (0.0, _started(0, 1, gpu_uuid="GPU-a")),
            (1.0, {"type": "window_started", "energy_mj": 5_000_000}),
            (1.0, {"type": "sample", "power_w": 50.0, "energy_mj": 1_000}),
            (3.0, {"type": "sample", "power_w": 50.0, "energy_mj": 101_000}),
            (3.0, {"type": "window_ended", "energy_mj": 101_000}),
            (3.0, {"type": "process_finished"}),
        ]
        summary = _summary(bodies)
        assert summary.energy_source == "power_integral"
        assert summary.energy_j == 50.0 * 2.0
        assert any("counter reset" in w for w in summary.warnings)


class TestFinding9TensorParallelTokens:
    """Under tensor parallelism only one rank per group counts the group's requests."""

    def test_two_groups_of_two_count_each_request_once(self) -> None:
        """Ranks 0-1 and 2-3 each log the same 3 requests; ranks 1 and 3 do not count them."""
        logs = []
        for rank in range(4):
            group_requests = [_req(10.0 + rank // 2, 7, 11) for _ in range(3)]
            logs.append(
                [
                    (0.0, _started(rank, 4, gpu_uuid=f"GPU-{rank}", counts_requests=rank % 2 == 0)),
                    (1.0, {"type": "window_started", "energy_mj": 0}),
                    *[(2.0, r) for r in group_requests],
                    (11.0, {"type": "window_ended", "energy_mj": 100_000}),
                    (11.0, {"type": "process_finished"}),
                ]
            )
        result = _result(*logs)
        assert result.total_tokens == 2 * 3 * (7 + 11)
        assert result.extended_metrics.request_latency.e2e_latency_samples == 6
        # Energy still comes from every GPU: 4 x 100 J.
        assert result.total_energy_j == 400.0


class TestValidityWarnings:
    """Weak measurements are flagged in ``measurement_warnings``; none blocks the result."""

    def _log(self, seconds: float, energy_mj: int, **started: Any) -> list[Body]:
        return [
            (0.0, _started(0, 1, gpu_uuid="GPU-a", **started)),
            (0.5, {"type": "baseline", "power_w": 60.0, "duration_sec": 1.0}),
            (1.0, {"type": "window_started", "energy_mj": 0}),
            (1.0 + seconds, {"type": "window_ended", "energy_mj": energy_mj}),
            (1.0 + seconds, {"type": "process_finished"}),
        ]

    def test_half_second_window_is_unreliable(self) -> None:
        """0.5 s is under ten 100 ms counter updates."""
        result = _result(self._log(0.5, 100_000))
        assert any(w.startswith("energy_unreliable") for w in result.measurement_warnings)

    @pytest.mark.parametrize(
        ("seconds", "word"), [(15.0, "unstable"), (25.0, "short"), (35.0, None)]
    )
    def test_steady_state_thresholds(self, seconds: float, word: str | None) -> None:
        """Under 20 s is unstable, under 30 s short, from 30 s on nothing (ML.ENERGY)."""
        result = _result(self._log(seconds, int(seconds * 300_000)), methodology="steady_state")
        found = [w for w in result.measurement_warnings if w.startswith("steady_state_")]
        assert found == ([] if word is None else [found[0]])
        if word is not None:
            assert found[0].startswith(f"steady_state_{word}")

    def test_power_below_idle(self) -> None:
        """10 s at an average 30 W, with 60 W idle: the energy or the baseline is wrong."""
        result = _result(self._log(10.0, 300_000))
        assert any(w.startswith("power_below_idle") for w in result.measurement_warnings)

    def test_power_above_the_limit(self) -> None:
        """An average 900 W on a 700 W GPU is flagged."""
        env = {"hardware": {"gpu": {"power_limit_w": 700.0}}}
        result = _result(self._log(10.0, 9_000_000, environment=env))
        assert any(w.startswith("power_above_limit") for w in result.measurement_warnings)

    def test_clock_skew_between_hosts(self) -> None:
        """Hosts 0.9 s apart against the filesystem clock (+/- 0.01 s each) are flagged."""
        logs = []
        for rank, (host, offset) in enumerate((("a", 0.45), ("b", -0.45))):
            logs.append(
                [
                    (0.0, _started(rank, 2, gpu_uuid=f"GPU-{rank}", hostname=host)),
                    (0.5, {"type": "clock", "monotonic_sec": 100.0, "fs_offset_sec": offset,
                           "fs_offset_error_sec": 0.01}),
                    (1.0, {"type": "window_started", "energy_mj": 0}),
                    (31.0, {"type": "window_ended", "energy_mj": 9_000_000}),
                    (31.0, {"type": "process_finished"}),
                ]
            )  # fmt: skip
        result = _result(*logs)
        (skew,) = [w for w in result.measurement_warnings if w.startswith("clock_skew")]
        assert "0.900 s" in skew
        assert "a +0.450 s" in skew and "b -0.450 s" in skew

    def test_a_non_counting_rank_reports_no_requests(self) -> None:
        """Its process result holds no tokens, so summing process results counts each once."""
        counted = _summary(
            [
                (0.0, _started(0, 2, gpu_uuid="GPU-0", counts_requests=True)),
                (1.0, {"type": "window_started", "energy_mj": 0}),
                (2.0, _req(10.0, 7, 11)),
                (11.0, {"type": "window_ended", "energy_mj": 100_000}),
            ]
        )
        silent = _summary(
            [
                (0.0, _started(1, 2, gpu_uuid="GPU-1", counts_requests=False)),
                (1.0, {"type": "window_started", "energy_mj": 0}),
                (2.0, _req(10.0, 7, 11)),
                (11.0, {"type": "window_ended", "energy_mj": 100_000}),
            ]
        )
        assert counted.raw.inference_metrics.total_tokens == 18
        assert silent.raw.inference_metrics.total_tokens == 0
        assert silent.raw.per_request_latencies_ms == []
        assert silent.raw.energy_metrics.total_energy_j == 100.0

    def test_skew_counts_the_gap_between_event_time_and_system_clock(self) -> None:
        """Host b's events are stamped 0.9 s ahead of its system clock, whose offset is 0."""
        logs = []
        for rank, (host, ahead_sec) in enumerate((("a", 0.0), ("b", 0.9))):
            logs.append(
                [
                    (0.0, _started(rank, 2, gpu_uuid=f"GPU-{rank}", hostname=host)),
                    (0.5, {"type": "clock", "monotonic_sec": 100.0, "wall_t": T0 + 0.5 - ahead_sec,
                           "fs_offset_sec": 0.0, "fs_offset_error_sec": 0.01}),
                    (1.0, {"type": "window_started", "energy_mj": 0}),
                    (31.0, {"type": "window_ended", "energy_mj": 9_000_000}),
                    (31.0, {"type": "process_finished"}),
                ]
            )  # fmt: skip
        result = _result(*logs)
        (skew,) = [w for w in result.measurement_warnings if w.startswith("clock_skew")]
        assert "0.900 s" in skew
