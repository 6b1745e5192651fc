"""``energy-ledger watch``: the daemon started through the real command line, its only way in."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.cli import cli
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.simulate import simulate
from tests.helpers import child_env, read_status, wait_for

pytestmark = pytest.mark.usefixtures("restore_logging")


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
    """The ``watch`` command runs the daemon (``daemon.run.run_watch``)."""

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

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[watch]\npoll_interval_sec = -1\n", "poll_interval_sec must be a finite number > 0"),
            ('[watch]\npolling = "yes"\n', 'polling must be true, false or "auto"'),
            ("[watch]\nhook_retries = 3\n", "hook_retries was renamed hook_max_attempts"),
            ("[daemon]\npolling = true\n", "unknown table or key 'daemon'"),
        ],
    )
    def test_bad_config_is_a_clear_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
    ) -> None:
        """An invalid file gives exit 2 and a message naming the key and the file."""
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        assert cli("watch", str(tmp_path), "--config", str(bad)) == 2
        err = capsys.readouterr().err
        assert message in err and str(bad) in err and "Traceback" not in err


class TestWatchStartup:
    """Mistakes are refused before the daemon starts: exit 2 and a message, like other commands."""

    @pytest.mark.parametrize(
        ("make_root", "args", "message"),
        [
            (lambda p: p / "missing", [], "no such results folder"),
            (lambda p: p / "results" / "raw", [], "did you mean"),
            (lambda p: p / "results", ["--on-emit", "/nonexistent/notify --x"], "no such file"),
            (lambda p: p / "results", ["--on-emit", "no-such-program-q9 --x"], "not found on PATH"),
        ],
        ids=["missing-root", "raw-folder", "hook-missing", "hook-not-on-path"],
    )
    def test_refused_with_exit_2(
        self,
        tmp_path: Path,
        make_root: Callable[[Path], Path],
        args: list[str],
        message: str,
    ) -> None:
        """The real command exits 2 at once, says why, and leaves no state behind."""
        (tmp_path / "results" / "raw" / "exp-1").mkdir(parents=True)
        root = make_root(tmp_path)
        proc = subprocess.run(
            [sys.executable, "-m", "energy_ledger", "watch", str(root), *args],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "results" / ".energy-ledger").exists()

    def test_hook_program_checked_through_the_cli(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A hook script that is not executable is named in the message."""
        (tmp_path / "raw").mkdir()
        script = tmp_path / "notify.sh"
        script.write_text("#!/bin/sh\n")
        assert cli("watch", str(tmp_path), "--on-emit", f"{script} --channel x") == 2
        assert f"{script} is not executable" in capsys.readouterr().err


class TestStatusWithoutDaemon:
    """``status`` on a root no daemon ever watched prints no daemon line at all."""

    def test_no_daemon_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Experiments are listed; nothing says "daemon"."""
        simulate(tmp_path, processes=1, requests=5)
        cli("status", str(tmp_path))
        shown = capsys.readouterr().out
        assert "sim-0000" in shown
        assert "daemon:" not in shown


class TestWatchFlags:
    """Each flag of ``watch`` sets its one setting (the daemon is not started)."""

    @pytest.mark.parametrize(
        ("args", "name", "expected"),
        [
            (["--polling"], "polling", True),
            (["--no-polling"], "polling", False),
            (["--poll-interval", "0.25"], "poll_interval_sec", 0.25),
            (["--reconcile-interval", "7"], "reconcile_interval_sec", 7.0),
            (["--lease-timeout", "12"], "lease_timeout_sec", 12.0),
            (["--stale-after", "90"], "stale_after_sec", 90.0),
            (["--recover-stale"], "recover_stale", True),
            (["--on-emit", "notify --channel x"], "on_emit", "notify --channel x"),
            (["--log-format", "json"], "log_format", "json"),
            (["--report"], "report", True),
            (["--metrics-port", "9464"], "metrics_port", 9464),
            (["--metrics-host", "0.0.0.0"], "metrics_host", "0.0.0.0"),
        ],
    )
    def test_flag_sets_its_setting(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        args: list[str],
        name: str,
        expected: Any,
    ) -> None:
        """The flag's value reaches ``run_watch``; every other setting keeps its default."""
        for key in [k for k in os.environ if k.startswith("ENERGY_LEDGER_")]:
            monkeypatch.delenv(key)
        calls: list[tuple[Path, WatchConfig]] = []

        def fake_run_watch(root: Path, config: WatchConfig) -> int:
            calls.append((root, config))
            return 0

        monkeypatch.setattr("energy_ledger.daemon.run.run_watch", fake_run_watch)
        assert cli("watch", str(tmp_path), *args) == 0
        ((root, config),) = calls
        assert root == tmp_path
        assert getattr(config, name) == expected
        assert dataclasses.replace(config, **{name: getattr(WatchConfig(), name)}) == WatchConfig()

    @pytest.mark.parametrize(
        ("before", "after", "expected"),
        [
            (["--log-format", "json"], [], "json"),
            (["--log-format", "json"], ["--log-format", "text"], "text"),
            ([], [], "text"),
        ],
    )
    def test_global_log_format_reaches_the_daemon(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        before: list[str],
        after: list[str],
        expected: str,
    ) -> None:
        """``energy-ledger --log-format json watch`` logs JSON; the command's own flag wins."""
        for key in [k for k in os.environ if k.startswith("ENERGY_LEDGER_")]:
            monkeypatch.delenv(key)
        seen: list[str] = []

        def fake_run_watch(root: Path, config: WatchConfig) -> int:
            seen.append(config.log_format)
            return 0

        monkeypatch.setattr("energy_ledger.daemon.run.run_watch", fake_run_watch)
        assert cli(*before, "watch", str(tmp_path), *after) == 0
        assert seen == [expected]

    def test_exit_code_of_the_daemon_is_the_commands(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A non-zero code from ``run_watch`` (3: the root is held) is the command's exit code."""
        monkeypatch.setattr("energy_ledger.daemon.run.run_watch", lambda root, config: 3)
        assert cli("watch", str(tmp_path)) == 3


def _stop_after_exit(proc: subprocess.Popen[str]) -> tuple[int, str]:
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return _stop(proc)
