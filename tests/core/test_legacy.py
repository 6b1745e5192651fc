"""Tests for LLenergyMeasure's older raw layout: ``raw/<id>/process_<i>.json`` + ``.completed_<i>``.

The process files are built from the process results embedded in one of our own aggregated
results (they are schema-2.0 ``RawProcessResult`` values, as LLenergyMeasure writes them).
"""

from __future__ import annotations

import calendar
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from energy_ledger.core.legacy import summary_from_raw
from energy_ledger.models import RawProcessResult, Timestamps
from energy_ledger.pipeline import recover_experiment, replay_root, validate_experiment
from energy_ledger.simulate import ExperimentTruth, simulate
from energy_ledger.store.reader import scan_experiment
from tests.core.ledgers import Req, ledger, summary
from tests.helpers import child_env

EXP = "sim-0000"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentTruth, list[bytes]]:
    """A simulated 3-process run: its truth and its process results as JSON files' bytes."""
    root = tmp_path_factory.mktemp("legacy-source")
    (truth,) = simulate(root, processes=3, requests=10, seed=13)
    replay_root(root)
    emitted = json.loads((root / "aggregated" / f"{EXP}.json").read_bytes())
    files = [
        RawProcessResult.model_validate(p).model_dump_json(indent=2).encode()
        for p in emitted["process_results"]
    ]
    return truth, files


@pytest.fixture
def legacy(tmp_path: Path, source: tuple[ExperimentTruth, list[bytes]]) -> Path:
    """A results root in the older layout, complete: every file with its marker."""
    _truth, files = source
    folder = tmp_path / "raw" / EXP
    folder.mkdir(parents=True)
    for index, data in enumerate(files):
        (folder / f"process_{index}.json").write_bytes(data)
        (folder / f".completed_{index}").write_text("")
    return tmp_path


class TestComplete:
    """A complete set of older files validates and replays."""

    def test_validates(self, legacy: Path) -> None:
        """The scan sees the older layout and finds it complete."""
        scan = scan_experiment(legacy / "raw" / EXP)
        assert scan.legacy is True
        assert scan.report.is_complete, scan.report.error_message
        assert scan.report.found_indices == [0, 1, 2]

    def test_replays_to_the_ground_truth(
        self, legacy: Path, source: tuple[ExperimentTruth, list[bytes]]
    ) -> None:
        """Replaying the older files gives the simulator's tokens and energy."""
        truth, _files = source
        (outcome,) = replay_root(legacy)
        assert (outcome.state, outcome.action) == ("complete", "written")
        emitted = json.loads((legacy / "aggregated" / f"{EXP}.json").read_bytes())
        assert emitted["total_tokens"] == truth.total_tokens
        assert emitted["total_energy_j"] == truth.energy_j
        assert len(emitted["process_results"]) == 3

    def test_second_replay_writes_nothing(self, legacy: Path) -> None:
        """Replaying the older layout is idempotent too."""
        replay_root(legacy)
        (outcome,) = replay_root(legacy)
        assert outcome.action == "up-to-date"


class TestIncomplete:
    """Missing markers and files in the older layout are reported, not aggregated."""

    def test_missing_completed_marker_is_pending(self, legacy: Path) -> None:
        """Without ``.completed_1`` the experiment is pending."""
        (legacy / "raw" / EXP / ".completed_1").unlink()
        (outcome,) = replay_root(legacy)
        assert outcome.state == "pending"
        assert "process 1 has no completion marker (.completed_1)" in outcome.detail
        assert not (legacy / "aggregated" / f"{EXP}.json").exists()

    def test_missing_process_file_is_a_missing_index(self, legacy: Path) -> None:
        """A marker without its ``process_1.json`` leaves index 1 missing."""
        (legacy / "raw" / EXP / "process_1.json").unlink()
        scan = scan_experiment(legacy / "raw" / EXP)
        assert scan.report.missing_indices == [1]
        assert "expected 3 processes, found 2 (missing [1])" in (scan.report.error_message or "")
        (outcome,) = replay_root(legacy)
        assert outcome.action == "skipped"

    def test_missing_last_process_needs_the_expected_count(self, legacy: Path) -> None:
        """When the last file and marker are both gone, ``--expected`` finds the gap."""
        folder = legacy / "raw" / EXP
        (folder / "process_2.json").unlink()
        (folder / ".completed_2").unlink()
        report = validate_experiment(folder, expected_processes=3).report
        assert report.missing_indices == [2]
        assert not report.is_complete

    def test_unreadable_process_file(self, legacy: Path) -> None:
        """A ``process_<i>.json`` that is not a RawProcessResult makes the experiment invalid."""
        (legacy / "raw" / EXP / "process_2.json").write_text('{"not": "a result"}')
        (outcome,) = replay_root(legacy)
        assert outcome.state == "invalid"
        assert "process 2 log cannot be replayed: not a RawProcessResult" in outcome.detail


class TestRecover:
    """``recover`` works on the older layout."""

    def test_recover_without_a_marker(
        self, legacy: Path, source: tuple[ExperimentTruth, list[bytes]]
    ) -> None:
        """A missing marker still gives a partial result covering every request."""
        truth, _files = source
        (legacy / "raw" / EXP / ".completed_2").unlink()
        recovery = recover_experiment(legacy / "raw" / EXP)
        assert recovery.path == legacy / "aggregated" / f"{EXP}.partial.json"
        data = json.loads(recovery.path.read_bytes())
        assert data["aggregation"]["partial"] is True
        assert data["aggregation"]["completeness"]["missing_markers"] == [2]
        assert data["aggregation"]["coverage"]["requests"] == len(truth.latencies_ms)
        assert data["total_tokens"] == truth.total_tokens

    def test_recover_with_a_missing_process(self, legacy: Path) -> None:
        """A missing process file is listed as missing; the others are covered."""
        (legacy / "raw" / EXP / "process_0.json").unlink()
        recovery = recover_experiment(legacy / "raw" / EXP)
        assert recovery.report.missing_indices == [0]
        assert recovery.coverage["processes_found"] == 2
        assert [p.process_index for p in recovery.result.process_results] == [1, 2]


AGGREGATE_FILE = """
import sys
from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.models import RawProcessResult
from energy_ledger.store.exporters import result_to_json_bytes
raw = RawProcessResult.model_validate_json(open(sys.argv[1], "rb").read())
sys.stdout.buffer.write(result_to_json_bytes(aggregate_results([raw], raw.experiment_id)))
"""

NAIVE_TIMESTAMP = """
import datetime
print(repr(datetime.datetime(2026, 3, 13, 14, 21, 11).timestamp()))
"""


def _run(code: str, tz: str, *args: str) -> bytes:
    """Run ``code`` in a fresh interpreter with ``TZ=tz``; its standard output."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=child_env(TZ=tz),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout


class TestNaiveTimestamps:
    """Timestamps without a zone are UTC: the host's time zone cannot change a result."""

    @pytest.fixture
    def naive_file(self, tmp_path: Path) -> Path:
        """A process file whose window is 2026-03-13 14:21:11 to :15, without a time zone."""
        start = datetime(2026, 3, 13, 14, 21, 11)
        raw = summary(ledger(0, [Req(5.0, 1, 2, ttft_ms=1.0)])).raw.model_copy(
            update={
                "timestamps": Timestamps(
                    start=start, end=start + timedelta(seconds=4), duration_sec=4.0
                )
            }
        )
        path = tmp_path / "process_0.json"
        path.write_text(raw.model_dump_json())
        assert '"start":"2026-03-13T14:21:11"' in path.read_text()  # really naive on disk
        return path

    def test_the_zone_matters_to_naive_datetimes(self) -> None:
        """The check below is not vacuous: the child's TZ does change a naive ``timestamp()``."""
        assert _run(NAIVE_TIMESTAMP, "UTC") != _run(NAIVE_TIMESTAMP, "Asia/Tokyo")

    def test_same_bytes_in_utc_and_tokyo(self, naive_file: Path) -> None:
        """Aggregating the same file under TZ=UTC and TZ=Asia/Tokyo gives the same bytes."""
        in_utc = _run(AGGREGATE_FILE, "UTC", str(naive_file))
        in_tokyo = _run(AGGREGATE_FILE, "Asia/Tokyo", str(naive_file))
        assert in_utc == in_tokyo
        emitted = json.loads(in_utc)
        expected = calendar.timegm((2026, 3, 13, 14, 21, 11, 0, 0, 0))
        start = datetime.fromisoformat(emitted["start_time"])
        assert start.timestamp() == expected
        assert emitted["total_inference_time_sec"] == 4.0

    def test_read_as_utc_with_a_warning(self, naive_file: Path) -> None:
        """The summary reads the naive window as UTC and says so."""
        raw = RawProcessResult.model_validate_json(naive_file.read_bytes())
        s = summary_from_raw(raw)
        assert s.window_start_t == calendar.timegm((2026, 3, 13, 14, 21, 11, 0, 0, 0))
        assert any("no time zone: read as UTC" in w for w in s.warnings)

    def test_aware_timestamps_have_no_warning(self, naive_file: Path) -> None:
        """Our own files carry UTC offsets: no warning for them."""
        raw = summary(ledger(0, [Req(5.0, 1, 2)])).raw
        assert not any("time zone" in w for w in summary_from_raw(raw).warnings)
