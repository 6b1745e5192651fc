"""Scheduling hook attempts, shared by the folder runner (``hooks.HookRunner``) and the bucket
runner (``bucket_hooks.BucketHookRunner``): the schedule, the thread pool, the step that
decides an attempt, the supervisor's process and the stop (``hooks`` states the guarantees).
A runner says where its markers lie and how it judges an attempt whose supervisor it cannot
check.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from energy_ledger.daemon.pids import boot_id, process_start_ticks
from energy_ledger.daemon.records import HookProgress
from energy_ledger.exceptions import LedgerError

__all__ = [
    "CLAIMED_ELSEWHERE",
    "WATCH_SUPERVISOR_SEC",
    "HookScheduler",
    "OwedHook",
    "hook_variables",
    "local_supervisor_alive",
]

logger = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 500
CLAIMED_ELSEWHERE = 75
"""``supervise.py``'s exit status when another process had claimed the attempt."""
WATCH_SUPERVISOR_SEC = 0.5
"""How often a supervisor that another daemon started is looked at until it records."""


def hook_variables(
    *, emission_id: str, experiment_id: str, result: str, kind: str, attempt: int
) -> dict[str, str]:
    """The variables a hook run gets on top of the daemon's environment."""
    return {
        "ENERGY_LEDGER_EMISSION_ID": emission_id,
        "ENERGY_LEDGER_EXPERIMENT_ID": experiment_id,
        "ENERGY_LEDGER_RESULT": result,
        "ENERGY_LEDGER_RESULT_KIND": kind,
        "ENERGY_LEDGER_HOOK_ATTEMPT": str(attempt),
    }


def local_supervisor_alive(who: object, host_name: str) -> bool | None:
    """Whether a supervisor, as an attempt marker names it, is a live process.

    ``None`` when it cannot be checked from here: it ran on another host (or in another boot of
    this one), or the marker does not say. Its pid must run with the start time noted, so a pid
    reused by another process is not taken for it.
    """
    if not isinstance(who, dict) or who.get("host") != host_name:
        return None
    if who.get("boot_id") != boot_id():
        return None
    try:
        pid, start = int(who["pid"]), who.get("pid_start")
    except (KeyError, TypeError, ValueError):
        return None
    ticks = process_start_ticks(pid)
    return ticks is not None and (start is None or ticks in (0, start))


@dataclass(frozen=True, slots=True)
class OwedHook:
    """A hook that is owed: what its runs are told (``hook_variables``)."""

    emission_id: str
    experiment_id: str
    result: str
    kind: str


@dataclass(frozen=True, slots=True)
class _Supervised:
    """How a supervisor ended: its exit status (``None``: left to run), pid and error tail."""

    code: int | None
    pid: int = 0
    stderr: str = ""


class HookScheduler(ABC):
    """Schedules hook attempts by key, and takes each hook one step at a time (thread-safe).

    A step reads the hook's markers, waits for a supervisor that may still run, gives up past
    ``max_attempts``, or fences and runs the next attempt under its supervisor, then schedules
    the retry. Subclasses say where the markers are (the abstract methods); a ``LedgerError``
    from any of them postpones the step.
    """

    def __init__(
        self,
        argv: list[str],
        holder: str,
        max_attempts: int,
        backoff_sec: float,
        timeout_sec: float,
        workers: int,
    ) -> None:
        self.argv = argv
        self.holder = holder
        self.max_attempts = max_attempts
        self.host_name = socket.gethostname()
        self.backoff_sec = backoff_sec
        self.timeout_sec = timeout_sec
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="on-emit")
        self._due: list[tuple[float, int, str]] = []
        self._scheduled: dict[str, int] = {}
        self._again: set[str] = set()
        self._counter = 0
        self._cond = threading.Condition()
        self._closing = False
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._inflight: set[str] = set()
        # Counted for /metrics (daemon.metrics): attempts this daemon started, and those failed.
        self.runs = 0
        self.failures = 0
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="on-emit-dispatch", daemon=True
        )
        self._dispatcher.start()

    # -- what a subclass says ------------------------------------------------------------------
    @abstractmethod
    def _owed(self, key: str) -> OwedHook | None:
        """The hook owed for ``key``, read now; ``None`` when none is (or no record is there)."""

    @abstractmethod
    def _progress(self, key: str, *, up_to: int) -> HookProgress:
        """The hook's markers, read now (at most ``up_to`` attempts)."""

    @abstractmethod
    def _attempt_marker(self, key: str, n: int) -> dict[str, Any]:
        """What ``@attempt-<n>`` says (who claimed it), ``{}`` when it is missing or unreadable."""

    @abstractmethod
    def _alive(self, key: str, n: int) -> bool:
        """Whether attempt ``n``, started with no outcome yet, may still be running (so: wait)."""

    @abstractmethod
    def _fence(self, key: str) -> bool:
        """Check that this daemon may start an attempt now; False when another one owes it."""

    @abstractmethod
    def _supervisor(self) -> list[str]:
        """The supervisor's command up to its store argument (key, attempt, ... follow)."""

    @abstractmethod
    def _record_failure(self, key: str, n: int, error: str) -> None:
        """Create ``@fail-<n>`` with ``error`` (unless it exists)."""

    @abstractmethod
    def _give_up(self, key: str, why: str) -> None:
        """Create ``@failed`` with ``why`` (unless it exists)."""

    @abstractmethod
    def _mark_running(self, key: str, running: bool) -> None:
        """Told when the hook of ``key`` runs (or is watched) here, and when it no longer does."""

    # -- the schedule --------------------------------------------------------------------------
    def _schedule(self, key: str, delay_sec: float = 0.0) -> None:
        with self._cond:
            if self._closing:
                return
            self._counter += 1
            heapq.heappush(self._due, (time.monotonic() + delay_sec, self._counter, key))
            self._scheduled[key] = self._scheduled.get(key, 0) + 1
            self._cond.notify()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (not self._due or self._due[0][0] > time.monotonic()):
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                if self._closing:
                    return
                _, _, key = heapq.heappop(self._due)
                left = self._scheduled.pop(key, 1) - 1
                if left:
                    self._scheduled[key] = left
                if key in self._inflight:
                    self._again.add(key)  # taken again once the step in progress ends
                    continue
                self._inflight.add(key)
            self._pool.submit(self._attempt, key)

    def _attempt(self, key: str) -> None:
        watching = False
        try:
            watching = self._step(key)
        except LedgerError as exc:
            self._retry_later(key, str(exc))
        except Exception:  # a bug here must not kill the pool's thread silently
            logger.exception("on-emit hook for %s: unexpected error", key)
        finally:
            with self._cond:
                self._inflight.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self._schedule(key)
            if not watching:
                self._mark_running(key, False)

    def _retry_later(self, key: str, why: str) -> None:
        logger.warning("on-emit hook for %s: %s; looking again later", key, why)
        self._schedule(key, delay_sec=max(self.backoff_sec, 1.0))

    # -- one step ------------------------------------------------------------------------------
    def _step(self, key: str) -> bool:
        """Take the hook of ``key`` one step; True while it runs under a supervisor we watch."""
        hook = self._owed(key)
        progress = self._progress(key, up_to=self.max_attempts)
        if hook is None or progress.finished:
            return False
        if progress.last_interrupted and self._alive(key, progress.attempts):
            self._mark_running(key, True)  # started by an earlier daemon, still running: wait
            self._schedule(key, delay_sec=WATCH_SUPERVISOR_SEC)
            return True
        n = progress.attempts + 1
        if progress.last_interrupted:
            logger.warning(
                "%s: hook attempt %d was interrupted (its supervisor died before it ended)",
                key,
                progress.attempts,
            )
        if n > self.max_attempts:
            last = "interrupted" if progress.last_interrupted else "failed"
            why = (
                f"{progress.attempts} attempt(s) started, the last one {last}; not run again "
                f"(hook_max_attempts = {self.max_attempts})"
            )
            self._give_up(key, why)
            logger.error("on-emit hook for %s given up: %s", key, why)
            return False
        with self._cond:
            if self._closing:
                return False
        if not self._fence(key):
            return False  # another daemon holds it now; it owes the hook
        self._mark_running(key, True)
        argv = [*self.argv, hook.result, hook.experiment_id]
        env = hook_variables(
            emission_id=hook.emission_id,
            experiment_id=hook.experiment_id,
            result=hook.result,
            kind=hook.kind,
            attempt=n,
        )
        ended = self._supervise(key, n, argv, env)
        if ended.code != CLAIMED_ELSEWHERE:
            with self._cond:
                self.runs += 1
        if ended.code is None:
            return False  # the daemon stops: the supervisor goes on and records it
        if ended.code == CLAIMED_ELSEWHERE:
            logger.warning("%s: hook attempt %d was claimed by another process", key, n)
            self._schedule(key, delay_sec=WATCH_SUPERVISOR_SEC)
            return False
        self._after(key, n, ended)
        return False

    def _after(self, key: str, n: int, ended: _Supervised) -> None:
        """Act on how attempt ``n`` ended, as its markers say: done, retry, or give up."""
        progress = self._progress(key, up_to=n)
        if not progress.finished and n not in progress.failures:
            why = f"its supervisor exited with status {ended.code} and recorded nothing"
            why += f": {ended.stderr}" if ended.stderr else ""
            if not self._claimed_by(key, n, ended.pid):
                # Its marker, if any, is another process's (a claim whose answer was lost and
                # could not be read back): that one records its outcome, not us.
                self._retry_later(key, f"attempt {n} not started: {why}")
                return
            self._record_failure(key, n, why)
            progress = self._progress(key, up_to=n)
        if progress.done:
            logger.info("on-emit hook for %s done", key)
            return
        if progress.gave_up is not None:
            return
        error = progress.failures.get(n, "")
        with self._cond:
            self.failures += 1
        if n >= self.max_attempts:
            self._give_up(key, error)
            logger.error("on-emit hook for %s failed %d times; giving up: %s", key, n, error)
            return
        delay = self.backoff_sec * 2 ** (n - 1)
        logger.warning(
            "on-emit hook for %s failed (attempt %d/%d), retrying in %.1f s: %s",
            key,
            n,
            self.max_attempts,
            delay,
            error,
        )
        self._schedule(key, delay_sec=delay)

    def _claimed_by(self, key: str, n: int, pid: int) -> bool:
        """Whether ``@attempt-<n>`` names the supervisor ``pid`` of this host that just ended."""
        who = self._attempt_marker(key, n).get("supervisor")
        if not isinstance(who, dict):
            return False
        return (who.get("host"), who.get("boot_id"), who.get("pid")) == (
            self.host_name,
            boot_id(),
            pid,
        )

    def _supervise(
        self, key: str, n: int, argv: list[str], extra_env: dict[str, str]
    ) -> _Supervised:
        """Start attempt ``n`` under its supervisor and wait for it.

        The status is ``None`` when the daemon began to stop meanwhile (the supervisor is left
        to finish).
        """
        command = [*self._supervisor(), key, str(n), repr(self.timeout_sec), self.holder]
        command += ["--", *argv]
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                    env={**os.environ, **extra_env},
                )
            except OSError as exc:
                return _Supervised(1, 0, f"cannot start the supervisor: {exc.strerror or exc}")
            with self._cond:
                self._procs.add(proc)
            try:
                while True:
                    try:
                        code = proc.wait(timeout=0.2)
                        break
                    except subprocess.TimeoutExpired:
                        with self._cond:
                            if self._closing:
                                # Left to finish; a thread reaps it if this process lives on.
                                threading.Thread(target=proc.wait, daemon=True).start()
                                return _Supervised(None)
            finally:
                with self._cond:
                    self._procs.discard(proc)
            with self._cond:
                if self._closing:
                    return _Supervised(None)  # stopped under us: whatever it recorded stands
            err.seek(0)
            tail = err.read().decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:].strip()
        return _Supervised(code, proc.pid, tail)

    def close(self, grace_sec: float = 1.0, *, stop_running: bool = False) -> None:
        """Stop: let running attempts finish for ``grace_sec``, then leave them be.

        An attempt still running is left to its supervisor, which records its outcome; the next
        daemon waits for it. ``stop_running`` sends the supervisors SIGTERM instead (they take
        their hooks down and record nothing: the attempts count as interrupted).
        """
        deadline = time.monotonic() + grace_sec
        with self._cond:
            self._due.clear()
            self._scheduled.clear()
            self._again.clear()
        while time.monotonic() < deadline:
            with self._cond:
                if not self._inflight:
                    break
            time.sleep(0.02)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            procs = list(self._procs)
        if stop_running:
            for proc in procs:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
        self._dispatcher.join(timeout=1.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
