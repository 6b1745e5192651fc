"""``LogTail``: one log file followed by a resumable replay cursor (I/O shell).

The daemon keeps one per log of each active experiment, so a change costs the bytes appended;
``scan_experiment`` makes a fresh one for a one-off read. It opens only regular files, without
blocking (``store.files``), and it does not latch a line that fails to decode while no marker
covers its bytes: on NFS a reader can see NULs for a moment where another host's write has not
landed, so such a line is read again at the next refresh (docs/format.md §2.1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from energy_ledger.core.replay import (
    CHUNK_BYTES,
    MAX_LINE_BYTES,
    FrozenDigestError,
    ReplayCursor,
    replay_stream,
)
from energy_ledger.exceptions import FormatError, UnsupportedVersionError
from energy_ledger.store.files import NotRegularFileError, file_kind, open_regular

__all__ = ["LogTail"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LogTail:
    """A replay cursor tied to one log file, so the next read takes only the appended bytes.

    ``identity`` (device, inode) and ``head`` (the first bytes) detect a file that was replaced or
    truncated; such a file is replayed from the beginning. ``stamp`` (inode, size, mtime, ctime
    at the last read) lets a refresh of an unchanged file stop at one ``stat``.

    Three kinds of trouble, told apart because they are retried differently:

    - ``error`` with ``latched`` False: the file cannot be opened or is not a regular file
      (a FIFO is never opened for reading, so it cannot block). Tried again at every refresh.
    - ``unread``: a line that does not decode, in bytes no marker covers yet. The cursor stays at
      the start of that line (everything before it folded) and every refresh reads it again,
      whether or not the file's size or mtime moved. When the line holds NUL bytes (``hole``)
      it is most likely bytes another host has not finished writing: NFS shows such a hole as
      NULs for a moment, and no writer writes a NUL. ``confirm`` makes it final once a marker
      covers it.
    - ``error`` with ``latched`` True: a final format error (a marker covers the bad bytes, or
      the line declares a newer format). It stays until the file is replaced.
    """

    path: Path
    cursor: ReplayCursor = field(default_factory=ReplayCursor)
    identity: tuple[int, int] | None = None
    head: bytes = b""
    size: int = 0
    error: str | None = None
    latched: bool = False
    unread: str | None = None
    hole: bool = False
    follow_links: bool = False
    stamp: tuple[int, int, int, int] | None = None

    HEAD_BYTES = 256

    def refresh(self, *, strict: bool = True) -> bool:
        """Read what was appended since the last call; return True when anything changed."""
        name = self.path.name
        try:
            st = os.stat(self.path, follow_symlinks=self.follow_links)
            kind = file_kind(st.st_mode)
            if kind is not None:
                raise NotRegularFileError(self.path, kind)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if stamp == self.stamp and self.unread is None:
                return False
            with open_regular(self.path, follow_links=self.follow_links) as fh:
                return self._read(fh, strict)
        except FileNotFoundError:
            return self._fail(f"{name}: the log vanished")
        except OSError as exc:
            return self._fail(f"{name}: cannot read: {exc.strerror or exc}")

    def confirm(self, marker_log_bytes: int) -> None:
        """A marker says the log holds ``marker_log_bytes``: an ``unread`` line in them is final.

        The writer makes its log durable before it writes the marker (docs/format.md §6), so
        bytes a marker covers are written: a line among them that does not decode is corrupt.
        """
        if self.unread is not None and marker_log_bytes >= self.cursor.offset:
            self.error, self.latched, self.unread, self.hole = self.unread, True, None, False

    def _fail(self, message: str) -> bool:
        changed = message != self.error
        self.error, self.latched, self.stamp = message, False, None  # no stamp: retried
        return changed

    def _read(self, fh: BinaryIO, strict: bool) -> bool:
        st = os.fstat(fh.fileno())
        identity = (st.st_dev, st.st_ino)
        known = self.identity is not None
        replaced = known and (identity != self.identity or st.st_size < self.cursor.offset)
        if known and not replaced and self.head:
            replaced = fh.read(len(self.head)) != self.head
        if replaced:
            logger.info("%s was replaced or truncated: replaying it from the start", self)
            self.cursor, self.latched, self.head = ReplayCursor(), False, b""
        self.identity, self.size = identity, st.st_size
        self.stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self.latched:
            return False  # a corrupt log stays corrupt until it is replaced
        before = (self.cursor.offset, self.unread, self.error)
        self.error = self.unread = None
        self.hole = False
        try:
            try:
                replay_stream(fh, self.cursor, path=str(self.path), strict=strict)
            except FrozenDigestError:
                # Replayed in a worker process, and the log grew since: read it again here.
                self.cursor = ReplayCursor()
                replay_stream(fh, self.cursor, path=str(self.path), strict=strict)
        except FormatError as exc:
            where = f":{exc.line}" if exc.line is not None else ""
            message = f"{self.path.name}{where}: {exc.reason}"
            if isinstance(exc, UnsupportedVersionError):
                self.error, self.latched = message, True  # a newer writer, not a passing hole
            else:
                self.unread = message  # the cursor stands at that line: read it again later
                self.hole = _holds_nul(fh, self.cursor.offset)
        if len(self.head) < self.HEAD_BYTES:
            fh.seek(0)
            self.head = fh.read(min(self.HEAD_BYTES, self.cursor.offset))
        return (self.cursor.offset, self.unread, self.error) != before

    def __str__(self) -> str:
        return str(self.path)


def _holds_nul(fh: BinaryIO, offset: int) -> bool:
    """Whether the line starting at ``offset`` holds a NUL byte (read up to its newline)."""
    fh.seek(offset)
    seen = 0
    while seen <= MAX_LINE_BYTES:
        chunk = fh.read(CHUNK_BYTES)
        if not chunk:
            return False
        end = chunk.find(b"\n")
        if b"\x00" in (chunk if end < 0 else chunk[:end]):
            return True
        if end >= 0:
            return False
        seen += len(chunk)
    return False
