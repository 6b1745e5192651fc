"""``LogWriter``: what both writers of a process's log offer, and ``open_log_writer``.

Two layouts hold a process's log (docs/format.md): one appended file with a version-1 marker
(``store.writer.EventLogWriter``), or immutable segments with a version-2 marker
(``store.segments.SegmentedLogWriter``), the only layout a bucket can hold. The recorder and
its ``LossGuard`` are typed against ``LogWriter``, so they need not know which one writes.

``open_log_writer`` picks the writer for a root and a layout: a bucket URL is always
segmented; a folder takes either, the appended log unless asked.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Protocol

from energy_ledger.core.events import Event
from energy_ledger.core.marker import Marker, SegmentedMarker
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.clock import FsOffset
from energy_ledger.store.objects import ObjectStore, is_url, open_objects
from energy_ledger.store.segments import SegmentedLogWriter
from energy_ledger.store.writer import EventLogWriter

__all__ = ["LAYOUTS", "Layout", "LogWriter", "check_layout", "open_log_writer"]

Layout = Literal["appended", "segmented"]
LAYOUTS: tuple[Layout, ...] = ("appended", "segmented")
"""``appended``: ``process_<i>.events.jsonl`` and a version-1 marker; ``segmented``:
``process_<i>.segments/`` and a version-2 marker (docs/format.md §7)."""


class LogWriter(Protocol):
    """One process's log being written: ``EventLogWriter`` or ``SegmentedLogWriter``.

    Not thread-safe: called from one thread at a time. A write that fails raises an
    ``OSError``, a ``LedgerError`` caused by one, or a ``StoreWriteError`` (what
    ``recorder.guard.is_write_failure`` recognises); anything else is a bug in the caller.
    """

    @property
    def path(self) -> str | os.PathLike[str]:
        """Where the log goes, for messages."""
        ...

    @property
    def closed(self) -> bool:
        """True once closed, failed, abandoned (or, segmented, after a failed put)."""
        ...

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event gets."""
        ...

    @property
    def fs_offset(self) -> FsOffset | None:
        """This host's clock minus the filesystem's, when measured (never on a store)."""
        ...

    @property
    def last_clock_monotonic_sec(self) -> float | None:
        """``monotonic_sec`` of the last ``clock`` event appended."""
        ...

    def append(self, type_name: str, *, t: float | None = None, **fields: Any) -> Event:
        """Validate and append an event; returns it."""
        ...

    def append_raw(self, obj: dict[str, Any]) -> None:
        """Append an already-valid wire-form event (the hot path)."""
        ...

    def append_clock(self, t: float, monotonic_sec: float, wall_t: float | None = None) -> None:
        """Append a ``clock`` event (with the filesystem offset where one is measured)."""
        ...

    def flush(self, *, measure_fs_offset: bool = False) -> None:
        """Write (or cut) what is buffered."""
        ...

    def close(self, status: str = "ok") -> Marker | SegmentedMarker:
        """Append ``process_finished``, store the rest, then write the marker."""
        ...

    def fail(self, error: str) -> None:
        """Append ``process_failed`` and close without a marker."""
        ...

    def abandon(self) -> None:
        """Close without writing anything more (what a crash would leave)."""
        ...


def check_layout(root: str | os.PathLike[str], layout: str | None) -> Layout:
    """The layout a root gets: ``layout``, or for ``None`` segmented on a bucket, else appended.

    Raises:
        LedgerError: an unknown layout, or ``appended`` asked of a bucket (it cannot append).
    """
    if layout is None or layout == "":
        return "segmented" if is_url(root) else "appended"
    if layout == "appended":
        if is_url(root):
            raise LedgerError(
                f"{root} is a bucket, and a bucket cannot append: its processes write the "
                "segmented layout (leave the layout unset or say 'segmented')"
            )
        return "appended"
    if layout == "segmented":
        return "segmented"
    raise LedgerError(f"unknown log layout {layout!r}: say 'appended' or 'segmented'")


def open_log_writer(
    root: str | os.PathLike[str],
    experiment_id: str,
    process_index: int,
    *,
    layout: Layout,
    objects: ObjectStore | None = None,
    **options: Any,
) -> LogWriter:
    """The writer of a process's log under ``root`` in ``layout`` (see ``check_layout``).

    Args:
        root: a folder, or (segmented only) a bucket URL.
        experiment_id: the experiment.
        process_index: the process.
        layout: ``appended`` or ``segmented``.
        objects: the root's store, when the caller has opened it already (segmented only).
        **options: the chosen writer's keyword arguments.

    Raises:
        LedgerError: the log exists already, or cannot be created.
    """
    if check_layout(root, layout) == "segmented":
        store = open_objects(root) if objects is None else objects
        return SegmentedLogWriter(store, experiment_id, process_index, **options)
    return EventLogWriter.open(root, experiment_id, process_index, **options)
