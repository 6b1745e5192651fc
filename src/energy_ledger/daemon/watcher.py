"""The watcher's loop: emit every complete experiment under a root exactly once, soon after it ends.

It builds on ``pipeline.process_experiment``, the code path ``replay`` uses, and keeps one
``LogTail`` per process log of each *active* (not yet emitted) experiment, so a change costs only
the bytes appended. Changes come from inotify on local filesystems; on network filesystems, where
other hosts' writes raise no local event, it polls the active experiments and lists ``raw/`` each
interval. Either way a periodic full reconcile catches anything missed. Emitted experiments are
recorded in the state store and cost nothing afterwards. The rest of ``daemon/`` is what the loop
uses: ``sources`` and ``changes`` (what changed), ``records`` (what was emitted), ``hooks``
(``--on-emit``), ``lease`` (one daemon per root), ``status`` (``status.json``), ``metrics`` (what
``/metrics`` shows, published for ``exporter``); ``run`` adds the signals and exit codes around
it and is what ``energy-ledger watch`` calls.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from energy_ledger.daemon.active import (
    RETIRE_QUIET_SEC,
    RETIRING,
    Retired,
    Tracked,
    live_of,
    status_rows,
)
from energy_ledger.daemon.changes import DirProbe, PendingChanges
from energy_ledger.daemon.claims import TempSweeper
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.gate import claim_emission
from energy_ledger.daemon.hooks import HookRunner
from energy_ledger.daemon.lease import Lease
from energy_ledger.daemon.metrics import LoopCounters, SnapshotBox, marker_latency_sec
from energy_ledger.daemon.records import Kind, StateStore, emission_key, state_dir_for
from energy_ledger.daemon.reports import ReportWriter
from energy_ledger.daemon.sources import InotifySource, choose_polling
from energy_ledger.daemon.status import MAX_LISTED, StatusFile, status_view
from energy_ledger.exceptions import LeaseLostError, LedgerError
from energy_ledger.pipeline import process_experiment, recover_experiment, up_to_date
from energy_ledger.store.layout import ResultsLayout, is_valid_experiment_id
from energy_ledger.store.reader import folder_fingerprint, list_experiments, newest_mtime

__all__ = ["EXIT_ERROR", "EXIT_LEASE_HELD", "EXIT_LEASE_LOST", "EXIT_OK", "Tracked", "Watcher"]

logger = logging.getLogger(__name__)

# The daemon's exit codes (``run.run_watch`` returns them); the loop ends with OK or LEASE_LOST.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_LEASE_HELD = 3
EXIT_LEASE_LOST = 4

MAX_WAIT_SEC = 0.5
"""Longest sleep of the loop, so a caller's ``stop_event`` is seen within this long."""
ACTIVE_SWEEP_SEC = 5.0
"""inotify mode: rescan the active experiments this often anyway (a missed event costs <= this)."""
STATUS_MIN_INTERVAL_SEC = 0.5
"""``status.json`` is rewritten at most this often between heartbeats."""


class Watcher:
    """One daemon on one results root. Use ``run.run_watch``; ``run()`` blocks until stopped."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: WatchConfig,
        stop_event: threading.Event,
        *,
        metrics: SnapshotBox | None = None,
    ) -> None:
        self.layout = ResultsLayout.at(root)
        self.config = config
        self.state_dir = state_dir_for(root, config.state_dir)
        self.stop = stop_event
        self.wake = threading.Event()
        self.changes = PendingChanges(self.wake)
        self.store = StateStore(self.state_dir)
        self.lease = Lease(self.state_dir, config.lease_timeout_sec)
        self.hooks: HookRunner | None = None
        self.reports: ReportWriter | None = None
        self.source: InotifySource | None = None
        self.polling = False
        self.fs_type: str | None = None
        self.active: dict[str, Tracked] = {}
        self.retired: dict[str, Retired] = {}
        self.rejected: dict[str, str] = {}
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LISTED)
        self.started_t = time.time()
        self.last_lag_sec = 0.0
        self.metrics = metrics
        self.counters = LoopCounters(started_t=self.started_t)
        self.status_file = StatusFile(self.state_dir)
        self._raw_probe = DirProbe(self.layout.raw_dir)
        # The state folder is small: swept at every heartbeat. aggregated/ may hold thousands of
        # results: listed at start-up and one heartbeat later only.
        self._temp_sweepers = [
            TempSweeper([self.state_dir]),
            TempSweeper([self.layout.aggregated_dir], max_looks=2),
        ]

    def _overflowed(self) -> None:
        """inotify lost events (called on the observer thread): relist, rescan the active."""
        logger.warning("inotify dropped events; relisting %s", self.layout.raw_dir)
        self.changes.mark_all([*self.active, *self.retired])

    # -- reporting --------------------------------------------------------------------------
    def _error(self, experiment_id: str | None, message: str) -> None:
        self.errors.append({"t": time.time(), "experiment_id": experiment_id, "error": message})

    def _report(self, experiment_id: str, tracked: Tracked) -> None:
        """Log a bad experiment once per distinct reason (it is skipped, the watch goes on)."""
        if tracked.state not in ("invalid", "failed") and not tracked.detail.startswith("cannot"):
            return
        if tracked.reported == tracked.detail:
            return
        tracked.reported = tracked.detail
        logger.warning("%s is %s; skipped: %s", experiment_id, tracked.state, tracked.detail)
        self._error(experiment_id, f"{tracked.state}: {tracked.detail}")

    # -- the work ---------------------------------------------------------------------------
    def _emitted(
        self, experiment_id: str, kind: str, path: Path, *, latency_sec: float | None = None
    ) -> None:
        """Claim the emission of a result just written (``gate``), then schedule its hook.

        ``latency_sec``: from the experiment's last marker to its result, when this daemon
        wrote the result just now (``/metrics``).
        """
        emission_kind: Kind = "complete" if kind == "complete" else "partial"
        key = emission_key(experiment_id, emission_kind)
        try:
            holder, mine = claim_emission(
                self.store, self.lease, experiment_id, emission_kind, hook=self.hooks is not None
            )
        except LeaseLostError:
            raise
        except LedgerError as exc:
            # The result is on disk; it is claimed when the experiment is next looked at.
            logger.error("%s: emitted but not recorded: %s", experiment_id, exc)
            self._error(experiment_id, f"cannot record emission: {exc}")
            return
        if kind == "complete":
            self.active.pop(experiment_id, None)
        if not mine:
            logger.info(
                "%s: already emitted (emission %s); its hook is not run again",
                key,
                holder.emission_id or "of an unreadable record",
            )
            return
        self.counters.emissions[emission_kind] += 1
        if latency_sec is not None:
            self.counters.emission_latency.observe(latency_sec)
        logger.info(
            "emitted %s%s (emission %s) -> %s",
            experiment_id,
            " (partial)" * (kind != "complete"),
            holder.emission_id,
            path,
        )
        if self.hooks is not None:
            self.hooks.submit(key)
        if self.reports is not None:
            self.reports.submit(experiment_id)

    def _process(self, experiment_id: str) -> None:
        """Scan one experiment from where its cursors stopped; emit it when complete."""
        if not is_valid_experiment_id(experiment_id):
            self._reject(experiment_id, "unsafe experiment folder name; never read")
            return
        record = self.store.get(experiment_id)
        if record is not None and record.result_path(self.layout.root).exists():
            self.active.pop(experiment_id, None)
            self.retired.pop(experiment_id, None)
            return
        directory = self.layout.experiment_dir(experiment_id)
        retired = self.retired.get(experiment_id)
        if retired is not None:
            if folder_fingerprint(directory, self.layout.root) == retired.fingerprint:
                return  # nothing changed: its logs are not opened
            del self.retired[experiment_id]
            logger.info("%s changed; reading it again", experiment_id)
        tracked = self.active.get(experiment_id)
        if tracked is None:
            if not directory.is_dir():
                return
            tracked = self.active[experiment_id] = Tracked(
                last_activity_t=newest_mtime(directory) or time.time(),
                recovered=self.store.get(emission_key(experiment_id, "partial")) is not None,
                reported=retired.reported if retired is not None else "",
            )
        # Taken before the scan, so that a write during the scan changes it: a retired
        # experiment is never left behind a change.
        settled = time.time() - tracked.last_activity_t > RETIRE_QUIET_SEC
        candidate = tracked.stale or tracked.state in RETIRING or tracked.state == "new"
        fingerprint = folder_fingerprint(directory, self.layout.root) if candidate else None
        mark = self.counters.mark(tracked.tails)
        t0 = time.perf_counter()
        outcome = process_experiment(self.layout, experiment_id, tails=tracked.tails)
        self.counters.scanned(tracked.tails, mark, time.perf_counter() - t0)
        if outcome.state == "complete" and outcome.path is not None:
            latency = None
            if self.metrics is not None and outcome.action == "written":
                latency = marker_latency_sec(directory, self.started_t)
            self._emitted(experiment_id, "complete", outcome.path, latency_sec=latency)
            return
        if outcome.state == "invalid" and not self.layout.experiment_dir(experiment_id).is_dir():
            self.active.pop(experiment_id, None)  # the folder vanished
            return
        signature = tuple(sorted((i, t.size) for i, t in tracked.tails.items()))
        # Quiet: this scan found nothing new, or (first scan) its files were old already.
        quiet = signature == tracked.signature or (tracked.state == "new" and settled)
        if signature != tracked.signature:
            tracked.signature, tracked.last_activity_t = signature, time.time()
            tracked.stale = False
        tracked.state, tracked.detail = outcome.state, outcome.detail
        self._report(experiment_id, tracked)
        if fingerprint is not None and quiet and (tracked.stale or tracked.state in RETIRING):
            self._retire(experiment_id, tracked, fingerprint)

    def _retire(self, experiment_id: str, tracked: Tracked, fingerprint: int) -> None:
        """Move an experiment that cannot complete as it stands out of the active set."""
        del self.active[experiment_id]
        self.retired[experiment_id] = Retired.of(tracked, fingerprint)
        logger.debug("%s is %s; not read again until it changes", experiment_id, tracked.state)

    def _reject(self, name: str, reason: str) -> None:
        if self.rejected.get(name) != reason:
            self.rejected[name] = reason
            logger.warning("raw/%s: %s", name, reason)
            self._error(name, reason)

    def _discover(self, *, full: bool) -> None:
        """List ``raw/``: pick up new folders; on a full reconcile, recheck everything."""
        try:
            listing = list_experiments(self.layout)
        except LedgerError as exc:
            logger.warning("%s", exc)
            self._error(None, str(exc))
            return
        for name, reason in listing.rejected:
            self._reject(name, reason)
        present = set(listing.experiment_ids)
        for experiment_id in listing.experiment_ids:
            if experiment_id in self.active or experiment_id in self.retired:
                if full:
                    self.changes.mark(experiment_id)  # a retired one costs a fingerprint
                continue
            record = self.store.get(experiment_id)
            if record is not None:
                if full and not record.result_path(self.layout.root).exists():
                    self.changes.mark(experiment_id)
                continue
            if record is None and up_to_date(self.layout, experiment_id):
                # Emitted before this daemon kept records (``replay``, or a crash between the
                # write and the record): record it without re-reading its logs.
                self._emitted(experiment_id, "complete", self.layout.result_path(experiment_id))
                continue
            self.changes.mark(experiment_id)
        for experiment_id in [e for e in self.active if e not in present]:
            del self.active[experiment_id]
        for experiment_id in [e for e in self.retired if e not in present]:
            del self.retired[experiment_id]

    def _check_stale(self) -> None:
        now = time.time()
        for experiment_id, tracked in list(self.active.items()):
            if now - tracked.last_activity_t <= self.config.stale_after_sec:
                continue
            if not tracked.stale:
                tracked.stale = True
                logger.warning(
                    "%s is stale: no new bytes for %.0f s (%s)",
                    experiment_id,
                    now - tracked.last_activity_t,
                    tracked.detail,
                )
            if self.config.recover_stale and not tracked.recovered:
                tracked.recovered = True
                try:
                    recovery = recover_experiment(self.layout.experiment_dir(experiment_id))
                except LedgerError as exc:
                    logger.warning("%s: cannot recover: %s", experiment_id, exc)
                    self._error(experiment_id, f"cannot recover: {exc}")
                    continue
                self._emitted(
                    experiment_id, "partial" if recovery.partial else "complete", recovery.path
                )

    def _write_status(self, *, force: bool) -> None:
        now = time.time()
        oldest = self.changes.oldest_t()
        lag = max(self.last_lag_sec, time.monotonic() - oldest if oldest is not None else 0.0)
        live, left_out = live_of(self.active)
        status = status_view(
            root=self.layout.root,
            config=self.config,
            mode="polling" if self.polling else "inotify",
            filesystem=self.fs_type,
            started_t=self.started_t,
            now=now,
            lag_sec=lag,
            active=status_rows(self.active, self.retired, now),
            store=self.store,
            rejected=self.rejected,
            errors=self.errors,
            stopped=self.stop.is_set(),
            live=[f.to_dict() for f in live],
            live_left_out=left_out,
            metrics_url=self.metrics.url if self.metrics is not None else None,
        )
        self.status_file.write(status, force=force)
        if self.metrics is not None:
            hooks = self.hooks
            snapshot = self.counters.snapshot(
                status,
                live,
                host=self.lease.info.host,
                lease_held=self.lease.held,
                hook_runs=hooks.runs if hooks is not None else 0,
                hook_failures=hooks.failures if hooks is not None else 0,
            )
            self.metrics.publish(snapshot)

    # -- lifecycle --------------------------------------------------------------------------
    def _start_source(self) -> None:
        self.polling, self.fs_type = choose_polling(self.layout.raw_dir, self.config.polling)
        if self.polling:
            logger.info(
                "polling %s every %g s (filesystem %s)",
                self.layout.raw_dir,
                self.config.poll_interval_sec,
                self.fs_type,
            )
            return
        source = InotifySource(self.layout.raw_dir, self.changes.mark, self._overflowed)
        try:
            source.start()
        except OSError as exc:
            logger.warning("inotify unavailable (%s); polling instead", exc)
            self.polling = True
            return
        self.source = source
        logger.info("watching %s with inotify (filesystem %s)", self.layout.raw_dir, self.fs_type)

    def run(self) -> int:
        """Take the lease, watch until stopped, give the lease back; return an exit code.

        Raises:
            LeaseHeldError: another daemon runs on this root.
            LedgerError: the root or the state folder cannot be used.
        """
        if not self.layout.root.is_dir():
            raise LedgerError(f"{self.layout.root}: no such results folder")
        self.lease.acquire()
        try:
            return self._run_leased()
        except LeaseLostError as exc:
            logger.error("%s; stopping", exc)
            return EXIT_LEASE_LOST
        finally:
            self.lease.release()

    def _run_leased(self) -> int:
        try:
            self.layout.raw_dir.mkdir(exist_ok=True)
            for problem in self.store.load():
                logger.warning("%s", problem)
        except OSError as exc:
            raise LedgerError(f"cannot prepare {self.state_dir}: {exc.strerror or exc}") from exc
        for sweeper in self._temp_sweepers:
            sweeper.look()
        argv = self.config.hook_argv()
        if argv is not None:
            self.hooks = HookRunner(
                argv,
                self.store,
                root=self.layout.root,
                fence=self.lease.fence,
                holder=f"{self.lease.info.host} pid {self.lease.info.pid}",
                max_attempts=self.config.hook_max_attempts,
                backoff_sec=self.config.hook_backoff_sec,
                timeout_sec=self.config.hook_timeout_sec,
            )
            self.hooks.resume_unfinished()
        if self.config.report:
            self.reports = ReportWriter(self.layout.root)
        self._start_source()
        try:
            return self._loop()
        finally:
            if self.source is not None:
                self.source.stop()
            if self.hooks is not None:
                self.hooks.close(grace_sec=0.8)
            if self.reports is not None:
                self.reports.close()
            if not self.lease.lost:  # status.json belongs to the holder now
                self._write_status(force=True)

    def _loop(self) -> int:
        cfg = self.config
        self._discover(full=True)
        now = time.monotonic()
        sweep_sec = cfg.poll_interval_sec if self.polling else ACTIVE_SWEEP_SEC
        next_sweep = now + sweep_sec
        next_reconcile = now + cfg.reconcile_interval_sec
        next_renew = now + self.lease.renew_interval_sec
        next_status = now
        housekeeping_sec = min(1.0, cfg.stale_after_sec / 4)
        next_housekeeping = now
        while not self.stop.is_set():
            try:
                if not self.changes.waiting():
                    deadline = min(
                        next_sweep, next_reconcile, next_renew, next_status, next_housekeeping
                    )
                    self.wake.wait(min(MAX_WAIT_SEC, max(0.0, deadline - time.monotonic())))
                self.wake.clear()
                if self.stop.is_set():
                    break
                if self.lease.lost or time.monotonic() >= next_renew:
                    # Before anything is emitted: a daemon that was paused past its lease learns
                    # here that it lost it, and a live one tells any contender it is alive.
                    next_renew = time.monotonic() + self.lease.renew_interval_sec
                    self._renew()
                    self._write_status(force=True)
                    next_status = time.monotonic() + STATUS_MIN_INTERVAL_SEC
                if self.changes.waiting() and cfg.debounce_sec > 0:
                    self.stop.wait(cfg.debounce_sec)
                self._drain()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + sweep_sec
                    t0 = time.perf_counter()
                    if self.polling and self._raw_probe.changed():
                        self._discover(full=False)
                    for experiment_id in list(self.active):
                        self.changes.mark(experiment_id)
                    self._drain()
                    self.counters.sweep_duration["active"].observe(time.perf_counter() - t0)
                if now >= next_reconcile:
                    next_reconcile = now + cfg.reconcile_interval_sec
                    t0 = time.perf_counter()
                    self._discover(full=True)
                    self._drain()
                    self.counters.sweep_duration["reconcile"].observe(time.perf_counter() - t0)
                    if self.source is not None and not self.source.is_alive():
                        logger.warning("the inotify observer stopped; polling from now on")
                        self.source, self.polling = None, True
                        sweep_sec = cfg.poll_interval_sec
                if now >= next_housekeeping:
                    next_housekeeping = now + housekeeping_sec
                    self._check_stale()
                if now >= next_status:
                    next_status = now + STATUS_MIN_INTERVAL_SEC
                    self._write_status(force=False)
            except LeaseLostError:
                raise
            except Exception as exc:  # the watch must outlive any one bad surprise
                logger.exception("watch loop error (continuing)")
                self._error(None, f"internal error: {exc!r}")
                self.stop.wait(MAX_WAIT_SEC)
        logger.info("stopping")
        return EXIT_OK

    def _renew(self) -> None:
        """Renew the lease (compare, then heartbeat) and sweep abandoned temp files.

        Raises:
            LeaseLostError: another daemon took the lease over (this one was presumed dead).
        """
        try:
            self.lease.renew()
        except LeaseLostError:
            raise
        except LedgerError as exc:
            logger.warning("cannot renew the lease (will retry): %s", exc)
            return
        for sweeper in self._temp_sweepers:
            sweeper.look()

    def _drain(self) -> None:
        batch, relist = self.changes.take()
        if relist:
            self._discover(full=False)
            more, _ = self.changes.take()
            for experiment_id, since in more.items():
                batch.setdefault(experiment_id, since)
        for experiment_id, since in sorted(batch.items()):
            if self.stop.is_set():
                return
            try:
                self._process(experiment_id)
            except LeaseLostError:
                raise
            except Exception as exc:
                logger.exception("%s: unexpected error (skipped)", experiment_id)
                self._error(experiment_id, f"internal error: {exc!r}")
            self.last_lag_sec = time.monotonic() - since
