"""Tests for the outputs of energy_ledger.pipeline: the CSV as a derived output, writes that stay
inside the root, and a partial result giving way to the complete one.

Real roots in ``tmp_path``, written by the simulator through the real writer.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import orjson
import pytest

from energy_ledger import pipeline
from energy_ledger.exceptions import UnsafePathError
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store.layout import ResultsLayout
from tests.helpers import result_outputs

EXP = "sim-0000"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A results root holding one complete simulated 2-process experiment."""
    simulate(tmp_path / "root", processes=2, requests=12, seed=11)
    return tmp_path / "root"


def experiment(root: Path) -> Path:
    """The experiment folder of the ``root`` fixture."""
    return root / "raw" / EXP


def visible(folder: Path) -> list[str]:
    """The names in ``folder`` a user sees (the lock and the CSV's sources file are hidden)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def csv_rows(root: Path) -> list[dict[str, str]]:
    """The rows of ``aggregated/results.csv``."""
    return list(csv.DictReader(io.StringIO((root / "aggregated" / "results.csv").read_text())))


class TestCsvIsDerived:
    """results.csv follows the JSON results: regenerated, never lost, foreign files kept."""

    def test_deleted_csv_comes_back_without_rescanning(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A deleted CSV is written again by a plain replay, byte for byte, with no log read."""
        replay_root(root)
        expected = (root / "aggregated" / "results.csv").read_bytes()
        (root / "aggregated" / "results.csv").unlink()
        scanned: list[str] = []
        real_scan = pipeline.scan_experiment
        monkeypatch.setattr(
            pipeline,
            "scan_experiment",
            lambda d, **kw: scanned.append(str(d)) or real_scan(d, **kw),
        )
        (outcome,) = replay_root(root)
        assert outcome.action == "up-to-date"
        assert scanned == []
        assert (root / "aggregated" / "results.csv").read_bytes() == expected

    def test_foreign_csv_is_moved_aside(self, root: Path) -> None:
        """A CSV with another header survives as ``results.csv.foreign-1``; ours is written."""
        (root / "aggregated").mkdir()
        (root / "aggregated" / "results.csv").write_text("name,my_column\nx,42\n")
        replay_root(root)
        assert (root / "aggregated" / "results.csv.foreign-1").read_text() == (
            "name,my_column\nx,42\n"
        )
        assert [r["experiment_id"] for r in csv_rows(root)] == [EXP]

    def test_up_to_date_needs_the_csv(self, root: Path) -> None:
        """A result whose CSV is gone is not up to date."""
        replay_root(root)
        assert pipeline.up_to_date(ResultsLayout.at(root), EXP)
        (root / "aggregated" / "results.csv").unlink()
        assert not pipeline.up_to_date(ResultsLayout.at(root), EXP)

    def test_grown_log_with_an_old_mtime_is_seen(self, root: Path) -> None:
        """A log that grows after its result was written is seen even if its mtime is older.

        Coarse timestamps (1 s or 2 s on some filesystems) can give a newer log an mtime equal
        to or older than the result's; the up-to-date check compares sizes, not mtime order.
        """
        replay_root(root)
        result_ns = (root / "aggregated" / f"{EXP}.json").stat().st_mtime_ns
        log = experiment(root) / "process_1.events.jsonl"
        last = orjson.loads(log.read_bytes().splitlines()[-1])
        with open(log, "ab") as fh:
            event = {"v": 1, "seq": last["seq"] + 1, "t": last["t"] + 1.0, "type": "warning",
                     "message": "late"}  # fmt: skip
            fh.write(orjson.dumps(event) + b"\n")
        os.utime(log, ns=(result_ns - 1_000_000_000, result_ns - 1_000_000_000))
        assert not pipeline.up_to_date(ResultsLayout.at(root), EXP)
        (outcome,) = replay_root(root)
        assert outcome.state == "invalid"
        assert "more than the" in outcome.detail

    def test_results_of_an_older_version_are_rederived_once(self, root: Path) -> None:
        """Without the CSV's sources file (an older version's root) replay checks each result
        once, rewrites nothing, and is up to date from then on."""
        replay_root(root)
        before = (root / "aggregated" / f"{EXP}.json").stat().st_mtime_ns
        (root / "aggregated" / ".results.csv.sources").unlink()
        assert not pipeline.up_to_date(ResultsLayout.at(root), EXP)
        assert [o.action for o in replay_root(root)] == ["up-to-date"]
        assert (root / "aggregated" / f"{EXP}.json").stat().st_mtime_ns == before
        assert pipeline.up_to_date(ResultsLayout.at(root), EXP)


class TestOutputsStayInside:
    """Nothing is written through a symbolic link in ``aggregated/``."""

    def test_linked_aggregated_is_refused(self, root: Path, tmp_path: Path) -> None:
        """With ``aggregated`` a link elsewhere, replay and recover refuse; nothing lands there."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (root / "aggregated").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(UnsafePathError, match="is a symbolic link"):
            replay_root(root)
        with pytest.raises(UnsafePathError, match="is a symbolic link"):
            recover_experiment(experiment(root))
        assert list(elsewhere.iterdir()) == []

    def test_linked_result_file_is_not_written_through(self, root: Path, tmp_path: Path) -> None:
        """A result file that is a link: the experiment fails to emit, the target is intact."""
        target = tmp_path / "precious.json"
        target.write_text("mine\n")
        (root / "aggregated").mkdir()
        (root / "aggregated" / f"{EXP}.json").symlink_to(target)
        (outcome,) = replay_root(root)
        assert outcome.action == "error"
        assert "symbolic link" in outcome.detail
        assert target.read_text() == "mine\n"


class TestPartialThenComplete:
    """A partial result gives way to the complete one."""

    def test_stale_partial_is_removed_by_the_full_result(self, root: Path) -> None:
        """recover (marker missing), then the marker arrives: replay writes the full result and
        removes the partial; the CSV row stops saying partial."""
        marker = experiment(root) / "process_1.done"
        saved = marker.read_bytes()
        marker.unlink()
        assert recover_experiment(experiment(root)).partial is True
        assert [r["partial"] for r in csv_rows(root)] == ["true"]
        marker.write_bytes(saved)
        (outcome,) = replay_root(root)
        assert (outcome.state, outcome.action) == ("complete", "written")
        assert visible(root / "aggregated") == result_outputs(EXP)
        assert [r["partial"] for r in csv_rows(root)] == ["false"]

    def test_partial_beside_a_result_is_not_up_to_date(self, root: Path) -> None:
        """A partial file left beside the full one makes the next replay remove it."""
        replay_root(root)
        aggregated = root / "aggregated"
        shutil.copyfile(aggregated / f"{EXP}.json", aggregated / f"{EXP}.partial.json")
        assert not pipeline.up_to_date(ResultsLayout.at(root), EXP)
        replay_root(root)
        assert not (aggregated / f"{EXP}.partial.json").exists()

    def test_recover_on_a_complete_experiment_writes_the_full_result(self, root: Path) -> None:
        """recover of a complete run writes ``<id>.json``, the bytes replay writes, no partial."""
        recovery = recover_experiment(experiment(root))
        assert recovery.partial is False
        assert recovery.path == root / "aggregated" / f"{EXP}.json"
        written = recovery.path.read_bytes()
        assert visible(root / "aggregated") == result_outputs(EXP)
        (outcome,) = replay_root(root, force=True)
        assert outcome.action == "up-to-date"
        assert recovery.path.read_bytes() == written
