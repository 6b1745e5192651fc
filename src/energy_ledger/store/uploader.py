"""``SegmentUploader``: a segmented writer's puts, on a thread of their own, in order.

A put to a bucket takes 20 to 200 ms. ``SegmentedLogWriter`` cuts a segment inside whichever
append crosses a threshold, and the recorder appends under its lock, so a put made there would
stall ``request()`` (and the sampler) for that long every few seconds. With an uploader the
cutting append only hands the segment's bytes over; one thread per writer puts them, oldest
first, so segment ``n + 1`` is never created before the create of segment ``n`` succeeded
(docs/format.md §7.2).

- **Bounded.** At most ``max_pending`` segments wait or are being put. An append that cuts one
  more waits for room: memory stays bounded, and a run that outpaces its store slows down
  instead of growing without end. (At the defaults, 16 cuts of 5 s are 80 s of lag, longer
  than obstore's 60 s of retries for one failing put.)
- **The first failure ends it.** A put that raises stops the thread: what is queued is dropped
  (a later segment would follow a gap) and the exception is kept in ``error``, for the writer
  to raise from its next cut, ``close`` or ``fail``, on its own thread.
- ``drain()`` waits until every segment handed over was put, or one failed; ``discard()`` drops
  what is queued and returns at once (what a crash would leave).

The thread starts at the first ``submit`` and is a daemon: a process that exits without
closing its writer loses what was queued, as it would lose an unflushed buffer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_PENDING", "SegmentUploader"]

DEFAULT_MAX_PENDING = 16
"""Segments handed over and not yet put, at most (see the module doc)."""


class SegmentUploader:
    """Call ``put(number, data)`` for each submitted segment, in order, on one thread.

    Thread-safe: ``submit``, ``drain`` and ``discard`` are called by the writer's thread (under
    the recorder's lock), ``put`` runs on the uploader's.

    Args:
        put: stores one segment; raises when it cannot (the first exception ends the uploads).
        max_pending: segments queued or in flight before ``submit`` waits.
        name: the thread's name.

    Attributes:
        error: the exception the failed put raised, or ``None``.
        puts: segments put so far.
    """

    def __init__(
        self,
        put: Callable[[int, bytes], None],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str = "energy-ledger-uploader",
    ) -> None:
        self._put = put
        self._max_pending = max(1, max_pending)
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, bytes]] = deque()
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.puts = 0

    @property
    def pending(self) -> int:
        """Segments handed over and not yet put (queued or in flight)."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def submit(self, number: int, data: bytes) -> None:
        """Hand segment ``number`` over; wait while ``max_pending`` are pending.

        Does nothing once a put failed or after ``drain``/``discard``: the caller checks
        ``error`` (before and after, as it likes).
        """
        with self._cond:
            while (
                len(self._queue) + self._in_flight >= self._max_pending
                and self.error is None
                and not self._stopping
            ):
                self._cond.wait()
            if self.error is not None or self._stopping:
                return
            self._queue.append((number, data))
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def drain(self) -> None:
        """Wait until every segment handed over was put, or one put failed; then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while (self._queue or self._in_flight) and self.error is None:
                self._cond.wait()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def discard(self) -> None:
        """Drop what is queued and stop after the put in flight, without waiting for it."""
        with self._cond:
            self._queue.clear()
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                number, data = self._queue.popleft()
                self._in_flight = 1
            try:
                self._put(number, data)
            except BaseException as exc:  # kept for the writer's thread to raise
                with self._cond:
                    self.error = exc
                    self._queue.clear()
                    self._in_flight = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._in_flight = 0
                self.puts += 1
                self._cond.notify_all()
