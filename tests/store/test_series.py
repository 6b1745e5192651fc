"""The Parquet series files, read back with polars and compared with the logs read with ``json``.

Expectations are worked out here from each log line's JSON (a second is ``floor(t)``; mean
power, temperature and utilisation, the last counter reading, the largest memory reading, the
OR of the throttle bits; a GPU's readings from its lowest-index process with samples, requests
summed over its processes), never by calling ``core.resample`` or ``store.series`` a second
way. polars is the independent reader; pyarrow is used only to count row groups.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from energy_ledger import __version__
from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import T0, simulate, simulate_process
from energy_ledger.store import parquet, series
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.parquet import parquet_available
from energy_ledger.store.series import SeriesRecorder, write_series
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import child_env

EXP = "sim-0000"
MEANS = ("power_w", "temperature_c", "sm_util_pct")
READINGS = (*MEANS, "energy_mj", "memory_used_mb")
TIMESERIES_SCHEMA = {
    "gpu": pl.String,
    "hostname": pl.String,
    "gpu_id": pl.Int32,
    "t_sec": pl.Int64,
    "in_window": pl.Boolean,
    "power_w": pl.Float64,
    "energy_mj": pl.Float64,
    "temperature_c": pl.Float64,
    "sm_util_pct": pl.Float64,
    "memory_used_mb": pl.Float64,
    "throttle_reasons": pl.Int64,
    "samples": pl.Int32,
    "requests": pl.Int32,
    "output_tokens_per_sec": pl.Float64,
}
REQUESTS_SCHEMA = {
    "process_index": pl.Int32,
    "t": pl.Float64,
    "latency_ms": pl.Float64,
    "ttft_ms": pl.Float64,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "in_window": pl.Boolean,
}


# -- expectations from the logs' JSON ----------------------------------------------------------


def log_lines(directory: Path) -> dict[int, list[dict[str, Any]]]:
    """Each process's events, from the lines that parse as JSON (a corrupt line is skipped)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("process_*.events.jsonl")):
        index = int(path.name.split("_")[1].split(".")[0])
        events = []
        for line in path.read_bytes().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        out[index] = events
    return out


def with_window(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """Each event with whether it was logged between window_started and window_ended."""
    opened = closed = False
    out = []
    for e in events:
        opened = opened or e["type"] == "window_started"
        closed = closed or e["type"] == "window_ended"
        out.append((e, opened and not closed))
    return out


def expected_requests(logs: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {
            "process_index": index,
            "t": e["t"],
            "latency_ms": e["latency_ms"],
            "ttft_ms": e.get("ttft_ms"),
            "input_tokens": e["input_tokens"],
            "output_tokens": e["output_tokens"],
            "in_window": inside,
        }
        for index in sorted(logs)
        for e, inside in with_window(logs[index])
        if e["type"] == "request"
    ]


def seconds_of(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """One process's rows by second: a brute-force group-by of its samples and requests."""
    groups: dict[int, dict[str, Any]] = {}
    for e, inside in with_window(events):
        if e["type"] in ("sample", "request"):
            g = groups.setdefault(math.floor(e["t"]), {"sample": [], "request": [], "in": False})
            g[e["type"]].append(e)
            g["in"] = g["in"] or inside
    rows = {}
    for sec, g in groups.items():
        ss, rs = g["sample"], g["request"]
        row: dict[str, Any] = {"in_window": g["in"], "samples": len(ss), "requests": len(rs)}
        for name in MEANS:
            values = [s[name] for s in ss if name in s]
            row[name] = sum(values) / len(values) if values else None
        counter = [(s["t"], i, s["energy_mj"]) for i, s in enumerate(ss) if "energy_mj" in s]
        row["energy_mj"] = float(max(counter)[2]) if counter else None
        memory = [s["memory_used_mb"] for s in ss if "memory_used_mb" in s]
        row["memory_used_mb"] = max(memory) if memory else None
        bits = [s["throttle_reasons"] for s in ss if "throttle_reasons" in s]
        row["throttle_reasons"] = functools.reduce(operator.or_, bits, 0)
        row["output_tokens_per_sec"] = float(sum(r["output_tokens"] for r in rs))
        rows[sec] = row
    return rows


def expected_timeseries(logs: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    starts = {i: next(e for e in ev if e["type"] == "process_started") for i, ev in logs.items()}
    gpus: dict[str, list[int]] = {}
    for i in sorted(logs):
        uuid = starts[i].get("gpu_uuid")
        gpus.setdefault(f"gpu:{uuid}" if uuid else f"process:{i}", []).append(i)
    out = []
    for key in sorted(gpus):
        members = gpus[key]
        rows = {i: seconds_of(logs[i]) for i in members}
        sampling = [i for i in members if any(r["samples"] for r in rows[i].values())]
        reader = (sampling or members)[0]
        for sec in sorted({s for i in members for s in rows[i]}):
            own = rows[reader].get(sec) or {
                **dict.fromkeys(READINGS),
                "samples": 0,
                "throttle_reasons": 0,
            }
            present = [rows[i][sec] for i in members if sec in rows[i]]
            out.append(
                {
                    "gpu": key,
                    "hostname": starts[reader].get("hostname"),
                    "gpu_id": starts[reader]["gpu_id"],
                    "t_sec": sec,
                    "in_window": any(r["in_window"] for r in present),
                    **{name: own[name] for name in READINGS},
                    "throttle_reasons": own["throttle_reasons"],
                    "samples": own["samples"],
                    "requests": sum(r["requests"] for r in present),
                    "output_tokens_per_sec": sum(r["output_tokens_per_sec"] for r in present),
                }
            )
    return out


def assert_table(path: Path, expected: list[dict[str, Any]], schema: dict[str, Any]) -> None:
    frame = pl.read_parquet(path)
    assert dict(frame.schema) == schema
    got = frame.rows(named=True)
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row.keys() == want.keys()
        for name, value in want.items():
            if isinstance(value, float):
                assert row[name] == pytest.approx(value, rel=1e-12), name
            else:
                assert row[name] == value, name


# -- fixtures ----------------------------------------------------------------------------------


def simulated(root: Path, **kwargs: Any) -> tuple[ResultsLayout, Path]:
    """A replayed sweep experiment whose series files are removed again: replay writes them
    too (pipeline), and these tests write them themselves."""
    simulate(root, experiments=1, processes=2, requests=200, sweep=True, **kwargs)
    replay_root(root)
    for made in (root / "aggregated").glob(f"{EXP}.*.parquet"):
        made.unlink()
    layout = ResultsLayout.at(root)
    return layout, layout.experiment_dir(EXP)


@pytest.fixture
def sim(tmp_path: Path) -> tuple[ResultsLayout, Path]:
    return simulated(tmp_path / "root")


def corrupt(log: Path, kind: str, nth: int) -> None:
    """Replace the ``nth`` line of type ``kind`` with bytes that are not JSON."""
    lines = log.read_bytes().splitlines(keepends=True)
    at = [i for i, ln in enumerate(lines) if _type(ln) == kind][nth]
    lines[at] = b'{"v":1,"seq":' + b"x" * 20 + b"\n"
    log.write_bytes(b"".join(lines))


def _type(line: bytes) -> str | None:
    try:
        return str(json.loads(line)["type"])
    except ValueError:
        return None


def temp_files(layout: ResultsLayout) -> list[str]:
    return [n for n in os.listdir(layout.aggregated_dir) if n.endswith(".tmp")]


# -- tests -------------------------------------------------------------------------------------


class TestTimeseriesFile:
    """aggregated/<id>.timeseries.parquet against the logs."""

    def test_every_column_matches_the_logs(self, sim: tuple[ResultsLayout, Path]) -> None:
        """Each GPU's seconds, warm-up included, hold the log's per-second aggregates."""
        layout, directory = sim
        files = write_series(directory, layout=layout)
        assert files.timeseries == layout.aggregated_dir / f"{EXP}.timeseries.parquet"
        expected = expected_timeseries(log_lines(directory))
        assert_table(files.timeseries, expected, TIMESERIES_SCHEMA)
        warm_up = [r for r in expected if not r["in_window"] and r["samples"]]
        assert warm_up and len({r["gpu"] for r in expected}) == 2

    def test_processes_sharing_a_gpu_are_one_series(self, tmp_path: Path) -> None:
        """Two processes on one GPU: the lower index's readings, both processes' requests."""
        root = tmp_path / "root"
        rng = random.Random(3)
        for index in range(2):
            simulate_process(
                root, EXP, "run", index, 2, requests=80, t_start=T0, rng=rng,
                gpu_uuid="GPU-shared", batch_size=2,
            )  # fmt: skip
        layout = ResultsLayout.at(root)
        files = write_series(layout.experiment_dir(EXP), layout=layout)
        assert files.timeseries is not None
        expected = expected_timeseries(log_lines(layout.experiment_dir(EXP)))
        assert {r["gpu"] for r in expected} == {"gpu:GPU-shared"}
        assert sum(r["requests"] for r in expected) == 160
        assert_table(files.timeseries, expected, TIMESERIES_SCHEMA)

    def test_metadata_names_the_experiment_and_version(
        self, sim: tuple[ResultsLayout, Path]
    ) -> None:
        """Both files carry experiment_id and energy_ledger_version as key-value metadata."""
        layout, directory = sim
        files = write_series(directory, layout=layout)
        for path in (files.timeseries, files.requests):
            assert path is not None
            meta = pl.read_parquet_metadata(path)
            assert meta["experiment_id"] == EXP
            assert meta["energy_ledger_version"] == __version__

    def test_no_samples_gives_empty_files_with_their_schema(self, tmp_path: Path) -> None:
        """An experiment without samples or requests still gets both files, zero rows each."""
        simulate(tmp_path / "root", experiments=1, processes=2, requests=0)
        layout = ResultsLayout.at(tmp_path / "root")
        files = write_series(layout.experiment_dir(EXP), layout=layout)
        assert files.timeseries is not None and files.requests is not None
        assert_table(files.timeseries, [], TIMESERIES_SCHEMA)
        assert_table(files.requests, [], REQUESTS_SCHEMA)


def hand_written(root: Path) -> Path:
    """A log with what the simulator never writes: requests outside the window, no TTFT, a
    sample without readings, a second with requests and no sample, no GPU UUID."""
    end = T0 + 9.0
    writer = EventLogWriter.open(root, EXP, 0, clock=lambda: end)
    started = {"experiment_id": EXP, "run_id": "r", "world_size": 1, "process_index": 0}
    writer.append("process_started", t=T0, gpu_id=3, **started)
    writer.append("request", t=T0 + 0.5, latency_ms=9.0, input_tokens=1, output_tokens=2)
    writer.append("sample", t=T0 + 0.6)
    writer.append("window_started", t=T0 + 1.2)
    writer.append("sample", t=T0 + 1.3, power_w=100.0, throttle_reasons=4, energy_mj=5.0)
    writer.append("sample", t=T0 + 1.4, power_w=300.0, throttle_reasons=1, energy_mj=9.0)
    writer.append("request", t=T0 + 3.5, latency_ms=5.0, input_tokens=1, output_tokens=7,
                  ttft_ms=1.5)  # fmt: skip
    writer.append("window_ended", t=T0 + 4.0)
    writer.append("request", t=T0 + 6.5, latency_ms=3.0, input_tokens=4, output_tokens=5)
    writer.close()
    return ResultsLayout.at(root).experiment_dir(EXP)


class TestHandWrittenLog:
    """Nulls and the window flag, on a log written by hand."""

    def test_nulls_and_requests_outside_the_window(self, tmp_path: Path) -> None:
        """Missing readings and TTFTs are nulls; requests outside the window are flagged so."""
        directory = hand_written(tmp_path)
        layout = ResultsLayout.at(tmp_path)
        files = write_series(directory, layout=layout)
        assert files.timeseries and files.requests
        logs = log_lines(directory)
        expected = expected_timeseries(logs)
        assert [(r["t_sec"] - int(T0), r["in_window"], r["samples"]) for r in expected] == [
            (0, False, 1), (1, True, 2), (3, True, 0), (6, False, 0),
        ]  # fmt: skip
        assert expected[0]["power_w"] is None and expected[1]["throttle_reasons"] == 5
        assert_table(files.timeseries, expected, TIMESERIES_SCHEMA)
        requests = expected_requests(logs)
        assert [(r["in_window"], r["ttft_ms"]) for r in requests] == [
            (False, None), (True, 1.5), (False, None),
        ]  # fmt: skip
        assert_table(files.requests, requests, REQUESTS_SCHEMA)
        frame = pl.read_parquet(files.timeseries)
        assert frame["power_w"].null_count() == 3 and not frame["power_w"].is_nan().any()


class TestRequestsFile:
    """aggregated/<id>.requests.parquet against the logs."""

    def test_one_row_per_request_event_in_process_then_log_order(
        self, sim: tuple[ResultsLayout, Path]
    ) -> None:
        """Every request event is a row, with its values and window flag."""
        layout, directory = sim
        files = write_series(directory, layout=layout)
        assert files.requests is not None
        expected = expected_requests(log_lines(directory))
        assert len(expected) == 400
        assert_table(files.requests, expected, REQUESTS_SCHEMA)

    def test_a_row_group_boundary_changes_no_row(
        self, sim: tuple[ResultsLayout, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Flushing every 7 rows gives the same table, in row groups of 7."""
        layout, directory = sim
        files = write_series(directory, layout=layout)
        assert files.requests is not None and files.timeseries is not None
        whole = pl.read_parquet(files.requests)
        series_whole = pl.read_parquet(files.timeseries)
        assert pq.ParquetFile(files.requests).metadata.num_row_groups == 1
        monkeypatch.setattr(series, "BUFFER_ROWS", 7)
        assert write_series(directory, layout=layout).changed
        groups = pq.ParquetFile(files.requests).metadata
        assert groups.num_row_groups == math.ceil(400 / 7)
        assert {groups.row_group(i).num_rows for i in range(groups.num_row_groups)} == {7, 400 % 7}
        assert pl.read_parquet(files.requests).equals(whole)
        assert pl.read_parquet(files.timeseries).equals(series_whole)


class TestDeterminism:
    """The same logs give the same bytes."""

    def test_a_second_write_changes_nothing(self, sim: tuple[ResultsLayout, Path]) -> None:
        """Writing again leaves identical bytes and reports no change."""
        layout, directory = sim
        first = write_series(directory, layout=layout)
        assert first.changed and first.timeseries and first.requests
        before = (first.timeseries.read_bytes(), first.requests.read_bytes())
        inode = first.requests.stat().st_ino
        again = write_series(directory, layout=layout)
        assert not again.changed
        assert (first.timeseries.read_bytes(), first.requests.read_bytes()) == before
        assert first.requests.stat().st_ino == inode  # not even replaced
        assert temp_files(layout) == []

    def test_identically_simulated_roots_give_identical_bytes(self, tmp_path: Path) -> None:
        """Two roots simulated alike, in different folders, give byte-identical files."""
        outputs = []
        for name in ("a", "b"):
            layout, directory = simulated(tmp_path / name)
            files = write_series(directory, layout=layout)
            assert files.timeseries and files.requests
            outputs.append((files.timeseries.read_bytes(), files.requests.read_bytes()))
        assert outputs[0] == outputs[1]

    def test_different_logs_rewrite_the_files(self, sim: tuple[ResultsLayout, Path]) -> None:
        """Logs simulated from another seed replace both files and report a change."""
        layout, directory = sim
        first = write_series(directory, layout=layout)
        assert first.timeseries and first.requests
        before = (first.timeseries.read_bytes(), first.requests.read_bytes())
        shutil.rmtree(layout.raw_dir)
        simulate(layout.root, experiments=1, processes=2, requests=200, sweep=True, seed=1)
        assert write_series(directory, layout=layout).changed
        after = (first.timeseries.read_bytes(), first.requests.read_bytes())
        assert after[0] != before[0] and after[1] != before[1]
        assert_table(first.requests, expected_requests(log_lines(directory)), REQUESTS_SCHEMA)


class TestSafety:
    """Unsafe outputs are refused; a failure leaves no temp file and the old files intact."""

    @pytest.mark.parametrize("suffix", [".timeseries.parquet", ".requests.parquet"])
    def test_a_linked_output_is_refused_and_not_written_through(
        self, sim: tuple[ResultsLayout, Path], tmp_path: Path, suffix: str
    ) -> None:
        """A symbolic link at an output: UnsafePathError, its target untouched, nothing written."""
        layout, directory = sim
        target = tmp_path / "outside.bin"
        target.write_bytes(b"keep")
        (layout.aggregated_dir / f"{EXP}{suffix}").symlink_to(target)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            write_series(directory, layout=layout)
        assert target.read_bytes() == b"keep"
        assert sorted(n for n in os.listdir(layout.aggregated_dir) if "parquet" in n) == [
            f"{EXP}{suffix}"
        ]

    def test_a_failure_mid_stream_removes_the_temp_file(
        self, sim: tuple[ResultsLayout, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The writer failing at its third row group: LedgerError, no temp file, old files kept."""
        layout, directory = sim
        files = write_series(directory, layout=layout)
        assert files.timeseries and files.requests
        before = (files.timeseries.read_bytes(), files.requests.read_bytes())
        original = pq.ParquetWriter.write_batch
        calls = []

        def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(series, "BUFFER_ROWS", 7)
        monkeypatch.setattr(pq.ParquetWriter, "write_batch", failing)
        with pytest.raises(LedgerError, match="No space left"):
            write_series(directory, layout=layout)
        assert len(calls) == 3
        assert temp_files(layout) == []
        assert (files.timeseries.read_bytes(), files.requests.read_bytes()) == before

    def test_a_failed_final_write_removes_the_temp_file(
        self, sim: tuple[ResultsLayout, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The time series' write failing after the requests were streamed leaves no temp."""
        layout, directory = sim

        def refuse(path: Path, data: bytes) -> bool:
            raise LedgerError(f"cannot write {path}: disk full")

        monkeypatch.setattr(series, "write_if_changed", refuse)
        with pytest.raises(LedgerError, match="disk full"):
            write_series(directory, layout=layout)
        assert temp_files(layout) == []
        assert not any("parquet" in n for n in os.listdir(layout.aggregated_dir))

    def test_rows_out_of_process_order_are_refused(self, sim: tuple[ResultsLayout, Path]) -> None:
        """Feeding a lower-index log after a higher one would break the row order: refused."""
        layout, _ = sim
        from energy_ledger.core.decode import make_event

        request = make_event("request", seq=1, t=T0, latency_ms=1.0, input_tokens=1,
                             output_tokens=1)  # fmt: skip
        with SeriesRecorder(layout, EXP) as recorder:
            recorder.observe(1)([request])
            with pytest.raises(LedgerError, match="out of process order"):
                recorder.observe(0)([request])
        assert temp_files(layout) == []

    def test_parquet_available_asks_without_importing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """parquet_available follows importlib's answer for pyarrow."""
        assert parquet_available()
        monkeypatch.setattr(parquet.importlib.util, "find_spec", lambda name: None)
        assert not parquet_available()


class TestCorruptLines:
    """A corrupt line: skipped in lenient mode; in strict mode its process is left out."""

    def test_lenient_mode_skips_the_line_in_both_files(
        self, sim: tuple[ResultsLayout, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A corrupt request and sample of process 1 are missing from both files, nothing else."""
        layout, directory = sim
        corrupt(directory / "process_1.events.jsonl", "request", 10)
        corrupt(directory / "process_1.events.jsonl", "sample", 30)
        logs = log_lines(directory)
        monkeypatch.setattr(series, "BUFFER_ROWS", 7)
        files = write_series(directory, layout=layout, strict=False)
        assert files.timeseries and files.requests
        assert len(expected_requests(logs)) == 399
        assert_table(files.requests, expected_requests(logs), REQUESTS_SCHEMA)
        assert_table(files.timeseries, expected_timeseries(logs), TIMESERIES_SCHEMA)
        again = write_series(directory, layout=layout, strict=False)
        assert not again.changed

    def test_strict_mode_leaves_out_a_log_that_does_not_replay(
        self, sim: tuple[ResultsLayout, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Process 1's rows fed before its bad line are dropped, as the result drops it."""
        layout, directory = sim
        corrupt(directory / "process_1.events.jsonl", "request", 150)
        logs = log_lines(directory)
        del logs[1]
        monkeypatch.setattr(series, "BUFFER_ROWS", 7)
        files = write_series(directory, layout=layout, strict=True)
        assert files.timeseries and files.requests
        assert_table(files.requests, expected_requests(logs), REQUESTS_SCHEMA)
        assert_table(files.timeseries, expected_timeseries(logs), TIMESERIES_SCHEMA)
        assert pq.ParquetFile(files.requests).metadata.num_row_groups == math.ceil(200 / 7)
        assert temp_files(layout) == []


class TestFootprint:
    """What writing the series costs beyond the files."""

    def test_pandas_is_never_imported(self, sim: tuple[ResultsLayout, Path]) -> None:
        """Arrow columns are built from buffers: pyarrow.array would import pandas (~50 MB)."""
        layout, directory = sim
        code = (
            "import sys\n"
            "from pathlib import Path\n"
            "from energy_ledger.store.layout import ResultsLayout\n"
            "from energy_ledger.store.series import write_series\n"
            f"files = write_series(Path({str(directory)!r}), "
            f"layout=ResultsLayout.at({str(layout.root)!r}))\n"
            "assert files.changed\n"
            "print('pandas' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "False"

    def test_an_older_layout_gets_no_files(self, tmp_path: Path) -> None:
        """LLenergyMeasure's older layout has no events: nothing is written, no temp left."""
        layout = ResultsLayout.at(tmp_path)
        directory = layout.experiment_dir(EXP)
        directory.mkdir(parents=True)
        (directory / ".completed_0").write_bytes(b"")
        files = write_series(directory, layout=layout)
        assert files == series.SeriesFiles(None, None, changed=False)
        assert not layout.aggregated_dir.exists()  # not even made: nothing goes there
