"""Tests for energy_ledger.store.bucket_results: outputs by conditional writes, on a
``LocalObjects`` folder (the same conditions a bucket honours; tests/s3 runs them on one),
with wrappers that play the other writer at the worst moment."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.outcomes import aggregate_scan
from energy_ledger.pipeline_objects import replay_objects
from energy_ledger.store import bucket_results
from energy_ledger.store.bucket_reader import list_bucket_experiments, scan_bucket_experiment
from energy_ledger.store.bucket_results import (
    CSV_KEY,
    put_derived,
    put_result,
    result_key,
    sync_bucket_csv,
)
from energy_ledger.store.exporters import CSV_HEADER, result_to_json_bytes
from energy_ledger.store.objects import LocalObjects, ObjectInfo
from tests.helpers import write_segmented_experiment

KEY = "aggregated/e.json"


class Meddling(LocalObjects):
    """A ``LocalObjects`` that runs ``before_put(key, if_match)`` before each conditional
    put (another writer acting just then) and records the keys fetched."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.before_put: Callable[[str, bool], None] | None = None
        self.gets: list[str] = []

    def get(self, key: str, start: int = 0) -> bytes:
        self.gets.append(key)
        return super().get(key, start)

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        if self.before_put is not None and (create or if_match is not None):
            self.before_put(key, if_match is not None)
        return super().put(key, data, create=create, if_match=if_match)


def rows_of(objects: LocalObjects) -> dict[str, str]:
    """Experiment id -> ``partial`` cell of the root's CSV."""
    text = objects.get(CSV_KEY).decode()
    return {r["experiment_id"]: r["partial"] for r in csv.DictReader(io.StringIO(text))}


class TestPutDerived:
    """A result is created once, found up to date, kept, or swapped in."""

    def test_created_then_up_to_date(self, tmp_path: Path) -> None:
        """The first put creates it; the same bytes again write nothing (same ETag)."""
        objects = LocalObjects(tmp_path)
        first = put_derived(objects, KEY, b"one\n", replace=False)
        assert (first.action, first.changed) == ("created", True)
        again = put_derived(objects, KEY, b"one\n", replace=False)
        assert (again.action, again.changed, again.etag) == ("up-to-date", False, first.etag)

    @pytest.mark.parametrize("data", [b"two\n", b"other bytes\n"])
    def test_other_bytes_are_kept_unless_replace(self, tmp_path: Path, data: bytes) -> None:
        """Other bytes (of the same size or not) stay, unless ``replace`` swaps them."""
        objects = LocalObjects(tmp_path)
        put_derived(objects, KEY, b"one\n", replace=False)
        assert put_derived(objects, KEY, data, replace=False).action == "kept"
        assert objects.get(KEY) == b"one\n"
        assert put_derived(objects, KEY, data, replace=True).action == "replaced"
        assert objects.get(KEY) == data

    def test_a_swap_lost_to_the_same_bytes_is_up_to_date(self, tmp_path: Path) -> None:
        """Two forced writers: the one whose swap loses reads again and finds its bytes."""
        objects = Meddling(tmp_path)
        put_derived(objects, KEY, b"old\n", replace=False)

        def rival(key: str, swap: bool) -> None:
            if swap:
                objects.before_put = None
                LocalObjects(tmp_path).put(key, b"new\n")

        objects.before_put = rival
        assert put_derived(objects, KEY, b"new\n", replace=True).action == "up-to-date"

    def test_gives_up_when_it_keeps_changing(self, tmp_path: Path) -> None:
        """An object replaced before every swap: a ``LedgerError`` after a bounded number."""
        objects = Meddling(tmp_path)
        put_derived(objects, KEY, b"old\n", replace=False)
        writes = iter(range(100))
        objects.before_put = lambda key, _swap: LocalObjects(tmp_path).put(
            key, f"rival {next(writes)}\n".encode()
        )
        with pytest.raises(LedgerError, match="another writer changed it each of the 8 times"):
            put_derived(objects, KEY, b"mine\n", replace=True)

    def test_keys_stay_inside(self) -> None:
        """A bad experiment id never becomes a key."""
        with pytest.raises(UnsafePathError):
            result_key("../x")
        assert result_key("e", partial=True) == "aggregated/e.partial.json"


class TestCsv:
    """``results.csv`` rebuilt from the result objects, by compare-and-swap."""

    def _results(self, root: Path, *ids: str) -> LocalObjects:
        objects = LocalObjects(root)
        for experiment_id in ids:
            write_segmented_experiment(objects, experiment_id, processes=1, requests=4)
            put_result(objects, aggregate_scan(scan_bucket_experiment(objects, experiment_id)))
        return objects

    def test_created_then_unchanged(self, tmp_path: Path) -> None:
        """Created from the results; rebuilt without a change, not written again."""
        objects = self._results(tmp_path, "a", "b")
        assert sync_bucket_csv(objects).written
        assert rows_of(objects) == {"a": "false", "b": "false"}
        etag = objects.head(CSV_KEY)
        assert not sync_bucket_csv(objects).written
        assert objects.head(CSV_KEY) == etag

    def test_nothing_without_results(self, tmp_path: Path) -> None:
        """No result and no CSV: nothing is written."""
        objects = LocalObjects(tmp_path)
        assert not sync_bucket_csv(objects).written
        assert objects.head(CSV_KEY) is None

    def test_a_row_added_during_a_rebuild_is_not_lost(self, tmp_path: Path) -> None:
        """Another writer adds a result and rewrites the CSV just before our swap: ours is
        refused, rebuilt from a new listing, and holds both rows."""
        objects = Meddling(tmp_path)
        self._results(tmp_path, "a")
        sync_bucket_csv(objects)
        other = LocalObjects(tmp_path)

        def rival(key: str, swap: bool) -> None:
            if key == CSV_KEY and swap:
                objects.before_put = None
                self._results(tmp_path, "b")
                sync_bucket_csv(other)

        self._results(tmp_path, "c")
        objects.before_put = rival
        assert sync_bucket_csv(objects).written is False  # the rival's CSV is already ours
        assert rows_of(objects) == {"a": "false", "b": "false", "c": "false"}

    def test_gives_up_after_bounded_rebuilds(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A CSV replaced before every swap: a ``LedgerError`` saying so."""
        monkeypatch.setattr(bucket_results, "CSV_BACKOFF_SEC", 0.0)
        objects = Meddling(tmp_path)
        self._results(tmp_path, "a")
        objects.put(CSV_KEY, b",".join(c.encode() for c in CSV_HEADER) + b"\n")
        writes = iter(range(100))
        objects.before_put = lambda key, _swap: LocalObjects(tmp_path).put(
            key, b",".join(c.encode() for c in CSV_HEADER) + b"\n" * (2 + next(writes))
        )
        with pytest.raises(LedgerError, match="replaced it during each of 16 rebuilds"):
            sync_bucket_csv(objects)

    def test_a_foreign_csv_is_copied_aside(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A CSV whose header is not ours is kept as ``results.csv.foreign-1``, then
        replaced; one with our header is simply rebuilt."""
        objects = self._results(tmp_path, "a")
        objects.put(CSV_KEY, b"name,value\nmine,1\n")
        with caplog.at_level(logging.WARNING):
            done = sync_bucket_csv(objects)
        assert done.moved_to == "aggregated/results.csv.foreign-1"
        assert objects.get(done.moved_to) == b"name,value\nmine,1\n"
        assert "copied it to" in caplog.text
        assert rows_of(objects) == {"a": "false"}

    def test_a_replay_fetches_no_result_it_wrote(self, tmp_path: Path) -> None:
        """The rows of the results a replay just wrote come from memory, not from the store;
        an unreadable result object has no row, and is named."""
        objects = Meddling(tmp_path)
        for experiment_id in ("a", "b"):
            write_segmented_experiment(objects, experiment_id, processes=1, requests=4)
        objects.put("aggregated/z.json", b"not a result")
        listing, raw = list_bucket_experiments(objects)
        objects.gets = []
        outcomes = replay_objects(objects, listing, raw)
        assert [o.action for o in outcomes] == ["written", "written"]
        fetched = [k for k in objects.gets if k.startswith("aggregated/")]
        assert fetched == ["aggregated/z.json"]
        assert rows_of(objects) == {"a": "false", "b": "false"}
        again = sync_bucket_csv(objects)
        assert (
            again.unreadable
            and "aggregated/z.json: not an ExperimentResult" in (again.unreadable[0])
        )

    def test_a_result_and_its_bytes(self, tmp_path: Path) -> None:
        """``put_result`` writes exactly a result file's bytes."""
        objects = LocalObjects(tmp_path)
        write_segmented_experiment(objects, "e", processes=1, requests=4)
        result = aggregate_scan(scan_bucket_experiment(objects, "e"))
        assert put_result(objects, result).action == "created"
        assert objects.get(result_key("e")) == result_to_json_bytes(result)
