"""Completeness: is every process of an experiment done, and can its logs be trusted? (pure)

The check takes the evidence gathered for each process log (its summary, how many bytes were
complete, their SHA-256, the marker) and returns a ``CompletenessReport`` that says in words why
an experiment is not complete. Checks, in order:

1. count: as many processes as the expected world size;
2. contiguity: indices are exactly ``0..N-1`` (none missing, none ``>= N``);
3. no duplicates: no two logs claim the same index;
4. a valid marker for every index: the log holds at least ``log_bytes`` complete bytes, their
   SHA-256 equals ``log_sha256``, the event at ``final_seq`` is the last complete one and it is
   ``process_finished``; a marker whose bytes have not all arrived yet is *pending*, not invalid;
5. agreement: every process names the same ``run_id``, ``world_size`` and ``experiment_id``.

A process written in the segmented layout (docs/format.md §7) carries ``SegmentsSeen`` in its
evidence and a version-2 marker; check 4 then compares each segment read with the marker's entry
for it, and the segments listed with the marker's list (a listed one not there yet is pending,
one beyond the list is invalid). A marker whose version does not fit its layout is invalid.

The report has the shape of LLenergyMeasure's ``CompletenessReport``: its sequences are lists,
``marker_status`` maps every process index to whether that process has a valid completion marker,
and ``is_complete`` / ``error_message`` are there too (as properties). The ledger's own findings
(pending and invalid markers, failed processes, run ids, every reason) are kept beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from energy_ledger.core.marker import Marker, SegmentDigest, SegmentedMarker
from energy_ledger.core.process import ProcessFacts, ProcessSummary

State = Literal["complete", "pending", "failed", "invalid"]

MAX_PROCESSES = 65_536
"""The largest world size the check takes. The format allows any 64-bit one, but the check lists
the indices it expects, and a single log claiming 10**12 processes must cost a sentence, not a
range of that size. No measured run comes near it; a larger one is reported as invalid."""
MAX_LISTED_INDICES = 20
"""Index lists in reasons are cut to this many entries (the report's fields keep them all)."""


@dataclass(frozen=True, slots=True)
class SegmentsSeen:
    """What a reader found of a segmented log (docs/format.md §7.4).

    Attributes:
        read: the segments folded, in order from segment 0 (entry ``n`` is segment ``n``),
            with the size and SHA-256 of the bytes read.
        present: every segment number the listing showed, sorted (read or not: a number
            after a gap is listed but not read).
        where: the segments' location for messages (see ``named``); ``""`` in a folder.
    """

    read: tuple[SegmentDigest, ...] = ()
    present: tuple[int, ...] = ()
    where: str = ""

    def named(self, number: int) -> str:
        """`` (<where><n>.jsonl)`` after a reason about segment ``number``, when ``where`` is
        set (a bucket's reader sets it to the segments' URL, so the reason names the object);
        nothing otherwise."""
        return f" ({self.where}{number:08d}.jsonl)" if self.where else ""


@dataclass(frozen=True, slots=True)
class ProcessEvidence:
    """What was found on disk for one process.

    Attributes:
        index: the process index in the file name.
        summary: what the replayed log says about the process (``ProcessFacts``, or a whole
            ``ProcessSummary``); ``None`` when the log could not be replayed.
        log_error: why the log could not be replayed (corrupt line, bad version, ...).
        complete_bytes: bytes of complete lines in the log.
        torn_bytes: bytes after them without a final newline.
        sha256: hex SHA-256 of the complete bytes.
        last_seq: ``seq`` of the last complete event (-1 when none).
        marker: the parsed marker, when there is one and it parses.
        marker_error: why the marker file could not be used.
        read_error: a line the log cannot be read past *yet*: no marker covers its bytes, which
            may be bytes another host has not finished writing (NFS shows them as NULs for a
            moment). The other fields then describe the lines before it. The process is pending;
            the reader makes the error final (``log_error``) once a marker covers those bytes.
        legacy: LLenergyMeasure's older layout (a ``.completed_<i>`` file is the marker).
        legacy_marker: whether that older marker exists.
        segments: for a log in the segmented layout, what was read of its segments; ``None``
            for an appended log. The byte and digest fields above then describe the segments
            read, end to end.
    """

    index: int
    summary: ProcessFacts | ProcessSummary | None = None
    log_error: str | None = None
    complete_bytes: int = 0
    torn_bytes: int = 0
    sha256: str | None = None
    last_seq: int = -1
    marker: Marker | SegmentedMarker | None = None
    marker_error: str | None = None
    read_error: str | None = None
    legacy: bool = False
    legacy_marker: bool = False
    segments: SegmentsSeen | None = None


_LIST_FIELDS = (
    "found_indices",
    "missing_indices",
    "duplicate_indices",
    "out_of_range_indices",
    "missing_markers",
    "invalid_markers",
    "pending_markers",
    "failed_indices",
    "run_ids",
    "reasons",
)


@dataclass(frozen=True, slots=True)
class CompletenessReport:
    """The verdict on one experiment, with every reason it is not complete.

    Attributes:
        marker_status: process index -> has a valid completion marker, for every index expected
            (``0..N-1``) and every index found, as LLenergyMeasure's report has it. "Valid" is
            the ledger's check (bytes, hash, last event) or, in the older layout, the
            ``.completed_<i>`` file's existence, which is all LLenergyMeasure checks.

    Sequences passed as tuples are stored as lists, so older callers keep working.
    """

    experiment_id: str
    expected_processes: int | None
    found_processes: int
    found_indices: list[int]
    missing_indices: list[int]
    duplicate_indices: list[int]
    out_of_range_indices: list[int]
    missing_markers: list[int]
    invalid_markers: list[int]
    pending_markers: list[int]
    failed_indices: list[int]
    run_ids: list[str]
    reasons: list[str] = field(default_factory=list)
    marker_status: dict[int, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _LIST_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, list):
                object.__setattr__(self, name, list(value))

    @property
    def is_complete(self) -> bool:
        """True when every check passed."""
        return not self.reasons

    @property
    def state(self) -> State:
        """``complete``; ``pending`` (may still complete); ``failed``; or ``invalid``."""
        if self.is_complete:
            return "complete"
        if self.failed_indices:
            return "failed"
        if (
            self.invalid_markers
            or self.duplicate_indices
            or self.out_of_range_indices
            or len(self.run_ids) > 1
            or any(r.startswith("invalid:") for r in self.reasons)
        ):
            return "invalid"
        return "pending"

    @property
    def error_message(self) -> str | None:
        """All reasons in one line, or ``None`` when complete."""
        return "; ".join(self.reasons) if self.reasons else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (embedded in partial results)."""
        return {
            "experiment_id": self.experiment_id,
            "is_complete": self.is_complete,
            "state": self.state,
            "expected_processes": self.expected_processes,
            "found_processes": self.found_processes,
            "found_indices": list(self.found_indices),
            "missing_indices": list(self.missing_indices),
            "duplicate_indices": list(self.duplicate_indices),
            "out_of_range_indices": list(self.out_of_range_indices),
            "missing_markers": list(self.missing_markers),
            "invalid_markers": list(self.invalid_markers),
            "pending_markers": list(self.pending_markers),
            "failed_indices": list(self.failed_indices),
            "run_ids": list(self.run_ids),
            "marker_status": {str(i): ok for i, ok in sorted(self.marker_status.items())},
            "error_message": self.error_message,
            "reasons": list(self.reasons),
        }


def _marker_verdict(ev: ProcessEvidence, run_id: str | None) -> tuple[str, str] | None:
    """``None`` when the marker is valid, else (``missing``|``pending``|``invalid``, reason)."""
    i = ev.index
    if ev.legacy:
        if ev.legacy_marker:
            return None
        return "missing", f"process {i} has no completion marker (.completed_{i})"
    if ev.marker_error is not None:
        return "invalid", f"invalid: process {i} marker is unusable: {ev.marker_error}"
    marker = ev.marker
    if marker is None:
        return "missing", f"process {i} has no completion marker (process_{i}.done)"
    if marker.process_index != i:
        return "invalid", (f"invalid: process {i} marker names process {marker.process_index}")
    if run_id is not None and marker.run_id != run_id:
        return "invalid", (
            f"invalid: process {i} marker is stale: it belongs to run {marker.run_id!r}, "
            f"the log to run {run_id!r}"
        )
    if isinstance(marker, SegmentedMarker) or ev.segments is not None:
        return _segmented_verdict(ev, marker)
    if ev.complete_bytes < marker.log_bytes:
        have = ev.complete_bytes + ev.torn_bytes
        return "pending", (
            f"process {i} marker promises {marker.log_bytes} log bytes, "
            f"{have} arrived so far (not yet)"
        )
    if ev.complete_bytes > marker.log_bytes:
        return "invalid", (
            f"invalid: process {i} log has {ev.complete_bytes} bytes, more than the "
            f"{marker.log_bytes} its marker covers (events after the marker)"
        )
    if ev.sha256 != marker.log_sha256:
        return "invalid", f"invalid: process {i} log does not match its marker's SHA-256"
    if ev.last_seq != marker.final_seq:
        return "invalid", (
            f"invalid: process {i} marker says the last seq is {marker.final_seq}, "
            f"the log ends at {ev.last_seq}"
        )
    if ev.summary is not None and not ev.summary.finished:
        return "invalid", f"invalid: process {i} has a marker but no process_finished event"
    return None


def _segmented_verdict(
    ev: ProcessEvidence, marker: Marker | SegmentedMarker
) -> tuple[str, str] | None:
    """``_marker_verdict`` for the segmented layout, or for a marker of the other layout."""
    i = ev.index
    seen = ev.segments
    if seen is None:
        return "invalid", (
            f"invalid: process {i} marker is version 2 (segmented layout) but its log is one "
            f"appended file (process_{i}.events.jsonl); a process writes one layout only"
        )
    if not isinstance(marker, SegmentedMarker):
        return "invalid", (
            f"invalid: process {i} marker is version 1 (one appended log) but the process "
            f"wrote segments (process_{i}.segments/); its marker must be version 2"
        )
    listed = len(marker.segments)
    for n, (got, want) in enumerate(zip(seen.read, marker.segments, strict=False)):
        if got.bytes != want.bytes:
            return "invalid", (
                f"invalid: process {i} segment {n:08d} is {got.bytes} bytes, its marker says "
                f"{want.bytes}{seen.named(n)}"
            )
        if got.sha256 != want.sha256:
            return "invalid", (
                f"invalid: process {i} segment {n:08d} does not match its marker's "
                f"SHA-256{seen.named(n)}"
            )
    extra = [n for n in seen.present if n >= listed]
    if extra:
        return "invalid", (
            f"invalid: process {i} has segments beyond the {listed} its marker lists: "
            f"{_listed(extra)} (written after the marker?)"
        )
    present = set(seen.present)
    missing = [n for n in range(listed) if n not in present]
    if missing or len(seen.read) < listed:
        return "pending", (
            f"process {i} marker lists {listed} segments; "
            + (f"segments {_listed(missing)} are not there" if missing else "not all are read")
            + f" yet, {len(seen.read)} read so far (not yet)"
        )
    if ev.last_seq != marker.final_seq:
        return "invalid", (
            f"invalid: process {i} marker says the last seq is {marker.final_seq}, "
            f"the segments end at {ev.last_seq}"
        )
    if ev.summary is not None and not ev.summary.finished:
        return "invalid", f"invalid: process {i} has a marker but no process_finished event"
    return None


def _listed(indices: Sequence[int]) -> str:
    """``[1, 2, 3]``, or the first ``MAX_LISTED_INDICES`` and how many in all."""
    if len(indices) <= MAX_LISTED_INDICES:
        return str(list(indices))
    head = ", ".join(map(str, indices[:MAX_LISTED_INDICES]))
    return f"[{head}, ...] ({len(indices):,} in all)"


def check_completeness(
    experiment_id: str,
    evidence: Sequence[ProcessEvidence],
    expected_processes: int | None = None,
) -> CompletenessReport:
    """Check an experiment's processes; ``expected_processes`` defaults to their world size."""
    reasons: list[str] = []
    summaries = [ev.summary for ev in evidence if ev.summary is not None]
    for ev in evidence:
        if ev.log_error is not None:
            reasons.append(f"invalid: process {ev.index} log cannot be replayed: {ev.log_error}")
        elif ev.read_error is not None and ev.segments is not None:
            reasons.append(f"process {ev.index} log cannot be read further yet: {ev.read_error}")
        elif ev.read_error is not None:
            reasons.append(
                f"process {ev.index} log cannot be read further yet: {ev.read_error} (no marker "
                "covers these bytes, so they are read again later; they become an error once "
                "one does)"
            )
        elif ev.summary is not None and ev.summary.run_id is None and not ev.legacy:
            reasons.append(f"process {ev.index} log has no process_started event yet")
    run_ids = tuple(sorted({s.run_id for s in summaries if s.run_id is not None}))
    if len(run_ids) > 1:
        reasons.append(f"processes disagree on run_id: {', '.join(run_ids)} (stale logs?)")
    world_sizes = sorted({s.world_size for s in summaries if s.world_size is not None})
    if len(world_sizes) > 1:
        reasons.append(f"invalid: processes disagree on world_size: {world_sizes}")
    names = sorted({s.experiment_id for s in summaries if s.experiment_id})
    wrong = [n for n in names if n != experiment_id]
    if wrong:
        reasons.append(
            f"invalid: logs name experiment {', '.join(map(repr, wrong))}, not {experiment_id!r}"
        )
    expected = expected_processes
    if expected is None and len(world_sizes) == 1:
        expected = world_sizes[0]
    too_many = expected is not None and expected > MAX_PROCESSES
    if too_many:
        reasons.append(
            f"invalid: world size {expected:,} is more than the {MAX_PROCESSES:,} processes "
            "energy-ledger checks; the indices it expects are not listed"
        )
    # Index claimed by each log: the file's, checked against what its events say.
    claimed: list[int] = []
    for ev in evidence:
        claimed.append(ev.index)
        if ev.summary is not None and ev.summary.process_index != ev.index and not ev.legacy:
            reasons.append(
                f"invalid: process_{ev.index} log says it is process {ev.summary.process_index}"
            )
            claimed.append(ev.summary.process_index)
    counts = Counter(claimed)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        reasons.append(f"duplicate process indices: {list(duplicates)}")
    found = sorted(counts)
    missing: list[int] = []
    out_of_range: list[int] = []
    if too_many:
        pass  # said above; listing the indices expected would build a range of that size
    elif expected is None:
        if not evidence:
            reasons.append("no process logs found")
        elif len(world_sizes) > 1:
            reasons.append(
                "world size unknown: the processes disagree on it (see above); give the "
                "expected count with validate --expected N"
            )
        elif any(ev.log_error is not None for ev in evidence):
            reasons.append("world size unknown: no log that could be read has process_started")
        else:
            reasons.append("world size unknown: no process has written process_started")
    else:
        missing = [i for i in range(expected) if i not in counts]
        out_of_range = [i for i in found if i >= expected]
        if len(found) != expected or missing:
            reasons.append(
                f"expected {expected} processes, found {len(found)}"
                + (f" (missing {_listed(missing)})" if missing else "")
            )
        if out_of_range:
            reasons.append(
                f"invalid: process indices {_listed(out_of_range)} are >= world size {expected}"
            )
    failed = sorted(
        ev.index for ev in evidence if ev.summary and ev.summary.failed_error is not None
    )
    for ev in evidence:
        if ev.summary is not None and ev.summary.failed_error is not None:
            reasons.append(f"process {ev.index} failed: {ev.summary.failed_error}")
    for ev in evidence:
        summary = ev.summary
        if summary is None or not summary.finished or summary.window == "closed":
            continue
        what = "never opened" if summary.window == "none" else "never closed"
        reasons.append(
            f"invalid: process {ev.index} finished but {what} its measured window, so its "
            "energy and requests cannot be attributed; `recover` can still use it"
        )
    missing_markers: list[int] = []
    invalid_markers: list[int] = []
    pending_markers: list[int] = []
    marker_status = dict.fromkeys(range(0 if too_many else expected or 0), False)
    marker_status.update(dict.fromkeys(found, False))
    valid = Counter[int]()
    for ev in evidence:
        if ev.log_error is not None:
            continue
        run_id = ev.summary.run_id if ev.summary else None
        verdict = _marker_verdict(ev, run_id)
        if verdict is None:
            valid[ev.index] += 1
            continue
        if ev.index in failed:
            continue
        kind, reason = verdict
        {"missing": missing_markers, "pending": pending_markers, "invalid": invalid_markers}[
            kind
        ].append(ev.index)
        reasons.append(reason)
    per_index = Counter(ev.index for ev in evidence)
    for i, n in valid.items():
        marker_status[i] = n == per_index[i]  # a duplicated index needs every marker valid
    return CompletenessReport(
        experiment_id=experiment_id,
        expected_processes=expected,
        found_processes=len(evidence),
        found_indices=found,
        missing_indices=missing,
        duplicate_indices=duplicates,
        out_of_range_indices=out_of_range,
        missing_markers=missing_markers,
        invalid_markers=invalid_markers,
        pending_markers=pending_markers,
        failed_indices=failed,
        run_ids=list(run_ids),
        reasons=reasons,
        marker_status=marker_status,
    )
