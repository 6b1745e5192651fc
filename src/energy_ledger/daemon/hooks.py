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

``hook_schedule.HookScheduler`` holds what this runner shares with the one of bucket roots
(``daemon.bucket_hooks``): the schedule, the thread pool, the step that decides an attempt, the
supervisor's process and the stop. The two differ only in where the markers lie and in how they
judge an attempt whose supervisor they cannot check.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_ledger.daemon.hook_schedule import (
    HookScheduler,
    OwedHook,
    hook_variables,
    local_supervisor_alive,
)
from energy_ledger.daemon.records import EmissionRecord, HookProgress, StateStore
from energy_ledger.exceptions import LeaseLostError

__all__ = ["SUPERVISOR", "HookRunner", "hook_environment"]

logger = logging.getLogger(__name__)

SUPERVISOR = Path(__file__).with_name("supervise.py")


def hook_environment(record: EmissionRecord, result: Path, attempt: int) -> dict[str, str]:
    """``hook_variables`` of a folder root's emission record."""
    return hook_variables(
        emission_id=record.emission_id,
        experiment_id=record.experiment_id,
        result=str(result),
        kind=record.kind,
        attempt=attempt,
    )


def _no_fence() -> None:
    """Without a lease (tests, embedding), every attempt may go ahead."""


class HookRunner(HookScheduler):
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
        self.store = store
        self.root = root
        self.fence = fence
        super().__init__(argv, holder, max_attempts, backoff_sec, timeout_sec, workers)

    def submit(self, key: str, *, delay_sec: float = 0.0) -> None:
        """Schedule the hook of an emission (its ``emitted/`` key)."""
        self._schedule(key, delay_sec)

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

    def _owed(self, key: str) -> OwedHook | None:
        record = self.store.read(key)
        if record is None or not record.hook:
            return None
        result = str(record.result_path(self.root))
        return OwedHook(record.emission_id, record.experiment_id, result, record.kind)

    def _progress(self, key: str, *, up_to: int) -> HookProgress:
        return self.store.read_progress(key, up_to=up_to)

    def _attempt_marker(self, key: str, n: int) -> dict[str, Any]:
        return self.store.attempt_claim(key, n)

    def _alive(self, key: str, n: int) -> bool:
        # A supervisor that cannot be checked (another host) counts as gone: see the module doc.
        who = self._attempt_marker(key, n).get("supervisor")
        return local_supervisor_alive(who, self.host_name) is True

    def _fence(self, key: str) -> bool:
        try:
            self.fence()
        except LeaseLostError:
            return False
        return True

    def _supervisor(self) -> list[str]:
        return [sys.executable, "-I", "-S", str(SUPERVISOR), str(self.store.emitted_dir)]

    def _record_failure(self, key: str, n: int, error: str) -> None:
        self.store.finish_attempt(key, n, error, give_up=False)

    def _give_up(self, key: str, why: str) -> None:
        self.store.give_up(key, why)
        self.store.read_progress(key, up_to=self.max_attempts)

    def _mark_running(self, key: str, running: bool) -> None:
        if running:
            self.store.running.add(key)
        else:
            self.store.running.discard(key)
