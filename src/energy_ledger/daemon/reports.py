"""``watch --report``: report pages written off the loop's thread.

A page for a long experiment takes a second or two to build (its logs are read again for the
power timeline), and the comparison page reads every result of the root. Neither may hold up
an emission, so one worker thread takes experiment ids from a queue: it writes each one's page,
and once the queue is empty it rebuilds the comparison page, at most every
``COMPARISON_MIN_INTERVAL_SEC``, so a burst of emissions costs one comparison build. Pages are
derived outputs written only when their bytes change, so a page lost to a crash is simply
rewritten on the next emission, by ``energy-ledger report``, or by ``replay --report``; a
failure is logged and never stops the daemon.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_ledger.exceptions import LedgerError

logger = logging.getLogger(__name__)

COMPARISON_MIN_INTERVAL_SEC = 10.0
"""Shortest time between two comparison-page builds while results keep arriving."""

_STOP = ""


class ReportWriter:
    """The worker thread of ``watch --report``: ``submit`` an emitted experiment's id."""

    def __init__(
        self, root: Path, *, comparison_interval_sec: float = COMPARISON_MIN_INTERVAL_SEC
    ) -> None:
        # Imported here: the report's libraries (matplotlib, jinja2) load only with --report.
        from energy_ledger.report.extra import require_report_libraries

        require_report_libraries()
        from energy_ledger.report import build

        self._build = build
        self.root = root
        self.interval_sec = comparison_interval_sec
        self.queue: queue.Queue[str] = queue.Queue()
        self.pages_written = 0
        self.failures = 0
        self._dirty = False
        self._last_comparison = -float("inf")
        self._thread = threading.Thread(target=self._run, name="report-writer", daemon=True)
        self._thread.start()

    def submit(self, experiment_id: str) -> None:
        """Write this experiment's page soon (and then the comparison page)."""
        self.queue.put(experiment_id)

    def close(self, timeout_sec: float = 5.0) -> None:
        """Finish what is queued (within ``timeout_sec``) and stop the thread."""
        self.queue.put(_STOP)
        self._thread.join(timeout_sec)

    def _run(self) -> None:
        while True:
            wait = None
            if self._dirty:
                wait = max(0.0, self._last_comparison + self.interval_sec - time.monotonic())
            try:
                experiment_id = self.queue.get(timeout=wait)
            except queue.Empty:
                self._comparison()
                continue
            if experiment_id == _STOP:
                if self._dirty:
                    self._comparison()
                return
            self._page(experiment_id)
            if self.queue.empty() and time.monotonic() - self._last_comparison >= self.interval_sec:
                self._comparison()

    def _page(self, experiment_id: str) -> None:
        directory = self.root / "raw" / experiment_id
        if self._attempt(
            f"{experiment_id}: report", self._build.write_experiment_report, directory
        ):
            self.pages_written += 1
        self._dirty = True

    def _comparison(self) -> None:
        self._dirty = False
        self._last_comparison = time.monotonic()
        self._attempt("comparison report", self._build.write_comparison_report, self.root)

    def _attempt(self, what: str, write: Callable[[Path], Any], path: Path) -> bool:
        """Run one page write; log its outcome; True when it was written. Never raises: a
        report must never take the daemon down."""
        try:
            written = write(path)
        except LedgerError as exc:
            self.failures += 1
            logger.error("%s not written: %s", what, exc)
            return False
        except Exception:
            self.failures += 1
            logger.exception("%s not written (unexpected error)", what)
            return False
        logger.info("%s %s", what, written.page)
        return True


__all__ = ["COMPARISON_MIN_INTERVAL_SEC", "ReportWriter"]
