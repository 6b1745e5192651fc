"""Where the watcher learns that an experiment changed: inotify (watchdog) or its own polling.

``event_experiment_ids`` is the pure mapping from a filesystem event's paths to experiment ids;
``InotifySource`` wires watchdog's inotify observer to a callback. Polling needs no source object:
the watcher's loop rescans its active experiments and lists ``raw/`` every interval.

A kernel queue overflow (``IN_Q_OVERFLOW``: events were lost) reaches us through watchdog's own
API: its ``InotifyFD`` calls ``on_queue_overflow`` on every callback registered on it, so the
source registers one (:class:`_OverflowCallback`) on the observer's ``InotifyFD``. Nothing reads
watchdog's log text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
)

from energy_ledger.daemon.fsdetect import filesystem_type, is_network_fs_type

logger = logging.getLogger(__name__)

# Opened and closed-without-writing events are left out on purpose: the watcher's own reads
# would otherwise wake it again, forever.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

ROOT_EVENT = ""
"""Pseudo experiment id for an event on ``raw/`` itself: the watcher relists the folder."""


def event_experiment_ids(raw_dir: str, paths: Iterable[str]) -> set[str]:
    """The experiment ids (first path part below ``raw_dir``) that ``paths`` touch.

    An event on ``raw_dir`` itself yields :data:`ROOT_EVENT`; paths outside it yield nothing.
    The ids are not validated here: the watcher reports unsafe names.
    """
    ids: set[str] = set()
    prefix = raw_dir.rstrip(os.sep) + os.sep
    for path in paths:
        if not path:
            continue
        if path in (raw_dir, prefix):
            ids.add(ROOT_EVENT)
        elif path.startswith(prefix):
            ids.add(path[len(prefix) :].split(os.sep, 1)[0])
    return ids


def choose_polling(raw_dir: Path, polling: bool | None) -> tuple[bool, str | None]:
    """Whether to poll (forced, or because ``raw_dir`` is on a network filesystem), and its type."""
    fs_type = filesystem_type(raw_dir)
    if polling is not None:
        return polling, fs_type
    return is_network_fs_type(fs_type), fs_type


class _Handler(FileSystemEventHandler):
    def __init__(self, raw_dir: str, on_change: Callable[[str], None]) -> None:
        self.raw_dir = raw_dir
        self.on_change = on_change

    def dispatch(self, event: FileSystemEvent) -> None:
        paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path or b"")]
        for experiment_id in event_experiment_ids(self.raw_dir, paths):
            self.on_change(experiment_id)


class _OverflowCallback:
    """A watchdog ``WatchCallback`` that only listens for the kernel's queue overflow."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        self.on_overflow = on_overflow

    def on_event(self, event: InotifyEvent) -> None:
        """Ordinary events reach the watcher through the observer's handler, not here."""

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        """``raw/`` itself went away: the watcher's listing notices."""

    def on_queue_overflow(self) -> None:
        """The kernel dropped events: tell the watcher to relist and rescan."""
        self.on_overflow()


class _Observer(BaseObserver):
    """watchdog's inotify observer (as ``InotifyObserver`` builds it), keeping its ``InotifyFD``.

    ``InotifyObserver`` keeps its ``InotifyFD`` to itself; this one exposes it, so that an
    overflow callback can be registered on the very inotify instance whose queue overflows.
    """

    def __init__(self) -> None:
        self.inotify_fd = InotifyFD()
        self.inotify_fd.start()
        super().__init__(
            InotifyEmitter, timeout=DEFAULT_OBSERVER_TIMEOUT, inotify_fd=self.inotify_fd
        )

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self.inotify_fd.stop()
        self.inotify_fd.join()


class InotifySource:
    """watchdog's inotify observer on ``raw/``, recursive, calling ``on_change(experiment_id)``.

    ``on_overflow`` is called (on watchdog's thread) when the kernel dropped events, so that the
    watcher relists everything at once instead of waiting for its periodic reconcile.
    """

    def __init__(
        self,
        raw_dir: Path,
        on_change: Callable[[str], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.raw_dir = raw_dir
        self._observer: _Observer | None = None
        self._handler = _Handler(str(raw_dir), on_change)
        self._overflow = _OverflowCallback(on_overflow)

    @property
    def inotify_fd(self) -> InotifyFD | None:
        """The observer's inotify instance, once started."""
        return self._observer.inotify_fd if self._observer is not None else None

    def start(self) -> None:
        """Start watching; raise ``OSError`` when inotify cannot be used (limits, no support)."""
        observer = _Observer()
        observer.daemon = True
        try:
            observer.schedule(
                self._handler, str(self.raw_dir), recursive=True, event_filter=EVENT_FILTER
            )
            # IN_MASK_ADD leaves the emitter's mask on raw/ (the same watch) as it is: the
            # callback only has to be registered on this inotify instance to hear of overflows.
            mask = Mask(InotifyConstants.IN_MASK_ADD | InotifyConstants.IN_DELETE_SELF)
            observer.inotify_fd.add_callback(
                os.fsencode(self.raw_dir), mask, self._overflow, CallbackId(id(self._overflow))
            )
            observer.start()
        except BaseException:
            observer.inotify_fd.stop()
            raise
        self._observer = observer

    def is_alive(self) -> bool:
        """False when the observer thread died (the watcher then falls back to polling)."""
        return self._observer is not None and self._observer.is_alive()

    def stop(self, timeout_sec: float = 1.0) -> None:
        """Stop the observer thread (bounded wait)."""
        if self._observer is None:
            return
        try:
            self._observer.stop()
            self._observer.join(timeout_sec)
        except (OSError, RuntimeError) as exc:
            logger.debug("stopping the observer: %s", exc)
