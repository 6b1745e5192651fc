"""The daemon's active set on hostile and half-written input, as a real process (issue 10).

- A hole in a log (NULs where a write has not landed) is read again, so the experiment is
  emitted once the hole is filled in place, without a restart (item 5).
- A FIFO named like a log neither hangs the daemon nor keeps it from stopping (item 12).
- Failed experiments leave the active set: the sweeps stop reading their logs, and a change to
  their files brings them back (item 6). Counted in read system calls, not timed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.simulate import simulate
from tests.helpers import child_env, read_status, wait_for

MODES = [pytest.param([], id="inotify"), pytest.param(["--polling"], id="polling")]
LOG = "process_0.events.jsonl"


class Daemon:
    """``python -m energy_ledger watch ROOT`` in its own process, its output in a file."""

    def __init__(self, root: Path, log_path: Path, args: list[str]) -> None:
        self.root = root
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        cmd = [sys.executable, "-m", "energy_ledger", "watch", str(root)]
        cmd += ["--poll-interval", "0.1", "--reconcile-interval", "2", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(),
        )  # fmt: skip

    @property
    def output(self) -> str:
        """What the daemon logged so far."""
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """This process's last status file (waits for the first one)."""

        def mine() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.output}"
            status = read_status(self.root)
            return status if status and status.get("pid") == self.proc.pid else None

        found: dict[str, Any] = wait_for(mine, "the daemon's status file")
        return found

    def read_syscalls(self) -> int:
        """Read system calls the daemon made so far (``/proc/<pid>/io``: ``syscr``)."""
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
        raise AssertionError("no syscr in /proc/<pid>/io")

    def terminate(self) -> int:
        """SIGTERM, and the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def close(self) -> None:
        """Kill the process if it still runs; close the log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start watcher processes; every one is killed at teardown."""
    started: list[Daemon] = []

    def start(root: Path, *args: str) -> Daemon:
        daemon = Daemon(root, tmp_path / f"daemon-{len(started)}.log", list(args))
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def result_of(root: Path, experiment_id: str) -> dict[str, Any] | None:
    """The emitted result (parsed), or None before it exists."""
    try:
        loaded: dict[str, Any] = json.loads(
            (root / "aggregated" / f"{experiment_id}.json").read_bytes()
        )
    except FileNotFoundError:
        return None
    return loaded


def row(root: Path, experiment_id: str) -> dict[str, Any] | None:
    """The experiment's row in the status file's ``active`` list."""
    status = read_status(root) or {}
    return next((a for a in status.get("active", []) if a["experiment_id"] == experiment_id), None)


@pytest.mark.slow
class TestHoleFilledInPlace:
    """A log with a hole is "not yet"; once the hole is filled the result is emitted."""

    @pytest.mark.parametrize("mode", MODES)
    def test_emitted_once_the_hole_is_filled(
        self, tmp_path: Path, daemons: Callable[..., Daemon], mode: list[str]
    ) -> None:
        """Hole seen (pending, nothing emitted), hole filled and marker written: emitted."""
        stage = tmp_path / "stage"
        (truth,) = simulate(stage, experiments=1, processes=2, requests=200, prefix="holed")
        folder = stage / "raw" / "holed-0000"
        marker = (folder / "process_0.done").read_bytes()
        (folder / "process_0.done").unlink()
        data = (folder / LOG).read_bytes()
        start, end = len(data) // 3, len(data) // 3 + 4000
        with open(folder / LOG, "wb") as fh:
            fh.write(data[:start])
            fh.seek(end)
            fh.write(data[end:])
        root = tmp_path / "root"
        (root / "raw").mkdir(parents=True)
        daemon = daemons(root, *mode)
        daemon.status()
        os.rename(folder, root / "raw" / "holed-0000")

        def sees_the_hole() -> bool:
            found = row(root, "holed-0000")
            return bool(found and "cannot be read further yet" in found["detail"])

        wait_for(sees_the_hole, "the daemon to report the hole")
        assert row(root, "holed-0000")["state"] == "pending"  # type: ignore[index]
        time.sleep(0.5)  # several sweeps: still nothing
        assert result_of(root, "holed-0000") is None
        log = root / "raw" / "holed-0000" / LOG
        with open(log, "r+b") as fh:
            fh.seek(start)
            fh.write(data[start:end])
        tmp = log.with_name(".process_0.done.tmp")
        tmp.write_bytes(marker)
        os.rename(tmp, log.with_name("process_0.done"))
        result = wait_for(lambda: result_of(root, "holed-0000"), "the result after the fill")
        assert result["total_tokens"] == truth.total_tokens
        assert daemon.terminate() == 0


@pytest.mark.slow
class TestFifo:
    """A FIFO named like a log is reported; the daemon goes on and stops on SIGTERM."""

    @pytest.mark.parametrize("mode", MODES)
    def test_fifo_log_neither_hangs_nor_blocks_the_others(
        self, tmp_path: Path, daemons: Callable[..., Daemon], mode: list[str]
    ) -> None:
        """A FIFO log and a FIFO marker: reported by name; a later experiment still emitted."""
        root = tmp_path / "root"
        simulate(root, experiments=2, processes=2, requests=10, prefix="piped")
        (root / "raw" / "piped-0000" / LOG).unlink()
        os.mkfifo(root / "raw" / "piped-0000" / LOG)
        (root / "raw" / "piped-0001" / "process_1.done").unlink()
        os.mkfifo(root / "raw" / "piped-0001" / "process_1.done")
        daemon = daemons(root, *mode)
        daemon.status()
        simulate(root, experiments=1, processes=2, requests=10, prefix="later")
        wait_for(lambda: result_of(root, "later-0000"), "an experiment after the FIFOs")
        details = {e: (row(root, e) or {}).get("detail", "") for e in ("piped-0000", "piped-0001")}
        assert f"{LOG}: cannot read: it is a FIFO" in details["piped-0000"]
        assert "cannot read process_1.done: it is a FIFO" in details["piped-0001"]
        assert daemon.terminate() == 0


@pytest.mark.slow
class TestRetired:
    """Failed experiments stop costing reads, and come back when their files change."""

    FAILED = 30

    def test_failed_experiments_are_not_read_by_sweeps(
        self, tmp_path: Path, daemons: Callable[..., Daemon]
    ) -> None:
        """30 failed experiments polled every 0.1 s: after retiring, few reads; a change: back."""
        root = tmp_path / "root"
        simulate(root, experiments=self.FAILED, processes=2, requests=50, fail=1, prefix="f")
        daemon = daemons(root, "--polling")
        daemon.status()

        def all_retired() -> bool:
            rows = (read_status(root) or {}).get("active", [])
            return len(rows) == self.FAILED and all(r["retired"] for r in rows)

        wait_for(all_retired, "every failed experiment retired")
        rows = (read_status(root) or {})["active"]
        assert {r["state"] for r in rows} == {"failed"}
        assert all(" failed: " in r["detail"] for r in rows), rows[0]
        before = daemon.read_syscalls()
        time.sleep(2.0)  # about 20 sweeps; reading 60 logs each would be 1,200+ reads
        reads = daemon.read_syscalls() - before
        assert reads < 200, f"{reads} reads in 20 sweeps of retired experiments"
        # A rerun replaces an experiment's files: it is read again and emitted.
        stage = tmp_path / "stage"
        simulate(stage, experiments=8, processes=2, requests=50, prefix="f")
        shutil.rmtree(root / "raw" / "f-0007")
        shutil.copytree(stage / "raw" / "f-0007", root / "raw" / "f-0007")
        wait_for(lambda: result_of(root, "f-0007") is not None, "the rerun emitted")
        assert daemon.terminate() == 0
