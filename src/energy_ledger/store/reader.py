"""Reading an experiment folder from disk: logs, markers, older LLenergyMeasure files (I/O shell).

``scan_experiment`` opens each process log under ``<root>/raw/<id>/``, replays it (resuming from
a cursor when one is given, as the watcher does), reads its marker, and hands the evidence to the
pure completeness check. Every path is checked to stay inside the results root; a symbolic link
that leads out of it is reported and not followed. Unreadable files become reasons in the report,
never tracebacks; only regular files are opened, never blocking (``store.files``), and every size
read from a file is bounded (lines by the replay, markers and older results here, the world size
by the completeness check). ``LogTail`` lives in ``store.tail``.

A process may instead have written the segmented layout (``process_<i>.segments/`` and a
version-2 marker, docs/format.md §7): the folder is then also listed as objects
(``store.objects.LocalObjects``, one walk for all its processes) and each such process is read
by a ``store.segment_tail.SegmentTail``. A process with both a log and segments is invalid.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from energy_ledger.core.completeness import CompletenessReport, ProcessEvidence, check_completeness
from energy_ledger.core.legacy import summary_from_raw
from energy_ledger.core.marker import MAX_MARKER_BYTES, Marker, SegmentedMarker
from energy_ledger.core.process import ProcessSummary, facts_of
from energy_ledger.core.replay import Observer, ReplayCursor
from energy_ledger.core.state import ProcessState
from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.models import RawProcessResult
from energy_ledger.store.files import read_regular
from energy_ledger.store.layout import (
    ResultsLayout,
    inside,
    is_valid_experiment_id,
    layout_of_experiment_dir,
    marker_name,
    segments_name,
)
from energy_ledger.store.objects import LocalObjects
from energy_ledger.store.scan import (
    RootListing,
    Scan,
    both_layouts_reason,
    marker_from_bytes,
    sort_names,
)
from energy_ledger.store.segment_tail import SegmentTail, fold_segments
from energy_ledger.store.tail import LogTail as LogTail  # re-exported: it was defined here

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_LEGACY_BYTES",
    "MAX_MARKER_BYTES",
    "ExperimentScan",
    "LogTail",
    "RootListing",
    "folder_fingerprint",
    "list_experiments",
    "newest_mtime",
    "scan_experiment",
    "validate_process_completeness",
]
MAX_LEGACY_BYTES = 1 << 30
"""LLenergyMeasure's ``process_<i>.json`` holds every latency; 1 GiB is far beyond any real one."""


@dataclass(slots=True, kw_only=True)
class ExperimentScan(Scan):
    """Everything read from one experiment folder, with its completeness report (``Scan``),
    and where the folder is.

    Attributes:
        directory: ``<root>/raw/<experiment_id>``.
        layout: its results root.
    """

    directory: Path
    layout: ResultsLayout


def newest_mtime(directory: Path) -> float | None:
    """Newest mtime of ``directory`` itself (a file created or deleted) and of its entries.

    Links are not followed (nothing outside the root is touched). ``None`` when the folder
    cannot be read.
    """
    try:
        newest = directory.stat().st_mtime
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                except OSError:
                    continue
    except OSError:
        return None
    return newest


def folder_fingerprint(directory: Path, root: Path) -> int | None:
    """A number that changes when a file of ``directory`` is added, removed, written or replaced.

    It costs one ``scandir`` and a ``stat`` per entry, and opens nothing: each entry's name,
    inode, size, mtime and ctime (a link's target's too, when it stays inside ``root``), and the
    folder's own inode and mtime. The daemon keeps only this for an experiment it no longer
    reads (a failed, invalid or stale one). ``None`` when the folder cannot be listed.
    """
    try:
        own = directory.stat()
        parts: list[tuple[object, ...]] = []
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                    part: tuple[object, ...] = (entry.name, st.st_ino, st.st_size, st.st_mtime_ns)
                    if entry.is_symlink() and inside(root, Path(entry.path)):
                        st = entry.stat()
                    part += (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                except OSError:
                    part = (entry.name,)
                parts.append(part)
    except OSError:
        return None
    return hash((own.st_ino, own.st_mtime_ns, tuple(sorted(parts))))


@dataclass(frozen=True, slots=True)
class _Entry:
    """A file of an experiment folder: its path, and whether it is a link (inside the root)."""

    path: Path
    link: bool


def _entries(directory: Path, layout: ResultsLayout) -> Iterator[tuple[str, _Entry]]:
    """File names in ``directory``, skipping (with a warning) links that leave the root."""
    with os.scandir(directory) as it:
        for entry in sorted(it, key=lambda e: e.name):
            path = Path(entry.path)
            link = entry.is_symlink()
            if link and not inside(layout.root, path):
                logger.warning("%s: symbolic link leads outside the results root; ignored", path)
                continue
            yield entry.name, _Entry(path, link)


def _read_marker(
    entry: _Entry, limit: int = MAX_MARKER_BYTES
) -> tuple[Marker | SegmentedMarker | None, str | None]:
    """A marker of either version (the completeness check says when it does not fit)."""
    path = entry.path
    try:
        data = read_regular(path, limit, follow_links=entry.link)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    return marker_from_bytes(data, path=str(path))


def _legacy_evidence(index: int, entry: _Entry, marker_exists: bool) -> ProcessEvidence:
    try:
        data = read_regular(entry.path, MAX_LEGACY_BYTES, follow_links=entry.link)
        raw = RawProcessResult.model_validate_json(data)
    except (OSError, ValidationError, ValueError) as exc:
        if isinstance(exc, OSError):
            reason = f"{entry.path.name}: cannot read: {exc.strerror or exc}"
        else:
            reason = f"not a RawProcessResult: {exc}"
        return ProcessEvidence(
            index=index,
            log_error=str(reason).splitlines()[0],
            legacy=True,
            legacy_marker=marker_exists,
        )
    return ProcessEvidence(
        index=index, summary=summary_from_raw(raw), legacy=True, legacy_marker=marker_exists
    )


def scan_experiment(
    experiment_dir: str | os.PathLike[str],
    *,
    layout: ResultsLayout | None = None,
    tails: dict[int, LogTail] | None = None,
    strict: bool = True,
    expected_processes: int | None = None,
    observe: Callable[[int], Observer] | None = None,
    light: bool = False,
    segment_tails: dict[int, SegmentTail] | None = None,
) -> ExperimentScan:
    """Read one experiment folder and check its completeness.

    Args:
        experiment_dir: ``<root>/raw/<experiment_id>``.
        layout: the results root; derived from the folder when omitted.
        tails: per-index ``LogTail`` cursors to resume from (updated in place); the watcher
            passes its own so that only appended bytes are read.
        strict: reject corrupt lines (``True``) or skip them and go on (``False``, ``recover``).
        expected_processes: override the world size the logs declare.
        observe: for a log read from its start here (no tail given for it), the observer its
            replay cursor calls with every batch of events folded (``core.timeline``), by
            process index.
        light: fold new tails into ``ProcessState.light`` states (counts and checks, no
            latencies): for a scan that only feeds ``observe``; its ``summaries`` are empty of
            samples.
        segment_tails: like ``tails``, for processes in the segmented layout.

    Raises:
        UnsafePathError: the folder name is not a valid experiment id, or it leads outside the
            root.
        LedgerError: the folder cannot be listed.
    """
    directory = Path(os.path.abspath(experiment_dir))
    if layout is None:
        layout, experiment_id = layout_of_experiment_dir(directory)
    else:
        experiment_id = directory.name
        if not is_valid_experiment_id(experiment_id):
            raise UnsafePathError(f"unsafe experiment folder name {experiment_id!r}")
    layout.check_inside(directory)
    if tails is None:
        tails = {}
    try:
        entries = dict(_entries(directory, layout))
    except FileNotFoundError:
        raise LedgerError(f"{directory}: no such experiment folder") from None
    except NotADirectoryError:
        raise LedgerError(f"{directory}: not a folder") from None
    except OSError as exc:
        raise LedgerError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
    evidence: list[ProcessEvidence] = []
    problems: list[str] = []
    names = sort_names(entries, entries)
    log_indices, segmented = names.logs, names.segmented
    for index in log_indices:
        if index in segmented:
            evidence.append(ProcessEvidence(index=index, log_error=both_layouts_reason(index)))
            continue
        tail = tails.get(index)
        log = entries[f"process_{index}.events.jsonl"]
        if tail is None or tail.path != log.path:
            tail = tails[index] = LogTail(log.path, follow_links=log.link)
            if light:
                tail.cursor = ReplayCursor(state=ProcessState.light())
            if observe is not None:
                tail.cursor.observer = observe(index)
        tail.refresh(strict=strict)
        problems.extend(tail.cursor.problems)
        marker, marker_error = (None, None)
        if tail.error is None and marker_name(index) in entries:
            marker, marker_error = _read_marker(entries[marker_name(index)])
            if isinstance(marker, Marker):
                tail.confirm(marker.log_bytes)
        if tail.error is not None or (tail.unread is not None and not tail.hole):
            # A bad line without NULs is reported at once, though it is read again next time.
            evidence.append(ProcessEvidence(index=index, log_error=tail.error or tail.unread))
            continue
        cur = tail.cursor
        evidence.append(
            ProcessEvidence(
                index=index,
                summary=facts_of(cur.state, index),
                complete_bytes=cur.offset,
                torn_bytes=cur.torn_bytes,
                sha256=cur.sha256,
                last_seq=cur.state.last_seq,
                marker=marker,
                marker_error=marker_error,
                read_error=tail.unread,
            )
        )
    if segment_tails is None:
        segment_tails = {}
    only_segmented = names.only_segmented
    if only_segmented:
        evidence.extend(
            _segmented_evidence(
                directory, entries, only_segmented, segment_tails, strict, observe, light
            )
        )
        for index in only_segmented:
            if index in segment_tails:
                problems.extend(segment_tails[index].cursor.problems)
    for index in names.orphan_markers:
        problems.append(f"process_{index}.done has no log beside it")
    legacy_indices, legacy_markers = names.legacy_results, names.legacy_markers
    legacy = names.legacy
    for index in legacy_indices:
        entry = entries[f"process_{index}.json"]
        evidence.append(_legacy_evidence(index, entry, index in legacy_markers))
    if legacy and expected_processes is None:
        expected_processes = max([*legacy_indices, *legacy_markers]) + 1
    report = check_completeness(experiment_id, evidence, expected_processes)
    return ExperimentScan(
        experiment_id=experiment_id,
        directory=directory,
        layout=layout,
        evidence=evidence,
        report=report,
        legacy=legacy,
        problems=problems,
        states={
            **{i: t.cursor.state for i, t in tails.items() if i in log_indices},
            **{i: t.cursor.state for i, t in segment_tails.items() if i in only_segmented},
        },
    )


def _segmented_evidence(
    directory: Path,
    entries: dict[str, _Entry],
    indices: list[int],
    tails: dict[int, SegmentTail],
    strict: bool,
    observe: Callable[[int], Observer] | None,
    light: bool,
) -> list[ProcessEvidence]:
    """The evidence of the processes written in the segmented layout (one listing for all)."""
    objects = LocalObjects(directory)
    try:
        listing = objects.list()
    except (OSError, LedgerError) as exc:
        reason = f"cannot list {directory.name}: {getattr(exc, 'strerror', None) or exc}"
        return [ProcessEvidence(index=i, log_error=reason) for i in indices]
    found: list[ProcessEvidence] = []
    for index in indices:
        folder = entries[segments_name(index)]
        if folder.link or not folder.path.is_dir():
            what = "a symbolic link" if folder.link else "not a folder"
            reason = f"{segments_name(index)} is {what}; segments are read from a real folder only"
            found.append(ProcessEvidence(index=index, log_error=reason))
            continue
        marker = entries.get(marker_name(index))
        found.append(
            fold_segments(
                objects,
                listing,
                index,
                f"{segments_name(index)}/",
                tails,
                read_marker=None if marker is None else partial(_read_marker, marker),
                strict=strict,
                observe=observe,
                light=light,
            )
        )
    return found


def list_experiments(layout: ResultsLayout) -> RootListing:
    """List ``<root>/raw/*`` folders; unsafe names and links out of the root are refused."""
    ids: list[str] = []
    rejected: list[tuple[str, str]] = []
    try:
        it = os.scandir(layout.raw_dir)
    except FileNotFoundError:
        return RootListing((), ())
    except OSError as exc:
        raise LedgerError(f"cannot list {layout.raw_dir}: {exc.strerror or exc}") from exc
    with it:
        for entry in it:
            name = entry.name
            path = Path(entry.path)
            if name.startswith(".") and entry.is_dir(follow_symlinks=False):
                continue
            if not entry.is_dir():
                continue
            if not is_valid_experiment_id(name):
                rejected.append((name, "unsafe experiment folder name; never read"))
            elif entry.is_symlink() and not inside(layout.root, path):
                rejected.append((name, "symbolic link leads outside the results root"))
            else:
                ids.append(name)
    return RootListing(tuple(sorted(ids)), tuple(sorted(rejected)))


def validate_process_completeness(
    experiment_id: str,
    raw_results: Sequence[RawProcessResult | ProcessSummary],
    expected_processes: int | None,
    results_dir: str | os.PathLike[str],
) -> CompletenessReport:
    """LLenergyMeasure's completeness entry point, over a results root.

    Checks the count, index contiguity ``0..N-1``, duplicate indices and a valid marker for every
    index of ``results_dir/raw/<experiment_id>`` (ledger or older layout), plus the ledger's
    own checks (marker bytes and hash, run id, world size). ``raw_results`` are the results the
    caller already holds: their indices must be the ones found on disk. Logs go through stdlib
    logging: a warning per reason when the experiment is not complete.

    Raises:
        UnsafePathError: ``experiment_id`` is not a valid id.
    """
    layout = ResultsLayout.at(results_dir)
    try:
        scan = scan_experiment(
            layout.experiment_dir(experiment_id),
            layout=layout,
            expected_processes=expected_processes,
        )
        report = scan.report
    except LedgerError as exc:
        if isinstance(exc, UnsafePathError):
            raise
        report = check_completeness(experiment_id, [], expected_processes)
        report = replace(report, reasons=[str(exc), *report.reasons])
    held = Counter(r.process_index for r in raw_results)
    extra: list[str] = []
    duplicates = sorted(i for i, n in held.items() if n > 1)
    if duplicates:
        extra.append(f"duplicate process indices among the results given: {duplicates}")
    unknown = sorted(set(held) - set(report.found_indices))
    if unknown:
        extra.append(f"results given for processes with no files on disk: {unknown}")
    if extra:
        report = replace(
            report,
            reasons=[*report.reasons, *extra],
            duplicate_indices=sorted({*report.duplicate_indices, *duplicates}),
        )
    for reason in report.reasons:
        logger.warning("%s: %s", experiment_id, reason)
    return report
