"""A bucket replay reads only what changed (``store.bucket_sources``), on a folder-backed store.

The sources object records, per experiment, its listing's digest, its result's ETag and its
CSV row; a replay skips an experiment (no segment fetched) only when all three still hold, and
reads it again when its objects, its result or the energy-ledger version changed.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from energy_ledger.outcomes import Outcome
from energy_ledger.pipeline_objects import replay_objects
from energy_ledger.store.bucket_reader import list_bucket_experiments
from energy_ledger.store.bucket_sources import SOURCES_KEY, listing_digest, read_bucket_sources
from energy_ledger.store.objects import LocalObjects
from energy_ledger.store.objectstore import ObjectInfo
from energy_ledger.store.segments import segments_prefix
from tests.helpers import write_segmented_experiment


class CountingObjects(LocalObjects):
    """``LocalObjects`` counting the GETs of segments."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.segment_gets: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get(self, key: str, start: int = 0) -> bytes:
        if ".segments/" in key:
            with self._lock:
                self.segment_gets[key.split("/")[1]] += 1
        return super().get(key, start)


def replay(objects: CountingObjects, *, force: bool = False) -> dict[str, Outcome]:
    objects.segment_gets.clear()
    listing, raw = list_bucket_experiments(objects)
    return {o.experiment_id: o for o in replay_objects(objects, listing, raw, force=force)}


@pytest.fixture
def root(tmp_path: Path) -> CountingObjects:
    objects = CountingObjects(tmp_path)
    for experiment_id in ("a", "b", "c"):
        write_segmented_experiment(objects, experiment_id, processes=2)
    return objects


def test_a_second_replay_reads_no_segment(root: CountingObjects) -> None:
    first = replay(root)
    assert {e: o.action for e, o in first.items()} == dict.fromkeys("abc", "written")
    assert set(root.segment_gets) == {"a", "b", "c"}
    csv_before = root.get("aggregated/results.csv")
    second = replay(root)
    assert {e: o.action for e, o in second.items()} == dict.fromkeys("abc", "up-to-date")
    assert root.segment_gets == Counter()
    assert root.get("aggregated/results.csv") == csv_before  # rows taken from the sources


def test_the_sources_name_each_result_and_its_inputs(root: CountingObjects) -> None:
    replay(root)
    sources = read_bucket_sources(root)
    assert set(sources) == {"a", "b", "c"}
    for experiment_id, source in sources.items():
        # Computed here independently: the digest of the experiment's own listing.
        listing = root.list(f"raw/{experiment_id}/")
        assert source.inputs == listing_digest(list(reversed(listing)))  # order does not matter
        head = root.head(f"aggregated/{experiment_id}.json")
        assert head is not None and source.result_etag == head.etag
        assert source.row[0] == experiment_id


def test_a_changed_experiment_is_read_again(root: CountingObjects) -> None:
    replay(root)
    prefix = segments_prefix("b", 0)
    stray = f"{prefix}zz-note.txt"  # any new object under raw/b/ changes its listing
    root.put(stray, b"x", create=True)
    second = replay(root)
    assert set(root.segment_gets) == {"b"}
    assert second["b"].action == "up-to-date"  # read again; the same result derived


def test_a_replaced_result_is_read_again(root: CountingObjects) -> None:
    replay(root)
    data = root.get("aggregated/c.json")
    root.delete("aggregated/c.json")
    root.put("aggregated/c.json", data, create=True)  # same bytes, a new object (a new ETag)
    replay(root)
    assert set(root.segment_gets) == {"c"}


def test_another_version_reads_everything(root: CountingObjects) -> None:
    replay(root)
    obj = orjson.loads(root.get(SOURCES_KEY))
    obj["version"] = "0.0.1"
    info = root.head(SOURCES_KEY)
    assert info is not None
    root.put(SOURCES_KEY, orjson.dumps(obj), if_match=info.etag)
    replay(root)
    assert set(root.segment_gets) == {"a", "b", "c"}
    assert orjson.loads(root.get(SOURCES_KEY))["version"] != "0.0.1"  # rewritten


@pytest.mark.parametrize("junk", [b"not json", b"[]", b'{"v": 1, "version": "x"}', b"{}"])
def test_an_unusable_sources_object_is_ignored(
    root: CountingObjects, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    replay(root)
    info = root.head(SOURCES_KEY)
    assert info is not None
    root.put(SOURCES_KEY, junk, if_match=info.etag)
    outcomes = replay(root)
    assert {o.action for o in outcomes.values()} == {"up-to-date"}
    if junk != b'{"v": 1, "version": "x"}':  # another version is not a warning
        assert any(SOURCES_KEY in r.getMessage() for r in caplog.records)


def test_force_reads_everything(root: CountingObjects) -> None:
    replay(root)
    replay(root, force=True)
    assert set(root.segment_gets) == {"a", "b", "c"}


def test_listing_digest_sees_sizes_and_etags() -> None:
    base = [ObjectInfo("raw/x/p.done", 10, "e1")]
    assert listing_digest(base) != listing_digest([ObjectInfo("raw/x/p.done", 11, "e1")])
    assert listing_digest(base) != listing_digest([ObjectInfo("raw/x/p.done", 10, "e2")])
    assert listing_digest(base) != listing_digest([*base, ObjectInfo("raw/x/q", 1, "e")])
