"""Replay on worker processes: the same bytes as one process, whichever way the work is split.

Worker processes are real (forkserver); the threshold below which replay stays in one process
is lowered to 0 so that small simulated roots take the parallel paths.
"""

from __future__ import annotations

import os
import pickle
import shutil
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from energy_ledger import pipeline
from energy_ledger.cli import cli
from energy_ledger.core.replay import FrozenDigest, FrozenDigestError, replay_bytes
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store import parallel
from energy_ledger.store.parallel import log_paths, prefetch_tails, worker_pool
from energy_ledger.store.parquet import parquet_available
from energy_ledger.store.tail import LogTail

pytestmark = pytest.mark.usefixtures("restore_logging")

PER_RESULT = 3 if parquet_available() else 1
"""Files per result: its JSON, and with pyarrow its time series and request table."""


@pytest.fixture(autouse=True)
def always_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers for any amount of log bytes (the default keeps small replays in-process)."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)


def _outputs(root: Path) -> dict[str, bytes]:
    """Every output file of a root, by name (the sources and lock files are bookkeeping)."""
    folder = root / "aggregated"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _twin(tmp_path: Path, *, extras: bool = True, **kwargs: int) -> tuple[Path, Path]:
    """Two copies of one simulated root, with a crashed and a corrupt experiment added
    (``extras``)."""
    a = tmp_path / "a"
    simulate(a, **kwargs)  # type: ignore[arg-type]
    if extras:
        simulate(a, processes=3, requests=20, prefix="crashed", crash=1, seed=5)
        simulate(a, processes=2, requests=20, prefix="corrupt", seed=6)
        log = a / "raw" / "corrupt-0000" / "process_1.events.jsonl"
        data = log.read_bytes()
        log.write_bytes(data[:200] + b"{not json\n" + data[200:])
    b = tmp_path / "b"
    shutil.copytree(a, b)
    return a, b


def test_by_experiment_outputs_are_the_serial_bytes(tmp_path: Path) -> None:
    """With more experiments than jobs (each to a worker), results, CSV and outcomes of
    ``jobs=2`` equal those of ``jobs=1``, byte for byte, pending and invalid ones included."""
    a, b = _twin(tmp_path, experiments=6, processes=2, requests=30)
    serial = replay_root(a, jobs=1)
    spread = replay_root(b, jobs=2)
    assert _outputs(a) == _outputs(b)
    assert len(_outputs(a)) == 1 + 6 * PER_RESULT  # the CSV, and each result's files
    strip = [(o.experiment_id, o.state, o.action, o.detail.replace(str(b), str(a))) for o in spread]
    assert [(o.experiment_id, o.state, o.action, o.detail) for o in serial] == strip
    states = {o.experiment_id: o.state for o in serial}
    assert states["crashed-0000"] == "pending" and states["corrupt-0000"] == "invalid"


def test_by_log_outputs_are_the_serial_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One experiment of four processes: its logs go to the workers (``prefetch_tails``), the
    aggregation stays here; the result is the serial one, byte for byte. (Only without the
    time series: they would need the logs read once more here, so with pyarrow one experiment
    is replayed in-process, which a second test checks.)"""
    monkeypatch.setattr(pipeline, "parquet_available", lambda: False)
    a, b = _twin(tmp_path, extras=False, experiments=1, processes=4, requests=200)
    calls: list[Path] = []
    real = pipeline.prefetch_tails

    def spy(pool: object, directory: Path, **kwargs: bool) -> object:
        calls.append(directory)
        return real(pool, directory, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "prefetch_tails", spy)
    replay_root(a, jobs=1)
    assert calls == []
    (outcome,) = replay_root(b, jobs=2)
    assert calls == [b / "raw" / "sim-0000"]
    assert outcome.action == "written"
    assert _outputs(a) == _outputs(b)
    assert len(_outputs(a)) == 2  # the result and the CSV


@pytest.mark.skipif(not parquet_available(), reason="pyarrow (the parquet extra) is missing")
def test_one_experiment_with_series_stays_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the time series to write, one experiment is not split over workers (its series
    would need a second read here), and its outputs are still the serial bytes."""
    a, b = _twin(tmp_path, extras=False, experiments=1, processes=4, requests=200)
    monkeypatch.setattr(pipeline, "worker_pool", None)  # any use of workers would fail
    replay_root(a, jobs=1)
    (outcome,) = replay_root(b, jobs=2)
    assert outcome.action == "written"
    assert _outputs(a) == _outputs(b)
    assert len(_outputs(a)) == 1 + PER_RESULT


def test_second_parallel_replay_writes_nothing(tmp_path: Path) -> None:
    """Up-to-date results are found in the parent; nothing is rewritten."""
    root = tmp_path / "r"
    simulate(root, experiments=4, processes=2, requests=20)
    replay_root(root, jobs=2)
    before = {p: p.stat().st_mtime_ns for p in (root / "aggregated").glob("*.json")}
    again = replay_root(root, jobs=2)
    assert {o.action for o in again} == {"up-to-date"}
    assert before == {p: p.stat().st_mtime_ns for p in (root / "aggregated").glob("*.json")}


def test_a_dead_pool_falls_back_to_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a worker dies (here: the pool breaks at once), the replay finishes in-process."""
    a, b = _twin(tmp_path, experiments=3, processes=2, requests=20)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise BrokenProcessPool("simulated")

    monkeypatch.setattr(pipeline, "_share_out", broken)
    replay_root(a, jobs=1)
    outcomes = replay_root(b, jobs=2)
    assert _outputs(a) == _outputs(b)
    assert len(outcomes) == 5


def test_cli_jobs_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``replay --jobs 2`` and ``--jobs 1`` write the same files; ``--jobs 0`` is refused."""
    a, b = _twin(tmp_path, experiments=3, processes=2, requests=20)
    assert cli("replay", "--jobs", "1", "-q", str(a)) == 1  # crashed and corrupt: not complete
    assert cli("replay", "--jobs", "2", "-q", str(b)) == 1
    assert _outputs(a) == _outputs(b)
    assert cli("replay", "--jobs", "0", str(b)) == 2
    assert "--jobs" in capsys.readouterr().err


class TestTailsAcrossProcesses:
    """A tail replayed in a worker comes back whole; one that grew since is read again."""

    def test_pickled_tail_keeps_its_state_and_digest(self, tmp_path: Path) -> None:
        """The cursor's state, offset and SHA-256 survive pickling; the observer does not."""
        simulate(tmp_path, processes=1, requests=50)
        path = tmp_path / "raw" / "sim-0000" / "process_0.events.jsonl"
        tail = LogTail(path)
        tail.refresh()
        tail.cursor.observer = print
        back = pickle.loads(pickle.dumps(tail))
        assert back.cursor.sha256 == tail.cursor.sha256
        assert back.cursor.offset == tail.cursor.offset == path.stat().st_size
        assert back.cursor.state.requests == tail.cursor.state.requests == 50
        assert back.cursor.observer is None
        assert isinstance(back.cursor._digest, FrozenDigest)

    def test_worker_tails_equal_serial_replays(self, tmp_path: Path) -> None:
        """``prefetch_tails`` gives, per log, the state a serial replay folds."""
        simulate(tmp_path, processes=3, requests=40)
        folder = tmp_path / "raw" / "sim-0000"
        with worker_pool(2) as pool:
            tails = prefetch_tails(pool, folder)
        assert sorted(tails) == [0, 1, 2] == sorted(log_paths(folder))
        for index, tail in tails.items():
            serial = replay_bytes((folder / f"process_{index}.events.jsonl").read_bytes())
            assert tail.cursor.sha256 == serial.sha256
            assert tail.cursor.state.latencies_ms == serial.state.latencies_ms
            assert tail.cursor.state.output_tokens == serial.state.output_tokens

    def test_a_log_that_grew_after_the_worker_is_read_again(self, tmp_path: Path) -> None:
        """The frozen digest cannot take more bytes, so the parent replays from the start and
        ends where a serial replay of the longer log ends."""
        simulate(tmp_path, processes=1, requests=30)
        path = tmp_path / "raw" / "sim-0000" / "process_0.events.jsonl"
        data = path.read_bytes()
        cut = data.rindex(b"\n", 0, len(data) // 2) + 1
        path.write_bytes(data[:cut])
        with worker_pool(1) as pool:
            (tail,) = prefetch_tails(pool, path.parent).values()
        with pytest.raises(FrozenDigestError):
            tail.cursor._digest.update(b"x")
        path.write_bytes(data)
        os.utime(path, ns=(1, 1))  # a different stamp, whatever the clock's granularity
        assert tail.refresh() is True
        assert tail.cursor.sha256 == replay_bytes(data).sha256
        assert tail.cursor.offset == len(data)


def test_links_are_left_to_the_scan(tmp_path: Path) -> None:
    """A log that is a symbolic link is not handed to a worker (the scan checks where it
    leads)."""
    simulate(tmp_path, processes=2, requests=5)
    folder = tmp_path / "raw" / "sim-0000"
    target = folder / "process_1.events.jsonl"
    moved = tmp_path / "elsewhere.jsonl"
    target.rename(moved)
    target.symlink_to(moved)
    assert sorted(log_paths(folder)) == [0]
