"""What changed since the watcher last looked: its to-do list, filled from any thread.

:class:`PendingChanges` collects the experiment ids that inotify (on the observer thread) or the
loop's own sweeps (on the main thread) report, each with the monotonic time it was first seen,
so the loop can take them in one batch and the status can say how old the oldest one is.
:class:`DirProbe` tells from one ``stat`` whether ``raw/`` changed, which lets polling skip the
listing of a folder of thousands of experiments when nothing was added.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from energy_ledger.daemon.sources import ROOT_EVENT

__all__ = ["DirProbe", "PendingChanges"]


class PendingChanges:
    """Experiment ids that changed, and whether ``raw/`` must be listed again (thread-safe).

    Every change sets ``wake``, so the loop sleeping on it starts at once.
    """

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self._dirty: dict[str, float] = {}
        self._relist = False
        self._lock = threading.Lock()

    def mark(self, experiment_id: str) -> None:
        """Note that an experiment (or, for ``ROOT_EVENT``, ``raw/`` itself) changed."""
        with self._lock:
            if experiment_id == ROOT_EVENT:
                self._relist = True
            else:
                self._dirty.setdefault(experiment_id, time.monotonic())
        self.wake.set()

    def mark_all(self, experiment_ids: Iterable[str]) -> None:
        """Events were lost: list ``raw/`` again and rescan every one of ``experiment_ids``."""
        with self._lock:
            self._relist = True
            for experiment_id in experiment_ids:
                self._dirty.setdefault(experiment_id, time.monotonic())
        self.wake.set()

    def take(self) -> tuple[dict[str, float], bool]:
        """Empty the list: the changed ids with when each was first seen, and the relist flag."""
        with self._lock:
            batch, self._dirty = self._dirty, {}
            relist, self._relist = self._relist, False
        return batch, relist

    def waiting(self) -> bool:
        """Whether anything is waiting to be taken."""
        with self._lock:
            return bool(self._dirty) or self._relist

    def oldest_t(self) -> float | None:
        """The monotonic time of the oldest change still waiting, or ``None``."""
        with self._lock:
            return min(self._dirty.values(), default=None)


class DirProbe:
    """Whether a folder changed since the last look (a new entry changes its mtime).

    Listing a folder of thousands of experiments every poll would dominate the idle cost; a
    ``stat`` is enough to tell. The first look, and any look that cannot ``stat``, says changed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, ...] = ()

    def changed(self) -> bool:
        """True when the folder's inode, mtime, size or link count differ from the last look."""
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_nlink)
        except OSError:
            return True
        changed = signature != self._signature
        self._signature = signature
        return changed
