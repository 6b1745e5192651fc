"""The one code path from an experiment folder to its outputs, shared by ``replay`` and ``watch``.

``process_experiment`` scans an experiment, and when it is complete aggregates it and writes
``aggregated/<id>.json`` and its CSV row (atomically, and only when the bytes change, so a second
run writes nothing). ``replay_root`` does that for every experiment under a root;
``recover_experiment`` writes an explicitly partial result for a crashed run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.completeness import CompletenessReport
from energy_ledger.core.validity import is_validity_warning
from energy_ledger.exceptions import IncompleteExperimentError, LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.store.atomic import write_if_changed
from energy_ledger.store.exporters import result_to_json_bytes, upsert_csv
from energy_ledger.store.layout import ResultsLayout, layout_of_experiment_dir
from energy_ledger.store.reader import (
    ExperimentScan,
    LogTail,
    list_experiments,
    newest_mtime,
    scan_experiment,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one experiment.

    Attributes:
        experiment_id: the folder name.
        state: ``complete``, ``pending``, ``failed``, ``invalid`` or ``rejected``.
        action: ``written``, ``up-to-date``, ``skipped`` (not complete) or ``error`` (complete,
            but its result could not be written).
        detail: why (the completeness reasons, or the error).
        path: the result file, when there is one.
        warnings: the emitted result's validity warnings (weak measurements, not blockers).
    """

    experiment_id: str
    state: str
    action: str
    detail: str = ""
    path: Path | None = None
    warnings: tuple[str, ...] = ()


def coverage(scan: ExperimentScan) -> dict[str, Any]:
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


def aggregate_scan(scan: ExperimentScan, *, partial: bool = False) -> ExperimentResult:
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


def emit(scan: ExperimentScan) -> tuple[Path, bool]:
    """Aggregate a complete experiment and write its JSON and CSV row; True when bytes changed."""
    result = aggregate_scan(scan)
    path = scan.layout.result_path(scan.experiment_id)
    # The CSV row first, the JSON last: an existing, newer JSON then means both were written,
    # so a failed CSV write is retried by the next replay.
    changed = upsert_csv([result], scan.layout.csv_path)
    changed = write_if_changed(path, result_to_json_bytes(result)) or changed
    return path, changed


def up_to_date(layout: ResultsLayout, experiment_id: str) -> bool:
    """True when the result exists and is newer than every file of the experiment."""
    try:
        result_mtime = layout.result_path(experiment_id).stat().st_mtime
    except OSError:
        return False
    newest = newest_mtime(layout.experiment_dir(experiment_id))
    return newest is not None and result_mtime >= newest


def process_experiment(
    layout: ResultsLayout,
    experiment_id: str,
    *,
    tails: dict[int, LogTail] | None = None,
    force: bool = False,
) -> Outcome:
    """Scan one experiment and emit it when complete; never raises for bad input."""
    if not force and tails is None and up_to_date(layout, experiment_id):
        return Outcome(
            experiment_id, "complete", "up-to-date", "", layout.result_path(experiment_id)
        )
    try:
        scan = scan_experiment(layout.experiment_dir(experiment_id), layout=layout, tails=tails)
    except LedgerError as exc:
        return Outcome(experiment_id, "invalid", "skipped", str(exc))
    report = scan.report
    if not report.is_complete:
        return Outcome(experiment_id, report.state, "skipped", report.error_message or "")
    try:
        path, changed = emit(scan)
    except LedgerError as exc:
        return Outcome(experiment_id, "complete", "error", f"cannot emit: {exc}")
    return Outcome(experiment_id, "complete", "written" if changed else "up-to-date", "", path)


def replay_root(
    root: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Aggregate every complete experiment under ``root`` that has no up-to-date result.

    Args:
        root: the results root.
        force: replay even experiments whose result looks up to date.
        progress: called after each experiment (the CLI draws a progress bar with it).
    """
    layout = ResultsLayout.at(root)
    if not layout.root.is_dir():
        raise LedgerError(f"{layout.root}: no such results folder")
    listing = list_experiments(layout)
    outcomes = [Outcome(name, "rejected", "skipped", reason) for name, reason in listing.rejected]
    for outcome in outcomes:
        logger.warning("raw/%s: %s", outcome.experiment_id, outcome.detail)
    for experiment_id in listing.experiment_ids:
        outcome = process_experiment(layout, experiment_id, force=force)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes


def count_experiments(root: str | os.PathLike[str]) -> int:
    """How many experiment folders ``replay_root`` will look at."""
    return len(list_experiments(ResultsLayout.at(root)).experiment_ids)


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of ``recover``: the partial result written and the report behind it."""

    path: Path
    report: CompletenessReport
    coverage: dict[str, Any]
    result: ExperimentResult


def recover_experiment(experiment_dir: str | os.PathLike[str]) -> Recovery:
    """Aggregate whatever a crashed or partial run left into ``<id>.partial.json``.

    Corrupt lines are skipped (and listed), torn last lines ignored, missing markers and
    missing processes reported in the result's ``aggregation.completeness``.

    Raises:
        LedgerError: the folder is unsafe or holds no replayable process log.
    """
    layout, experiment_id = layout_of_experiment_dir(Path(experiment_dir))
    scan = scan_experiment(experiment_dir, layout=layout, strict=False)
    result = aggregate_scan(scan, partial=True)
    path = layout.result_path(experiment_id, partial=True)
    write_if_changed(path, result_to_json_bytes(result))
    return Recovery(path, scan.report, coverage(scan), result)


def validate_experiment(
    experiment_dir: str | os.PathLike[str], expected_processes: int | None = None
) -> ExperimentScan:
    """Scan an experiment folder (strictly) for ``validate``; the report is ``scan.report``."""
    layout, _experiment_id = layout_of_experiment_dir(Path(experiment_dir))
    return scan_experiment(
        experiment_dir,
        layout=layout,
        expected_processes=expected_processes,
    )


def root_status(root: str | os.PathLike[str]) -> list[Outcome]:
    """The state of every experiment under ``root``, without writing anything."""
    layout = ResultsLayout.at(root)
    if not layout.root.is_dir():
        raise LedgerError(f"{layout.root}: no such results folder")
    listing = list_experiments(layout)
    rows = [Outcome(name, "rejected", "-", reason) for name, reason in listing.rejected]
    for experiment_id in listing.experiment_ids:
        result = layout.result_path(experiment_id)
        try:
            scan = scan_experiment(layout.experiment_dir(experiment_id), layout=layout)
        except LedgerError as exc:
            rows.append(Outcome(experiment_id, "invalid", "-", str(exc)))
            continue
        emitted = "emitted" if result.exists() else "not emitted"
        rows.append(
            Outcome(
                experiment_id,
                scan.report.state,
                emitted,
                scan.report.error_message or "",
                result if result.exists() else None,
                _emitted_validity(result),
            )
        )
    return rows


def _emitted_validity(path: Path) -> tuple[str, ...]:
    """The validity warnings of an emitted result, or none when it cannot be read."""
    try:
        warnings = orjson.loads(path.read_bytes()).get("measurement_warnings") or []
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return ()
    return tuple(w for w in warnings if isinstance(w, str) and is_validity_warning(w))


def validity_of(scan: ExperimentScan) -> list[str]:
    """The validity warnings of a complete experiment (``validate``), without writing it."""
    result = aggregate_scan(scan)
    return [w for w in result.measurement_warnings if is_validity_warning(w)]
