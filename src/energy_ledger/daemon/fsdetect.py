"""Is a folder on a network filesystem? (mount-table parsing is pure; reading it is the shell)

inotify only sees changes made through the local kernel: on NFS, Lustre, GPFS, CIFS or a FUSE
mount, another client's writes raise no event, so the watcher must poll there. The answer comes
from ``/proc/self/mounts``: the mount point that is the longest prefix of the folder's real path
gives its filesystem type.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MOUNTS_PATH = Path("/proc/self/mounts")

NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "beegfs",
        "panfs",
        "wekafs",
        "afs",
        "9p",
        "virtiofs",
        "ncpfs",
        "orangefs",
        "pvfs2",
        "cvfs",
    }
)
"""Filesystem types on which other hosts' writes raise no local inotify event."""


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of the mount table."""

    device: str
    mount_point: str
    fs_type: str


def _unescape(field: str) -> str:
    """Undo the mount table's octal escapes (``\\040`` is a space)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[Mount]:
    """Parse ``/proc/self/mounts`` text; malformed lines are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return mounts


def fs_type_of(path: str, mounts: Iterable[Mount]) -> str | None:
    """The filesystem type of the mount holding ``path`` (an absolute, resolved path)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        under = path == point or path.startswith(point + "/") or point == "/"
        # Later lines win on ties: a mount stacked on the same point hides the earlier one.
        if under and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best.fs_type if best is not None else None


def is_network_fs_type(fs_type: str | None) -> bool:
    """True for the types of :data:`NETWORK_FS_TYPES` and every ``fuse.*`` type."""
    if fs_type is None:
        return False
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse.")


def filesystem_type(path: str | os.PathLike[str], mounts_path: Path = MOUNTS_PATH) -> str | None:
    """The filesystem type holding ``path``, or ``None`` when the mount table cannot be read."""
    try:
        text = mounts_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        logger.debug("cannot read %s: %s", mounts_path, exc)
        return None
    return fs_type_of(os.path.realpath(path), parse_mounts(text))


def needs_polling(path: str | os.PathLike[str], mounts_path: Path = MOUNTS_PATH) -> bool:
    """True when ``path`` is on a network filesystem, where inotify misses other hosts' writes."""
    return is_network_fs_type(filesystem_type(path, mounts_path))
