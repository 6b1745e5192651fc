"""The daemon on a bucket root (``daemon.bucket_watcher``), on a folder-backed ``ObjectStore``.

``LocalObjects`` honours both conditional writes (``link(2)`` and an ``flock``), so the loop's
logic is tested here without a server: each complete experiment emitted once with a one-shot
replay's bytes, segments read once each, claims taken over after their ttl, experiments that
cannot complete released, two daemons on one root. ``tests/s3/test_bucket_watch.py`` runs the
real command on SeaweedFS.
"""

from __future__ import annotations

import csv
import io
import os
import random
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.daemon.bucket_watcher import BucketWatcher
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.exceptions import LedgerError
from energy_ledger.pipeline_objects import replay_url
from energy_ledger.store.bucket_claims import ClaimBody, Claimer, read_emission, record_emission
from energy_ledger.store.objects import LocalObjects
from energy_ledger.store.objectstore import ObjectInfo
from energy_ledger.store.probe import PROBE_PREFIX
from energy_ledger.store.segments import SegmentedLogWriter, marker_key, segments_prefix
from tests.helpers import write_segmented_experiment

POLL_SEC = 0.05


class CountingObjects(LocalObjects):
    """``LocalObjects`` that counts the ``get`` of each key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def get(self, key: str, start: int = 0) -> bytes:
        with self._count_lock:
            self.gets[key] += 1
        return super().get(key, start)


def wait_for(what: Callable[[], Any], timeout_sec: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def watching(objects: LocalObjects, **settings: Any) -> Iterator[BucketWatcher]:
    """A ``BucketWatcher`` running on a thread until the block ends."""
    settings.setdefault("poll_interval_sec", POLL_SEC)
    settings.setdefault("lease_timeout_sec", 3.0)
    watcher = BucketWatcher(objects, WatchConfig(**settings), threading.Event())
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        watcher.stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive()


def claim_body(objects: LocalObjects, experiment_id: str) -> ClaimBody:
    return ClaimBody.from_bytes(objects.get(f"claims/{experiment_id}.json"))


def hook_script(tmp_path: Path) -> tuple[str, Path]:
    """A hook that appends ``<emission id> <experiment id> <result>`` to a file."""
    out = tmp_path / "hook-runs.txt"
    script = tmp_path / "hook.py"
    script.write_text(
        "import os, sys\n"
        f"with open({str(out)!r}, 'a') as fh:\n"
        "    emission = os.environ['ENERGY_LEDGER_EMISSION_ID']\n"
        '    fh.write(f"{emission} {sys.argv[2]} {sys.argv[1]}\\n")\n'
    )
    wrapper = tmp_path / "hook"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper), out


def hook_lines(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [line.split() for line in out.read_text().splitlines()]


def corrupt_a_segment(objects: LocalObjects, experiment_id: str) -> tuple[str, bytes]:
    """Replace process 0's second segment with one holding a line that is not JSON; its key
    and its good bytes."""
    segment = objects.list(segments_prefix(experiment_id, 0))[1].key
    good = objects.get(segment)
    objects.delete(segment)
    objects.put(segment, good[:10] + b"{not json" + good[19:], create=True)
    return segment, good


def test_each_complete_experiment_is_emitted_once_with_a_replays_bytes(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    write_segmented_experiment(objects, "a", processes=2)
    write_segmented_experiment(objects, "b", processes=3)
    write_segmented_experiment(objects, "late", processes=2)
    held_back = objects.get(marker_key("late", 1))
    objects.delete(marker_key("late", 1))  # its second process has not finished yet
    with watching(objects) as watcher:
        wait_for(lambda: objects.head("emissions/a.json") and objects.head("emissions/b.json"))
        time.sleep(10 * POLL_SEC)
        assert objects.head("aggregated/late.json") is None
        objects.put(marker_key("late", 1), held_back, create=True)
        wait_for(lambda: objects.head("emissions/late.json"))
        wait_for(lambda: watcher.emitted == 3 and "late" in watcher.settled)
    # A one-shot replay derives the same bytes: it finds every result up to date.
    outcomes = {o.experiment_id: o.action for o in replay_url(str(tmp_path))}
    assert outcomes == {"a": "up-to-date", "b": "up-to-date", "late": "up-to-date"}
    rows = list(csv.DictReader(io.StringIO(objects.get("aggregated/results.csv").decode())))
    assert sorted(row["experiment_id"] for row in rows) == ["a", "b", "late"]
    for experiment_id in ("a", "b", "late"):
        record = read_emission(objects, experiment_id)
        assert record is not None and record.owner == watcher.claimer.owner
        assert record.body["result"] == f"aggregated/{experiment_id}.json"
        assert record.body["hook"] is False
        assert objects.head(f"claims/{experiment_id}.json") is None  # deleted once settled


def test_each_segment_is_fetched_once_while_a_log_grows(tmp_path: Path) -> None:
    objects = CountingObjects(tmp_path)
    writer = SegmentedLogWriter(objects, "grow", 0, segment_events=4, segment_sec=3600.0)
    writer.append(
        "process_started",
        experiment_id="grow",
        run_id="run-1",
        process_index=0,
        world_size=1,
        gpu_id=0,
        gpu_uuid="GPU-0",
        model_name="m",
    )
    writer.append("window_started", energy_mj=1_000_000.0)
    with watching(objects) as watcher:
        for k in range(40):
            writer.append("sample", power_w=200.0, energy_mj=1_000_000.0 + 1000.0 * k)
            writer.append("request", latency_ms=20.0, input_tokens=3, output_tokens=4)
            if k % 5 == 4:
                writer.flush()
                time.sleep(3 * POLL_SEC)  # a poll or more sees each new segment
        writer.append("window_ended", energy_mj=1_000_000.0 + 40_000.0)
        writer.close()
        wait_for(lambda: watcher.emitted == 1)
    prefix = segments_prefix("grow", 0)
    segment_gets = {k: n for k, n in objects.gets.items() if k.startswith(prefix)}
    assert len(segment_gets) == len(objects.list(prefix)) > 10
    assert set(segment_gets.values()) == {1}, segment_gets


def test_a_claim_nobody_renews_is_taken_over_after_its_ttl(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    write_segmented_experiment(objects, "orphan", processes=1)
    dead = Claimer(objects, owner="dead-host:1:x")
    assert dead.claim("orphan", ttl_sec=0.6) is not None  # and never renewed
    started = time.monotonic()
    with watching(objects, lease_timeout_sec=0.6) as watcher:
        wait_for(lambda: watcher.emitted == 1)
        waited = time.monotonic() - started
    record = read_emission(objects, "orphan")
    assert record is not None
    assert (record.owner, record.term) == (watcher.claimer.owner, 2)
    assert waited >= 0.6  # not before the dead owner's ttl had passed on the watcher's clock


def test_a_live_owners_claim_is_left_alone(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    write_segmented_experiment(objects, "busy", processes=1)
    other = Claimer(objects, owner="other-host:1:y")
    claim = other.claim("busy", ttl_sec=1.5)
    assert claim is not None
    with watching(objects, lease_timeout_sec=1.5):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # the other owner renews well within its ttl
            claim = other.renew(claim)
            time.sleep(0.15)
        assert objects.head("emissions/busy.json") is None
        assert objects.head("aggregated/busy.json") is None
        # Released: the watcher sees its ETag unchanged for a ttl, reads it, and takes it.
        assert other.release(claim)
        wait_for(lambda: objects.head("emissions/busy.json"), timeout_sec=10)


def test_an_invalid_experiment_is_reported_once_and_released(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    objects = CountingObjects(tmp_path)
    write_segmented_experiment(objects, "broken", processes=1)
    corrupt_a_segment(objects, "broken")
    with watching(objects) as watcher:
        wait_for(lambda: "broken" in watcher.retired)
        gets = sum(objects.gets.values())
        time.sleep(10 * POLL_SEC)
        assert sum(objects.gets.values()) == gets  # nothing of it is read again
        assert "broken" not in watcher.held
    assert claim_body(objects, "broken").released
    warnings = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len([w for w in warnings if "invalid" in w]) == 1, warnings
    assert objects.head("aggregated/broken.json") is None


def test_a_stop_releases_the_claims_held(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    write_segmented_experiment(objects, "running", processes=2)
    objects.delete(marker_key("running", 0))
    with watching(objects) as watcher:
        wait_for(lambda: "running" in watcher.held)
    body = claim_body(objects, "running")
    assert body.released and body.owner == watcher.claimer.owner


def test_claims_are_renewed_within_their_ttl(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    write_segmented_experiment(objects, "long", processes=1)
    objects.delete(marker_key("long", 0))
    contender = Claimer(objects, owner="contender:1:z")
    with watching(objects, lease_timeout_sec=1.5):
        wait_for(lambda: objects.head("claims/long.json"))
        first = claim_body(objects, "long").renewals
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert contender.claim("long", ttl_sec=1.5) is None  # never expired
            time.sleep(0.05)
        assert claim_body(objects, "long").renewals >= first + 3


def test_two_daemons_emit_each_experiment_once_and_run_each_hook_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    objects = LocalObjects(root)
    hook, out = hook_script(tmp_path)
    ids = [f"exp-{n:02d}" for n in range(24)]
    for experiment_id in ids[:12]:
        write_segmented_experiment(objects, experiment_id, processes=2, requests=12)
    with watching(objects, on_emit=hook) as one, watching(objects, on_emit=hook) as two:
        for experiment_id in ids[12:]:
            write_segmented_experiment(objects, experiment_id, processes=2, requests=12)
        wait_for(lambda: len(hook_lines(out)) >= len(ids), timeout_sec=60)
        wait_for(lambda: all(objects.head(f"emissions/{e}@done.json") for e in ids))
        time.sleep(10 * POLL_SEC)
    lines = hook_lines(out)
    assert sorted(line[1] for line in lines) == ids  # each hook once
    owners = set()
    for emission_id, experiment_id, result in lines:
        record = read_emission(objects, experiment_id)
        assert record is not None and record.body["emission_id"] == emission_id
        assert result == f"{objects.url}/aggregated/{experiment_id}.json"
        owners.add(record.owner)
    assert owners <= {one.claimer.owner, two.claimer.owner}
    assert one.emitted + two.emitted == len(ids)
    results = [i.key for i in objects.list("aggregated/") if i.key.endswith(".json")]
    assert len(results) == len(ids)


def test_nothing_is_written_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "beside").write_text("x")
    objects = LocalObjects(root)
    write_segmented_experiment(objects, "only", processes=1)
    before = sorted(os.listdir(tmp_path))
    with watching(objects) as watcher:
        wait_for(lambda: watcher.emitted == 1)
    assert sorted(os.listdir(tmp_path)) == before
    tops = {info.key.split("/")[0] for info in objects.list()}
    assert (
        {"raw", "aggregated", "emissions"} <= tops <= {"raw", "aggregated", "emissions", "claims"}
    )


def test_a_retired_experiment_is_read_again_once_it_changes(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    write_segmented_experiment(objects, "fixed", processes=1)
    segment, good = corrupt_a_segment(objects, "fixed")
    with watching(objects, reconcile_interval_sec=0.3) as watcher:
        wait_for(lambda: "fixed" in watcher.retired)
        objects.delete(segment)  # the segment is put right (copied again, say)
        objects.put(segment, good, create=True)
        wait_for(lambda: watcher.emitted == 1)
    assert objects.head("aggregated/fixed.json") is not None


def plant_owed_emission(tmp_path: Path, emission_id: str) -> Path:
    """A root where a daemon (now dead) wrote experiment ``owed``'s result and its emission
    record, with a hook owed, and died before the hook started: its claim's ttl is 0.5 s."""
    root = tmp_path / "root"
    root.mkdir()
    objects = LocalObjects(root)
    write_segmented_experiment(objects, "owed", processes=1)
    replay_url(str(root))  # the result is there
    claim = Claimer(objects, owner="dead-host:1:x").claim("owed", ttl_sec=0.5)
    assert claim is not None
    body = {"emission_id": emission_id, "result": "aggregated/owed.json", "hook": True}
    assert record_emission(objects, "owed", claim, {**body, "emitted_t": 0.0})
    return root


def test_a_hook_owed_by_a_dead_emitter_is_run_once(tmp_path: Path) -> None:
    """A daemon died after creating the emission record and before its hook started: the
    next daemon finds the record without attempts and runs the hook, once."""
    root = plant_owed_emission(tmp_path, "e" * 32)
    objects = LocalObjects(root)
    hook, out = hook_script(tmp_path)
    with watching(objects, on_emit=hook, lease_timeout_sec=0.5):
        wait_for(lambda: objects.head("emissions/owed@done.json"))
        time.sleep(10 * POLL_SEC)
    assert [line[:2] for line in hook_lines(out)] == [["e" * 32, "owed"]]


class FlakyObjects(LocalObjects):
    """``LocalObjects`` whose requests fail at random with a ``LedgerError``: before anything
    happens, or, for a put or delete, after it landed (a lost answer, as after a timeout)."""

    def __init__(self, root: Path, seed: int, rate: float = 0.08) -> None:
        super().__init__(root)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.rate = rate
        self.failures = 0

    def _fail(self, what: str, key: str = "") -> None:
        if key.startswith(PROBE_PREFIX):
            return  # the start-up probe is spared: a daemon that cannot probe does not start
        with self._rng_lock:
            fail = self._rng.random() < self.rate
            if fail:
                self.failures += 1
        if fail:
            raise LedgerError(f"injected failure of {what}")

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self._fail("list")
        return super().list(prefix)

    def list_folders(self, prefix: str = "") -> list[str]:
        self._fail("list_folders")
        return super().list_folders(prefix)

    def head(self, key: str) -> ObjectInfo | None:
        self._fail("head", key)
        return super().head(key)

    def get(self, key: str, start: int = 0) -> bytes:
        self._fail("get", key)
        return super().get(key, start)

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        self._fail("put", key)
        info = super().put(key, data, create=create, if_match=if_match)
        self._fail("put's answer", key)
        return info

    def delete(self, key: str) -> None:
        self._fail("delete", key)
        super().delete(key)
        self._fail("delete's answer", key)


def test_a_failing_store_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    """Two daemons on a store that fails one request in twelve, lost answers included: every
    experiment is emitted once, and every hook runs once."""
    root = tmp_path / "root"
    root.mkdir()
    ids = [f"flaky-{n:02d}" for n in range(16)]
    for experiment_id in ids:
        write_segmented_experiment(LocalObjects(root), experiment_id, processes=2, requests=12)
    hook, out = hook_script(tmp_path)
    one, two = FlakyObjects(root, seed=1), FlakyObjects(root, seed=2)
    with (
        watching(one, on_emit=hook, lease_timeout_sec=1.0),
        watching(two, on_emit=hook, lease_timeout_sec=1.0),
    ):
        plain = LocalObjects(root)
        wait_for(lambda: all(plain.head(f"emissions/{e}@done.json") for e in ids), 90)
        time.sleep(10 * POLL_SEC)
    assert one.failures + two.failures > 20  # the failures did happen
    assert sorted(line[1] for line in hook_lines(out)) == ids
    for experiment_id in ids:
        record = read_emission(plain, experiment_id)
        assert record is not None
        assert [line[0] for line in hook_lines(out) if line[1] == experiment_id] == [
            record.body["emission_id"]
        ]
    attempts = [i.key for i in plain.list("emissions/") if "@attempt-" in i.key]
    assert len(attempts) == len(ids)


class FailingRecordReads(LocalObjects):
    """``LocalObjects`` whose first reads of emission records fail (a store timing out)."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.left = failures

    def get(self, key: str, start: int = 0) -> bytes:
        if key.startswith("emissions/") and "@" not in key and self.left > 0:
            self.left -= 1
            raise LedgerError(f"injected failure of get {key}")
        return super().get(key, start)


def test_a_record_that_cannot_be_read_yet_still_gets_its_hook(tmp_path: Path) -> None:
    """A store failure while reading an emission record is no verdict: the owed hook runs once
    the record can be read (it is not settled as if no hook were owed)."""
    root = plant_owed_emission(tmp_path, "f" * 32)
    plain = LocalObjects(root)
    hook, out = hook_script(tmp_path)
    flaky = FailingRecordReads(root, failures=3)
    with watching(flaky, on_emit=hook, lease_timeout_sec=0.5, reconcile_interval_sec=0.2):
        wait_for(lambda: plain.head("emissions/owed@done.json"))
        time.sleep(10 * POLL_SEC)
    assert flaky.left == 0  # the failures happened
    assert [line[:2] for line in hook_lines(out)] == [["f" * 32, "owed"]]
