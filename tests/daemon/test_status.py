"""The daemon's ``status.json``: what it says, when it is rewritten, and how ``status`` reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.lease import Lease
from energy_ledger.daemon.records import EmissionRecord, StateStore
from energy_ledger.daemon.status import (
    MAX_LISTED,
    STATUS_NAME,
    StatusFile,
    daemon_lines,
    daemon_status,
    status_view,
)


def row(experiment_id: str, *, idle_sec: float = 0.0, stale: bool = False) -> dict[str, Any]:
    """One ``active`` row as the watcher builds it."""
    return {
        "experiment_id": experiment_id,
        "state": "incomplete",
        "detail": "process 1: no marker yet",
        "idle_sec": idle_sec,
        "stale": stale,
    }


def view(store: StateStore, active: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """A status view with fixed times; ``changes`` override its arguments."""
    arguments: dict[str, Any] = {
        "root": Path("/results"),
        "config": WatchConfig(),
        "mode": "inotify",
        "filesystem": "ext4",
        "started_t": 100.0,
        "now": 200.0,
        "lag_sec": 0.0123456,
        "active": active,
        "store": store,
        "rejected": {},
        "errors": [],
        "stopped": False,
        **changes,
    }
    return status_view(**arguments)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    """A state store with two complete emissions and one partial."""
    s = StateStore(tmp_path / "state")
    s.load()
    s.claim(EmissionRecord.new("a", "complete", hook=False))
    s.claim(EmissionRecord.new("b", "complete", hook=False))
    s.claim(EmissionRecord.new("c", "partial", hook=False))
    return s


class TestStatusView:
    """What the watcher's view holds."""

    def test_counts_and_lists(self, store: StateStore) -> None:
        """Emissions counted by kind, stale ids listed, rejected names sorted, lag rounded."""
        status = view(
            store,
            [row("x"), row("y", stale=True)],
            rejected={"z z": "unsafe", "b b": "unsafe"},
            errors=[{"t": 1.0, "experiment_id": None, "error": "boom"}],
        )
        assert (status["emitted"], status["partial"], status["active_count"]) == (2, 1, 2)
        assert status["stale"] == ["y"]
        assert [r["name"] for r in status["rejected"]] == ["b b", "z z"]
        assert status["errors"] == [{"t": 1.0, "experiment_id": None, "error": "boom"}]
        assert status["lag_sec"] == 0.012
        assert status["poll_interval_sec"] == 1.0 and status["lease_timeout_sec"] == 30.0
        assert status["hooks"] == {
            "pending": 0,
            "running": 0,
            "interrupted": 0,
            "done": 0,
            "failed": [],
        }

    def test_active_list_is_capped_but_counted(self, store: StateStore) -> None:
        """Only the first MAX_LISTED active experiments are listed; the count is the true one."""
        active = [row(f"e{i:04d}", stale=True) for i in range(MAX_LISTED + 5)]
        status = view(store, active)
        assert len(status["active"]) == MAX_LISTED
        assert status["active_count"] == MAX_LISTED + 5
        assert len(status["stale"]) == MAX_LISTED + 5


class TestStatusFile:
    """``status.json`` is rewritten when what it says changed, or when forced."""

    def test_rewritten_only_for_a_real_change(self, tmp_path: Path, store: StateStore) -> None:
        """Clock, lag and idle time alone do not rewrite it; a new state or ``force`` does."""
        path = tmp_path / STATUS_NAME
        status_file = StatusFile(tmp_path)
        status_file.write(view(store, [row("x")]), force=False)
        first = path.read_bytes()
        assert json.loads(first)["active"][0]["experiment_id"] == "x"
        status_file.write(view(store, [row("x", idle_sec=9.0)], now=300.0, lag_sec=2), force=False)
        assert path.read_bytes() == first
        status_file.write(view(store, [row("x", stale=True)]), force=False)
        assert json.loads(path.read_bytes())["stale"] == ["x"]
        status_file.write(view(store, [row("x", stale=True)], now=400.0), force=True)
        assert json.loads(path.read_bytes())["updated_t"] == 400.0

    def test_same_view_same_bytes(self, tmp_path: Path, store: StateStore) -> None:
        """Keys are sorted, so the same view gives the same bytes."""
        StatusFile(tmp_path / "one").write(view(store, [row("x")]), force=True)
        StatusFile(tmp_path / "two").write(view(store, [row("x")]), force=True)
        assert (tmp_path / "one" / STATUS_NAME).read_bytes() == (
            tmp_path / "two" / STATUS_NAME
        ).read_bytes()

    def test_failed_write_is_logged_not_raised(
        self, tmp_path: Path, store: StateStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A state folder that cannot be written gives a warning; the daemon goes on."""
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        StatusFile(blocker).write(view(store, []), force=True)
        assert "cannot write the status file" in caplog.text


class TestDaemonStatus:
    """Reading the daemon's view back, as ``energy-ledger status`` does."""

    def test_no_daemon_ever_ran(self, tmp_path: Path) -> None:
        """No state folder: not running, no lease, no status."""
        got = daemon_status(tmp_path)
        assert got["running"] is False
        assert got["lease"] is None and got["heartbeat_age_sec"] is None
        assert got["status"] is None
        assert got["state_dir"] == str(tmp_path / ".energy-ledger")

    def test_live_holder_and_its_status(self, tmp_path: Path, store: StateStore) -> None:
        """A lease held by a live process and a status file: running, with that status."""
        state_dir = tmp_path / ".energy-ledger"
        lease = Lease(state_dir, 30.0)
        lease.acquire()
        try:
            StatusFile(state_dir).write(view(store, [row("x")]), force=True)
            got = daemon_status(tmp_path)
        finally:
            lease.release()
        assert got["running"] is True
        assert got["lease"]["pid"] == lease.info.pid
        assert got["status"]["emitted"] == 2
        assert daemon_status(tmp_path)["running"] is False  # released

    def test_unreadable_status_is_none(self, tmp_path: Path) -> None:
        """A torn or foreign status file reads as no status, not an error."""
        state_dir = tmp_path / ".energy-ledger"
        state_dir.mkdir()
        (state_dir / STATUS_NAME).write_text("[1, 2")
        assert daemon_status(tmp_path)["status"] is None


class TestDaemonLines:
    """The readable lines ``energy-ledger status`` prints for the daemon."""

    @pytest.mark.parametrize(
        ("daemon_view", "expected"),
        [
            ({"running": False, "lease": None, "heartbeat_age_sec": None, "status": None}, []),
            (
                {
                    "running": False,
                    "lease": None,
                    "heartbeat_age_sec": None,
                    "status": {"host": "node2", "pid": 7, "emitted": 4, "lag_sec": 0.0},
                },
                [
                    "daemon: not running (last ran as pid 7 on node2)",
                    "  lag 0.0 s, 4 emitted, 0 partial, 0 active, 0 stale",
                ],
            ),
            (
                {
                    "running": True,
                    "lease": {"host": "node1", "pid": 42},
                    "heartbeat_age_sec": None,
                    "status": None,
                },
                ["daemon: running (pid 42 on node1)"],
            ),
            (
                {
                    "running": True,
                    "lease": {"host": "node1", "pid": 42},
                    "heartbeat_age_sec": 1.25,
                    "status": {
                        "mode": "polling",
                        "filesystem": "nfs4",
                        "lag_sec": 0.5,
                        "emitted": 3,
                        "partial": 1,
                        "active_count": 2,
                        "stale": ["x"],
                        "hooks": {
                            "done": 3,
                            "pending": 1,
                            "running": 0,
                            "interrupted": 2,
                            "failed": [{}],
                        },
                        "errors": ["boom"],
                    },
                },
                [
                    "daemon: running (pid 42 on node1), polling on nfs4, heartbeat 1.2 s ago",
                    "  lag 0.5 s, 3 emitted, 1 partial, 2 active, 1 stale",
                    "  hooks: 3 done, 1 pending, 0 running, 2 interrupted, 1 failed",
                    "  error: boom",
                ],
            ),
            (
                {
                    "running": True,
                    "lease": {"host": "node1", "pid": 42},
                    "heartbeat_age_sec": None,
                    "status": {"emitted": 1, "metrics_url": "http://127.0.0.1:9464/metrics"},
                },
                [
                    "daemon: running (pid 42 on node1), ? on ?",
                    "  lag - s, 1 emitted, 0 partial, 0 active, 0 stale",
                    "  metrics: http://127.0.0.1:9464/metrics",
                ],
            ),
        ],
        ids=["never-ran", "stopped", "starting", "running", "metrics"],
    )
    def test_lines(self, daemon_view: dict[str, Any], expected: list[str]) -> None:
        """Each view gives exactly these lines."""
        assert daemon_lines(daemon_view) == expected
