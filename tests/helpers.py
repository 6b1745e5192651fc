"""Plain helpers that tests in several folders share: child processes, waiting, event logs,
compat schemas, clocks.

They are plain functions, imported where used (``from tests.helpers import read_events``), so
that no test module imports another and no copy drifts from the others.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

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


RESULT_SCHEMA = "experiment_result_v2.0.schema.json"
"""The compat JSON Schema of an aggregated result (in the ``compat_dir`` fixture's folder)."""

RAW_PROCESS_SCHEMA = "raw_process_result_v2.0.schema.json"
"""The compat JSON Schema of one process's raw result."""


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every line of an event log, decoded (a torn last line fails the test)."""
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines()]


def compat_schema(compat_dir: Path, name: str) -> dict[str, Any]:
    """One of the compat JSON Schemas (``RESULT_SCHEMA``, ``RAW_PROCESS_SCHEMA``), parsed."""
    schema: dict[str, Any] = json.loads((compat_dir / name).read_bytes())
    return schema


def ticking_clock(start: float, step_sec: float = 1.0) -> Callable[[], float]:
    """A clock that returns ``start``, then moves ``step_sec`` on at every call.

    Give it to ``EventLogWriter.open`` (or a recorder) so that event times are known exactly.
    """
    ticks = itertools.count()
    return lambda: start + step_sec * next(ticks)


def result_outputs(*experiment_ids: str, csv: bool = True) -> list[str]:
    """The names a replay writes into ``aggregated/`` for complete experiments, sorted: each
    one's JSON, and with pyarrow (the ``parquet`` extra) its time series and request table."""
    from energy_ledger.store.parquet import parquet_available

    names = ["results.csv"] if csv else []
    for eid in experiment_ids:
        names.append(f"{eid}.json")
        if parquet_available():
            names += [f"{eid}.requests.parquet", f"{eid}.timeseries.parquet"]
    return sorted(names)
