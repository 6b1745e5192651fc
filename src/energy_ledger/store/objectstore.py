"""The object store's interface: the few operations a results root needs, on a folder or a bucket.

An object store cannot append and its listings are not inotify, but it offers what an
exactly-once aggregator needs: conditional writes. ``ObjectStore`` is that common ground,
small on purpose:

- ``list(prefix)``: every object whose key starts with ``prefix``, sorted by key, with its size
  and ETag (one paginated list call on a bucket).
- ``get(key, start)``: an object's bytes from ``start`` on.
- ``head(key)``: its size and ETag, or ``None``.
- ``put(key, data)``: write it whole; ``create=True`` only if no object has that key
  (``If-None-Match: *``), ``if_match=etag`` only if the object is still that version
  (``If-Match``). A lost condition raises ``PreconditionFailed`` and changes nothing.
- ``delete(key)``.

Keys are relative, ``/``-separated, and checked by ``check_key``: no empty part, no ``.`` or
``..``, no backslash or NUL, no leading ``/``, so no key can name anything outside the root.

ETags are opaque. A bucket's may be the MD5 of the body (SeaweedFS, S3 without multipart), so
writing the same bytes keeps it: a caller that uses ``if_match`` as a compare-and-swap puts a
nonce in the body.

This module holds the interface and its values only, apart from the implementations
(``store.objects``: a folder, and ``open_objects``; ``store.remote``: a bucket), so that both
import it and choosing one (``open_objects``) makes no import cycle.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from energy_ledger.exceptions import LedgerError, UnsafePathError

_T = TypeVar("_T")

URL_SCHEMES = ("s3://", "gs://", "az://")
"""Roots spelled with these prefixes are buckets (``store.remote``); others are local paths."""


class PreconditionFailed(LedgerError):
    """A conditional write lost: the key exists (``create``), or is another version."""


class ObjectNotFound(LedgerError):
    """No object has that key."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object of a listing.

    Attributes:
        key: its key, relative to the store's root.
        size: its size in bytes.
        etag: its version tag, for ``put(if_match=...)``.
        modified_t: when it was written, in Unix seconds by the store's clock (a bucket's
            server, a folder's filesystem), where the store says; not compared.
    """

    key: str
    size: int
    etag: str
    modified_t: float | None = field(default=None, compare=False)


class ObjectStore(Protocol):
    """What a results root needs of its storage (see the module doc)."""

    @property
    def url(self) -> str:
        """The root, for messages: a path or ``scheme://bucket/prefix``, never a credential."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        """The names one level below ``prefix`` (``""`` or ending with ``/``) under which some
        object lies, sorted: ``list_folders("raw/")`` gives the experiment ids without listing
        their segments (one delimiter listing, paginated)."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and ETag, ``None`` when there is none."""
        ...

    def get(self, key: str, start: int = 0) -> bytes:
        """The object's bytes from ``start`` on. Raises ``ObjectNotFound``."""
        ...

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        """Write the object whole (see the module doc); its new info.

        Raises:
            PreconditionFailed: ``create`` and the key exists, or ``if_match`` and the object
                is missing or another version.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object (no error when there is none)."""
        ...


def is_url(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` names a bucket (``s3://``, ``gs://``, ``az://``)."""
    return isinstance(root, str) and root.startswith(URL_SCHEMES)


def folder_of(prefix: str) -> str | None:
    """``prefix`` without its final ``/`` (``""`` for the root); ``None`` when it is not a
    folder prefix or not a safe one."""
    if prefix == "":
        return ""
    if not prefix.endswith("/"):
        return None
    try:
        return check_key(prefix[:-1])
    except UnsafePathError:
        return None


def check_key(key: str) -> str:
    """``key`` when it is a safe relative key (see the module doc).

    Raises:
        UnsafePathError: it is not.
    """
    parts = key.split("/")
    if not key or "\\" in key or "\0" in key or any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"unsafe object key {key!r}")
    return key


class NotingFailures:
    """An ``ObjectStore`` passed through, noting the last failure of the store itself.

    A scan turns a read that failed into a verdict on the experiment ("cannot read ..."),
    which is right for a one-shot command. A daemon must tell that apart from what the
    experiment holds: a timeout or a 5xx says nothing about it, and the scan should simply be
    tried again. ``failed`` is the message of the last ``LedgerError`` raised by a call, a
    refused condition (``PreconditionFailed``) and a missing object (``ObjectNotFound``)
    excepted: those are answers, not failures.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.failed: str | None = None

    @property
    def url(self) -> str:
        return self.objects.url

    def _call(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (ObjectNotFound, PreconditionFailed):
            raise
        except LedgerError as exc:
            self.failed = str(exc)
            raise

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        return self._call(lambda: self.objects.list(prefix))

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        return self._call(lambda: self.objects.list_folders(prefix))

    def head(self, key: str) -> ObjectInfo | None:
        return self._call(lambda: self.objects.head(key))

    def get(self, key: str, start: int = 0) -> bytes:
        return self._call(lambda: self.objects.get(key, start))

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        return self._call(lambda: self.objects.put(key, data, create=create, if_match=if_match))

    def delete(self, key: str) -> None:
        self._call(lambda: self.objects.delete(key))


__all__ = [
    "URL_SCHEMES",
    "NotingFailures",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "check_key",
    "folder_of",
    "is_url",
]
