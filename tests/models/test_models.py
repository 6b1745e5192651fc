"""Tests for the schema-2.0 pydantic models in energy_ledger.models."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from energy_ledger.models import (
    SCHEMA_VERSION,
    AggregationMetadata,
    ComputeMetrics,
    CPUEnvironment,
    CUDAEnvironment,
    EnergyBreakdown,
    EnergyMetrics,
    EnvironmentMetadata,
    EnvironmentSnapshot,
    ExperimentResult,
    GPUEnvironment,
    InferenceMetrics,
    LatencyStatistics,
    MultiGPUMetrics,
    RawProcessResult,
    ThermalThrottleInfo,
    Timestamps,
    WarmupResult,
)
from tests.helpers import RAW_PROCESS_SCHEMA, RESULT_SCHEMA, compat_schema

GPT2_FILE = "gpt2_pytorch_v2.0.json"
START = datetime(2026, 3, 13, 14, 21, 11, 145237, tzinfo=UTC)
END = datetime(2026, 3, 13, 14, 21, 15, 570627, tzinfo=UTC)


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(instance)


def _raw_process(index: int = 0) -> RawProcessResult:
    return RawProcessResult(
        experiment_id="exp-1",
        process_index=index,
        gpu_id=index,
        gpu_name="NVIDIA H100",
        config_name="cfg",
        model_name="gpt2",
        timestamps=Timestamps(start=START, end=END, duration_sec=4.4),
        inference_metrics=InferenceMetrics(
            total_tokens=960,
            input_tokens=320,
            output_tokens=640,
            inference_time_sec=2.1,
            tokens_per_second=457.1,
            latency_per_token_ms=2.2,
            latency_measurements={"ttft_ms": [10.5, 11.0]},
        ),
        energy_metrics=EnergyMetrics(total_energy_j=114.0, duration_sec=2.1),
        compute_metrics=ComputeMetrics(flops_total=2.4e11),
        effective_config={"model": "gpt2", "n": 5},
        per_request_latencies_ms=[1.0, 2.5],
        energy_breakdown=EnergyBreakdown(raw_j=114.0, baseline_timestamp=START),
        thermal_throttle=ThermalThrottleInfo(max_temperature_c=61.0),
        warmup_result=WarmupResult(
            converged=True, final_cv=0.03, iterations_completed=5, target_cv=0.05, max_prompts=20
        ),
    )


def _experiment() -> ExperimentResult:
    hardware = EnvironmentMetadata(
        gpu=GPUEnvironment(name="NVIDIA H100", vram_total_mb=81559.0),
        cuda=CUDAEnvironment(version="12.4", driver_version="550.54"),
        cpu=CPUEnvironment(platform="Linux"),
        collected_at=START,
    )
    return ExperimentResult(
        experiment_id="exp-1",
        measurement_config_hash="abc123",
        measurement_methodology="steady_state",
        steady_state_window=(0.5, 3.5),
        total_tokens=1920,
        total_energy_j=228.0,
        total_inference_time_sec=4.2,
        avg_tokens_per_second=457.1,
        avg_energy_per_token_j=0.11875,
        total_flops=4.8e11,
        energy_per_device_j=[114.0, 114.0],
        energy_breakdown=EnergyBreakdown(raw_j=228.0, adjusted_j=70.0, baseline_timestamp=START),
        multi_gpu=MultiGPUMetrics(
            num_gpus=2,
            energy_per_gpu_j=[114.0, 114.0],
            energy_total_j=228.0,
            energy_per_output_token_j=0.178,
        ),
        environment_snapshot=EnvironmentSnapshot(
            hardware=hardware,
            python_version="3.11.7",
            installed_packages=["pydantic==2.12.5"],
            tool_version="0.1.0",
        ),
        start_time=START,
        end_time=END,
        process_results=[_raw_process(0), _raw_process(1)],
        aggregation=AggregationMetadata(num_processes=2, ledger_events=42),
        latency_stats=LatencyStatistics(
            ttft_mean_ms=10.0,
            ttft_median_ms=9.5,
            ttft_p95_ms=14.0,
            ttft_p99_ms=15.0,
            ttft_min_ms=8.0,
            ttft_max_ms=16.0,
            ttft_samples=10,
        ),
    )


class TestGpt2Compat:
    """The real LLenergyMeasure gpt2 result loads and round-trips."""

    def test_round_trip_is_exact(self, compat_dir: Path) -> None:
        """Validating and dumping the gpt2 file reproduces its JSON values and key order."""
        text = (compat_dir / GPT2_FILE).read_text()
        dumped = ExperimentResult.model_validate_json(text).model_dump(mode="json")
        expected = json.loads(text)
        assert dumped == expected
        assert json.dumps(dumped) == json.dumps(expected)

    def test_naive_and_aware_datetimes_are_kept(self, compat_dir: Path) -> None:
        """Naive timestamps stay naive and the aware baseline timestamp keeps UTC."""
        result = ExperimentResult.model_validate_json((compat_dir / GPT2_FILE).read_text())
        assert result.start_time.tzinfo is None
        assert result.energy_breakdown is not None
        assert result.energy_breakdown.baseline_timestamp is not None
        assert result.energy_breakdown.baseline_timestamp.utcoffset() is not None

    def test_gpt2_file_matches_compat_schema(self, compat_dir: Path) -> None:
        """The gpt2 file itself is valid against the compat schema, ignoring formats."""
        schema = compat_schema(compat_dir, RESULT_SCHEMA)
        jsonschema.Draft202012Validator(schema).validate(
            json.loads((compat_dir / GPT2_FILE).read_text())
        )


class TestExperimentResult:
    """ExperimentResult construction, schema conformance and immutability."""

    def test_dump_validates_against_compat_schema(self, compat_dir: Path) -> None:
        """A constructed result dumped to JSON mode satisfies the compat JSON Schema."""
        schema = compat_schema(compat_dir, RESULT_SCHEMA)
        _validate(_experiment().model_dump(mode="json"), schema)

    def test_key_order_matches_compat_schema(self, compat_dir: Path) -> None:
        """Dumped top-level keys follow the compat schema's property order exactly."""
        schema = compat_schema(compat_dir, RESULT_SCHEMA)
        assert list(_experiment().model_dump()) == list(schema["properties"])

    def test_schema_version_default(self) -> None:
        """The schema version defaults to the module constant 2.0."""
        assert _experiment().schema_version == SCHEMA_VERSION == "2.0"

    def test_extra_top_level_key_rejected(self) -> None:
        """An unknown top-level key fails validation."""
        data = _experiment().model_dump(mode="json")
        data["unexpected"] = 1
        with pytest.raises(ValidationError):
            ExperimentResult.model_validate(data)

    def test_is_frozen(self) -> None:
        """Assigning to a field of an ExperimentResult raises."""
        result = _experiment()
        with pytest.raises(ValidationError):
            result.total_energy_j = 0.0  # type: ignore[misc]

    def test_invalid_methodology_rejected(self) -> None:
        """A methodology outside the three allowed values fails validation."""
        data = _experiment().model_dump(mode="json")
        data["measurement_methodology"] = "peak"
        with pytest.raises(ValidationError):
            ExperimentResult.model_validate(data)

    def test_json_round_trip(self) -> None:
        """A constructed result survives a JSON dump and reload unchanged."""
        result = _experiment()
        assert ExperimentResult.model_validate_json(result.model_dump_json()) == result


class TestRawProcessResult:
    """RawProcessResult schema conformance, strictness and immutability."""

    def test_dump_validates_against_compat_schema(self, compat_dir: Path) -> None:
        """A constructed process result satisfies the raw-process compat JSON Schema."""
        schema = compat_schema(compat_dir, RAW_PROCESS_SCHEMA)
        _validate(_raw_process().model_dump(mode="json"), schema)

    def test_extra_top_level_key_rejected(self) -> None:
        """An unknown top-level key fails validation."""
        data = _raw_process().model_dump(mode="json")
        data["unexpected"] = 1
        with pytest.raises(ValidationError):
            RawProcessResult.model_validate(data)

    def test_is_frozen(self) -> None:
        """Assigning to a field of a RawProcessResult raises."""
        with pytest.raises(ValidationError):
            _raw_process().gpu_id = 3  # type: ignore[misc]


class TestNestedModels:
    """Extra-key policy of the nested models."""

    def test_aggregation_keeps_extra_keys(self) -> None:
        """AggregationMetadata keeps unknown keys and dumps them after the known ones."""
        dumped = AggregationMetadata(num_processes=2, ledger_events=42).model_dump()
        assert dumped["ledger_events"] == 42
        assert list(dumped)[-1] == "ledger_events"

    def test_nested_models_ignore_extra_keys(self) -> None:
        """Other nested models drop unknown keys so older or newer files still load."""
        gpu = GPUEnvironment.model_validate({"name": "A100", "vram_total_mb": 1.0, "new": 1})
        assert "new" not in gpu.model_dump()

    def test_warmup_wait_must_be_non_negative(self) -> None:
        """A negative thermal floor wait fails validation."""
        with pytest.raises(ValidationError):
            WarmupResult(
                converged=True,
                final_cv=0.0,
                iterations_completed=1,
                target_cv=0.05,
                max_prompts=1,
                thermal_floor_wait_s=-1.0,
            )
