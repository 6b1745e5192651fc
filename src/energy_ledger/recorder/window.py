"""``MeasuredWindow``: the one span of a process whose energy is measured.

``ProcessRecorder.window()`` makes one and drives it in three steps:

- ``begin()`` reads the energy counter and writes ``window_started`` with the ``clock`` event
  that shares its reading, then takes a first sample.
- ``start_sampling()`` runs the background ``Sampler``; each reading comes back to ``emit``.
- ``stop_sampling()`` then ``end()`` on leaving (also through an exception): the thread is
  stopped, a last sample is taken, the counter is read again and ``window_ended`` is written,
  with ``energy_mj`` only when both edges read a counter that did not reset (otherwise the
  aggregator integrates the power samples), then warnings for a sampler that died early and for
  reads that kept failing.

It is apart from the recorder because it is the one part that runs on two threads: ``emit`` is
called on the sampler thread as well as the caller's. Everything is appended through the
recorder's writer under the recorder's lock (the writer is not thread-safe), and every ``t`` is
read while that lock is held, so that the log's time never goes backwards whichever thread
appends. The recorder lends its ``clock``-event and warning writers (``append_clock``, ``warn``)
so that those events read the same wherever they are written.

Periodic ``clock`` events ride on samples: while the window is active, a sample that comes
``clock_interval_sec`` or more after the last ``clock`` event (whoever wrote it; the writer
remembers its monotonic reading) is followed by one with the same reading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.recorder.guard import LossGuard
from energy_ledger.recorder.sampler import DeviceReader, Sampler
from energy_ledger.store.clock import EventClock

_V = FORMAT_VERSION


class MeasuredWindow:
    """The window's edges, its samples and its periodic ``clock`` events.

    Args:
        writer: the recorder's event log, behind its ``LossGuard`` (a failed write loses the
            log and makes every later append a no-op; it never raises here).
        reader: the device's reader (samples and counter reads).
        lock: the recorder's lock, held for every append.
        event_clock: the recorder's event clock.
        sample_hz: background sampling rate.
        clock_interval_sec: time between periodic ``clock`` events.
        append_clock: writes a ``clock`` event for a ``(t, monotonic_sec)`` reading; called
            with ``lock`` held.
        warn: writes a ``warning`` event; called with ``lock`` held.

    Attributes:
        active: True while the sampler runs (from ``start_sampling`` until leaving); only
            then are periodic ``clock`` events written.
        samples: readings the sampler thread took (set by ``stop_sampling``).
        cpu_sec: CPU time the sampler thread used (set by ``stop_sampling``).
    """

    def __init__(
        self,
        writer: LossGuard,
        reader: DeviceReader,
        lock: threading.Lock,
        event_clock: EventClock,
        *,
        sample_hz: float,
        clock_interval_sec: float,
        append_clock: Callable[[tuple[float, float]], None],
        warn: Callable[[str], None],
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = lock
        self._event_clock = event_clock
        self._sample_hz = sample_hz
        self._clock_interval_sec = clock_interval_sec
        self._append_clock = append_clock
        self._warn = warn
        self._start_mj: int | None = None
        self._sampler: Sampler | None = None
        self.active = False
        self.samples = 0
        self.cpu_sec = 0.0

    def begin(self) -> None:
        """Write ``window_started`` (counter reading, then its ``clock`` event), then a sample."""
        writer = self._writer
        with self._lock:
            self._start_mj = self._read_energy_locked("window start")
            reading = self._event_clock.reading()
            obj: dict[str, Any] = {"v": _V, "seq": 0, "t": reading[0], "type": "window_started"}
            if self._start_mj is not None:
                obj["energy_mj"] = self._start_mj
            writer.append_raw(obj)
            self._append_clock(reading)
        self.emit(*self._reader.read())

    def start_sampling(self) -> None:
        """Start the background sampler (its first reading comes one interval from now)."""
        sampler = Sampler(self._reader, self.emit, sample_hz=self._sample_hz)
        self._sampler = sampler
        self.active = True
        sampler.start()

    def stop_sampling(self) -> None:
        """Stop the sampler thread and keep its counts; safe to call again, or before start."""
        self.active = False
        sampler = self._sampler
        if sampler is not None:
            sampler.stop()
            self.cpu_sec, self.samples = sampler.cpu_sec, sampler.samples

    def end(self) -> None:
        """Take a last sample and write ``window_ended`` and the window's closing warnings.

        Nothing is written once the log is closed (the recorder failed inside the window).
        """
        reader, writer = self._reader, self._writer
        self.emit(*reader.read())
        with self._lock:
            if writer.closed:
                return
            end_mj = self._read_energy_locked("window end")
            reading = self._event_clock.reading()
            obj: dict[str, Any] = {"v": _V, "seq": 0, "t": reading[0], "type": "window_ended"}
            if self._start_mj is not None and end_mj is not None and not reader.counter_reset:
                obj["energy_mj"] = end_mj
            writer.append_raw(obj)
            self._append_clock(reading)
            sampler = self._sampler
            if sampler is not None and sampler.error is not None:
                self._warn(f"background sampler stopped early: {sampler.error}")
            for message in reader.failure_summary():
                self._warn(message)

    def emit(self, fields: dict[str, Any], warnings: Sequence[str]) -> None:
        """Append one reading: the sample, a periodic ``clock`` event when due, its warnings.

        Called on the sampler thread and at the edges; does nothing once the log is closed.
        """
        with self._lock:
            writer = self._writer
            if writer.closed:
                return
            reading = self._event_clock.reading()
            if fields:
                obj: dict[str, Any] = {"v": _V, "seq": 0, "t": reading[0], "type": "sample"}
                obj.update(fields)
                writer.append_raw(obj)
            # Before the warnings, which are stamped later: t must not go back.
            last_sec = writer.last_clock_monotonic_sec
            due = last_sec is None or reading[1] - last_sec >= self._clock_interval_sec
            if due and self.active:
                self._append_clock(reading)
            for message in warnings:
                self._warn(message)

    def _read_energy_locked(self, where: str) -> int | None:
        """Read the counter at a window edge; a failure or a reset becomes a warning event."""
        value, warning = self._reader.edge_energy(where)
        if warning:
            self._warn(warning)
        return value


__all__ = ["MeasuredWindow"]
