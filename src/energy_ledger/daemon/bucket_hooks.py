"""The ``--on-emit`` hook of a results root on object storage, which several daemons share.

The hook of a bucket root runs as the folder one does (``daemon.hooks``: ``argv + [result_url,
experiment_id]``, the same variables, a supervisor per attempt, backoff, ``max_attempts``), with
markers made of conditional creates (``put(create=True)``) beside the emission record::

    emissions/<id>.json              the emission record (``bucket_claims.record_emission``)
    emissions/<id>@attempt-<n>.json  attempt n claimed by its supervisor before it runs: attempt,
                                     holder, t, timeout_sec, supervisor (host, boot_id, pid,
                                     pid_start) and a fresh nonce
    emissions/<id>@done.json         the hook succeeded
    emissions/<id>@fail-<n>.json     attempt n exited non-zero or timed out (its error inside)
    emissions/<id>@failed.json       the hook was given up (why inside)

Each marker is created once and never rewritten or removed. A create whose answer was lost and
that obstore's retry then saw refused is recognised by its nonce (as in ``bucket_claims``).

What is promised, and what it rests on:

- **A hook recorded finished never runs again.** ``@done`` and ``@failed`` are read from the
  store right before every attempt, and nothing removes them.
- **No two processes ever start the same attempt.** Attempt *n* runs only after its supervisor's
  create of ``@attempt-<n>`` succeeded, and of any number of creates of one key one succeeds.
  The experiment's claim is checked (``fence``) just before, so a daemon that lost it starts
  nothing: the new owner owes the hook.
- **A daemon killed while its hook runs does not repeat it.** The supervisor
  (``daemon.bucket_supervise``) runs in a session of its own, outlives the daemon and records the
  outcome. An attempt without an outcome is waited for while its supervisor may live: on this
  host (same host name and boot id) as long as its pid runs with the start time in the marker;
  on another host, which cannot be checked, until this runner has watched the marker for the
  hook timeout plus ``GRACE_SEC`` on its own monotonic clock (no wall clocks are compared across
  hosts). That wait is enough: the supervisor counts the timeout from before it sent its claim,
  so the hook is killed by then, and it writes the outcome once, within the store client's own
  retry time, which ``GRACE_SEC`` covers. After the wait the attempt counts as interrupted.
- **At most ``max_attempts`` starts per emission.** Failed and interrupted attempts count alike;
  ``max_attempts = 1`` is at-most-once (an interrupted attempt is then given up).

So, as for a folder, an interrupted attempt is the one way a hook can run twice: its supervisor
died with the hook (the host went down), or was held up past the wait (a paused VM, a store
unreachable for longer than its retries). A hook that must never repeat an effect should use
``ENERGY_LEDGER_EMISSION_ID``. Store errors never reach the caller: the step is tried again later.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import orjson

from energy_ledger.daemon.hook_schedule import HookScheduler, OwedHook, local_supervisor_alive
from energy_ledger.daemon.records import HookProgress
from energy_ledger.exceptions import UnsafePathError
from energy_ledger.store.bucket_claims import EMISSIONS_PREFIX, ClaimLost, read_emission
from energy_ledger.store.layout import AGGREGATED_DIR, check_experiment_id
from energy_ledger.store.objectstore import ObjectNotFound, ObjectStore, PreconditionFailed
from energy_ledger.store.remote import CONNECT_TIMEOUT_SEC, REQUEST_TIMEOUT_SEC, RETRY_TIMEOUT_SEC

__all__ = [
    "GRACE_SEC",
    "BucketHookRunner",
    "create_marker",
    "hook_finished",
    "marker_key",
]

logger = logging.getLogger(__name__)

SUPERVISOR_MODULE = "energy_ledger.daemon.bucket_supervise"
GRACE_SEC = float(CONNECT_TIMEOUT_SEC + REQUEST_TIMEOUT_SEC + RETRY_TIMEOUT_SEC)
"""How long past the hook's timeout an attempt on another host may take to record its outcome:
one put, with the retries the store client makes (``store.remote``)."""


def marker_key(experiment_id: str, marker: str) -> str:
    """The key of one hook marker (``attempt-2``, ``done``, ...).

    Raises:
        UnsafePathError: a bad experiment id.
    """
    return f"{EMISSIONS_PREFIX}{check_experiment_id(experiment_id)}@{marker}.json"


def hook_finished(keys: Collection[str], experiment_id: str) -> bool:
    """From the keys of one listing of ``emissions/``: True when ``@done`` or ``@failed`` is in."""
    prefix = f"{EMISSIONS_PREFIX}{experiment_id}@"
    return f"{prefix}done.json" in keys or f"{prefix}failed.json" in keys


def create_marker(objects: ObjectStore, key: str, body: dict[str, Any]) -> bool:
    """Create a marker once, with a fresh nonce; True when this call created it.

    A create refused by obstore's own retry of it (the first try landed, its answer was lost) is
    told from another writer's by reading the nonce back.

    Raises:
        LedgerError: the store failed (the create may or may not have landed).
    """
    nonce = uuid.uuid4().hex
    data = orjson.dumps({**body, "nonce": nonce}, option=orjson.OPT_SORT_KEYS)
    try:
        objects.put(key, data, create=True)
    except PreconditionFailed:
        found = _read_marker(objects, key)
        return found is not None and found.get("nonce") == nonce
    return True


def _read_marker(objects: ObjectStore, key: str) -> dict[str, Any] | None:
    """A marker's body; ``None`` when there is none, ``{"text": ...}`` when it is not JSON."""
    try:
        data = objects.get(key)
    except ObjectNotFound:
        return None
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    return obj if isinstance(obj, dict) else {"text": data.decode("utf-8", "replace")}


def _text(marker: dict[str, Any], field: str) -> str:
    value = marker.get(field, marker.get("text"))
    return value if isinstance(value, str) else ""


def _seconds(value: object) -> float:
    """A marker's duration field, 0 unless it is a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value > 0 else 0.0


class BucketHookRunner(HookScheduler):
    """Runs the hooks of a bucket root's experiments that this daemon holds (thread-safe).

    Args:
        objects: the root's store.
        argv: the hook command.
        fence: called with the experiment id right before each attempt; raises ``ClaimLost``
            when this daemon no longer holds the experiment (the hook is dropped) or another
            ``LedgerError`` when that cannot be told now (tried again later).
        holder: this daemon's owner id, written into the attempts it starts.
        max_attempts: the most attempts per emission, failed and interrupted ones alike.
        backoff_sec: the wait after a first failure, doubled after each further one.
        timeout_sec: how long one run may take before it is killed.
        workers: how many attempts may run at once.
        clock: a monotonic clock in seconds, for the wait on other hosts' attempts only (the
            schedule waits in real time).
    """

    def __init__(
        self,
        objects: ObjectStore,
        argv: list[str],
        *,
        fence: Callable[[str], None],
        holder: str,
        max_attempts: int = 5,
        backoff_sec: float = 1.0,
        timeout_sec: float = 600.0,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.fence = fence
        self._clock = clock
        self._lock = threading.Lock()
        self._finished: set[str] = set()
        # Markers never change once created: each one found is remembered and not asked again.
        self._seen: dict[str, dict[str, dict[str, Any]]] = {}
        self._watched: dict[str, tuple[int, float]] = {}
        self._hooks: dict[str, OwedHook] = {}
        super().__init__(argv, holder, max_attempts, backoff_sec, timeout_sec, workers)

    def submit(self, experiment_id: str, *, delay_sec: float = 0.0) -> None:
        """Schedule the experiment's hook; nothing while it is scheduled, running or finished."""
        try:
            check_experiment_id(experiment_id)
        except UnsafePathError as exc:
            logger.error("on-emit hook not scheduled: %s", exc)
            return
        with self._cond:
            if self.finished(experiment_id) or self.busy(experiment_id):
                return
            self._schedule(experiment_id, delay_sec)

    def busy(self, experiment_id: str) -> bool:
        """Whether the hook is scheduled, running, or waiting on a supervisor."""
        with self._cond:
            return (
                experiment_id in self._scheduled
                or experiment_id in self._inflight
                or experiment_id in self._again
            )

    def finished(self, experiment_id: str) -> bool:
        """Whether this runner has seen ``@done`` or ``@failed`` for the experiment."""
        with self._lock:
            return experiment_id in self._finished

    def _result_url(self, experiment_id: str) -> str:
        return f"{self.objects.url}/{AGGREGATED_DIR}/{experiment_id}.json"

    def _forget(self, experiment_id: str, *, finished: bool) -> None:
        with self._lock:
            self._seen.pop(experiment_id, None)
            self._watched.pop(experiment_id, None)
            self._hooks.pop(experiment_id, None)
            if finished:
                self._finished.add(experiment_id)

    def _marker(self, experiment_id: str, name: str) -> dict[str, Any] | None:
        """A marker's body, from memory once found, else read now (``None``: not there)."""
        with self._lock:
            found = self._seen.get(experiment_id, {}).get(name)
        if found is None:
            found = _read_marker(self.objects, marker_key(experiment_id, name))
            if found is not None:
                with self._lock:
                    self._seen.setdefault(experiment_id, {})[name] = found
        return found

    # -- HookScheduler -------------------------------------------------------------------------
    def _owed(self, key: str) -> OwedHook | None:
        with self._lock:
            hook = self._hooks.get(key)
        if hook is not None:
            return hook  # an emission record never changes
        emission = read_emission(self.objects, key)
        if emission is None:
            logger.warning("on-emit hook for %s: no readable emission record; not run", key)
            return None
        body = emission.body
        emission_id = body.get("emission_id")
        if body.get("hook") is not True:
            return None
        if not isinstance(emission_id, str) or not emission_id:
            logger.warning("on-emit hook for %s: its emission record has no emission id", key)
            return None
        hook = OwedHook(emission_id, key, self._result_url(key), "complete")
        with self._lock:
            self._hooks[key] = hook
        return hook

    def _progress(self, key: str, *, up_to: int) -> HookProgress:
        done = self._marker(key, "done") is not None
        failed = None if done else self._marker(key, "failed")
        if done or failed is not None:
            self._forget(key, finished=True)
            why = None if failed is None else _text(failed, "why") or "given up"
            return HookProgress(done=done, gave_up=why)
        attempts = 0
        while attempts <= up_to and self._marker(key, f"attempt-{attempts + 1}") is not None:
            attempts += 1
        failures = {}
        # Only the last attempt's outcome decides; earlier ones are not asked for again.
        last = self._marker(key, f"fail-{attempts}") if attempts else None
        if last is not None:
            failures[attempts] = _text(last, "error")
        return HookProgress(attempts, failures)

    def _attempt_marker(self, key: str, n: int) -> dict[str, Any]:
        return self._marker(key, f"attempt-{n}") or {}

    def _alive(self, key: str, n: int) -> bool:
        marker = self._attempt_marker(key, n)
        who = marker.get("supervisor")
        alive = local_supervisor_alive(who, self.host_name)
        if alive is not None:
            return alive
        limit_sec = max(self.timeout_sec, _seconds(marker.get("timeout_sec"))) + GRACE_SEC
        now = self._clock()
        with self._lock:
            seen_n, since = self._watched.get(key, (0, now))
            first_look = seen_n != n
            if first_look:
                since = now
                self._watched[key] = (n, since)
        host = who.get("host") if isinstance(who, dict) else None
        if first_look:
            logger.info(
                "%s: hook attempt %d runs on %s, which cannot be checked from here; waiting up "
                "to %.0f s for its outcome",
                key,
                n,
                host or "an unnamed host",
                limit_sec,
            )
        if now - since < limit_sec:
            return True
        logger.warning(
            "%s: hook attempt %d on %s recorded no outcome in %.0f s; counted as interrupted",
            key,
            n,
            host or "an unnamed host",
            now - since,
        )
        return False

    def _fence(self, key: str) -> bool:
        try:
            self.fence(key)
        except ClaimLost as exc:
            logger.info("on-emit hook for %s left to the claim's new owner: %s", key, exc)
            self._forget(key, finished=False)
            return False
        return True

    def _supervisor(self) -> list[str]:
        # -P: the daemon's working folder is not put on sys.path (nothing there is imported).
        return [sys.executable, "-P", "-m", SUPERVISOR_MODULE, self.objects.url]

    def _record_failure(self, key: str, n: int, error: str) -> None:
        body = {"attempt": n, "error": error, "t": time.time()}
        create_marker(self.objects, marker_key(key, f"fail-{n}"), body)

    def _give_up(self, key: str, why: str) -> None:
        create_marker(self.objects, marker_key(key, "failed"), {"why": why, "t": time.time()})
        self._forget(key, finished=True)

    def _mark_running(self, key: str, running: bool) -> None:
        """Nothing to note: ``busy`` covers running and watched hooks."""
