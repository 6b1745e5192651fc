"""The inotify source: events become experiment ids, and a queue overflow reaches the watcher."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, Mask, WatchDescriptor

from energy_ledger.daemon.sources import ROOT_EVENT, InotifySource, event_experiment_ids
from tests.helpers import wait_for


class TestEventIds:
    """The pure mapping from an event's paths to experiment ids."""

    @pytest.mark.parametrize(
        ("paths", "expected"),
        [
            (["/r/raw/exp-1/process_0.events.jsonl"], {"exp-1"}),
            (["/r/raw/exp-1", "/r/raw/exp-2/x"], {"exp-1", "exp-2"}),
            (["/r/raw"], {ROOT_EVENT}),
            (["/r/aggregated/exp-1.json", ""], set()),
        ],
    )
    def test_ids(self, paths: list[str], expected: set[str]) -> None:
        """The first part below raw/ is the id; raw/ itself asks for a relist."""
        assert event_experiment_ids("/r/raw", paths) == expected


class TestInotifySource:
    """watchdog's observer wired to the watcher's callbacks."""

    def test_changes_and_overflow_are_reported(self, tmp_path: Path) -> None:
        """A new log is reported by id; an IN_Q_OVERFLOW from the kernel calls on_overflow."""
        raw = tmp_path / "raw"
        raw.mkdir()
        changed: list[str] = []
        overflowed = threading.Event()
        source = InotifySource(raw, changed.append, overflowed.set)
        source.start()
        try:
            (raw / "exp-1").mkdir()
            (raw / "exp-1" / "process_0.events.jsonl").write_bytes(b"{}\n")
            wait_for(lambda: "exp-1" in changed, "the change to be reported")
            assert not overflowed.is_set()
            # What the kernel queues when it drops events, fed to watchdog's own dispatch.
            fd = source.inotify_fd
            assert fd is not None
            overflow = Mask(InotifyConstants.IN_Q_OVERFLOW)
            fd.handle_event(InotifyEvent(WatchDescriptor(-1), overflow, 0, b""))
            assert overflowed.wait(5)
            (raw / "exp-2").mkdir()
            wait_for(lambda: "exp-2" in changed, "events after the overflow")
        finally:
            source.stop()
        assert not source.is_alive()
