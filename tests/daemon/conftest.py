"""Fixtures of the daemon's process tests: start watchers, and a hook that logs its runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.daemon.procs import HOOK, Daemon, state_dir
from tests.helpers import child_env


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start watcher processes; every one is killed at teardown.

    ``daemons(root, *flags, prefix=(...), **env)`` starts ``energy-ledger watch root *flags``
    (behind ``prefix``, e.g. ``unshare``), with ``env`` added to its environment; the hook of
    ``hook_cmd`` logs to ``tmp_path/hooks.log``.
    """
    started: list[Daemon] = []

    def start(root: Path, *args: str, prefix: Sequence[str] = (), **env: str) -> Daemon:
        daemon = Daemon(
            root,
            tmp_path / f"daemon-{len(started)}.log",
            list(args),
            child_env(
                HOOK_LOG=str(tmp_path / "hooks.log"),
                HOOK_STATE_DIR=str(state_dir(root)),
                **env,
            ),
            prefix=prefix,
        )
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


@pytest.fixture
def hook_log(tmp_path: Path) -> Path:
    """Where the hook of ``hook_cmd`` logs its runs."""
    return tmp_path / "hooks.log"


@pytest.fixture
def hook_cmd(tmp_path: Path) -> str:
    """An --on-emit command that logs each run's start and end (see ``procs.HOOK``)."""
    script = tmp_path / "hook.sh"
    script.write_text(HOOK)
    return f"sh {script}"
