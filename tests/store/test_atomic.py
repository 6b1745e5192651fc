"""Tests for energy_ledger.store.atomic: atomic, durable replacement of small files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import fsync_dir, write_atomic, write_if_changed


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class TestWriteAtomic:
    """``write_atomic`` replaces a file's whole content or leaves it untouched."""

    def test_creates_a_new_file(self, tmp_path: Path) -> None:
        """Writing a new path creates it with exactly the bytes given, and nothing else."""
        target = tmp_path / "out.json"
        write_atomic(target, b'{"a": 1}\n')
        assert target.read_bytes() == b'{"a": 1}\n'
        assert _names(tmp_path) == ["out.json"]

    def test_replaces_existing_content(self, tmp_path: Path) -> None:
        """Writing over an existing file replaces all of its content, even when shorter."""
        target = tmp_path / "out.json"
        target.write_bytes(b"a much longer old content\n")
        write_atomic(target, b"new\n")
        assert target.read_bytes() == b"new\n"
        assert _names(tmp_path) == ["out.json"]

    def test_creates_missing_folders(self, tmp_path: Path) -> None:
        """Missing parent folders are created."""
        target = tmp_path / "aggregated" / "deep" / "x.json"
        write_atomic(target, b"x")
        assert target.read_bytes() == b"x"

    def test_writes_empty_content(self, tmp_path: Path) -> None:
        """Empty content gives an empty file."""
        target = tmp_path / "empty"
        target.write_bytes(b"old")
        write_atomic(target, b"")
        assert target.read_bytes() == b""

    def test_folder_that_is_a_file(self, tmp_path: Path) -> None:
        """A parent that is a regular file raises ``LedgerError`` naming the target."""
        blocker = tmp_path / "aggregated"
        blocker.write_bytes(b"i am a file")
        target = blocker / "exp.json"
        with pytest.raises(LedgerError, match=re.escape(f"cannot write {target}")):
            write_atomic(target, b"x")
        assert blocker.read_bytes() == b"i am a file"
        assert _names(tmp_path) == ["aggregated"]

    def test_failed_rename_keeps_the_old_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failed rename keeps the old content, leaves no temp file and names the file."""
        target = tmp_path / "results.csv"
        target.write_bytes(b"old,content\n")

        def broken_replace(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(LedgerError) as info:
            write_atomic(target, b"new,content\n")
        assert str(target) in str(info.value)
        assert "No space left on device" in str(info.value)
        assert isinstance(info.value.__cause__, OSError)
        assert target.read_bytes() == b"old,content\n"
        assert _names(tmp_path) == ["results.csv"]

    def test_failed_fsync_keeps_the_old_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When flushing the temp file to disk fails, nothing is replaced and nothing is left."""
        target = tmp_path / "exp.json"
        target.write_bytes(b"old")

        def broken_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(LedgerError, match=r"exp\.json"):
            write_atomic(target, b"new")
        assert target.read_bytes() == b"old"
        assert _names(tmp_path) == ["exp.json"]

    def test_replaces_a_new_inode(self, tmp_path: Path) -> None:
        """The new content arrives by rename (a new inode), not by rewriting the old file."""
        target = tmp_path / "out"
        target.write_bytes(b"old")
        held = target.open("rb")
        try:
            write_atomic(target, b"new")
            assert held.read() == b"old"
        finally:
            held.close()
        assert target.read_bytes() == b"new"


class TestWriteIfChanged:
    """``write_if_changed`` skips writes that would change nothing."""

    def test_writes_a_missing_file(self, tmp_path: Path) -> None:
        """A missing file is written, and the call says so."""
        target = tmp_path / "x.json"
        assert write_if_changed(target, b"abc") is True
        assert target.read_bytes() == b"abc"

    def test_equal_content_is_not_rewritten(self, tmp_path: Path) -> None:
        """Equal content returns False and leaves the very same file in place."""
        target = tmp_path / "x.json"
        write_atomic(target, b"abc")
        inode = target.stat().st_ino
        assert write_if_changed(target, b"abc") is False
        assert target.stat().st_ino == inode

    def test_different_content_is_written(self, tmp_path: Path) -> None:
        """Different content is written and returns True."""
        target = tmp_path / "x.json"
        target.write_bytes(b"abc")
        assert write_if_changed(target, b"abd") is True
        assert target.read_bytes() == b"abd"


class TestFsyncDir:
    """``fsync_dir`` never fails on folders it cannot open."""

    def test_existing_folder(self, tmp_path: Path) -> None:
        """An existing folder is synced without error."""
        fsync_dir(tmp_path)

    def test_missing_folder_is_a_no_op(self, tmp_path: Path) -> None:
        """A folder that does not exist is ignored rather than raising."""
        fsync_dir(tmp_path / "missing")
