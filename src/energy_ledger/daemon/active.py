"""The watcher's active set: what it keeps per experiment not yet emitted (docs/watcher.md).

An experiment that may still complete is ``Tracked``: one ``LogTail`` per log, so a change costs
only the bytes appended. One that cannot complete as it stands (failed, invalid, stale) is
``Retired`` once a scan finds nothing new: only its folder's fingerprint and its verdict are
kept, so that a root with thousands of failed runs holds no latency arrays for them and a sweep
opens none of their logs. Both give the same row in ``status.json``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from energy_ledger.core.live import MAX_LIVE_EXPERIMENTS, LiveFigures, live_figures, pick_live
from energy_ledger.store.reader import LogTail

__all__ = [
    "RETIRE_QUIET_SEC",
    "RETIRING",
    "STATES",
    "Retired",
    "Tracked",
    "live_of",
    "state_counts",
    "status_rows",
]


@dataclass(slots=True)
class Tracked:
    """An active experiment: its log cursors and the last verdict on it."""

    tails: dict[int, LogTail] = field(default_factory=dict)
    state: str = "new"
    detail: str = ""
    last_activity_t: float = 0.0
    signature: tuple[tuple[int, int], ...] = ()
    stale: bool = False
    recovered: bool = False
    reported: str = ""

    def view(self, experiment_id: str, now: float) -> dict[str, Any]:
        """Its row in the ``active`` list of ``status.json``."""
        return status_row(experiment_id, self, now, retired=False)


def status_row(
    experiment_id: str, record: Tracked | Retired, now: float, *, retired: bool
) -> dict[str, Any]:
    """The row of an active or retired experiment in the ``active`` list of ``status.json``."""
    return {
        "experiment_id": experiment_id,
        "state": record.state,
        "detail": record.detail,
        "idle_sec": round(now - record.last_activity_t, 1),
        "stale": record.stale,
        "retired": retired,
    }


RETIRING = ("failed", "invalid")
"""States in which an experiment leaves the active set once a scan finds nothing new (stale ones
too): it cannot complete without its files changing."""
RETIRE_QUIET_SEC = 5.0
"""An experiment seen for the first time whose files are older than this retires after that first
scan; a younger one waits for a scan that finds nothing new (its other ranks may still write).
So a daemon starting on a root of old failed runs holds one run's state at a time, not all."""


@dataclass(slots=True)
class Retired:
    """A failed, invalid or stale experiment that the sweeps no longer read.

    It keeps what notices a change, its folder's ``fingerprint`` (names, inodes, sizes, mtimes;
    ``reader.folder_fingerprint``), and what the status lists; its log cursors, with their
    folded states and latency arrays, are dropped. It is looked at again (one ``stat`` per file,
    no file opened) when inotify reports a change in its folder and at every full reconcile;
    a changed fingerprint puts it back in the active set, which reads its logs from the start.
    """

    fingerprint: int
    state: str
    detail: str
    reported: str
    last_activity_t: float
    stale: bool

    def view(self, experiment_id: str, now: float) -> dict[str, Any]:
        """Its row in the ``active`` list of ``status.json`` (``retired``: no longer read)."""
        return status_row(experiment_id, self, now, retired=True)

    @classmethod
    def of(cls, tracked: Tracked, fingerprint: int) -> Retired:
        """What is kept of ``tracked`` when it leaves the active set."""
        return cls(
            fingerprint=fingerprint,
            state=tracked.state,
            detail=tracked.detail,
            reported=tracked.reported,
            last_activity_t=tracked.last_activity_t,
            stale=tracked.stale,
        )


def status_rows(
    active: Mapping[str, Tracked], retired: Mapping[str, Retired], now: float
) -> list[dict[str, Any]]:
    """The ``active`` list of ``status.json``: every experiment not emitted, sorted by id."""
    rows = [t.view(e, now) for e, t in active.items()]
    rows += [r.view(e, now) for e, r in retired.items()]
    return sorted(rows, key=operator.itemgetter("experiment_id"))


STATES = ("pending", "complete", "emitted", "failed", "invalid", "stale")
"""The states experiments are counted by (``status.json``'s ``counts``, ``/metrics``)."""


def state_counts(rows: list[dict[str, Any]], emitted: int) -> dict[str, int]:
    """Experiments by state, each counted once, from the ``active`` rows and the emitted count.

    A stale experiment counts as ``stale`` whatever its completeness state, one not scanned yet
    (``new``) as ``pending``; an experiment still here with a complete state is one whose result
    could not be written.
    """
    counts = dict.fromkeys(STATES, 0)
    counts["emitted"] = emitted
    for row in rows:
        state = "stale" if row["stale"] else row["state"]
        counts[state if state in counts and state != "emitted" else "pending"] += 1
    return counts


def live_of(active: Mapping[str, Tracked]) -> tuple[list[LiveFigures], int]:
    """The live figures of the most recently active experiments (at most
    ``MAX_LIVE_EXPERIMENTS``), by id, and how many were left out. Retired experiments hold no
    folded states, so they have none."""
    chosen, left_out = pick_live(
        {e: t.last_activity_t for e, t in active.items()}, MAX_LIVE_EXPERIMENTS
    )
    figures = []
    for experiment_id in chosen:
        tracked = active[experiment_id]
        states = {i: tail.cursor.state for i, tail in tracked.tails.items()}
        state = "pending" if tracked.state == "new" else tracked.state
        figures.append(live_figures(experiment_id, state, states, stale=tracked.stale))
    return figures, left_out
