"""The ``--on-emit`` hook: run a command after each emission, at least once and at most twice.

Each run is ``argv + [result_path, experiment_id]`` (no shell). Before a run starts its record in
the state store says ``running``; after it exits, ``done`` (or, when every retry failed,
``failed``). A daemon killed in between finds ``running`` at its next start and runs that hook
again: that is the only way a hook runs twice. A hook that exits non-zero or outlives its timeout
is retried with exponential backoff; runs happen on a small thread pool and backoff waits occupy
no thread, so a slow or failing hook never holds up other experiments' hooks or emissions.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from energy_ledger.daemon.records import StateStore
from energy_ledger.exceptions import LedgerError

logger = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 500


class HookRunner:
    """Runs the hook for emitted experiments, recording each run in the state store."""

    def __init__(
        self,
        argv: list[str],
        store: StateStore,
        *,
        retries: int = 5,
        backoff_sec: float = 1.0,
        timeout_sec: float = 600.0,
        workers: int = 4,
    ) -> None:
        self.argv = argv
        self.store = store
        self.retries = retries
        self.backoff_sec = backoff_sec
        self.timeout_sec = timeout_sec
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="on-emit")
        self._due: list[tuple[float, int, str]] = []
        self._counter = 0
        self._cond = threading.Condition()
        self._closing = False
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._inflight: set[str] = set()
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="on-emit-dispatch", daemon=True
        )
        self._dispatcher.start()

    def submit(self, experiment_id: str, *, delay_sec: float = 0.0) -> None:
        """Schedule the hook of an emitted experiment (its record is ``pending`` or ``running``)."""
        with self._cond:
            if self._closing:
                return
            self._counter += 1
            heapq.heappush(self._due, (time.monotonic() + delay_sec, self._counter, experiment_id))
            self._cond.notify()

    def resume_unfinished(self) -> int:
        """Schedule every hook a previous daemon left ``pending`` or ``running``; return how many.

        A ``running`` record means that daemon stopped while the hook ran (or before it could
        record the exit): the hook runs again, the one case where a hook runs twice.
        """
        resumed = 0
        for record in list(self.store.records.values()):
            if record.hook_state == "running":
                logger.warning(
                    "%s: its hook was running when the daemon stopped; running it again",
                    record.experiment_id,
                )
            if record.hook_state in ("pending", "running"):
                self.submit(record.experiment_id)
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
                _, _, experiment_id = heapq.heappop(self._due)
                if experiment_id in self._inflight:
                    continue
                self._inflight.add(experiment_id)
            self._pool.submit(self._attempt, experiment_id)

    def _attempt(self, experiment_id: str) -> None:
        try:
            self._run_once(experiment_id)
        except Exception:  # a bug here must not kill the pool's thread silently
            logger.exception("on-emit hook for %s: unexpected error", experiment_id)
        finally:
            with self._cond:
                self._inflight.discard(experiment_id)

    def _run_once(self, experiment_id: str) -> None:
        record = self.store.get(experiment_id)
        if record is None or record.hook_state in ("done", "failed", "none"):
            return
        with self._cond:
            if self._closing:
                return
        try:
            record = self.store.set_hook(experiment_id, "running", attempt=True)
        except LedgerError as exc:
            logger.error("on-emit hook for %s not started: %s", experiment_id, exc)
            self.submit(experiment_id, delay_sec=max(self.backoff_sec, 1.0))
            return
        argv = [*self.argv, record.result, experiment_id]
        error = self._execute(argv)
        with self._cond:
            if self._closing:
                return  # stopped mid-run: the record stays "running", so it reruns at start-up
        attempts = record.hook_attempts
        try:
            if error is None:
                self.store.set_hook(experiment_id, "done")
                logger.info("on-emit hook for %s done", experiment_id)
            elif attempts >= self.retries:
                self.store.set_hook(experiment_id, "failed", error=error)
                logger.error(
                    "on-emit hook for %s failed %d times; giving up: %s",
                    experiment_id,
                    attempts,
                    error,
                )
            else:
                delay = self.backoff_sec * 2 ** (attempts - 1)
                self.store.set_hook(experiment_id, "pending", error=error)
                logger.warning(
                    "on-emit hook for %s failed (attempt %d/%d), retrying in %.1f s: %s",
                    experiment_id,
                    attempts,
                    self.retries,
                    delay,
                    error,
                )
                self.submit(experiment_id, delay_sec=delay)
        except LedgerError as exc:
            logger.error("on-emit hook for %s: cannot record its outcome: %s", experiment_id, exc)

    def _execute(self, argv: list[str]) -> str | None:
        """Run one attempt; return ``None`` on success, else why it failed."""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        with self._cond:
            self._procs.add(proc)
        try:
            try:
                out, _ = proc.communicate(timeout=self.timeout_sec)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                return f"timed out after {self.timeout_sec:g} s"
        finally:
            with self._cond:
                self._procs.discard(proc)
        if proc.returncode == 0:
            return None
        tail = out.decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:].strip()
        return f"exit status {proc.returncode}" + (f": {tail}" if tail else "")

    def close(self, grace_sec: float = 1.0) -> None:
        """Stop: let running hooks finish for ``grace_sec``, then terminate them.

        Hooks not started stay ``pending`` and hooks cut short stay ``running``; both run at the
        next start.
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
        for proc in procs:
            _kill_group(proc)
        self._dispatcher.join(timeout=1.0)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a hook and whatever it started (it leads its own session), so pipes close."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
