"""Tests for interop with LLenergyMeasure: the raw samples each process result carries in
``latency_measurements``, and a result rebuilt from its own process results.

LLenergyMeasure re-aggregates per-process files by rebuilding its ``LatencyMeasurements``
dataclass from ``latency_measurements`` with keyword arguments, so the key set must be exactly
that dataclass's fields (listed here by hand from its definition).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.models import ExperimentResult, RawProcessResult
from energy_ledger.store.exporters import result_to_json_bytes
from tests.core.ledgers import EXPERIMENT, Req, ledger, summary
from tests.helpers import RAW_PROCESS_SCHEMA, RESULT_SCHEMA, compat_schema

UPSTREAM_KEYS = {
    "ttft_ms",
    "itl_full_ms",
    "itl_trimmed_ms",
    "request_count",
    "total_output_tokens",
    "excluded_tokens",
    "streaming_mode",
    "warmup_requests_excluded",
    "measurement_mode",
}
"""The fields of LLenergyMeasure's ``LatencyMeasurements`` (``domain/metrics.py``)."""

WARMUP = {
    "converged": True,
    "final_cv": 0.04,
    "iterations_completed": 6,
    "target_cv": 0.05,
    "max_prompts": 10,
}

# Values that are not exact in binary, so that a lossy round trip would show.
P0 = [
    Req(100.1, 3, 6, ttft_ms=0.1, itl_ms=[1 / 3, 2 / 3, 0.7, 0.1 + 0.2, 9.9]),
    Req(50.3, 2, 3, ttft_ms=1 / 7, itl_ms=[0.3, 0.6]),
    Req(12.0, 2, 1),
]
P1 = [
    Req(77.7, 5, 4, ttft_ms=2 / 9, itl_ms=[0.05, 1e-3, 7.25]),
    Req(33.3, 1, 2, ttft_ms=3.3),
]


def two_processes() -> ExperimentResult:
    """A two-process result with TTFT, ITL of every length and a warm-up."""
    return aggregate_results(
        [
            summary(ledger(0, P0, world_size=2, warmup=WARMUP)),
            summary(ledger(1, P1, world_size=2, window=(11.0, 15.0))),
        ],
        EXPERIMENT,
    )


class TestLatencyMeasurements:
    """Each process result carries its raw samples in LLenergyMeasure's shape."""

    def test_keys_are_exactly_upstreams(self) -> None:
        """No key more or less than ``LatencyMeasurements`` has."""
        lm = summary(ledger(0, P0)).raw.inference_metrics.latency_measurements
        assert isinstance(lm, dict)
        assert set(lm) == UPSTREAM_KEYS

    def test_values(self) -> None:
        """Samples in log order, counts of this process, trimming as LLenergyMeasure trims."""
        lm = summary(ledger(0, P0, warmup=WARMUP)).raw.inference_metrics.latency_measurements
        assert lm == {
            "ttft_ms": [0.1, 1 / 7],
            "itl_full_ms": [1 / 3, 2 / 3, 0.7, 0.1 + 0.2, 9.9, 0.3, 0.6],
            "itl_trimmed_ms": [2 / 3, 0.7, 0.1 + 0.2],
            "request_count": 3,
            "total_output_tokens": 6 + 3 + 1,
            "excluded_tokens": 7 - 3,
            "streaming_mode": True,
            "warmup_requests_excluded": 6,
            "measurement_mode": "true_streaming",
        }

    def test_absent_without_streaming_samples(self) -> None:
        """A process that logged no TTFT and no ITL has no ``latency_measurements``."""
        raw = summary(ledger(0, [Req(5.0, 1, 2)])).raw
        assert raw.inference_metrics.latency_measurements is None


class TestRoundTrip:
    """aggregate -> JSON -> RawProcessResult -> summary_from_raw -> aggregate again."""

    @pytest.fixture
    def rebuilt(self) -> tuple[ExperimentResult, ExperimentResult]:
        """The result from the logs, and the one rebuilt from its embedded process results."""
        first = two_processes()
        emitted = orjson.loads(result_to_json_bytes(first))
        raws = [RawProcessResult.model_validate(p) for p in emitted["process_results"]]
        return first, aggregate_results(raws, EXPERIMENT)

    def test_same_latency_stats(self, rebuilt: tuple[ExperimentResult, ExperimentResult]) -> None:
        """Every TTFT and ITL statistic comes out bit for bit the same."""
        first, again = rebuilt
        assert first.latency_stats is not None
        assert again.latency_stats == first.latency_stats

    def test_same_request_latency(self, rebuilt: tuple[ExperimentResult, ExperimentResult]) -> None:
        """End-to-end latency statistics come out the same too."""
        first, again = rebuilt
        assert first.extended_metrics is not None and again.extended_metrics is not None
        assert again.extended_metrics.request_latency == first.extended_metrics.request_latency

    def test_tpot_is_unknown_from_process_files(
        self, rebuilt: tuple[ExperimentResult, ExperimentResult]
    ) -> None:
        """Process files have no per-request output tokens: TPOT is left out, with a reason."""
        first, again = rebuilt
        assert first.extended_metrics is not None and again.extended_metrics is not None
        assert first.extended_metrics.tpot_ms is not None
        assert again.extended_metrics.tpot_ms is None
        assert any("tpot_ms left out" in w for w in again.measurement_warnings)


class TestCompatSchema:
    """A result using every new definition still validates against the compat schemas."""

    def test_result_and_processes_validate(self, compat_dir: Path) -> None:
        """Partial, warm-up, latency samples and null FLOPs fields: all schema 2.0."""
        result = aggregate_results(
            [
                summary(ledger(0, P0, world_size=2, warmup=WARMUP)),
                summary(ledger(1, P1, world_size=2)),
            ],
            EXPERIMENT,
            partial=True,
            partial_reason="process 2 is missing",
        )
        emitted = orjson.loads(result_to_json_bytes(result))
        jsonschema.Draft202012Validator(compat_schema(compat_dir, RESULT_SCHEMA)).validate(emitted)
        process_validator = jsonschema.Draft202012Validator(
            compat_schema(compat_dir, RAW_PROCESS_SCHEMA)
        )
        for process in emitted["process_results"]:
            process_validator.validate(process)
        assert ExperimentResult.model_validate(emitted) == result
