"""Tests for energy_ledger.store.table: results.csv rebuilt from the JSON results on disk.

Every case writes real result files into a real ``aggregated/`` folder (results aggregated from
simulated ledgers), then rebuilds the table and reads the CSV back.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from pathlib import Path

import pytest

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.exceptions import UnsafePathError
from energy_ledger.models import ExperimentResult
from energy_ledger.simulate import simulate
from energy_ledger.store import results as results_module
from energy_ledger.store.exporters import (
    CSV_HEADER,
    PREVIOUS_HEADERS,
    csv_bytes,
    result_to_json_bytes,
)
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.reader import scan_experiment
from energy_ledger.store.table import (
    SOURCES_NAME,
    current_source,
    foreign_reason,
    inputs_digest,
    move_aside,
    sync_table,
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[ExperimentResult]:
    """Three complete results and one partial one (``part-0000``), aggregated from ledgers."""
    source = tmp_path_factory.mktemp("table-source")
    out = []
    for truth in simulate(source, experiments=3, processes=2, requests=6, seed=4):
        scan = scan_experiment(source / "raw" / truth.experiment_id)
        out.append(aggregate_results(scan.summaries, truth.experiment_id))
    simulate(source, processes=2, requests=6, seed=4, crash=1, prefix="part")
    scan = scan_experiment(source / "raw" / "part-0000", strict=False)
    out.append(aggregate_results(scan.summaries, "part-0000", partial=True, partial_reason="x"))
    return out


@pytest.fixture
def layout(tmp_path: Path, results: list[ExperimentResult]) -> ResultsLayout:
    """A root whose ``aggregated/`` holds the three complete results and the partial one."""
    layout = ResultsLayout.at(tmp_path)
    layout.aggregated_dir.mkdir()
    for result in results:
        partial = result.experiment_id.startswith("part")
        path = layout.result_path(result.experiment_id, partial=partial)
        path.write_bytes(result_to_json_bytes(result))
    return layout


def table(layout: ResultsLayout) -> list[dict[str, str]]:
    """The CSV's rows as dicts."""
    return list(csv.DictReader(io.StringIO(layout.csv_path.read_text())))


def ids(layout: ResultsLayout) -> list[str]:
    """The experiment ids of the CSV's rows, in file order."""
    return [row["experiment_id"] for row in table(layout)]


class TestRebuild:
    """The CSV holds one row per result file, in id order, partial rows marked."""

    def test_one_row_per_result(self, layout: ResultsLayout) -> None:
        """Four result files give four rows, sorted; only the partial one says so."""
        sync = sync_table(layout)
        assert sync.written and sync.rows == 4
        assert ids(layout) == ["part-0000", "sim-0000", "sim-0001", "sim-0002"]
        assert {r["experiment_id"]: r["partial"] for r in table(layout)} == {
            "part-0000": "true",
            "sim-0000": "false",
            "sim-0001": "false",
            "sim-0002": "false",
        }

    def test_bytes_are_those_of_the_exporter(
        self, layout: ResultsLayout, results: list[ExperimentResult]
    ) -> None:
        """The file is exactly ``csv_bytes`` of the same results (one deterministic format)."""
        sync_table(layout)
        assert layout.csv_path.read_bytes() == csv_bytes(results)

    def test_second_rebuild_writes_nothing(self, layout: ResultsLayout) -> None:
        """Rebuilding again changes no byte and no mtime of the CSV or its sources file."""
        sync_table(layout)
        sources = layout.aggregated_dir / SOURCES_NAME
        before = (layout.csv_path.stat().st_mtime_ns, sources.stat().st_mtime_ns)
        assert sync_table(layout).written is False
        assert (layout.csv_path.stat().st_mtime_ns, sources.stat().st_mtime_ns) == before

    def test_complete_result_wins_over_partial(
        self, layout: ResultsLayout, results: list[ExperimentResult]
    ) -> None:
        """With ``<id>.json`` and ``<id>.partial.json`` both present the row is the complete one."""
        partial_bytes = layout.result_path("part-0000", partial=True).read_bytes()
        layout.result_path("sim-0000", partial=True).write_bytes(partial_bytes)
        sync_table(layout)
        (row,) = [r for r in table(layout) if r["experiment_id"] == "sim-0000"]
        assert row["partial"] == "false"
        assert ids(layout).count("sim-0000") == 1

    def test_removed_result_loses_its_row(self, layout: ResultsLayout) -> None:
        """Deleting a JSON result (from a CSV written here) drops its row: the CSV is derived."""
        sync_table(layout)
        layout.result_path("sim-0001").unlink()
        sync = sync_table(layout)
        assert sync.moved_to is None
        assert ids(layout) == ["part-0000", "sim-0000", "sim-0002"]

    def test_rewritten_result_gets_a_new_row(
        self, layout: ResultsLayout, results: list[ExperimentResult]
    ) -> None:
        """A result file replaced with other figures is read again and its row follows."""
        sync_table(layout)
        changed = results[1].model_copy(update={"total_tokens": 7})
        layout.result_path("sim-0001").write_bytes(result_to_json_bytes(changed))
        sync_table(layout)
        (row,) = [r for r in table(layout) if r["experiment_id"] == "sim-0001"]
        assert row["total_tokens"] == "7"

    def test_unchanged_results_are_not_read_again(
        self, layout: ResultsLayout, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the first rebuild, a deleted CSV comes back from the sources file alone."""
        sync_table(layout)
        expected = layout.csv_path.read_bytes()
        layout.csv_path.unlink()

        def refuse(path: Path, **_kw: object) -> ExperimentResult:
            raise AssertionError(f"{path} was read again")

        monkeypatch.setattr("energy_ledger.store.table.load_result", refuse)
        assert sync_table(layout).written
        assert layout.csv_path.read_bytes() == expected

    def test_unreadable_result_has_no_row_and_is_named(
        self, layout: ResultsLayout, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A JSON file that is not a result is skipped with a warning naming it."""
        (layout.aggregated_dir / "junk.json").write_text('{"not": "a result"}')
        with caplog.at_level(logging.WARNING, logger="energy_ledger"):
            sync = sync_table(layout)
        assert "junk" not in ids(layout)
        assert len(sync.unreadable) == 1
        assert "junk.json: not an ExperimentResult" in sync.unreadable[0]
        assert any("junk.json" in r.getMessage() for r in caplog.records)

    def test_nothing_is_written_for_no_results(self, tmp_path: Path) -> None:
        """An empty ``aggregated/`` gets no header-only CSV and no sources file."""
        layout = ResultsLayout.at(tmp_path)
        layout.aggregated_dir.mkdir()
        assert sync_table(layout).written is False
        assert os.listdir(layout.aggregated_dir) == []


class TestForeignCsv:
    """A CSV that was not the one written last is kept aside unless the results reproduce it."""

    def test_foreign_header_is_moved_aside(
        self, layout: ResultsLayout, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Another header: the file goes to ``results.csv.foreign-1``, byte for byte, logged."""
        layout.csv_path.write_text("a,b,my_note\n1,2,keep me\n")
        with caplog.at_level(logging.WARNING, logger="energy_ledger"):
            sync = sync_table(layout)
        aside = layout.aggregated_dir / "results.csv.foreign-1"
        assert sync.moved_to == aside
        assert aside.read_text() == "a,b,my_note\n1,2,keep me\n"
        assert ids(layout) == ["part-0000", "sim-0000", "sim-0001", "sim-0002"]
        (message,) = [r.getMessage() for r in caplog.records if "moved it to" in r.getMessage()]
        assert str(layout.csv_path) in message and str(aside) in message
        assert "header is not energy-ledger's" in message

    def test_second_foreign_file_takes_the_next_name(self, layout: ResultsLayout) -> None:
        """An earlier copy aside is never overwritten: the next one is ``foreign-2``."""
        layout.csv_path.write_text("x\n1\n")
        sync_table(layout)
        layout.csv_path.write_text("y\n2\n")
        assert sync_table(layout).moved_to == layout.aggregated_dir / "results.csv.foreign-2"
        assert (layout.aggregated_dir / "results.csv.foreign-1").read_text() == "x\n1\n"

    def test_hand_edited_row_is_moved_aside(self, layout: ResultsLayout) -> None:
        """Our header with a cell changed by hand: kept aside, and the table rebuilt."""
        sync_table(layout)
        edited = layout.csv_path.read_text().replace("pytorch", "edited-by-hand", 1)
        layout.csv_path.write_text(edited)
        sync = sync_table(layout)
        assert sync.moved_to is not None
        assert "edited-by-hand" in sync.moved_to.read_text()
        assert "edited-by-hand" not in layout.csv_path.read_text()

    def test_stale_copy_of_ours_is_replaced(
        self, layout: ResultsLayout, results: list[ExperimentResult]
    ) -> None:
        """A CSV of ours that only lacks rows (no sources file: an older version) is replaced."""
        layout.csv_path.write_bytes(csv_bytes(results[:2]))
        sync = sync_table(layout)
        assert sync.moved_to is None
        assert ids(layout) == ["part-0000", "sim-0000", "sim-0001", "sim-0002"]

    @pytest.mark.parametrize("columns", [len(h) for h in PREVIOUS_HEADERS])
    def test_previous_header_with_reproduced_rows_is_replaced(
        self, layout: ResultsLayout, results: list[ExperimentResult], columns: int
    ) -> None:
        """A CSV of an earlier version (before ``partial``, before the 0.2 columns) whose rows
        all come back is replaced."""
        table = csv.reader(io.StringIO(csv_bytes(results[1:3]).decode()))
        old = [row[:columns] for row in table]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(old)
        layout.csv_path.write_text(buffer.getvalue())
        assert sync_table(layout).moved_to is None
        assert list(CSV_HEADER) == next(csv.reader(io.StringIO(layout.csv_path.read_text())))

    HEADER_LINE = ",".join(CSV_HEADER) + "\n"
    LOST_ROW = "lost-one" + ",x" * (len(CSV_HEADER) - 1) + "\n"

    @pytest.mark.parametrize(
        ("data", "needle"),
        [
            (b"\xff\xfe", "not a UTF-8 CSV"),
            (b"a,b\n", "header is not energy-ledger's"),
            ((HEADER_LINE + LOST_ROW).encode(), "lost-one"),
            (b"", None),
            (HEADER_LINE.encode(), None),
        ],
        ids=["binary", "header", "row", "empty", "header-only"],
    )
    def test_reasons(self, data: bytes, needle: str | None) -> None:
        """Each kind of foreign file is named; an empty or header-only file may be replaced."""
        reason = foreign_reason(data, [])
        if needle is None:
            assert reason is None
        else:
            assert reason is not None and needle in reason

    def test_move_aside_keeps_the_original_name_until_replaced(self, tmp_path: Path) -> None:
        """After ``move_aside`` both names hold the old bytes (a link, then the caller replaces)."""
        path = tmp_path / "results.csv"
        path.write_text("old\n")
        aside = move_aside(path, "test")
        assert aside.name == "results.csv.foreign-1"
        assert path.read_text() == aside.read_text() == "old\n"


class TestPaths:
    """Links in ``aggregated/`` are never followed."""

    def test_linked_csv_is_refused(self, layout: ResultsLayout, tmp_path: Path) -> None:
        """``results.csv`` as a link: refused, and the file it points at is untouched."""
        target = tmp_path / "elsewhere.csv"
        target.write_text("mine\n")
        layout.csv_path.symlink_to(target)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            sync_table(layout)
        assert target.read_text() == "mine\n"

    def test_linked_result_is_not_read(
        self, layout: ResultsLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A result file that is a link gets no row; its target is never opened."""
        outside = tmp_path / "outside.json"
        shutil.copyfile(layout.result_path("sim-0000"), outside)
        layout.result_path("sim-0000").unlink()
        layout.result_path("sim-0000").symlink_to(outside)
        opened: list[str] = []
        real = results_module.read_regular_file

        def spy(path: Path, **kw: bool) -> bytes:
            opened.append(str(path))
            return real(path, **kw)

        monkeypatch.setattr(results_module, "read_regular_file", spy)
        sync_table(layout)
        assert "sim-0000" not in ids(layout)
        assert opened, "the other results were read through the spy"
        assert str(layout.result_path("sim-0000")) not in opened


class TestCurrentSource:
    """``current_source`` says whether the CSV on disk holds a file's current row."""

    def test_after_a_rebuild(self, layout: ResultsLayout) -> None:
        """Right after a rebuild every complete result has its current row."""
        sync_table(layout)
        assert current_source(layout, "sim-0000.json") is not None

    @pytest.mark.parametrize("change", ["csv-deleted", "csv-replaced", "json-rewritten"])
    def test_not_current_after_a_change(self, layout: ResultsLayout, change: str) -> None:
        """A deleted or replaced CSV, or a rewritten result, is no longer current."""
        sync_table(layout)
        if change == "csv-deleted":
            layout.csv_path.unlink()
        elif change == "csv-replaced":
            data = layout.csv_path.read_bytes()
            layout.csv_path.unlink()
            layout.csv_path.write_bytes(data)  # same bytes, another file
        else:
            path = layout.result_path("sim-0000")
            data = path.read_bytes()
            path.unlink()
            path.write_bytes(data)
        assert current_source(layout, "sim-0000.json") is None


class TestInputsDigest:
    """The digest of an experiment folder changes with every change replay could see."""

    @pytest.fixture
    def folder(self, tmp_path: Path) -> tuple[ResultsLayout, Path]:
        """A root with one simulated experiment."""
        simulate(tmp_path, processes=2, requests=3, seed=1)
        return ResultsLayout.at(tmp_path), tmp_path / "raw" / "sim-0000"

    def test_stable_when_nothing_changes(self, folder: tuple[ResultsLayout, Path]) -> None:
        """Two digests of an untouched folder are equal."""
        layout, directory = folder
        assert inputs_digest(layout, directory) == inputs_digest(layout, directory)

    def test_append_with_the_same_mtime_changes_it(
        self, folder: tuple[ResultsLayout, Path]
    ) -> None:
        """An append is seen even when the mtime is set back to the old value (coarse clocks)."""
        layout, directory = folder
        log = directory / "process_1.events.jsonl"
        before = inputs_digest(layout, directory)
        st = log.stat()
        with open(log, "ab") as fh:
            fh.write(b'{"v":1}\n')
        os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert log.stat().st_mtime_ns == st.st_mtime_ns
        assert inputs_digest(layout, directory) != before

    def test_new_file_changes_it(self, folder: tuple[ResultsLayout, Path]) -> None:
        """A marker (or any file) that appears changes the digest."""
        layout, directory = folder
        before = inputs_digest(layout, directory)
        (directory / "process_2.done").write_bytes(b"{}")
        assert inputs_digest(layout, directory) != before

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A folder that cannot be listed has no digest."""
        assert inputs_digest(ResultsLayout.at(tmp_path), tmp_path / "nope") is None
