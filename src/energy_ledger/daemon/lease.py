"""One daemon per results root, across hosts: a lease file and a heartbeat file per holder.

Two files in the state folder:

- ``lease.json`` ``{"v": 2, "host", "boot_id", "pid", "pid_start", "token", "acquired_t"}`` names
  the holder. It is created with :func:`~energy_ledger.daemon.claims.create_once` (``link(2)``
  from a fully written temp file), so two daemons can never both create it, and **its holder never
  writes it again**: it is only removed (by its holder at a clean stop) or renamed aside (by a
  daemon taking over a dead holder's lease).
- ``heartbeat.<token>.json`` ``{"token", "seq", "t"}`` is the holder's own file, rewritten every
  third of the lease timeout with ``seq`` one higher.

Renewal is a compare-and-swap in effect: the holder reads ``lease.json`` and goes on only if it
still names its token (the compare), then writes *its own* heartbeat file (the swap). A daemon that
was paused and has lost the lease therefore can never overwrite its successor's lease: the only
file it writes belongs to a token nobody looks at any more. No read-then-replace of a shared file.

Expiry never compares two hosts' clocks. A holder on this host (same host name and boot id) is
dead when its process is gone (no such pid, a zombie, or the pid reused by another process). A
holder anywhere else is presumed dead only after the contender has watched ``lease.json`` and the
holder's heartbeat file for a full lease timeout *on its own monotonic clock* and seen neither
change; a heartbeat that moves within that time means a live holder (exit 3). The wall-clock
``t`` in the heartbeat is shown by ``energy-ledger status`` and used for nothing else.

A takeover renames the dead lease aside (only one contender's rename succeeds), checks that it
moved the very bytes it watched (else it puts them back), and then creates its own lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.daemon.claims import create_once
from energy_ledger.daemon.pids import boot_id, process_start_ticks
from energy_ledger.exceptions import LeaseHeldError, LeaseLostError, LedgerError
from energy_ledger.store.atomic import write_atomic

__all__ = [
    "LEASE_NAME",
    "Heartbeat",
    "Lease",
    "LeaseInfo",
    "heartbeat_path",
    "local_holder_gone",
    "read_heartbeat",
    "read_lease",
]

logger = logging.getLogger(__name__)

LEASE_NAME = "lease.json"
LEASE_VERSION = 2
WATCH_POLL_SEC = 0.25
"""A contender rereads the lease and the heartbeat this often while it judges a holder."""


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The content of a lease file: who holds it. Written once, never updated."""

    host: str
    boot_id: str
    pid: int
    pid_start: int | None
    token: str
    acquired_t: float

    def to_bytes(self) -> bytes:
        """The file's content, in a fixed key order."""
        return orjson.dumps(
            {
                "v": LEASE_VERSION,
                "host": self.host,
                "boot_id": self.boot_id,
                "pid": self.pid,
                "pid_start": self.pid_start,
                "token": self.token,
                "acquired_t": self.acquired_t,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseInfo:
        """Parse a lease file (version 1's extra ``heartbeat_t`` is ignored); ``ValueError``."""
        obj: Any = orjson.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(
                host=str(obj["host"]),
                boot_id=str(obj.get("boot_id", "")),
                pid=int(obj["pid"]),
                pid_start=None if obj.get("pid_start") is None else int(obj["pid_start"]),
                token=str(obj["token"]),
                acquired_t=float(obj["acquired_t"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from exc

    def describe(self) -> str:
        """``host <h> pid <p>``: for messages."""
        return f"host {self.host} pid {self.pid}"

    def on_this_host(self) -> bool:
        """Whether the holder ran on this host, since its boot (so its pid can be checked)."""
        return self.host == socket.gethostname() and self.boot_id == boot_id()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The content of a holder's heartbeat file."""

    token: str
    seq: int
    t: float

    def to_bytes(self) -> bytes:
        """The file's content, in a fixed key order."""
        return orjson.dumps({"token": self.token, "seq": self.seq, "t": self.t})


def heartbeat_path(state_dir: Path, token: str) -> Path:
    """The heartbeat file of the holder with ``token``."""
    return state_dir / f"heartbeat.{token}.json"


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, ``None`` when it does not exist; ``LedgerError`` on other failures."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # ESTALE, EIO...: transient on a network filesystem
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at ``path``, or ``None`` when there is none or it cannot be parsed."""
    try:
        return LeaseInfo.from_bytes(path.read_bytes())
    except (OSError, ValueError):
        return None


def read_heartbeat(state_dir: Path, token: str) -> Heartbeat | None:
    """The heartbeat of ``token``'s holder, or ``None`` when there is none or it is unreadable."""
    try:
        obj: Any = orjson.loads(heartbeat_path(state_dir, token).read_bytes())
        return Heartbeat(str(obj["token"]), int(obj["seq"]), float(obj["t"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def local_holder_gone(info: LeaseInfo) -> str | None:
    """Why a holder on this host is known to be dead, or ``None`` (alive, or not on this host)."""
    if not info.on_this_host():
        return None
    start = process_start_ticks(info.pid)
    if start is None:
        return f"its process {info.pid} on this host no longer exists"
    if info.pid_start is not None and start not in (0, info.pid_start):
        return f"pid {info.pid} on this host now belongs to another process"
    return None


class Lease:
    """The lease of one daemon on one state folder; use :meth:`acquire`, then :meth:`fence`.

    Thread-safe: the loop renews it and the hook threads fence on it.
    """

    def __init__(
        self,
        state_dir: Path,
        timeout_sec: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LEASE_NAME
        self.timeout_sec = timeout_sec
        self._clock = clock
        self._sleep = sleep
        pid = os.getpid()
        self.info = LeaseInfo(
            host=socket.gethostname(),
            boot_id=boot_id(),
            pid=pid,
            pid_start=process_start_ticks(pid),
            token=uuid.uuid4().hex,
            acquired_t=time.time(),
        )
        self.held = False
        self.lost = False
        self._seq = 0
        self._beat_ok_t: float | None = None
        self._lock = threading.RLock()

    @property
    def token(self) -> str:
        """This daemon's token (what ``lease.json`` names while it holds the lease)."""
        return self.info.token

    @property
    def renew_interval_sec(self) -> float:
        """How often the heartbeat is written."""
        return self.timeout_sec / 3.0

    @property
    def heartbeat_file(self) -> Path:
        """This daemon's own heartbeat file."""
        return heartbeat_path(self.state_dir, self.token)

    def _create(self) -> bool:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create {self.state_dir}: {exc.strerror or exc}") from exc
        return create_once(self.path, self.info.to_bytes())

    def acquire(self) -> None:
        """Take the lease, taking over a dead holder's; write the first heartbeat.

        Raises:
            LeaseHeldError: a live daemon holds it (the message names its host and pid).
            LedgerError: the state folder cannot be written.
        """
        for _ in range(8):
            if self._create():
                break
            seen = _read_bytes(self.path)
            if seen is None:
                continue  # released or moved aside in between: try again
            try:
                current: LeaseInfo | None = LeaseInfo.from_bytes(seen)
            except ValueError:
                current = None
            if current is not None and current.token == self.token:
                break
            if current is not None and current.on_this_host():
                why = local_holder_gone(current)
                if why is None:
                    raise self._held(current, "it is alive on this host")
            else:
                why = self._watch(seen, current)
                if why is None:
                    continue  # the lease changed hands while we watched: look again
            who = current.describe() if current is not None else "an unreadable lease"
            logger.warning("taking over the lease of %s: %s", who, why)
            self._take_over(seen, current)
        else:
            raise LeaseHeldError(
                f"could not take the lease {self.path}: other daemons contend for it"
            )
        with self._lock:
            self.held = True
            try:
                self._beat()
            except LedgerError:
                self.release()
                raise

    def _held(self, holder: LeaseInfo, why: str) -> LeaseHeldError:
        return LeaseHeldError(
            f"another energy-ledger watch already runs on this root ({holder.describe()}: "
            f"{why}; lease {self.path}). Stop it first; a holder on another host that died is "
            f"taken over once its heartbeat has stood still for {self.timeout_sec:g} s."
        )

    def _watch(self, seen: bytes, current: LeaseInfo | None) -> str | None:
        """Watch a holder this host cannot check for one timeout on the monotonic clock.

        Returns why it is presumed dead, or ``None`` when ``lease.json`` changed meanwhile.

        Raises:
            LeaseHeldError: its heartbeat moved: it is alive.
        """
        beat_file = heartbeat_path(self.state_dir, current.token) if current else None
        first_beat = _read_bytes(beat_file) if beat_file else None
        what = current.describe() if current is not None else "an unreadable lease"
        logger.info(
            "the lease is held by %s; watching its heartbeat for up to %g s",
            what,
            self.timeout_sec,
        )
        deadline = self._clock() + self.timeout_sec
        while True:
            self._sleep(max(0.0, min(WATCH_POLL_SEC, deadline - self._clock())))
            if _read_bytes(self.path) != seen:
                return None
            if beat_file is not None and _read_bytes(beat_file) != first_beat:
                assert current is not None
                raise self._held(current, "its heartbeat is moving")
            if self._clock() >= deadline:
                return f"neither the lease nor its heartbeat changed for {self.timeout_sec:g} s"

    def _take_over(self, stale: bytes, info: LeaseInfo | None) -> None:
        """Move the stale lease aside, unless it changed or another contender moved it first."""
        aside = self.path.with_name(f".{LEASE_NAME}.stale-{self.token}.tmp")
        if _read_bytes(self.path) != stale:
            return
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LedgerError(f"cannot move the stale lease {self.path}: {exc}") from exc
        try:
            moved = aside.read_bytes()
        except OSError:
            moved = None
        if moved != stale:
            # A contender replaced the stale lease with its own in between: put that back.
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        elif info is not None:
            with contextlib.suppress(OSError):
                heartbeat_path(self.state_dir, info.token).unlink()
        with contextlib.suppress(OSError):
            os.unlink(aside)

    def _lose(self, why: str) -> LeaseLostError:
        self.held = False
        self.lost = True
        return LeaseLostError(f"lost the lease {self.path}: {why}")

    def check(self) -> None:
        """Make sure, by reading ``lease.json`` now, that it still names this daemon.

        Raises:
            LeaseLostError: it names another daemon (this one was presumed dead), or it is gone
                and could not be taken again.
            LedgerError: it could not be read (transient: do nothing that needs the lease).
        """
        with self._lock:
            if self.lost:
                raise LeaseLostError(f"lost the lease {self.path}")
            data = _read_bytes(self.path)
            if data is None:
                # Removed behind our back (a cleanup, a restored backup): take it again if free.
                if self._create():
                    logger.warning("the lease %s had vanished; recreated it", self.path)
                    return
                data = _read_bytes(self.path)
            try:
                current: LeaseInfo | None = LeaseInfo.from_bytes(data or b"")
            except ValueError:
                current = None
            if current is None or current.token != self.token:
                who = current.describe() if current is not None else "an unreadable lease"
                raise self._lose(f"it is now held by {who}")

    def _beat(self) -> None:
        self._seq += 1
        write_atomic(self.heartbeat_file, Heartbeat(self.token, self._seq, time.time()).to_bytes())
        self._beat_ok_t = self._clock()

    def renew(self) -> None:
        """Check that the lease is still ours, then write the next heartbeat.

        Raises:
            LeaseLostError: see :meth:`check`.
            LedgerError: the lease or the heartbeat could not be read or written (retry).
        """
        with self._lock:
            self.check()
            self._beat()

    def renewal_due(self) -> bool:
        """Whether a heartbeat is due (or overdue: this process may have been paused)."""
        with self._lock:
            last = self._beat_ok_t
            return last is None or self._clock() - last >= self.renew_interval_sec

    def fence(self) -> None:
        """Right before an emission or a hook: renew when due, else check the lease on disk.

        Renewing first when a heartbeat is overdue (after a pause, say) tells a contender that
        may be watching this daemon that it is alive before anything is done.

        Raises:
            LeaseLostError: another daemon holds the lease now.
            LedgerError: the lease could not be checked (do not go on).
        """
        if self.renewal_due():
            self.renew()
        else:
            self.check()

    def release(self) -> None:
        """Remove the lease and the heartbeat if the lease is still this daemon's."""
        with self._lock:
            was_held, self.held = self.held, False
            with contextlib.suppress(OSError):
                self.heartbeat_file.unlink()
            if not was_held:
                return
            current = read_lease(self.path)
            if current is not None and current.token == self.token:
                with contextlib.suppress(OSError):
                    self.path.unlink()
