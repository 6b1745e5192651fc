"""The daemon on a bucket root: any number of them share one root, each experiment emitted once.

``energy-ledger watch s3://bucket/prefix`` runs this loop instead of ``watcher.Watcher``. A
bucket has no inotify and no ``link(2)``; what it has is a listing and two conditional writes,
and the loop is built on those (docs/object-storage.md, "Running N daemons"):

- **One poll** lists ``raw/``, ``emissions/`` and ``claims/`` (one paginated call each). An
  experiment with an emission record and no hook owed is settled: it costs nothing after that.
- **Claims.** A daemon reads an experiment's segments only while it holds its claim
  (``store.bucket_claims``): it creates ``claims/<id>.json``, or takes over a claim whose ETag
  it has seen unchanged for the claim's ttl on its own monotonic clock, or one released. The
  ETags come from the listing of ``claims/``, so a claim held by a live daemon costs nothing
  but its line in that listing. A renewer thread rewrites each claim held every third of its
  ttl (``lease_timeout_sec``), whatever the loop is busy with.
- **Incremental reads.** Per claimed experiment one ``SegmentTail`` per process: a poll whose
  listing shows new segments fetches only those.
- **Exactly once.** When the experiment is complete the result is aggregated, the claim is
  renewed (a fence: a daemon paused past its ttl learns here that it lost it), the result is
  created once (``If-None-Match: *``; equal bytes count as there), and then the emission record
  ``emissions/<id>.json`` is created once. Only the daemon whose create of that record
  succeeded runs the hook, and each hook attempt is itself created once
  (``daemon.bucket_hooks``). A daemon killed anywhere in between leaves objects another daemon
  completes once the claim expires: a result found holding the same bytes, an emission record
  with no hook attempt, an attempt whose supervisor outlives the daemon and records its end.
- **The CSV** (``aggregated/results.csv``) is rebuilt by compare-and-swap after this daemon
  emits, and whenever the number of emission records changed since its last rebuild (another
  daemon may have died before rebuilding).
- **Experiments that cannot complete as they stand** (failed, invalid, or no new object for
  ``stale_after_sec``) are released and not claimed again by this daemon until their listing
  changes.

What a folder daemon has and this one has not yet: ``status.json``, ``/metrics``, report pages
and partial results of stale experiments (``--recover-stale``); ``watch`` refuses those options
on a bucket root with a message.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from energy_ledger.daemon.active import RETIRING
from energy_ledger.daemon.bucket_hooks import BucketHookRunner, hook_finished
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.outcomes import aggregate_scan
from energy_ledger.store.bucket_claims import (
    CLAIMS_PREFIX,
    EMISSIONS_PREFIX,
    Claim,
    Claimer,
    ClaimLost,
    claim_key,
    emission_key,
    read_emission,
    record_emission,
)
from energy_ledger.store.bucket_reader import (
    experiment_objects,
    list_bucket_experiments,
    scan_bucket_experiment,
)
from energy_ledger.store.bucket_results import (
    CSV_KEY,
    put_result,
    remove_partial,
    result_key,
    sync_bucket_csv,
)
from energy_ledger.store.exporters import csv_row
from energy_ledger.store.objectstore import ObjectInfo, ObjectStore
from energy_ledger.store.probe import probe_conditional_writes
from energy_ledger.store.segments import SegmentTail

__all__ = ["MAX_HELD_CLAIMS", "MAX_NEW_CLAIMS_PER_POLL", "BucketWatcher", "Held"]

logger = logging.getLogger(__name__)

MAX_NEW_CLAIMS_PER_POLL = 16
"""Claims a daemon takes in one poll: daemons that start together share the root's work (each
takes its claims in its own random order) instead of the first one claiming everything."""
MAX_HELD_CLAIMS = 64
"""Claims a daemon holds at once: it takes no new one beyond them, leaving the rest of the
root's work to other daemons, and its renewals (one put each per third of the ttl) stay few."""
RENEW_THREADS = 8
"""Renewals sent at once: a round of ``MAX_HELD_CLAIMS`` renewals takes a few round trips."""
MAX_WAIT_SEC = 0.5
"""Longest sleep of the loop and of the renewer, so a stop is seen within this long."""

Signature = tuple[tuple[str, int, str], ...]


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


class BucketWatcher:
    """One of any number of daemons on one bucket root; ``run()`` blocks until stopped.

    Args:
        objects: the root's store (``store.objects.open_objects(url)``).
        config: the watch settings; ``lease_timeout_sec`` is the claims' ttl.
        stop_event: set it to stop (``run.run_watch`` sets it on SIGTERM/SIGINT).
        claimer: this daemon's claimer (its owner id); a new one by default.
    """

    def __init__(
        self,
        objects: ObjectStore,
        config: WatchConfig,
        stop_event: threading.Event,
        *,
        claimer: Claimer | None = None,
    ) -> None:
        self.objects = objects
        self.config = config
        self.stop = stop_event
        self.wake = threading.Event()  # ``run._stop_on_signals`` sets it with ``stop``
        self.claimer = claimer or Claimer(objects)
        self.ttl_sec = config.lease_timeout_sec
        self.held: dict[str, Held] = {}
        self.settled: set[str] = set()
        self.retired: dict[str, Signature] = {}
        self.emitted = 0
        self._hook_owed: dict[str, bool] = {}
        self._reported: dict[str, str] = {}
        self._rows: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._csv_due = False
        self._csv_emissions = -1
        self._lock = threading.Lock()
        self._random = random.Random()
        self.hooks: BucketHookRunner | None = None

    # -- claims ----------------------------------------------------------------------------
    def _renew(self, experiment_id: str, held: Held) -> bool:
        """Renew one claim now (the caller holds ``_lock``); False when it is lost."""
        try:
            held.claim = self.claimer.renew(held.claim)
        except ClaimLost as exc:
            logger.warning("%s; its work is left to that owner", exc)
            held.lost = True
            return False
        except LedgerError as exc:
            logger.warning("cannot renew the claim of %s (will retry): %s", experiment_id, exc)
            return True
        held.renewed_t = time.monotonic()
        return True

    def fence(self, experiment_id: str) -> None:
        """Renew the experiment's claim before a write that must be this daemon's alone.

        Raises:
            ClaimLost: the claim is another owner's now, or this daemon holds none.
            LedgerError: the store failed (the claim may still be ours: try again later).
        """
        with self._lock:
            held = self.held.get(experiment_id)
            if held is None or held.lost:
                raise ClaimLost(f"{experiment_id}: this daemon holds no claim on it")
            try:
                held.claim = self.claimer.renew(held.claim)
            except ClaimLost:
                held.lost = True
                raise
            held.renewed_t = time.monotonic()

    def _renewer(self) -> None:
        """Thread: renew every claim held once a third of its ttl has gone by."""
        every_sec = self.ttl_sec / 3
        with ThreadPoolExecutor(RENEW_THREADS, thread_name_prefix="claim-renew") as pool:
            while not self.stop.wait(min(MAX_WAIT_SEC, every_sec / 4)):
                with self._lock:
                    due = [
                        (experiment_id, held)
                        for experiment_id, held in self.held.items()
                        if not held.lost and time.monotonic() - held.renewed_t >= every_sec
                    ]
                    list(pool.map(lambda item: self._renew(*item), due))

    def _hold(
        self, experiment_id: str, claims: dict[str, ObjectInfo], budget: list[int]
    ) -> Held | None:
        """The experiment's ``Held``, claiming it first when it may be claimed now."""
        held = self.held.get(experiment_id)
        if held is not None:
            return held
        key = claim_key(experiment_id)
        info = claims.get(key)
        if info is not None and self.claimer.watched_sec(key, info.etag) < self.ttl_sec:
            return None  # another owner's, renewed within its ttl (or just seen)
        if budget[0] <= 0 or len(self.held) >= MAX_HELD_CLAIMS:
            return None
        budget[0] -= 1
        try:
            claim = self.claimer.claim(experiment_id, self.ttl_sec)
        except LedgerError as exc:
            self._report_once(experiment_id, f"cannot claim it: {exc}")
            return None
        if claim is None:
            return None
        logger.debug("claimed %s (term %d)", experiment_id, claim.term)
        held = Held(claim, renewed_t=time.monotonic(), changed_t=time.monotonic())
        with self._lock:
            self.held[experiment_id] = held
        return held

    def _let_go(self, experiment_id: str, *, release: bool = True) -> None:
        """Stop holding an experiment; write its claim released unless it was lost."""
        with self._lock:
            held = self.held.pop(experiment_id, None)
        if held is None or held.lost or not release:
            return
        try:
            self.claimer.release(held.claim)
        except LedgerError as exc:
            logger.warning("cannot release the claim of %s (it expires): %s", experiment_id, exc)

    # -- one poll ----------------------------------------------------------------------------
    def poll(self) -> None:
        """List the root once and take every experiment this daemon holds one step further."""
        listing, raw = list_bucket_experiments(self.objects)
        emissions = {info.key for info in self.objects.list(EMISSIONS_PREFIX)}
        claims = {info.key: info for info in self.objects.list(CLAIMS_PREFIX)}
        for name, reason in listing.rejected:
            self._report_once(name, reason)
        for experiment_id in [e for e, h in self.held.items() if h.lost]:
            self._let_go(experiment_id, release=False)
        present = set(listing.experiment_ids)
        for experiment_id in [e for e in self.held if e not in present]:
            logger.info("%s: its objects are gone; not watched any more", experiment_id)
            self._let_go(experiment_id)
        ids = [e for e in listing.experiment_ids if e not in self.settled]
        self._random.shuffle(ids)
        ids.sort(key=lambda e: e not in self.held)  # the ones held first, then a random order
        budget = [MAX_NEW_CLAIMS_PER_POLL]
        for experiment_id in ids:
            if self.stop.is_set():
                return
            if emission_key(experiment_id) in emissions:
                self._after_emission(experiment_id, emissions, claims, budget)
                continue
            objs = experiment_objects(raw, experiment_id)
            signature = tuple((o.key, o.size, o.etag) for o in objs)
            if self.retired.get(experiment_id) == signature:
                continue
            held = self._hold(experiment_id, claims, budget)
            if held is not None and not held.lost:
                self._step(experiment_id, held, objs, signature)
        count = sum(1 for key in emissions if "@" not in key)
        if self._csv_due or count != self._csv_emissions:
            self._sync_csv(count)

    def _after_emission(
        self,
        experiment_id: str,
        emissions: set[str],
        claims: dict[str, ObjectInfo],
        budget: list[int],
    ) -> None:
        """An emitted experiment: settle it, or drive its hook while one is owed."""
        if not self._owes_hook(experiment_id, emissions):
            self.settled.add(experiment_id)
            self.retired.pop(experiment_id, None)
            self._let_go(experiment_id)
            return
        held = self._hold(experiment_id, claims, budget)
        if held is None or held.lost or self.hooks is None:
            return
        held.emitted = True
        if self.hooks.finished(experiment_id):
            self.settled.add(experiment_id)
            self._let_go(experiment_id)
        elif not self.hooks.busy(experiment_id):
            self.hooks.submit(experiment_id)

    def _owes_hook(self, experiment_id: str, emissions: set[str]) -> bool:
        """Whether this daemon must see the experiment's hook through (read once per record)."""
        if self.hooks is None or hook_finished(emissions, experiment_id):
            return False
        owed = self._hook_owed.get(experiment_id)
        if owed is None:
            try:
                record = read_emission(self.objects, experiment_id)
            except LedgerError as exc:
                self._report_once(experiment_id, f"cannot read its emission record: {exc}")
                return False
            if record is None:
                self._report_once(experiment_id, "its emission record is unreadable; no hook")
                return False
            owed = self._hook_owed[experiment_id] = record.body.get("hook") is True
        return owed

    def _step(
        self, experiment_id: str, held: Held, objs: list[ObjectInfo], signature: Signature
    ) -> None:
        """Scan a held experiment when its listing changed; emit it when complete."""
        now = time.monotonic()
        if held.signature == signature:
            idle_sec = now - held.changed_t
            if held.state in RETIRING or idle_sec > self.config.stale_after_sec:
                why = held.state if held.state in RETIRING else f"stale ({idle_sec:.0f} s idle)"
                logger.info("%s is %s; released until its objects change", experiment_id, why)
                self.retired[experiment_id] = signature
                self._let_go(experiment_id)
            return
        held.signature, held.changed_t = signature, now
        try:
            scan = scan_bucket_experiment(
                self.objects, experiment_id, listing=objs, segment_tails=held.tails
            )
        except LedgerError as exc:
            held.state, held.detail = "invalid", str(exc)
            self._report_once(experiment_id, f"invalid: {exc}")
            return
        report = scan.report
        held.state, held.detail = report.state, report.error_message or ""
        if not report.is_complete:
            if report.state in RETIRING:
                self._report_once(experiment_id, f"{report.state}: {held.detail}")
            return
        try:
            self._emit(experiment_id, held, aggregate_scan(scan))
        except ClaimLost as exc:
            logger.warning("%s; not emitted by this daemon", exc)
        except LedgerError as exc:
            held.signature = None  # tried again at the next poll
            self._report_once(experiment_id, f"cannot emit: {exc}")

    def _emit(self, experiment_id: str, held: Held, result: ExperimentResult) -> None:
        """Fence, create the result once, create the emission record once, start the hook."""
        self.fence(experiment_id)
        put = put_result(self.objects, result)
        if put.action == "kept":
            logger.warning(
                "%s/%s holds other bytes than this version derives; left as it is",
                self.objects.url,
                put.key,
            )
        else:
            self._rows[put.key] = (put.etag, tuple(csv_row(result)))
        if self.objects.head(result_key(experiment_id, partial=True)) is not None:
            remove_partial(self.objects, experiment_id)
        body = {
            "emission_id": uuid.uuid4().hex,
            "result": put.key,
            "hook": self.hooks is not None,
            "emitted_t": time.time(),
        }
        mine = record_emission(self.objects, experiment_id, held.claim, body)
        held.emitted = True
        if not mine:
            logger.info("%s: already emitted by another daemon; nothing run", experiment_id)
            self.settled.add(experiment_id)
            self._let_go(experiment_id)
            return
        self.emitted += 1
        self._csv_due = True
        logger.info(
            "emitted %s (claim term %d) -> %s/%s",
            experiment_id,
            held.claim.term,
            self.objects.url,
            put.key,
        )
        if self.hooks is None:
            self.settled.add(experiment_id)
            self._let_go(experiment_id)
            return
        self._hook_owed[experiment_id] = True
        held.tails = {}  # its segments are not read again
        self.hooks.submit(experiment_id)

    def _sync_csv(self, emissions: int) -> None:
        try:
            sync = sync_bucket_csv(self.objects, self._rows, learned=self._rows)
        except LedgerError as exc:
            logger.warning("cannot rebuild %s/%s (will retry): %s", self.objects.url, CSV_KEY, exc)
            return
        self._csv_due, self._csv_emissions = False, emissions
        if sync.written:
            logger.info("rebuilt %s/%s: %d row(s)", self.objects.url, CSV_KEY, sync.rows)

    def _report_once(self, experiment_id: str, message: str) -> None:
        if self._reported.get(experiment_id) != message:
            self._reported[experiment_id] = message
            logger.warning("%s: %s", experiment_id, message)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        """Probe the store, then poll every ``poll_interval_sec`` until stopped; exit status 0.

        Raises:
            LedgerError: the store ignores conditional writes (``ConditionalWritesUnsupported``)
                or cannot be written at all.
        """
        probe_conditional_writes(self.objects)
        logger.info(
            "watching %s as %s (polling every %g s, claims expire after %g s)",
            self.objects.url,
            self.claimer.owner,
            self.config.poll_interval_sec,
            self.ttl_sec,
        )
        argv = self.config.hook_argv()
        if argv is not None:
            self.hooks = BucketHookRunner(
                self.objects,
                argv,
                fence=self.fence,
                holder=self.claimer.owner,
                max_attempts=self.config.hook_max_attempts,
                backoff_sec=self.config.hook_backoff_sec,
                timeout_sec=self.config.hook_timeout_sec,
            )
        renewer = threading.Thread(target=self._renewer, name="claim-renewer", daemon=True)
        renewer.start()
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    self.poll()
                except LedgerError as exc:
                    logger.warning("poll of %s failed (will retry): %s", self.objects.url, exc)
                except Exception:  # the watch must outlive any one bad surprise
                    logger.exception("watch loop error (continuing)")
                wait = self.config.poll_interval_sec - (time.monotonic() - started)
                self.stop.wait(max(0.0, wait))
        finally:
            self.stop.set()
            renewer.join(timeout=5.0)
            if self.hooks is not None:
                self.hooks.close(grace_sec=0.8)
            for experiment_id in list(self.held):
                self._let_go(experiment_id)
        logger.info("stopping")
        return 0
