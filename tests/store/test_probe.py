"""probe_conditional_writes: passes on a store that honours conditions, names the check a
store fails, and always removes its object."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.objects import LocalObjects, ObjectInfo, PreconditionFailed
from energy_ledger.store.probe import (
    PROBE_PREFIX,
    ConditionalWritesUnsupported,
    probe_conditional_writes,
)


class MemoryStore:
    """An in-memory ``ObjectStore`` (MD5 ETags) that can be told to ignore a condition."""

    def __init__(self, ignore: frozenset[str] = frozenset()) -> None:
        self.ignore = ignore
        self.objects: dict[str, bytes] = {}
        self.deleted: list[str] = []

    @property
    def url(self) -> str:
        return "memory://test"

    def _info(self, key: str) -> ObjectInfo:
        data = self.objects[key]
        return ObjectInfo(key, len(data), f'"{hashlib.md5(data).hexdigest()}"')

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return [self._info(k) for k in sorted(self.objects) if k.startswith(prefix)]

    def head(self, key: str) -> ObjectInfo | None:
        return self._info(key) if key in self.objects else None

    def get(self, key: str, start: int = 0) -> bytes:
        return self.objects[key][start:]

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        current = self.head(key)
        if create and current is not None and "create" not in self.ignore:
            raise PreconditionFailed("exists")
        if not create and if_match is not None:
            if "right" in self.ignore:
                raise PreconditionFailed("refuses every If-Match")
            if (current is None or current.etag != if_match) and "if_match" not in self.ignore:
                raise PreconditionFailed("another version")
        self.objects[key] = data
        return self._info(key)

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.objects.pop(key, None)


class TestProbe:
    """What the probe accepts, what it refuses and what it leaves behind."""

    def test_passes_on_an_honest_store(self) -> None:
        """A store that honours both conditions passes; the probe object is gone."""
        store = MemoryStore()
        probe_conditional_writes(store)
        assert store.objects == {}
        assert len(store.deleted) == 1 and store.deleted[0].startswith(PROBE_PREFIX)

    def test_passes_on_a_folder(self, tmp_path: Path) -> None:
        """``LocalObjects`` passes (``link(2)`` and the locked compare), leaving no object."""
        store = LocalObjects(tmp_path)
        probe_conditional_writes(store)
        assert store.list() == []

    @pytest.mark.parametrize(
        ("ignore", "check"),
        [
            ("create", "a second create of an existing key was accepted"),
            ("if_match", "a write with an ETag the object never had was accepted"),
        ],
    )
    def test_names_the_ignored_condition(self, ignore: str, check: str) -> None:
        """A store that ignores a condition fails with a message naming the store, the
        check and what it means; the probe object is removed anyway."""
        store = MemoryStore(frozenset({ignore}))
        with pytest.raises(ConditionalWritesUnsupported) as caught:
            probe_conditional_writes(store)
        message = str(caught.value)
        assert "memory://test does not honour conditional writes" in message
        assert check in message
        assert "several daemons could both emit" in message
        assert store.objects == {}

    def test_refusing_the_right_etag_is_an_error(self) -> None:
        """A store that refuses even the current ETag cannot update anything: it fails."""
        store = MemoryStore(frozenset({"right"}))
        with pytest.raises(PreconditionFailed, match="current ETag"):
            probe_conditional_writes(store)
        assert store.objects == {}

    def test_probes_never_share_a_key(self) -> None:
        """Each probe writes under its own key, so two daemons probing at once never meet."""
        store = MemoryStore()
        probe_conditional_writes(store)
        probe_conditional_writes(store)
        assert len(set(store.deleted)) == 2

    def test_a_failed_delete_does_not_hide_the_verdict(self) -> None:
        """When removing the probe object fails, the probe's own outcome still stands."""

        class Undeletable(MemoryStore):
            def delete(self, key: str) -> None:
                raise LedgerError("delete refused")

        probe_conditional_writes(Undeletable())
        with pytest.raises(ConditionalWritesUnsupported):
            probe_conditional_writes(Undeletable(frozenset({"create"})))
