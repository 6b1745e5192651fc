"""Plain helpers shared by the tests that start the daemon as a real process.

They live here, not in a test module, so that no test module imports another.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this checkout's ``src`` first, no ENERGY_LEDGER_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_LEDGER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def wait_for(condition: Callable[[], Any], what: str, timeout_sec: float = 20.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_sec``."""
    deadline = time.monotonic() + timeout_sec
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_status(root: Path) -> dict[str, Any] | None:
    """The daemon's status file, or None before it exists."""
    try:
        loaded: dict[str, Any] = json.loads((root / ".energy-ledger" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return loaded
