"""The claim primitive's tests (``store.bucket_claims``), written once and run on every store.

``BucketClaimsContract`` holds the tests; a suite subclasses it and provides a ``store``
fixture (``tests/store/test_bucket_claims.py`` for a folder, ``tests/s3/test_bucket_claims.py``
for a bucket on SeaweedFS), as ``objects_contract`` does for the ``ObjectStore`` itself.
Contenders use a ``FakeClock``, so watching a claim for its ttl needs no sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import orjson
import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.store.bucket_claims import (
    Claim,
    ClaimBody,
    Claimer,
    ClaimLost,
    claim_key,
    emission_key,
    read_emission,
    record_emission,
)
from energy_ledger.store.objects import ObjectInfo, ObjectStore, PreconditionFailed

RACERS = 8
TTL_SEC = 0.25
"""Small, and exact in binary: a fake clock advanced by it has watched a full ttl."""
EXPERIMENT = "exp-1"

T = TypeVar("T")


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class LostAnswers:
    """A store whose conditional puts land and then answer ``PreconditionFailed``, as when
    obstore's retry of an applied put is refused (or, with ``timeouts``, the first ``timeouts``
    of them raise ``LedgerError``, as a timed-out request does)."""

    def __init__(self, inner: ObjectStore, timeouts: int = 0) -> None:
        self.inner = inner
        self.lost = 0
        self.timeouts = timeouts

    @property
    def url(self) -> str:
        return self.inner.url

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def get(self, key: str, start: int = 0) -> bytes:
        return self.inner.get(key, start)

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        info = self.inner.put(key, data, create=create, if_match=if_match)
        if create or if_match is not None:
            self.lost += 1
            if self.timeouts:
                self.timeouts -= 1
                raise LedgerError(f"{key!r}: put timed out")
            raise PreconditionFailed(f"{key!r}: the retry of an applied put was refused")
        return info

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def race(attempt: Callable[[int], T], racers: int = RACERS) -> list[T]:
    """Run ``attempt(i)`` on ``racers`` threads released together; their results."""
    barrier = threading.Barrier(racers)

    def run(i: int) -> T:
        barrier.wait()
        return attempt(i)

    with ThreadPoolExecutor(racers) as pool:
        return list(pool.map(run, range(racers)))


def stored(store: ObjectStore) -> ClaimBody:
    """The claim object's body as the store holds it."""
    return ClaimBody.from_bytes(store.get(claim_key(EXPERIMENT)))


class BucketClaimsContract:
    """What claims and emission records do on every store; subclasses provide ``store``."""

    def test_first_claim_wins(self, store: ObjectStore) -> None:
        """The first claimer creates the claim, term 1, with its owner id and ttl."""
        claim = Claimer(store, "a").claim(EXPERIMENT, TTL_SEC)
        assert claim is not None
        assert (claim.owner, claim.term, claim.key) == ("a", 1, "claims/exp-1.json")
        body = stored(store)
        assert body == claim.body
        assert (body.ttl_sec, body.renewals, body.released) == (TTL_SEC, 0, False)
        assert store.head(claim.key) == ObjectInfo(claim.key, len(body.to_bytes()), claim.etag)

    def test_fresh_claim_is_refused(self, store: ObjectStore) -> None:
        """A contender gets None while it has watched the claim for less than its ttl."""
        assert Claimer(store, "a").claim(EXPERIMENT, TTL_SEC) is not None
        clock = FakeClock()
        b = Claimer(store, "b", clock=clock)
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        clock.advance(TTL_SEC * 0.9)
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        assert stored(store).owner == "a"

    def test_renew_keeps_it_and_restarts_the_watch(self, store: ObjectStore) -> None:
        """A renewal moves the ETag: a contender's watch starts again, so a live owner keeps
        its claim however long the contender has been looking."""
        a = Claimer(store, "a")
        claim = a.claim(EXPERIMENT, TTL_SEC)
        assert claim is not None
        clock = FakeClock()
        b = Claimer(store, "b", clock=clock)
        for _ in range(3):
            assert b.claim(EXPERIMENT, TTL_SEC) is None
            clock.advance(TTL_SEC * 0.9)
            renewed = a.renew(claim)
            assert renewed.etag != claim.etag
            assert (renewed.term, renewed.body.renewals) == (1, claim.body.renewals + 1)
            assert renewed.body.nonce != claim.body.nonce
            claim = renewed
            clock.advance(TTL_SEC * 0.9)
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        assert stored(store) == claim.body

    def test_expired_claim_is_taken_over(self, store: ObjectStore) -> None:
        """Watched unchanged for its ttl, a claim is taken over with term + 1; the old
        owner's renewal raises ClaimLost and its release does nothing."""
        old = Claimer(store, "a").claim(EXPERIMENT, TTL_SEC)
        assert old is not None
        clock = FakeClock()
        b = Claimer(store, "b", clock=clock)
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        clock.advance(TTL_SEC)
        new = b.claim(EXPERIMENT, TTL_SEC)
        assert new is not None
        assert (new.owner, new.term, new.body.renewals) == ("b", 2, 0)
        a = Claimer(store, "a")
        with pytest.raises(ClaimLost, match=r"held by owner b \(term 2\)"):
            a.renew(old)
        assert a.release(old) is False
        assert stored(store) == new.body
        assert b.renew(new).term == 2

    def test_takeover_on_the_real_clock(self, store: ObjectStore) -> None:
        """The same on ``time.monotonic``: after the ttl has passed unchanged, not before."""
        assert Claimer(store, "a").claim(EXPERIMENT, TTL_SEC) is not None
        b = Claimer(store, "b")
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        time.sleep(TTL_SEC)
        new = b.claim(EXPERIMENT, TTL_SEC)
        assert new is not None
        assert new.owner == "b"

    def test_racing_takeover_has_one_winner(self, store: ObjectStore) -> None:
        """Of 8 contenders that all watched an expired claim, exactly one takes it over."""
        assert Claimer(store, "a").claim(EXPERIMENT, TTL_SEC) is not None
        clocks = [FakeClock() for _ in range(RACERS)]
        claimers = [Claimer(store, f"c{i}", clock=clocks[i]) for i in range(RACERS)]
        for claimer, clock in zip(claimers, clocks, strict=True):
            assert claimer.claim(EXPERIMENT, TTL_SEC) is None
            clock.advance(TTL_SEC)
        results = race(lambda i: claimers[i].claim(EXPERIMENT, TTL_SEC))
        winners = [claim for claim in results if claim is not None]
        assert len(winners) == 1
        assert stored(store) == winners[0].body
        assert winners[0].term == 2

    def test_racing_first_claims_have_one_winner(self, store: ObjectStore) -> None:
        """Of 8 claimers creating one claim at once, exactly one gets it."""
        claimers = [Claimer(store, f"c{i}", clock=FakeClock()) for i in range(RACERS)]
        results = race(lambda i: claimers[i].claim(EXPERIMENT, TTL_SEC))
        winners = [claim for claim in results if claim is not None]
        assert len(winners) == 1
        assert stored(store) == winners[0].body

    def test_release_lets_a_contender_take_it_at_once(self, store: ObjectStore) -> None:
        """A released claim is taken over without waiting; the releaser cannot renew it."""
        a = Claimer(store, "a")
        claim = a.claim(EXPERIMENT, TTL_SEC)
        assert claim is not None
        assert a.release(claim) is True
        assert stored(store).released is True
        b = Claimer(store, "b", clock=FakeClock())
        new = b.claim(EXPERIMENT, TTL_SEC)
        assert new is not None
        assert (new.owner, new.term) == ("b", 2)
        with pytest.raises(ClaimLost):
            a.renew(claim)

    def test_claiming_its_own_claim_renews_it(self, store: ObjectStore) -> None:
        """An owner that asks again for a claim it holds gets it back, renewed."""
        a = Claimer(store, "a")
        first = a.claim(EXPERIMENT, TTL_SEC)
        again = a.claim(EXPERIMENT, TTL_SEC)
        assert first is not None and again is not None
        assert (again.term, again.body.renewals) == (1, 1)
        assert again.etag != first.etag

    def test_unreadable_claim_is_watched_with_our_ttl(self, store: ObjectStore) -> None:
        """A claim object that does not parse is taken over after the contender's own ttl."""
        store.put(claim_key(EXPERIMENT), b"not json")
        clock = FakeClock()
        b = Claimer(store, "b", clock=clock)
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        clock.advance(TTL_SEC)
        new = b.claim(EXPERIMENT, TTL_SEC)
        assert new is not None
        assert new.term == 1

    def test_emission_is_recorded_once(self, store: ObjectStore) -> None:
        """Of 8 threads recording one emission, exactly one creates it, and it names that
        thread's owner and term."""
        claims = [
            Claim(EXPERIMENT, claim_key(EXPERIMENT), ClaimBody(f"c{i}", f"n{i}", i + 1, 1.0), "e")
            for i in range(RACERS)
        ]
        results = race(lambda i: record_emission(store, EXPERIMENT, claims[i], {"i": i}))
        assert results.count(True) == 1
        winner = results.index(True)
        record = read_emission(store, EXPERIMENT)
        assert record is not None
        assert (record.owner, record.term, record.body) == (f"c{winner}", winner + 1, {"i": winner})
        raw = orjson.loads(store.get(emission_key(EXPERIMENT)))
        assert list(raw) == sorted(raw)

    @pytest.mark.parametrize("operation", ["create", "takeover", "renew", "release", "emit"])
    def test_lost_answer_is_known_as_ours(self, store: ObjectStore, operation: str) -> None:
        """A conditional put that landed but answered PreconditionFailed is recognised as
        this claimer's by the nonce in the body read back."""
        lossy = LostAnswers(store)
        clock = FakeClock()
        a = Claimer(lossy, "a", clock=clock)
        if operation == "create":
            claim = a.claim(EXPERIMENT, TTL_SEC)
            assert claim is not None
            assert stored(store) == claim.body
        elif operation == "takeover":
            assert Claimer(store, "z").claim(EXPERIMENT, TTL_SEC) is not None
            assert a.claim(EXPERIMENT, TTL_SEC) is None
            clock.advance(TTL_SEC)
            claim = a.claim(EXPERIMENT, TTL_SEC)
            assert claim is not None
            assert (claim.term, stored(store)) == (2, claim.body)
        else:
            held = Claimer(store, "a").claim(EXPERIMENT, TTL_SEC)
            assert held is not None
            if operation == "renew":
                renewed = a.renew(held)
                assert stored(store) == renewed.body
                assert a.renew(renewed).body.renewals == 2
            elif operation == "release":
                assert a.release(held) is True
                assert stored(store).released is True
            else:
                assert record_emission(lossy, EXPERIMENT, held, {}) is True
                other = Claim(EXPERIMENT, held.key, replace(held.body, owner="b"), held.etag)
                assert record_emission(lossy, EXPERIMENT, other, {}) is False
        assert lossy.lost >= 1

    def test_renew_retried_after_a_timeout_keeps_the_claim(self, store: ObjectStore) -> None:
        """A renewal that timed out but landed, renewed again, finds its own owner and term
        there and goes on from it."""
        held = Claimer(store, "a").claim(EXPERIMENT, TTL_SEC)
        assert held is not None
        a = Claimer(LostAnswers(store, timeouts=1), "a")
        with pytest.raises(LedgerError, match="timed out"):
            a.renew(held)
        assert stored(store).renewals == 1
        renewed = Claimer(store, "a").renew(held)
        assert (renewed.term, renewed.body.renewals) == (1, 2)
        assert stored(store) == renewed.body

    def test_emission_retried_after_a_timeout_is_ours(self, store: ObjectStore) -> None:
        """An emission whose create timed out but landed is True when retried for the same
        claim, and False for any other owner or term."""
        held = Claimer(store, "a").claim(EXPERIMENT, TTL_SEC)
        assert held is not None
        with pytest.raises(LedgerError, match="timed out"):
            record_emission(LostAnswers(store, timeouts=1), EXPERIMENT, held, {})
        assert record_emission(store, EXPERIMENT, held, {}) is True
        other = Claim(held.experiment_id, held.key, replace(held.body, term=2), held.etag)
        assert record_emission(store, EXPERIMENT, other, {}) is False
        stranger = Claim(held.experiment_id, held.key, replace(held.body, owner="b"), held.etag)
        assert record_emission(store, EXPERIMENT, stranger, {}) is False

    def test_a_renewal_of_another_term_is_lost(self, store: ObjectStore) -> None:
        """An owner whose claim was taken over and then released by the new owner cannot
        renew its old term: only a body of its own owner and term is taken as ours."""
        old = Claimer(store, "a").claim(EXPERIMENT, TTL_SEC)
        assert old is not None
        clock = FakeClock()
        b = Claimer(store, "b", clock=clock)
        assert b.claim(EXPERIMENT, TTL_SEC) is None
        clock.advance(TTL_SEC)
        new = b.claim(EXPERIMENT, TTL_SEC)
        assert new is not None
        assert b.release(new) is True
        again = Claimer(store, "a", clock=FakeClock())
        with pytest.raises(ClaimLost, match=r"released by owner b \(term 2\)"):
            again.renew(old)
        taken = again.claim(EXPERIMENT, TTL_SEC)
        assert taken is not None
        assert taken.term == 3

    @pytest.mark.parametrize("bad", ["", "..", "a/b", "x" * 300])
    def test_bad_experiment_id(self, store: ObjectStore, bad: str) -> None:
        """An unsafe experiment id is refused before anything is written."""
        with pytest.raises(UnsafePathError):
            Claimer(store, "a").claim(bad, TTL_SEC)
        assert store.list() == []

    @pytest.mark.parametrize("ttl_sec", [0.0, -1.0, float("nan"), float("inf")])
    def test_bad_ttl(self, store: ObjectStore, ttl_sec: float) -> None:
        """A ttl that is not a positive finite number is refused."""
        with pytest.raises(ValueError, match="ttl_sec"):
            Claimer(store, "a").claim(EXPERIMENT, ttl_sec)
