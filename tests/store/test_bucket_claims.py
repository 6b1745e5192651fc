"""Claims and emission records (``store.bucket_claims``) on a folder (``LocalObjects``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_ledger.store.bucket_claims import ClaimBody, new_owner_id
from energy_ledger.store.objects import LocalObjects
from tests.store.bucket_claims_contract import BucketClaimsContract


class TestBucketClaimsOnAFolder(BucketClaimsContract):
    """The shared claim tests, on a temporary folder."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalObjects:
        return LocalObjects(tmp_path / "root")


class TestClaimBody:
    """The claim object's bytes."""

    def test_round_trip_in_a_fixed_key_order(self) -> None:
        """A body reads back equal, its keys in the written order, no wall-clock field."""
        body = ClaimBody("h:1:abc", "n", 3, 30.0, renewals=7, released=True)
        assert ClaimBody.from_bytes(body.to_bytes()) == body
        assert body.to_bytes() == (
            b'{"v":1,"owner":"h:1:abc","nonce":"n","term":3,"ttl_sec":30.0,'
            b'"renewals":7,"released":true}'
        )

    @pytest.mark.parametrize(
        "data",
        [
            b"[]",
            b"{}",
            b'{"owner":"a","nonce":"n","term":1}',
            b'{"owner":"a","nonce":"n","term":1,"ttl_sec":-1}',
            b"\xff",
        ],
    )
    def test_not_a_claim(self, data: bytes) -> None:
        """Anything else is a ValueError."""
        with pytest.raises(ValueError):
            ClaimBody.from_bytes(data)

    def test_owner_ids_differ(self) -> None:
        """Two owner ids made in one process differ (the random part)."""
        assert new_owner_id() != new_owner_id()
