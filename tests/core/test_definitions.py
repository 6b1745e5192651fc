"""Tests for the published definitions (issue 9): TPOT, trimmed ITL, warm-up, output throughput,
FLOPs left out, partial results.

Each test replays a hand-built log (tests/core/ledgers.py) through the real replay, summary and
aggregation, and checks the figures against values worked out here by hand or with the standard
library's ``statistics``, never with the code under test.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.decode import make_event
from energy_ledger.core.state import ProcessState, apply, apply_all
from energy_ledger.models import ExperimentResult, WarmupResult
from energy_ledger.pipeline import recover_experiment
from energy_ledger.store.writer import EventLogWriter
from tests.core.ledgers import EXPERIMENT, Req, ledger, summary
from tests.helpers import ticking_clock


def aggregate(*logs: bytes, **kwargs: Any) -> ExperimentResult:
    """Replay each log and aggregate the summaries."""
    return aggregate_results([summary(data) for data in logs], EXPERIMENT, **kwargs)


def p99(values: list[float]) -> float:
    """The 99th percentile with linear interpolation between closest ranks (type 7)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def p95(values: list[float]) -> float:
    """The 95th percentile, type 7."""
    return statistics.quantiles(values, n=100, method="inclusive")[94]


class TestTpot:
    """``tpot_ms`` is the mean over requests of ``(latency - ttft) / (output_tokens - 1)``."""

    def test_mean_over_requests_of_both_processes(self) -> None:
        """Requests without a TTFT, or with one output token, have no TPOT and are left out."""
        p0 = ledger(
            0,
            [
                Req(130.0, output_tokens=5, ttft_ms=10.0),  # 120 ms over 4 tokens: 30
                Req(40.0, output_tokens=1, ttft_ms=5.0),  # one token: no TPOT
                Req(40.0, output_tokens=10),  # no TTFT: no TPOT
            ],
            world_size=2,
        )
        p1 = ledger(1, [Req(70.0, output_tokens=2, ttft_ms=10.0)], world_size=2)  # 60 / 1
        result = aggregate(p0, p1)
        assert result.extended_metrics is not None
        # The mean of per-request figures (30, 60), not the token-weighted 180 / 5 = 36.
        assert result.extended_metrics.tpot_ms == pytest.approx(45.0)

    def test_each_process_carries_its_own_mean(self) -> None:
        """A process result's ``extended_metrics.tpot_ms`` is the mean over its own requests."""
        s = summary(
            ledger(0, [Req(130.0, output_tokens=5, ttft_ms=10.0), Req(21.0, 1, 3, ttft_ms=1.0)])
        )
        assert s.raw.extended_metrics.tpot_ms == pytest.approx((30.0 + 10.0) / 2)

    def test_no_ttft_no_tpot(self) -> None:
        """Without any TTFT there is no TPOT (and no latency statistics)."""
        result = aggregate(ledger(0, [Req(50.0, output_tokens=8, itl_ms=[1.0, 2.0, 3.0])]))
        assert result.extended_metrics is not None
        assert result.extended_metrics.tpot_ms is None
        assert result.latency_stats is None

    def test_ttft_after_the_end_is_left_out(self) -> None:
        """A request whose TTFT exceeds its end-to-end latency gives no (negative) TPOT."""
        result = aggregate(
            ledger(0, [Req(5.0, output_tokens=4, ttft_ms=9.0), Req(31.0, 1, 4, ttft_ms=1.0)])
        )
        assert result.extended_metrics is not None
        assert result.extended_metrics.tpot_ms == pytest.approx(10.0)


class TestTrimmedItl:
    """``itl_*`` are over each request's ITL without its first and last; ``itl_full_*`` over all."""

    REQUESTS = (
        Req(100.0, output_tokens=6, ttft_ms=4.0, itl_ms=[1.0, 2.0, 3.0, 4.0, 5.0]),
        Req(100.0, output_tokens=3, ttft_ms=6.0, itl_ms=[7.0, 8.0]),  # too short to trim
        Req(100.0, output_tokens=4, ttft_ms=8.0, itl_ms=[10.0, 20.0, 30.0]),
    )

    def test_trimmed_and_full_statistics(self) -> None:
        """Trimmed: 2, 3, 4 and 20; full: all ten intervals."""
        stats = aggregate(ledger(0, self.REQUESTS)).latency_stats
        assert stats is not None
        trimmed = [2.0, 3.0, 4.0, 20.0]
        full = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 10.0, 20.0, 30.0]
        assert stats.itl_samples == 4
        assert stats.itl_mean_ms == pytest.approx(statistics.fmean(trimmed))
        assert stats.itl_median_ms == pytest.approx(statistics.median(trimmed))
        assert stats.itl_p95_ms == pytest.approx(p95(trimmed))
        assert stats.itl_p99_ms == pytest.approx(p99(trimmed))
        assert stats.itl_full_mean_ms == pytest.approx(statistics.fmean(full))
        assert stats.itl_full_p99_ms == pytest.approx(p99(full))
        assert stats.ttft_samples == 3
        assert stats.ttft_mean_ms == pytest.approx(6.0)

    def test_trimmed_is_per_request_across_processes(self) -> None:
        """Trimming is done per request, then samples of both processes are concatenated."""
        p0 = ledger(0, [Req(9.0, 1, 5, ttft_ms=1.0, itl_ms=[1.0, 1.5, 2.5, 100.0])], world_size=2)
        p1 = ledger(1, [Req(9.0, 1, 4, ttft_ms=1.0, itl_ms=[50.0, 3.5, 50.0])], world_size=2)
        stats = aggregate(p0, p1).latency_stats
        assert stats is not None
        assert stats.itl_samples == 3
        assert stats.itl_mean_ms == pytest.approx((1.5 + 2.5 + 3.5) / 3)
        assert stats.itl_full_mean_ms == pytest.approx(
            statistics.fmean([1.0, 1.5, 2.5, 100.0, 50.0, 3.5, 50.0])
        )

    def test_only_short_requests_leave_trimmed_empty(self) -> None:
        """With no request long enough to trim, ``itl_*`` are null and ``itl_full_*`` are not."""
        stats = aggregate(ledger(0, [Req(9.0, 1, 3, ttft_ms=1.0, itl_ms=[2.0, 4.0])])).latency_stats
        assert stats is not None
        assert (stats.itl_mean_ms, stats.itl_p99_ms, stats.itl_samples) == (None, None, 0)
        assert stats.itl_full_mean_ms == pytest.approx(3.0)


_REQUEST = st.tuples(
    st.floats(0.0, 1e4),
    st.integers(0, 50),
    st.none() | st.floats(0.0, 1e4),
    st.lists(st.floats(0.0, 1e3), max_size=6),
)


class TestFoldLaw:
    """The batched fold keeps the per-request lists exactly as the one-event fold does."""

    @settings(max_examples=80, deadline=None)
    @given(st.lists(_REQUEST, max_size=12))
    def test_batched_equals_one_by_one(
        self, requests: list[tuple[float, int, float | None, list[float]]]
    ) -> None:
        """``apply_all`` over the requests equals ``apply`` on each, and the lists are right."""
        head = [
            make_event(
                "process_started",
                seq=0,
                t=1.0,
                experiment_id="e",
                run_id="r",
                process_index=0,
                world_size=1,
                gpu_id=0,
            ),
            make_event("window_started", seq=1, t=1.0),
        ]
        body = [
            make_event(
                "request",
                seq=seq,
                t=2.0,
                latency_ms=latency,
                input_tokens=1,
                output_tokens=n_out,
                itl_ms=itl,
                **({} if ttft is None else {"ttft_ms": ttft}),
            )
            for seq, (latency, n_out, ttft, itl) in enumerate(requests, start=2)
        ]
        one_by_one = ProcessState()
        for event in [*head, *body]:
            apply(one_by_one, event)
        batched = ProcessState()
        for event in head:
            apply(batched, event)
        apply_all(batched, body)
        assert batched == one_by_one
        # Laws rather than the formulas again: the trimmed list plus each long request's first
        # and last interval plus the short requests' intervals is the full list, and each TPOT
        # rebuilds its request's latency from its TTFT and output tokens.
        edges = [x for *_, itl in requests if len(itl) >= 3 for x in (itl[0], itl[-1])]
        short = [x for *_, itl in requests if len(itl) < 3 for x in itl]
        full = [x for *_, itl in requests for x in itl]
        assert sorted([*batched.itl_trimmed_ms, *edges, *short]) == sorted(full)
        assert len(batched.itl_trimmed_ms) == sum(max(0, len(itl) - 2) for *_, itl in requests)
        with_tpot = [
            (latency, n_out, ttft)
            for latency, n_out, ttft, _ in requests
            if ttft is not None and n_out >= 2 and latency >= ttft
        ]
        assert len(batched.tpot_ms) == len(with_tpot)
        for tpot, (latency, n_out, ttft) in zip(batched.tpot_ms, with_tpot, strict=True):
            assert tpot >= 0.0
            assert tpot * (n_out - 1) + ttft == pytest.approx(latency, rel=1e-9, abs=1e-9)


WARMUP_0 = {
    "converged": True,
    "final_cv": 0.03,
    "iterations_completed": 7,
    "target_cv": 0.05,
    "max_prompts": 20,
    "latencies_ms": [11.0, 12.0],
    "thermal_floor_wait_s": 3.0,
}
WARMUP_1 = {
    "converged": False,
    "final_cv": 0.09,
    "iterations_completed": 20,
    "target_cv": 0.05,
    "max_prompts": 20,
    "latencies_ms": [13.0],
    "thermal_floor_wait_s": 5.0,
}


class TestWarmup:
    """The experiment's warm-up merges every process's, not the first one's."""

    def test_merge_of_two_processes(self) -> None:
        """Converged only if all did; worst CV, longest warm-up and wait; latencies joined."""
        result = aggregate(
            ledger(0, [Req(1.0)], world_size=2, warmup=WARMUP_0),
            ledger(1, [Req(1.0)], world_size=2, warmup=WARMUP_1),
        )
        assert result.warmup_result == WarmupResult(
            converged=False,
            final_cv=0.09,
            iterations_completed=20,
            target_cv=0.05,
            max_prompts=20,
            latencies_ms=[11.0, 12.0, 13.0],
            thermal_floor_wait_s=5.0,
        )
        assert result.warmup_excluded_samples == 7 + 20

    def test_one_process_is_its_own(self) -> None:
        """A single process's warm-up is the experiment's, unchanged."""
        result = aggregate(ledger(0, [Req(1.0)], warmup=WARMUP_0))
        assert result.warmup_result == WarmupResult(**WARMUP_0)
        assert result.warmup_excluded_samples == 7

    def test_no_warmup(self) -> None:
        """Without a warm-up event both fields are null (LLenergyMeasure's contract)."""
        result = aggregate(ledger(0, [Req(1.0)]))
        assert (result.warmup_result, result.warmup_excluded_samples) == (None, None)

    def test_a_process_without_warmup_is_named(self) -> None:
        """When one process logged no warm-up, the merge says so."""
        result = aggregate(
            ledger(0, [Req(1.0)], world_size=2, warmup=WARMUP_0),
            ledger(1, [Req(1.0)], world_size=2),
        )
        assert result.warmup_result == WarmupResult(**WARMUP_0)
        assert any("no warm-up result for processes [1]" in w for w in result.measurement_warnings)

    def test_different_settings_are_flagged(self) -> None:
        """Processes warmed up to different targets: the loosest is kept, with a warning."""
        result = aggregate(
            ledger(0, [Req(1.0)], world_size=2, warmup=WARMUP_0),
            ledger(1, [Req(1.0)], world_size=2, warmup={**WARMUP_1, "target_cv": 0.1}),
        )
        assert result.warmup_result is not None
        assert result.warmup_result.target_cv == 0.1
        assert any("different warm-up settings" in w for w in result.measurement_warnings)


class TestOutputThroughput:
    """``aggregation.output_tokens_per_second`` = output tokens / wall-clock span."""

    def test_over_the_span_of_two_processes(self) -> None:
        """Windows 10-14 and 12-18 s span 8 s; 30 + 50 output tokens give 10 tokens/s."""
        result = aggregate(
            ledger(0, [Req(1.0, input_tokens=100, output_tokens=30)], world_size=2),
            ledger(1, [Req(1.0, 200, 50)], world_size=2, window=(12.0, 18.0)),
        )
        assert result.aggregation is not None
        extras = result.aggregation.model_dump()
        assert extras["output_tokens_per_second"] == pytest.approx(80 / 8.0)
        assert result.avg_tokens_per_second == pytest.approx(380 / 8.0)


class TestFlopsLeftOut:
    """FLOPs-derived figures are null without FLOPs, as LLenergyMeasure's contract says."""

    def test_no_compute_event(self) -> None:
        """No FLOPs: per-token and per-second FLOPs are null, not 0."""
        result = aggregate(ledger(0, [Req(1.0, input_tokens=10, output_tokens=20)]))
        assert result.total_flops == 0.0
        assert result.flops_per_output_token is None
        assert result.flops_per_input_token is None
        assert result.flops_per_second is None

    def test_with_flops(self) -> None:
        """1000 FLOPs, 10 input and 20 output tokens over 4 s: 50, 100 and 250."""
        result = aggregate(
            ledger(0, [Req(1.0, 10, 20)], compute={"flops_total": 1000.0, "peak_memory_mb": 1.0})
        )
        assert result.flops_per_output_token == pytest.approx(50.0)
        assert result.flops_per_input_token == pytest.approx(100.0)
        assert result.flops_per_second == pytest.approx(250.0)


class TestPartial:
    """A partial result says it is partial where LLenergyMeasure's readers look."""

    def test_warning_and_notes(self) -> None:
        """The first warning starts "Incomplete results:"; the notes name the reason."""
        reason = "process 1 has no completion marker"
        result = aggregate(ledger(0, [Req(1.0)]), partial=True, partial_reason=reason)
        assert result.measurement_warnings[0] == f"Incomplete results: {reason}"
        assert result.aggregation is not None
        assert result.aggregation.warnings[0] == f"Incomplete results: {reason}"
        assert "PARTIAL RESULT" in result.reproducibility_notes
        assert reason in result.reproducibility_notes

    def test_complete_result_says_nothing(self) -> None:
        """A complete result has neither the warning nor the sentence."""
        result = aggregate(ledger(0, [Req(1.0)]))
        assert not any(w.startswith("Incomplete results") for w in result.measurement_warnings)
        assert "PARTIAL" not in result.reproducibility_notes

    def test_recover_writes_the_reasons(self, tmp_path: Path) -> None:
        """``recover`` on a run whose process 1 never closed puts the report's reason first."""
        for index in (0, 1):
            writer = EventLogWriter.open(tmp_path, EXPERIMENT, index, clock=ticking_clock(100.0))
            writer.append(
                "process_started",
                experiment_id=EXPERIMENT,
                run_id="run-p",
                process_index=index,
                world_size=2,
                gpu_id=index,
            )
            writer.append("window_started", energy_mj=0)
            writer.append("request", latency_ms=5.0, input_tokens=1, output_tokens=2)
            writer.append("window_ended", energy_mj=1000)
            if index == 0:
                writer.close()
            else:
                writer.abandon()
        recovery = recover_experiment(tmp_path / "raw" / EXPERIMENT)
        data = orjson.loads(recovery.path.read_bytes())
        first = data["measurement_warnings"][0]
        assert first.startswith("Incomplete results: ")
        assert "process 1 has no completion marker" in first
        assert "PARTIAL RESULT" in data["reproducibility_notes"]
