"""Claims on experiments for several daemons sharing one ``ObjectStore`` root, and emissions
recorded once.

The local daemon gets exactly-once from ``link(2)`` and a lease it watches on its own monotonic
clock (``daemon.lease``, ``daemon.claims``). A bucket has neither ``link`` nor ``rename``, but it
has the two conditional writes, and this module builds the same ideas from them:

- **A claim** per experiment, ``claims/<id>.json``: ``{"v", "owner", "nonce", "term",
  "ttl_sec", "renewals", "released"}``. It is created with ``put(create=True)`` (one creator
  wins), renewed by its owner with ``put(if_match=<its last ETag>)`` and taken over with
  ``put(if_match=<the ETag watched>)`` (one contender wins). Every write carries a fresh
  ``nonce``: a bucket's ETag may be the MD5 of the body, so two writes of equal bytes would
  share an ETag and a stale ``if_match`` would pass.
- **Expiry never compares clocks across hosts.** The body holds no wall-clock expiry, only the
  ``ttl_sec`` its owner promises to renew within and the owner's own renewal count. A contender
  notes, on its own monotonic clock, when it first saw the claim at an ETag, and may take it over
  only once it has seen that same ETag for ``ttl_sec`` (``Claimer`` keeps that time per key). A
  renewal changes the ETag and starts the watch again. A claim its owner released (a
  ``released`` body) is taken at once.
- **An emission record**, ``emissions/<id>.json``, is created once with ``put(create=True)``
  and names the claim's owner and term. Exactly-once rests on this create alone, not on the
  claim: of any number of daemons, stale claim holders included, one create succeeds, and a
  daemon runs its hooks only after its own create returned True. The claim only keeps the
  others from doing the work twice.
- **Lost answers.** obstore retries a request after a 5xx answer or a dropped connection, so a
  conditional put that was applied can come back refused by its own retry. After every
  ``PreconditionFailed`` the object is read again, and it is ours when its body carries the
  nonce we wrote.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.layout import check_experiment_id
from energy_ledger.store.objectstore import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    check_key,
)

__all__ = [
    "CLAIMS_PREFIX",
    "EMISSIONS_PREFIX",
    "Claim",
    "ClaimBody",
    "ClaimLost",
    "Claimer",
    "Emission",
    "claim_key",
    "emission_key",
    "list_claims",
    "new_owner_id",
    "read_emission",
    "record_emission",
]

logger = logging.getLogger(__name__)

CLAIMS_PREFIX = "claims/"
EMISSIONS_PREFIX = "emissions/"
CLAIM_VERSION = 1
EMISSION_VERSION = 1
READ_ATTEMPTS = 4
"""How often a read that finds the object gone between ``head`` and ``get`` is tried again."""


class ClaimLost(LedgerError):
    """A claim this daemon held is another owner's now (it was presumed dead), or is gone."""


def new_owner_id() -> str:
    """A daemon's owner id: ``<host>:<pid>:<random>`` (the random part tells restarts apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_key(experiment_id: str) -> str:
    """The key of an experiment's claim. Raises ``UnsafePathError`` for a bad id."""
    return check_key(f"{CLAIMS_PREFIX}{check_experiment_id(experiment_id)}.json")


def emission_key(experiment_id: str) -> str:
    """The key of an experiment's emission record. Raises ``UnsafePathError`` for a bad id."""
    return check_key(f"{EMISSIONS_PREFIX}{check_experiment_id(experiment_id)}.json")


def _nonce() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ClaimBody:
    """The content of a claim object.

    Attributes:
        owner: the owner id (``new_owner_id``).
        nonce: fresh at every write, so every write has its own ETag and its own proof.
        term: 1 at creation, one higher at every takeover (a fencing number).
        ttl_sec: how long the owner may go between renewals; contenders wait this long.
        renewals: the owner's own count of renewals in this term (for ``status``, not expiry).
        released: the owner gave it up; a contender may take it at once.
    """

    owner: str
    nonce: str
    term: int
    ttl_sec: float
    renewals: int = 0
    released: bool = False

    def to_bytes(self) -> bytes:
        """The object's content, in a fixed key order."""
        return orjson.dumps(
            {
                "v": CLAIM_VERSION,
                "owner": self.owner,
                "nonce": self.nonce,
                "term": self.term,
                "ttl_sec": self.ttl_sec,
                "renewals": self.renewals,
                "released": self.released,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ClaimBody:
        """Parse a claim object; ``ValueError`` when it is not one."""
        obj: Any = orjson.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        try:
            body = cls(
                owner=str(obj["owner"]),
                nonce=str(obj["nonce"]),
                term=int(obj["term"]),
                ttl_sec=float(obj["ttl_sec"]),
                renewals=int(obj.get("renewals", 0)),
                released=bool(obj.get("released", False)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from exc
        if not (math.isfinite(body.ttl_sec) and body.ttl_sec >= 0):
            raise ValueError(f"bad ttl_sec {body.ttl_sec!r}")
        return body


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim this daemon holds: what it last wrote and the ETag that write got.

    Attributes:
        experiment_id: the experiment claimed.
        key: its claim object's key.
        body: the body last written.
        etag: that write's ETag: the next renewal's ``if_match``.
    """

    experiment_id: str
    key: str
    body: ClaimBody
    etag: str

    @property
    def owner(self) -> str:
        """The owner id."""
        return self.body.owner

    @property
    def term(self) -> int:
        """The term (one higher at every takeover)."""
        return self.body.term


def _read(objects: ObjectStore, key: str) -> tuple[ObjectInfo, bytes] | None:
    """The object's info and bytes, ``None`` when there is none.

    ``head`` comes before ``get``, so the bytes are of the version the ETag names or a later
    one. Either way it is safe: every decision made on them is carried out by a put with
    ``if_match`` on that ETag, which the server refuses if a later version is there.
    """
    for _ in range(READ_ATTEMPTS):
        info = objects.head(key)
        if info is None:
            return None
        try:
            return info, objects.get(key)
        except ObjectNotFound:
            continue  # deleted between head and get: look again
    return None


def _parse(data: bytes) -> ClaimBody | None:
    try:
        return ClaimBody.from_bytes(data)
    except ValueError:
        return None


def _check_ttl(ttl_sec: float) -> None:
    if not (math.isfinite(ttl_sec) and ttl_sec > 0):
        raise ValueError(f"ttl_sec must be a positive number of seconds, not {ttl_sec!r}")


class Claimer:
    """One daemon's claims on one root: takes, renews and releases them.

    It keeps, per claim key, the ETag it last saw there and when (on ``clock``, monotonic), so
    that a claim seen unchanged for its ``ttl_sec`` across calls of :meth:`claim` may be taken
    over. Thread-safe.

    Args:
        objects: the root's store.
        owner: this daemon's owner id (default: ``new_owner_id()``).
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        objects: ObjectStore,
        owner: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.owner = owner or new_owner_id()
        self._clock = clock
        self._seen: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _first_seen(self, key: str, etag: str) -> float:
        """When this claimer first saw ``key`` at ``etag`` (now, if it just did)."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or seen[0] != etag:
                self._seen[key] = (etag, now)
                return now
            return seen[1]

    def watched_sec(self, key: str, etag: str) -> float:
        """How long this claimer has seen ``key`` at ``etag``, on its own clock (0 when new).

        A daemon feeds it the ETags of each listing of ``claims/``, so that it calls
        :meth:`claim` on a claim held by another owner only once that claim may have expired,
        instead of reading every such claim at every poll.
        """
        return self._clock() - self._first_seen(key, etag)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def _put(
        self, experiment_id: str, key: str, body: ClaimBody, *, if_match: str | None
    ) -> Claim | None:
        """Write ``body`` with ``create`` (no ``if_match``) or ``if_match``; the claim when it
        landed, ``None`` when the condition failed and the object is not ours (its nonce)."""
        try:
            info = self.objects.put(
                key, body.to_bytes(), create=if_match is None, if_match=if_match
            )
        except PreconditionFailed:
            found = _read(self.objects, key)
            if found is None:
                return None
            info, data = found
            current = _parse(data)
            if current is None or current.nonce != body.nonce:
                return None
            logger.info("the write of %s was refused by its own retry; it had landed", key)
        return Claim(experiment_id, key, body, info.etag)

    def claim(self, experiment_id: str, ttl_sec: float) -> Claim | None:
        """Take the experiment's claim: create it, or take it over once expired or released.

        Call it again at each poll: a claim held by another owner is ``None`` now, and is taken
        over at a later call once this claimer has seen it unchanged (same ETag) for its
        ``ttl_sec`` on its own clock. A claim already this owner's is renewed and returned.

        Args:
            experiment_id: the experiment (checked).
            ttl_sec: how long this owner may go between renewals (renew every third of it).

        Returns:
            The claim, or ``None`` when another owner holds it (or won the race for it).

        Raises:
            UnsafePathError: a bad experiment id.
            ValueError: ``ttl_sec`` is not a positive number.
            LedgerError: the store failed.
        """
        _check_ttl(ttl_sec)
        key = claim_key(experiment_id)
        fresh = ClaimBody(self.owner, _nonce(), term=1, ttl_sec=ttl_sec)
        taken = self._put(experiment_id, key, fresh, if_match=None)
        if taken is not None:
            self._forget(key)
            return taken
        found = _read(self.objects, key)
        if found is None:
            return None  # deleted just now: the next call creates it
        info, data = found
        current = _parse(data)
        if current is not None and current.owner == self.owner and not current.released:
            # Ours already: renew it (its ETag is the one just read).
            body = replace(current, nonce=_nonce(), renewals=current.renewals + 1)
            return self._put(experiment_id, key, body, if_match=info.etag)
        if current is None or not current.released:
            # A claim nobody can parse is watched with our own ttl, as the lease does.
            wait_sec = ttl_sec if current is None else current.ttl_sec
            watched_sec = self._clock() - self._first_seen(key, info.etag)
            if watched_sec < wait_sec:
                return None
            who = "an unreadable claim" if current is None else f"owner {current.owner}"
            logger.warning(
                "taking over %s of %s: unchanged for %.3g s (ttl %g s)",
                key,
                who,
                watched_sec,
                wait_sec,
            )
        term = 1 if current is None else current.term + 1
        body = ClaimBody(self.owner, _nonce(), term=term, ttl_sec=ttl_sec)
        taken = self._put(experiment_id, key, body, if_match=info.etag)
        self._forget(key)
        return taken

    def renew(self, claim: Claim) -> Claim:
        """Renew a claim held: rewrite it, new nonce, renewals one higher, ``if_match`` its ETag.

        After a ``LedgerError`` (a timeout: the put may have landed) call it again with the same
        claim: a body of this owner and term found there is taken as ours.

        Raises:
            ClaimLost: the claim moved on (another owner took it over) or is gone; stop the
                work on this experiment.
            LedgerError: the store failed (transient: retry before the ttl runs out).
        """
        body = replace(claim.body, nonce=_nonce(), renewals=claim.body.renewals + 1)
        renewed = self._put(claim.experiment_id, claim.key, body, if_match=claim.etag)
        if renewed is not None:
            return renewed
        # A write of ours whose answer was lost (a timeout, a LedgerError to the caller, who
        # renews again) moved the ETag under the same owner and term: nobody else writes with
        # this owner id, so renew from there.
        found = _read(self.objects, claim.key)
        current = _parse(found[1]) if found is not None else None
        if found is not None and current is not None and self._ours(current, claim.term):
            body = replace(current, nonce=_nonce(), renewals=current.renewals + 1)
            renewed = self._put(claim.experiment_id, claim.key, body, if_match=found[0].etag)
            if renewed is not None:
                return renewed
        raise self._lost(claim)

    def _ours(self, current: ClaimBody, term: int) -> bool:
        return current.owner == self.owner and current.term == term and not current.released

    def _lost(self, claim: Claim) -> ClaimLost:
        found = _read(self.objects, claim.key)
        current = _parse(found[1]) if found is not None else None
        if found is None:
            now = "it is gone"
        elif current is None:
            now = "it is unreadable"
        elif current.released:
            now = f"it was released by owner {current.owner} (term {current.term})"
        else:
            now = f"it is held by owner {current.owner} (term {current.term})"
        return ClaimLost(
            f"lost the claim {claim.key} in {self.objects.url} (term {claim.term}): {now}"
        )

    def release(self, claim: Claim) -> bool:
        """Give a claim up, so that a contender may take it at once; False when not ours now.

        The claim is not deleted: a delete is not conditional on most stores (S3's
        ``DeleteObject`` takes no ``If-Match``), so reading it, comparing the nonce and then
        deleting leaves a race: another owner's takeover between the read and the delete would
        be deleted. Instead a ``released`` body is written with ``if_match`` on the claim's last
        ETag, which the server refuses when anyone has written since. Deleting is then
        unnecessary: a contender takes a released claim over without waiting for the ttl.
        """
        body = replace(claim.body, nonce=_nonce(), released=True)
        if self._put(claim.experiment_id, claim.key, body, if_match=claim.etag) is None:
            logger.info("did not release %s: it is not ours any more", claim.key)
            return False
        return True


@dataclass(frozen=True, slots=True)
class Emission:
    """An emission record: who emitted an experiment's result, under which claim term.

    Attributes:
        experiment_id: the experiment.
        owner: the emitting daemon's owner id.
        term: its claim's term then.
        nonce: fresh for the write (proves it ours after a lost answer).
        body: what the daemon recorded with it (a result digest, say).
    """

    experiment_id: str
    owner: str
    term: int
    nonce: str
    body: dict[str, Any]

    def to_bytes(self) -> bytes:
        """The object's content, in a fixed key order (``body`` with sorted keys)."""
        return orjson.dumps(
            {
                "v": EMISSION_VERSION,
                "experiment_id": self.experiment_id,
                "owner": self.owner,
                "term": self.term,
                "nonce": self.nonce,
                "body": self.body,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Emission:
        """Parse an emission record; ``ValueError`` when it is not one."""
        obj: Any = orjson.loads(data)
        if not isinstance(obj, dict) or not isinstance(obj.get("body"), dict):
            raise ValueError("not an emission record")
        try:
            return cls(
                experiment_id=str(obj["experiment_id"]),
                owner=str(obj["owner"]),
                term=int(obj["term"]),
                nonce=str(obj["nonce"]),
                body=obj["body"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from exc


def record_emission(
    objects: ObjectStore, experiment_id: str, claim: Claim, body: Mapping[str, Any]
) -> bool:
    """Create the experiment's emission record; True when this claim (owner and term) created it.

    That is this call, or an earlier call for the same claim that raised a ``LedgerError`` (a
    timeout: the put may have landed) and is being retried. Call it once per claim otherwise,
    and run the hooks only after True. False means another owner or term emitted it: nothing
    runs twice. Renew (fence) the claim just before: a holder presumed dead still cannot emit
    twice, since only one create succeeds, but it would waste the work.

    Raises:
        UnsafePathError: a bad experiment id.
        LedgerError: the store failed, or ``body`` cannot be written as JSON.
    """
    key = emission_key(experiment_id)
    record = Emission(experiment_id, claim.owner, claim.term, _nonce(), dict(body))
    try:
        data = record.to_bytes()
    except TypeError as exc:  # orjson.JSONEncodeError
        raise LedgerError(f"cannot write the emission record {key}: {exc}") from exc
    try:
        objects.put(key, data, create=True)
    except PreconditionFailed:
        found = read_emission(objects, experiment_id)
        if found is not None and found.nonce == record.nonce:
            logger.info("the create of %s was refused by its own retry; it had landed", key)
            return True
        # An earlier call of this owner and term whose answer was lost (it raised a
        # LedgerError, so its hooks did not run) created it: the record is ours.
        return found is not None and (found.owner, found.term) == (claim.owner, claim.term)
    return True


def read_emission(objects: ObjectStore, experiment_id: str) -> Emission | None:
    """The experiment's emission record, ``None`` when there is none or it is unreadable."""
    key = emission_key(experiment_id)
    try:
        return Emission.from_bytes(objects.get(key))
    except (ObjectNotFound, ValueError):
        return None


def list_claims(objects: ObjectStore) -> list[tuple[str, ClaimBody | None]]:
    """Every claim of a root, by experiment id, sorted: its body, ``None`` when unreadable.

    One listing of ``claims/`` and one ``get`` per claim; a daemon deletes the claim of an
    experiment it settled, so these are the experiments in progress (and released ones).

    Raises:
        LedgerError: the store cannot be listed.
    """
    found: list[tuple[str, ClaimBody | None]] = []
    for info in objects.list(CLAIMS_PREFIX):
        name = info.key.removeprefix(CLAIMS_PREFIX)
        if "/" in name or not name.endswith(".json"):
            continue
        try:
            body = _parse(objects.get(info.key))
        except ObjectNotFound:
            continue  # settled and deleted since the listing
        found.append((name.removesuffix(".json"), body))
    return found
