"""The report's fast result reader: its fields are the model's, its values the file's.

Field paths are checked against the pydantic ``ExperimentResult`` by walking both type trees;
the names the model leaves free-form (``aggregation``'s extra keys, ``latency_measurements``)
are checked against what the aggregator really writes. Values are compared with the same file
read by ``json.load``.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from pydantic import BaseModel

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import FormatError
from energy_ledger.models import ExperimentResult
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.report.digest import (
    CompletenessDigest,
    GpuDigest,
    ResultDigest,
    decode_digest,
)
from energy_ledger.report.digest import LatencyMeasurements as LatencyDigest
from energy_ledger.simulate import simulate
from energy_ledger.store.exporters import result_to_json_bytes

T0 = 1_700_000_000.0


def _inner(tp: Any, base: type) -> type | None:
    """The first subclass of ``base`` inside a type (through ``X | None``, lists, tuples)."""
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias) and issubclass(tp, base):
        return tp
    for arg in typing.get_args(tp):
        found = _inner(arg, base)
        if found is not None:
            return found
    return None


def _walk(
    struct: type[msgspec.Struct], model: type[BaseModel], path: str, found: dict[str, list[str]]
) -> None:
    """Sort every digest field path into missing / extra (model allows it) / free-form."""
    for f in msgspec.structs.fields(struct):
        p = f"{path}.{f.name}" if path else f.name
        declared = model.model_fields.get(f.name)
        if declared is None:
            kind = "extra" if model.model_config.get("extra") == "allow" else "missing"
            found[kind].append(p)
            continue
        found["checked"].append(p)
        sub = _inner(f.type, msgspec.Struct)
        if sub is None:
            continue
        target = _inner(declared.annotation, BaseModel)
        if target is None:
            found["free-form"].append(p)
        else:
            _walk(sub, target, p, found)


def _paths() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"missing": [], "extra": [], "free-form": [], "checked": []}
    _walk(ResultDigest, ExperimentResult, "", found)
    return found


def _log(index: int, world: int, run_id: str, **started: Any) -> bytes:
    """A closed 10 s window with two requests (TTFT and ITLs) and a counter reading."""
    bodies: list[tuple[float, dict[str, Any]]] = [
        (0.0, {"type": "process_started", "experiment_id": "exp", "run_id": run_id,
               "process_index": index, "world_size": world, "gpu_id": index,
               "gpu_uuid": f"GPU-{index}", "hostname": "node", **started}),
        (0.5, {"type": "baseline", "power_w": 50.0, "duration_sec": 0.4}),
        (1.0, {"type": "window_started", "energy_mj": 1_000}),
        (2.0, {"type": "request", "latency_ms": 30.0, "input_tokens": 4, "output_tokens": 5,
               "ttft_ms": 6.0, "itl_ms": [6.0, 6.0, 6.0, 6.0]}),
        (3.0, {"type": "request", "latency_ms": 20.0, "input_tokens": 3, "output_tokens": 2,
               "ttft_ms": 10.0, "itl_ms": [10.0]}),
        (11.0, {"type": "window_ended", "energy_mj": 2_001_000}),
    ]  # fmt: skip
    return b"".join(
        orjson.dumps({"v": 1, "seq": seq, "t": T0 + t, **body}) + b"\n"
        for seq, (t, body) in enumerate(bodies)
    )


def _summaries(*runs: str) -> list[ProcessSummary]:
    return [
        summarize_process(replay_bytes(_log(i, len(runs), run)).state) for i, run in enumerate(runs)
    ]


@pytest.fixture(scope="module")
def result_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real result: three simulated processes replayed by the pipeline."""
    root = tmp_path_factory.mktemp("digest")
    simulate(root, processes=3, requests=25, seed=2)
    (outcome,) = replay_root(root)
    assert outcome.path is not None
    return outcome.path


@pytest.fixture(scope="module")
def partial_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A partial result: two simulated processes, the second crashed, recovered."""
    root = tmp_path_factory.mktemp("partial")
    simulate(root, processes=2, requests=10, seed=3, crash=1)
    recovery = recover_experiment(root / "raw" / "sim-0000")
    assert recovery.partial
    return recovery.path


class TestFieldPaths:
    """Every field the digest reads is a field of the schema-2.0 result."""

    def test_every_declared_path_is_in_the_model(self) -> None:
        """No digest path is unknown to ``ExperimentResult`` (nested models followed)."""
        found = _paths()
        assert found["missing"] == []
        # The walk went down the nested models, the process results' RawProcessResult included.
        for path in (
            "process_results.energy_metrics.duration_sec",
            "process_results.inference_metrics.output_tokens",
            "extended_metrics.request_latency.e2e_latency_samples",
            "aggregation.num_processes",
        ):
            assert path in found["checked"]

    def test_the_undeclared_names_are_the_aggregators_extras(self) -> None:
        """The only names the model does not declare are ``aggregation``'s extra keys and the
        free-form ``latency_measurements``; the tests below check those against real output."""
        found = _paths()
        assert sorted(found["extra"]) == [
            "aggregation.completeness",
            "aggregation.gpus",
            "aggregation.output_tokens_per_second",
            "aggregation.partial",
            "aggregation.run_id",
        ]
        assert found["free-form"] == ["process_results.inference_metrics.latency_measurements"]

    @pytest.mark.parametrize("key", ["gpus", "output_tokens_per_second", "partial", "run_id"])
    def test_extras_of_a_complete_result_are_written(self, key: str) -> None:
        """``aggregate_results`` writes each of these ``aggregation`` keys."""
        result = aggregate_results(_summaries("run-a", "run-a"), "exp")
        assert result.aggregation is not None
        assert key in (result.aggregation.model_extra or {})

    def test_a_recovered_result_writes_its_completeness(self, partial_file: Path) -> None:
        """A partial result (``recover``) carries ``aggregation.completeness`` with every key of
        ``CompletenessDigest``, and the digest reads its reason."""
        loaded = json.loads(partial_file.read_bytes())
        aggregation = loaded["aggregation"]
        assert aggregation["partial"] is True
        assert set(CompletenessDigest.__struct_fields__) <= set(aggregation["completeness"])
        reason = aggregation["completeness"]["error_message"]
        assert reason
        digest = decode_digest(partial_file.read_bytes())
        assert digest.partial
        assert digest.aggregation is not None and digest.aggregation.completeness is not None
        assert digest.aggregation.completeness.error_message == reason

    def test_gpu_entries_have_the_digests_keys(self, result_file: Path) -> None:
        """Every ``GpuDigest`` field is a key of each written ``aggregation.gpus`` entry."""
        gpus = json.loads(result_file.read_bytes())["aggregation"]["gpus"]
        assert gpus
        for entry in gpus:
            assert set(GpuDigest.__struct_fields__) <= set(entry)

    def test_latency_measurements_have_the_digests_keys(self, result_file: Path) -> None:
        """Every ``LatencyMeasurements`` field is a key of the written payload."""
        for p in json.loads(result_file.read_bytes())["process_results"]:
            payload = p["inference_metrics"]["latency_measurements"]
            assert set(LatencyDigest.__struct_fields__) <= set(payload)


def _compare(digest: Any, loaded: Any, path: str, seen: list[str]) -> None:
    """Every value the digest holds equals the file's, where the file has the key."""
    if isinstance(digest, dict) and isinstance(loaded, dict):
        for key, value in digest.items():
            if key in loaded:
                _compare(value, loaded[key], f"{path}.{key}", seen)
    elif isinstance(digest, list | tuple) and isinstance(loaded, list):
        assert len(digest) == len(loaded), path
        for i, (a, b) in enumerate(zip(digest, loaded, strict=True)):
            _compare(a, b, f"{path}[{i}]", seen)
    else:
        assert digest == loaded, path
        assert type(digest) is type(loaded) or {type(digest), type(loaded)} <= {int, float}, path
        seen.append(path)


class TestValues:
    """The digest of a real result holds the values ``json.load`` reads from it."""

    @pytest.mark.parametrize("which", ["result_file", "partial_file"])
    def test_every_field_equals_the_file(self, request: pytest.FixtureRequest, which: str) -> None:
        """All fields, nested ones included, equal the loaded JSON (hundreds of leaves)."""
        data = request.getfixturevalue(which).read_bytes()
        seen: list[str] = []
        _compare(msgspec.to_builtins(decode_digest(data)), json.loads(data), "", seen)
        assert len(seen) > 200

    @pytest.mark.parametrize(
        "path",
        [
            ("experiment_id",),
            ("total_energy_j",),
            ("avg_energy_per_token_j",),
            ("energy_adjusted_j",),
            ("start_time",),
            ("process_results", 1, "energy_metrics", "duration_sec"),
            ("process_results", 2, "inference_metrics", "output_tokens"),
            ("process_results", 0, "inference_metrics", "latency_measurements", "request_count"),
            ("aggregation", "gpus", 1, "energy_j"),
            ("aggregation", "output_tokens_per_second"),
            ("latency_stats", "ttft_p95_ms"),
            ("extended_metrics", "request_latency", "e2e_latency_p99_ms"),
            ("thermal_throttle", "throttle_duration_sec"),
        ],
    )
    def test_named_fields(self, result_file: Path, path: tuple[Any, ...]) -> None:
        """Field by field, by attribute on the digest and by key in the file."""
        value: Any = decode_digest(result_file.read_bytes())
        loaded: Any = json.loads(result_file.read_bytes())
        for step in path:
            value = value[step] if isinstance(step, int) else getattr(value, step)
            loaded = loaded[step]
        assert loaded is not None
        assert value == loaded

    def test_a_foreign_result_decodes(self, compat_dir: Path) -> None:
        """LLenergyMeasure's own result file decodes, and its figures are the file's."""
        data = (compat_dir / "gpt2_pytorch_v2.0.json").read_bytes()
        digest = decode_digest(data)
        loaded = json.loads(data)
        assert digest.experiment_id == loaded["experiment_id"]
        assert digest.total_energy_j == loaded["total_energy_j"]
        assert len(digest.process_results) == len(loaded["process_results"])

    def test_a_result_of_two_runs_decodes(self) -> None:
        """Processes of two runs make a result (with a warning); its digest must decode."""
        result = aggregate_results(_summaries("run-a", "run-b"), "exp")
        digest = decode_digest(result_to_json_bytes(result))
        assert digest.total_energy_j == result.total_energy_j

    def test_a_legacy_experiments_result_decodes(self, tmp_path: Path) -> None:
        """A folder of LLenergyMeasure ``process_N.json`` files, replayed by the pipeline."""
        folder = tmp_path / "raw" / "leg-0000"
        folder.mkdir(parents=True)
        for i, summary in enumerate(_summaries("run-a", "run-a")):
            raw = summary.raw.model_copy(update={"experiment_id": "leg-0000"})
            (folder / f"process_{i}.json").write_text(raw.model_dump_json())
            (folder / f".completed_{i}").write_text("")
        (outcome,) = replay_root(tmp_path)
        assert outcome.path is not None
        data = outcome.path.read_bytes()
        assert decode_digest(data).total_energy_j == json.loads(data)["total_energy_j"]


class TestBadBytes:
    """Bytes that are not a result are a FormatError, in words, not a msgspec traceback."""

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"not json",
            b"[]",
            b"{}",  # no experiment_id
            b'{"experiment_id": 5}',
            b'{"experiment_id": "x", "total_energy_j": "lots"}',
            b'{"experiment_id": "x", "process_results": [{"process_index": 0}]}',
            b'{"experiment_id": "x", "aggregation": {"gpus": [{"energy_j": 1.0}]}}',
            b'{"experiment_id": "x"',
            b"[" * 100_000,
        ],
    )
    def test_format_error(self, data: bytes) -> None:
        """The message names the problem and the file; msgspec's error is not chained."""
        with pytest.raises(FormatError) as caught:
            decode_digest(data, path="aggregated/x.json")
        message = str(caught.value)
        assert message.startswith("aggregated/x.json: not a result file: ")
        assert len(message) > len("aggregated/x.json: not a result file: ")
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__

    def test_a_torn_real_file(self, result_file: Path) -> None:
        """A result file cut short (a copy in progress) is a FormatError too."""
        data = result_file.read_bytes()
        with pytest.raises(FormatError, match="not a result file"):
            decode_digest(data[: len(data) // 2])

    def test_the_field_is_named(self) -> None:
        """A wrong type deep inside says where (``$.process_results[0]...``)."""
        bad = {"experiment_id": "x", "process_results": [
            {"process_index": 0, "gpu_id": "zero", "inference_metrics": {}, "energy_metrics": {}}
        ]}  # fmt: skip
        with pytest.raises(FormatError, match=r"process_results\[0\]\.gpu_id"):
            decode_digest(json.dumps(bad).encode())
