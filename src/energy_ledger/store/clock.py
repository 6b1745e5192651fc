"""The clocks a ledger is stamped with, and the results filesystem's clock seen from this host.

Two problems, both of which make published numbers wrong without any error:

- **The system clock can step backwards.** NTP (or an administrator) may set ``time.time()``
  back by milliseconds or more while a process runs; a log stamped with it would then hold a
  ``t`` that decreases, which the format forbids, and a window whose length is off by the step.
  ``AnchoredClock`` reads the wall clock once, at the start, and from then on adds the elapsed
  time of ``time.monotonic()``: never backwards, and on Linux it follows NTP's rate corrections
  (slewing) though not its steps, so it keeps the wall clock's rate.
- **Hosts disagree on the time.** Ranks on different hosts stamp their events with different
  clocks. The one clock they share is the results filesystem's: a write stamps the file's
  mtime with the clock of whatever stamps it (the NFS server, or the kernel writing a local
  file). ``estimate_fs_offset`` turns one timed write and the mtime it left into an interval
  for ``wall - fs`` (this host's wall clock minus the filesystem's); ``EventLogWriter``
  measures it when asked (``flush(measure_fs_offset=True)``) and reports the latest estimate in
  ``clock`` events, and the aggregator compares the estimates of different hosts.

Nothing here does I/O except reading clocks; the writer owns the file and the ``fstat``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WHOLE_SECOND_ERROR_SEC = 1.0
"""Error added to an estimate when the filesystem keeps mtimes in whole seconds."""


def _mtime_lag_sec() -> float:
    """How far a file timestamp may lag the precise clock at the instant of the write.

    Linux stamps mtimes from its coarse clock (``CLOCK_REALTIME_COARSE``, clock id 5, not
    exposed by name in ``time``), which moves on once per scheduler tick (1 to 10 ms), so a stamp
    is up to a tick older than ``time.time()`` read just before the write, plus however late the
    tick's interrupt ran: on a 4 ms-tick virtual machine stamps were seen 4.7 ms old. Two ticks
    covers that. Other systems: a conservative 20 ms.
    """
    if sys.platform.startswith("linux"):
        try:
            return 2 * max(time.clock_getres(5), 1e-9)
        except OSError:
            pass
    return 0.02


MTIME_LAG_SEC = _mtime_lag_sec()
"""This host's bound on how old an mtime is when stamped, assumed for an NFS server too (it is
usually the same few milliseconds; a wrong guess changes the error by milliseconds, far below
the aggregator's 400 ms skew bound)."""


class EventClock(Protocol):
    """What the recorder stamps events with.

    ``now()`` is the hot path (one call per event); ``reading()`` returns ``t`` and the
    monotonic clock at one instant, for ``clock`` events.
    """

    now: Callable[[], float]

    def reading(self) -> tuple[float, float]:
        """``(t, monotonic_sec)`` at one instant."""
        ...


class AnchoredClock:
    """Unix time that never goes backwards: ``wall0 + (time.monotonic() - mono0)``.

    ``wall0`` and ``mono0`` are read together when the clock is made. ``now`` is a closure
    rather than a method because it is called once per event on the recorder's hot path, and
    a closure call costs about half as much as a bound ``__call__``.

    Attributes:
        wall0_sec: ``time.time()`` at the anchor.
        mono0_sec: ``time.monotonic()`` at the anchor.
        now: the current time on this clock (Unix seconds).
    """

    __slots__ = ("mono0_sec", "now", "wall0_sec")

    def __init__(self) -> None:
        mono0_sec = time.monotonic()
        wall0_sec = time.time()
        self.mono0_sec = mono0_sec
        self.wall0_sec = wall0_sec
        monotonic = time.monotonic

        def now() -> float:
            return wall0_sec + (monotonic() - mono0_sec)

        self.now: Callable[[], float] = now

    def reading(self) -> tuple[float, float]:
        """``(t, monotonic_sec)`` from one monotonic read; ``t`` is what ``now()`` would say."""
        mono_sec = time.monotonic()
        return self.wall0_sec + (mono_sec - self.mono0_sec), mono_sec


class CallerClock:
    """A clock the caller gave (tests inject one), with the monotonic clock read beside it.

    Attributes:
        now: the caller's clock.
    """

    __slots__ = ("now",)

    def __init__(self, clock: Callable[[], float]) -> None:
        self.now = clock

    def reading(self) -> tuple[float, float]:
        """``(now(), time.monotonic())``, read back to back."""
        return self.now(), time.monotonic()


def event_clock(clock: Callable[[], float] | None = None) -> AnchoredClock | CallerClock:
    """The clock to stamp events with: ``clock`` when given, else a new ``AnchoredClock``."""
    return AnchoredClock() if clock is None else CallerClock(clock)


@dataclass(frozen=True, slots=True)
class FsOffset:
    """An estimate of this host's wall clock minus the results filesystem's clock.

    Attributes:
        offset_sec: the middle of the interval the offset lies in.
        error_sec: the half-width of that interval (``>= 0``).
        whole_second_mtime: the filesystem seemed to keep mtimes in whole seconds, so
            ``WHOLE_SECOND_ERROR_SEC`` is included in ``error_sec``.
    """

    offset_sec: float
    error_sec: float
    whole_second_mtime: bool = False


def estimate_fs_offset(
    before_sec: float,
    after_sec: float,
    mtime_ns: int,
    *,
    lag_sec: float = MTIME_LAG_SEC,
    whole_second_mtime: bool = False,
) -> FsOffset | None:
    """The offset ``wall - fs`` from one timed write and the mtime it left.

    ``before_sec`` is ``time.time()`` just before the write, ``after_sec`` just after the
    ``fstat`` that read ``mtime_ns``. The filesystem stamped the mtime with its clock at some
    instant in between: at the write for a local file, at the latest when ``fstat`` returned for
    NFS (whose ``fstat`` first sends the written pages to the server). The stamp lags that
    instant by at most ``lag_sec`` (a coarse clock). So with ``m`` the mtime in seconds the
    offset lies in ``[before_sec - m - lag_sec, after_sec - m]``; the estimate is its middle
    and the error its half-width.

    A filesystem that keeps whole seconds (nanoseconds part 0; Lustre, ext4 with small inodes)
    truncates or rounds the stamp by up to a second, so ``whole_second_mtime`` adds
    ``WHOLE_SECOND_ERROR_SEC`` to the error on both sides.

    Returns:
        The estimate, or ``None`` when ``after_sec < before_sec`` (the wall clock was stepped
        back during the measurement, which then bounds nothing).
    """
    if after_sec < before_sec:
        return None
    mtime_sec = mtime_ns / 1e9
    low_sec = before_sec - mtime_sec - lag_sec
    high_sec = after_sec - mtime_sec
    error_sec = (high_sec - low_sec) / 2
    if whole_second_mtime:
        error_sec += WHOLE_SECOND_ERROR_SEC
    return FsOffset((low_sec + high_sec) / 2, error_sec, whole_second_mtime)


__all__ = [
    "MTIME_LAG_SEC",
    "WHOLE_SECOND_ERROR_SEC",
    "AnchoredClock",
    "CallerClock",
    "EventClock",
    "FsOffset",
    "estimate_fs_offset",
    "event_clock",
]
