"""The watcher's settings: defaults < a TOML file < environment variables < flags.

``load_watch_config`` merges the layers into one frozen ``WatchConfig``. The TOML file keeps its
settings in a ``[watch]`` table whose keys are the field names of ``WatchConfig``. The file is read
strictly: another table, an unknown key or a value of the wrong TOML type (``polling = "yes"``,
``poll_interval_sec = "1"``) is a ``ConfigError`` that names the key and the file, so a typo never
falls back to a default in silence. Environment variables are text, so they are parsed (``true``,
``false``, ``auto``; numbers), just as strictly. The layering is a few lines of plain code:
pydantic-settings could do it, but is not a dependency, and these rules fit on one screen.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from energy_ledger.exceptions import ConfigError

__all__ = ["ENV_VARS", "LogFormat", "WatchConfig", "check_hook_program", "load_watch_config"]

LogFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """How ``energy-ledger watch`` runs.

    Attributes:
        polling: poll instead of inotify; ``None`` decides from the filesystem type.
        poll_interval_sec: seconds between polls of the active experiments (polling mode).
        reconcile_interval_sec: seconds between full listings of the root (both modes).
        lease_timeout_sec: a lease holder on another host whose heartbeat stood still this long
            (watched on the contender's own clock) is presumed dead.
        stale_after_sec: an experiment with no new bytes for this long is reported as stale.
        recover_stale: emit stale experiments as partial results.
        on_emit: a command run after each emission, with the result path and experiment id.
        state_dir: the daemon's state folder; ``<root>/.energy-ledger`` when ``None``.
        log_format: ``text`` or ``json`` (the CLI sets logging up with it).
        hook_max_attempts: the most times the hook is started for one emission, counting
            retries after a failure and reruns after an interrupted run; 1 = at most once.
        hook_backoff_sec: delay before the first retry of a failed run; it doubles each time.
        hook_timeout_sec: a hook still running after this long is killed (a failed attempt).
        debounce_sec: how long to let a burst of events settle before scanning.
        report: write each emitted experiment's report page, and the comparison page, off the
            loop's thread (``daemon.reports``).
        metrics_port: serve Prometheus metrics on this TCP port (0: any free port, written
            in ``status.json``); ``None``: no metrics (``daemon.exporter``).
        metrics_host: the address the metrics server listens on.
    """

    polling: bool | None = None
    poll_interval_sec: float = 1.0
    reconcile_interval_sec: float = 60.0
    lease_timeout_sec: float = 30.0
    stale_after_sec: float = 3600.0
    recover_stale: bool = False
    on_emit: str | None = None
    state_dir: Path | None = None
    log_format: LogFormat = "text"
    hook_max_attempts: int = 5
    hook_backoff_sec: float = 1.0
    hook_timeout_sec: float = 600.0
    debounce_sec: float = 0.005
    report: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            problem = _problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise ConfigError(problem)

    def hook_argv(self) -> list[str] | None:
        """``on_emit`` split like a shell command line (no shell runs it)."""
        return shlex.split(self.on_emit) if self.on_emit else None


_POSITIVE = {
    "poll_interval_sec",
    "reconcile_interval_sec",
    "lease_timeout_sec",
    "stale_after_sec",
    "hook_timeout_sec",
}


def _problem(name: str, value: Any) -> str | None:
    """What is wrong with a setting's value (of the right type), or ``None``."""
    if name in _POSITIVE and not (value > 0 and math.isfinite(value)):
        return f"{name} must be a finite number > 0, got {value!r}"
    if name in ("hook_backoff_sec", "debounce_sec") and not (value >= 0 and math.isfinite(value)):
        return f"{name} must be a finite number >= 0, got {value!r}"
    if name == "hook_max_attempts" and value < 1:
        return f"hook_max_attempts must be >= 1 (1 = at most once), got {value}"
    if name == "metrics_port" and value is not None and not 0 <= value <= 65535:
        return f"metrics_port must be a TCP port from 0 to 65535 (0: any free port), got {value}"
    if name == "metrics_host" and not value.strip():
        return f"metrics_host must be an address to listen on (127.0.0.1, ::), got {value!r}"
    if name == "log_format" and value not in ("text", "json"):
        return f"log_format must be 'text' or 'json', got {value!r}"
    if name == "on_emit" and value is not None:
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            return f"on_emit {value!r}: {exc}"
        if not argv:
            return "on_emit is an empty command"
    return None


ENV_VARS: dict[str, str] = {
    "ENERGY_LEDGER_POLLING": "polling",
    "ENERGY_LEDGER_POLL_INTERVAL": "poll_interval_sec",
    "ENERGY_LEDGER_RECONCILE_INTERVAL": "reconcile_interval_sec",
    "ENERGY_LEDGER_LEASE_TIMEOUT": "lease_timeout_sec",
    "ENERGY_LEDGER_STALE_AFTER": "stale_after_sec",
    "ENERGY_LEDGER_RECOVER_STALE": "recover_stale",
    "ENERGY_LEDGER_ON_EMIT": "on_emit",
    "ENERGY_LEDGER_STATE_DIR": "state_dir",
    "ENERGY_LEDGER_LOG_FORMAT": "log_format",
    "ENERGY_LEDGER_HOOK_MAX_ATTEMPTS": "hook_max_attempts",
    "ENERGY_LEDGER_REPORT": "report",
    "ENERGY_LEDGER_METRICS_PORT": "metrics_port",
    "ENERGY_LEDGER_METRICS_HOST": "metrics_host",
}
"""Environment variables and the setting each one sets."""

RENAMED = {"hook_retries": "hook_max_attempts"}
"""Settings that were renamed: refused with the new name, never ignored."""
RENAMED_ENV = {"ENERGY_LEDGER_HOOK_RETRIES": "ENERGY_LEDGER_HOOK_MAX_ATTEMPTS"}

_FIELDS = {f.name: f for f in dataclasses.fields(WatchConfig)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_STRINGS = {"on_emit", "state_dir", "log_format", "metrics_host"}
_INTEGERS = {"hook_max_attempts", "metrics_port"}
_BOOLEANS = {"recover_stale", "report"}


def _kind(value: Any) -> str:
    """The TOML type of a value, for messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for cls, name in names.items():
        if type(value) is cls:
            return name
    return "a table" if isinstance(value, dict) else "an array" if isinstance(value, list) else "?"


def _typed(name: str, value: Any, where: str) -> Any:
    """A typed value (TOML, or a flag) checked against the field's type; raise ``ConfigError``."""

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {name} must be {expected}, got {value!r} ({_kind(value)})")

    if name == "polling":
        if isinstance(value, bool) or value is None:
            return value
        if value == "auto":
            return None
        raise wrong('true, false or "auto"')
    if name in _BOOLEANS:
        if isinstance(value, bool):
            return value
        raise wrong("true or false")
    if name in _INTEGERS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong("an integer")
    if name.endswith("_sec"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise wrong("a number of seconds")
    if name in _STRINGS:
        if isinstance(value, str | os.PathLike):
            text = os.fspath(value)
            if name == "state_dir":
                return Path(text) if text else None
            if name == "metrics_host":
                return text  # an empty one is refused by its check, never taken for "unset"
            return text or None
        raise wrong("a string")
    raise ConfigError(f"{where}: unknown setting {name!r}")  # pragma: no cover - guarded above


def _parsed(name: str, text: str, where: str) -> Any:
    """An environment variable's text as the field's type; raise ``ConfigError``."""
    lowered = text.strip().lower()
    if name == "polling":
        if lowered in ("auto", ""):
            return None
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError(f"{where} must be true, false or auto, got {text!r}")
    if name in _BOOLEANS:
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    if name == "metrics_port" and not lowered:
        return None  # set but empty: no metrics, as when unset
    if name in _INTEGERS:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {text!r}") from None
    if name.endswith("_sec"):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{where} must be a number of seconds, got {text!r}") from None
    return _typed(name, text, where)


def read_config_file(path: Path) -> dict[str, Any]:
    """The ``[watch]`` table of a TOML file, checked strictly and typed.

    Raises:
        ConfigError: the file cannot be read or parsed, holds a table other than ``[watch]``,
            an unknown key, or a value of the wrong type (the message names the key and file).
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    others = sorted(k for k in data if k != "watch")
    if others:
        raise ConfigError(
            f"config {path}: unknown table or key {', '.join(map(repr, others))} "
            "(the settings live in a [watch] table)"
        )
    table = data.get("watch", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config {path}: [watch] must be a table, got {_kind(table)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"config {path}: [watch]"
        if key in RENAMED:
            raise ConfigError(f"{where} {key} was renamed {RENAMED[key]}; use that")
        if key not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {known})")
        values[key] = _typed(key, value, where)
    if isinstance(values.get("state_dir"), Path) and not values["state_dir"].is_absolute():
        values["state_dir"] = path.parent / values["state_dir"]
    return values


def load_watch_config(
    path: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> WatchConfig:
    """Merge the defaults < the config file < environment variables < flags into a config.

    Args:
        path: a TOML file with a ``[watch]`` table, or ``None``.
        env: the environment (``os.environ``); see :data:`ENV_VARS`.
        overrides: field name -> value from the command line; ``None`` values mean "not given".

    Raises:
        ConfigError: a file that cannot be read, an unknown table or key, or a value of the
            wrong kind (the message names the key and where it came from).
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        for name, value in read_config_file(path).items():
            values[name], sources[name] = value, f"config {path}: [watch]"
    for var, new in RENAMED_ENV.items():
        if var in env:
            raise ConfigError(f"environment variable {var} was renamed {new}; use that")
    for var, name in ENV_VARS.items():
        if var in env:
            where = f"environment variable {var}"
            values[name], sources[name] = _parsed(name, env[var], where), where
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown watch setting {name!r}")
        if value is not None:
            values[name], sources[name] = _typed(name, value, "command line"), "command line"
    for name, value in values.items():
        problem = _problem(name, value)
        if problem is not None:
            raise ConfigError(f"{sources[name]}: {problem}")
    return WatchConfig(**values)


def check_hook_program(argv: list[str]) -> None:
    """Check at start-up that the hook's program exists and may be executed.

    A name without a slash is looked up on ``PATH``, as ``subprocess`` will; a path is taken
    from the current folder.

    Raises:
        ConfigError: the program is missing or not executable (the message names it).
    """
    program = argv[0]
    if os.sep in program:
        if not os.path.isfile(program):
            raise ConfigError(f"--on-emit: {program}: no such file")
        if not os.access(program, os.X_OK):
            raise ConfigError(f"--on-emit: {program} is not executable (chmod +x it)")
        return
    if shutil.which(program) is None:
        raise ConfigError(f"--on-emit: program {program!r} not found on PATH")
