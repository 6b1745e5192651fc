"""The supervisor of one hook attempt: claims it, runs the command, records how it ended.

The daemon starts this file as its own small process (``python -S supervise.py ...``, standard
library only, so it starts in milliseconds and loads nothing of the package), in a session of its
own. Because the supervisor, not the daemon, writes the attempt's outcome, a daemon killed while
a hook runs loses nothing: the supervisor lives on, the hook runs to its end, ``@done`` (or
``@fail-<n>``) is recorded, and the next daemon, which finds this supervisor's pid alive in the
``@attempt-<n>`` marker, waits for it instead of running the hook again. A run is interrupted
only when the supervisor itself dies (the host goes down, or every process of the service is
killed).

Usage: ``supervise.py EMITTED_DIR KEY ATTEMPT TIMEOUT_SEC HOLDER -- COMMAND...``. Exit status 0:
an outcome was recorded; 75: another process had claimed this attempt (nothing was run); 1: the
outcome could not be recorded (why on stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLAIMED_ELSEWHERE = 75
OUTPUT_TAIL_CHARS = 500

_hook_pgid: int | None = None
"""The running hook's process group (it leads its own session), for the SIGTERM handler."""


def create_once(path: Path, data: bytes) -> bool:
    """``claims.create_once`` without the package: link a fully written temp file to ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = os.stat(tmp).st_nlink >= 2
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
    return created


def own_identity() -> dict[str, object]:
    """Who runs this attempt: host, boot id, pid and its start time (``lease.py``'s facts)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        boot = ""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii", errors="replace")
        start: int | None = int(stat.rsplit(")", 1)[-1].split()[19])
    except (OSError, IndexError, ValueError):
        start = None
    return {"host": socket.gethostname(), "boot_id": boot, "pid": os.getpid(), "pid_start": start}


def run(command: list[str], timeout_sec: float) -> str | None:
    """Run the hook; ``None`` on success, else why it failed (with the tail of its output)."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot start {command[0]!r}: {exc.strerror or exc}"
        global _hook_pgid
        _hook_pgid = proc.pid
        try:
            proc.wait(timeout=timeout_sec)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"timed out after {timeout_sec:g} s"
        if proc.returncode == 0:
            return None
        out.seek(max(0, out.seek(0, os.SEEK_END) - 4 * OUTPUT_TAIL_CHARS))
        tail = out.read().decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:].strip()
    return f"exit status {proc.returncode}" + (f": {tail}" if tail else "")


def main(argv: list[str]) -> int:
    """Claim the attempt, run the hook, record the outcome; return the exit status."""
    emitted, key, attempt, timeout_sec, holder = argv[:5]
    if argv[5:6] != ["--"] or not argv[6:]:
        print("usage: supervise.py EMITTED_DIR KEY N TIMEOUT HOLDER -- COMMAND...", file=sys.stderr)
        return 2
    folder, n = Path(emitted), int(attempt)
    claim = {"attempt": n, "holder": holder, "t": time.time(), "supervisor": own_identity()}
    try:
        if not create_once(folder / f"{key}@attempt-{n}", json.dumps(claim).encode()):
            return CLAIMED_ELSEWHERE
    except OSError as exc:
        print(f"cannot claim {key} attempt {n}: {exc}", file=sys.stderr)
        return 1
    stop_hook_on_sigterm()
    error = run(argv[6:], float(timeout_sec))
    try:
        if error is None:
            done = json.dumps({"attempt": n, "t": time.time()}).encode()
            create_once(folder / f"{key}@done", done)
        else:
            create_once(folder / f"{key}@fail-{n}", error.encode("utf-8", "replace"))
    except OSError as exc:
        print(f"cannot record the outcome of {key} attempt {n}: {exc}", file=sys.stderr)
        return 1
    return 0


def stop_hook_on_sigterm() -> None:
    """From now on, SIGTERM takes the running hook (``run``) down with this process."""
    signal.signal(signal.SIGTERM, _stop)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (a service being stopped): take the hook down too, record nothing, exit."""
    if _hook_pgid is not None:
        with contextlib.suppress(OSError):
            os.killpg(_hook_pgid, signal.SIGKILL)
    os._exit(128 + signum)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
