"""The bucket hook runner (``daemon.bucket_hooks``) on a real S3 server (SeaweedFS).

Its supervisors open the bucket from its URL with the credentials of the environment they
inherit, and claim attempts with ``If-None-Match: *``, as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from energy_ledger.daemon.bucket_hooks import BucketHookRunner
from energy_ledger.store.bucket_claims import Claimer, record_emission
from energy_ledger.store.objectstore import ObjectStore
from energy_ledger.store.remote import open_bucket
from tests.helpers import wait_for

# Logs ``<attempt> <emission id> <argv>`` once it has slept and no ``.hold`` file is there;
# the start is a file of its own.
HOOK = (
    'touch "$0.started"; sleep "$SLEEP_SEC"; while [ -e "$0.hold" ]; do sleep 0.05; done; '
    'echo "$ENERGY_LEDGER_HOOK_ATTEMPT $ENERGY_LEDGER_EMISSION_ID $*" >> "$0"'
)

CHILD = """
import sys, time
from energy_ledger.daemon.bucket_hooks import BucketHookRunner
from energy_ledger.store.remote import open_bucket
runner = BucketHookRunner(open_bucket(sys.argv[1]), sys.argv[3:], fence=lambda _: None, holder="c")
runner.submit(sys.argv[2])
time.sleep(60)
"""


def hook_argv(out: Path, sleep_sec: float) -> list[str]:
    """``sh -c HOOK OUT`` with its sleep in the environment of ``env``."""
    return ["env", f"SLEEP_SEC={sleep_sec}", "sh", "-c", HOOK, str(out)]


def emit_on(store: ObjectStore, experiment_id: str) -> str:
    """Record an emission with a hook owed, as the watcher does; its emission id."""
    claim = Claimer(store).claim(experiment_id, ttl_sec=60.0)
    assert claim is not None
    body = {"emission_id": f"e-{experiment_id}", "result": "", "hook": True, "emitted_t": 0.0}
    assert record_emission(store, experiment_id, claim, body)
    return str(body["emission_id"])


def hook_keys(store: ObjectStore, experiment_id: str) -> list[str]:
    """The hook markers of the experiment on the bucket, by name."""
    prefix = f"emissions/{experiment_id}@"
    return [i.key[len(prefix) : -5] for i in store.list("emissions/") if i.key.startswith(prefix)]


class TestOnABucket:
    """Several daemons on one bucket run each hook once."""

    def test_racing_daemons_run_it_once(self, s3_prefix_url: str, tmp_path: Path) -> None:
        """Two daemons submit one hook at once: one attempt created, one run, both see it done."""
        store = open_bucket(s3_prefix_url)
        emission_id = emit_on(store, "exp-1")
        out = tmp_path / "runs"
        argv = hook_argv(out, 0.2)
        runners = [BucketHookRunner(store, argv, fence=lambda _: None, holder=h) for h in "ab"]
        try:
            for runner in runners:
                runner.submit("exp-1")
            wait_for(lambda: all(r.finished("exp-1") for r in runners), "both to see it done")
        finally:
            for runner in runners:
                runner.close(grace_sec=0.0, stop_running=True)
        result = f"{s3_prefix_url}/aggregated/exp-1.json"
        assert out.read_text().splitlines() == [f"1 {emission_id} {result} exp-1"]
        assert hook_keys(store, "exp-1") == ["attempt-1", "done"]

    def test_kill9_mid_hook_is_not_rerun(self, s3_prefix_url: str, tmp_path: Path) -> None:
        """A daemon SIGKILLed while its hook is held: the next one waits for the supervisor."""
        store = open_bucket(s3_prefix_url)
        emit_on(store, "exp-1")
        out = tmp_path / "runs"
        argv = hook_argv(out, 0)
        hold = Path(f"{out}.hold")
        hold.touch()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, s3_prefix_url, "exp-1", *argv],
            stdin=subprocess.DEVNULL,
        )
        second = BucketHookRunner(store, argv, fence=lambda _: None, holder="next")
        try:
            wait_for(Path(f"{out}.started").exists, "the hook to start")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            assert not out.exists()
            second.submit("exp-1")
            time.sleep(1.0)  # the second daemon looks (twice) while the first run is held
            assert hook_keys(store, "exp-1") == ["attempt-1"] and second.busy("exp-1")
            hold.unlink()
            wait_for(lambda: second.finished("exp-1"), "the supervisor to record")
        finally:
            child.kill()
            child.wait(timeout=10)
            hold.unlink(missing_ok=True)
            second.close(grace_sec=0.0)
        assert len(out.read_text().splitlines()) == 1 and second.runs == 0
        assert hook_keys(store, "exp-1") == ["attempt-1", "done"]
