"""The Parquet dataset of all results (export/dataset.py), read back with polars."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.export import dataset
from energy_ledger.export.dataset import (
    CSV_TYPES,
    DATASET_NAME,
    EXTRA_COLUMNS,
    MARKER_KEY,
    SCHEMA,
    SOURCES_NAME,
    DatasetExport,
    export_dataset,
    fragment_bytes,
)
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store.exporters import CSV_HEADER
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.lock import outputs_lock
from energy_ledger.store.table import sync_table

IDS = ["sim-0000", "sim-0001", "sim-0002", "sim-0003"]

POLARS_TYPES = {
    str(pa.string()): pl.String,
    str(pa.int64()): pl.Int64,
    str(pa.float64()): pl.Float64,
    str(pa.bool_()): pl.Boolean,
    str(pa.timestamp("us", tz="UTC")): pl.Datetime("us", "UTC"),
}


def make_root(path: Path) -> Path:
    """Four simulated experiments of two processes (batch sizes 1, 2, 4, 8), replayed."""
    simulate(path, experiments=4, processes=2, requests=40, sweep=True)
    replay_root(path)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("template") / "root")


@pytest.fixture
def root(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the simulated root, not yet exported."""
    return Path(shutil.copytree(template, tmp_path / "root", symlinks=True))


def agg(root: Path) -> Path:
    return root / "aggregated"


def folder(root: Path) -> Path:
    return agg(root) / DATASET_NAME


def read_rows(root: Path) -> dict[str, dict[str, Any]]:
    frame = pl.read_parquet(folder(root) / "*.parquet")
    return {row["experiment_id"]: row for row in frame.iter_rows(named=True)}


def fragment_ids(root: Path) -> dict[str, tuple[int, int]]:
    """Each fragment's (inode, mtime in ns): a rewrite changes the inode."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder(root).glob("*.parquet"))
    }


def replace_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a result file as the pipeline does: a new file renamed over the old one."""
    data = json.loads(path.read_bytes())
    edit(data)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def make_partial(root: Path, experiment_id: str) -> Path:
    """``<id>.partial.json``: the complete result marked partial (as ``recover`` marks it)."""
    partial = agg(root) / f"{experiment_id}.partial.json"
    data = json.loads((agg(root) / f"{experiment_id}.json").read_bytes())
    data["aggregation"]["partial"] = True
    partial.write_text(json.dumps(data, indent=2))
    return partial


def counts(result: DatasetExport) -> tuple[int, int, int, int]:
    return (result.rows, result.written, result.unchanged, result.removed)


class TestRows:
    """Each row holds what the result JSON and the CSV say, with the right types."""

    def test_every_row_matches_the_csv_and_the_json(self, root: Path) -> None:
        """Every CSV cell and every added column agrees with the CSV and the JSON."""
        result = export_dataset(root)
        assert counts(result) == (4, 4, 0, 0)
        assert result.problems == ()
        rows = read_rows(root)
        with (agg(root) / "results.csv").open(newline="") as fh:
            csv_rows = {r["experiment_id"]: r for r in csv.DictReader(fh)}
        assert sorted(rows) == sorted(csv_rows) == IDS
        batch_sizes = set()
        for experiment_id, row in rows.items():
            for name in CSV_HEADER:
                assert_cell(name, row[name], csv_rows[experiment_id][name])
            doc = json.loads((agg(root) / f"{experiment_id}.json").read_bytes())
            assert_json(row, doc)
            batch_sizes.add(row["config_params"]["batch_size"])
        assert batch_sizes == {1.0, 2.0, 4.0, 8.0}

    def test_columns_are_the_csv_columns_then_the_extra_ones(self, root: Path) -> None:
        """The CSV's names in its order come first, each with its declared type."""
        export_dataset(root)
        schema = pl.read_parquet_schema(folder(root) / "sim-0000.parquet")
        names = list(schema)
        assert names == [*CSV_HEADER, *(name for name, _ in EXTRA_COLUMNS)]
        for name in CSV_HEADER:
            assert schema[name] == POLARS_TYPES[str(CSV_TYPES[name])], name
        assert schema["start_time"] == pl.Datetime("us", "UTC")
        assert schema["num_gpus"] == pl.Int64
        assert schema["partial"] == pl.Boolean
        assert schema["requests"] == pl.Int64
        assert schema["config_params"] == pl.Map(pl.String, pl.Float64)

    def test_every_csv_column_has_a_declared_type(self) -> None:
        """No CSV column falls back to the string type unnoticed."""
        assert set(CSV_TYPES) == set(CSV_HEADER)

    def test_pandas_and_pyarrow_read_the_folder_as_one_table(self, root: Path) -> None:
        """The folder itself is the dataset: the sources file lives beside it."""
        export_dataset(root)
        assert sorted(os.listdir(folder(root))) == [f"{i}.parquet" for i in IDS]
        frame = pd.read_parquet(folder(root))
        assert sorted(frame["experiment_id"]) == IDS
        assert pq.read_table(folder(root)).num_rows == 4
        assert pl.read_parquet(folder(root)).height == 4


def assert_cell(name: str, value: Any, cell: str) -> None:
    """A Parquet value equals the CSV's cell, and has its column's Python type."""
    kind = CSV_TYPES[name]
    if value is None:
        assert cell == "", name
    elif kind == pa.bool_():
        assert isinstance(value, bool) and cell == ("true" if value else "false"), name
    elif kind == pa.int64():
        assert isinstance(value, int) and int(cell) == value, name
    elif kind == pa.float64():
        assert isinstance(value, float) and repr(value) == cell, name
    elif kind == pa.timestamp("us", tz="UTC"):
        assert isinstance(value, datetime) and datetime.fromisoformat(cell) == value, name
    else:
        assert isinstance(value, str) and value == cell, name


def assert_json(row: dict[str, Any], doc: dict[str, Any]) -> None:
    """The row against the result file read with ``json``."""
    procs = doc["process_results"]
    assert row["experiment_id"] == doc["experiment_id"]
    for key in ("total_energy_j", "total_tokens", "avg_energy_per_token_j", "total_flops"):
        assert row[key] == doc[key], key
    assert row["start_time"] == datetime.fromisoformat(doc["start_time"])
    assert row["end_time"] == datetime.fromisoformat(doc["end_time"])
    assert row["output_tokens"] == sum(p["inference_metrics"]["output_tokens"] for p in procs)
    assert row["num_processes"] == len(procs) == 2
    requests = doc["extended_metrics"]["request_latency"]["e2e_latency_samples"]
    assert row["requests"] == requests == 80
    assert row["energy_per_request_j"] == doc["total_energy_j"] / requests
    assert row["avg_power_w"] == sum(g["avg_power_w"] for g in doc["aggregation"]["gpus"])
    assert row["output_tokens_per_second"] == doc["aggregation"]["output_tokens_per_second"]
    config = doc["effective_config"]
    assert json.loads(row["effective_config_json"]) == config
    assert list(json.loads(row["effective_config_json"])) == sorted(config)
    numeric = {k: float(v) for k, v in config.items() if type(v) in (int, float)}
    assert row["config_params"] == numeric
    assert "simulated" not in row["config_params"]  # a boolean is not a number
    assert row["result_file"] == f"{doc['experiment_id']}.json"
    assert row["partial"] is False


class TestIncremental:
    """Only the fragments whose result changed are written; stale ones are removed."""

    def test_a_second_export_writes_nothing(self, root: Path) -> None:
        """Nothing changed: no fragment is read or written again."""
        export_dataset(root)
        before = fragment_ids(root)
        assert counts(export_dataset(root)) == (4, 0, 4, 0)
        assert fragment_ids(root) == before

    def test_touching_a_result_reads_it_again_and_rewrites_nothing(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A new mtime makes the result be read again, but the same bytes are not written."""
        export_dataset(root)
        before = fragment_ids(root)
        loads = count_loads(monkeypatch)
        os.utime(agg(root) / "sim-0001.json", ns=(1_000_000_000, 1_000_000_000))
        assert counts(export_dataset(root)) == (4, 0, 4, 0)
        assert loads == ["sim-0001.json"]
        assert fragment_ids(root) == before
        loads.clear()
        export_dataset(root)
        assert loads == []

    def test_replacing_a_result_rewrites_only_its_fragment(self, root: Path) -> None:
        """The changed experiment's fragment is new; every other keeps its inode and mtime."""
        export_dataset(root)
        before = fragment_ids(root)

        def edit(doc: dict[str, Any]) -> None:
            doc["total_energy_j"] = 1234.5

        replace_json(agg(root) / "sim-0002.json", edit)
        assert counts(export_dataset(root)) == (4, 1, 3, 0)
        after = fragment_ids(root)
        assert after["sim-0002.parquet"] != before["sim-0002.parquet"]
        assert {k: v for k, v in after.items() if k != "sim-0002.parquet"} == {
            k: v for k, v in before.items() if k != "sim-0002.parquet"
        }
        assert read_rows(root)["sim-0002"]["total_energy_j"] == 1234.5

    def test_deleting_a_result_removes_its_fragment(self, root: Path) -> None:
        """A fragment whose result is gone goes too."""
        export_dataset(root)
        (agg(root) / "sim-0003.json").unlink()
        assert counts(export_dataset(root)) == (3, 0, 3, 1)
        assert sorted(read_rows(root)) == IDS[:3]

    @pytest.mark.parametrize("damage", ["delete", "truncate"])
    def test_a_damaged_fragment_is_written_again(self, root: Path, damage: str) -> None:
        """A fragment deleted or edited behind the export's back is rebuilt."""
        export_dataset(root)
        path = folder(root) / "sim-0000.parquet"
        good = path.read_bytes()
        if damage == "delete":
            path.unlink()
        else:
            path.write_bytes(good[:100])
        assert counts(export_dataset(root)) == (4, 1, 3, 0)
        assert path.read_bytes() == good

    def test_another_writer_rebuilds_every_fragment_but_writes_none(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A record made by another version is not trusted; equal bytes are still not written."""
        export_dataset(root)
        before = fragment_ids(root)
        monkeypatch.setattr(dataset, "fingerprint", lambda: "another writer")
        loads = count_loads(monkeypatch)
        assert counts(export_dataset(root)) == (4, 0, 4, 0)
        assert len(loads) == 4
        assert fragment_ids(root) == before

    def test_an_unusable_sources_file_only_costs_a_rebuild(self, root: Path) -> None:
        """A sources file that cannot be parsed is replaced; the fragments stay."""
        export_dataset(root)
        (agg(root) / SOURCES_NAME).write_text("{not json")
        assert counts(export_dataset(root)) == (4, 0, 4, 0)
        assert json.loads((agg(root) / SOURCES_NAME).read_bytes())["format"] == 1

    def test_a_temp_file_left_by_a_crash_is_swept(self, root: Path) -> None:
        """A dead export's temp file goes, so that polars can still read the folder."""
        dataset.dataset_dir(ResultsLayout.at(root))
        temp = folder(root) / ".sim-0000.parquet.abc123.tmp"
        temp.write_bytes(b"half")
        export_dataset(root)
        assert not temp.exists()
        assert pl.read_parquet(folder(root)).height == 4

    def test_progress_is_called_after_each_experiment(self, root: Path) -> None:
        """``progress(done, total)`` counts up to the number of experiments."""
        calls: list[tuple[int, int]] = []
        export_dataset(root, progress=lambda done, total: calls.append((done, total)))
        assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def test_a_root_without_results_gives_an_empty_folder(self, tmp_path: Path) -> None:
        """No result, no fragment; the folder is there for the next export."""
        (tmp_path / "raw").mkdir()
        assert counts(export_dataset(tmp_path)) == (0, 0, 0, 0)
        assert os.listdir(folder(tmp_path)) == []

    def test_a_folder_that_is_no_results_root_is_an_error(self, tmp_path: Path) -> None:
        """The message says what the path is (``results_root``'s hint)."""
        with pytest.raises(LedgerError, match="not a results root"):
            export_dataset(tmp_path)


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the result files the export reads, in order."""
    loads: list[str] = []
    real = dataset._load

    def spy(file: Any) -> bytes:
        loads.append(file.name)
        return real(file)

    monkeypatch.setattr(dataset, "_load", spy)
    return loads


class TestPreferred:
    """The row comes from the file the CSV takes it from."""

    def test_a_complete_result_wins_over_a_partial_one(self, root: Path) -> None:
        """With both files, the complete result makes the row."""
        make_partial(root, "sim-0001")
        export_dataset(root)
        row = read_rows(root)["sim-0001"]
        assert (row["result_file"], row["partial"]) == ("sim-0001.json", False)

    def test_a_partial_result_stands_in_until_a_complete_one_exists(self, root: Path) -> None:
        """Without the complete result the partial makes the row, as in the CSV."""
        partial = make_partial(root, "sim-0001")
        complete = agg(root) / "sim-0001.json"
        saved = complete.read_bytes()
        export_dataset(root)
        complete.unlink()
        assert counts(export_dataset(root)) == (4, 1, 3, 0)
        row = read_rows(root)["sim-0001"]
        assert (row["result_file"], row["partial"]) == (partial.name, True)
        with outputs_lock(ResultsLayout.at(root)):
            sync_table(ResultsLayout.at(root))
        with (agg(root) / "results.csv").open(newline="") as fh:
            cells = {r["experiment_id"]: r for r in csv.DictReader(fh)}["sim-0001"]
        assert cells["partial"] == "true"
        complete.write_bytes(saved)
        assert counts(export_dataset(root)) == (4, 1, 3, 0)
        assert read_rows(root)["sim-0001"]["result_file"] == "sim-0001.json"

    def test_an_unreadable_complete_result_falls_back_to_the_partial(self, root: Path) -> None:
        """The broken file is named; the partial one still gives the experiment its row."""
        make_partial(root, "sim-0002")
        (agg(root) / "sim-0002.json").write_text("{not json")
        result = export_dataset(root)
        assert result.rows == 4
        assert len(result.problems) == 1 and "sim-0002.json" in result.problems[0]
        assert read_rows(root)["sim-0002"]["result_file"] == "sim-0002.partial.json"


class TestProblems:
    """A result that cannot be read is named, never a traceback, and the others export."""

    @pytest.mark.parametrize(
        "content",
        [b"{not json", b"{}", b'{"experiment_id": 5}', b"", b"[" * 10_000],
        ids=["syntax", "empty-object", "wrong-type", "empty-file", "deep"],
    )
    def test_a_corrupt_result_is_a_problem_with_its_name(self, root: Path, content: bytes) -> None:
        """Its fragment is removed, the others stay, and the next export says it again."""
        export_dataset(root)
        (agg(root) / "sim-0002.json").write_bytes(content)
        for _ in range(2):
            result = export_dataset(root)
            assert result.rows == 3
            (problem,) = result.problems
            assert str(agg(root) / "sim-0002.json") in problem
            assert "Traceback" not in problem and "\n" not in problem
        assert sorted(read_rows(root)) == ["sim-0000", "sim-0001", "sim-0003"]

    def test_a_value_beyond_64_bits_is_a_problem(self, root: Path) -> None:
        """A foreign result with a count no Parquet int64 holds is named, not a crash."""

        def edit(doc: dict[str, Any]) -> None:
            doc["total_tokens"] = 2**70

        replace_json(agg(root) / "sim-0000.json", edit)
        result = export_dataset(root)
        assert result.rows == 3
        assert len(result.problems) == 1 and "sim-0000.json" in result.problems[0]

    def test_a_foreign_parquet_file_is_left_and_reported(self, root: Path) -> None:
        """A file energy-ledger did not write is never deleted."""
        dataset.dataset_dir(ResultsLayout.at(root))
        foreign = folder(root) / "notes.parquet"
        pq.write_table(pa.table({"x": [1]}), foreign)
        result = export_dataset(root)
        assert result.removed == 0 and foreign.exists()
        assert any("notes.parquet" in p for p in result.problems)

    def test_an_unrecorded_fragment_of_ours_is_removed(self, root: Path) -> None:
        """Without its sources file, a stale fragment is still known by its metadata."""
        export_dataset(root)
        (agg(root) / SOURCES_NAME).unlink()
        (agg(root) / "sim-0003.json").unlink()
        result = export_dataset(root)
        assert (result.removed, result.problems) == (1, ())


class TestUnsafePaths:
    """Nothing is written through a link or over something that is not ours to replace."""

    @pytest.mark.parametrize("target", ["dataset", "aggregated"])
    def test_a_linked_folder_is_refused(self, root: Path, tmp_path: Path, target: str) -> None:
        """A link to a folder outside the root: refused, and the outside stays empty."""
        outside = tmp_path / "outside"
        outside.mkdir()
        if target == "dataset":
            folder(root).symlink_to(outside, target_is_directory=True)
        else:
            shutil.copytree(agg(root), outside, dirs_exist_ok=True)
            shutil.rmtree(agg(root))
            agg(root).symlink_to(outside, target_is_directory=True)
        listing = sorted(os.listdir(outside))
        with pytest.raises(UnsafePathError, match="symbolic link"):
            export_dataset(root)
        assert sorted(os.listdir(outside)) == listing

    def test_a_file_in_the_folders_place_is_refused(self, root: Path) -> None:
        """``results.parquet`` that is a file is not replaced."""
        folder(root).write_bytes(b"mine")
        with pytest.raises(UnsafePathError, match="not a folder"):
            export_dataset(root)
        assert folder(root).read_bytes() == b"mine"

    @pytest.mark.parametrize("name", ["sim-0000.parquet", "stale.parquet"])
    def test_a_linked_fragment_is_refused(self, root: Path, tmp_path: Path, name: str) -> None:
        """A fragment that is a link: refused before any fragment is written."""
        outside = tmp_path / "outside.parquet"
        outside.write_bytes(b"outside")
        dataset.dataset_dir(ResultsLayout.at(root))
        (folder(root) / name).symlink_to(outside)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            export_dataset(root)
        assert outside.read_bytes() == b"outside"
        assert sorted(os.listdir(folder(root))) == [name]

    def test_a_linked_sources_file_is_refused(self, root: Path, tmp_path: Path) -> None:
        """The sources file is replaced only when it is a regular file."""
        outside = tmp_path / "sources"
        outside.write_bytes(b"outside")
        (agg(root) / SOURCES_NAME).symlink_to(outside)
        with pytest.raises(UnsafePathError):
            export_dataset(root)
        assert outside.read_bytes() == b"outside"


class TestDeterminism:
    """The same results give the same bytes."""

    def test_two_identical_roots_give_identical_fragments(self, tmp_path: Path) -> None:
        """Two roots simulated and replayed alike export byte-identical datasets."""
        one, two = make_root(tmp_path / "one"), make_root(tmp_path / "two")
        export_dataset(one)
        export_dataset(two)
        names = sorted(os.listdir(folder(one)))
        assert names == sorted(os.listdir(folder(two))) == [f"{i}.parquet" for i in IDS]
        for name in names:
            assert (folder(one) / name).read_bytes() == (folder(two) / name).read_bytes()

    def test_the_metadata_holds_no_time_or_host(self, root: Path) -> None:
        """Only the Arrow schema and our marker are in the footer; the writer is fixed."""
        export_dataset(root)
        meta = pq.read_metadata(folder(root) / "sim-0000.parquet")
        assert set(meta.metadata) == {b"ARROW:schema", MARKER_KEY}
        assert meta.num_row_groups == 1 and meta.num_rows == 1
        assert meta.created_by == f"parquet-cpp-arrow version {pa.__version__}"
        assert meta.row_group(0).column(0).compression == "ZSTD"

    def test_fragment_bytes_depend_on_the_row_only(self) -> None:
        """The pure writer gives the same bytes twice."""
        row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
        row.update(experiment_id="x", config_params=[("batch_size", 4.0)])
        assert fragment_bytes(row) == fragment_bytes(dict(row))
