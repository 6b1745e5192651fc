"""Objects under a root: ``LocalObjects`` (a folder as an ``ObjectStore``) and ``open_objects``.

The interface, its values and the key rules are in ``store.objectstore`` (re-exported here).
Two implementations: ``LocalObjects`` (a folder; this module) and the bucket one
(``store.remote``, obstore, imported only for a URL). ``open_objects`` picks by the root's
spelling: ``s3://``, ``gs://`` or ``az://`` is a bucket, anything else a local path.

ETags are opaque. ``LocalObjects`` makes one from the file's inode, size and ns mtime and
ctime, which every write changes (also a write of the same bytes, unlike an MD5 ETag).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.store.atomic import fsync_dir, write_temp
from energy_ledger.store.objectstore import (
    URL_SCHEMES,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    check_key,
    folder_of,
    is_url,
)

LOCK_NAME = ".objects.lock"
"""The file ``LocalObjects`` locks for a conditional write (never listed)."""


def open_objects(root: str | os.PathLike[str]) -> ObjectStore:
    """The store of a results root: a bucket for a URL, else a local folder.

    Raises:
        LedgerError: a URL whose client library is not installed, or that cannot be used.
    """
    if is_url(root):
        from energy_ledger.store.remote import open_bucket

        return open_bucket(str(root))
    return LocalObjects(Path(root))


class LocalObjects:
    """An ``ObjectStore`` on a local folder (or one shared over NFS or Lustre).

    An object is a regular file at its key's path. ``put`` writes a durable temp file and
    moves it into place: ``create`` with ``link(2)``, which fails when the name exists, so
    exactly one of several writers wins, as with ``If-None-Match: *``; ``if_match`` compares
    the ETag and replaces under an ``flock`` of ``LOCK_NAME``, which every conditional writer
    and ``delete`` take. Symbolic links and other non-regular files are neither listed nor followed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        # No part of the way may be a link: a key must not lead outside the root.
        folder = self.root
        for part in key.split("/")[:-1]:
            folder = folder / part
            if folder.is_symlink():
                raise UnsafePathError(f"{folder} is a symbolic link")
        return path

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # Walk only the prefix's folder, not the whole root: a daemon lists one experiment's
        # folder at a time under a root that may hold thousands.
        folder = prefix.rpartition("/")[0]
        if folder:
            try:
                start = self._path(f"{folder}/x").parent
            except UnsafePathError:  # no key has an unsafe part, or a link on its way
                return []
            base = f"{folder}/"
        else:
            start, base = self.root, ""
        try:
            found = [info for info in self._walk(start, base) if info.key.startswith(prefix)]
        except OSError as exc:
            raise LedgerError(f"cannot list {start}: {exc.strerror or exc}") from exc
        return sorted(found, key=lambda info: info.key)

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        folder = folder_of(prefix)
        if folder is None:
            return []
        try:
            start = self._path(f"{folder}/x").parent if folder else self.root
        except UnsafePathError:
            return []
        try:
            with os.scandir(start) as it:
                return sorted(
                    entry.name
                    for entry in it
                    if entry.is_dir(follow_symlinks=False) and not _is_temp(entry.name)
                )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise LedgerError(f"cannot list {start}: {exc.strerror or exc}") from exc

    def _walk(self, folder: Path, base: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if base == "" and entry.name == LOCK_NAME:
                continue
            key = f"{base}{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk(Path(entry.path), f"{key}/")
            elif stat.S_ISREG(st.st_mode) and not _is_temp(entry.name):
                yield ObjectInfo(key, st.st_size, _etag(st), st.st_mtime)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(st.st_mode):  # a folder holds objects; it is none itself
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is not a regular file")
        return ObjectInfo(key, st.st_size, _etag(st), st.st_mtime)

    def get(self, key: str, start: int = 0) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
        # Checked before fdopen, which refuses a folder with a bare OSError.
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):  # a folder holds objects; it is none itself
                raise ObjectNotFound(f"no object {key!r} in {self.url}")
            raise UnsafePathError(f"{path} is not a regular file")
        try:
            with os.fdopen(fd, "rb") as fh:
                fh.seek(start)
                return fh.read()
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = write_temp(path, data)
        except OSError as exc:
            # A key cannot be an object and a folder at once here, unlike in a bucket.
            raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        try:
            if create:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"object {key!r} exists in {self.url}") from None
            elif if_match is not None:
                with self._locked():
                    current = self.head(key)
                    if current is None or current.etag != if_match:
                        raise PreconditionFailed(
                            f"object {key!r} in {self.url} is not version {if_match}"
                        )
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
        except OSError as exc:
            raise LedgerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(path.parent)
        info = self.head(key)
        assert info is not None
        return info

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        path = self._path(key)
        # Under the lock, so that no if_match writer sees the object, then puts it back after
        # it was deleted (a bucket refuses If-Match on a missing key).
        try:
            with (
                self._locked(),
                contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError),
            ):
                os.unlink(path)
        except OSError as exc:
            raise LedgerError(f"cannot delete {path}: {exc.strerror or exc}") from exc


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"


def _is_temp(name: str) -> bool:
    """A temp file of ``store.atomic.write_temp`` (``.<name>.<random>.tmp``), not an object."""
    return name.startswith(".") and name.endswith(".tmp")


__all__ = [
    "LOCK_NAME",
    "URL_SCHEMES",
    "LocalObjects",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "check_key",
    "is_url",
    "open_objects",
]
