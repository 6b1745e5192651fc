"""The daemon on a bucket root: any number of them share one root, each experiment emitted once.

``energy-ledger watch s3://bucket/prefix`` runs this loop instead of ``watcher.Watcher``. A
bucket has no inotify and no ``link(2)``; what it has is a listing and two conditional writes,
and the loop is built on those (docs/object-storage.md, "Running N daemons"):

- **One poll** lists the experiments (``list_folders("raw/")``: one delimiter listing, so
  their segments are not listed), ``claims/``, and the objects of each experiment this daemon
  holds. Every ``reconcile_interval_sec`` it also lists ``emissions/``: an experiment with an
  emission record and no hook owed is settled, and costs nothing but its name in the first
  listing after that. The claim of a settled experiment is deleted, so ``claims/`` holds only
  the experiments in progress.
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
  emits, and when a full poll finds the number of emission records changed since its last
  rebuild (another daemon may have died before rebuilding).
- **Experiments that cannot complete as they stand** (failed, invalid, or no new object for
  ``stale_after_sec``) are released and not claimed again by this daemon until their listing
  changes, which it looks at on full polls only.

- **A store failure under a scan** (a timeout, a 5xx: ``store.objectstore.NotingFailures``)
  is no verdict on the experiment: it is read again at the next poll, never retired for it.
- **/metrics** (``--metrics-port``): a snapshot published after every poll
  (``daemon.bucket_metrics``).

What a folder daemon has and this one has not yet: ``status.json``, report pages and partial
results of stale experiments (``--recover-stale``); ``watch`` refuses those options on a
bucket root with a message.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid

from energy_ledger.daemon.active import RETIRING
from energy_ledger.daemon.bucket_held import (
    MAX_NEW_CLAIMS_PER_POLL,
    Held,
    HeldClaims,
    Signature,
)
from energy_ledger.daemon.bucket_hooks import BucketHookRunner, hook_finished
from energy_ledger.daemon.bucket_metrics import bucket_snapshot
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.metrics import LoopCounters, SnapshotBox
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.outcomes import aggregate_scan
from energy_ledger.store.bucket_claims import (
    CLAIMS_PREFIX,
    EMISSIONS_PREFIX,
    Claimer,
    ClaimLost,
    emission_key,
    read_emission,
    record_emission,
)
from energy_ledger.store.bucket_reader import (
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
from energy_ledger.store.layout import RAW_DIR, experiment_key, is_valid_experiment_id
from energy_ledger.store.objectstore import NotingFailures, ObjectInfo, ObjectStore
from energy_ledger.store.probe import ConditionalWritesUnsupported, probe_conditional_writes

__all__ = ["BucketWatcher"]

logger = logging.getLogger(__name__)

PROBE_ATTEMPTS = 3
"""Start-ups of the conditional-write probe when the store fails (not when it is refused)."""


class BucketWatcher:
    """One of any number of daemons on one bucket root; ``run()`` blocks until stopped.

    Args:
        objects: the root's store (``store.objects.open_objects(url)``).
        config: the watch settings; ``lease_timeout_sec`` is the claims' ttl.
        stop_event: set it to stop (``run.run_watch`` sets it on SIGTERM/SIGINT).
        claimer: this daemon's claimer (its owner id); a new one by default.
        metrics: where to publish what ``/metrics`` shows (``daemon.bucket_metrics``).
        probed: the store was probed already (``run.check_bucket_startup``); ``run()`` probes
            it otherwise.
    """

    def __init__(
        self,
        objects: ObjectStore,
        config: WatchConfig,
        stop_event: threading.Event,
        *,
        claimer: Claimer | None = None,
        metrics: SnapshotBox | None = None,
        probed: bool = False,
    ) -> None:
        self.objects = objects
        self.config = config
        self.stop = stop_event
        self.wake = threading.Event()  # ``run._stop_on_signals`` sets it with ``stop``
        self.claimer = claimer or Claimer(objects)
        self.ttl_sec = config.lease_timeout_sec
        self.claims = HeldClaims(objects, self.claimer, self.ttl_sec)
        self.held = self.claims.held  # the same dict: read it under ``claims.lock`` off-loop
        self.settled: set[str] = set()
        self.retired: dict[str, tuple[Signature, str]] = {}
        self._hook_owed: dict[str, bool] = {}
        self._reported: dict[str, str] = {}
        self._rows: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._csv_due = False
        self._csv_emissions = -1
        self._next_reconcile = 0.0
        self._random = random.Random()
        self.hooks: BucketHookRunner | None = None
        self.metrics = metrics
        self.counters = LoopCounters()
        self.probed = probed

    @property
    def emitted(self) -> int:
        """Emission records this daemon created since it started."""
        return self.counters.emissions["complete"]

    # -- one poll ----------------------------------------------------------------------------
    def poll(self) -> bool:
        """List the root once and take every experiment this daemon holds one step further.

        A poll lists the experiments (``list_folders("raw/")``, one delimiter listing: their
        segments are not listed), ``claims/``, and each held experiment's own objects. Every
        ``reconcile_interval_sec`` (and at the first poll) it also lists ``emissions/``, which
        settles what other daemons emitted, and looks again at the experiments it retired.

        Returns:
            Whether it was a full poll.
        """
        now = time.monotonic()
        full = now >= self._next_reconcile
        if full:
            self._next_reconcile = now + self.config.reconcile_interval_sec
        ids, rejected = self._experiments()
        for name in rejected:
            self._report_once(name, "unsafe experiment folder name; never read")
        claims = {info.key: info for info in self.objects.list(CLAIMS_PREFIX)}
        emissions: set[str] | None = None
        if full:
            emissions = {info.key for info in self.objects.list(EMISSIONS_PREFIX)}
            for key in emissions:
                name = key.removeprefix(EMISSIONS_PREFIX).removesuffix(".json")
                if "@" not in name and self._owes_hook(name, emissions) is False:
                    self._settle(name)
        for experiment_id in [e for e, h in self.held.items() if h.lost]:
            self.claims.let_go(experiment_id, release=False)
        present = set(ids)
        for experiment_id in [e for e in self.held if e not in present]:
            logger.info("%s: its objects are gone; not watched any more", experiment_id)
            self.claims.let_go(experiment_id)
        todo = [e for e in ids if e not in self.settled and (full or e not in self.retired)]
        self._random.shuffle(todo)
        todo.sort(key=lambda e: e not in self.held)  # the ones held first, then a random order
        budget = [MAX_NEW_CLAIMS_PER_POLL]
        for experiment_id in todo:
            if self.stop.is_set():
                return full
            self._visit(experiment_id, claims, emissions, budget)
        if emissions is not None:
            records = sum(1 for key in emissions if "@" not in key)
            if records != self._csv_emissions:
                self._csv_due = True
        if self._csv_due:
            self._sync_csv(None if emissions is None else records)
        return full

    def _experiments(self) -> tuple[list[str], list[str]]:
        """The experiment ids under ``raw/``, and the names refused (hidden names skipped)."""
        ids: list[str] = []
        rejected: list[str] = []
        for name in self.objects.list_folders(f"{RAW_DIR}/"):
            if not name.startswith("."):
                (ids if is_valid_experiment_id(name) else rejected).append(name)
        return ids, rejected

    def _visit(
        self,
        experiment_id: str,
        claims: dict[str, ObjectInfo],
        emissions: set[str] | None,
        budget: list[int],
    ) -> None:
        """Take one experiment a step: claim it, read what is new, emit, or see its hook on."""
        held = self.held.get(experiment_id)
        if held is None:
            if emissions is not None and emission_key(experiment_id) in emissions:
                self._after_emission(experiment_id, emissions, claims, budget)
                return
            prefix = experiment_key(experiment_id)
            if experiment_id in self.retired:  # a full poll: has it changed?
                if _signature(self.objects.list(prefix)) == self.retired[experiment_id][0]:
                    return
                del self.retired[experiment_id]
                logger.info("%s changed; reading it again", experiment_id)
            held = self.claims.take(experiment_id, claims, budget, self._report_once)
            if held is None:
                return
            if self.objects.head(emission_key(experiment_id)) is not None:
                # Emitted by another daemon since this one last listed emissions/.
                found = self._emission_keys(experiment_id)
                self._after_emission(experiment_id, found, claims, budget)
                return
        if held.lost:
            return
        if held.emitted:  # its hook is on its way
            if self.hooks is None or self.hooks.finished(experiment_id):
                self._settle(experiment_id)
            elif not self.hooks.busy(experiment_id):
                self.hooks.submit(experiment_id)
            return
        objs = self.objects.list(experiment_key(experiment_id))
        if objs:
            self._step(experiment_id, held, objs, _signature(objs))

    def _emission_keys(self, experiment_id: str) -> set[str]:
        """An emitted experiment's record and hook markers: what a full poll's listing of
        ``emissions/`` holds of it, listed for it alone."""
        found = {info.key for info in self.objects.list(_markers_prefix(experiment_id))}
        found.add(emission_key(experiment_id))
        return found

    def _settle(self, experiment_id: str) -> None:
        """Emitted, nothing owed: never looked at again; its claim (if held) is deleted.

        Deleting is safe here although a delete is not conditional: the emission record and
        the hook's markers say all there is to say, so a claim on a settled experiment guards
        nothing (a daemon that claims it afterwards finds the record and settles it too), and
        ``claims/`` then holds only the experiments in progress, which keeps its listing short.
        """
        self.settled.add(experiment_id)
        self.retired.pop(experiment_id, None)
        self._hook_owed.pop(experiment_id, None)
        self.claims.drop(experiment_id)

    def _after_emission(
        self,
        experiment_id: str,
        emissions: set[str],
        claims: dict[str, ObjectInfo],
        budget: list[int],
    ) -> None:
        """An emitted experiment: settle it, or drive its hook while one is owed."""
        owed = self._owes_hook(experiment_id, emissions)
        if owed is None:
            return  # the store failed: looked at again at the next poll
        if not owed:
            self._settle(experiment_id)
            return
        held = self.claims.take(experiment_id, claims, budget, self._report_once)
        if held is None or held.lost or self.hooks is None:
            return
        held.emitted = True
        if self.hooks.finished(experiment_id):
            self._settle(experiment_id)
        elif not self.hooks.busy(experiment_id):
            self.hooks.submit(experiment_id)

    def _owes_hook(self, experiment_id: str, emissions: set[str]) -> bool | None:
        """Whether this daemon must see the experiment's hook through (read once per record);
        ``None`` when the store failed to say (not a verdict: asked again later)."""
        if self.hooks is None or hook_finished(emissions, experiment_id):
            return False
        owed = self._hook_owed.get(experiment_id)
        if owed is None:
            try:
                record = read_emission(self.objects, experiment_id)
            except LedgerError as exc:
                self._report_once(experiment_id, f"cannot read its emission record: {exc}")
                return None
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
                state = held.state if held.state in RETIRING else "stale"
                why = state if state != "stale" else f"stale ({idle_sec:.0f} s idle)"
                logger.info("%s is %s; released until its objects change", experiment_id, why)
                self.retired[experiment_id] = (signature, state)
                self.claims.let_go(experiment_id)
            return
        held.signature, held.changed_t = signature, now
        mark, started = self.counters.mark(held.tails), time.perf_counter()
        watched = NotingFailures(self.objects)
        try:
            scan = scan_bucket_experiment(
                watched, experiment_id, listing=objs, segment_tails=held.tails
            )
        except LedgerError as exc:
            scan = None
            if watched.failed is None:
                held.state, held.detail = "invalid", str(exc)
                self._report_once(experiment_id, f"invalid: {exc}")
        self.counters.scanned(held.tails, mark, time.perf_counter() - started)
        if watched.failed is not None:
            # The store failed under the scan: no verdict on the experiment; read it again at
            # the next poll (its cursors keep what they had read).
            held.signature = None
            self._report_once(experiment_id, f"cannot read it (trying again): {watched.failed}")
            return
        assert scan is not None
        report = scan.report
        held.state, held.detail = report.state, report.error_message or ""
        if not report.is_complete:
            if report.state in RETIRING:
                self._report_once(experiment_id, f"{report.state}: {held.detail}")
            return
        try:
            self._emit(experiment_id, held, aggregate_scan(scan), _newest_marker_t(objs))
        except ClaimLost as exc:
            logger.warning("%s; not emitted by this daemon", exc)
        except LedgerError as exc:
            held.signature = None  # tried again at the next poll
            self._report_once(experiment_id, f"cannot emit: {exc}")

    def _emit(
        self,
        experiment_id: str,
        held: Held,
        result: ExperimentResult,
        marker_t: float | None = None,
    ) -> None:
        """Fence, create the result once, create the emission record once, start the hook.

        ``marker_t``: when the last marker was written, by the store's clock (``/metrics``).
        """
        self.claims.fence(experiment_id)
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
            # Another daemon (or term) created the record: its hook, if still owed, is this
            # claim's to see through now.
            logger.info("%s: already emitted by another daemon", experiment_id)
            self._after_emission(experiment_id, self._emission_keys(experiment_id), {}, [0])
            return
        self.counters.emissions["complete"] += 1
        if marker_t is not None and put.changed:
            self.counters.emission_latency.observe(max(0.0, time.time() - marker_t))
        self._csv_due = True
        logger.info(
            "emitted %s (claim term %d) -> %s/%s",
            experiment_id,
            held.claim.term,
            self.objects.url,
            put.key,
        )
        if self.hooks is None:
            self._settle(experiment_id)
            return
        self._hook_owed[experiment_id] = True
        held.tails = {}  # its segments are not read again
        self.hooks.submit(experiment_id)

    def _sync_csv(self, emissions: int | None) -> None:
        """Rebuild the CSV; ``emissions``: the records a full poll counted (kept to compare)."""
        try:
            sync = sync_bucket_csv(self.objects, self._rows, learned=self._rows)
        except LedgerError as exc:
            logger.warning("cannot rebuild %s/%s (will retry): %s", self.objects.url, CSV_KEY, exc)
            return
        self._csv_due = False
        if emissions is not None:
            self._csv_emissions = emissions
        if sync.written:
            logger.info("rebuilt %s/%s: %d row(s)", self.objects.url, CSV_KEY, sync.rows)

    def _publish(self, poll_sec: float) -> None:
        """Hand ``/metrics`` a snapshot of what this poll left (``daemon.bucket_metrics``)."""
        if self.metrics is None:
            return
        with self.claims.lock:
            held = {e: (h.state, h.emitted, h.changed_t, h.tails) for e, h in self.held.items()}
        hooks = self.hooks
        self.metrics.publish(
            bucket_snapshot(
                self.counters,
                held,
                {e: state for e, (_, state) in self.retired.items()},
                len(self.settled),
                host=self.claimer.owner,
                poll_sec=poll_sec,
                hook_runs=hooks.runs if hooks is not None else 0,
                hook_failures=hooks.failures if hooks is not None else 0,
            )
        )

    def _report_once(self, experiment_id: str, message: str) -> None:
        if self._reported.get(experiment_id) != message:
            self._reported[experiment_id] = message
            logger.warning("%s: %s", experiment_id, message)

    # -- lifecycle ---------------------------------------------------------------------------
    def _probe(self) -> None:
        """``probe_conditional_writes``, tried again after a failure of the store itself (a
        timeout, a 5xx): ``PROBE_ATTEMPTS`` times, a second apart. A store that ignores a
        condition is refused at once."""
        for attempt in range(1, PROBE_ATTEMPTS + 1):
            try:
                probe_conditional_writes(self.objects)
                return
            except ConditionalWritesUnsupported:
                raise
            except LedgerError as exc:
                if attempt == PROBE_ATTEMPTS or self.stop.wait(1.0):
                    raise
                logger.warning("probe of %s failed (trying again): %s", self.objects.url, exc)

    def run(self) -> int:
        """Probe the store, then poll every ``poll_interval_sec`` until stopped; exit status 0.

        Raises:
            LedgerError: the store ignores conditional writes (``ConditionalWritesUnsupported``)
                or cannot be written at all.
        """
        if not self.probed:
            self._probe()
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
                fence=self.claims.fence,
                holder=self.claimer.owner,
                max_attempts=self.config.hook_max_attempts,
                backoff_sec=self.config.hook_backoff_sec,
                timeout_sec=self.config.hook_timeout_sec,
            )
        renewer = threading.Thread(
            target=self.claims.renew_forever, args=(self.stop,), name="claim-renewer", daemon=True
        )
        renewer.start()
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    full = self.poll()
                    poll_sec = time.monotonic() - started
                    kind = "reconcile" if full else "active"
                    self.counters.sweep_duration[kind].observe(poll_sec)
                    self._publish(poll_sec)
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
                self.claims.let_go(experiment_id)
        logger.info("stopping")
        return 0


def _signature(objs: list[ObjectInfo]) -> Signature:
    """An experiment's listing as compared between polls: keys, sizes and ETags."""
    return tuple((o.key, o.size, o.etag) for o in objs)


def _markers_prefix(experiment_id: str) -> str:
    """The prefix of an experiment's hook markers under ``emissions/`` (``<id>@...``)."""
    return f"{EMISSIONS_PREFIX}{experiment_id}@"


def _newest_marker_t(objs: list[ObjectInfo]) -> float | None:
    """When the newest marker of an experiment's listing was written (the store's clock)."""
    times = [o.modified_t for o in objs if o.key.endswith(".done") and o.modified_t is not None]
    return max(times, default=None)
