"""Atomic, durable file writes: temp file in the same folder, write, fsync, rename, fsync folder.

A reader sees either the old file or the whole new one, never a torn one, and after the call
returns the new content survives a power cut. A failure (a full disk, say) removes the temp file
and leaves the old file as it was. ``write_chunks_if_changed`` does the same for content that
arrives in pieces (a streamed result file), never holding it, or the old file, whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.files import open_regular, read_regular

FILE_MODE = 0o644
"""Mode of the files written (mkstemp would leave them private to their owner)."""

READ_CHUNK_BYTES = 1 << 20
"""How much of an existing file is read at a time to compare it with new content."""


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


def _write_hashed(fh: BinaryIO, chunks: Iterable[bytes]) -> tuple[int, bytes]:
    """Write ``chunks`` to ``fh``; their total size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        fh.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    return size, digest.digest()


def holds(path: Path, size: int, sha256: bytes) -> bool:
    """True when ``path`` is a regular file of ``size`` bytes with this SHA-256.

    Read in chunks, never whole; the size is checked first, so a file that differs in length
    is not read at all. Like ``write_if_changed``, a FIFO or device there is never read.
    """
    try:
        with open_regular(path) as fh:
            if os.fstat(fh.fileno()).st_size != size:
                return False
            digest = hashlib.sha256()
            read = 0
            while read <= size and (block := fh.read(READ_CHUNK_BYTES)):
                digest.update(block)
                read += len(block)
    except OSError:  # missing, not a regular file, unreadable: not the same
        return False
    return read == size and digest.digest() == sha256


def write_chunks_if_changed(path: Path, chunks: Iterable[bytes]) -> bool:
    """Write the bytes of ``chunks`` atomically unless ``path`` already holds exactly them.

    The chunks go straight into the temp file while their SHA-256 is taken; the old file is
    then compared by size and SHA-256 (``holds``). Equal: the temp file is removed unsynced, and
    ``path`` is left untouched. Otherwise the temp file is made durable and renamed over it.

    Returns:
        True when the file was written, False when it was already up to date.

    Raises:
        LedgerError: the write failed (the old content, if any, is untouched). An error raised
            while producing the chunks propagates as it is, with the temp file removed.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    moved = False
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            size, sha256 = _write_hashed(fh, chunks)
            if holds(path, size, sha256):
                return False
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        moved = True
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if not moved:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(folder)
    return True
