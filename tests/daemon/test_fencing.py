"""Split brain: a daemon paused past its lease meets the one that took over, on real processes.

Daemon B runs in its own UTS namespace under another host name, so that to B the paused daemon A
is a holder on another host, which only a heartbeat that stands still can show to be dead.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from energy_ledger.simulate import simulate
from tests.daemon.procs import Daemon, hook_runs, hooks_finished, markers, records, result_of
from tests.helpers import read_status, wait_for

LEASE_TIMEOUT = "1.5"
OTHER_HOST = "split-brain-b"


def _other_host_prefix() -> list[str] | None:
    """A command prefix that runs a program under another host name, or None if none works."""
    rename = ["sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh"]
    for unshare in (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"]):
        try:
            probe = subprocess.run(
                [*unshare, *rename, "hostname"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == OTHER_HOST:
            return [*unshare, *rename]
    return None


@pytest.fixture(scope="module")
def other_host() -> list[str]:
    """The prefix for daemon B; the tests skip where no UTS namespace can be made."""
    prefix = _other_host_prefix()
    if prefix is None:
        pytest.skip(
            "cannot run a process under another host name here: `unshare --uts` and "
            "`unshare --user --map-root-user --uts` are unavailable or not permitted"
        )
    return prefix


@pytest.mark.slow
class TestSplitBrain:
    """Exactly one emission and one hook run, whoever holds the lease when."""

    def test_paused_daemon_resumes_after_takeover(
        self,
        tmp_path: Path,
        daemons: Callable[..., Daemon],
        hook_cmd: str,
        hook_log: Path,
        other_host: list[str],
    ) -> None:
        """A is stopped past its lease; B takes over and emits with its hook; A, resumed, does not.

        While A is stopped the experiment completes, so A's inotify queue holds its events and
        the first thing A sees on waking is a complete experiment it has not emitted.
        """
        root = tmp_path / "root"
        (root / "raw").mkdir(parents=True)
        flags = ("--lease-timeout", LEASE_TIMEOUT, "--on-emit", hook_cmd)
        a = daemons(root, *flags)
        a.wait_ready()
        a.proc.send_signal(signal.SIGSTOP)
        try:
            (truth,) = simulate(root, experiments=1, processes=2, requests=20, prefix="split")
            key = truth.experiment_id
            b = daemons(root, *flags, prefix=other_host)
            wait_for(lambda: key in hooks_finished(root), "B to emit and run the hook")
            assert "taking over the lease" in b.output
            assert "neither the lease nor its heartbeat changed" in b.output
        finally:
            a.proc.send_signal(signal.SIGCONT)
        try:
            a_code: int | None = a.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            a_code = None  # reported below, after what A did meanwhile
        runs = hook_runs(hook_log)
        assert [len(v) for v in runs.values()] == [1], f"hook runs: {runs}"
        assert f"emitted {key} " in b.output and f"emitted {key} " not in a.output
        assert a_code == 4, a.output
        assert "lost the lease" in a.output and "split-brain-b" in a.output
        assert b.proc.poll() is None
        assert runs[key][0].emission_id == records(root)[key]["emission_id"]
        assert records(root)[key]["host"] == OTHER_HOST
        assert markers(root, key) == {"attempt-1", "done"}
        assert result_of(root, key)["total_tokens"] == truth.total_tokens  # type: ignore[index]
        csv_rows = (root / "aggregated" / "results.csv").read_text().splitlines()
        assert sum(key in row for row in csv_rows) == 1
        assert (read_status(root) or {}).get("pid") == b.proc.pid  # A left B's status alone
        assert b.terminate() == 0

    def test_live_holder_on_another_host_is_not_taken_over(
        self, tmp_path: Path, daemons: Callable[..., Daemon], other_host: list[str]
    ) -> None:
        """B, on another host, sees A's heartbeat move and refuses (exit 3); A goes on."""
        root = tmp_path / "root"
        (root / "raw").mkdir(parents=True)
        a = daemons(root, "--lease-timeout", LEASE_TIMEOUT)
        a.wait_ready()
        b = daemons(root, "--lease-timeout", LEASE_TIMEOUT, prefix=other_host)
        assert b.proc.wait(timeout=20) == 3
        assert "heartbeat is moving" in b.output and f"pid {a.proc.pid}" in b.output
        assert a.proc.poll() is None
        assert a.terminate() == 0
