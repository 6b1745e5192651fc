"""LocalObjects: the ``ObjectStore`` contract on a folder, and what only a folder can get
wrong (links, temp files, the lock file, processes racing ``link(2)``)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.store.objects import (
    LOCK_NAME,
    LocalObjects,
    ObjectNotFound,
    PreconditionFailed,
    check_key,
    is_url,
    open_objects,
)
from tests.store.objects_contract import RACERS, UNSAFE_KEYS, ObjectStoreContract


class TestLocalObjectsContract(ObjectStoreContract):
    """The shared contract, on a temporary folder."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalObjects:
        return LocalObjects(tmp_path / "root")


class TestKeys:
    """``check_key`` and how a root is opened."""

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe(self, key: str) -> None:
        """Empty parts, dot parts, absolute keys, backslashes and NUL are refused."""
        with pytest.raises(UnsafePathError):
            check_key(key)

    @pytest.mark.parametrize("key", ["a", "raw/exp-1/process_0.events.jsonl", ".hidden/x", "a..b"])
    def test_safe(self, key: str) -> None:
        """Ordinary relative keys pass unchanged."""
        assert check_key(key) == key

    @pytest.mark.parametrize(
        ("root", "url"),
        [
            ("s3://b/p", True),
            ("gs://b", True),
            ("az://c/p", True),
            ("/data/r", False),
            ("s3:/b", False),
            (Path("s3://b"), False),
        ],
    )
    def test_is_url(self, root: str | Path, url: bool) -> None:
        """Only a string with a bucket scheme is a bucket."""
        assert is_url(root) is url

    def test_open_objects_on_a_path(self, tmp_path: Path) -> None:
        """A path opens as a folder."""
        store = open_objects(tmp_path)
        assert isinstance(store, LocalObjects)
        assert store.url == str(tmp_path)


class TestLinksAndStrays:
    """A folder may hold what a bucket cannot: links, temp files, the lock file."""

    def test_symlinked_folder_is_refused(self, tmp_path: Path) -> None:
        """A key through a linked folder is refused by every operation, and the link's
        target is neither listed nor written."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(b"s")
        store = LocalObjects(tmp_path / "root")
        store.put("real/x", b"x")
        (tmp_path / "root" / "link").symlink_to(outside)
        for call in (
            lambda: store.put("link/new", b"x"),
            lambda: store.put("link/new", b"x", create=True),
            lambda: store.get("link/secret"),
            lambda: store.head("link/secret"),
            lambda: store.delete("link/secret"),
        ):
            with pytest.raises(UnsafePathError):
                call()
        assert [info.key for info in store.list()] == ["real/x"]
        assert store.list("link/") == []
        assert sorted(p.name for p in outside.iterdir()) == ["secret"]

    def test_symlinked_file_is_refused(self, tmp_path: Path) -> None:
        """A link at a key's own path is not an object: not listed, not read."""
        (tmp_path / "target").write_bytes(b"t")
        store = LocalObjects(tmp_path / "root")
        store.put("x", b"x")
        (tmp_path / "root" / "ln").symlink_to(tmp_path / "target")
        assert [info.key for info in store.list()] == ["x"]
        with pytest.raises(UnsafePathError):
            store.head("ln")
        with pytest.raises(LedgerError):
            store.get("ln")

    def test_temp_and_lock_files_are_never_listed(self, tmp_path: Path) -> None:
        """The lock file (made by ``if_match``) and a temp file left by a crash stay out of
        every listing."""
        store = LocalObjects(tmp_path)
        etag = store.put("a/k", b"1").etag
        store.put("a/k", b"2", if_match=etag)
        store.delete("gone")
        (tmp_path / "a" / ".k.abc123.tmp").write_bytes(b"half")
        (tmp_path / ".top.xyz.tmp").write_bytes(b"half")
        assert (tmp_path / LOCK_NAME).exists()
        assert [info.key for info in store.list()] == ["a/k"]
        assert [info.key for info in store.list("a/")] == ["a/k"]
        assert [p.name for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")] == [
            ".k.abc123.tmp"
        ]

    def test_no_temp_file_is_left(self, tmp_path: Path) -> None:
        """Neither a winning nor a losing conditional write leaves a temp file."""
        store = LocalObjects(tmp_path)
        store.put("k", b"1", create=True)
        with pytest.raises(PreconditionFailed):
            store.put("k", b"2", create=True)
        with pytest.raises(PreconditionFailed):
            store.put("k", b"3", if_match="nope")
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "k"]

    def test_rewriting_the_same_bytes_changes_the_etag(self, tmp_path: Path) -> None:
        """A folder's ETag names the write, not the content (unlike an MD5 ETag)."""
        store = LocalObjects(tmp_path)
        first = store.put("k", b"same")
        second = store.put("k", b"same", if_match=first.etag)
        assert second.etag != first.etag

    def test_a_folder_is_no_object(self, tmp_path: Path) -> None:
        """A key naming a folder has no object, as in a bucket; deleting it does nothing."""
        store = LocalObjects(tmp_path)
        store.put("dir/x", b"x")
        assert store.head("dir") is None
        with pytest.raises(ObjectNotFound):
            store.get("dir")
        store.delete("dir")
        assert store.get("dir/x") == b"x"

    def test_a_file_where_a_folder_is_needed(self, tmp_path: Path) -> None:
        """Under a file no object exists, and writing there is a ``LedgerError``, not a bare
        ``OSError``."""
        store = LocalObjects(tmp_path)
        store.put("f", b"x")
        assert store.head("f/x") is None
        with pytest.raises(ObjectNotFound):
            store.get("f/x")
        with pytest.raises(LedgerError, match="cannot write"):
            store.put("f/x", b"y")
        assert store.list("f/") == []


def _claim(root: str, key: str, racer: int, start: Any, results: Any) -> None:
    """One process of the race: wait until every racer is ready, then create ``key``."""
    start.wait()
    try:
        LocalObjects(Path(root)).put(key, f"process {racer}".encode(), create=True)
        won = True
    except PreconditionFailed:
        won = False
    results.put((racer, won))


class TestProcesses:
    """``create`` rests on ``link(2)``, which is atomic across processes, not only threads."""

    def test_racing_processes_have_one_winner(self, tmp_path: Path) -> None:
        """Of 8 processes creating one key at once, exactly one wins, and its body stays."""
        # fork is fast (nothing to import again) but is deprecated in a process with other
        # threads alive (Python >= 3.12 warns, and warnings are errors here).
        ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
        start = ctx.Barrier(RACERS)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_claim, args=(str(tmp_path), "claim", i, start, results))
            for i in range(RACERS)
        ]
        for proc in procs:
            proc.start()
        outcome = dict(results.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(timeout=60)
            assert proc.exitcode == 0
        winners = [racer for racer, won in outcome.items() if won]
        assert len(winners) == 1
        assert (tmp_path / "claim").read_bytes() == f"process {winners[0]}".encode()
        assert sorted(os.listdir(tmp_path)) == ["claim"]
