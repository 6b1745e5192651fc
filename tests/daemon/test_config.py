"""The watcher's configuration: TOML < environment < flags."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from energy_ledger.daemon.config import (
    ConfigError,
    WatchConfig,
    check_hook_program,
    load_watch_config,
)

REPO = Path(__file__).resolve().parents[2]


class TestLayers:
    """Each layer overrides the one before it."""

    def test_defaults(self) -> None:
        """No file, no environment, no flags: the documented defaults."""
        config = load_watch_config(None, {}, {})
        assert config == WatchConfig()
        assert config.polling is None and config.poll_interval_sec == 1.0
        assert config.lease_timeout_sec == 30.0 and config.stale_after_sec == 3600.0

    def test_file_then_env_then_flags(self, tmp_path: Path) -> None:
        """A flag beats an environment variable, which beats the file."""
        path = tmp_path / "w.toml"
        path.write_text(
            '[watch]\npoll_interval_sec = 5\npolling = true\non_emit = "notify --x"\n'
            'state_dir = "state"\nstale_after_sec = 60\n'
        )
        env = {"ENERGY_LEDGER_POLL_INTERVAL": "2.5", "ENERGY_LEDGER_POLLING": "auto"}
        config = load_watch_config(path, env, {"stale_after_sec": 7, "on_emit": None})
        assert config.poll_interval_sec == 2.5
        assert config.polling is None
        assert config.on_emit == "notify --x"
        assert config.hook_argv() == ["notify", "--x"]
        assert config.state_dir == tmp_path / "state"
        assert config.stale_after_sec == 7.0

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("1", True), ("true", True), ("off", False), ("no", False), ("auto", None)],
    )
    def test_polling_env(self, value: str, expected: bool | None) -> None:
        """ENERGY_LEDGER_POLLING takes true/false/auto spellings."""
        assert load_watch_config(None, {"ENERGY_LEDGER_POLLING": value}, {}).polling is expected

    def test_other_env_vars(self) -> None:
        """The common settings have environment variables."""
        env = {
            "ENERGY_LEDGER_ON_EMIT": "hook 'a b'",
            "ENERGY_LEDGER_STATE_DIR": "/var/lib/el",
            "ENERGY_LEDGER_RECOVER_STALE": "yes",
            "ENERGY_LEDGER_LEASE_TIMEOUT": "12",
            "ENERGY_LEDGER_LOG_FORMAT": "json",
        }
        config = load_watch_config(None, env, {})
        assert config.hook_argv() == ["hook", "a b"]
        assert config.state_dir == Path("/var/lib/el")
        assert config.recover_stale is True
        assert config.lease_timeout_sec == 12.0
        assert config.log_format == "json"

    def test_shipped_default_file_loads(self) -> None:
        """config/energy-ledger.toml is valid and matches the defaults."""
        assert load_watch_config(REPO / "config" / "energy-ledger.toml", {}, {}) == WatchConfig()


class TestErrors:
    """Bad configuration is a ConfigError naming the key and where it came from."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[watch]\npoll_interval = 1\n", "unknown setting 'poll_interval'"),
            ("[watch]\npoll_interval_sec = 0\n", "poll_interval_sec must be a finite number > 0"),
            ("[watch]\npoll_interval_sec = inf\n", "must be a finite number"),
            ("[watch]\npoll_interval_sec = 'fast'\n", "poll_interval_sec must be a number"),
            ("[watch]\npoll_interval_sec = '1'\n", "poll_interval_sec must be a number"),
            ("[watch]\npolling = 'yes'\n", 'polling must be true, false or "auto"'),
            ("[watch]\npolling = 1\n", 'polling must be true, false or "auto"'),
            ("[watch]\nrecover_stale = 'true'\n", "recover_stale must be true or false"),
            ("[watch]\nhook_max_attempts = 2.5\n", "hook_max_attempts must be an integer"),
            ("[watch]\nhook_max_attempts = true\n", "hook_max_attempts must be an integer"),
            ("[watch]\nhook_max_attempts = 0\n", "hook_max_attempts must be >= 1"),
            ("[watch]\non_emit = ['notify']\n", "on_emit must be a string"),
            ("[watch]\nlog_format = 'xml'\n", "log_format"),
            ('[watch]\non_emit = "unbalanced \'quote"\n', "on_emit"),
            ("[watch]\nhook_retries = 3\n", "hook_retries was renamed hook_max_attempts"),
            ("[watch]\n[watch.extra]\nx = 1\n", "unknown setting 'extra'"),
            ("[wacth]\npolling = true\n", "unknown table or key 'wacth'"),
            ("polling = true\n[watch]\n", "unknown table or key 'polling'"),
            ("[watch\n", "not valid TOML"),
            ("watch = 3\n", "must be a table"),
            ("[watch]\nmetrics_port = '9464'\n", "metrics_port must be an integer"),
            ("[watch]\nmetrics_port = 9464.0\n", "metrics_port must be an integer"),
            ("[watch]\nmetrics_port = 70000\n", "metrics_port must be a TCP port"),
            ("[watch]\nmetrics_port = -1\n", "metrics_port must be a TCP port"),
            ("[watch]\nmetrics_host = 127\n", "metrics_host must be a string"),
            ("[watch]\nmetrics_host = ''\n", "metrics_host must be an address"),
        ],
    )
    def test_bad_file(self, tmp_path: Path, text: str, message: str) -> None:
        """Each mistake is reported with the key and the file's name."""
        path = tmp_path / "w.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)) as caught:
            load_watch_config(path, {}, {})
        assert str(path) in str(caught.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config file that does not exist is an error, not silently skipped."""
        with pytest.raises(ConfigError, match="cannot read"):
            load_watch_config(tmp_path / "nope.toml", {}, {})

    def test_unknown_flag(self) -> None:
        """An override for a setting that does not exist is refused."""
        with pytest.raises(ConfigError, match="unknown watch setting"):
            load_watch_config(None, {}, {"poll": 1})

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"ENERGY_LEDGER_POLL_INTERVAL": "soon"}, "ENERGY_LEDGER_POLL_INTERVAL"),
            ({"ENERGY_LEDGER_POLLING": "sometimes"}, "ENERGY_LEDGER_POLLING"),
            ({"ENERGY_LEDGER_HOOK_MAX_ATTEMPTS": "2.5"}, "ENERGY_LEDGER_HOOK_MAX_ATTEMPTS"),
            ({"ENERGY_LEDGER_HOOK_RETRIES": "3"}, "renamed ENERGY_LEDGER_HOOK_MAX_ATTEMPTS"),
            ({"ENERGY_LEDGER_METRICS_PORT": "http"}, "ENERGY_LEDGER_METRICS_PORT must be an int"),
            ({"ENERGY_LEDGER_METRICS_PORT": "65536"}, "ENERGY_LEDGER_METRICS_PORT: metrics_port"),
        ],
    )
    def test_bad_env(self, env: dict[str, str], message: str) -> None:
        """A malformed or renamed environment variable names itself."""
        with pytest.raises(ConfigError, match=message):
            load_watch_config(None, env, {})

    def test_hook_max_attempts_from_env(self) -> None:
        """ENERGY_LEDGER_HOOK_MAX_ATTEMPTS sets the bound (1: at most once)."""
        env = {"ENERGY_LEDGER_HOOK_MAX_ATTEMPTS": "1"}
        assert load_watch_config(None, env, {}).hook_max_attempts == 1


class TestMetricsSettings:
    """metrics_port and metrics_host are layered like every other setting (as ``report`` is)."""

    def test_defaults_are_off_and_local(self) -> None:
        """No metrics unless a port is given; the server would listen on loopback only."""
        config = load_watch_config(None, {}, {})
        assert config.metrics_port is None and config.metrics_host == "127.0.0.1"

    def test_file_then_env_then_flag(self, tmp_path: Path) -> None:
        """The TOML keys are read; the environment beats them; a flag beats both."""
        path = tmp_path / "w.toml"
        path.write_text('[watch]\nmetrics_port = 9464\nmetrics_host = "0.0.0.0"\n')
        assert load_watch_config(path, {}, {}).metrics_port == 9464
        assert load_watch_config(path, {}, {}).metrics_host == "0.0.0.0"
        env = {"ENERGY_LEDGER_METRICS_PORT": "9100", "ENERGY_LEDGER_METRICS_HOST": "::1"}
        config = load_watch_config(path, env, {})
        assert (config.metrics_port, config.metrics_host) == (9100, "::1")
        config = load_watch_config(path, env, {"metrics_port": 0, "metrics_host": None})
        assert (config.metrics_port, config.metrics_host) == (0, "::1")

    def test_empty_env_port_means_off(self) -> None:
        """ENERGY_LEDGER_METRICS_PORT set to nothing leaves metrics off."""
        assert load_watch_config(None, {"ENERGY_LEDGER_METRICS_PORT": ""}, {}).metrics_port is None


class TestHookProgram:
    """--on-emit is checked at start-up: its program must exist and be executable."""

    def test_found_on_path(self) -> None:
        """A program on PATH passes."""
        check_hook_program(["sh", "-c", "true"])

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda d: ["no-such-hook-program-x7"], "not found on PATH"),
            (lambda d: [str(d / "missing.sh")], "no such file"),
            (lambda d: [str(d / "plain.txt")], "is not executable"),
        ],
        ids=["not-on-path", "missing-file", "not-executable"],
    )
    def test_refused(self, tmp_path: Path, make: Callable[[Path], list[str]], message: str) -> None:
        """A missing or non-executable program is a ConfigError naming it."""
        (tmp_path / "plain.txt").write_text("echo hi\n")
        argv = make(tmp_path)
        with pytest.raises(ConfigError, match=message) as caught:
            check_hook_program(argv)
        assert argv[0] in str(caught.value)
