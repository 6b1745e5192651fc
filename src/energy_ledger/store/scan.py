"""What a scan of one experiment found, for a folder and a bucket alike.

``store.reader`` scans a folder and ``store.bucket_reader`` a bucket prefix. Both sort the names
of an experiment's listing into layouts the same way (``sort_names``), turn a marker's bytes into
a marker or a reason the same way (``marker_from_bytes``), build each segmented process's
evidence through ``store.segments``, and hand everything to the one completeness check
(``core.completeness``). ``Scan`` is what they return in common, and all that aggregation and
the validity checks read; ``reader.ExperimentScan`` (a folder) and
``bucket_reader.ObjectScan`` (a bucket) add where the experiment lives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from energy_ledger.core.completeness import CompletenessReport, ProcessEvidence
from energy_ledger.core.marker import Marker, SegmentedMarker, parse_any_marker
from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.state import ProcessState
from energy_ledger.exceptions import FormatError
from energy_ledger.store.layout import (
    LEGACY_MARKER_RE,
    LEGACY_RESULT_RE,
    LOG_RE,
    MARKER_RE,
    SEGMENTS_RE,
    log_name,
    segments_name,
)

__all__ = [
    "ExperimentNames",
    "RootListing",
    "Scan",
    "both_layouts_reason",
    "marker_from_bytes",
    "sort_names",
]


@dataclass(slots=True)
class Scan:
    """Everything read of one experiment, with its completeness report.

    The completeness check needs only cheap facts; the full per-process summaries (every
    latency, the schema-2.0 models) are built on first use of ``summaries``, so that a daemon
    rescanning an active experiment pays for the bytes appended, not for the log's size.
    """

    experiment_id: str
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


@dataclass(frozen=True, slots=True)
class ExperimentNames:
    """The names of an experiment's listing, sorted into what each one holds.

    Attributes:
        logs: indices with an appended log (``process_<i>.events.jsonl``), sorted.
        segmented: indices with segments (``process_<i>.segments``), sorted.
        markers: indices with a marker (``process_<i>.done``).
        legacy_results: indices with LLenergyMeasure's older ``process_<i>.json``, sorted.
        legacy_markers: indices with its older marker (``.completed_<i>``).
    """

    logs: list[int]
    segmented: list[int]
    markers: frozenset[int]
    legacy_results: list[int]
    legacy_markers: frozenset[int]

    @property
    def only_segmented(self) -> list[int]:
        """Segmented indices without an appended log beside them (those are invalid)."""
        return [i for i in self.segmented if i not in self.logs]

    @property
    def orphan_markers(self) -> list[int]:
        """Indices with a marker and neither a log nor segments, sorted."""
        return sorted(i for i in self.markers if i not in self.logs and i not in self.segmented)

    @property
    def legacy(self) -> bool:
        """Only LLenergyMeasure's older layout is there."""
        return (
            bool(self.legacy_results or self.legacy_markers)
            and not self.logs
            and not self.segmented
        )


def sort_names(files: Iterable[str], folders: Iterable[str]) -> ExperimentNames:
    """Sort an experiment's names: ``files`` name objects (logs, markers, older results),
    ``folders`` what holds more (segments). A folder passes every name of it as both."""

    def indices(names: Iterable[str], pattern: re.Pattern[str]) -> list[int]:
        return sorted(int(m.group(1)) for n in names if (m := pattern.fullmatch(n)))

    files = list(files)
    return ExperimentNames(
        logs=indices(files, LOG_RE),
        segmented=indices(folders, SEGMENTS_RE),
        markers=frozenset(indices(files, MARKER_RE)),
        legacy_results=indices(files, LEGACY_RESULT_RE),
        legacy_markers=frozenset(indices(files, LEGACY_MARKER_RE)),
    )


def both_layouts_reason(index: int) -> str:
    """Why a process with an appended log and segments is not read."""
    return (
        f"process {index} wrote both an appended log ({log_name(index)}) and segments "
        f"({segments_name(index)}/); a process writes one layout only"
    )


def marker_from_bytes(
    data: bytes, *, path: str
) -> tuple[Marker | SegmentedMarker | None, str | None]:
    """A marker of either version, or why it cannot be used (the completeness check says
    when it does not fit the layout)."""
    try:
        return parse_any_marker(data, path=path), None
    except FormatError as exc:
        return None, exc.reason


@dataclass(frozen=True, slots=True)
class RootListing:
    """The experiment folders under a root, and the names that were refused."""

    experiment_ids: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]
