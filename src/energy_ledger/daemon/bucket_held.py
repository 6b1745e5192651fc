"""The claims a bucket daemon holds (``daemon.bucket_watcher``): taking, renewing, fencing,
letting go.

``HeldClaims`` keeps one ``Held`` per experiment whose claim (``store.bucket_claims``) this
daemon holds, with the experiment's cursors and last verdict. It takes a claim only when it may:
no claim object is listed, or the one listed has kept its ETag for the ttl on this daemon's own
clock (``Claimer.watched_sec``). A thread (``renew_forever``) rewrites every claim held once a
third of the ttl has passed, eight at a time, whatever the loop is busy with; ``fence`` renews
one right before a write that must be this daemon's alone. A renewal the server refuses marks
the claim ``lost``: another daemon took it over, and the loop drops the experiment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.bucket_claims import Claim, Claimer, ClaimLost, claim_key
from energy_ledger.store.objectstore import ObjectInfo, ObjectStore
from energy_ledger.store.segment_tail import SegmentTail

__all__ = [
    "MAX_HELD_CLAIMS",
    "MAX_NEW_CLAIMS_PER_POLL",
    "MAX_WAIT_SEC",
    "Held",
    "HeldClaims",
    "Signature",
]

logger = logging.getLogger(__name__)

MAX_NEW_CLAIMS_PER_POLL = 16
"""Claims a daemon takes in one poll: daemons that start together share the root's work (each
takes its claims in its own random order) instead of the first one claiming everything."""
MAX_HELD_CLAIMS = 64
"""Claims on experiments not yet emitted that a daemon holds at once: it takes no new one
beyond them, leaving the rest of the root's work to other daemons, and its renewals (one put
each per third of the ttl) stay few. Claims kept while a hook runs do not count, so slow hooks
never hold up emissions."""
RENEW_THREADS = 8
"""Renewals sent at once: a round of ``MAX_HELD_CLAIMS`` renewals takes a few round trips."""
MAX_WAIT_SEC = 0.5
"""Longest sleep of the loop and of the renewer, so a stop is seen within this long."""

Signature = tuple[tuple[str, int, str], ...]
"""An experiment's listing as compared between polls: keys, sizes and ETags."""


@dataclass(slots=True)
class Held:
    """An experiment whose claim this daemon holds: the claim, its cursors, the last verdict.

    Attributes:
        claim: the claim as last written (renewed in place by the renewer thread).
        renewed_t: when it was last written, on the daemon's monotonic clock.
        tails: one cursor per process, so a poll reads only new segments.
        signature: the experiment's listing when it was last scanned.
        changed_t: when that listing last changed (monotonic), for ``stale_after_sec``.
        state: the completeness state of the last scan.
        detail: why it is not complete.
        emitted: its emission record is there; the claim is kept while its hook is owed.
        lost: the renewer found the claim another owner's (the loop drops it).
    """

    claim: Claim
    renewed_t: float
    tails: dict[int, SegmentTail] = field(default_factory=dict)
    signature: Signature | None = None
    changed_t: float = 0.0
    state: str = "new"
    detail: str = ""
    emitted: bool = False
    lost: bool = False


class HeldClaims:
    """One daemon's claims on one bucket root (see the module doc). Thread-safe.

    Args:
        objects: the root's store.
        claimer: this daemon's claimer (its owner id).
        ttl_sec: the claims' ttl (``lease_timeout_sec``).

    Attributes:
        held: the experiments held, by id (read it under ``lock`` off the loop's thread).
        lock: guards ``held`` and every renewal.
    """

    def __init__(self, objects: ObjectStore, claimer: Claimer, ttl_sec: float) -> None:
        self.objects = objects
        self.claimer = claimer
        self.ttl_sec = ttl_sec
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()

    def take(
        self,
        experiment_id: str,
        claims: dict[str, ObjectInfo],
        budget: list[int],
        report: Callable[[str, str], None],
    ) -> Held | None:
        """The experiment's ``Held``, claiming it first when it may be claimed now.

        Args:
            experiment_id: the experiment.
            claims: the last listing of ``claims/``, by key.
            budget: new claims this poll may still take (one is spent per attempt).
            report: told ``(experiment_id, message)`` when the store refused to answer.
        """
        held = self.held.get(experiment_id)
        if held is not None:
            return held
        key = claim_key(experiment_id)
        info = claims.get(key)
        if info is not None and self.claimer.watched_sec(key, info.etag) < self.ttl_sec:
            return None  # another owner's, renewed within its ttl (or just seen)
        working = sum(1 for h in self.held.values() if not h.emitted)
        if budget[0] <= 0 or working >= MAX_HELD_CLAIMS:
            return None
        budget[0] -= 1
        try:
            claim = self.claimer.claim(experiment_id, self.ttl_sec)
        except LedgerError as exc:
            report(experiment_id, f"cannot claim it: {exc}")
            return None
        if claim is None:
            return None
        logger.debug("claimed %s (term %d)", experiment_id, claim.term)
        now = time.monotonic()
        held = Held(claim, renewed_t=now, changed_t=now)
        with self.lock:
            self.held[experiment_id] = held
        return held

    def fence(self, experiment_id: str) -> None:
        """Renew the experiment's claim before a write that must be this daemon's alone.

        Raises:
            ClaimLost: the claim is another owner's now, or this daemon holds none.
            LedgerError: the store failed (the claim may still be ours: try again later).
        """
        with self.lock:
            held = self.held.get(experiment_id)
            if held is None or held.lost:
                raise ClaimLost(f"{experiment_id}: this daemon holds no claim on it")
            try:
                held.claim = self.claimer.renew(held.claim)
            except ClaimLost:
                held.lost = True
                raise
            held.renewed_t = time.monotonic()

    def _renew(self, experiment_id: str, held: Held) -> None:
        """Renew one claim now (the caller holds ``lock``)."""
        try:
            held.claim = self.claimer.renew(held.claim)
        except ClaimLost as exc:
            logger.warning("%s; its work is left to that owner", exc)
            held.lost = True
            return
        except LedgerError as exc:
            logger.warning("cannot renew the claim of %s (will retry): %s", experiment_id, exc)
            return
        held.renewed_t = time.monotonic()

    def renew_forever(self, stop: threading.Event) -> None:
        """Renew every claim held once a third of its ttl has gone by, until ``stop``."""
        every_sec = self.ttl_sec / 3
        with ThreadPoolExecutor(RENEW_THREADS, thread_name_prefix="claim-renew") as pool:
            while not stop.wait(min(MAX_WAIT_SEC, every_sec / 4)):
                with self.lock:
                    due = [
                        (experiment_id, held)
                        for experiment_id, held in self.held.items()
                        if not held.lost and time.monotonic() - held.renewed_t >= every_sec
                    ]
                    list(pool.map(lambda item: self._renew(*item), due))

    def let_go(self, experiment_id: str, *, release: bool = True) -> None:
        """Stop holding an experiment; write its claim released unless it was lost."""
        with self.lock:
            held = self.held.pop(experiment_id, None)
        if held is None or held.lost or not release:
            return
        try:
            self.claimer.release(held.claim)
        except LedgerError as exc:
            logger.warning("cannot release the claim of %s (it expires): %s", experiment_id, exc)

    def drop(self, experiment_id: str) -> None:
        """Stop holding a settled experiment and delete its claim (``BucketWatcher._settle``
        says why that is safe)."""
        with self.lock:
            held = self.held.pop(experiment_id, None)
        if held is None or held.lost:
            return
        try:
            self.objects.delete(held.claim.key)
        except LedgerError as exc:
            logger.warning("cannot delete the claim of %s: %s", experiment_id, exc)
