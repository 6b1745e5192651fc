"""Reading an experiment folder from disk: logs, markers, older LLenergyMeasure files (I/O shell).

``scan_experiment`` opens each process log under ``<root>/raw/<id>/``, replays it (resuming from
a cursor when one is given, as the watcher does), reads its marker, and hands the evidence to the
pure completeness check. Every path is checked to stay inside the results root; a symbolic link
that leads out of it is reported and not followed. Unreadable files become reasons in the report,
never tracebacks.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from energy_ledger.core.completeness import CompletenessReport, ProcessEvidence, check_completeness
from energy_ledger.core.legacy import summary_from_raw
from energy_ledger.core.marker import parse_marker
from energy_ledger.core.process import ProcessSummary, facts_of, summarize_process
from energy_ledger.core.replay import ReplayCursor, replay_stream
from energy_ledger.core.state import ProcessState
from energy_ledger.exceptions import FormatError, LedgerError, UnsafePathError
from energy_ledger.models import RawProcessResult
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

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LogTail:
    """A replay cursor tied to one log file, so the next read takes only the appended bytes.

    ``identity`` (device, inode) and ``head`` (the first bytes) detect a file that was replaced or
    truncated; such a file is replayed from the beginning.
    """

    path: Path
    cursor: ReplayCursor = field(default_factory=ReplayCursor)
    identity: tuple[int, int] | None = None
    head: bytes = b""
    size: int = 0
    error: str | None = None

    HEAD_BYTES = 256

    def refresh(self, *, strict: bool = True) -> bool:
        """Read what was appended since the last call; return True when anything changed."""
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                identity = (st.st_dev, st.st_ino)
                known = self.identity is not None
                replaced = known and (identity != self.identity or st.st_size < self.cursor.offset)
                if known and not replaced and self.head:
                    replaced = fh.read(len(self.head)) != self.head
                if replaced:
                    logger.info("%s was replaced or truncated: replaying it from the start", self)
                    self.cursor, self.error, self.head = ReplayCursor(), None, b""
                elif known and st.st_size == self.size:
                    return False
                self.identity, self.size = identity, st.st_size
                if self.error is not None:
                    return False  # a corrupt log stays corrupt until it is replaced
                try:
                    replay_stream(fh, self.cursor, path=str(self.path), strict=strict)
                except FormatError as exc:
                    where = f":{exc.line}" if exc.line is not None else ""
                    self.error = f"{self.path.name}{where}: {exc.reason}"
                if len(self.head) < self.HEAD_BYTES:
                    fh.seek(0)
                    self.head = fh.read(min(self.HEAD_BYTES, self.cursor.offset))
                return True
        except FileNotFoundError:
            self.error = "the log vanished"
            return True
        except OSError as exc:
            self.error = f"cannot read: {exc.strerror or exc}"
            return True

    def __str__(self) -> str:
        return str(self.path)


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


def _entries(directory: Path, layout: ResultsLayout) -> Iterator[tuple[str, Path]]:
    """File names in ``directory``, skipping (with a warning) links that leave the root."""
    with os.scandir(directory) as it:
        for entry in sorted(it, key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_symlink() and not inside(layout.root, path):
                logger.warning("%s: symbolic link leads outside the results root; ignored", path)
                continue
            yield entry.name, path


def _read_marker(path: Path) -> tuple[object, str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    try:
        return parse_marker(data, path=str(path)), None
    except FormatError as exc:
        return None, exc.reason


def _legacy_evidence(index: int, path: Path, marker_exists: bool) -> ProcessEvidence:
    try:
        raw = RawProcessResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not a RawProcessResult: {exc}"
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
) -> ExperimentScan:
    """Read one experiment folder and check its completeness.

    Args:
        experiment_dir: ``<root>/raw/<experiment_id>``.
        layout: the results root; derived from the folder when omitted.
        tails: per-index ``LogTail`` cursors to resume from (updated in place); the watcher
            passes its own so that only appended bytes are read.
        strict: reject corrupt lines (``True``) or skip them and go on (``False``, ``recover``).
        expected_processes: override the world size the logs declare.

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
        path = entries[f"process_{index}.events.jsonl"]
        if tail is None or tail.path != path:
            tail = tails[index] = LogTail(path)
        tail.refresh(strict=strict)
        problems.extend(tail.cursor.problems)
        if tail.error is not None:
            evidence.append(ProcessEvidence(index=index, log_error=tail.error))
            continue
        marker, marker_error = (None, None)
        if marker_name(index) in entries:
            marker, marker_error = _read_marker(entries[marker_name(index)])
        cur = tail.cursor
        evidence.append(
            ProcessEvidence(
                index=index,
                summary=facts_of(cur.state, index),
                complete_bytes=cur.offset,
                torn_bytes=cur.torn_bytes,
                sha256=cur.sha256,
                last_seq=cur.state.last_seq,
                marker=marker,  # type: ignore[arg-type]
                marker_error=marker_error,
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
        path = entries[f"process_{index}.json"]
        evidence.append(_legacy_evidence(index, path, index in legacy_markers))
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
