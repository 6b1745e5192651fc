"""Files created at most once, and the sweep of temp files that killed writers left behind.

:func:`create_once` is the one primitive behind the daemon's exactly-once promises: the lease,
each emission record and each hook attempt is a file that exactly one of any number of contenders
(threads, processes, hosts) manages to create. The content is written to a temp file in the same
folder and fsynced first, then ``link(2)``-ed to its name. ``link`` fails when the name exists, and
it is one atomic operation on local filesystems and on the NFS server alike, so two contenders can
never both succeed, and a reader sees the whole content or no file at all. ``O_EXCL`` would give
the same exclusion but makes the name visible before its content is written.

:class:`TempSweeper` removes the ``.<name>.<random>.tmp`` files that a writer killed between
``mkstemp`` and ``rename``/``link`` leaves: at once in folders only the lease holder writes, and
elsewhere only once a temp file has been seen unchanged at two looks a heartbeat apart (a live
writer's temp file lives for milliseconds), so another process's write in progress is never
broken.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import fsync_dir, write_temp

__all__ = ["TempSweeper", "create_once", "is_temp_name", "remove_temp_files"]

logger = logging.getLogger(__name__)


def create_once(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it.

    The file is complete and durable (content and folder entry fsynced) before this returns
    True. On NFS a ``link`` whose reply was lost is retransmitted and then fails with ``EEXIST``
    although the first one succeeded; the temp file's link count (2: its name and ``path``) tells
    that case apart, so a contender never mistakes its own success for another's.

    Raises:
        LedgerError: the folder cannot be written (the message names the file and the reason).
    """
    folder = path.parent
    try:
        tmp = write_temp(path, data)
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = os.stat(tmp).st_nlink >= 2
    except OSError as exc:
        raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if created:
        fsync_dir(folder)
    return created


def is_temp_name(name: str) -> bool:
    """True for the temp files of ``create_once`` and ``store.atomic.write_atomic``."""
    return name.startswith(".") and name.endswith(".tmp")


def _temp_files(folder: Path) -> dict[str, tuple[int, int, int]]:
    """The temp files directly in ``folder``, each with its (inode, size, mtime) signature."""
    found: dict[str, tuple[int, int, int]] = {}
    if os.path.islink(folder):
        return found  # never follow a link out of the root (aggregated/ may be one)
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_temp_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        pass
    return found


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def remove_temp_files(folder: Path) -> int:
    """Remove every temp file directly in ``folder`` now; return how many were removed.

    Only for folders that no process but the lease holder writes (``emitted/``).
    """
    removed = 0
    for name in _temp_files(folder):
        if _unlink(folder / name):
            removed += 1
    if removed:
        logger.info("removed %d stray temp file(s) from %s", removed, folder)
    return removed


class TempSweeper:
    """Removes temp files that stayed unchanged between two looks at folders others write too.

    The first :meth:`look` only notes what is there; each later look removes the temp files
    that were already there, unchanged, at the previous one. The looks are a heartbeat apart, so
    a temp file must have been abandoned for that long before it goes.
    """

    def __init__(self, folders: list[Path], *, max_looks: int | None = None) -> None:
        self.folders = folders
        self.max_looks = max_looks
        self._looks = 0
        self._seen: dict[Path, dict[str, tuple[int, int, int]]] = {}

    def look(self) -> int:
        """Note the temp files present; remove those seen unchanged last time. Return removed.

        After ``max_looks`` looks (when set) it does nothing more: a big folder is listed only
        around start-up, which is when a killed daemon's leftovers are found.
        """
        if self.max_looks is not None and self._looks >= self.max_looks:
            return 0
        self._looks += 1
        removed = 0
        for folder in self.folders:
            now = _temp_files(folder)
            before = self._seen.get(folder, {})
            for name, signature in list(now.items()):
                if before.get(name) != signature:
                    continue
                if _unlink(folder / name):
                    removed += 1
                del now[name]
            self._seen[folder] = now
        if removed:
            logger.info("removed %d abandoned temp file(s)", removed)
        return removed
