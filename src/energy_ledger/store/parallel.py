"""Replaying on every core: logs of one experiment, or experiments of a root, in worker processes.

Replay is CPU-bound Python (decoding, checking and folding each event), so threads would take
turns on one core; worker processes do not. Two ways to split the work, and ``pipeline``
chooses between them by how many experiments need replaying:

- **Logs of one experiment** (``prefetch_tails``): each process log is replayed in a worker,
  and the worker's ``LogTail`` (its cursor and folded state, pickled) comes back to the parent,
  which then scans the experiment as usual: the scan finds every tail up to date and reads
  nothing again. Completeness, aggregation and the writes stay in the parent, so they are the
  serial code path exactly.
- **Whole experiments** (``pipeline``'s worker): each worker runs the serial
  ``process_experiment`` for one experiment and returns its outcome and its CSV row; the parent
  rebuilds the CSV once.

Either way every output is the one a serial replay writes, byte for byte: the same pure
functions run on the same bytes, only in other processes (a test compares the two). A log that
grows after its worker read it is read again from the start in the parent
(``core.replay.FrozenDigest``).

Workers start with ``forkserver`` (a clean interpreter that imports this package once, then
forks), never ``fork`` from a process that may hold threads.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

from energy_ledger.store.layout import LOG_RE
from energy_ledger.store.tail import LogTail

MIN_PARALLEL_BYTES = 16 << 20
"""Below this many log bytes to read (and fewer than ``MIN_PARALLEL_EXPERIMENTS``
experiments), replay stays in one process: starting workers costs about 0.3 s, the time one
core takes to replay some 40 MB."""
MIN_PARALLEL_EXPERIMENTS = 32
"""From this many experiments to replay, workers pay off whatever their size: each one costs
some milliseconds besides its bytes (its result, its series, their fsyncs)."""


def log_bytes(directory: Path) -> int:
    """The bytes of an experiment's process logs (what a replay of it reads)."""
    total = 0
    for path in log_paths(directory).values():
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of ``jobs`` worker processes (forkserver where the platform has it)."""
    methods = multiprocessing.get_all_start_methods()
    method = "forkserver" if "forkserver" in methods else "spawn"
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method))


def replay_log(path: Path, strict: bool) -> LogTail:
    """Replay one log from its start (in a worker); its tail travels back pickled."""
    tail = LogTail(path)
    tail.refresh(strict=strict)
    return tail


def log_paths(directory: Path) -> dict[int, Path]:
    """The process logs of an experiment folder that a worker may open: regular files only.

    A log that is a symbolic link is left to the parent's scan, which checks where it leads.
    """
    found: dict[int, Path] = {}
    try:
        with os.scandir(directory) as it:
            for entry in it:
                match = LOG_RE.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    found[int(match.group(1))] = Path(entry.path)
    except OSError:
        return {}  # the scan says why
    return dict(sorted(found.items()))


def prefetch_tails(pool: Executor, directory: Path, *, strict: bool = True) -> dict[int, LogTail]:
    """Replay every log of ``directory`` in ``pool``; the tails, by process index."""
    futures = {i: pool.submit(replay_log, path, strict) for i, path in log_paths(directory).items()}
    return {i: future.result() for i, future in futures.items()}


__all__ = [
    "MIN_PARALLEL_BYTES",
    "MIN_PARALLEL_EXPERIMENTS",
    "available_cores",
    "log_bytes",
    "log_paths",
    "prefetch_tails",
    "replay_log",
    "worker_pool",
]
