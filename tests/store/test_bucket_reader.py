"""Tests for energy_ledger.store.bucket_reader: an object store root's experiments, read as
objects (here a ``LocalObjects`` folder; tests/s3 runs the pipeline on a real bucket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.outcomes import aggregate_scan
from energy_ledger.store.bucket_reader import (
    experiment_objects,
    list_bucket_experiments,
    scan_bucket_experiment,
)
from energy_ledger.store.exporters import result_to_json_bytes
from energy_ledger.store.objects import LocalObjects, ObjectInfo
from energy_ledger.store.reader import scan_experiment
from energy_ledger.store.segments import marker_key, segment_key
from tests.helpers import write_segmented_experiment


class Counting(LocalObjects):
    """A ``LocalObjects`` that records the keys fetched and how many lists were made."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []
        self.lists = 0

    def get(self, key: str, start: int = 0) -> bytes:
        self.gets.append(key)
        return super().get(key, start)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self.lists += 1
        return super().list(prefix)


class TestScan:
    """``scan_bucket_experiment`` gives what the folder reader gives for the same objects."""

    def test_same_report_and_result_as_the_folder_reader(self, tmp_path: Path) -> None:
        """Report, problems and the aggregated result's bytes equal ``scan_experiment``'s."""
        objects = Counting(tmp_path)
        write_segmented_experiment(objects, "e")
        objects.delete(marker_key("e", 2))
        for strict in (True, False):
            ours = scan_bucket_experiment(objects, "e", strict=strict)
            theirs = scan_experiment(tmp_path / "raw" / "e", strict=strict)
            assert ours.report == theirs.report
            assert ours.problems == theirs.problems
        write_segmented_experiment(objects, "f")
        ours, theirs = scan_bucket_experiment(objects, "f"), scan_experiment(tmp_path / "raw" / "f")
        assert ours.report.is_complete and ours.url == f"{tmp_path}/raw/f"
        assert result_to_json_bytes(aggregate_scan(ours)) == result_to_json_bytes(
            aggregate_scan(theirs)
        )

    def test_one_list_and_each_object_fetched_once(self, tmp_path: Path) -> None:
        """One list call for the experiment; every segment and marker fetched once."""
        objects = Counting(tmp_path)
        write_segmented_experiment(objects, "e", processes=2)
        objects.lists, objects.gets = 0, []
        scan_bucket_experiment(objects, "e")
        assert objects.lists == 1
        listed = [info.key for info in LocalObjects(tmp_path).list("raw/e/")]
        assert sorted(objects.gets) == listed

    def test_a_marker_over_its_bound_is_not_fetched(self, tmp_path: Path) -> None:
        """A marker larger than its segments allow is unusable, and never fetched."""
        objects = Counting(tmp_path)
        write_segmented_experiment(objects, "e", processes=1)
        objects.delete(marker_key("e", 0))
        objects.put(marker_key("e", 0), b" " * 200_000)
        objects.gets = []
        scan = scan_bucket_experiment(objects, "e")
        assert scan.report.state == "invalid"
        assert "cannot read process_0.done: larger than" in (scan.report.error_message or "")
        assert marker_key("e", 0) not in objects.gets

    @pytest.mark.parametrize(
        ("names", "reason"),
        [
            (
                ["process_0.events.jsonl"],
                "raw/e/process_0.events.jsonl is an appended log (marker version 1), which a "
                "bucket root does not read",
            ),
            (
                ["process_0.events.jsonl", "process_0.segments/00000000.jsonl"],
                "process 0 wrote both an appended log",
            ),
            (["process_0.json"], "process_0.json is LLenergyMeasure's older per-process result"),
        ],
    )
    def test_what_a_bucket_cannot_hold_is_reported(
        self, tmp_path: Path, names: list[str], reason: str
    ) -> None:
        """An appended log, both layouts, an older LLenergyMeasure result: invalid, said."""
        objects = LocalObjects(tmp_path)
        for name in names:
            objects.put(f"raw/e/{name}", b'{"v":1}\n')
        scan = scan_bucket_experiment(objects, "e")
        assert scan.report.state == "invalid"
        assert reason in (scan.report.error_message or "")

    def test_a_corrupt_segment_names_its_object(self, tmp_path: Path) -> None:
        """A digest mismatch names the segment's object, with the store's location."""
        objects = LocalObjects(tmp_path)
        write_segmented_experiment(objects, "e", processes=1)
        key = segment_key("e", 0, 1)
        data = bytearray(objects.get(key))
        data[data.index(b"latency_ms") + 12] ^= 1  # one digit, another value, same size
        objects.put(key, bytes(data))
        (reason,) = scan_bucket_experiment(objects, "e").report.reasons
        assert reason == (
            "invalid: process 0 segment 00000001 does not match its marker's SHA-256 "
            f"({tmp_path}/{key})"
        )

    def test_no_such_experiment(self, tmp_path: Path) -> None:
        """No object of the experiment: an error, as a missing folder is; a bad id: unsafe."""
        with pytest.raises(LedgerError, match="no such experiment"):
            scan_bucket_experiment(LocalObjects(tmp_path), "e")
        with pytest.raises(UnsafePathError):
            scan_bucket_experiment(LocalObjects(tmp_path), "../e")


class TestListing:
    """A root's experiments from one listing of ``raw/``."""

    def test_ids_rejects_and_slices(self, tmp_path: Path) -> None:
        """Valid ids are listed, bad ones rejected, loose objects ignored; each experiment's
        objects are cut out of the listing without its neighbours'."""
        objects = LocalObjects(tmp_path)
        for key in [
            "raw/a/x",
            "raw/a-b/x",
            "raw/a.b/x",
            "raw/a0/x",
            "raw/ab/y",
            "raw/a/sub/z",
            "raw/_bad/x",
            "raw/loose",
        ]:
            objects.put(key, b"1")
        listing, raw = list_bucket_experiments(objects)
        assert listing.experiment_ids == ("a", "a-b", "a.b", "a0", "ab")
        assert listing.rejected == (("_bad", "unsafe experiment folder name; never read"),)
        assert [o.key for o in experiment_objects(raw, "a")] == ["raw/a/sub/z", "raw/a/x"]
        assert [o.key for o in experiment_objects(raw, "a.b")] == ["raw/a.b/x"]
