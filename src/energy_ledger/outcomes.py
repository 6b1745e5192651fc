"""What the one-shot operations report, and the aggregation of a scan, for every kind of root.

``pipeline`` (a folder) and ``pipeline_objects`` (a bucket) both return ``Outcome`` values and
aggregate a scan with ``aggregate_scan``, so that a result's bytes cannot depend on where its
logs were read from. They live here, apart from both, because ``pipeline`` hands a URL root to
``pipeline_objects``, which must not import ``pipeline`` back (no import cycles).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.validity import is_validity_warning
from energy_ledger.exceptions import IncompleteExperimentError, LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.store.scan import Scan

__all__ = [
    "Outcome",
    "aggregate_scan",
    "coverage",
    "emitted_validity",
    "tally",
    "validity_of",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one experiment.

    Attributes:
        experiment_id: the folder name.
        state: ``complete``, ``pending``, ``failed``, ``invalid`` or ``rejected``.
        action: ``written``, ``up-to-date``, ``skipped`` (not complete), ``error`` (complete,
            but its result could not be written) or, on a bucket root only, ``kept``
            (complete, and a result with other bytes is there, left as it is: see
            ``store.bucket_results``).
        detail: why (the completeness reasons, or the error).
        path: the result file, when there is one (on a folder root).
        warnings: the emitted result's validity warnings (weak measurements, not blockers).
        url: the result object, as a URL, on a bucket root (``path`` is then ``None``).
    """

    experiment_id: str
    state: str
    action: str
    detail: str = ""
    path: Path | None = None
    warnings: tuple[str, ...] = ()
    url: str | None = None

    @property
    def where(self) -> str:
        """The result's location for a message: its path or URL, or ``""``."""
        return self.url or (str(self.path) if self.path is not None else "")


def coverage(scan: Scan) -> dict[str, Any]:
    """How much of the experiment the logs cover: processes, requests, seconds, lines skipped."""
    summaries = scan.summaries
    report = scan.report
    windows = [s for s in summaries if s.has_window]
    seconds = (
        max(s.window_end_t for s in windows if s.window_end_t is not None)
        - min(s.window_start_t for s in windows if s.window_start_t is not None)
        if windows
        else 0.0
    )
    return {
        "processes_found": len(summaries),
        "processes_expected": report.expected_processes,
        "processes_finished": sum(1 for s in summaries if s.finished),
        "processes_failed": [s.process_index for s in summaries if s.failed_error is not None],
        "requests": sum(s.requests for s in summaries),
        "output_tokens": sum(s.output_tokens for s in summaries),
        "measured_seconds": seconds,
        "skipped_lines": list(scan.problems),
    }


def aggregate_scan(scan: Scan, *, partial: bool = False) -> ExperimentResult:
    """Aggregate a scanned experiment.

    Raises:
        IncompleteExperimentError: it is not complete and ``partial`` is False.
        LedgerError: nothing could be replayed.
    """
    if not partial and not scan.report.is_complete:
        raise IncompleteExperimentError(
            f"{scan.experiment_id} is not complete: {scan.report.error_message}"
        )
    summaries = scan.summaries
    if not summaries:
        raise LedgerError(f"{scan.experiment_id}: no process log could be replayed")
    extra: dict[str, Any] = {}
    if partial:
        extra = {"completeness": scan.report.to_dict(), "coverage": coverage(scan)}
    methodology = summaries[0].measurement_methodology
    return aggregate_results(
        summaries,
        scan.experiment_id,
        measurement_methodology=methodology  # type: ignore[arg-type]
        if methodology in ("total", "steady_state", "windowed")
        else "total",
        partial=partial,
        partial_reason=scan.report.error_message if partial else None,
        extra=extra,
    )


def not_in_csv(outcomes: list[Outcome], failed: str) -> list[Outcome]:
    """``outcomes`` after the CSV rebuild failed with ``failed``: every experiment that was not
    skipped becomes an error saying so (its result may be written, its row is not)."""
    return [
        replace(o, action="error", detail=failed) if o.action != "skipped" else o for o in outcomes
    ]


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    """How many outcomes were written, up to date, errors (not written), and not complete.

    A bucket's ``kept`` result (complete, another version's bytes left in place) counts as up
    to date: the experiment has its result, and its row says why it was not replaced.
    """
    counts = {
        "written": sum(1 for o in outcomes if o.action == "written"),
        "up_to_date": sum(1 for o in outcomes if o.action in ("up-to-date", "kept")),
        "errors": sum(1 for o in outcomes if o.action == "error"),
    }
    counts["not_complete"] = len(outcomes) - sum(counts.values())
    return counts


def emitted_validity(data: bytes) -> tuple[str, ...]:
    """The validity warnings of a result file's bytes, or none when they are not a result."""
    try:
        warnings = orjson.loads(data).get("measurement_warnings") or []
    except (orjson.JSONDecodeError, AttributeError):
        return ()
    return tuple(w for w in warnings if isinstance(w, str) and is_validity_warning(w))


def validity_of(scan: Scan) -> list[str]:
    """The validity warnings of a complete experiment (``validate``), without writing it."""
    result = aggregate_scan(scan)
    return [w for w in result.measurement_warnings if is_validity_warning(w)]
