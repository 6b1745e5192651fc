"""The one-shot pipeline on a bucket root (SeaweedFS): replay, recover, validate and status
take an ``s3://`` URL, and give the bytes a folder of the same segments gives."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from energy_ledger import pipeline
from energy_ledger.exceptions import LedgerError
from energy_ledger.outcomes import Outcome
from energy_ledger.pipeline import (
    count_experiments,
    recover_experiment,
    replay_root,
    root_status,
    validate_experiment,
)
from energy_ledger.store.bucket_results import CSV_KEY, result_key
from energy_ledger.store.objects import LocalObjects, ObjectStore, open_objects
from energy_ledger.store.remote import open_bucket
from energy_ledger.store.segments import marker_key, segment_key
from tests.helpers import write_segmented_experiment as write_experiment

PROCESSES = 3


def keys_of(objects: ObjectStore, prefix: str = "") -> dict[str, str]:
    """Key -> ETag of everything under ``prefix``."""
    return {info.key: info.etag for info in objects.list(prefix)}


def csv_rows(objects: ObjectStore) -> dict[str, str]:
    """Experiment id -> its ``partial`` cell, from the root's ``results.csv``."""
    text = objects.get(CSV_KEY).decode()
    return {row["experiment_id"]: row["partial"] for row in csv.DictReader(io.StringIO(text))}


def by_id(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.experiment_id: o for o in outcomes}


class TestReplay:
    """``replay_root(url)`` emits each complete experiment into the bucket."""

    def test_result_and_csv_are_a_folders_bytes(
        self, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same segments in a bucket and in a folder give byte-identical result JSON and
        CSV (the folder replayed by the folder's own code, without the Parquet series)."""
        bucket = open_objects(s3_url)
        local_root = tmp_path / "local"
        for experiment_id in ("a", "b"):
            write_experiment(bucket, experiment_id)
            write_experiment(LocalObjects(local_root), experiment_id)
        outcomes = replay_root(s3_url)
        assert [(o.experiment_id, o.state, o.action) for o in outcomes] == [
            ("a", "complete", "written"),
            ("b", "complete", "written"),
        ]
        assert outcomes[0].url == f"{s3_url}/aggregated/a.json" and outcomes[0].path is None
        monkeypatch.setattr(pipeline, "parquet_available", lambda: False)
        local = replay_root(local_root)
        assert [o.action for o in local] == ["written", "written"]
        for experiment_id in ("a", "b"):
            data = bucket.get(result_key(experiment_id))
            assert data == (local_root / "aggregated" / f"{experiment_id}.json").read_bytes()
            assert orjson.loads(data)["timeseries"] is None
        assert bucket.get(CSV_KEY) == (local_root / "aggregated" / "results.csv").read_bytes()

    def test_a_second_replay_rewrites_nothing(self, s3_url: str) -> None:
        """Replayed again, every result is up to date and no object changes (same ETags)."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "a")
        replay_root(s3_url)
        before = keys_of(bucket)
        again = replay_root(s3_url)
        assert [(o.action, o.detail) for o in again] == [("up-to-date", "")]
        assert keys_of(bucket) == before

    def test_incomplete_experiment_is_skipped(self, s3_url: str) -> None:
        """A process without its marker: pending and skipped, no result; the others emit."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "done")
        write_experiment(bucket, "running")
        bucket.delete(marker_key("running", 1))
        outcomes = by_id(replay_root(s3_url))
        assert outcomes["done"].action == "written"
        running = outcomes["running"]
        assert (running.state, running.action) == ("pending", "skipped")
        assert "process 1 has no completion marker (process_1.done)" in running.detail
        assert bucket.head(result_key("running")) is None
        assert csv_rows(bucket) == {"done": "false"}

    def test_corrupt_segment_is_invalid_naming_the_key(self, s3_url: str) -> None:
        """A segment rewritten with other bytes of its size: invalid, the reason naming the
        segment's object; validate says the same."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "c")
        key = segment_key("c", 1, 2)
        data = bucket.get(key)
        at = data.index(b'"latency_ms":') + len(b'"latency_ms":')
        digit = b"%d" % ((data[at] - ord("0") + 1) % 10)
        bucket.put(key, data[:at] + digit + data[at + 1 :])  # same size, other bytes
        (outcome,) = replay_root(s3_url)
        assert (outcome.state, outcome.action) == ("invalid", "skipped")
        assert f"does not match its marker's SHA-256 ({s3_url}/{key})" in outcome.detail
        scan = validate_experiment(f"{s3_url}/raw/c")
        assert scan.report.state == "invalid"
        assert any(f"({s3_url}/{key})" in r for r in scan.report.reasons)
        assert bucket.head(result_key("c")) is None

    def test_an_appended_log_is_reported(self, s3_url: str) -> None:
        """A v1 log object in a bucket is not read: invalid, saying why and what to do."""
        bucket = open_objects(s3_url)
        bucket.put("raw/v1/process_0.events.jsonl", b'{"v":1}\n')
        bucket.put("raw/v1/process_0.done", b"{}")
        (outcome,) = replay_root(s3_url)
        assert (outcome.state, outcome.action) == ("invalid", "skipped")
        assert "process_0.events.jsonl is an appended log" in outcome.detail
        assert "copy the experiment into a folder" in outcome.detail

    def test_two_replays_racing_create_each_result_once(self, s3_url: str) -> None:
        """Two replays of one root on two threads at once: each result is written by one and
        found up to date by the other, and the CSV holds every row."""
        bucket = open_objects(s3_url)
        ids = ["r0", "r1", "r2"]
        for experiment_id in ids:
            write_experiment(bucket, experiment_id, processes=2, requests=20)
        barrier = threading.Barrier(2)
        results: list[list[Outcome]] = [[], []]

        def replay(slot: int) -> None:
            barrier.wait()
            results[slot] = replay_root(s3_url)

        threads = [threading.Thread(target=replay, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for experiment_id in ids:
            actions = sorted(by_id(r)[experiment_id].action for r in results)
            assert actions == ["up-to-date", "written"], experiment_id
        assert list(csv_rows(bucket)) == ids

    def test_other_bytes_are_kept_unless_forced(self, s3_url: str) -> None:
        """A result that holds other bytes is left by a plain replay (``kept``, saying so)
        and replaced by a forced one, by compare-and-swap."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "a")
        replay_root(s3_url)
        derived = bucket.get(result_key("a"))
        other = derived.replace(b'"experiment_id": "a"', b'"experiment_id": "a" ', 1)
        bucket.put(result_key("a"), other)
        (kept,) = replay_root(s3_url)
        assert kept.action == "kept" and "replay --force replaces it" in kept.detail
        assert bucket.get(result_key("a")) == other
        assert pipeline.tally([kept])["up_to_date"] == 1
        (forced,) = replay_root(s3_url, force=True)
        assert forced.action == "written"
        assert bucket.get(result_key("a")) == derived

    def test_nothing_is_written_outside_the_prefix(self, s3_url: str, s3_bucket: str) -> None:
        """Replay and recover write only under the root's prefix, and only under raw/ and
        aggregated/."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "a")
        write_experiment(bucket, "b", processes=2, requests=10)
        bucket.delete(marker_key("b", 0))
        replay_root(s3_url)
        recover_experiment(f"{s3_url}/raw/b")
        whole = open_bucket(f"s3://{s3_bucket}")
        keys = list(keys_of(whole))
        assert keys and all(k.startswith(("root/raw/", "root/aggregated/")) for k in keys)
        assert sorted(k for k in keys if k.startswith("root/aggregated/")) == [
            "root/aggregated/.results.csv.sources",
            "root/aggregated/a.json",
            "root/aggregated/b.partial.json",
            "root/aggregated/results.csv",
        ]


class TestRecover:
    """``recover_experiment(url)`` on a bucket experiment."""

    def test_missing_marker_gives_a_partial_result_then_the_full_one(self, s3_url: str) -> None:
        """A missing marker: a partial result and its CSV row; once the marker is there, a
        replay writes the full result and removes the partial one."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "p")
        marker = bucket.get(marker_key("p", 2))
        bucket.delete(marker_key("p", 2))
        recovery = recover_experiment(f"{s3_url}/raw/p")
        assert recovery.partial and recovery.written
        assert recovery.path == f"{s3_url}/aggregated/p.partial.json"
        assert recovery.coverage["processes_found"] == PROCESSES
        partial = orjson.loads(bucket.get(result_key("p", partial=True)))
        assert partial["aggregation"]["partial"] is True
        assert csv_rows(bucket) == {"p": "true"}
        again = recover_experiment(f"{s3_url}/raw/p")
        assert not again.written  # the same bytes: nothing written
        bucket.put(marker_key("p", 2), marker, create=True)
        (outcome,) = replay_root(s3_url)
        assert outcome.action == "written"
        assert bucket.head(result_key("p", partial=True)) is None
        assert csv_rows(bucket) == {"p": "false"}

    def test_complete_experiment_gets_its_full_result(self, s3_url: str) -> None:
        """Recover on a complete experiment writes what replay writes, once."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "f")
        recovery = recover_experiment(f"{s3_url}/raw/f")
        assert not recovery.partial and recovery.written
        assert recovery.path == f"{s3_url}/aggregated/f.json"
        (outcome,) = replay_root(s3_url)
        assert outcome.action == "up-to-date"

    @pytest.mark.parametrize("tail", ["", "/raw", "/aggregated/f.json", "/raw/f/x"])
    def test_a_url_that_is_not_an_experiment_is_refused(self, s3_url: str, tail: str) -> None:
        """Only ``<root>/raw/<id>`` names an experiment; the message says what to give."""
        with pytest.raises(LedgerError, match="give <root>/raw/<experiment_id>"):
            recover_experiment(f"{s3_url}{tail}")


class TestStatus:
    """``root_status`` and ``count_experiments`` take a bucket URL."""

    def test_status_and_count(self, s3_url: str) -> None:
        """Each experiment's state and whether it was emitted, without writing anything."""
        bucket = open_objects(s3_url)
        write_experiment(bucket, "a")
        write_experiment(bucket, "b", processes=2, requests=10)
        bucket.delete(marker_key("b", 1))
        bucket.put("raw/bad name/x", b"x")
        assert count_experiments(s3_url) == 2
        replay_root(s3_url)
        before = keys_of(bucket)
        rows = {r.experiment_id: r for r in root_status(s3_url)}
        assert keys_of(bucket) == before
        assert (rows["a"].state, rows["a"].action) == ("complete", "emitted")
        assert rows["a"].url == f"{s3_url}/aggregated/a.json"
        assert (rows["b"].state, rows["b"].action) == ("pending", "not emitted")
        assert rows["bad name"].state == "rejected"

    @pytest.mark.parametrize(
        ("tail", "hint"),
        [
            ("/raw", "did you mean {root}?"),
            ("/raw/a", "it looks like an experiment; did you mean {root}?"),
            ("/elsewhere", "a results root holds raw/<experiment_id>/"),
        ],
    )
    def test_a_url_that_is_not_a_root_says_what_was_meant(
        self, s3_url: str, tail: str, hint: str
    ) -> None:
        """Pointing at raw/, an experiment or an empty prefix: an error with a hint."""
        write_experiment(open_objects(s3_url), "a", processes=1, requests=2)
        call: Callable[[str], object]
        for call in (replay_root, root_status, count_experiments):
            with pytest.raises(LedgerError, match="not a results root") as info:
                call(f"{s3_url}{tail}")
            assert hint.format(root=s3_url) in str(info.value)
