"""Reading an experiment folder from disk: logs, markers, older LLenergyMeasure files (I/O shell).

``scan_experiment`` opens each process log under ``<root>/raw/<id>/``, replays it (resuming from
a cursor when one is given, as the watcher does), reads its marker, and hands the evidence to the
pure completeness check. Every path is checked to stay inside the results root; a symbolic link
that leads out of it is reported and not followed. Unreadable files become reasons in the report,
never tracebacks; only regular files are opened, never blocking (``store.files``), and every size
read from a file is bounded (lines by the replay, markers and older results here, the world size
by the completeness check). ``LogTail`` lives in ``store.tail``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from energy_ledger.core.completeness import CompletenessReport, ProcessEvidence, check_completeness
from energy_ledger.core.legacy import summary_from_raw
from energy_ledger.core.marker import Marker, parse_marker
from energy_ledger.core.process import ProcessSummary, facts_of, summarize_process
from energy_ledger.core.replay import Observer, ReplayCursor
from energy_ledger.core.state import ProcessState
from energy_ledger.exceptions import FormatError, LedgerError, UnsafePathError
from energy_ledger.models import RawProcessResult
from energy_ledger.store.files import read_regular
from energy_ledger.store.layout import (
    LEGACY_MARKER_RE,
    LEGACY_RESULT_RE,
    LOG_RE,
    MARKER_RE,
    ResultsLayout,
    inside,
    is_valid_experiment_id,
    layout_of_experiment_dir,
    marker_name,
)
from energy_ledger.store.tail import LogTail as LogTail  # re-exported: it was defined here

logger = logging.getLogger(__name__)

MAX_MARKER_BYTES = 64 << 10
"""A marker is one short JSON object (about 200 bytes); a bigger file is not read as one."""
MAX_LEGACY_BYTES = 1 << 30
"""LLenergyMeasure's ``process_<i>.json`` holds every latency; 1 GiB is far beyond any real one."""


@dataclass(slots=True)
class ExperimentScan:
    """Everything read from one experiment folder, with its completeness report.

    The completeness check needs only cheap facts; the full per-process summaries (every
    latency, the schema-2.0 models) are built on first use of ``summaries``, so that a daemon
    rescanning an active experiment pays for the bytes appended, not for the log's size.
    """

    experiment_id: str
    directory: Path
    layout: ResultsLayout
    evidence: list[ProcessEvidence]
    report: CompletenessReport
    legacy: bool = False
    problems: list[str] = field(default_factory=list)
    states: dict[int, ProcessState] = field(default_factory=dict)
    _summaries: list[ProcessSummary] | None = None

    @property
    def summaries(self) -> list[ProcessSummary]:
        """The replayed processes, in index order (built once, on first use)."""
        if self._summaries is None:
            found: list[ProcessSummary] = []
            for ev in self.evidence:
                if isinstance(ev.summary, ProcessSummary):
                    found.append(ev.summary)
                elif ev.summary is not None:
                    found.append(summarize_process(self.states[ev.index], ev.index))
            self._summaries = sorted(found, key=lambda s: s.process_index)
        return self._summaries


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


def _read_marker(entry: _Entry) -> tuple[Marker | None, str | None]:
    path = entry.path
    try:
        data = read_regular(path, MAX_MARKER_BYTES, follow_links=entry.link)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    try:
        return parse_marker(data, path=str(path)), None
    except FormatError as exc:
        return None, exc.reason


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
    log_indices = sorted(int(m.group(1)) for n in entries if (m := LOG_RE.fullmatch(n)))
    for index in log_indices:
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
            if marker is not None:
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
    orphan_markers = sorted(
        int(m.group(1))
        for n in entries
        if (m := MARKER_RE.fullmatch(n)) and int(m.group(1)) not in log_indices
    )
    for index in orphan_markers:
        problems.append(f"process_{index}.done has no log beside it")
    legacy_indices = sorted(
        int(m.group(1)) for n in entries if (m := LEGACY_RESULT_RE.fullmatch(n))
    )
    legacy_markers = {int(m.group(1)) for n in entries if (m := LEGACY_MARKER_RE.fullmatch(n))}
    legacy = bool(legacy_indices or legacy_markers) and not log_indices
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
        states={i: t.cursor.state for i, t in tails.items() if i in log_indices},
    )


@dataclass(frozen=True, slots=True)
class RootListing:
    """The experiment folders under a root, and the names that were refused."""

    experiment_ids: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]


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
