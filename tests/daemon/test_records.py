"""The state store: records created once, markers that only move forward, version 1 upgraded."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from energy_ledger.daemon.claims import TempSweeper, create_once
from energy_ledger.daemon.records import EmissionRecord, HookProgress, StateStore, upcast_v1


def _contend(args: tuple[str, int]) -> bool:
    path, n = args
    return create_once(Path(path), f"contender {n}".encode())


class TestCreateOnce:
    """The primitive: exactly one contender creates the file, and it is never torn."""

    def test_one_of_many_processes_wins(self, tmp_path: Path) -> None:
        """Twelve processes create the same file at once: one succeeds, its bytes are whole."""
        target = tmp_path / "claim"
        with multiprocessing.get_context("spawn").Pool(6) as pool:
            won = pool.map(_contend, [(str(target), n) for n in range(12)])
        assert won.count(True) == 1
        assert target.read_bytes() == f"contender {won.index(True)}".encode()
        assert [p.name for p in tmp_path.iterdir()] == ["claim"]  # no temp file left

    def test_existing_file_is_left_alone(self, tmp_path: Path) -> None:
        """A second create of the same name returns False and changes nothing."""
        target = tmp_path / "claim"
        assert create_once(target, b"first")
        assert not create_once(target, b"second")
        assert target.read_bytes() == b"first"


class TestClaim:
    """An emission is recorded by exactly one daemon; everyone else gets that record back."""

    def test_racing_claims_agree_on_one_record(self, tmp_path: Path) -> None:
        """Eight threads claim one experiment: one record wins, all of them return it."""
        store = StateStore(tmp_path)
        store.load()
        barrier = threading.Barrier(8)
        got: list[EmissionRecord] = []
        mine: list[bool] = []

        def claim() -> None:
            fresh = EmissionRecord.new("exp-1", "complete", hook=True)
            barrier.wait()
            holder = store.claim(fresh)
            got.append(holder)
            mine.append(holder is fresh)

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert mine.count(True) == 1
        assert len({r.emission_id for r in got}) == 1
        assert store.read("exp-1") == got[0]

    def test_record_holds_a_path_relative_to_the_root(self, tmp_path: Path) -> None:
        """The result is stored as aggregated/<id>.json, whatever the root's mount point."""
        store = StateStore(tmp_path / "state")
        store.load()
        store.claim(EmissionRecord.new("exp-1", "complete", hook=False))
        store.claim(EmissionRecord.new("exp-1", "partial", hook=False))
        saved = json.loads((store.emitted_dir / "exp-1.json").read_bytes())
        assert saved["result"] == "aggregated/exp-1.json"
        partial = store.read("exp-1@partial")
        assert partial is not None
        assert partial.result_path(Path("/mnt/elsewhere")) == Path(
            "/mnt/elsewhere/aggregated/exp-1.partial.json"
        )

    def test_damaged_record_still_means_emitted(self, tmp_path: Path) -> None:
        """A record damaged by hand is not replaced: the experiment is not emitted again."""
        store = StateStore(tmp_path)
        store.load()
        (store.emitted_dir / "exp-1.json").write_bytes(b"{damaged")
        fresh = EmissionRecord.new("exp-1", "complete", hook=True)
        holder = store.claim(fresh)
        assert holder is not fresh and holder.emission_id == "" and not holder.hook
        assert (store.emitted_dir / "exp-1.json").read_bytes() == b"{damaged"

    def test_attempts_are_claimed_once(self, tmp_path: Path) -> None:
        """Attempt n can be started by one caller only; done cannot be undone."""
        store = StateStore(tmp_path)
        store.load()
        store.claim(EmissionRecord.new("exp-1", "complete", hook=True))
        assert store.start_attempt("exp-1", 1, "a")
        assert not store.start_attempt("exp-1", 1, "b")
        store.finish_attempt("exp-1", 1, None, give_up=False)
        store.finish_attempt("exp-1", 1, "exit status 1", give_up=True)  # a late, stale writer
        progress = store.read_progress("exp-1", up_to=5)
        assert progress.done and progress.state() == "done" and progress.finished


class TestLoad:
    """Start-up reads records and markers, cleans temp files and upgrades version 1."""

    def test_stray_temp_files_are_removed(self, tmp_path: Path) -> None:
        """A killed writer's .<name>.<random>.tmp in emitted/ is gone after load."""
        store = StateStore(tmp_path)
        store.load()
        stray = store.emitted_dir / ".exp-1.json.abc123.tmp"
        stray.write_bytes(b'{"v": 2, "torn')
        assert store.load() == []
        assert not stray.exists()

    def test_markers_read_back(self, tmp_path: Path) -> None:
        """A fresh store sees the same progress the markers describe."""
        store = StateStore(tmp_path)
        store.load()
        store.claim(EmissionRecord.new("exp-1", "complete", hook=True))
        store.start_attempt("exp-1", 1, "a")
        store.finish_attempt("exp-1", 1, "exit status 3", give_up=False)
        store.start_attempt("exp-1", 2, "a")
        fresh = StateStore(tmp_path)
        fresh.load()
        assert fresh.progress["exp-1"] == HookProgress(2, {1: "exit status 3"}, False, None)
        assert fresh.progress["exp-1"].state() == "interrupted"

    @pytest.mark.parametrize(
        ("state", "attempts", "expected"),
        [
            ("done", 1, "done"),
            ("failed", 5, "failed"),
            ("running", 2, "interrupted"),
            ("pending", 1, "pending"),
            ("none", 0, None),
        ],
    )
    def test_version_1_records_are_upgraded(
        self, tmp_path: Path, state: str, attempts: int, expected: str | None
    ) -> None:
        """A version-1 record becomes version 2 with markers that say the same thing."""
        emitted = tmp_path / "emitted"
        emitted.mkdir()
        old = {
            "v": 1,
            "experiment_id": "exp-1",
            "kind": "complete",
            "result": "/old/mount/aggregated/exp-1.json",
            "emitted_t": 12.5,
            "hook": {"state": state, "attempts": attempts, "error": None, "updated_t": 13.0},
        }
        (emitted / "exp-1.json").write_bytes(json.dumps(old).encode())
        store = StateStore(tmp_path)
        assert store.load() == []
        record = store.records["exp-1"]
        assert record.result == "aggregated/exp-1.json" and record.hook is (state != "none")
        assert record.emission_id == upcast_v1(old)[0].emission_id  # the same at every upgrade
        if expected is not None:
            assert store.progress["exp-1"].state() == expected
            assert store.progress["exp-1"].attempts == attempts
        assert json.loads((emitted / "exp-1.json").read_bytes())["v"] == 2

    def test_unreadable_record_is_reported(self, tmp_path: Path) -> None:
        """A record that is not JSON is listed as a problem and skipped."""
        (tmp_path / "emitted").mkdir()
        (tmp_path / "emitted" / "exp-1.json").write_bytes(b"[1, 2")
        store = StateStore(tmp_path)
        (problem,) = store.load()
        assert "unreadable record" in problem and "exp-1" not in store.records


class TestTempSweeper:
    """Temp files in folders others write are removed only once they stood still a heartbeat."""

    def test_removed_at_the_second_look_only(self, tmp_path: Path) -> None:
        """A temp file is noted first, removed at the next look; a changing one is spared."""
        abandoned = tmp_path / ".results.csv.x1.tmp"
        abandoned.write_bytes(b"a")
        busy = tmp_path / ".exp.json.x2.tmp"
        busy.write_bytes(b"b")
        keep = tmp_path / "results.csv"
        keep.write_bytes(b"c")
        sweeper = TempSweeper([tmp_path])
        assert sweeper.look() == 0 and abandoned.exists()
        busy.write_bytes(b"bb")  # still being written
        assert sweeper.look() == 1
        assert not abandoned.exists() and busy.exists() and keep.exists()

    def test_never_follows_a_link(self, tmp_path: Path) -> None:
        """A folder that is a symbolic link (out of the root) is not swept."""
        outside = tmp_path / "outside"
        outside.mkdir()
        victim = outside / ".x.tmp"
        victim.write_bytes(b"")
        link = tmp_path / "aggregated"
        os.symlink(outside, link)
        sweeper = TempSweeper([link])
        sweeper.look()
        sweeper.look()
        assert victim.exists()
