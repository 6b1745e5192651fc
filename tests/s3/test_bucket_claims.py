"""Claims and emission records (``store.bucket_claims``) on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import pytest

from energy_ledger.store.objects import ObjectStore
from energy_ledger.store.remote import open_bucket
from tests.store.bucket_claims_contract import BucketClaimsContract


class TestBucketClaimsOnABucket(BucketClaimsContract):
    """The shared claim tests, on a fresh prefix of a SeaweedFS bucket."""

    @pytest.fixture
    def store(self, s3_prefix_url: str) -> ObjectStore:
        return open_bucket(s3_prefix_url)

    # SeaweedFS serializes contended conditional writes on one key, about a second apart:
    # 8 racers take up to 6 s (docs/object-storage.md).
    @pytest.mark.slow
    def test_racing_takeover_has_one_winner(self, store: ObjectStore) -> None:
        """Of 8 contenders that all watched an expired claim, exactly one takes it over."""
        super().test_racing_takeover_has_one_winner(store)

    @pytest.mark.slow
    def test_racing_first_claims_have_one_winner(self, store: ObjectStore) -> None:
        """Of 8 claimers creating one claim at once, exactly one gets it."""
        super().test_racing_first_claims_have_one_winner(store)

    @pytest.mark.slow
    def test_emission_is_recorded_once(self, store: ObjectStore) -> None:
        """Of 8 threads recording one emission, exactly one creates it."""
        super().test_emission_is_recorded_once(store)
