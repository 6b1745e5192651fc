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


LIVE_T0 = 1_767_225_600.0
"""Event times of ``RunningExperiment`` start here."""


class RunningExperiment:
    """An experiment still running, written with the project's writer (no marker for most).

    Process 0 finishes (``window_ended``, ``process_finished``, its marker); the others stay
    open with their events flushed, as a GPU process in mid-run leaves them. The last process
    has no energy counter (its energy is integrated from power), and process 1 logs one
    request before its window opens (warm-up: not counted). ``finish()`` ends the others.
    """

    def __init__(
        self, root: Path, experiment_id: str, *, processes: int = 3, requests: int = 12
    ) -> None:
        from energy_ledger.store.writer import EventLogWriter

        self.root, self.experiment_id = Path(root), experiment_id
        self.directory = self.root / "raw" / experiment_id
        self.writers = []
        self._end: list[tuple[float, float | None]] = []
        for i in range(processes):
            w = EventLogWriter.open(
                root, experiment_id, i, flush_every_sec=1e9, clock=lambda: LIVE_T0 + 100
            )
            t = LIVE_T0 + 0.01 * i
            w.append(
                "process_started",
                t=t,
                experiment_id=experiment_id,
                run_id="run-live",
                process_index=i,
                world_size=processes,
                gpu_id=i,
                gpu_uuid=f"GPU-live-{i}",
            )
            if i == 1:
                w.append("request", t=t + 0.5, latency_ms=5.0, input_tokens=3, output_tokens=999)
            counter = i < processes - 1
            energy_mj: float | None = 5_000_000.0 + 1000 * i if counter else None
            w.append("window_started", t=t + 1.0, energy_mj=energy_mj)
            for k in range(requests + 3 * i):
                st = t + 1.0 + 0.1 * (k + 1)
                power_w = 200.0 + 10 * i + k
                if energy_mj is not None:
                    energy_mj += round(power_w * 100)
                w.append("sample", t=st, power_w=power_w, energy_mj=energy_mj)
                w.append("request", t=st + 0.05, latency_ms=30.0 + k, input_tokens=10,
                         output_tokens=5 + k + i)  # fmt: skip
            self._end.append((st + 0.1, energy_mj))
            w.flush()
            self.writers.append(w)
        self._close(0)

    def _close(self, i: int) -> None:
        end_t, energy_mj = self._end[i]
        self.writers[i].append("window_ended", t=end_t, energy_mj=energy_mj)
        self.writers[i].close()

    def finish(self) -> None:
        """End every process still running (each writes its marker)."""
        for i, w in enumerate(self.writers):
            if not w.closed:
                self._close(i)

    def abandon(self) -> None:
        """Close the open files without writing (the test is over)."""
        for w in self.writers:
            w.abandon()


def live_truth(directory: Path) -> dict[str, Any]:
    """The live figures of an experiment, computed here from the events its logs hold.

    Independent of ``core.live``: requests and output tokens between ``window_started`` and
    ``window_ended`` in log order; energy per GPU as the counter's delta from
    ``window_started`` to ``window_ended`` (or the last sample in the window), or else the
    trapezoid integral of the window's power readings; power the last reading in the window.
    """
    truth: dict[str, Any] = {"requests": 0, "output_tokens": 0, "started": 0, "finished": 0,
                             "expected": 0, "energy_j": {}, "power_w": {}}  # fmt: skip
    for log in sorted(directory.glob("process_*.events.jsonl")):
        inside = False
        start_mj = end_mj = None
        points: list[tuple[float, float]] = []
        gpu = None
        for e in read_events(log):
            kind = e["type"]
            if kind == "process_started":
                truth["started"] += 1
                truth["expected"] = max(truth["expected"], e["world_size"])
                gpu = f"gpu:{e['gpu_uuid']}"
            elif kind == "process_finished":
                truth["finished"] += 1
            elif kind == "window_started":
                inside, start_mj = True, e.get("energy_mj")
            elif kind == "window_ended":
                inside = False
                end_mj = e.get("energy_mj", end_mj)
            elif kind == "sample" and inside:
                points.append((e["t"], e["power_w"]))
                end_mj = e.get("energy_mj", end_mj)
            elif kind == "request" and inside:
                truth["requests"] += 1
                truth["output_tokens"] += e["output_tokens"]
        if start_mj is not None and end_mj is not None:
            energy_j = (end_mj - start_mj) / 1000.0
        else:
            energy_j = sum(
                (t2 - t1) * (p1 + p2) / 2 for (t1, p1), (t2, p2) in itertools.pairwise(points)
            )
        truth["energy_j"][gpu] = energy_j
        truth["power_w"][gpu] = points[-1][1]
    return truth


SEGMENTED_T0 = 1_700_000_000.0
"""Event times of ``write_segmented_experiment`` start here."""


def write_segmented_experiment(
    objects: Any,
    experiment_id: str,
    *,
    processes: int = 3,
    requests: int = 60,
) -> None:
    """An experiment of ``processes`` processes, each a window of requests and samples written
    as segments (with the defaults, four of about 25 events each) and a marker, into any
    ``ObjectStore`` root: the same bytes on every store (fixed clocks, cuts by count)."""
    from energy_ledger.store.segments import SegmentedLogWriter

    for index in range(processes):
        writer = SegmentedLogWriter(
            objects,
            experiment_id,
            index,
            segment_events=25,
            segment_sec=3600.0,
            clock=ticking_clock(SEGMENTED_T0 + index, 0.25),
            monotonic=lambda: 0.0,
        )
        writer.append(
            "process_started",
            experiment_id=experiment_id,
            run_id="run-1",
            process_index=index,
            world_size=processes,
            gpu_id=index,
            gpu_uuid=f"GPU-{index}",
            model_name="llama-8b",
        )
        writer.append("window_started", energy_mj=1_000_000.0 * (index + 1))
        for k in range(requests):
            if k % 4 == 0:
                writer.append("sample", power_w=200.0 + k, energy_mj=1e6 + 500.0 * k)
            writer.append(
                "request",
                latency_ms=20.0 + k + index,
                input_tokens=10 + k,
                output_tokens=5 + 2 * k,
                ttft_ms=3.0 + k % 7,
                itl_ms=[1.0 + k % 3, 2.0],
            )
        writer.append("window_ended", energy_mj=1_000_000.0 * (index + 1) + 90_000.0 + requests)
        writer.close()
