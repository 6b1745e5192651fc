"""The ``--on-emit`` hook: run a command after each emission, at most ``max_attempts`` times.

Each run is ``argv + [result_path, experiment_id]`` (no shell), with the emission's stable
idempotency key in ``ENERGY_LEDGER_EMISSION_ID`` (also ``ENERGY_LEDGER_EXPERIMENT_ID``,
``ENERGY_LEDGER_RESULT``, ``ENERGY_LEDGER_RESULT_KIND`` and ``ENERGY_LEDGER_HOOK_ATTEMPT``).
Each attempt runs under its own supervisor process (``supervise.py``), which claims the attempt,
runs the command and records how it ended, so the record does not depend on the daemon living.

What can be promised for an arbitrary command, and what is:

- **A hook recorded as finished never runs again.** ``@done`` (or ``@failed``) is created once
  and never removed, and the markers are read from disk right before every attempt.
- **Every attempt is claimed first.** Attempt *n* runs only after the lease was checked and its
  supervisor created ``@attempt-<n>`` (exclusively, durably), so no two daemons, even two that
  both think they hold the lease, ever start the same attempt.
- **A daemon's death does not repeat a hook.** The supervisor outlives a killed daemon and
  records the outcome; the next daemon finds the supervisor alive (its pid and start time are in
  the attempt marker) and waits for it. A clean stop leaves running attempts to their
  supervisors too.
- **At most ``max_attempts`` starts per emission, whatever happens.** A failing run (non-zero
  exit, timeout) is retried with exponential backoff. A run is *interrupted* when its supervisor
  died without recording an outcome (the host went down, the whole service was killed), or ran on
  another host that cannot be checked: it cannot be known to have finished, so it is run again.
  Both count towards the same bound. ``max_attempts = 1`` is at-most-once: an interrupted run is
  then reported as failed instead of being run again.

So an interrupted run is the one case where a hook can run more than once; a hook that must
never repeat an effect should make it idempotent with ``ENERGY_LEDGER_EMISSION_ID``. Runs happen
on a small thread pool and backoff waits occupy no thread, so a slow or failing hook never holds
up other experiments' hooks or emissions.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from energy_ledger.daemon.pids import boot_id, process_start_ticks
from energy_ledger.daemon.records import EmissionRecord, StateStore
from energy_ledger.exceptions import LeaseLostError, LedgerError

__all__ = ["HookRunner", "hook_environment"]

logger = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 500
SUPERVISOR = Path(__file__).with_name("supervise.py")
CLAIMED_ELSEWHERE = 75
"""``supervise.py``'s exit status when another process had claimed the attempt."""
WATCH_SUPERVISOR_SEC = 0.5
"""How often a supervisor that another daemon started is looked at until it records."""


def hook_environment(record: EmissionRecord, result: Path, attempt: int) -> dict[str, str]:
    """The variables a hook run gets on top of the daemon's environment."""
    return {
        "ENERGY_LEDGER_EMISSION_ID": record.emission_id,
        "ENERGY_LEDGER_EXPERIMENT_ID": record.experiment_id,
        "ENERGY_LEDGER_RESULT": str(result),
        "ENERGY_LEDGER_RESULT_KIND": record.kind,
        "ENERGY_LEDGER_HOOK_ATTEMPT": str(attempt),
    }


def _no_fence() -> None:
    """Without a lease (tests, embedding), every attempt may go ahead."""


class HookRunner:
    """Runs the hook of emitted results, claiming each attempt in the state store first."""

    def __init__(
        self,
        argv: list[str],
        store: StateStore,
        *,
        root: Path,
        fence: Callable[[], None] = _no_fence,
        holder: str = "",
        max_attempts: int = 5,
        backoff_sec: float = 1.0,
        timeout_sec: float = 600.0,
        workers: int = 4,
    ) -> None:
        self.argv = argv
        self.store = store
        self.root = root
        self.fence = fence
        self.holder = holder
        self.max_attempts = max_attempts
        self.host_name = socket.gethostname()
        self.backoff_sec = backoff_sec
        self.timeout_sec = timeout_sec
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="on-emit")
        self._due: list[tuple[float, int, str]] = []
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

    def submit(self, key: str, *, delay_sec: float = 0.0) -> None:
        """Schedule the hook of an emission (its ``emitted/`` key)."""
        with self._cond:
            if self._closing:
                return
            self._counter += 1
            heapq.heappush(self._due, (time.monotonic() + delay_sec, self._counter, key))
            self._cond.notify()

    def resume_unfinished(self) -> int:
        """Schedule every hook that is owed and not finished; return how many."""
        resumed = 0
        for key, record in list(self.store.records.items()):
            if not record.hook:
                continue
            progress = self.store.progress.get(key)
            if progress is not None and progress.finished:
                continue
            self.submit(key)
            resumed += 1
        return resumed

    @property
    def busy(self) -> int:
        """Hooks scheduled or running."""
        with self._cond:
            return len(self._due) + len(self._inflight)

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (not self._due or self._due[0][0] > time.monotonic()):
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                if self._closing:
                    return
                _, _, key = heapq.heappop(self._due)
                if key in self._inflight:
                    continue
                self._inflight.add(key)
            self._pool.submit(self._attempt, key)

    def _attempt(self, key: str) -> None:
        watching = False
        try:
            watching = self._run_once(key)
        except Exception:  # a bug here must not kill the pool's thread silently
            logger.exception("on-emit hook for %s: unexpected error", key)
        finally:
            with self._cond:
                self._inflight.discard(key)
            if not watching:
                self.store.running.discard(key)

    def _retry_later(self, key: str, why: str) -> None:
        logger.warning("on-emit hook for %s not started (%s); retrying later", key, why)
        self.submit(key, delay_sec=max(self.backoff_sec, 1.0))

    def _run_once(self, key: str) -> bool:
        """Take the hook of ``key`` one step; True while it runs under a supervisor we watch."""
        try:
            record = self.store.read(key)
            progress = self.store.read_progress(key, up_to=self.max_attempts)
        except LedgerError as exc:
            self._retry_later(key, str(exc))
            return False
        if record is None or not record.hook or progress.finished:
            return False
        if progress.last_interrupted and self._supervisor_alive(key, progress.attempts):
            self.store.running.add(key)  # started by an earlier daemon, still running: wait
            self.submit(key, delay_sec=WATCH_SUPERVISOR_SEC)
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
            with contextlib.suppress(LedgerError):
                self.store.give_up(key, why)
                self.store.read_progress(key, up_to=self.max_attempts)
            logger.error("on-emit hook for %s given up: %s", key, why)
            return False
        with self._cond:
            if self._closing:
                return False
        try:
            self.fence()
        except LeaseLostError:
            return False  # another daemon holds the root now; it owes the hook
        except LedgerError as exc:
            self._retry_later(key, str(exc))
            return False
        self.store.running.add(key)
        result = record.result_path(self.root)
        argv = [*self.argv, str(result), record.experiment_id]
        code, stderr = self._supervise(key, n, argv, hook_environment(record, result, n))
        if code != CLAIMED_ELSEWHERE:
            with self._cond:
                self.runs += 1
        if code is None:
            return False  # the daemon stops: the supervisor goes on and records it
        if code == CLAIMED_ELSEWHERE:
            logger.warning("%s: hook attempt %d was claimed by another process", key, n)
            self.submit(key, delay_sec=WATCH_SUPERVISOR_SEC)
            return False
        self._after(key, n, code, stderr)
        return False

    def _after(self, key: str, n: int, code: int, stderr: str) -> None:
        """Act on how attempt ``n`` ended, as its markers say: done, retry, or give up."""
        try:
            progress = self.store.read_progress(key, up_to=n)
            if not progress.done and n not in progress.failures:
                why = f"its supervisor exited with status {code} and recorded nothing"
                why += f": {stderr}" if stderr else ""
                self.store.finish_attempt(key, n, why, give_up=False)
                progress = self.store.read_progress(key, up_to=n)
        except LedgerError as exc:
            logger.error("on-emit hook for %s: cannot record its outcome: %s", key, exc)
            return
        if progress.done:
            logger.info("on-emit hook for %s done", key)
            return
        error = progress.failures.get(n, "")
        with self._cond:
            self.failures += 1
        if n >= self.max_attempts:
            with contextlib.suppress(LedgerError):
                self.store.give_up(key, error)
                self.store.read_progress(key, up_to=n)
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
        self.submit(key, delay_sec=delay)

    def _supervisor_alive(self, key: str, n: int) -> bool:
        """Whether attempt ``n``'s supervisor is a live process on this host (so: wait)."""
        who = self.store.attempt_claim(key, n).get("supervisor")
        if not isinstance(who, dict) or who.get("boot_id") != boot_id():
            return False
        if who.get("host") != self.host_name:
            return False
        try:
            pid, start = int(who["pid"]), who.get("pid_start")
        except (KeyError, TypeError, ValueError):
            return False
        ticks = process_start_ticks(pid)
        return ticks is not None and (start is None or ticks in (0, start))

    def _supervise(
        self, key: str, n: int, argv: list[str], extra_env: dict[str, str]
    ) -> tuple[int | None, str]:
        """Start attempt ``n`` under its supervisor and wait for it.

        Returns:
            The supervisor's exit status and the tail of its own error output; ``None`` for the
            status when the daemon began to stop meanwhile (the supervisor is left to finish).
        """
        command = [sys.executable, "-I", "-S", str(SUPERVISOR), str(self.store.emitted_dir)]
        command += [key, str(n), repr(self.timeout_sec), self.holder, "--", *argv]
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
                return 1, f"cannot start the supervisor: {exc.strerror or exc}"
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
                                return None, ""
            finally:
                with self._cond:
                    self._procs.discard(proc)
            with self._cond:
                if self._closing:
                    return None, ""  # stopped under us: whatever it recorded stands
            err.seek(0)
            tail = err.read().decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:].strip()
        return code, tail

    def close(self, grace_sec: float = 1.0, *, stop_running: bool = False) -> None:
        """Stop: let running attempts finish for ``grace_sec``, then leave them be.

        An attempt still running is left to its supervisor, which records its outcome; the next
        daemon waits for it. ``stop_running`` sends the supervisors SIGTERM instead (they take
        their hooks down and record nothing: the attempts count as interrupted).
        """
        deadline = time.monotonic() + grace_sec
        with self._cond:
            self._due.clear()
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
