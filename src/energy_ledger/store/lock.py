"""The outputs lock: one writer at a time in ``<root>/aggregated``, across processes and hosts.

Every write of a result file and every rebuild of ``results.csv`` happens while holding an
exclusive ``fcntl.flock`` on ``aggregated/.lock``: ``replay``, ``recover`` and the daemon (all
through ``pipeline``) take it, so two of them can never rebuild the CSV from different sets of
results and lose a row. Holding it is short (a few small writes), so waiting is done by polling
with a non-blocking attempt, which lets a stuck holder (a hung NFS client) become a clear error
instead of a hang.

On Linux, ``flock`` on NFS is carried over to the server as a POSIX lock, so it holds across
hosts; on Lustre the client must be mounted with ``-o flock``. The lock file itself is never
removed (removing it would let two writers lock two different files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.layout import ResultsLayout

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
"""File name of the lock in ``aggregated/``."""

LOCK_TIMEOUT_SEC = 120.0
"""How long to wait for another writer before giving up with an error."""

_FIRST_WAIT_SEC = 0.001
_LONGEST_WAIT_SEC = 0.05

_held = threading.local()


def _held_paths() -> set[str]:
    paths: set[str] | None = getattr(_held, "paths", None)
    if paths is None:
        paths = _held.paths = set()
    return paths


def _open_lock_file(path: Path) -> int:
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except PermissionError:
        # Another user's lock file on a shared root: a read-only descriptor locks as well.
        return os.open(path, os.O_RDONLY | flags)


@contextlib.contextmanager
def outputs_lock(layout: ResultsLayout, *, timeout_sec: float = LOCK_TIMEOUT_SEC) -> Iterator[Path]:
    """Hold the exclusive lock on ``<root>/aggregated`` (created if missing) for the block.

    The folder is checked first (a real folder inside the root, not a symbolic link), so a
    refused folder gets no lock file either. A thread that already holds the lock enters again
    without blocking on itself.

    Yields:
        The ``aggregated`` folder.

    Raises:
        UnsafePathError: ``aggregated`` is a symbolic link or leads outside the root.
        LedgerError: the folder or the lock file cannot be used, or another writer held the
            lock for longer than ``timeout_sec``.
    """
    folder = layout.outputs_dir(create=True)
    path = folder / LOCK_NAME
    key = os.path.realpath(path)
    held = _held_paths()
    if key in held:
        yield folder
        return
    try:
        fd = _open_lock_file(path)
    except OSError as exc:
        raise LedgerError(f"cannot open the lock {path}: {exc.strerror or exc}") from exc
    try:
        _acquire(fd, path, timeout_sec)
        held.add(key)
        try:
            yield folder
        finally:
            held.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: Path, timeout_sec: float) -> None:
    deadline = time.monotonic() + timeout_sec
    wait_sec = _FIRST_WAIT_SEC
    logged = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LedgerError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        if time.monotonic() >= deadline:
            raise LedgerError(
                f"{path} has been locked by another energy-ledger process for more than "
                f"{timeout_sec:g} s; is one stuck?"
            )
        if not logged:
            logger.debug("waiting for %s (another writer holds it)", path)
            logged = True
        time.sleep(wait_sec)
        wait_sec = min(_LONGEST_WAIT_SEC, wait_sec * 2)


__all__ = ["LOCK_NAME", "LOCK_TIMEOUT_SEC", "outputs_lock"]
