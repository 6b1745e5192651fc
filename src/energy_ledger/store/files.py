"""Opening input files under ``raw/``: regular files only, without blocking, read with a bound.

Anyone who can write into ``raw/`` can put a FIFO, a device or a folder where a log or a marker
should be. A plain ``open()`` of a FIFO waits for a writer forever, which would hang ``replay``
and the daemon (and make it deaf to SIGTERM). So every input is opened with ``O_NONBLOCK`` (a
FIFO then opens at once, and a device never waits for a carrier), ``fstat``-ed, and refused
unless it is a regular file; ``O_NOFOLLOW`` refuses a name that became a symbolic link after it
was listed (links inside the root are opened on purpose, with ``follow_links``). For a regular
file ``O_NONBLOCK`` changes nothing. The refusal is an ``OSError`` (``NotRegularFileError``), so
callers that already turn I/O errors into reasons need no new case.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["NotRegularFileError", "TooLargeError", "file_kind", "open_regular", "read_regular"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str | None:
    """``None`` for a regular file, else what it is, in words ("a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFileError(OSError):
    """An input path names something other than a regular file; it was not read."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"it is {kind}, not a regular file; not read", str(path))


class TooLargeError(OSError):
    """An input file is larger than what it may hold; it was not read."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(errno.EFBIG, f"larger than {limit:,} bytes; not read", str(path))


def open_regular(path: Path, *, follow_links: bool = False) -> BinaryIO:
    """Open ``path`` for reading when it is a regular file, without ever blocking.

    Args:
        path: the file.
        follow_links: open through a symbolic link (one checked to stay inside the root);
            otherwise a link is refused.

    Raises:
        NotRegularFileError: it is a FIFO, a folder, a device, a socket (or a link, unless
            ``follow_links``).
        OSError: it cannot be opened.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise NotRegularFileError(path, "a symbolic link") from None
        raise
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFileError(path, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int, *, follow_links: bool = False) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (``open_regular``'s rules).

    Raises:
        TooLargeError: the file holds more than ``limit`` bytes (at most ``limit + 1`` are read).
        NotRegularFileError: see ``open_regular``.
        OSError: it cannot be read.
    """
    with open_regular(path, follow_links=follow_links) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(path, limit)
    return data
