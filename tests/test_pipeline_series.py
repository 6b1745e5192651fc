"""The time series and request table as the pipeline writes them (issue 12, item 1).

The result names ``<id>.timeseries.parquet`` in ``timeseries``; the files are the same bytes
whichever way the logs were read: in the replay that made the result (a recorder as observer),
read again after the daemon's tails (``process_experiment(tails=...)``), or on workers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from energy_ledger import pipeline
from energy_ledger.pipeline import process_experiment, recover_experiment, replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store import parallel
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.parquet import parquet_available

pytestmark = [
    pytest.mark.usefixtures("restore_logging"),
    pytest.mark.skipif(not parquet_available(), reason="pyarrow (the parquet extra) is missing"),
]

IDS = ["sim-0000", "sim-0001", "sim-0002"]


def _series(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "aggregated").glob("*.parquet"))}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    simulate(tmp_path / "root", experiments=3, processes=2, requests=60, sweep=True)
    return tmp_path / "root"


def test_the_result_names_its_time_series(root: Path) -> None:
    """``timeseries`` is the file's name (relative to the result); both files are there and
    hold what the logs hold: a row per request event, and the window's seconds."""
    replay_root(root)
    for eid in IDS:
        result = json.loads((root / "aggregated" / f"{eid}.json").read_text())
        assert result["timeseries"] == f"{eid}.timeseries.parquet"
        series = pl.read_parquet(root / "aggregated" / result["timeseries"])
        requests = pl.read_parquet(root / "aggregated" / f"{eid}.requests.parquet")
        logged = [
            json.loads(line)
            for log in sorted((root / "raw" / eid).glob("*.events.jsonl"))
            for line in log.read_text().splitlines()
        ]
        assert requests.height == sum(1 for e in logged if e["type"] == "request")
        in_window = requests.filter(pl.col("in_window"))
        e2e = result["extended_metrics"]["request_latency"]["e2e_latency_samples"]
        assert in_window.height == e2e
        seconds = {int(e["t"]) for e in logged if e["type"] == "sample"}
        assert set(series["t_sec"].to_list()) == seconds


def test_same_bytes_whichever_way_the_logs_are_read(root: Path, tmp_path: Path) -> None:
    """Replay (recorder or a second read), the daemon's path (tails), and workers agree."""
    tails_root = tmp_path / "tails"
    workers_root = tmp_path / "workers"
    shutil.copytree(root, tails_root)
    shutil.copytree(root, workers_root)
    replay_root(root)
    layout = ResultsLayout.at(tails_root)
    for eid in IDS:
        outcome = process_experiment(layout, eid, tails={})  # the daemon passes its tails
        assert outcome.action == "written"
    pipeline_parallel = parallel.MIN_PARALLEL_BYTES
    try:
        parallel.MIN_PARALLEL_BYTES = 0
        replay_root(workers_root, jobs=2)
    finally:
        parallel.MIN_PARALLEL_BYTES = pipeline_parallel
    assert len(_series(root)) == 2 * len(IDS)
    assert _series(root) == _series(tails_root) == _series(workers_root)
    for eid in IDS:
        name = f"{eid}.json"
        assert (root / "aggregated" / name).read_bytes() == (
            tails_root / "aggregated" / name
        ).read_bytes()


def test_recover_of_a_complete_run_writes_what_replay_writes(root: Path, tmp_path: Path) -> None:
    """The full result from ``recover`` names and writes the same series as ``replay``."""
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    replay_root(root)
    recovery = recover_experiment(copy / "raw" / "sim-0001")
    assert recovery.partial is False and recovery.result.timeseries == "sim-0001.timeseries.parquet"
    for name in ("sim-0001.json", "sim-0001.timeseries.parquet", "sim-0001.requests.parquet"):
        assert (copy / "aggregated" / name).read_bytes() == (
            root / "aggregated" / name
        ).read_bytes()


def test_a_second_replay_writes_nothing(root: Path) -> None:
    """Unchanged logs: the series files keep their inode and mtime."""
    replay_root(root)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "aggregated").glob("*")}
    assert {o.action for o in replay_root(root, force=True)} == {"up-to-date"}
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "aggregated").glob("*")}
    assert before == after


def test_without_pyarrow_there_are_no_series(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the parquet extra is not installed the result's ``timeseries`` stays null."""
    monkeypatch.setattr(pipeline, "parquet_available", lambda: False)
    replay_root(root)
    assert _series(root) == {}
    result = json.loads((root / "aggregated" / "sim-0000.json").read_text())
    assert result["timeseries"] is None
