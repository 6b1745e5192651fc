"""The watcher's to-do list of changes, and the ``stat`` probe that spares polling a listing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from energy_ledger.daemon.changes import DirProbe, PendingChanges
from energy_ledger.daemon.sources import ROOT_EVENT


class TestPendingChanges:
    """Changes reported from any thread, taken by the loop in one batch."""

    def test_mark_wakes_and_is_taken_once(self) -> None:
        """A mark sets ``wake``; ``take`` returns it once, then the list is empty."""
        wake = threading.Event()
        changes = PendingChanges(wake)
        assert not changes.waiting()
        changes.mark("a")
        assert wake.is_set() and changes.waiting()
        batch, relist = changes.take()
        assert list(batch) == ["a"] and relist is False
        assert changes.take() == ({}, False)
        assert not changes.waiting()

    def test_root_event_asks_for_a_relist(self) -> None:
        """An event on ``raw/`` itself is no experiment id: it asks for ``raw/`` to be listed."""
        changes = PendingChanges(threading.Event())
        changes.mark(ROOT_EVENT)
        assert changes.waiting()
        assert changes.take() == ({}, True)

    def test_first_sighting_is_kept(self) -> None:
        """Marking again keeps the first time, so the lag counts from the first change."""
        changes = PendingChanges(threading.Event())
        before = time.monotonic()
        changes.mark("a")
        first = changes.oldest_t()
        changes.mark("b")
        changes.mark("a")
        assert first is not None and before <= first
        assert changes.oldest_t() == first
        batch, _ = changes.take()
        assert batch["a"] == first and batch["b"] >= first
        assert changes.oldest_t() is None

    def test_mark_all_relists_and_rescans(self) -> None:
        """After lost events, every id given is rescanned and ``raw/`` listed again."""
        wake = threading.Event()
        changes = PendingChanges(wake)
        changes.mark("a")
        changes.mark_all(["a", "b", "c"])
        batch, relist = changes.take()
        assert sorted(batch) == ["a", "b", "c"] and relist is True
        assert wake.is_set()

    def test_marks_from_many_threads_are_all_kept(self) -> None:
        """Marks from several threads at once lose nothing."""
        changes = PendingChanges(threading.Event())
        threads = [
            threading.Thread(target=lambda n=n: [changes.mark(f"{n}-{i}") for i in range(500)])
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batch, _ = changes.take()
        assert len(batch) == 2000


class TestDirProbe:
    """One ``stat`` says whether a folder gained or lost entries."""

    def test_first_look_then_unchanged_then_new_entry(self, tmp_path: Path) -> None:
        """The first look says changed; nothing new says unchanged; a new folder says changed."""
        probe = DirProbe(tmp_path)
        assert probe.changed() is True
        assert probe.changed() is False
        (tmp_path / "exp-1").mkdir()
        assert probe.changed() is True
        assert probe.changed() is False

    def test_renamed_in_entry_is_a_change(self, tmp_path: Path) -> None:
        """An experiment folder renamed in from elsewhere is seen."""
        raw, stage = tmp_path / "raw", tmp_path / "stage"
        raw.mkdir()
        (stage / "exp-1").mkdir(parents=True)
        probe = DirProbe(raw)
        probe.changed()
        os.rename(stage / "exp-1", raw / "exp-1")
        assert probe.changed() is True

    def test_missing_folder_counts_as_changed(self, tmp_path: Path) -> None:
        """A folder that cannot be ``stat``-ed is listed (which reports the problem)."""
        probe = DirProbe(tmp_path / "gone")
        assert probe.changed() is True
        assert probe.changed() is True
