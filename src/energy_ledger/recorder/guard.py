"""``LossGuard``: a write that fails loses the recording, never the measured program.

The recorder runs inside someone's inference loop. When its log cannot be written (a full disk,
``ENOSPC``; an I/O error, ``EIO``; a quota), raising from ``rec.request()`` or from the sampler
thread would kill that loop for the sake of a measurement. So the first failed write:

- is logged once, at ERROR, naming the log and the reason;
- marks the process as not recorded (``lost``): the writer is closed where it stands and every
  later append is a no-op, so nothing more is written to a log whose bytes on disk no longer
  match what the writer counted;
- means no marker: ``finish()`` writes none and returns ``None``. The log on disk ends where the
  disk filled (perhaps mid-line, which readers treat as torn), so the aggregator sees a process
  that stopped without finishing: the experiment is never complete, and ``recover`` can still
  use what landed, marked partial.

Only failures of the storage are caught: an ``OSError``, a ``LedgerError`` raised from one (how
``EventLogWriter`` and ``write_atomic`` report them), or a ``StoreWriteError`` (how
``SegmentedLogWriter`` reports a put that failed: a full disk, a bucket that refused or could
not be reached, or another writer of the same process that created the segment or the marker
first). A value that breaks the format, a call out of order, or any other exception still
raises: that is a bug in the caller (or in this library), not bad luck with the storage.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from energy_ledger.core.marker import Marker, SegmentedMarker
from energy_ledger.exceptions import LedgerError, StoreWriteError
from energy_ledger.store.logwriter import LogWriter

__all__ = ["LossGuard", "is_write_failure"]

logger = logging.getLogger(__name__)


def is_write_failure(exc: BaseException) -> bool:
    """True for an error of the storage: an ``OSError``, a ``LedgerError`` from one, or a
    ``StoreWriteError`` (a put that failed, whatever its cause)."""
    return isinstance(exc, OSError | StoreWriteError) or (
        isinstance(exc, LedgerError) and isinstance(exc.__cause__, OSError)
    )


class LossGuard:
    """The recorder's view of its log writer: write failures lose the recording.

    Every append goes through it (``request()`` excepted: the hot path checks ``lost`` and calls
    ``lose`` itself, which costs nothing while the disk is fine). Once ``lost``, every call is a
    no-op, so the closed writer, whose descriptor number the process may reuse for another file,
    is never written to again. Call it with the recorder's lock held, like the writer.

    Attributes:
        writer: the guarded writer.
        lost: why the recording was lost (the first failure), or ``None`` while it is fine.
    """

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self.lost: str | None = None

    @property
    def closed(self) -> bool:
        """True once the log was lost, finished or failed: nothing more may be appended."""
        return self.lost is not None or self.writer.closed

    @property
    def last_clock_monotonic_sec(self) -> float | None:
        """The writer's ``last_clock_monotonic_sec``."""
        return self.writer.last_clock_monotonic_sec

    def lose(self, exc: BaseException) -> None:
        """Record the first write failure: log it, close the writer, write nothing more."""
        if self.lost is not None:
            return
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.lost = f"cannot write {os.fspath(self.writer.path)}: {reason}"
        logger.error(
            "energy-ledger: %s; this process is NOT recorded: nothing more is written to its "
            "log and it gets no completion marker (the run itself goes on)",
            self.lost,
        )
        with contextlib.suppress(OSError):
            self.writer.abandon()

    def append_raw(self, obj: dict[str, Any]) -> None:
        """The writer's ``append_raw``, or nothing once lost."""
        if self.lost is None:
            try:
                self.writer.append_raw(obj)
            except (OSError, LedgerError) as exc:
                if not is_write_failure(exc):
                    raise
                self.lose(exc)

    def append(self, type_name: str, **fields: Any) -> None:
        """The writer's ``append`` (a bad value still raises ``FormatError``)."""
        if self.lost is None:
            try:
                self.writer.append(type_name, **fields)
            except (OSError, LedgerError) as exc:
                if not is_write_failure(exc):
                    raise
                self.lose(exc)

    def append_clock(self, t: float, monotonic_sec: float, wall_t: float | None) -> None:
        """The writer's ``append_clock``, or nothing once lost or closed."""
        if not self.closed:
            try:
                self.writer.append_clock(t, monotonic_sec, wall_t)
            except (OSError, LedgerError) as exc:
                if not is_write_failure(exc):
                    raise
                self.lose(exc)

    def close(self) -> Marker | SegmentedMarker | None:
        """The writer's ``close``: the marker, or ``None`` when the log was lost."""
        if self.lost is None:
            try:
                return self.writer.close()
            except (OSError, LedgerError) as exc:
                if not is_write_failure(exc):
                    raise
                self.lose(exc)
        return None

    def fail(self, error: str) -> None:
        """The writer's ``fail``, or nothing once lost."""
        if self.lost is None:
            try:
                self.writer.fail(error)
            except (OSError, LedgerError) as exc:
                if not is_write_failure(exc):
                    raise
                self.lose(exc)
