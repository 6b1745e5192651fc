"""A full disk under the recorder (issue 10): the run goes on, the loss is loud, no marker.

In-process tests make ``os.write`` or ``os.fsync`` fail for the log's descriptor only; one test
runs a real recorder process whose file size limit (``RLIMIT_FSIZE``) stands in for a full disk,
so the kernel itself refuses the write.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.fake import FakeNvml
from energy_ledger.recorder.launch import LaunchInfo
from energy_ledger.recorder.recorder import ProcessRecorder
from energy_ledger.store.reader import scan_experiment
from tests.helpers import child_env

REAL_WRITE = os.write
REAL_FSYNC = os.fsync


def recorder(root: Path, **options: Any) -> ProcessRecorder:
    """A recorder on a fake GPU that flushes every event (so every append writes)."""
    return ProcessRecorder(
        root,
        "exp",
        launch=LaunchInfo(0, 1, 0, "run-1", "0"),
        nvml=FakeNvml(1),
        sample_hz=50.0,
        snapshot_packages=False,
        writer_options={"flush_every_events": 1},
        **options,
    )


def fail_writes_of(
    monkeypatch: pytest.MonkeyPatch,
    rec: ProcessRecorder,
    *,
    after: int = 0,
    code: int = errno.ENOSPC,
    only: Callable[[], bool] = lambda: True,
) -> list[int]:
    """Make writes to ``rec``'s log fail with ``code`` after ``after`` more succeed."""
    fd = rec._writer._fd  # type: ignore[union-attr]
    calls: list[int] = []

    def write(target: int, data: Any) -> int:
        if target == fd and only():
            calls.append(len(data))
            if len(calls) > after:
                raise OSError(code, os.strerror(code))
        return REAL_WRITE(target, data)

    monkeypatch.setattr(os, "write", write)
    return calls


def marker_of(rec: ProcessRecorder) -> Path:
    """Where ``rec``'s completion marker would be."""
    return Path(rec.log_path).with_name("process_0.done")


class TestFullDisk:
    """ENOSPC inside the measured loop never raises into it; the process is not recorded."""

    def test_request_does_not_raise_and_later_calls_do_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The loop runs to its end; one error is logged; no more writes are tried."""
        rec = recorder(tmp_path, clock_interval_sec=3600)
        with rec, rec.window():
            calls = fail_writes_of(monkeypatch, rec, after=3)
            for _ in range(100):
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
            rec.warning("still here")
            rec.event("compute", flops_total=1.0)
        assert len(calls) == 4  # three that landed, the one that failed, then nothing
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "NOT recorded" in errors[0].getMessage()
        assert "No space left on device" in errors[0].getMessage()
        assert rec.write_error is not None and rec.log_path in rec.write_error
        assert rec.marker is None and not marker_of(rec).exists()

    def test_finish_returns_none_and_the_experiment_is_not_complete(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``finish()`` writes no marker for a log with lost writes; the reader says why."""
        rec = recorder(tmp_path).start()
        with rec.window():
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
            fail_writes_of(monkeypatch, rec)
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
        monkeypatch.undo()
        assert rec.finish() is None
        assert not marker_of(rec).exists()
        report = scan_experiment(tmp_path / "raw" / "exp").report
        assert not report.is_complete and report.missing_markers == [0]

    def test_a_value_that_breaks_the_format_still_raises(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only disk failures are swallowed: a caller's bad value is still its error."""
        rec = recorder(tmp_path)
        with rec, rec.window():
            fail_writes_of(monkeypatch, rec)
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
            with pytest.raises(LedgerError, match="input_tokens"):
                rec.request(latency_ms=10.0, input_tokens=-1, output_tokens=8)

    def test_the_closed_descriptor_is_never_written_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the loss the log's descriptor is closed; a file that reuses it stays empty."""
        rec = recorder(tmp_path)
        with rec, rec.window():
            fd = rec._writer._fd  # type: ignore[union-attr]
            fail_writes_of(monkeypatch, rec)
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
            monkeypatch.undo()
            other = os.open(tmp_path / "user-file", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                assert other == fd  # the lowest free number: the one the log had
                for _ in range(50):
                    rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
                rec.warning("more")
            finally:
                os.close(other)
        assert (tmp_path / "user-file").read_bytes() == b""

    def test_sampler_thread_failure_does_not_stop_the_loop(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails on the sampler thread loses the log; the caller sees nothing."""
        rec = recorder(tmp_path)
        main = threading.main_thread()
        with rec, rec.window():
            fail_writes_of(monkeypatch, rec, only=lambda: threading.current_thread() is not main)
            deadline = threading.Event()
            while rec.write_error is None and not deadline.wait(0.01):
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
            for _ in range(10):
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
        assert rec.write_error is not None and "No space left" in rec.write_error
        assert not marker_of(rec).exists()

    def test_eio_on_the_final_fsync_leaves_no_marker(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The last fsync fails (EIO): ``finish()`` returns None and writes no marker."""
        rec = recorder(tmp_path).start()
        with rec.window():
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8)
        fd = rec._writer._fd  # type: ignore[union-attr]

        def fsync(target: int) -> None:
            if target == fd:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            REAL_FSYNC(target)

        monkeypatch.setattr(os, "fsync", fsync)
        assert rec.finish() is None
        assert rec.write_error is not None and "Input/output error" in rec.write_error
        assert not marker_of(rec).exists()


WORKER = """
import resource, signal, sys
from energy_ledger.recorder.recorder import ProcessRecorder
root, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
rec = ProcessRecorder.from_env(root, "full", sample_hz=20.0, snapshot_packages=False,
                               writer_options={"flush_every_events": 16})
with rec:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    with rec.window():
        for i in range(5000):
            rec.request(latency_ms=10.0, input_tokens=5, output_tokens=7, itl_ms=[1.0] * 8)
print("loop done", i + 1, "marker", rec.marker, "error", rec.write_error is not None)
"""


@pytest.mark.slow
def test_a_real_process_over_its_file_size_limit_finishes_its_loop(tmp_path: Path) -> None:
    """The kernel refuses writes past 64 KiB: the loop ends, exit 0, loud log, no marker."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = child_env(ENERGY_LEDGER_NVML="fake", ENERGY_LEDGER_RUN_ID="full-run")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "results"), str(64 << 10)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "loop done 5000 marker None error True" in done.stdout
    assert done.stderr.count("NOT recorded") == 1, done.stderr
    assert "File too large" in done.stderr
    folder = tmp_path / "results" / "raw" / "full"
    assert not (folder / "process_0.done").exists()
    assert (folder / "process_0.events.jsonl").stat().st_size <= 64 << 10
    assert not scan_experiment(folder).report.is_complete
