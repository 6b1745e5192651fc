"""The --on-emit hook runner: each attempt claimed first, bounded, retried, never blocking."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.daemon.hooks import HookRunner
from energy_ledger.daemon.records import EmissionRecord, StateStore
from energy_ledger.exceptions import LeaseLostError, LedgerError


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
def runners(tmp_path: Path) -> Iterator[Callable[..., HookRunner]]:
    """Make hook runners over ``sh -c SCRIPT``; each is closed at teardown."""
    made: list[HookRunner] = []

    def make(script: str, store: StateStore, **options: Any) -> HookRunner:
        runner = HookRunner(["sh", "-c", script, "hook"], store, root=tmp_path, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close(grace_sec=0.0, stop_running=True)


def emit(store: StateStore, experiment_id: str) -> EmissionRecord:
    """Record an emission whose hook is still to run."""
    return store.claim(EmissionRecord.new(experiment_id, "complete", hook=True))


def on_disk(store: StateStore, key: str) -> str:
    """The hook state as its markers on disk say (read by another store, not from memory).

    Not ``load()``: that is the start-up of a lease holder and sweeps temp files away, including
    those of a write in progress.
    """
    return StateStore(store.state_dir).read_progress(key, up_to=10).state()


def attempt_markers(store: StateStore, key: str) -> list[str]:
    """The names of an emission's hook markers, sorted."""
    return sorted(p.name.rpartition("@")[2] for p in store.emitted_dir.glob(f"{key}@*"))


class TestRuns:
    """A hook's life: attempt claimed, run, done (or failed)."""

    def test_success_gets_path_id_and_idempotency_key(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """Arguments: result path and id; environment: the emission id and attempt number."""
        out = tmp_path / "args"
        script = f'echo "$1 $2 $ENERGY_LEDGER_EMISSION_ID $ENERGY_LEDGER_HOOK_ATTEMPT" > {out}'
        runner = runners(script, store)
        record = emit(store, "exp-1")
        runner.submit("exp-1")
        wait_for(lambda: on_disk(store, "exp-1") == "done", "the hook to finish")
        result = tmp_path / "aggregated" / "exp-1.json"
        assert out.read_text().split() == [str(result), "exp-1", record.emission_id, "1"]
        assert attempt_markers(store, "exp-1") == ["attempt-1", "done"]

    def test_attempt_claimed_before_it_runs(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """While the hook runs, its attempt marker is on disk and no outcome is."""
        flag = tmp_path / "started"
        runner = runners(f"touch {flag}; sleep 2", store)
        emit(store, "exp-1")
        runner.submit("exp-1")
        wait_for(flag.exists, "the hook to start")
        assert attempt_markers(store, "exp-1") == ["attempt-1"]
        assert store.hook_counts()["running"] == 1

    def test_retried_with_backoff_until_it_succeeds(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook that fails twice then succeeds ends done after three claimed attempts."""
        count = tmp_path / "count"
        script = f'echo x >> {count}; [ "$(wc -l < {count})" -ge 3 ]'
        runner = runners(script, store, max_attempts=5, backoff_sec=0.05)
        emit(store, "exp-1")
        runner.submit("exp-1")
        wait_for(lambda: on_disk(store, "exp-1") == "done", "the third attempt")
        assert attempt_markers(store, "exp-1") == [
            "attempt-1",
            "attempt-2",
            "attempt-3",
            "done",
            "fail-1",
            "fail-2",
        ]

    def test_gives_up_after_max_attempts_and_reports(
        self, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook that always fails is given up with its exit status and output."""
        runner = runners("echo broken pipe dream; exit 7", store, max_attempts=2, backoff_sec=0.01)
        emit(store, "exp-1")
        runner.submit("exp-1")
        (failed,) = wait_for(lambda: store.hook_counts()["failed"], "giving up")
        assert on_disk(store, "exp-1") == "failed"
        assert failed["experiment_id"] == "exp-1"
        assert "exit status 7" in failed["error"] and "broken pipe dream" in failed["error"]
        assert attempt_markers(store, "exp-1").count("attempt-2") == 1
        assert "attempt-3" not in attempt_markers(store, "exp-1")

    def test_timeout_kills_the_hook(
        self, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook running past its timeout is killed and counted as a failed attempt."""
        runner = runners("sleep 30", store, max_attempts=1, timeout_sec=0.2)
        emit(store, "exp-1")
        runner.submit("exp-1")
        (failed,) = wait_for(lambda: store.hook_counts()["failed"], "the timeout")
        assert "timed out" in failed["error"]

    def test_missing_program_is_a_failure(self, tmp_path: Path, store: StateStore) -> None:
        """A command that cannot be started fails like any other."""
        runner = HookRunner(["/nonexistent/hook"], store, root=tmp_path, max_attempts=1)
        try:
            emit(store, "exp-1")
            runner.submit("exp-1")
            (failed,) = wait_for(lambda: store.hook_counts()["failed"], "the failure")
            assert "cannot start" in failed["error"]
        finally:
            runner.close(stop_running=True)


class TestBound:
    """Finished hooks never run again; interrupted ones rerun only while attempts remain."""

    def test_done_hook_never_runs_again(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook whose done marker exists is not started, however often it is submitted."""
        ran = tmp_path / "ran"
        emit(store, "exp-1")
        store.start_attempt("exp-1", 1, "an earlier daemon")
        store.finish_attempt("exp-1", 1, None, give_up=False)
        runner = runners(f"echo again >> {ran}", store)
        for _ in range(3):
            runner.submit("exp-1")
        wait_for(lambda: runner.busy == 0, "the submissions to be handled")
        assert not ran.exists()

    def test_interrupted_run_is_rerun_while_attempts_remain(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """Attempt 1 started and never finished (a crash): attempt 2 runs, with that number."""
        out = tmp_path / "attempt"
        emit(store, "exp-1")
        store.start_attempt("exp-1", 1, "a killed daemon")
        runner = runners(f'echo "$ENERGY_LEDGER_HOOK_ATTEMPT" > {out}', store, max_attempts=2)
        assert runner.resume_unfinished() == 1
        wait_for(lambda: on_disk(store, "exp-1") == "done", "the rerun")
        assert out.read_text().strip() == "2"

    @pytest.mark.parametrize("max_attempts", [1, 3])
    def test_interrupted_runs_stop_at_the_bound(
        self,
        tmp_path: Path,
        store: StateStore,
        runners: Callable[..., HookRunner],
        max_attempts: int,
    ) -> None:
        """With every allowed attempt started and interrupted, the hook is given up, not run."""
        ran = tmp_path / "ran"
        emit(store, "exp-1")
        for n in range(1, max_attempts + 1):
            store.start_attempt("exp-1", n, "a killed daemon")
        runner = runners(f"touch {ran}", store, max_attempts=max_attempts)
        runner.resume_unfinished()
        (failed,) = wait_for(lambda: store.hook_counts()["failed"], "giving up")
        assert not ran.exists()
        error = failed["error"]
        assert f"{max_attempts} attempt(s) started, the last one interrupted" in error
        assert f"hook_max_attempts = {max_attempts}" in error

    def test_lost_lease_starts_nothing(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A daemon that lost its lease claims no attempt: the new holder owes the hook."""
        ran = tmp_path / "ran"

        def lost() -> None:
            raise LeaseLostError("lost the lease: it is now held by host b pid 2")

        runner = runners(f"touch {ran}", store, fence=lost)
        emit(store, "exp-1")
        runner.submit("exp-1")
        wait_for(lambda: runner.busy == 0, "the submission to be handled")
        assert not ran.exists()
        assert attempt_markers(store, "exp-1") == []

    def test_unverifiable_lease_retries_later(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A lease that cannot be read (a transient NFS error) postpones the hook; it runs later."""
        calls: list[int] = []

        def flaky() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise LedgerError("cannot read lease.json: Stale file handle")

        runner = runners("true", store, fence=flaky, backoff_sec=0.0)
        emit(store, "exp-1")
        runner.submit("exp-1")
        wait_for(lambda: on_disk(store, "exp-1") == "done", "the postponed hook", timeout_sec=5)
        assert len(calls) == 2 and attempt_markers(store, "exp-1") == ["attempt-1", "done"]


class TestIsolation:
    """One slow hook holds nobody up, and stopping leaves it interrupted."""

    def test_slow_hook_does_not_block_others(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A hook that hangs does not delay another experiment's hook."""
        flag = tmp_path / "slow-started"
        runner = runners(f'[ "$2" = slow ] && touch {flag} && sleep 30; true', store)
        emit(store, "slow")
        emit(store, "fast")
        runner.submit("slow")
        wait_for(flag.exists, "the slow hook to start")
        runner.submit("fast")
        wait_for(lambda: on_disk(store, "fast") == "done", "the fast hook")
        assert on_disk(store, "slow") == "interrupted"  # started, no outcome yet
        wait_for(lambda: store.running == {"slow"}, "only the slow hook to be running")

    def test_close_stops_cut_hooks_only_when_asked(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """close(stop_running=True): a killed hook has no outcome; a waiting one no attempt."""
        flag = tmp_path / "started"
        runner = runners(
            f'[ "$2" = a ] && touch {flag} && sleep 30; exit 1', store, backoff_sec=60.0
        )
        emit(store, "a")
        emit(store, "b")
        runner.submit("a")
        runner.submit("b", delay_sec=60.0)
        wait_for(flag.exists, "hook a to start")
        runner.close(grace_sec=0.1, stop_running=True)
        wait_for(lambda: store.hook_counts()["running"] == 0, "the runner to let go")
        assert on_disk(store, "a") == "interrupted"
        assert on_disk(store, "b") == "pending"


class TestSupervisor:
    """The attempt's supervisor records its outcome, so a dead daemon repeats no hook."""

    def test_hook_outlives_its_daemon_and_is_not_rerun(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """The runner stops mid-hook; the hook ends, is recorded; the next runner waits for it."""
        count, flag = tmp_path / "count", tmp_path / "started"
        script = f"touch {flag}; sleep 0.6; echo run >> {count}"
        first = runners(script, store)
        emit(store, "exp-1")
        first.submit("exp-1")
        wait_for(flag.exists, "the hook to start")
        first.close(grace_sec=0.0)  # like a daemon that dies: the supervisor goes on
        second = runners(script, store)
        assert second.resume_unfinished() == 1
        wait_for(lambda: on_disk(store, "exp-1") == "done", "the first run to be recorded")
        wait_for(lambda: second.busy == 0, "the second runner to settle")
        assert count.read_text() == "run\n"
        assert attempt_markers(store, "exp-1") == ["attempt-1", "done"]

    def test_dead_supervisor_means_interrupted(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """A supervisor killed with its hook recorded nothing: the next runner reruns it."""
        count, flag = tmp_path / "count", tmp_path / "started"
        script = f'echo "$ENERGY_LEDGER_HOOK_ATTEMPT" >> {count}; touch {flag}; sleep 30'
        first = runners(script, store)
        emit(store, "exp-1")
        first.submit("exp-1")
        wait_for(flag.exists, "the hook to start")
        pid = store.attempt_claim("exp-1", 1)["supervisor"]["pid"]
        first.close(grace_sec=0.0, stop_running=True)  # SIGTERM: hook and supervisor gone
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the supervisor to die")
        flag.unlink()
        second = runners(f'echo "$ENERGY_LEDGER_HOOK_ATTEMPT" >> {count}', store)
        second.resume_unfinished()
        wait_for(lambda: on_disk(store, "exp-1") == "done", "the rerun")
        assert count.read_text().split() == ["1", "2"]


class TestResume:
    """A new daemon schedules the hooks the last one left unfinished, and only those."""

    def test_resumes_unfinished_hooks_only(
        self, tmp_path: Path, store: StateStore, runners: Callable[..., HookRunner]
    ) -> None:
        """Pending and interrupted hooks run; done, failed and hookless records are left."""
        ran = tmp_path / "ran"
        for experiment_id in ("pending", "interrupted", "done", "failed"):
            emit(store, experiment_id)
        store.start_attempt("interrupted", 1, "a killed daemon")
        store.start_attempt("done", 1, "a daemon")
        store.finish_attempt("done", 1, None, give_up=False)
        store.start_attempt("failed", 1, "a daemon")
        store.finish_attempt("failed", 1, "exit status 1", give_up=True)
        store.claim(EmissionRecord.new("nohook", "complete", hook=False))
        fresh = StateStore(store.state_dir)
        fresh.load()
        runner = runners(f'echo "$2" >> {ran}', fresh)
        assert runner.resume_unfinished() == 2
        wait_for(
            lambda: on_disk(store, "pending") == on_disk(store, "interrupted") == "done",
            "both unfinished hooks to run",
        )
        assert sorted(ran.read_text().split()) == ["interrupted", "pending"]
        assert [on_disk(store, e) for e in ("done", "failed")] == ["done", "failed"]
