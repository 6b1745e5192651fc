"""The watcher's settings: a TOML file, overridden by environment variables, overridden by flags.

``load_watch_config`` merges the three layers into one frozen ``WatchConfig``. The TOML file keeps
its settings in a ``[watch]`` table whose keys are the field names of ``WatchConfig``; unknown keys
are an error, so a typo does not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from energy_ledger.exceptions import ConfigError

LogFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """How ``energy-ledger watch`` runs.

    Attributes:
        polling: poll instead of inotify; ``None`` decides from the filesystem type.
        poll_interval_sec: seconds between polls of the active experiments (polling mode).
        reconcile_interval_sec: seconds between full listings of the root (both modes).
        lease_timeout_sec: a lease holder on another host whose heartbeat is older than this is
            presumed dead.
        stale_after_sec: an experiment with no new bytes for this long is reported as stale.
        recover_stale: emit stale experiments as partial results.
        on_emit: a command run after each emission, with the result path and experiment id.
        state_dir: the daemon's state folder; ``<root>/.energy-ledger`` when ``None``.
        log_format: ``text`` or ``json`` (the CLI sets logging up with it).
        hook_retries: attempts of a failing hook before it is reported as failed.
        hook_backoff_sec: delay before the first retry; it doubles at each retry.
        hook_timeout_sec: a hook still running after this long is killed (a failed attempt).
        debounce_sec: how long to let a burst of events settle before scanning.
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
    hook_retries: int = 5
    hook_backoff_sec: float = 1.0
    hook_timeout_sec: float = 600.0
    debounce_sec: float = 0.005

    def __post_init__(self) -> None:
        for name in (
            "poll_interval_sec",
            "reconcile_interval_sec",
            "lease_timeout_sec",
            "stale_after_sec",
            "hook_timeout_sec",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.hook_backoff_sec < 0 or self.debounce_sec < 0:
            raise ConfigError("hook_backoff_sec and debounce_sec must be >= 0")
        if self.hook_retries < 1:
            raise ConfigError(f"hook_retries must be >= 1, got {self.hook_retries}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
        if self.on_emit is not None:
            try:
                argv = shlex.split(self.on_emit)
            except ValueError as exc:
                raise ConfigError(f"on_emit {self.on_emit!r}: {exc}") from exc
            if not argv:
                raise ConfigError("on_emit is an empty command")

    def hook_argv(self) -> list[str] | None:
        """``on_emit`` split like a shell command line (no shell runs it)."""
        return shlex.split(self.on_emit) if self.on_emit else None


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
    "ENERGY_LEDGER_HOOK_RETRIES": "hook_retries",
}
"""Environment variables and the setting each one sets."""

_FIELDS = {f.name: f for f in dataclasses.fields(WatchConfig)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a TOML or environment value into the field's type; raise ``ConfigError``."""
    where = f"{source}: {name}"
    if name == "polling":
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("auto", ""):
            return None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{where} must be true, false or auto, got {value!r}")
    if name == "recover_stale":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if name == "hook_retries":
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if name.endswith("_sec"):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number of seconds, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number of seconds, got {value!r}") from None
    if name == "state_dir":
        return Path(value) if value not in (None, "") else None
    if name == "on_emit":
        return str(value) if value not in (None, "") else None
    return str(value)


def read_config_file(path: Path) -> dict[str, Any]:
    """The ``[watch]`` table of a TOML file, checked and coerced."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    table = data.get("watch", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config {path}: [watch] must be a table")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config {path}: unknown setting(s) in [watch]: {', '.join(unknown)}")
    values = {k: _coerce(k, v, str(path)) for k, v in table.items()}
    if isinstance(values.get("state_dir"), Path) and not values["state_dir"].is_absolute():
        values["state_dir"] = path.parent / values["state_dir"]
    return values


def load_watch_config(
    path: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> WatchConfig:
    """Merge the config file < environment variables < flags into a ``WatchConfig``.

    Args:
        path: a TOML file with a ``[watch]`` table, or ``None``.
        env: the environment (``os.environ``); see :data:`ENV_VARS`.
        overrides: field name -> value from the command line; ``None`` values mean "not given".

    Raises:
        ConfigError: a file that cannot be read, an unknown key or a value of the wrong kind.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_config_file(path))
    for var, name in ENV_VARS.items():
        if var in env:
            values[name] = _coerce(name, env[var], f"environment variable {var}")
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown watch setting {name!r}")
        if value is not None:
            values[name] = _coerce(name, value, "command line")
    return WatchConfig(**values)
