"""The --on-emit hook runner: recorded before and after each run, retried, never blocking."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.daemon.hooks import HookRunner
from energy_ledger.daemon.records import EmissionRecord, StateStore


def wait_for(condition: Callable[[], Any], what: str, timeout_sec: float = 10.0) -> Any:
    """Poll ``condition`` until truthy; fail after ``timeout_sec``."""
    deadline = time.monotonic() + timeout_sec
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    """An empty state store."""
    s = StateStore(tmp_path / "state")
    s.load()
    return s


@pytest.fixture
def runners() -> Iterator[Callable[..., HookRunner]]:
    """Make hook runners; each is closed at teardown."""
    made: list[HookRunner] = []

    def make(script: str, store: StateStore, **options: Any) -> HookRunner:
        runner = HookRunner(["sh", "-c", script, "hook"], store, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close(grace_sec=0.0)


def emit(store: StateStore, experiment_id: str, tmp_path: Path) -> EmissionRecord:
    """Record an emission whose hook is still to run."""
    return store.record_emission(
        experiment_id, "complete", tmp_path / f"{experiment_id}.json", with_hook=True
    )


def state_of(store: StateStore, experiment_id: str) -> str:
    """The hook state as stored on disk (not the in-memory copy)."""
    fresh = StateStore(store.state_dir)
    fresh.load()
    return fresh.records[experiment_id].hook_state


class TestRuns:
    """A hook's life: pending, running, done (or failed)."""

    def test_success_gets_path_and_id(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """The command gets the result path and the experiment id as its last two arguments."""
        out = tmp_path / "args"
        runner = runners(f'echo "$1 $2" > {out}', store)
        emit(store, "exp-1", tmp_path)
        runner.submit("exp-1")
        wait_for(lambda: state_of(store, "exp-1") == "done", "the hook to finish")
        assert out.read_text().split() == [str(tmp_path / "exp-1.json"), "exp-1"]
        assert store.get("exp-1").hook_attempts == 1  # type: ignore[union-attr]

    def test_recorded_running_while_it_runs(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """While the hook runs, the record on disk says running (so a crash reruns it)."""
        flag = tmp_path / "started"
        runner = runners(f"touch {flag}; sleep 2", store)
        emit(store, "exp-1", tmp_path)
        runner.submit("exp-1")
        wait_for(flag.exists, "the hook to start")
        assert state_of(store, "exp-1") == "running"

    def test_retried_with_backoff_until_it_succeeds(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook that fails twice then succeeds ends done after three attempts."""
        count = tmp_path / "count"
        script = f'echo x >> {count}; [ "$(wc -l < {count})" -ge 3 ]'
        runner = runners(script, store, retries=5, backoff_sec=0.05)
        emit(store, "exp-1", tmp_path)
        runner.submit("exp-1")
        wait_for(lambda: state_of(store, "exp-1") == "done", "the third attempt")
        assert store.get("exp-1").hook_attempts == 3  # type: ignore[union-attr]

    def test_gives_up_and_reports(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook that always fails is marked failed with its exit status and output."""
        runner = runners("echo broken pipe dream; exit 7", store, retries=2, backoff_sec=0.01)
        emit(store, "exp-1", tmp_path)
        runner.submit("exp-1")
        wait_for(lambda: state_of(store, "exp-1") == "failed", "giving up")
        record = store.get("exp-1")
        assert record is not None and record.hook_attempts == 2
        assert "exit status 7" in (record.hook_error or "")
        assert "broken pipe dream" in (record.hook_error or "")
        assert store.hook_counts()["failed"][0]["experiment_id"] == "exp-1"

    def test_timeout_kills_the_hook(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook running past its timeout is killed and counted as a failed attempt."""
        runner = runners("sleep 30", store, retries=1, timeout_sec=0.2)
        emit(store, "exp-1", tmp_path)
        runner.submit("exp-1")
        wait_for(lambda: state_of(store, "exp-1") == "failed", "the timeout")
        assert "timed out" in (store.get("exp-1").hook_error or "")  # type: ignore[union-attr]

    def test_missing_program_is_a_failure(self, tmp_path: Path, store: StateStore) -> None:
        """A command that cannot be started fails like any other."""
        runner = HookRunner(["/nonexistent/hook"], store, retries=1)
        try:
            emit(store, "exp-1", tmp_path)
            runner.submit("exp-1")
            wait_for(lambda: state_of(store, "exp-1") == "failed", "the failure")
            assert "cannot start" in (store.get("exp-1").hook_error or "")  # type: ignore[union-attr]
        finally:
            runner.close()


class TestIsolation:
    """One slow hook holds nobody up, and stopping leaves it to rerun."""

    def test_slow_hook_does_not_block_others(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook that hangs does not delay another experiment's hook."""
        runner = runners('[ "$2" = slow ] && sleep 30; true', store)
        emit(store, "slow", tmp_path)
        emit(store, "fast", tmp_path)
        runner.submit("slow")
        runner.submit("fast")
        wait_for(lambda: state_of(store, "fast") == "done", "the fast hook")
        assert state_of(store, "slow") == "running"

    def test_close_leaves_cut_hooks_running_and_unstarted_pending(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        """After close, a killed hook stays running and a waiting one pending: both rerun."""
        flag = tmp_path / "started"
        runner = HookRunner(
            ["sh", "-c", f'[ "$2" = a ] && touch {flag} && sleep 30; exit 1', "hook"],
            store,
            backoff_sec=60.0,
        )
        emit(store, "a", tmp_path)
        emit(store, "b", tmp_path)
        runner.submit("a")
        runner.submit("b", delay_sec=60.0)
        wait_for(flag.exists, "hook a to start")
        runner.close(grace_sec=0.1)
        assert state_of(store, "a") == "running"
        assert state_of(store, "b") == "pending"


class TestResume:
    """A new daemon reruns the hooks the last one left unfinished, and only those."""

    def test_reruns_pending_and_running_hooks_only(
        self,
        tmp_path: Path,
        store: StateStore,
        runners: Callable[..., HookRunner],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Pending and running hooks run again; done, failed and hookless records are left."""
        ran = tmp_path / "ran"
        for experiment_id in ("pending", "running", "done", "failed"):
            emit(store, experiment_id, tmp_path)
        for experiment_id in ("running", "done", "failed"):
            store.set_hook(experiment_id, experiment_id)  # type: ignore[arg-type]
        store.record_emission("nohook", "complete", tmp_path / "nohook.json", with_hook=False)
        with caplog.at_level("WARNING", logger="energy_ledger.daemon.hooks"):
            runner = runners(f'echo "$2" >> {ran}', store)
            assert runner.resume_unfinished() == 2
            wait_for(
                lambda: state_of(store, "pending") == state_of(store, "running") == "done",
                "both unfinished hooks to run",
            )
        assert sorted(ran.read_text().split()) == ["pending", "running"]
        assert [state_of(store, e) for e in ("done", "failed", "nohook")] == [
            "done",
            "failed",
            "none",
        ]
        assert "running: its hook was running when the daemon stopped" in caplog.text
        assert "pending: its hook was running" not in caplog.text
