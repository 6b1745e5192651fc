"""``energy-ledger watch``: the daemon started through the real command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energy_ledger.cli import cli
from energy_ledger.simulate import simulate
from tests.daemon.test_watcher import child_env, read_status, wait_for


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "energy_ledger",
            "watch",
            str(root),
            "--poll-interval",
            "0.1",
            *args,
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return proc.returncode, err


class TestWatchCommand:
    """The ``watch`` command runs the daemon of the watcher module."""

    @pytest.mark.parametrize("mode", ["--polling", "--no-polling"])
    def test_emits_and_stops_on_sigterm(
        self, tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The daemon emits an experiment, ``status`` shows its view, SIGTERM stops it (exit 0)."""
        (tmp_path / "raw").mkdir()
        proc = _start(tmp_path, mode)
        try:
            wait_for(lambda: read_status(tmp_path), "the daemon's status file")
            (truth,) = simulate(tmp_path, processes=2, requests=20)
            result = tmp_path / "aggregated" / f"{truth.experiment_id}.json"
            wait_for(result.exists, "the result file")
            assert json.loads(result.read_text())["total_tokens"] == truth.total_tokens
            wait_for(lambda: (read_status(tmp_path) or {}).get("emitted") == 1, "the status update")
            assert cli("status", str(tmp_path)) == 0
            shown = capsys.readouterr().out
            assert f"daemon: running (pid {proc.pid}" in shown
            assert "1 emitted" in shown
        finally:
            code, err = _stop(proc)
        assert code == 0, err
        assert "Traceback" not in err

    def test_second_daemon_refuses(self, tmp_path: Path) -> None:
        """A second ``watch`` on the same root exits non-zero naming the holder."""
        (tmp_path / "raw").mkdir()
        first = _start(tmp_path)
        try:
            wait_for(lambda: read_status(tmp_path), "the first daemon's status file")
            second = _start(tmp_path)
            code, err = _stop_after_exit(second)
            assert code != 0
            assert str(first.pid) in err
            assert "Traceback" not in err
        finally:
            _stop(first)

    def test_bad_config_is_a_clear_error(self, tmp_path: Path) -> None:
        """An invalid value gives exit 2 and a message, not a traceback."""
        bad = tmp_path / "bad.toml"
        bad.write_text("[watch]\npoll_interval_sec = -1\n")
        assert cli("watch", str(tmp_path), "--config", str(bad)) == 2


def _stop_after_exit(proc: subprocess.Popen[str]) -> tuple[int, str]:
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return _stop(proc)
