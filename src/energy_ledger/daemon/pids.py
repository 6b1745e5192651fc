"""Processes on this host: this boot's id and a process's start time.

A lease names its holder by host, boot id, pid and the pid's start time, so that a pid reused by
another process after the holder died, or a pid from before a reboot, is never taken for the
holder. These are the only facts about a holder that can be checked without comparing clocks.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["boot_id", "process_start_ticks"]


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
