"""The daemon as a separate process, and what tests read back from its files.

Plain helpers shared by the daemon's process tests (``test_watcher``, ``test_fencing``,
``test_faults``); the fixtures that use them are in ``conftest.py`` beside this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import read_status, wait_for

POLL = "0.1"

# The hook logs when it starts and ends, with the emission id and attempt number the daemon
# gives it, and whether the emission's hook was already recorded as done when it started (which
# must never happen). ``>>`` appends with O_APPEND, so lines of concurrent runs never interleave.
HOOK = """#!/bin/sh
key="$2"
case "$1" in *.partial.json) key="$2@partial" ;; esac
after_done=0
[ -e "$HOOK_STATE_DIR/emitted/$key@done" ] && after_done=1
echo "start $key $ENERGY_LEDGER_EMISSION_ID $ENERGY_LEDGER_HOOK_ATTEMPT $after_done" >> "$HOOK_LOG"
sleep "${HOOK_SLEEP:-0.2}"
echo "end $key $ENERGY_LEDGER_EMISSION_ID $ENERGY_LEDGER_HOOK_ATTEMPT" >> "$HOOK_LOG"
"""


class Daemon:
    """``energy-ledger watch ROOT`` as a process; its output goes to a file (no pipe left open)."""

    def __init__(
        self,
        root: Path,
        log_path: Path,
        args: Sequence[str],
        env: dict[str, str],
        *,
        prefix: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        cmd = [*prefix, sys.executable, "-m", "energy_ledger", "watch", str(root)]
        cmd += ["--poll-interval", POLL, "--reconcile-interval", "2", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )

    @property
    def output(self) -> str:
        """What the daemon logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_sec: float = 20.0) -> dict[str, Any]:
        """Wait until this process has written its status file."""

        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.output}"
            status = read_status(self.root)
            return status if status and status.get("pid") == self.proc.pid else None

        result: dict[str, Any] = wait_for(ready, "the daemon's first status file", timeout_sec)
        return result

    def terminate(self) -> int:
        """SIGTERM, and the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def kill9(self) -> None:
        """SIGKILL, reaped."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        """Kill the process if it still runs (SIGKILL ends a stopped one too); close the log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@dataclass
class HookRun:
    """One start of the hook, as the hook itself logged it."""

    key: str
    emission_id: str
    attempt: int
    after_done: bool
    ended: bool = False


def hook_runs(hook_log: Path) -> dict[str, list[HookRun]]:
    """Each emission's hook runs in the order they started."""
    runs: dict[str, list[HookRun]] = {}
    lines = hook_log.read_text().splitlines() if hook_log.exists() else []
    for line in lines:
        kind, key, emission_id, attempt, *rest = line.split()
        if kind == "start":
            run = HookRun(key, emission_id, int(attempt), rest == ["1"])
            runs.setdefault(key, []).append(run)
        else:
            for run in runs[key]:
                if run.attempt == int(attempt) and run.emission_id == emission_id:
                    run.ended = True
    return runs


def state_dir(root: Path) -> Path:
    """The daemon's default state folder."""
    return root / ".energy-ledger"


def records(root: Path) -> dict[str, dict[str, Any]]:
    """The emission records by key (a torn or foreign record fails the test)."""
    folder = state_dir(root) / "emitted"
    return {p.stem: json.loads(p.read_bytes()) for p in folder.glob("*.json")}


def markers(root: Path, key: str) -> set[str]:
    """The hook markers of one emission (``attempt-1``, ``done``, ...)."""
    folder = state_dir(root) / "emitted"
    return {p.name.rpartition("@")[2] for p in folder.glob(f"{key}@*") if p.suffix != ".json"}


def hooks_finished(root: Path) -> set[str]:
    """The emissions whose hook is recorded as done or given up."""
    folder = state_dir(root) / "emitted"
    ends = ("@done", "@failed")
    return {p.name.rpartition("@")[0] for p in folder.glob("*@*") if p.name.endswith(ends)}


def result_of(root: Path, experiment_id: str) -> dict[str, Any] | None:
    """The emitted result (parsed), or None before it exists."""
    try:
        loaded: dict[str, Any] = json.loads(
            (root / "aggregated" / f"{experiment_id}.json").read_bytes()
        )
    except FileNotFoundError:
        return None
    return loaded
