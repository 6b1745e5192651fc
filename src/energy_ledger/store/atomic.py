"""Atomic, durable file writes: temp file in the same folder, write, fsync, rename, fsync folder.

A reader sees either the old file or the whole new one, never a torn one, and after the call
returns the new content survives a power cut. A failure (a full disk, say) removes the temp file
and leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.files import read_regular

FILE_MODE = 0o644
"""Mode of the files written (mkstemp would leave them private to their owner)."""


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes) -> str:
    """A durable temp file beside ``path`` holding ``data`` (mode ``FILE_MODE``); its name.

    The caller moves it into place (``os.replace``, ``os.link``) and removes it on failure.

    Raises:
        OSError: it could not be created or written (nothing is left behind).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp creates 0600; results on a shared filesystem must be readable by others.
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Raises:
        LedgerError: the write failed (the message names the file and the reason); the old
            content, if any, is untouched.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = write_temp(path, data)
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    fsync_dir(folder)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly these bytes.

    Returns:
        True when the file was written, False when it was already up to date.
    """
    try:
        # Read as a regular file, with a bound: a FIFO or device put there is never opened
        # for reading (it could block), and a file longer than ``data`` cannot equal it.
        if read_regular(path, len(data)) == data:
            return False
    except OSError:  # missing, longer, not a regular file: replace it
        pass
    write_atomic(path, data)
    return True
