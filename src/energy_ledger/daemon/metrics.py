"""What ``watch --metrics-port`` exports, kept apart from prometheus-client (docs/watcher.md).

The loop keeps ``LoopCounters`` (plain integers and ``Histogram`` accumulators, touched on its
own thread only) and, at every status write, publishes an immutable ``MetricsSnapshot`` into a
``SnapshotBox``. A scrape, on the HTTP server's threads (``daemon.exporter``), takes the latest
snapshot from the box and renders it. The box's lock guards one reference, held only to swap or
take it, so a scrape never blocks the loop and the loop never waits for a scrape; a snapshot is
at most one status interval old (about half a second). Nothing here imports prometheus-client:
``require_metrics_library`` checks that it is installed, and says what to install if not.
"""

from __future__ import annotations

import bisect
import importlib.util
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from energy_ledger._version import __version__
from energy_ledger.core.live import LiveFigures
from energy_ledger.core.replay import ReplayCursor
from energy_ledger.exceptions import ConfigError
from energy_ledger.store.reader import newest_mtime

__all__ = [
    "EMISSION_LATENCY_BUCKETS_SEC",
    "INSTALL_HINT",
    "SCAN_BUCKETS_SEC",
    "Histogram",
    "HistogramValue",
    "LoopCounters",
    "MetricsSnapshot",
    "SnapshotBox",
    "marker_latency_sec",
    "metrics_library_missing",
    "require_metrics_library",
]

INSTALL_HINT = "pip install 'energy-ledger[metrics]'"

EMISSION_LATENCY_BUCKETS_SEC = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""From inotify's milliseconds to a slow poll on a network filesystem (docs/watcher.md)."""
SCAN_BUCKETS_SEC = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""A scan of an unchanged experiment costs a few stats; a first read of a 1 GB log, seconds."""


def metrics_library_missing() -> bool:
    """Whether prometheus-client cannot be imported here."""
    return importlib.util.find_spec("prometheus_client") is None


def require_metrics_library() -> None:
    """Raise a ``ConfigError`` naming what to install when prometheus-client is missing."""
    if metrics_library_missing():
        raise ConfigError(
            "serving metrics (--metrics-port, metrics_port or ENERGY_LEDGER_METRICS_PORT) needs "
            f"prometheus-client, which is not installed: {INSTALL_HINT}"
        )


def marker_latency_sec(directory: Path, since_t: float) -> float | None:
    """Seconds from the last write in an experiment's folder (its last marker) to now.

    ``None`` when that write is older than ``since_t`` (the daemon's start: a result owed since
    before it ran says nothing about its latency). The mtime is the filesystem's clock: on a
    shared filesystem the figure includes the skew between this host and the file server.
    """
    last_t = newest_mtime(directory)
    if last_t is None or last_t < since_t:
        return None
    return max(0.0, time.time() - last_t)


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """A histogram as exported: cumulative counts per upper bound (the last is +Inf)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """Observations in all."""
        return self.cumulative[-1]


@dataclass(slots=True)
class Histogram:
    """A histogram accumulated by one thread (the loop); ``value()`` is a frozen copy."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation (``le`` buckets: a value on a bound falls in that bucket)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def value(self) -> HistogramValue:
        """The cumulative form, as a frozen value."""
        running, cumulative = 0, []
        for n in self.counts:
            running += n
            cumulative.append(running)
        return HistogramValue(self.bounds, tuple(cumulative), self.total)


class Tailed(Protocol):
    """A log's cursor holder: a folder's ``LogTail`` or a bucket's ``SegmentTail``."""

    cursor: ReplayCursor


ReadMark = dict[int, tuple[int, int, int]]
"""Per log index: (identity of its replay cursor, bytes consumed, events folded)."""


@dataclass(slots=True)
class LoopCounters:
    """What the loop counts since the daemon started (its thread only)."""

    started_t: float = field(default_factory=time.time)
    emissions: dict[str, int] = field(default_factory=lambda: {"complete": 0, "partial": 0})
    read_bytes: int = 0
    read_events: int = 0
    emission_latency: Histogram = field(
        default_factory=lambda: Histogram(EMISSION_LATENCY_BUCKETS_SEC)
    )
    scan_duration: Histogram = field(default_factory=lambda: Histogram(SCAN_BUCKETS_SEC))
    sweep_duration: dict[str, Histogram] = field(
        default_factory=lambda: {k: Histogram(SCAN_BUCKETS_SEC) for k in ("active", "reconcile")}
    )

    @staticmethod
    def mark(tails: Mapping[int, Tailed]) -> ReadMark:
        """Where each log's cursor stands, before a scan."""
        return {i: (id(t.cursor), t.cursor.offset, t.cursor.state.events) for i, t in tails.items()}

    def scanned(self, tails: Mapping[int, Tailed], before: ReadMark, seconds: float) -> None:
        """Count a scan: its duration, and the bytes and events read since ``before``.

        A log replaced or truncated meanwhile has a new cursor, read from its start: all of it
        counts.
        """
        self.scan_duration.observe(seconds)
        for i, tail in tails.items():
            cursor = tail.cursor
            ident, offset, events = before.get(i, (0, 0, 0))
            if ident != id(cursor):
                offset = events = 0
            self.read_bytes += max(0, cursor.offset - offset)
            self.read_events += max(0, cursor.state.events - events)

    def snapshot(
        self,
        status: Mapping[str, Any],
        live: Sequence[LiveFigures],
        *,
        host: str,
        lease_held: bool,
        hook_runs: int,
        hook_failures: int,
        claims_held: int | None = None,
    ) -> MetricsSnapshot:
        """What a scrape shows now: the status view just built (``status.status_view``), the
        live figures in it, and these counters."""
        return MetricsSnapshot(
            version=__version__,
            host=host,
            started_t=self.started_t,
            lease_held=lease_held,
            lag_sec=float(status["lag_sec"]),
            states=tuple(status["counts"].items()),
            emissions=tuple(self.emissions.items()),
            hook_runs=hook_runs,
            hook_failures=hook_failures,
            read_bytes=self.read_bytes,
            read_events=self.read_events,
            emission_latency=self.emission_latency.value(),
            scan_duration=self.scan_duration.value(),
            sweep_duration=tuple((k, h.value()) for k, h in self.sweep_duration.items()),
            live=tuple(live),
            live_left_out=int(status["live_left_out"]),
            claims_held=claims_held,
        )


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one scrape shows, as the loop last saw it (docs/watcher.md, "Metrics")."""

    version: str
    host: str
    started_t: float
    lease_held: bool
    lag_sec: float
    states: tuple[tuple[str, int], ...]
    emissions: tuple[tuple[str, int], ...]
    hook_runs: int
    hook_failures: int
    read_bytes: int
    read_events: int
    emission_latency: HistogramValue
    scan_duration: HistogramValue
    sweep_duration: tuple[tuple[str, HistogramValue], ...]
    live: tuple[LiveFigures, ...]
    live_left_out: int
    claims_held: int | None = None
    """A daemon on a bucket root: the claims it holds (it has no lease; ``lease_held`` is not
    exported for it)."""


class SnapshotBox:
    """The latest snapshot, handed from the loop to the scrapes.

    Attributes:
        url: where the metrics are served (set once the server listens).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: MetricsSnapshot | None = None
        self.url: str | None = None

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Replace the snapshot (the loop's thread); an equal one keeps the old, so a scrape
        of an idle daemon reuses its last rendering."""
        with self._lock:
            if snapshot != self._snapshot:
                self._snapshot = snapshot

    def latest(self) -> MetricsSnapshot | None:
        """The last snapshot published, or ``None`` before the first (a scrape's thread)."""
        with self._lock:
            return self._snapshot
