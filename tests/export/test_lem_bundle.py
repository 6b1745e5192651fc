"""LLenergyMeasure 0.7.0's results bundle: the mapping (pure) and the export, read back by
LLenergyMeasure 0.7.0's own loader."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.exceptions import UnsafePathError
from energy_ledger.export import lem
from energy_ledger.export.lem_bundle import (
    SOURCE_COLUMNS,
    export_bundles,
    lem_timeseries_bytes,
    write_bundle,
)
from energy_ledger.models import ExperimentResult, ThermalThrottleInfo
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store.results import load_result

LAWS = settings(max_examples=60, deadline=None)
NAME_RE = re.compile(r"^c1_[A-Za-z0-9._+-]+_[0-9a-f]{8}(_[0-9]+)?$")
COMPAT_SAMPLE = "gpt2_pytorch_v2.0.json"


# --------------------------------------------------------------------------------- helpers


def read_bundle(folder: Path) -> Any:
    """LLenergyMeasure 0.7.0's ``BundleReader.read``, with every warning an error."""
    bundle = pytest.importorskip(
        "llenergymeasure.results.bundle", reason="llenergymeasure==0.7.0 is not installed"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return bundle.BundleReader.read(folder)


def our_timeseries(rows: list[dict[str, Any]]) -> bytes:
    """Parquet bytes with exactly the columns of our ``aggregated/<id>.timeseries.parquet``."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    schema = pa.schema(
        [
            ("gpu", pa.string()),
            ("hostname", pa.string()),
            ("gpu_id", pa.int32()),
            ("t_sec", pa.int64()),
            ("in_window", pa.bool_()),
            ("power_w", pa.float64()),
            ("energy_mj", pa.float64()),
            ("temperature_c", pa.float64()),
            ("sm_util_pct", pa.float64()),
            ("memory_used_mb", pa.float64()),
            ("throttle_reasons", pa.int64()),
            ("samples", pa.int32()),
            ("requests", pa.int32()),
            ("output_tokens_per_sec", pa.float64()),
        ]
    )
    defaults = {"energy_mj": 1.0, "samples": 10, "requests": 1, "output_tokens_per_sec": 5.0}
    table = pa.Table.from_pylist([{**defaults, **r} for r in rows], schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def row(gpu: str, gpu_id: int, t_sec: int, *, in_window: bool = True, host: str = "h0") -> dict:
    return {
        "gpu": gpu,
        "hostname": host,
        "gpu_id": gpu_id,
        "t_sec": t_sec,
        "in_window": in_window,
        "power_w": 300.0 + t_sec % 7,
        "temperature_c": 55.0,
        "sm_util_pct": 90.0,
        "memory_used_mb": 2048.0,
        "throttle_reasons": 4 if t_sec % 2 else 0,
    }


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def result_with(**changes: Any) -> ExperimentResult:
    """A small valid result (no processes), with ``changes`` applied."""
    base: dict[str, Any] = {
        "experiment_id": "exp-1",
        "measurement_config_hash": "0123456789abcdef",
        "measurement_methodology": "total",
        "total_tokens": 300,
        "total_energy_j": 100.0,
        "total_inference_time_sec": 10.0,
        "avg_tokens_per_second": 30.0,
        "avg_energy_per_token_j": 0.5,
        "total_flops": 0.0,
        "start_time": "2026-01-01T00:00:00Z",
        "end_time": "2026-01-01T00:00:10Z",
        "effective_config": {"model": "org/tiny-model"},
    }
    return ExperimentResult.model_validate({**base, **changes})


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two replayed sweep experiments (the first's time series replaced by a hand-made one) and
    one partial result (which has none)."""
    root = tmp_path_factory.mktemp("lem") / "root"
    simulate(root, experiments=2, processes=2, requests=40, sweep=True)
    simulate(root, experiments=1, processes=2, requests=20, crash=1, prefix="crash")
    replay_root(root)
    recovery = recover_experiment(root / "raw" / "crash-0000")
    assert recovery.partial
    rows = [row("gpu:a", 0, t) for t in range(1000, 1004)] + [row("gpu:b", 1, 1001)]
    rows.append(row("gpu:a", 0, 999, in_window=False))
    (root / "aggregated" / "sim-0000.timeseries.parquet").write_bytes(our_timeseries(rows))
    return root


@pytest.fixture
def root(sim_root: Path, tmp_path: Path) -> Path:
    """A private copy of the simulated root, for tests that change it."""
    copy = tmp_path / "root"
    shutil.copytree(sim_root, copy, symlinks=True)
    return copy


# --------------------------------------------------------------------------------- mapping


class TestEngine:
    """``backend`` becomes 0.7.0's ``engine``."""

    @pytest.mark.parametrize(
        ("backend", "engine", "noted"),
        [
            ("pytorch", "transformers", False),
            ("PyTorch", "transformers", False),
            ("transformers", "transformers", False),
            ("vllm", "vllm", False),
            ("tensorrt", "tensorrt", False),
            ("sglang", "sglang", True),
            ("", "", True),
        ],
    )
    def test_table(self, backend: str, engine: str, noted: bool) -> None:
        """Known names map; an unknown one is kept as given, with a note."""
        got, note = lem.engine_of(backend)
        assert got == engine
        assert (note is not None) is noted

    def test_unknown_engine_is_a_measurement_warning(self) -> None:
        """The note reaches ``measurement_warnings`` with the export's prefix."""
        payload = lem.result_payload(result_with(backend="sglang"), timeseries=False)
        assert payload["engine"] == "sglang"
        assert any(
            w.startswith(lem.EXPORT_NOTE_PREFIX) and "sglang" in w
            for w in payload["measurement_warnings"]
        )


class TestThrottle:
    """``thermal_throttle`` becomes 0.7.0's two-axis ``throttle``."""

    @LAWS
    @given(
        flags=st.fixed_dictionaries(
            {k: st.booleans() for k in ("thermal", "power", "sw_thermal", "hw_thermal", "hw_power")}
        ),
        detected=st.booleans(),
    )
    def test_each_flag_lands_on_its_axis_and_losses_are_noted(
        self, flags: dict[str, bool], detected: bool
    ) -> None:
        """Each cause keeps its flag; a throttling 0.7.0 cannot show always leaves a note."""
        info = ThermalThrottleInfo(detected=detected, **flags)
        block, notes = lem.throttle_of(info)
        assert block["thermal"] == {"hw": info.hw_thermal, "sw": info.sw_thermal}
        assert block["power"] == {"hw": info.hw_power, "sw": info.power}
        shown = any(block["thermal"].values()) or any(block["power"].values())
        causeless_thermal = info.thermal and not (info.sw_thermal or info.hw_thermal)
        only_generic = info.detected and not (info.thermal or shown)
        assert bool(notes) == (causeless_thermal or only_generic)
        # Whatever throttling we saw is either visible in 0.7.0's block or noted.
        assert shown or notes or not (info.detected or info.thermal)

    @pytest.mark.parametrize(
        ("flags", "thermal", "power"),
        [
            ({"power": True, "detected": True}, (False, False), (False, True)),
            ({"hw_power": True, "detected": True}, (False, False), (True, False)),
            ({"sw_thermal": True, "thermal": True}, (False, True), (False, False)),
            ({"hw_thermal": True, "thermal": True}, (True, False), (False, False)),
            ({}, (False, False), (False, False)),
        ],
    )
    def test_table(
        self, flags: dict[str, bool], thermal: tuple[bool, bool], power: tuple[bool, bool]
    ) -> None:
        """NVML's cause bits map one to one: (hw, sw) per axis."""
        block, notes = lem.throttle_of(ThermalThrottleInfo(**flags))
        assert (block["thermal"]["hw"], block["thermal"]["sw"]) == thermal
        assert (block["power"]["hw"], block["power"]["sw"]) == power
        assert notes == []

    def test_generic_hardware_slowdown_is_noted(self) -> None:
        """Throttling seen only as NVML's generic slowdown has no 0.7.0 flag: a note says so."""
        _, notes = lem.throttle_of(ThermalThrottleInfo(detected=True))
        assert len(notes) == 1 and "hardware slowdown" in notes[0]


class TestNames:
    """Bundle folder names follow LLenergyMeasure's convention and are always safe."""

    @pytest.mark.parametrize(
        ("config_hash", "expected"),
        [
            ("9944baab4dabe390", "9944baab"),
            ("deadbeef", "deadbeef"),
            ("abc", None),
            ("", None),
            ("DEADBEEF00", None),
            ("sim0000000000000", None),
        ],
    )
    def test_hash8(self, config_hash: str, expected: str | None) -> None:
        """A hex hash gives its first 8 characters; anything else a digest of itself."""
        import hashlib

        want = expected or hashlib.sha256(config_hash.encode()).hexdigest()[:8]
        assert lem.hash8(config_hash) == want

    def test_name_of_a_result(self) -> None:
        """``c1_{model after its last /}-{engine}_{hash8}``, spaces and colons replaced."""
        result = result_with(effective_config={"model": "org/My Model:v1"})
        assert lem.bundle_name(result) == "c1_My_Model-v1-transformers_01234567"

    @LAWS
    @given(model=st.text(max_size=300), config_hash=st.text(max_size=40))
    def test_any_model_and_hash_give_one_safe_component(self, model: str, config_hash: str) -> None:
        """Whatever the model and hash, the name is one short, safe path component."""
        result = result_with(effective_config={"model": model}, measurement_config_hash=config_hash)
        name = lem.bundle_name(result)
        assert NAME_RE.fullmatch(name), name
        assert len(name) <= 3 + lem.SLUG_MAX_CHARS + 9

    def test_clashes_get_suffixes_in_id_order(self) -> None:
        """The same names whatever the order the results come in; the first id keeps the plain
        name."""
        results = [result_with(experiment_id=f"exp-{i}") for i in (3, 1, 2)]
        names = lem.bundle_names(results)
        base = lem.bundle_name(results[0])
        assert names == {"exp-1": base, "exp-2": f"{base}_1", "exp-3": f"{base}_2"}
        assert lem.bundle_names(reversed(results)) == names


class TestPayloads:
    """The JSON files hold what 0.7.0 requires and nothing it refuses."""

    def test_token_split_without_processes(self) -> None:
        """Without process results the output count comes from the per-token energy."""
        inputs, outputs, note = lem.token_split(result_with())
        assert (inputs, outputs) == (100, 200)
        assert note is not None and "avg_energy_per_token_j" in note
        assert lem.token_split(result_with(total_energy_j=0.0))[:2] == (None, 0)

    def test_required_keys_present_and_none_refused(self) -> None:
        """Every required key of 0.7.0's ExperimentResult, and only its fields."""
        experiment = pytest.importorskip("llenergymeasure.domain.experiment")
        model = experiment.ExperimentResult
        payload = lem.result_payload(result_with(), timeseries=False)
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert required <= payload.keys()
        assert payload.keys() <= set(model.model_fields)
        model.model_validate(payload)

    def test_no_environment_means_no_system_json(self) -> None:
        """``system.json`` is written only from an environment snapshot."""
        files = lem.bundle_files(result_with(), timeseries=False)
        assert set(files) == {lem.RESULT_FILE, lem.CONFIG_FILE}

    def test_baseline_power_moves_into_the_breakdown(self) -> None:
        """0.7.0 drops the top-level baseline power; the breakdown keeps it."""
        payload = lem.result_payload(
            result_with(baseline_power_w=60.0, energy_adjusted_j=40.0), timeseries=False
        )
        assert payload["energy_breakdown"]["baseline_power_w"] == 60.0
        assert payload["energy_per_token_mj_adjusted"] == pytest.approx(40.0 / 200 * 1000)


# --------------------------------------------------------------------------------- timeseries


class TestTimeseries:
    """Our time series becomes 0.7.0's ``timeseries.parquet``."""

    def test_columns_rows_and_metadata(self) -> None:
        """In-window rows, seconds from the first, sorted by (second, GPU), 0.7.0's types."""
        pq = pytest.importorskip("pyarrow.parquet")
        pa = pytest.importorskip("pyarrow")
        source = our_timeseries(
            [
                row("gpu:b", 1, 11),
                row("gpu:a", 0, 11),
                row("gpu:a", 0, 10),
                row("gpu:a", 0, 9, in_window=False),
            ]
        )
        data = lem_timeseries_bytes(source, experiment_id="e", declared_config_hash="h")
        table = pq.read_table(pa.BufferReader(data))
        assert table.column_names == [
            "timestamp_s",
            "gpu_index",
            "power_w",
            "temperature_c",
            "memory_used_mb",
            "memory_total_mb",
            "sm_utilisation_pct",
            "throttle_reasons",
        ]
        types = [str(t) for t in table.schema.types]
        assert types == ["double", "int32", *["float"] * 5, "int64"]
        assert table["timestamp_s"].to_pylist() == [0.0, 1.0, 1.0]
        assert table["gpu_index"].to_pylist() == [0, 0, 1]
        assert table["throttle_reasons"].to_pylist() == [0, 4, 4]
        assert table["memory_total_mb"].null_count == 3
        meta = table.schema.metadata
        assert meta[b"experiment_id"] == b"e" and meta[b"declared_config_hash"] == b"h"

    def test_same_cuda_index_on_two_hosts_is_renumbered(self) -> None:
        """Two GPUs with one ``gpu_id`` (two hosts) get distinct indices, named in metadata."""
        pq = pytest.importorskip("pyarrow.parquet")
        pa = pytest.importorskip("pyarrow")
        source = our_timeseries([row("gpu:x", 0, 5, host="h1"), row("gpu:y", 0, 5, host="h2")])
        table = pq.read_table(pa.BufferReader(lem_timeseries_bytes(
            source, experiment_id="e", declared_config_hash="h")))  # fmt: skip
        assert table["gpu_index"].to_pylist() == [0, 1]
        gpus = json.loads(table.schema.metadata[b"energy_ledger_gpus"])
        assert [(g["gpu"], g["hostname"]) for g in gpus] == [("gpu:x", "h1"), ("gpu:y", "h2")]

    def test_not_our_series_is_refused(self) -> None:
        """Bytes that are not Parquet, or lack our columns, are an error in words."""
        from energy_ledger.exceptions import LedgerError

        with pytest.raises(LedgerError, match="not a Parquet file"):
            lem_timeseries_bytes(b"nope", experiment_id="e", declared_config_hash="h")
        assert "t_sec" in SOURCE_COLUMNS


# --------------------------------------------------------------------------------- export


class TestExport:
    """``export_bundles`` over a simulated root, read back by LLenergyMeasure 0.7.0."""

    def test_every_bundle_loads_and_matches_our_result(self, root: Path) -> None:
        """Each bundle loads without a warning and carries our figures."""
        report = export_bundles(root)
        assert report.problems == []
        assert report.out == root / "exports" / "lem-bundle"
        assert report.written == 3 and len(report.folders) == 3
        for folder in report.folders:
            assert NAME_RE.fullmatch(folder.name)
            loaded = read_bundle(folder)
            res = loaded.result
            config = json.loads((folder / lem.CONFIG_FILE).read_bytes())
            eid = config["experiment_id"]
            partial = config["energy_ledger"]["partial"]
            ours = json.loads(
                (root / "aggregated" / f"{eid}{'.partial' if partial else ''}.json").read_bytes()
            )
            for key in (
                "experiment_id",
                "total_tokens",
                "total_energy_j",
                "energy_adjusted_j",
                "energy_per_device_j",
                "total_inference_time_sec",
                "avg_tokens_per_second",
                "avg_energy_per_token_j",
                "total_flops",
                "warmup_excluded_samples",
            ):
                assert getattr(res, key) == ours[key], key
            procs = ours["process_results"]
            assert res.input_tokens == sum(p["inference_metrics"]["input_tokens"] for p in procs)
            assert res.output_tokens == sum(p["inference_metrics"]["output_tokens"] for p in procs)
            assert res.input_tokens + res.output_tokens == res.total_tokens
            assert res.energy_per_token_mj_total == pytest.approx(
                ours["total_energy_j"] / res.output_tokens * 1000
            )
            assert res.declared_config_hash == ours["measurement_config_hash"]
            assert config["declared_config_hash"] == ours["measurement_config_hash"]
            assert res.engine == "transformers" and config["engine"] == "transformers"
            assert res.start_time == datetime.fromisoformat(ours["start_time"])
            assert res.end_time == datetime.fromisoformat(ours["end_time"])
            latency = dataclasses.asdict(res.latency_stats)
            latency.pop("measurement_mode")
            assert latency == ours["latency_stats"]
            tt = ours["thermal_throttle"]
            assert (res.throttle.thermal.hw, res.throttle.thermal.sw) == (
                tt["hw_thermal"],
                tt["sw_thermal"],
            )
            assert (res.throttle.power.hw, res.throttle.power.sw) == (tt["hw_power"], tt["power"])
            assert res.throttle.throttle_timestamps == tt["throttle_timestamps"]
            assert res.energy_breakdown.baseline_power_w == ours["baseline_power_w"]
            assert res.aggregation.num_processes == ours["aggregation"]["num_processes"]
            assert res.runner_provenance.mode == "process"
            assert loaded.environment is not None
            env = ours["environment_snapshot"]["hardware"]
            assert loaded.environment.hardware.gpu.name == env["gpu"]["name"]
            assert (
                loaded.environment.hardware.cuda.driver_supported_version == env["cuda"]["version"]
            )
            assert config["energy_ledger"]["run_ids"] == [ours["aggregation"]["run_id"]]
            assert config["declared_config"] == ours["effective_config"]
            assert (res.timeseries is not None) == (folder / lem.TIMESERIES_FILE).is_file()
            ours_series = root / "aggregated" / f"{eid}.timeseries.parquet"
            assert (res.timeseries == lem.TIMESERIES_FILE) == ours_series.is_file()

    def test_partial_result_exports_flagged(self, root: Path) -> None:
        """A partial result is exported, its first warning and config.json saying so."""
        report = export_bundles(root)
        (outcome,) = [o for o in report.outcomes if o.experiment_id == "crash-0000"]
        assert outcome.folder is not None
        loaded = read_bundle(outcome.folder)
        assert loaded.result.measurement_warnings[0] == lem.EXPORT_NOTE_PREFIX + lem.PARTIAL_NOTE
        assert loaded.config["energy_ledger"]["partial"] is True
        assert lem.PARTIAL_NOTE in loaded.config["energy_ledger"]["export_notes"]

    def test_same_hash_bundles_get_suffixes(self, root: Path) -> None:
        """All three simulated experiments share a config hash: suffixes follow the ids."""
        report = export_bundles(root)
        names = {o.experiment_id: o.folder.name for o in report.outcomes if o.folder}
        base = names["crash-0000"]
        assert names == {"crash-0000": base, "sim-0000": f"{base}_1", "sim-0001": f"{base}_2"}

    def test_deterministic_bytes_and_second_export_writes_nothing(
        self, root: Path, tmp_path: Path
    ) -> None:
        """Two exports give the same bytes; exporting again changes no file."""
        first = export_bundles(root, tmp_path / "one")
        second = export_bundles(root, tmp_path / "two")
        assert tree_bytes(first.out) == tree_bytes(second.out)
        stats = {p: os.stat(p) for p in first.out.rglob("*")}
        again = export_bundles(root, tmp_path / "one")
        assert (again.written, again.unchanged) == (0, 3)
        assert {p: (s.st_ino, s.st_mtime_ns) for p, s in stats.items()} == {
            p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in first.out.rglob("*")
        }

    def test_a_vanished_time_series_is_removed_from_the_bundle(self, root: Path) -> None:
        """When our time series goes, the bundle's copy goes and ``timeseries`` is null."""
        export_bundles(root)
        (root / "aggregated" / "sim-0000.timeseries.parquet").unlink()
        report = export_bundles(root)
        (outcome,) = [o for o in report.outcomes if o.experiment_id == "sim-0000"]
        assert outcome.status == "written" and outcome.folder is not None
        assert not (outcome.folder / lem.TIMESERIES_FILE).exists()
        assert read_bundle(outcome.folder).result.timeseries is None

    def test_unreadable_result_is_a_problem_not_a_traceback(self, root: Path) -> None:
        """A broken result file is named in ``problems``; the others are still exported."""
        (root / "aggregated" / "sim-0001.json").write_bytes(b"{not json")
        report = export_bundles(root)
        assert len(report.problems) == 1 and "sim-0001.json" in report.problems[0]
        assert "Traceback" not in report.problems[0]
        assert {o.experiment_id: o.status for o in report.outcomes}["sim-0001"] == "failed"
        assert report.written == 2

    def test_broken_time_series_is_a_problem_and_the_bundle_is_still_written(
        self, root: Path
    ) -> None:
        """A time series that cannot be converted leaves the bundle without one."""
        (root / "aggregated" / "sim-0000.timeseries.parquet").write_bytes(b"garbage")
        report = export_bundles(root)
        assert len(report.problems) == 1 and "sim-0000.timeseries.parquet" in report.problems[0]
        assert report.written == 3


class TestUnsafeOutput:
    """Nothing is written through a symbolic link or into a folder the pipeline owns."""

    def test_output_folder_that_is_a_link_is_refused(self, root: Path, tmp_path: Path) -> None:
        """``out`` as a link: refused, nothing written where it leads."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "out").symlink_to(elsewhere)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            export_bundles(root, tmp_path / "out")
        assert list(elsewhere.iterdir()) == []

    def test_linked_exports_folder_is_refused(self, root: Path, tmp_path: Path) -> None:
        """The default ``ROOT/exports`` as a link: refused."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (root / "exports").symlink_to(elsewhere)
        with pytest.raises(UnsafePathError):
            export_bundles(root)
        assert list(elsewhere.iterdir()) == []

    def test_bundle_folder_that_is_a_link_is_refused(self, root: Path, tmp_path: Path) -> None:
        """A bundle folder pre-made as a link: that bundle is a problem, the rest written."""
        out = tmp_path / "out"
        names = lem.bundle_names(
            load_result(p) for p in sorted((root / "aggregated").glob("sim-000?.json"))
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        out.mkdir()
        (out / names["sim-0000"]).symlink_to(elsewhere)
        report = export_bundles(root, out)
        assert len(report.problems) == 1 and "symbolic link" in report.problems[0]
        assert list(elsewhere.iterdir()) == []
        assert report.written == 2

    def test_file_link_in_a_bundle_is_replaced_not_followed(
        self, root: Path, tmp_path: Path
    ) -> None:
        """A bundle file that is a link is replaced by a real file; its target is untouched."""
        report = export_bundles(root, tmp_path / "out")
        folder = report.folders[0]
        victim = tmp_path / "victim.json"
        victim.write_bytes(b"keep")
        (folder / lem.CONFIG_FILE).unlink()
        (folder / lem.CONFIG_FILE).symlink_to(victim)
        export_bundles(root, tmp_path / "out")
        assert victim.read_bytes() == b"keep"
        assert not (folder / lem.CONFIG_FILE).is_symlink()

    @pytest.mark.parametrize("inner", ["raw", "aggregated", ".energy-ledger"])
    def test_output_inside_the_pipeline_folders_is_refused(self, root: Path, inner: str) -> None:
        """Bundles never land among the logs, the results or the daemon's state."""
        with pytest.raises(UnsafePathError, match="inside"):
            export_bundles(root, root / inner / "bundles")


class TestCompatSample:
    """LLenergyMeasure's own schema-2.0 sample, converted and loaded by 0.7.0."""

    def test_sample_loads(self, compat_dir: Path, tmp_path: Path) -> None:
        """The sample's figures survive; its token split is recovered from the energy."""
        path = compat_dir / COMPAT_SAMPLE
        ours = json.loads(path.read_bytes())
        result = load_result(path)
        folder = tmp_path / lem.bundle_name(result)
        files = lem.bundle_files(result, timeseries=False)
        write_bundle(folder, {n: lem.to_json_bytes(p) for n, p in files.items()})
        assert folder.name == f"c1_gpt2-transformers_{ours['measurement_config_hash'][:8]}"
        loaded = read_bundle(folder)
        res = loaded.result
        assert res.declared_config_hash == ours["measurement_config_hash"]
        assert res.engine == "transformers"
        assert res.total_energy_j == ours["total_energy_j"]
        assert res.energy_per_device_j == ours["energy_per_device_j"]
        assert res.output_tokens == round(ours["total_energy_j"] / ours["avg_energy_per_token_j"])
        assert res.input_tokens + res.output_tokens == ours["total_tokens"]
        assert res.start_time == datetime.fromisoformat(ours["start_time"])
        assert res.throttle.detected is ours["thermal_throttle"]["detected"]
        assert loaded.environment is not None
        assert loaded.config["declared_config"] == ours["effective_config"]


class TestDocs:
    """docs/data.md's section on the bundle shows code that works."""

    def test_loading_snippet_runs(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The section's loading example, run in an exported root, prints one line a bundle."""
        pytest.importorskip("llenergymeasure.results.bundle")
        doc = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text("utf-8")
        section = doc.split("## LLenergyMeasure's results bundle", 1)[1].split("\n## ", 1)[0]
        blocks = section.split("```")[1::2]
        (snippet,) = [b for b in blocks if "BundleReader" in b]
        report = export_bundles(root)
        monkeypatch.chdir(root)
        exec(compile(snippet, "docs/data.md", "exec"), {})
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in lines] == [f.name for f in sorted(report.folders)]
