"""Tests for the reader on hostile and half-written inputs: FIFOs, holes, huge sizes (issue 10).

Everything here uses real files under ``tmp_path``. A test that could hang if the reader
regressed (a FIFO opened blocking) runs under ``deadline``, which turns a hang into a failure.
"""

from __future__ import annotations

import os
import signal
import types
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from energy_ledger.core.completeness import MAX_PROCESSES
from energy_ledger.simulate import simulate
from energy_ledger.store.files import open_regular, read_regular
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.reader import (
    MAX_MARKER_BYTES,
    LogTail,
    folder_fingerprint,
    scan_experiment,
)

LOG = "process_0.events.jsonl"
MARKER = "process_0.done"


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging the suite) when the test body runs longer than 20 s."""

    def expired(signum: int, frame: types.FrameType | None) -> None:
        raise TimeoutError("the reader blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def experiment(tmp_path: Path, processes: int = 2, requests: int = 20) -> Path:
    """A complete experiment written by the ledger's writer; returns its folder."""
    simulate(tmp_path, experiments=1, processes=processes, requests=requests, prefix="exp")
    return tmp_path / "raw" / "exp-0000"


def reasons(folder: Path) -> str:
    """Every reason of a fresh scan, in one string."""
    return " | ".join(scan_experiment(folder).report.reasons)


class TestRegularFilesOnly:
    """Only regular files are opened, without blocking; anything else is reported by name."""

    def test_fifo_as_log_is_reported_not_opened(self, tmp_path: Path, deadline: None) -> None:
        """A FIFO named like a log: the scan returns at once and names the file and its kind."""
        folder = experiment(tmp_path)
        (folder / LOG).unlink()
        os.mkfifo(folder / LOG)
        scan = scan_experiment(folder)
        assert scan.report.state == "invalid"
        assert f"{LOG}: cannot read: it is a FIFO (named pipe)" in " ".join(scan.report.reasons)

    def test_fifo_as_marker_is_reported(self, tmp_path: Path, deadline: None) -> None:
        """A FIFO named like a marker makes that marker unusable, naming it."""
        folder = experiment(tmp_path)
        (folder / MARKER).unlink()
        os.mkfifo(folder / MARKER)
        scan = scan_experiment(folder)
        assert scan.report.state == "invalid"
        assert f"cannot read {MARKER}: it is a FIFO" in " ".join(scan.report.reasons)

    def test_fifo_as_older_result_is_reported(self, tmp_path: Path, deadline: None) -> None:
        """LLenergyMeasure's ``process_<i>.json`` is read with the same rules."""
        folder = tmp_path / "raw" / "old"
        folder.mkdir(parents=True)
        os.mkfifo(folder / "process_0.json")
        (folder / ".completed_0").touch()
        assert "process_0.json: cannot read: it is a FIFO" in reasons(folder)

    def test_folder_named_like_a_log(self, tmp_path: Path) -> None:
        """A folder where the log should be is refused with what it is."""
        folder = experiment(tmp_path)
        (folder / LOG).unlink()
        (folder / LOG).mkdir()
        assert f"{LOG}: cannot read: it is a folder, not a regular file" in reasons(folder)

    def test_a_log_that_vanished_is_named(self, tmp_path: Path) -> None:
        """The message of an unreadable log names the file."""
        folder = experiment(tmp_path)
        tail = LogTail(folder / LOG)
        assert tail.refresh()
        (folder / LOG).unlink()
        tail.refresh()
        assert tail.error == f"{LOG}: the log vanished"

    def test_unreadable_log_is_named(self, tmp_path: Path) -> None:
        """A log without read permission: the message names it and says why."""
        if os.geteuid() == 0:
            pytest.skip("root reads files without read permission")
        folder = experiment(tmp_path)
        (folder / LOG).chmod(0)
        assert f"{LOG}: cannot read: Permission denied" in reasons(folder)

    def test_io_error_is_retried_not_latched(self, tmp_path: Path, deadline: None) -> None:
        """A FIFO replaced by the real log: the same tail reads it on its next refresh."""
        folder = experiment(tmp_path)
        data = (folder / LOG).read_bytes()
        (folder / LOG).unlink()
        os.mkfifo(folder / LOG)
        tails: dict[int, LogTail] = {}
        assert scan_experiment(folder, tails=tails).report.state == "invalid"
        (folder / LOG).unlink()
        (folder / LOG).write_bytes(data)
        assert scan_experiment(folder, tails=tails).report.is_complete

    def test_name_that_became_a_link_is_refused(self, tmp_path: Path) -> None:
        """A tail for a plain file does not follow a link put in its place (``O_NOFOLLOW``)."""
        folder = experiment(tmp_path)
        outside = tmp_path / "elsewhere.jsonl"
        (folder / LOG).rename(outside)
        (folder / LOG).symlink_to(outside)
        tail = LogTail(folder / LOG)
        tail.refresh()
        assert (
            tail.error == f"{LOG}: cannot read: it is a symbolic link, not a regular file; not read"
        )
        with pytest.raises(OSError, match="symbolic link"):
            open_regular(folder / LOG)

    def test_link_inside_the_root_is_followed(self, tmp_path: Path) -> None:
        """A log that is a link to a file inside the root is read (docs/format.md §1)."""
        folder = experiment(tmp_path)
        kept = tmp_path / "raw" / "kept.jsonl"
        (folder / LOG).rename(kept)
        (folder / LOG).symlink_to(kept)
        assert scan_experiment(folder).report.is_complete

    def test_huge_marker_is_not_read_whole(self, tmp_path: Path) -> None:
        """A marker file over 64 KiB is refused; at most the limit plus one byte is read."""
        folder = experiment(tmp_path)
        (folder / MARKER).write_bytes(b" " * (MAX_MARKER_BYTES + 1))
        assert f"cannot read {MARKER}: larger than 65,536 bytes" in reasons(folder)
        with pytest.raises(OSError, match="larger than 10 bytes"):
            read_regular(folder / MARKER, 10)


def _hole(path: Path, start: int, end: int) -> bytes:
    """Rewrite ``path`` with bytes ``[start, end)`` left as a hole (NULs); return them."""
    data = path.read_bytes()
    with open(path, "wb") as fh:
        fh.write(data[:start])
        fh.seek(end)
        fh.write(data[end:])
    assert path.read_bytes()[start:end] == b"\0" * (end - start)
    return data[start:end]


def _fill(path: Path, start: int, data: bytes) -> None:
    """Write ``data`` in place at ``start`` (the file keeps its size)."""
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(data)


class TestTransientHoles:
    """NULs where a write has not landed yet are read again, until a marker covers them."""

    def _holed(self, tmp_path: Path) -> tuple[Path, int, bytes, bytes]:
        """An experiment whose process 0 log has a hole in the middle and no marker yet."""
        folder = experiment(tmp_path, requests=200)
        marker = (folder / MARKER).read_bytes()
        (folder / MARKER).unlink()
        size = (folder / LOG).stat().st_size
        start = size // 3
        missing = _hole(folder / LOG, start, start + 5000)
        return folder, start, missing, marker

    def test_hole_is_pending_then_complete_once_filled(self, tmp_path: Path) -> None:
        """The same tails (the daemon's) say pending, then complete after the fill in place."""
        folder, start, missing, marker = self._holed(tmp_path)
        tails: dict[int, LogTail] = {}
        scan = scan_experiment(folder, tails=tails)
        assert scan.report.state == "pending"
        why = " ".join(scan.report.reasons)
        assert "process 0 log cannot be read further yet" in why
        assert f"{LOG}:" in why and "read again later" in why
        before = os.stat(folder / LOG)
        _fill(folder / LOG, start, missing)
        (folder / MARKER).write_bytes(marker)
        assert os.stat(folder / LOG).st_size == before.st_size
        assert scan_experiment(folder, tails=tails).report.is_complete
        assert scan_experiment(folder).report.is_complete

    def test_fill_seen_even_when_stat_shows_no_change(self, tmp_path: Path) -> None:
        """A filled hole is read although size, mtime and ctime look as before (coarse clocks).

        The kernel always moves ctime on a write, so the tail is told the file's new stamp,
        as a filesystem with one-second timestamps would show it.
        """
        folder, start, missing, marker = self._holed(tmp_path)
        tails: dict[int, LogTail] = {}
        scan_experiment(folder, tails=tails)
        _fill(folder / LOG, start, missing)
        st = os.stat(folder / LOG)
        tails[0].stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        (folder / MARKER).write_bytes(marker)
        assert scan_experiment(folder, tails=tails).report.is_complete

    def test_marker_over_the_hole_makes_it_final(self, tmp_path: Path) -> None:
        """Once a marker covers the bad bytes they are corrupt: invalid, and it stays so."""
        folder, start, missing, marker = self._holed(tmp_path)
        tails: dict[int, LogTail] = {}
        scan_experiment(folder, tails=tails)
        (folder / MARKER).write_bytes(marker)
        scan = scan_experiment(folder, tails=tails)
        assert scan.report.state == "invalid"
        assert "process 0 log cannot be replayed" in " ".join(scan.report.reasons)
        _fill(folder / LOG, start, missing)
        assert scan_experiment(folder, tails=tails).report.state == "invalid"
        assert tails[0].latched

    def test_bad_line_without_nul_is_invalid_at_once_but_read_again(self, tmp_path: Path) -> None:
        """A corrupt line no marker covers is reported invalid, yet a fix in place is seen."""
        folder = experiment(tmp_path)
        (folder / MARKER).unlink()
        lines = (folder / LOG).read_bytes().split(b"\n")
        good = lines[5]
        lines[5] = b"{" + b"x" * (len(good) - 1)
        (folder / LOG).write_bytes(b"\n".join(lines))
        tails: dict[int, LogTail] = {}
        scan = scan_experiment(folder, tails=tails)
        assert scan.report.state == "invalid"
        assert f"{LOG}:6: line is not valid JSON" in " ".join(scan.report.reasons)
        lines[5] = good
        (folder / LOG).write_bytes(b"\n".join(lines))
        assert "cannot be replayed" not in " ".join(
            scan_experiment(folder, tails=tails).report.reasons
        )

    def test_newer_version_is_final_at_once(self, tmp_path: Path) -> None:
        """A line of a newer format is no passing hole: latched at once."""
        folder = experiment(tmp_path)
        (folder / MARKER).unlink()
        with open(folder / LOG, "ab") as fh:
            fh.write(b'{"v":9,"seq":999,"t":1,"type":"x"}\n')
        tail = LogTail(folder / LOG)
        tail.refresh()
        assert tail.latched and tail.error is not None and "upgrade" in tail.error


class TestSizesFromInput:
    """Sizes read from input are bounded before anything is built from them."""

    def _started(self, folder: Path, world_size: int) -> None:
        folder.mkdir(parents=True)
        line = {
            "v": 1,
            "seq": 0,
            "t": 1.0,
            "type": "process_started",
            "experiment_id": folder.name,
            "run_id": "r",
            "process_index": 0,
            "world_size": world_size,
            "gpu_id": 0,
        }
        (folder / LOG).write_bytes(orjson.dumps(line) + b"\n")

    def test_world_size_of_a_trillion_is_invalid_with_a_reason(self, tmp_path: Path) -> None:
        """``world_size`` 10**12 gives one sentence, not a range of that size."""
        folder = tmp_path / "raw" / "huge"
        self._started(folder, 10**12)
        scan = scan_experiment(folder)
        assert scan.report.state == "invalid"
        assert (
            f"world size 1,000,000,000,000 is more than the {MAX_PROCESSES:,} processes"
            in " ".join(scan.report.reasons)
        )
        assert scan.report.missing_indices == [] and len(scan.report.marker_status) == 1

    def test_long_lists_of_indices_are_cut_in_messages(self, tmp_path: Path) -> None:
        """At the limit the indices are checked, but the message lists a few and the count."""
        folder = tmp_path / "raw" / "wide"
        self._started(folder, MAX_PROCESSES)
        report = scan_experiment(folder).report
        assert len(report.missing_indices) == MAX_PROCESSES - 1
        (expected,) = [r for r in report.reasons if r.startswith("expected")]
        assert expected.endswith("(missing [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, "
                                  "15, 16, 17, 18, 19, 20, ...] (65,535 in all))")  # fmt: skip


class TestFolderFingerprint:
    """What the daemon keeps of an experiment it no longer reads notices every change."""

    def test_changes_and_only_changes_move_it(self, tmp_path: Path) -> None:
        """Same files: same number; an append, a fill in place, a new file: a new one."""
        folder = experiment(tmp_path)
        root = ResultsLayout.at(tmp_path).root
        first = folder_fingerprint(folder, root)
        assert first is not None and folder_fingerprint(folder, root) == first
        with open(folder / LOG, "ab") as fh:
            fh.write(b"x")
        appended = folder_fingerprint(folder, root)
        assert appended != first
        _fill(folder / LOG, 0, (folder / LOG).read_bytes()[:1])
        assert folder_fingerprint(folder, root) != appended
        filled = folder_fingerprint(folder, root)
        (folder / "process_9.done").touch()
        assert folder_fingerprint(folder, root) != filled

    def test_missing_folder_has_none(self, tmp_path: Path) -> None:
        """A folder that cannot be listed has no fingerprint (it is never retired)."""
        assert folder_fingerprint(tmp_path / "nope", tmp_path) is None
