"""The daemon's view of its root: ``status.json``, written by the watcher and read by ``status``.

The watcher hands :func:`status_view` what it knows and :class:`StatusFile` rewrites the file
when that changed (a heartbeat forces a rewrite, so readers can tell a live daemon from a stale
file). :func:`daemon_status` reads the file back together with the lease, for
``energy-ledger status ROOT``, and :func:`daemon_lines` turns that view into a few readable lines.
The reading side never needs a running daemon: it only reads files.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.daemon.active import state_counts
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.lease import (
    LEASE_NAME,
    Heartbeat,
    LeaseInfo,
    local_holder_gone,
    read_heartbeat,
    read_lease,
)
from energy_ledger.daemon.records import StateStore, state_dir_for
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import write_atomic

__all__ = [
    "LIVE_MIN_INTERVAL_SEC",
    "MAX_LISTED",
    "STATUS_NAME",
    "StatusFile",
    "daemon_lines",
    "daemon_status",
    "status_view",
    "write_status",
]

logger = logging.getLogger(__name__)

STATUS_NAME = "status.json"
MAX_LISTED = 200
"""At most this many active experiments and errors are listed in ``status.json``."""

_VOLATILE = ("updated_t", "lag_sec", "active", "live")
"""Keys that change on every look; a change in them alone does not rewrite the file."""
LIVE_MIN_INTERVAL_SEC = 1.0
"""A change in the live figures alone rewrites ``status.json`` at most this often."""


def status_view(
    *,
    root: Path,
    config: WatchConfig,
    mode: str,
    filesystem: str | None,
    started_t: float,
    now: float,
    lag_sec: float,
    active: list[dict[str, Any]],
    store: StateStore,
    rejected: Mapping[str, str],
    errors: Iterable[dict[str, Any]],
    stopped: bool,
    live: Sequence[dict[str, Any]] = (),
    live_left_out: int = 0,
    metrics_url: str | None = None,
) -> dict[str, Any]:
    """The content of ``status.json`` (format version 1), from what the watcher knows.

    Args:
        root: the results root watched.
        config: the daemon's settings (the poll interval and lease timeout are shown).
        mode: ``"inotify"`` or ``"polling"``.
        filesystem: the root's filesystem type, when known.
        started_t: when the daemon started (Unix time).
        now: the time of this view (Unix time).
        lag_sec: the age of the oldest change not yet processed, or the last one's delay.
        active: one row per experiment not emitted, sorted by id, each with ``experiment_id``,
            ``state``, ``detail``, ``idle_sec``, ``stale`` and ``retired`` (no longer read
            until its files change; ``daemon.active``).
        store: the emission records, counted by kind and by hook state.
        rejected: unsafe folder names under ``raw/`` and why each was refused.
        errors: the last errors, oldest first.
        stopped: whether the daemon is stopping.
        live: the live figures of the most recently active experiments
            (``core.live.LiveFigures.to_dict``), at most ``core.live.MAX_LIVE_EXPERIMENTS``.
        live_left_out: how many active experiments have no live figures (over that cap).
        metrics_url: where ``/metrics`` is served, when it is.
    """
    records = list(store.records.values())
    emitted = sum(1 for r in records if r.kind == "complete")
    return {
        "v": 1,
        "root": str(root),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_t": started_t,
        "updated_t": now,
        "mode": mode,
        "filesystem": filesystem,
        "poll_interval_sec": config.poll_interval_sec,
        "lease_timeout_sec": config.lease_timeout_sec,
        "lag_sec": round(lag_sec, 3),
        "emitted": emitted,
        "partial": sum(1 for r in records if r.kind == "partial"),
        "counts": state_counts(active, emitted),
        "active_count": len(active),
        "active": active[:MAX_LISTED],
        "stale": [a["experiment_id"] for a in active if a["stale"]],
        "rejected": [{"name": n, "reason": r} for n, r in sorted(rejected.items())],
        "errors": list(errors),
        "hooks": store.hook_counts(),
        "stopped": stopped,
        "live": list(live),
        "live_left_out": live_left_out,
        "metrics_url": metrics_url,
    }


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    """Replace ``status.json`` atomically, keys sorted (the same view gives the same bytes)."""
    write_atomic(
        state_dir / STATUS_NAME,
        orjson.dumps(status, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n",
    )


class StatusFile:
    """The ``status.json`` of one state folder, rewritten only when what it says has changed.

    Idle time, lag and the clock change on every look; rewriting the file for those alone would
    cost a write and two fsyncs twice a second on an idle root, so they count only when forced.
    The live figures of running experiments change with every sample their logs gain: a change
    in them alone rewrites the file at most every ``LIVE_MIN_INTERVAL_SEC``, and never while no
    experiment runs.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._last: dict[str, Any] | None = None
        self._last_live: Any = None
        self._live_written = -float("inf")

    def write(self, status: dict[str, Any], *, force: bool) -> None:
        """Write ``status`` when it differs from the last written in more than its volatile keys.

        A failed write is logged, not raised: the status file is a view, never a reason to stop.
        """
        stable = {k: v for k, v in status.items() if k not in _VOLATILE}
        stable["active"] = [
            (a["experiment_id"], a["state"], a["detail"], a["stale"], a.get("retired"))
            for a in status["active"]
        ]
        live = status.get("live")
        live_due = (
            live != self._last_live
            and time.monotonic() - self._live_written >= LIVE_MIN_INTERVAL_SEC
        )
        if not force and stable == self._last and not live_due:
            return
        try:
            write_status(self.state_dir, status)
            self._last, self._last_live = stable, live
            self._live_written = time.monotonic()
        except LedgerError as exc:
            logger.warning("cannot write the status file: %s", exc)


def daemon_status(
    root: str | os.PathLike[str],
    state_dir: Path | None = None,
    *,
    lease_timeout_sec: float | None = None,
) -> dict[str, Any]:
    """The watcher's view of ``root``, read from its status and lease files.

    Returns a dict with ``running`` (a live daemon holds the lease), ``heartbeat_age_sec``,
    ``lease`` (host, pid) and ``status`` (the last ``status.json``: ``lag_sec``, ``active``
    experiments with their state and idle time, ``stale``, ``errors``, ``hooks``, counts), or
    ``status: None`` when no daemon ever ran there.
    """
    folder = state_dir_for(root, state_dir)
    status: dict[str, Any] | None
    try:
        loaded = orjson.loads((folder / STATUS_NAME).read_bytes())
        status = loaded if isinstance(loaded, dict) else None
    except (OSError, orjson.JSONDecodeError):
        status = None
    lease = read_lease(folder / LEASE_NAME)
    beat = read_heartbeat(folder, lease.token) if lease is not None else None
    timeout = lease_timeout_sec
    if timeout is None:
        timeout = float(status.get("lease_timeout_sec", 30.0)) if status else 30.0
    age = None if beat is None else max(0.0, time.time() - beat.t)
    return {
        "state_dir": str(folder),
        "running": lease is not None and _seems_alive(lease, beat, age, timeout),
        "lease": None if lease is None else {"host": lease.host, "pid": lease.pid},
        "heartbeat_age_sec": age,
        "status": status,
    }


def _seems_alive(
    lease: LeaseInfo, beat: Heartbeat | None, age_sec: float | None, timeout_sec: float
) -> bool:
    """Whether the holder looks alive, for display only.

    A holder on this host is checked by its pid. For one on another host this compares its
    heartbeat's wall-clock time with ours, which a skewed clock can get wrong; that is why
    nothing but this display does so (a takeover watches the heartbeat move instead).
    """
    if lease.on_this_host():
        return local_holder_gone(lease) is None
    return beat is not None and age_sec is not None and age_sec <= timeout_sec


def daemon_lines(view: Mapping[str, Any]) -> list[str]:
    """The daemon's view of a root (:func:`daemon_status`), as a few readable lines.

    No lines at all when no daemon ever ran on the root (no lease, no status file), and no
    empty figures: a daemon that left no status file yet gets its first line only.
    """
    lease = view.get("lease") or {}
    st = view.get("status") or {}
    if not lease and not st:
        return []
    age = view.get("heartbeat_age_sec")
    if view.get("running"):
        first = f"daemon: running (pid {lease.get('pid', '?')} on {lease.get('host', '?')})"
        if st:
            first += f", {st.get('mode', '?')} on {st.get('filesystem', '?')}"
        if isinstance(age, int | float):
            first += f", heartbeat {age:.1f} s ago"
    else:
        last = lease or st
        first = f"daemon: not running (last ran as pid {last.get('pid', '?')} on "
        first += f"{last.get('host', '?')})"
    lines = [first]
    if st:
        lines.append(
            f"  lag {st.get('lag_sec', '-')} s, {st.get('emitted', 0)} emitted, "
            f"{st.get('partial', 0)} partial, {st.get('active_count', 0)} active, "
            f"{len(st.get('stale') or [])} stale"
        )
    if st.get("metrics_url") and view.get("running"):
        lines.append(f"  metrics: {st['metrics_url']}")
    hooks = st.get("hooks") or {}
    if hooks:
        interrupted = hooks.get("interrupted", 0)
        lines.append(
            f"  hooks: {hooks.get('done', 0)} done, {hooks.get('pending', 0)} pending, "
            f"{hooks.get('running', 0)} running, "
            + (f"{interrupted} interrupted, " if interrupted else "")
            + f"{len(hooks.get('failed') or [])} failed"
        )
    lines.extend(f"  error: {e}" for e in st.get("errors") or [])
    return lines
