"""Tests of ``store.atomic.write_if_changed`` against what may already lie at the path.

A report page is rewritten only when its bytes change, so ``write_if_changed`` reads the old
file first. These tests put a FIFO, a longer file and an identical file there, with real files
and a real FIFO, and check that the write neither blocks nor skips a file it must replace.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from energy_ledger.store.atomic import write_if_changed

JOIN_TIMEOUT_SEC = 5.0


def _in_thread(path: Path, data: bytes) -> tuple[threading.Thread, list[object]]:
    """Run ``write_if_changed`` in a daemon thread; its return value or error lands in a list."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(write_if_changed(path, data))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT_SEC)
    return thread, outcome


def _release(fifo: Path) -> None:
    """Unblock a writer stuck opening ``fifo`` (only needed when the test already failed)."""
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class TestFifoAtThePath:
    """A FIFO where the file should be is replaced, never opened and waited on."""

    def test_returns_without_blocking_and_leaves_a_regular_file(self, tmp_path: Path) -> None:
        """No reader ever opens the FIFO, yet the call returns True within 5 s with the data."""
        target = tmp_path / "page.html"
        os.mkfifo(target)
        data = b"<!doctype html>\n<p>page</p>\n"
        thread, outcome = _in_thread(target, data)
        try:
            assert not thread.is_alive(), "write_if_changed blocked on a FIFO"
        finally:
            _release(target)
            thread.join(JOIN_TIMEOUT_SEC)
        assert outcome == [True]
        assert stat.S_ISREG(os.lstat(target).st_mode)
        assert target.read_bytes() == data
        assert _names(tmp_path) == ["page.html"]  # no temp file left behind

    def test_empty_data_over_a_fifo(self, tmp_path: Path) -> None:
        """Even empty content (a read bound of 0 bytes) replaces the FIFO with an empty file."""
        target = tmp_path / "empty"
        os.mkfifo(target)
        thread, outcome = _in_thread(target, b"")
        try:
            assert not thread.is_alive(), "write_if_changed blocked on a FIFO"
        finally:
            _release(target)
            thread.join(JOIN_TIMEOUT_SEC)
        assert outcome == [True]
        assert stat.S_ISREG(os.lstat(target).st_mode)
        assert target.read_bytes() == b""


class TestExistingFile:
    """An existing regular file is kept only when it holds exactly the new bytes."""

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            (b"same prefix, and then some more bytes", b"same prefix"),
            (b"same prefix", b"same prefix, and then some more bytes"),
            (b"x", b""),
            (b"", b"x"),
            (b"abc", b"abd"),
        ],
        ids=["longer-old", "shorter-old", "empty-new", "empty-old", "same-length"],
    )
    def test_different_content_is_replaced(self, tmp_path: Path, old: bytes, new: bytes) -> None:
        """A file that differs (longer with the same prefix, shorter, same length) is rewritten."""
        target = tmp_path / "out.html"
        target.write_bytes(old)
        assert write_if_changed(target, new) is True
        assert target.read_bytes() == new
        assert _names(tmp_path) == ["out.html"]

    @pytest.mark.parametrize("data", [b"", b"<html>identical</html>\n" * 100])
    def test_identical_content_is_not_rewritten(self, tmp_path: Path, data: bytes) -> None:
        """The same bytes: False, and the very same file (inode and mtime) stays in place."""
        target = tmp_path / "out.html"
        target.write_bytes(data)
        os.utime(target, ns=(1_000_000_000, 1_000_000_000))
        before = os.stat(target)
        assert write_if_changed(target, data) is False
        after = os.stat(target)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert target.read_bytes() == data

    def test_missing_file_is_created(self, tmp_path: Path) -> None:
        """No file yet: it is written, and True says so."""
        target = tmp_path / "new.html"
        assert write_if_changed(target, b"hello") is True
        assert target.read_bytes() == b"hello"

    def test_changed_file_gets_a_new_inode(self, tmp_path: Path) -> None:
        """A rewrite is an atomic replace (a new file renamed over the old), not an overwrite."""
        target = tmp_path / "out.html"
        target.write_bytes(b"old")
        inode = os.stat(target).st_ino
        keep = open(target, "rb")  # noqa: SIM115 - held open so the old inode cannot be reused
        try:
            assert write_if_changed(target, b"new") is True
            assert os.stat(target).st_ino != inode
            assert keep.read() == b"old"  # a reader of the old file still sees all of it
        finally:
            keep.close()
