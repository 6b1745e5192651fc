"""The ``ObjectStore`` contract, written once and run on every implementation.

``ObjectStoreContract`` holds the tests; a suite subclasses it and provides a ``store``
fixture (``tests/store/test_objects.py`` for a folder, ``tests/s3/test_bucket.py`` for a
bucket on SeaweedFS), so the two cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from energy_ledger.exceptions import UnsafePathError
from energy_ledger.store.objects import ObjectNotFound, ObjectStore, PreconditionFailed
from energy_ledger.store.probe import PROBE_PREFIX, probe_conditional_writes

RACERS = 8

UNSAFE_KEYS = [
    "",
    "..",
    "../x",
    "a/../b",
    ".",
    "a/./b",
    "/abs",
    "a/",
    "a//b",
    "a\\b",
    "a\0b",
]


def race(attempt: Callable[[int], object], racers: int = RACERS) -> list[bool]:
    """Run ``attempt(i)`` on ``racers`` threads released together; which ones won (did not
    raise ``PreconditionFailed``)."""
    barrier = threading.Barrier(racers)

    def run(i: int) -> bool:
        barrier.wait()
        try:
            attempt(i)
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(racers) as pool:
        return list(pool.map(run, range(racers)))


class ObjectStoreContract:
    """What every ``ObjectStore`` does; subclasses provide the ``store`` fixture."""

    def test_list_is_sorted_with_sizes_and_etags(self, store: ObjectStore) -> None:
        """``list`` returns every object, sorted by key, with the size and ETag ``head``
        gives."""
        for key in ["b", "a/2", "a/10", "ab", "a/1", "a/x/deep"]:
            store.put(key, key.encode())
        listed = store.list()
        assert [info.key for info in listed] == ["a/1", "a/10", "a/2", "a/x/deep", "ab", "b"]
        for info in listed:
            assert info.size == len(info.key)
            assert store.head(info.key) == info

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("a/", ["a/1", "a/10", "a/x/deep"]),
            ("a", ["a/1", "a/10", "a/x/deep", "ab"]),
            ("a/1", ["a/1", "a/10"]),
            ("a/x/", ["a/x/deep"]),
            ("a/x/d", ["a/x/deep"]),
            ("b", []),
            ("zz/", []),
            ("../", []),
        ],
    )
    def test_list_prefix_is_a_string_prefix(
        self, store: ObjectStore, prefix: str, expected: list[str]
    ) -> None:
        """A prefix matches the start of a key, not only whole folder names."""
        for key in ["a/1", "a/10", "a/x/deep", "ab"]:
            store.put(key, b"x")
        assert [info.key for info in store.list(prefix)] == expected

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("", ["a", "raw"]),
            ("raw/", ["e1", "e10", "e2"]),
            ("raw/e1/", ["p.segments"]),
            ("raw/e1/p.segments/", []),
            ("raw", []),  # not a folder prefix
            ("zz/", []),
            ("../", []),
        ],
    )
    def test_list_folders_names_one_level(
        self, store: ObjectStore, prefix: str, expected: list[str]
    ) -> None:
        """``list_folders`` gives the names one level below a folder prefix that hold objects,
        whatever lies deeper, and no object's own name."""
        keys = ["a/x", "top", "raw/e1/p.done", "raw/e1/p.segments/00000000.jsonl"]
        keys += ["raw/e10/p.done", "raw/e2/q/r/deep", "raw/loose"]
        for key in keys:
            store.put(key, b"x")
        assert store.list_folders(prefix) == expected

    def test_list_folders_pages(self, store: ObjectStore) -> None:
        """More folders than one listing page holds (1,000 on S3) are all listed."""
        names = [f"e{n:04d}" for n in range(1100)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda name: store.put(f"raw/{name}/p.done", b"x"), names))
        assert store.list_folders("raw/") == names

    def test_empty_store_lists_nothing(self, store: ObjectStore) -> None:
        """A store nothing was written to lists nothing and has no object."""
        assert store.list() == []
        assert store.head("nothing") is None
        with pytest.raises(ObjectNotFound):
            store.get("nothing")

    def test_put_returns_what_head_says(self, store: ObjectStore) -> None:
        """``put`` returns the new object's key, size and ETag."""
        info = store.put("x/y.json", b"hello")
        assert (info.key, info.size) == ("x/y.json", 5)
        assert store.head("x/y.json") == info

    @pytest.mark.parametrize(
        ("start", "expected"),
        [(0, b"0123456789"), (3, b"3456789"), (9, b"9"), (10, b""), (25, b"")],
    )
    def test_get_from_start(self, store: ObjectStore, start: int, expected: bytes) -> None:
        """``get`` returns the bytes from ``start`` on; nothing at or past the end."""
        store.put("log", b"0123456789")
        assert store.get("log", start) == expected

    def test_get_missing_raises(self, store: ObjectStore) -> None:
        """A missing object raises ``ObjectNotFound``, also with a start offset."""
        with pytest.raises(ObjectNotFound):
            store.get("missing", 4)

    def test_create_once(self, store: ObjectStore) -> None:
        """The first ``create`` writes; a second is refused and changes nothing."""
        first = store.put("claim", b"first", create=True)
        with pytest.raises(PreconditionFailed):
            store.put("claim", b"second", create=True)
        assert store.get("claim") == b"first"
        assert store.head("claim") == first

    def test_overwrite(self, store: ObjectStore) -> None:
        """A put without a condition replaces the object."""
        store.put("k", b"one")
        info = store.put("k", b"two!")
        assert store.get("k") == b"two!"
        assert info.size == 4

    def test_if_match_right_etag(self, store: ObjectStore) -> None:
        """``if_match`` with the current ETag writes and gives a new ETag."""
        first = store.put("lease", b"v1")
        second = store.put("lease", b"v2", if_match=first.etag)
        assert store.get("lease") == b"v2"
        assert second.etag != first.etag
        assert store.head("lease") == second

    def test_if_match_wrong_etag(self, store: ObjectStore) -> None:
        """``if_match`` with an ETag the object never had is refused."""
        store.put("lease", b"v1")
        with pytest.raises(PreconditionFailed):
            store.put("lease", b"v2", if_match='"0123456789abcdef0123456789abcdef"')
        assert store.get("lease") == b"v1"

    def test_if_match_stale_etag(self, store: ObjectStore) -> None:
        """``if_match`` with the ETag of a replaced version is refused."""
        first = store.put("lease", b"v1")
        store.put("lease", b"v2", if_match=first.etag)
        with pytest.raises(PreconditionFailed):
            store.put("lease", b"v3", if_match=first.etag)
        assert store.get("lease") == b"v2"

    def test_if_match_missing_key(self, store: ObjectStore) -> None:
        """``if_match`` on a key with no object is refused and creates nothing."""
        with pytest.raises(PreconditionFailed):
            store.put("nothing", b"v", if_match='"0123456789abcdef0123456789abcdef"')
        assert store.head("nothing") is None

    def test_if_match_after_delete(self, store: ObjectStore) -> None:
        """The ETag of a deleted object matches nothing."""
        first = store.put("lease", b"v1")
        store.delete("lease")
        with pytest.raises(PreconditionFailed):
            store.put("lease", b"v2", if_match=first.etag)
        assert store.head("lease") is None

    def test_delete(self, store: ObjectStore) -> None:
        """``delete`` removes the object, is quiet when there is none, and frees the key for
        a new ``create``."""
        store.put("a/b", b"x")
        store.delete("a/b")
        assert store.head("a/b") is None
        assert store.list() == []
        store.delete("a/b")
        store.delete("never/was")
        store.put("a/b", b"again", create=True)
        assert store.get("a/b") == b"again"

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_keys_are_refused(self, store: ObjectStore, key: str) -> None:
        """Every operation refuses a key that could name something outside the root."""
        for call in (
            lambda: store.put(key, b"x"),
            lambda: store.put(key, b"x", create=True),
            lambda: store.get(key),
            lambda: store.head(key),
            lambda: store.delete(key),
        ):
            with pytest.raises(UnsafePathError):
                call()
        assert store.list() == []

    def test_racing_creates_have_one_winner(self, store: ObjectStore) -> None:
        """Of 8 threads creating one key at once, exactly one wins, and its body stays."""
        winners = race(lambda i: store.put("claim", f"racer {i}".encode(), create=True))
        assert winners.count(True) == 1
        assert store.get("claim") == f"racer {winners.index(True)}".encode()

    def test_racing_if_match_has_one_winner(self, store: ObjectStore) -> None:
        """Of 8 threads replacing one version at once, exactly one wins, and its body stays."""
        etag = store.put("lease", b"start").etag
        winners = race(lambda i: store.put("lease", f"racer {i}".encode(), if_match=etag))
        assert winners.count(True) == 1
        assert store.get("lease") == f"racer {winners.index(True)}".encode()

    def test_probe_passes_and_leaves_nothing(self, store: ObjectStore) -> None:
        """The conditional-write probe accepts the store and removes its object."""
        store.put("keep", b"x")
        probe_conditional_writes(store)
        assert [info.key for info in store.list()] == ["keep"]
        assert store.list(PROBE_PREFIX) == []
