"""Bucket on a real S3 server (SeaweedFS): the same contract as a folder, and what only a
bucket has (pagination, prefixes of one bucket, credentials on the wire)."""

from __future__ import annotations

import os
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.objects import ObjectStore, open_objects
from energy_ledger.store.probe import PROBE_PREFIX, probe_conditional_writes
from energy_ledger.store.remote import Bucket, open_bucket
from tests.s3.server import SeaweedServer
from tests.store.objects_contract import ObjectStoreContract

PAGED_KEYS = 1200
"""Over S3's 1,000 keys per ListObjectsV2 page."""


class TestBucketContract(ObjectStoreContract):
    """The shared contract, on a fresh prefix of a SeaweedFS bucket."""

    @pytest.fixture
    def store(self, s3_prefix_url: str) -> ObjectStore:
        return open_bucket(s3_prefix_url)

    # SeaweedFS serializes contended conditional writes on one key, about a second apart:
    # 8 racers take up to 6 s (docs/object-storage.md).
    @pytest.mark.slow
    def test_racing_creates_have_one_winner(self, store: ObjectStore) -> None:
        """Of 8 threads creating one key at once, exactly one wins, and its body stays."""
        super().test_racing_creates_have_one_winner(store)

    @pytest.mark.slow
    def test_racing_if_match_has_one_winner(self, store: ObjectStore) -> None:
        """Of 8 threads replacing one version at once, exactly one wins, and its body stays."""
        super().test_racing_if_match_has_one_winner(store)


class TestBucket:
    """Bucket-only behaviour, each test on its own bucket."""

    def test_open_objects_picks_the_bucket(self, s3_url: str) -> None:
        """A URL root opens as a bucket, and its url names bucket and prefix."""
        store = open_objects(s3_url)
        assert isinstance(store, Bucket)
        assert store.url == s3_url

    def test_listing_pages_through_more_than_1000_keys(
        self, s3_url: str, s3_bucket: str, s3_server: SeaweedServer
    ) -> None:
        """1,200 objects (two pages of ListObjectsV2) are all listed, sorted, and a prefix
        inside them still works."""
        store = open_bucket(s3_url)
        keys = [f"raw/e{i % 3}/k{i:05d}" for i in range(PAGED_KEYS)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda key: store.put(key, b"x"), keys))
        listed = store.list()
        assert [info.key for info in listed] == sorted(keys)
        assert all(info.size == 1 for info in listed)
        assert [info.key for info in store.list("raw/e1/")] == sorted(
            k for k in keys if "/e1/" in k
        )
        # What the server itself holds, read without the client under test.
        assert s3_server.list_keys(s3_bucket, "root/") == sorted(f"root/{k}" for k in keys)

    def test_prefixes_of_one_bucket_are_apart(
        self, s3_bucket: str, s3_server: SeaweedServer
    ) -> None:
        """Two roots in one bucket, one a string prefix of the other's name, never see or
        touch each other's objects."""
        one = open_bucket(f"s3://{s3_bucket}/root")
        two = open_bucket(f"s3://{s3_bucket}/root2")
        whole = open_bucket(f"s3://{s3_bucket}")
        one.put("x", b"one")
        two.put("x", b"two")
        two.put("y", b"two")
        assert [info.key for info in one.list()] == ["x"]
        assert [info.key for info in two.list()] == ["x", "y"]
        assert one.get("x") == b"one"
        one.put("y", b"mine", create=True)
        one.delete("x")
        assert two.get("x") == b"two"
        assert [info.key for info in whole.list("root")] == ["root/y", "root2/x", "root2/y"]
        assert s3_server.list_keys(s3_bucket, "root/") == ["root/y"]

    def test_probe_passes_on_seaweedfs(
        self, s3_url: str, s3_bucket: str, s3_server: SeaweedServer
    ) -> None:
        """SeaweedFS honours both conditions; the probe leaves nothing in the bucket."""
        store = open_bucket(s3_url)
        probe_conditional_writes(store)
        assert s3_server.list_keys(s3_bucket, f"root/{PROBE_PREFIX}") == []

    def test_credentials_never_in_messages(
        self, s3_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With credentials the server refuses, every operation fails with a ``LedgerError``
        naming the URL and key, and neither the message nor its traceback holds a secret."""
        secrets = {
            "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID77777777",
            "AWS_SECRET_ACCESS_KEY": "fakeSecret-should-never-print-2b9d41",
            "AWS_SESSION_TOKEN": "fakeToken-should-never-print-c0ffee1234",
        }
        for name, value in secrets.items():
            monkeypatch.setenv(name, value)
        store = open_bucket(s3_url)
        calls = {
            "list": lambda: store.list("raw/"),
            "head": lambda: store.head("raw/x"),
            "get": lambda: store.get("raw/x"),
            "put": lambda: store.put("raw/x", b"x"),
            "create": lambda: store.put("raw/x", b"x", create=True),
            "if_match": lambda: store.put("raw/x", b"x", if_match='"e"'),
            "delete": lambda: store.delete("raw/x"),
        }
        for name, call in calls.items():
            with pytest.raises(LedgerError) as caught:
                call()
            message = str(caught.value)
            said = "\n".join(
                [message, repr(caught.value), *traceback.format_exception(caught.value)]
            )
            for value in secrets.values():
                assert value not in said, (name, said)
            assert s3_url in message, (name, message)
            if name != "list":
                assert "raw/x" in message, (name, message)

    @pytest.mark.slow
    def test_unreachable_endpoint(self, s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A refused connection (retried, then given up) is a ``LedgerError`` naming where."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ENDPOINT", f"http://127.0.0.1:{port}")
        store = open_bucket(s3_url)
        started = time.monotonic()
        with pytest.raises(LedgerError, match=f"cannot head {s3_url}/k") as caught:
            store.head("k")
        assert time.monotonic() - started < 60
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)
