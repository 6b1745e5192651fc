"""Running the watcher as a process: stop on SIGTERM/SIGINT and turn its outcome into an exit code.

``energy-ledger watch`` calls :func:`run_watch`; tests and embedders that run the watcher on a
thread pass their own ``stop_event`` instead (signal handlers can only be installed from the
main thread, so there none are).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.watcher import (
    EXIT_ERROR,
    EXIT_LEASE_HELD,
    EXIT_LEASE_LOST,
    EXIT_OK,
    Watcher,
)
from energy_ledger.exceptions import LeaseHeldError, LedgerError

__all__ = ["EXIT_ERROR", "EXIT_LEASE_HELD", "EXIT_LEASE_LOST", "EXIT_OK", "run_watch"]

logger = logging.getLogger(__name__)


@contextmanager
def _stop_on_signals(stop: threading.Event, wake: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere the caller stops us)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_watch(
    root: str | Path, config: WatchConfig, *, stop_event: threading.Event | None = None
) -> int:
    """Run the watcher on ``root`` until SIGTERM/SIGINT or ``stop_event``; return an exit code.

    Returns:
        ``EXIT_OK`` after a clean stop, ``EXIT_LEASE_HELD`` when another daemon runs on the root,
        ``EXIT_LEASE_LOST`` when another daemon took the lease over, ``EXIT_ERROR`` otherwise.
    """
    watcher = Watcher(root, config, stop_event or threading.Event())
    with _stop_on_signals(watcher.stop, watcher.wake):
        try:
            return watcher.run()
        except LeaseHeldError as exc:
            logger.error("%s", exc)
            return EXIT_LEASE_HELD
        except LedgerError as exc:
            logger.error("%s", exc)
            return EXIT_ERROR
