"""Running the watcher as a process: stop on SIGTERM/SIGINT and turn its outcome into an exit code.

``energy-ledger watch`` calls :func:`run_watch`; tests and embedders that run the watcher on a
thread pass their own ``stop_event`` instead (signal handlers can only be installed from the
main thread, so there none are). Mistakes a user can fix (no such root, the ``raw/`` folder given
for the root, an ``--on-emit`` program that does not exist, a metrics port in use or
prometheus-client missing) are found before anything starts and raised, so that the CLI reports
them like every other command's (exit 2). The metrics server (``daemon.exporter``, imported only
with a metrics port) listens before the loop starts and stops after it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from energy_ledger.daemon.bucket_watcher import BucketWatcher
from energy_ledger.daemon.config import WatchConfig, check_hook_program
from energy_ledger.daemon.metrics import SnapshotBox, require_metrics_library
from energy_ledger.daemon.watcher import (
    EXIT_ERROR,
    EXIT_LEASE_HELD,
    EXIT_LEASE_LOST,
    EXIT_OK,
    Watcher,
)
from energy_ledger.exceptions import ConfigError, LeaseHeldError, LedgerError
from energy_ledger.store.layout import AGGREGATED_DIR, RAW_DIR
from energy_ledger.store.objects import open_objects
from energy_ledger.store.objectstore import ObjectStore, is_url
from energy_ledger.store.probe import probe_conditional_writes

__all__ = [
    "EXIT_ERROR",
    "EXIT_LEASE_HELD",
    "EXIT_LEASE_LOST",
    "EXIT_OK",
    "check_bucket_startup",
    "check_startup",
    "run_watch",
]

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


def check_startup(root: str | os.PathLike[str], config: WatchConfig) -> None:
    """Refuse, before starting, a root or a hook that cannot work.

    A folder without ``raw/`` is a new, empty root (the daemon creates ``raw/``) unless it looks
    like part of one: the ``raw/`` folder itself, an experiment folder, or ``aggregated/``.

    Raises:
        LedgerError: no such folder, or a part of a root given for the root (with the folder
            probably meant).
        ConfigError: the ``--on-emit`` program is missing or not executable, or a metrics port
            is set and prometheus-client is not installed.
    """
    path = Path(os.path.abspath(root))
    if not path.exists():
        raise LedgerError(f"{path}: no such results folder")
    if not path.is_dir():
        raise LedgerError(f"{path}: not a folder (a results root is a folder holding raw/)")
    if not (path / RAW_DIR).is_dir():
        parent = path.parent
        meant = None
        if path.name == RAW_DIR or (path.name == AGGREGATED_DIR and (parent / RAW_DIR).is_dir()):
            meant = parent
        elif parent.name == RAW_DIR:
            meant = parent.parent
        if meant is not None:
            raise LedgerError(
                f"{path} is part of a results root, not a root; did you mean {meant}?"
            )
    argv = config.hook_argv()
    if argv is not None:
        check_hook_program(argv)
    if config.metrics_port is not None:
        require_metrics_library()


def check_bucket_startup(url: str, config: WatchConfig) -> ObjectStore:
    """Open a bucket root and refuse, before starting, what a bucket daemon cannot do.

    Raises:
        ConfigError: an option only a folder daemon has (``--report``, ``--recover-stale``,
            ``--state-dir``), a missing ``--on-emit`` program, or a metrics port without
            prometheus-client.
        LedgerError: the store cannot be opened (the ``s3`` extra missing, a bad URL), or it
            does not honour conditional writes (``ConditionalWritesUnsupported``).
    """
    unsupported = [
        flag
        for flag, on in (
            ("--report", config.report),
            ("--recover-stale", config.recover_stale),
            ("--state-dir", config.state_dir is not None),
        )
        if on
    ]
    if unsupported:
        raise ConfigError(
            f"{url}: {', '.join(unsupported)} work on a folder root only; a daemon on a bucket "
            "keeps its state in the bucket and writes no reports or partial results yet "
            "(docs/object-storage.md)"
        )
    argv = config.hook_argv()
    if argv is not None:
        check_hook_program(argv)
    if config.metrics_port is not None:
        require_metrics_library()
    objects = open_objects(url)
    probe_conditional_writes(objects)
    return objects


def run_watch(
    root: str | Path, config: WatchConfig, *, stop_event: threading.Event | None = None
) -> int:
    """Run the watcher on ``root`` until SIGTERM/SIGINT or ``stop_event``; return an exit code.

    Returns:
        ``EXIT_OK`` after a clean stop, ``EXIT_LEASE_HELD`` when another daemon runs on the root,
        ``EXIT_LEASE_LOST`` when another daemon took the lease over, ``EXIT_ERROR`` otherwise.

    Raises:
        LedgerError: see :func:`check_startup`; ``ConfigError`` when the metrics port cannot be
            listened on (nothing was started; the CLI exits 2).
    """
    bucket = is_url(str(root))
    objects = check_bucket_startup(str(root), config) if bucket else None
    if not bucket:
        check_startup(root, config)
    box = server = None
    if config.metrics_port is not None:
        from energy_ledger.daemon.exporter import start_exporter

        box = SnapshotBox()
        server = start_exporter(box, config.metrics_host, config.metrics_port)
    stop = stop_event or threading.Event()
    try:
        watcher: Watcher | BucketWatcher
        if objects is not None:
            watcher = BucketWatcher(objects, config, stop, metrics=box, probed=True)
        else:
            watcher = Watcher(root, config, stop, metrics=box)
        with _stop_on_signals(watcher.stop, watcher.wake):
            try:
                return watcher.run()
            except LeaseHeldError as exc:
                logger.error("%s", exc)
                return EXIT_LEASE_HELD
            except LedgerError as exc:
                logger.error("%s", exc)
                return EXIT_ERROR
    finally:
        if server is not None:
            server.close()
