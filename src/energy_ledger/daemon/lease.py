"""One daemon per results root, across hosts: a lease file with a heartbeat.

``<state_dir>/lease.json`` holds ``{"host", "boot_id", "pid", "pid_start", "token",
"acquired_t", "heartbeat_t"}``. It is created with ``link(2)`` from a fully written temp file, which
fails when the name exists and is atomic on local filesystems and NFS alike, so two daemons can
never both create it. A lease that exists belongs to a live daemon unless:

- its holder is on this host (same host name and boot id) and that process is gone (no such pid,
  a zombie, or a different process that reuses the pid): taken over at once;
- its holder is on another host, or this host rebooted, and its heartbeat is older than the lease
  timeout: presumed dead and taken over.

A takeover renames the stale lease aside (only one contender's rename succeeds), checks that it
moved the lease it judged stale, and then creates its own. The holder renews the heartbeat every
third of the timeout and gives the daemon up when the file no longer carries its token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.exceptions import LeaseHeldError, LeaseLostError, LedgerError
from energy_ledger.store.atomic import fsync_dir, write_atomic

logger = logging.getLogger(__name__)

LEASE_NAME = "lease.json"


def boot_id() -> str:
    """This boot's id (Linux), so a pid from before a reboot is never taken for a live one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``None`` when it does not exist).

    A zombie counts as not existing: it has exited and only waits to be reaped.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return _signal_probe(pid)
    fields = stat.rsplit(")", 1)[-1].split()
    # fields[0] is the state (field 3 of stat(5)); fields[19] is starttime (field 22).
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def _signal_probe(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The content of a lease file."""

    host: str
    boot_id: str
    pid: int
    pid_start: int | None
    token: str
    acquired_t: float
    heartbeat_t: float

    def to_bytes(self) -> bytes:
        """The file's content, in a fixed key order."""
        return orjson.dumps(
            {
                "host": self.host,
                "boot_id": self.boot_id,
                "pid": self.pid,
                "pid_start": self.pid_start,
                "token": self.token,
                "acquired_t": self.acquired_t,
                "heartbeat_t": self.heartbeat_t,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseInfo:
        """Parse a lease file; raise ``ValueError`` when it is not one."""
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
                heartbeat_t=float(obj["heartbeat_t"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from exc

    def describe(self) -> str:
        """``host <h> pid <p>, heartbeat <n> s ago``: for messages."""
        age = time.time() - self.heartbeat_t
        return f"host {self.host} pid {self.pid}, heartbeat {age:.1f} s ago"


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at ``path``, or ``None`` when there is none or it cannot be parsed."""
    try:
        return LeaseInfo.from_bytes(path.read_bytes())
    except (OSError, ValueError):
        return None


def holder_is_dead(info: LeaseInfo, timeout_sec: float, *, now: float | None = None) -> str | None:
    """Why the holder of ``info`` is presumed dead, or ``None`` when it may be alive."""
    now = time.time() if now is None else now
    same_host = info.host == socket.gethostname() and info.boot_id == boot_id()
    if same_host:
        start = process_start_ticks(info.pid)
        if start is None:
            return f"its process {info.pid} on this host no longer exists"
        if info.pid_start is not None and start not in (0, info.pid_start):
            return f"pid {info.pid} on this host now belongs to another process"
        return None
    age = now - info.heartbeat_t
    if age > timeout_sec:
        return f"its heartbeat is {age:.1f} s old (timeout {timeout_sec:g} s)"
    return None


class Lease:
    """The lease of one daemon on one state folder; use :meth:`acquire`."""

    def __init__(self, state_dir: Path, timeout_sec: float) -> None:
        self.path = state_dir / LEASE_NAME
        self.timeout_sec = timeout_sec
        pid = os.getpid()
        now = time.time()
        self.info = LeaseInfo(
            host=socket.gethostname(),
            boot_id=boot_id(),
            pid=pid,
            pid_start=process_start_ticks(pid),
            token=uuid.uuid4().hex,
            acquired_t=now,
            heartbeat_t=now,
        )
        self.held = False

    @property
    def renew_interval_sec(self) -> float:
        """How often the heartbeat is written."""
        return self.timeout_sec / 3.0

    def _create(self) -> bool:
        """Create the lease file if no lease exists; True on success."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".lease.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise LedgerError(f"cannot write the lease in {folder}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.info.to_bytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError as exc:
            raise LedgerError(f"cannot write the lease {self.path}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        fsync_dir(folder)
        return True

    def _take_over(self, stale: LeaseInfo | None) -> None:
        """Move the stale lease aside, unless another daemon moved it first."""
        aside = self.path.with_name(f".{LEASE_NAME}.stale-{self.info.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = read_lease(aside)
        if stale is not None and (moved is None or moved.token != stale.token):
            # A contender replaced the stale lease with its own in between: put it back.
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        with contextlib.suppress(OSError):
            os.unlink(aside)

    def acquire(self) -> None:
        """Take the lease, taking over a dead holder's.

        Raises:
            LeaseHeldError: a live daemon holds it (the message names its host and pid).
            LedgerError: the state folder cannot be written.
        """
        for _ in range(5):
            if self._create():
                self.held = True
                return
            current = read_lease(self.path)
            if current is None:
                # Unreadable: a torn write by a foreign tool, or it vanished. Judge by its age.
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise LedgerError(f"cannot read the lease {self.path}: {exc}") from exc
                if age <= self.timeout_sec:
                    raise LeaseHeldError(
                        f"{self.path} exists but cannot be read, and was written {age:.1f} s "
                        "ago; another daemon may be starting: try again later"
                    )
                logger.warning("taking over unreadable lease %s (%.1f s old)", self.path, age)
                self._take_over(None)
                continue
            if current.token == self.info.token:
                self.held = True
                return
            why = holder_is_dead(current, self.timeout_sec)
            if why is None:
                raise LeaseHeldError(
                    f"another energy-ledger watch already runs on this root "
                    f"({current.describe()}; lease {self.path}). Stop it first, or wait "
                    f"{self.timeout_sec:g} s after it died on another host."
                )
            logger.warning("taking over the lease of %s: %s", current.describe(), why)
            self._take_over(current)
        raise LeaseHeldError(f"could not take the lease {self.path}: other daemons contend for it")

    def renew(self) -> None:
        """Write a fresh heartbeat.

        Raises:
            LeaseLostError: the lease file now carries another daemon's token.
            LedgerError: the lease could not be read or written (transient; try again).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:  # ESTALE, EIO...: transient on a network filesystem; retried
            raise LedgerError(f"cannot read the lease {self.path}: {exc.strerror or exc}") from exc
        self.info = dataclasses.replace(self.info, heartbeat_t=time.time())
        if data is None:
            # Removed behind our back (a cleanup, a restored backup): take it again if free.
            if self._create():
                logger.warning("the lease %s had vanished; recreated it", self.path)
                return
            data = self.path.read_bytes()
        try:
            current: LeaseInfo | None = LeaseInfo.from_bytes(data)
        except ValueError:
            current = None
        if current is None or current.token != self.info.token:
            self.held = False
            who = current.describe() if current is not None else "an unreadable lease"
            raise LeaseLostError(f"lost the lease {self.path}: it is now held by {who}")
        write_atomic(self.path, self.info.to_bytes())

    def release(self) -> None:
        """Remove the lease if it is still this daemon's."""
        if not self.held:
            return
        self.held = False
        current = read_lease(self.path)
        if current is not None and current.token == self.info.token:
            with contextlib.suppress(OSError):
                self.path.unlink()
