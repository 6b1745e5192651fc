"""Where the watcher learns that an experiment changed: inotify (watchdog) or its own polling.

``event_experiment_ids`` is the pure mapping from a filesystem event's paths to experiment ids;
``InotifySource`` wires watchdog's native observer to a callback. Polling needs no source object:
the watcher's loop rescans its active experiments and lists ``raw/`` every interval.
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
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

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


class _OverflowSpotter(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log record; turn it into a callback."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


class InotifySource:
    """watchdog's native observer on ``raw/``, recursive, calling ``on_change(experiment_id)``.

    ``on_overflow`` is called when the kernel dropped events, so that the watcher relists
    everything at once instead of waiting for its periodic reconcile.
    """

    def __init__(
        self,
        raw_dir: Path,
        on_change: Callable[[str], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.raw_dir = raw_dir
        self._observer: BaseObserver = Observer()
        self._observer.daemon = True
        self._handler = _Handler(str(raw_dir), on_change)
        self._spotter = _OverflowSpotter(on_overflow)
        self._watch_loggers = [
            logging.getLogger("watchdog.observers.inotify_c"),
            logging.getLogger("watchdog.observers.inotify"),
        ]

    def start(self) -> None:
        """Start watching; raise ``OSError`` when inotify cannot be used (limits, no support)."""
        self._observer.schedule(
            self._handler, str(self.raw_dir), recursive=True, event_filter=EVENT_FILTER
        )
        for log in self._watch_loggers:
            log.addHandler(self._spotter)
        self._observer.start()

    def is_alive(self) -> bool:
        """False when the observer thread died (the watcher then falls back to polling)."""
        return self._observer.is_alive()

    def stop(self, timeout_sec: float = 1.0) -> None:
        """Stop the observer thread (bounded wait)."""
        for log in self._watch_loggers:
            log.removeHandler(self._spotter)
        try:
            self._observer.stop()
            self._observer.join(timeout_sec)
        except (OSError, RuntimeError) as exc:
            logger.debug("stopping the observer: %s", exc)
