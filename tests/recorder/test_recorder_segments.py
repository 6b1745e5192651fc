"""``ProcessRecorder`` in the segmented layout on a local root (issue 13; fake NVML).

The same recorder that appends a log writes segments and a version-2 marker when asked
(``layout="segmented"``, ``ENERGY_LEDGER_LAYOUT``), through the background uploader. A store
that fails is a wrapper around ``LocalObjects``, put where the recorder opens its store.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_ledger.core.completeness import check_completeness
from energy_ledger.core.marker import SegmentedMarker, parse_any_marker
from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.fake import FakeNvml
from energy_ledger.recorder import recorder as recorder_module
from energy_ledger.recorder.launch import LaunchInfo
from energy_ledger.recorder.recorder import ProcessRecorder
from energy_ledger.store.objects import LocalObjects, ObjectInfo
from energy_ledger.store.segment_tail import SegmentTail, segment_evidence
from energy_ledger.store.segments import marker_key, segments_prefix
from tests.helpers import read_events, ticking_clock
from tests.recorder.test_recorder import recorder

EXP = "exp"


def marker_path(root: Path, index: int = 0) -> Path:
    """Where process ``index``'s marker goes."""
    return root / "raw" / EXP / f"process_{index}.done"


def segment_files(root: Path, index: int = 0) -> list[Path]:
    """Process ``index``'s segment files, in order."""
    folder = root / "raw" / EXP / f"process_{index}.segments"
    return sorted(folder.iterdir()) if folder.exists() else []


def read_back(root: Path, index: int = 0) -> tuple[SegmentTail, SegmentedMarker | None]:
    """Process ``index``'s segments folded by ``SegmentTail``, and its marker if any."""
    objects = LocalObjects(root)
    tail = SegmentTail(segments_prefix(EXP, index))
    tail.refresh(objects, objects.list(f"raw/{EXP}/"))
    marker = None
    if marker_path(root, index).exists():
        parsed = parse_any_marker(objects.get(marker_key(EXP, index)))
        assert isinstance(parsed, SegmentedMarker)
        marker = parsed
    return tail, marker


class Store(LocalObjects):
    """A ``LocalObjects`` whose puts raise ``error`` from the ``fail_at``-th on (1-based);
    ``hold`` makes every put wait until it is set."""

    def __init__(self, root: Path, *, fail_at: int = 0, error: BaseException | None = None):
        super().__init__(root)
        self.fail_at, self.error = fail_at, error
        self.puts: list[str] = []
        self.hold: threading.Event | None = None

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        if self.hold is not None:
            self.hold.wait(10)
        self.puts.append(key)
        if self.fail_at and len(self.puts) >= self.fail_at and self.error is not None:
            raise self.error
        return super().put(key, data, create=create, if_match=if_match)


def use_store(monkeypatch: pytest.MonkeyPatch, store: LocalObjects) -> None:
    """Make the recorder open ``store`` for its root."""
    monkeypatch.setattr(recorder_module, "open_objects", lambda root: store)


def segmented(root: Path, **options: Any) -> ProcessRecorder:
    """A fake-GPU recorder in the segmented layout, cutting every 16 events."""
    options.setdefault("writer_options", {"segment_events": 16})
    return recorder(root, layout="segmented", **options)


def run(rec: ProcessRecorder, requests: int = 100) -> None:
    """Enter, measure a baseline and a window of ``requests`` requests, leave."""
    with rec:
        rec.baseline(power_w=55.0)
        with rec.window():
            for _ in range(requests):
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8, ttft_ms=2.0)


class TestSegmentedRun:
    """A run writes segments and a version-2 marker that the readers accept."""

    def test_segments_and_a_valid_marker(self, tmp_path: Path) -> None:
        """Several segments, a v2 marker over them, no appended log; the check says complete."""
        rec = segmented(tmp_path)
        run(rec)
        assert isinstance(rec.marker, SegmentedMarker)
        assert rec.log_path == f"{tmp_path}/raw/{EXP}/process_0.segments/"
        assert not (tmp_path / "raw" / EXP / "process_0.events.jsonl").exists()
        files = segment_files(tmp_path)
        assert len(files) >= 6
        tail, marker = read_back(tmp_path)
        assert marker == rec.marker
        assert [s.bytes for s in marker.segments] == [f.stat().st_size for f in files]
        assert tail.error is None and tail.cursor.state.finished
        assert tail.cursor.state.requests == 100
        assert tail.cursor.lines == marker.final_seq + 1
        evidence = segment_evidence(tail, 0, marker, None)
        report = check_completeness(EXP, [evidence])
        assert report.is_complete, report.reasons

    def test_clock_events_carry_no_filesystem_offset(self, tmp_path: Path) -> None:
        """A segment has no mtime to time a write against: no ``fs_offset_sec`` anywhere."""
        rec = segmented(tmp_path)
        run(rec, requests=3)
        lines = b"".join(f.read_bytes() for f in segment_files(tmp_path)).splitlines()
        clocks = [e for e in map(orjson.loads, lines) if e["type"] == "clock"]
        assert clocks and not any("fs_offset_sec" in c for c in clocks)

    def test_environment_variable_picks_the_layout(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``ENERGY_LEDGER_LAYOUT=segmented`` for a folder; an unknown value is refused."""
        monkeypatch.setenv("ENERGY_LEDGER_LAYOUT", "segmented")
        rec = recorder(tmp_path)
        assert rec.log_layout == "segmented"
        run(rec, requests=2)
        assert segment_files(tmp_path) and marker_path(tmp_path).exists()
        assert recorder(tmp_path / "b", layout="appended").log_layout == "appended"
        monkeypatch.setenv("ENERGY_LEDGER_LAYOUT", "zip")
        with pytest.raises(LedgerError, match="unknown log layout 'zip'"):
            recorder(tmp_path / "c")

    def test_from_env_reads_the_layout_from_its_environ(self, tmp_path: Path) -> None:
        """``from_env(environ=...)`` takes the layout from that mapping too."""
        environ = {"ENERGY_LEDGER_LAYOUT": "segmented", "ENERGY_LEDGER_RUN_ID": "r"}
        rec = ProcessRecorder.from_env(tmp_path, EXP, environ=environ, nvml=FakeNvml(1))
        assert rec.log_layout == "segmented"

    def test_a_bucket_cannot_take_the_appended_layout(self) -> None:
        """A URL root is segmented by default, and ``appended`` is refused for it."""
        launch = LaunchInfo(0, 1, 0, "run-1", "0")
        url = "s3://bucket/root"
        rec = ProcessRecorder(url, EXP, launch=launch, nvml=FakeNvml(1))
        assert rec.log_layout == "segmented" and rec.layout is None
        assert rec.log_path == f"{url}/raw/{EXP}/process_0.segments/"
        with pytest.raises(LedgerError, match="cannot append"):
            ProcessRecorder(url, EXP, launch=launch, nvml=FakeNvml(1), layout="appended")

    def test_a_peer_with_another_run_id_is_refused(self, tmp_path: Path) -> None:
        """Another rank's first segment names another run: this rank refuses to start."""
        peer = ProcessRecorder(
            tmp_path,
            EXP,
            launch=LaunchInfo(1, 2, 1, "other-run", "1"),
            nvml=FakeNvml(2),
            snapshot_packages=False,
            layout="segmented",
        )
        run(peer, requests=1)
        with pytest.raises(LedgerError, match="belongs to run 'other-run'"):
            segmented(tmp_path, world=2).start()

    def test_an_existing_process_is_refused(self, tmp_path: Path) -> None:
        """A second run for the same process, after the first wrote: refused at the start."""
        run(segmented(tmp_path), requests=1)
        with pytest.raises(LedgerError, match="already exists"):
            segmented(tmp_path).start()


def normalised(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events (changed in place) without what differs between two runs of the same calls:
    the host's clock readings in ``clock`` events (and the filesystem offset, which only a
    file has), and the wall times the snapshot and the baseline were taken at."""
    for event in events:
        if event["type"] == "clock":
            for name in ("monotonic_sec", "wall_t", "fs_offset_sec", "fs_offset_error_sec"):
                event.pop(name, None)
        event.pop("measured_at", None)
        event.get("environment", {}).get("hardware", {}).pop("collected_at", None)
    return events


class TestSameEventsAsTheAppendedLog:
    """The segments, end to end, hold the events the appending layout writes for the same calls."""

    def test_same_calls_same_events(self, tmp_path: Path) -> None:
        """Same fixed clock, no background samples: the same events, line for line."""

        def one_run(root: Path, layout: str) -> ProcessRecorder:
            clock = ticking_clock(2_000_000_000.0, 0.001)
            rec = ProcessRecorder(
                root,
                EXP,
                launch=LaunchInfo(0, 1, 0, "run-1", "0"),
                nvml=FakeNvml(1, clock=clock),
                clock=clock,
                sample_hz=0.01,  # the sampler's first reading would come in 100 s
                snapshot_packages=False,
                layout=layout,  # type: ignore[arg-type]
                writer_options={"segment_events": 7} if layout == "segmented" else None,
            )
            with rec:
                rec.baseline(power_w=50.0)
                with rec.window():
                    for k in range(40):
                        rec.request(latency_ms=1.0 + k, input_tokens=k, output_tokens=2 * k)
                rec.warning("done")
            return rec

        appended = one_run(tmp_path / "a", "appended")
        segmented_rec = one_run(tmp_path / "b", "segmented")
        log = read_events(appended.log_path)
        joined = b"".join(f.read_bytes() for f in segment_files(tmp_path / "b"))
        assert len(segment_files(tmp_path / "b")) > 5
        assert normalised([orjson.loads(line) for line in joined.splitlines()]) == normalised(log)
        assert segmented_rec.marker is not None and appended.marker is not None
        assert segmented_rec.marker.final_seq == appended.marker.final_seq


class TestPutFailure:
    """A put that fails mid-run: the run goes on, the process is not recorded, no marker."""

    @pytest.mark.parametrize(
        "error",
        [
            OSError(errno.ENOSPC, "No space left on device"),
            LedgerError("cannot put s3://b/root/raw/exp/x: GenericError: 503 Service Unavailable"),
        ],
        ids=["full-disk", "bucket-refused"],
    )
    def test_request_never_raises_and_no_marker(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        error: BaseException,
    ) -> None:
        """The third put fails: every request returns, one error is logged, ``finish()``
        returns ``None``, nothing is put after the failure and no marker is written."""
        store = Store(tmp_path, fail_at=3, error=error)
        use_store(monkeypatch, store)
        rec = segmented(tmp_path, clock_interval_sec=3600)
        with rec:
            with rec.window():
                for _ in range(300):
                    rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
                rec.warning("still here")
            assert rec.finish() is None
        assert rec.marker is None and not marker_path(tmp_path).exists()
        assert rec.write_error is not None and rec.log_path in rec.write_error
        reason = "No space left on device" if isinstance(error, OSError) else "503"
        assert reason in rec.write_error
        assert len(store.puts) == 3 and len(segment_files(tmp_path)) == 2
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "NOT recorded" in errors[0].getMessage()

    def test_a_bug_in_the_store_still_raises(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A put that raises something other than a storage error is not swallowed."""
        use_store(monkeypatch, Store(tmp_path, fail_at=1, error=TypeError("a bug")))
        with pytest.raises(TypeError, match="a bug"):
            run(segmented(tmp_path), requests=5)
        assert not marker_path(tmp_path).exists()

    def test_requests_do_not_wait_for_puts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While every put is held back, the window's requests all return (the puts run on
        the uploader); ``finish()`` then puts the segments and the marker."""
        store = Store(tmp_path)
        store.hold = threading.Event()
        use_store(monkeypatch, store)
        rec = segmented(tmp_path)
        with rec.start().window():
            for _ in range(100):
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
        assert store.puts == [] and rec.write_error is None  # about 7 cuts waiting
        store.hold.set()
        marker = rec.finish()
        assert isinstance(marker, SegmentedMarker) and len(marker.segments) >= 7
        assert store.puts[-1] == marker_key(EXP, 0)


class TestTwoRecordersForOneProcess:
    """Two recorders for one process index: the conditional creates let only one be recorded."""

    def test_the_second_loses_at_its_first_segment(self, tmp_path: Path) -> None:
        """Both start before either puts; the first finishes; the second's segment 0 is
        refused, so it is not recorded, and the first's marker stays valid."""
        first, second = segmented(tmp_path), segmented(tmp_path)
        first.start()
        second.start()
        for rec in (first, second):
            with rec.window():
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
        assert first.finish() is not None
        assert second.finish() is None
        assert second.write_error is not None and "another writer" in second.write_error
        tail, marker = read_back(tmp_path)
        assert marker == first.marker and tail.read == list(marker.segments)
        assert check_completeness(EXP, [segment_evidence(tail, 0, marker, None)]).is_complete

    def test_the_second_marker_create_is_refused(self, tmp_path: Path) -> None:
        """Another writer's marker appears while this one runs: its own marker create is
        refused, it is not recorded, and the marker there is left as it was."""
        rec = segmented(tmp_path)
        with rec.start().window():
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
        theirs = b'{"v":2,"theirs":true}\n'
        LocalObjects(tmp_path).put(marker_key(EXP, 0), theirs, create=True)
        assert rec.finish() is None
        assert rec.write_error is not None and "the marker" in rec.write_error
        assert "already exists" in rec.write_error
        assert marker_path(tmp_path).read_bytes() == theirs
        assert segment_files(tmp_path)  # its segments landed; only the marker was refused
