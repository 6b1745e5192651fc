"""The hook runner of object-store roots: attempts created once, bounded, waited for, never rerun.

Every test runs real supervisors and a real hook (a Python script) on a ``LocalObjects`` folder,
the store the bucket tests run on SeaweedFS (``tests/s3/test_bucket_hooks_s3.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.daemon import bucket_supervise
from energy_ledger.daemon.bucket_hooks import (
    GRACE_SEC,
    BucketHookRunner,
    create_marker,
    hook_finished,
    marker_key,
)
from energy_ledger.daemon.supervise import CLAIMED_ELSEWHERE, own_identity
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.bucket_claims import Claimer, ClaimLost, record_emission
from energy_ledger.store.objects import LocalObjects, ObjectInfo, ObjectStore, PreconditionFailed
from tests.helpers import child_env, wait_for

# Logs each run (its variables and arguments) as a JSON line, after sleeping and while no
# ``.hold`` file is there; fails while the log holds no more than FAIL_RUNS lines. ``a`` appends
# with O_APPEND: lines never interleave.
HOOK = """
import json, os, sys, time
out, sleep_sec, fail_runs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
open(out + ".started", "a").close()
time.sleep(sleep_sec)
while os.path.exists(out + ".hold"):
    time.sleep(0.02)
names = ("EMISSION_ID", "EXPERIMENT_ID", "RESULT", "RESULT_KIND", "HOOK_ATTEMPT")
env = {name: os.environ["ENERGY_LEDGER_" + name] for name in names}
with open(out, "a") as fh:
    fh.write(json.dumps({"env": env, "argv": sys.argv[4:]}) + "\\n")
with open(out) as fh:
    if sum(1 for _ in fh) <= fail_runs:
        print("hook broke on purpose")
        sys.exit(3)
"""

# A daemon of its own: a runner in a child process, which the test kills with SIGKILL.
CHILD = """
import json, sys, time
from pathlib import Path
from energy_ledger.daemon.bucket_hooks import BucketHookRunner
from energy_ledger.store.objects import LocalObjects
root, argv, experiment_id = json.loads(sys.argv[1])
runner = BucketHookRunner(LocalObjects(Path(root)), argv, fence=lambda _: None, holder="child")
runner.submit(experiment_id)
time.sleep(60)
"""


class Hook:
    """The hook script and its log: ``argv(...)`` is a command, ``runs()`` what it logged."""

    def __init__(self, folder: Path) -> None:
        self.script = folder / "hook.py"
        self.script.write_text(HOOK)
        self.out = folder / "hook.log"

    def argv(self, *, sleep_sec: float = 0.0, fail_runs: int = 0) -> list[str]:
        return [sys.executable, str(self.script), str(self.out), str(sleep_sec), str(fail_runs)]

    def runs(self) -> list[dict[str, Any]]:
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [json.loads(line) for line in lines]

    @property
    def started(self) -> Path:
        return Path(f"{self.out}.started")

    @property
    def hold(self) -> Path:
        """While this file exists, a run that started does not end."""
        return Path(f"{self.out}.hold")


class FakeClock:
    """A monotonic clock the test sets; it keeps every value it returned."""

    def __init__(self) -> None:
        self.now = 0.0
        self.returned: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.returned.append(self.now)
            return self.now

    def looks_at(self, value: float) -> int:
        """How often it returned ``value`` or later."""
        with self._lock:
            return sum(1 for t in self.returned if t >= value)


@pytest.fixture
def objects(tmp_path: Path) -> ObjectStore:
    """An empty results root on a folder."""
    return LocalObjects(tmp_path / "root")


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[Hook]:
    """The logging hook; no run is left held at teardown."""
    made = Hook(tmp_path)
    yield made
    made.hold.unlink(missing_ok=True)


@pytest.fixture
def runners(objects: ObjectStore) -> Iterator[Callable[..., BucketHookRunner]]:
    """Make runners (each a daemon) on ``objects``; each is closed at teardown."""
    made: list[BucketHookRunner] = []

    def make(argv: list[str], **options: Any) -> BucketHookRunner:
        options.setdefault("fence", lambda _: None)
        options.setdefault("holder", f"daemon-{len(made)}")
        runner = BucketHookRunner(objects, argv, **options)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close(grace_sec=0.0, stop_running=True)


def emit(objects: ObjectStore, experiment_id: str) -> str:
    """Record the emission of an experiment whose hook is owed; its emission id."""
    claim = Claimer(objects).claim(experiment_id, ttl_sec=60.0)
    assert claim is not None
    emission_id = uuid.uuid4().hex
    body = {
        "emission_id": emission_id,
        "result": f"aggregated/{experiment_id}.json",
        "hook": True,
        "emitted_t": time.time(),
    }
    assert record_emission(objects, experiment_id, claim, body)
    return emission_id


def markers(objects: ObjectStore, experiment_id: str) -> list[str]:
    """The names of an experiment's hook markers on the store, sorted."""
    prefix = f"emissions/{experiment_id}@"
    keys = [info.key for info in objects.list("emissions/") if info.key.startswith(prefix)]
    return sorted(key[len(prefix) : -len(".json")] for key in keys)


def marker(objects: ObjectStore, experiment_id: str, name: str) -> dict[str, Any]:
    """One marker's body."""
    loaded: dict[str, Any] = json.loads(objects.get(marker_key(experiment_id, name)))
    return loaded


def plant_attempt(objects: ObjectStore, experiment_id: str, n: int, **supervisor: Any) -> None:
    """Create ``@attempt-<n>`` as a supervisor with this identity (overridden) would."""
    who = {**own_identity(), **supervisor}
    body = {"attempt": n, "holder": "another daemon", "t": time.time(), "supervisor": who}
    assert create_marker(objects, marker_key(experiment_id, f"attempt-{n}"), body)


class TestHookFinished:
    """``hook_finished`` reads one listing's keys."""

    @pytest.mark.parametrize(
        ("keys", "finished"),
        [
            (set(), False),
            ({"emissions/x.json", "emissions/x@attempt-1.json"}, False),
            ({"emissions/x@attempt-1.json", "emissions/x@fail-1.json"}, False),
            ({"emissions/x@done.json"}, True),
            ({"emissions/x@failed.json"}, True),
            ({"emissions/x-2@done.json", "emissions/y@failed.json"}, False),
        ],
    )
    def test_done_or_failed(self, keys: set[str], finished: bool) -> None:
        """Only ``@done`` or ``@failed`` of that very experiment finish it."""
        assert hook_finished(keys, "x") is finished


class TestRuns:
    """One emission's hook: claimed, run with its arguments, retried, bounded."""

    def test_runs_once_with_result_url_and_emission_id(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """Submitted three times, it runs once, told the result URL, the id and the emission id."""
        emission_id = emit(objects, "exp-1")
        runner = runners(hook.argv(), holder="owner-a")
        for _ in range(3):
            runner.submit("exp-1")
        wait_for(lambda: runner.finished("exp-1"), "the hook to finish", timeout_sec=30)
        result_url = f"{objects.url}/aggregated/exp-1.json"
        assert hook.runs() == [
            {
                "argv": [result_url, "exp-1"],
                "env": {
                    "EMISSION_ID": emission_id,
                    "EXPERIMENT_ID": "exp-1",
                    "RESULT": result_url,
                    "RESULT_KIND": "complete",
                    "HOOK_ATTEMPT": "1",
                },
            }
        ]
        assert markers(objects, "exp-1") == ["attempt-1", "done"]
        claim = marker(objects, "exp-1", "attempt-1")
        assert claim["holder"] == "owner-a" and claim["nonce"]
        assert claim["supervisor"]["host"] == own_identity()["host"]
        assert (runner.runs, runner.failures, runner.busy("exp-1")) == (1, 0, False)

    def test_failing_hook_is_retried_then_given_up(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """A hook that always fails runs ``max_attempts`` times, then ``@failed`` says why."""
        emit(objects, "exp-1")
        runner = runners(hook.argv(fail_runs=99), max_attempts=3, backoff_sec=0.05)
        runner.submit("exp-1")
        wait_for(lambda: runner.finished("exp-1"), "giving up", timeout_sec=30)
        assert markers(objects, "exp-1") == [
            *("attempt-1", "attempt-2", "attempt-3"),
            "fail-1",
            "fail-2",
            "fail-3",
            "failed",
        ]
        assert [run["env"]["HOOK_ATTEMPT"] for run in hook.runs()] == ["1", "2", "3"]
        why = marker(objects, "exp-1", "failed")["why"]
        assert "exit status 3" in why and "hook broke on purpose" in why
        assert (runner.runs, runner.failures) == (3, 3)

    def test_retried_until_it_succeeds(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """A hook that fails once is done at its second attempt."""
        emit(objects, "exp-1")
        runner = runners(hook.argv(fail_runs=1), backoff_sec=0.05)
        runner.submit("exp-1")
        wait_for(lambda: runner.finished("exp-1"), "the second attempt", timeout_sec=30)
        assert markers(objects, "exp-1") == ["attempt-1", "attempt-2", "done", "fail-1"]

    def test_timeout_is_a_failure(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """A hook running past its timeout is killed and its attempt recorded as failed."""
        emit(objects, "exp-1")
        runner = runners(hook.argv(sleep_sec=30), max_attempts=1, timeout_sec=0.5)
        runner.submit("exp-1")
        wait_for(lambda: runner.finished("exp-1"), "the timeout", timeout_sec=30)
        assert markers(objects, "exp-1") == ["attempt-1", "fail-1", "failed"]
        assert "timed out" in marker(objects, "exp-1", "fail-1")["error"]
        assert hook.runs() == []

    def test_lost_claim_runs_nothing(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """A daemon whose claim was taken over starts no attempt: the new owner owes the hook."""
        fenced: list[str] = []

        def lost(experiment_id: str) -> None:
            fenced.append(experiment_id)
            raise ClaimLost("lost the claim claims/exp-1.json: it is held by owner b")

        emit(objects, "exp-1")
        runner = runners(hook.argv(), fence=lost)
        runner.submit("exp-1")
        wait_for(lambda: fenced and not runner.busy("exp-1"), "the hook to be dropped")
        assert fenced == ["exp-1"]
        assert markers(objects, "exp-1") == [] and hook.runs() == []
        assert not runner.finished("exp-1") and runner.runs == 0

    def test_unverifiable_claim_is_checked_again_later(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """A fence that cannot answer (the store failed) postpones the attempt; it runs later."""
        fenced: list[str] = []

        def flaky(experiment_id: str) -> None:
            fenced.append(experiment_id)
            if len(fenced) == 1:
                raise LedgerError("cannot read claims/exp-1.json: connection reset")

        emit(objects, "exp-1")
        runner = runners(hook.argv(), fence=flaky, backoff_sec=0.0)
        runner.submit("exp-1")
        wait_for(lambda: runner.finished("exp-1"), "the postponed hook", timeout_sec=30)
        assert len(fenced) == 2 and len(hook.runs()) == 1


class TestSeveralDaemons:
    """Daemons sharing the store never rerun a finished hook nor start one attempt twice."""

    def test_finished_hook_is_not_run_again(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """A second daemon submitting a finished hook finds ``@done`` and runs nothing."""
        emit(objects, "exp-1")
        first = runners(hook.argv())
        first.submit("exp-1")
        wait_for(lambda: first.finished("exp-1"), "the first daemon's run", timeout_sec=30)
        second = runners(hook.argv())
        second.submit("exp-1")
        wait_for(lambda: second.finished("exp-1"), "the second daemon to see it done")
        assert len(hook.runs()) == 1 and second.runs == 0
        assert markers(objects, "exp-1") == ["attempt-1", "done"]

    def test_racing_daemons_start_one_attempt(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """Two daemons submitting one hook at once: one attempt, one run, the other waits."""
        emit(objects, "exp-1")
        first, second = runners(hook.argv(sleep_sec=0.3)), runners(hook.argv(sleep_sec=0.3))
        first.submit("exp-1")
        second.submit("exp-1")
        wait_for(
            lambda: first.finished("exp-1") and second.finished("exp-1"),
            "both daemons to see the hook done",
            timeout_sec=30,
        )
        assert len(hook.runs()) == 1 and first.runs + second.runs == 1
        assert markers(objects, "exp-1") == ["attempt-1", "done"]

    def test_supervisor_refuses_an_attempt_already_created(
        self, objects: ObjectStore, hook: Hook
    ) -> None:
        """The supervisor of an attempt another process created exits 75 and runs nothing."""
        plant_attempt(objects, "exp-1", 1)
        argv = [objects.url, "exp-1", "1", "5.0", "a daemon", "--", *hook.argv()]
        assert bucket_supervise.main(argv) == CLAIMED_ELSEWHERE
        assert not hook.started.exists() and markers(objects, "exp-1") == ["attempt-1"]


class LostAnswers:
    """A store whose creates land, then answer ``PreconditionFailed`` (obstore's own retry)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        self.inner.put(key, data, create=create, if_match=if_match)
        raise PreconditionFailed(f"object {key!r} exists")


class TestCreateMarker:
    """A marker's create is told ours by its nonce when its answer was lost."""

    def test_lost_answer_is_ours(self, objects: ObjectStore) -> None:
        """A create that landed and came back refused still counts as created by this call."""
        key = marker_key("exp-1", "attempt-1")
        assert create_marker(LostAnswers(objects), key, {"attempt": 1})
        assert marker(objects, "exp-1", "attempt-1")["attempt"] == 1

    def test_another_writers_marker_is_not(self, objects: ObjectStore) -> None:
        """A marker someone else created first is not ours."""
        key = marker_key("exp-1", "attempt-1")
        assert create_marker(objects, key, {"attempt": 1})
        assert not create_marker(objects, key, {"attempt": 1})


class TestDeadDaemon:
    """An attempt whose daemon died is waited for while its supervisor may live, then rerun."""

    def test_kill9_while_the_hook_runs_does_not_rerun_it(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """The daemon is SIGKILLed mid-hook; the next one waits for its supervisor: no rerun."""
        emit(objects, "exp-1")
        argv = hook.argv()
        hook.hold.touch()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps([objects.url, argv, "exp-1"])],
            env=child_env(),
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for(hook.started.exists, "the hook to start", timeout_sec=30)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        assert hook.runs() == []  # held: the daemon died while its hook ran
        second = runners(argv)
        second.submit("exp-1")
        time.sleep(1.0)  # the second daemon looks (twice) while the first run is held
        assert markers(objects, "exp-1") == ["attempt-1"] and second.busy("exp-1")
        hook.hold.unlink()
        wait_for(lambda: second.finished("exp-1"), "the supervisor to record", timeout_sec=30)
        assert len(hook.runs()) == 1 and second.runs == 0
        assert markers(objects, "exp-1") == ["attempt-1", "done"]

    @pytest.mark.parametrize("max_attempts", [1, 2])
    def test_dead_supervisor_on_this_host_is_interrupted(
        self,
        objects: ObjectStore,
        hook: Hook,
        runners: Callable[..., BucketHookRunner],
        max_attempts: int,
    ) -> None:
        """A supervisor of this host that is gone counts as interrupted: rerun, or given up."""
        emit(objects, "exp-1")
        plant_attempt(objects, "exp-1", 1, pid_start=-1)  # this pid, another start: not it
        runner = runners(hook.argv(), max_attempts=max_attempts)
        runner.submit("exp-1")
        wait_for(lambda: runner.finished("exp-1"), "the hook to be settled", timeout_sec=30)
        if max_attempts == 1:
            assert hook.runs() == [] and markers(objects, "exp-1") == ["attempt-1", "failed"]
            assert "the last one interrupted" in marker(objects, "exp-1", "failed")["why"]
        else:
            assert [run["env"]["HOOK_ATTEMPT"] for run in hook.runs()] == ["2"]


class TestOtherHost:
    """An attempt of another host is waited for, on this runner's own clock, then rerun."""

    def test_waits_the_timeout_and_grace_then_counts_it_interrupted(
        self, objects: ObjectStore, hook: Hook, runners: Callable[..., BucketHookRunner]
    ) -> None:
        """No second attempt before timeout + GRACE_SEC of its own clock; one after."""
        emit(objects, "exp-1")
        plant_attempt(objects, "exp-1", 1, host="another-host", boot_id="b", pid=1)
        clock = FakeClock()
        runner = runners(hook.argv(), max_attempts=2, timeout_sec=5.0, clock=clock)
        runner.submit("exp-1")
        wait_for(lambda: clock.looks_at(0.0) >= 1, "the runner to see the attempt")
        almost = 5.0 + GRACE_SEC - 0.1
        clock.now = almost
        # Two looks at that time: the first one's decision was taken before the second began.
        wait_for(lambda: clock.looks_at(almost) >= 2, "the runner to look again")
        assert markers(objects, "exp-1") == ["attempt-1"] and runner.busy("exp-1")
        clock.now = 5.0 + GRACE_SEC + 0.1
        wait_for(lambda: runner.finished("exp-1"), "the second attempt", timeout_sec=30)
        assert [run["env"]["HOOK_ATTEMPT"] for run in hook.runs()] == ["2"]
        assert markers(objects, "exp-1") == ["attempt-1", "attempt-2", "done"]
