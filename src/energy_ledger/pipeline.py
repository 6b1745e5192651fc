"""The one code path from an experiment folder to its outputs, shared by ``replay`` and ``watch``.

``process_experiment`` scans an experiment, and when it is complete aggregates it, writes
``aggregated/<id>.json`` (atomically, and only when the bytes change, so a second run writes
nothing) and rebuilds ``aggregated/results.csv`` from the result files (``store.table``). Both
happen under the outputs lock (``store.lock``), which ``replay``, ``recover`` and the daemon all
take through here, so concurrent runs on one root never lose a CSV row. ``replay_root`` does
that for every experiment under a root, rebuilding the CSV once at the end;
``recover_experiment`` writes an explicitly partial result for a crashed run (or the full result
when the experiment turns out complete). Every output path is checked to be a real file in a
real ``aggregated/`` folder inside the root before anything is written.

A root spelled as a bucket URL (``s3://``, ``gs://``, ``az://``) is handed to
``pipeline_objects`` by ``replay_root``, ``count_experiments``, ``root_status``,
``recover_experiment`` and ``validate_experiment``, so each takes either kind of root; its
outputs are conditional writes there instead of files under a lock. ``Outcome``,
``aggregate_scan`` and ``coverage`` live in ``outcomes``, shared by both, and are re-exported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from energy_ledger import pipeline_objects
from energy_ledger.core.completeness import CompletenessReport
from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.models import ExperimentResult
from energy_ledger.models.results import is_partial
from energy_ledger.outcomes import (
    Outcome,
    aggregate_scan,
    coverage,
    emitted_validity,
    not_in_csv,
    tally,
    validity_of,
)
from energy_ledger.pipeline_objects import ObjectRecovery
from energy_ledger.store import parallel
from energy_ledger.store.atomic import fsync_dir
from energy_ledger.store.bucket_reader import ObjectScan
from energy_ledger.store.exporters import csv_row, write_result_json
from energy_ledger.store.layout import ResultsLayout, experiment_location, results_root
from energy_ledger.store.lock import outputs_lock
from energy_ledger.store.objectstore import is_url
from energy_ledger.store.parallel import log_bytes, log_paths, prefetch_tails, worker_pool
from energy_ledger.store.parquet import parquet_available
from energy_ledger.store.reader import ExperimentScan, LogTail, list_experiments, scan_experiment
from energy_ledger.store.series import SeriesRecorder, write_series
from energy_ledger.store.table import (
    Fresh,
    current_source,
    fresh_entry,
    inputs_digest,
    sync_table,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ObjectRecovery",
    "Outcome",
    "Recovery",
    "aggregate_scan",
    "count_experiments",
    "coverage",
    "emit",
    "emit_result",
    "process_experiment",
    "recover_experiment",
    "replay_root",
    "root_status",
    "sync_csv",
    "tally",
    "up_to_date",
    "validate_experiment",
    "validity_of",
    "write_result",
]


def write_result(
    layout: ResultsLayout,
    result: ExperimentResult,
    *,
    inputs: str | None = None,
    pending: dict[str, Fresh] | None = None,
) -> tuple[Path, bool]:
    """Write a result file and bring the CSV in step, under the outputs lock.

    A complete result replaces a ``<id>.partial.json`` left beside it. With ``pending`` the
    CSV rebuild is left to the caller (``replay_root`` does it once for the whole root): the
    file's row is added to ``pending`` instead.

    Args:
        layout: the results root.
        result: what to write.
        inputs: digest of the experiment folder the result was derived from
            (``table.inputs_digest``, taken before the scan), recorded for ``up_to_date``.
        pending: rows waiting for the caller's CSV rebuild.

    Returns:
        The result file, and True when its bytes changed.

    Raises:
        UnsafePathError: ``aggregated/`` or the file is a symbolic link (nothing is written).
        LedgerError: a write failed.
    """
    partial = is_partial(result)
    path = layout.result_path(result.experiment_id, partial=partial)
    with outputs_lock(layout):
        changed = write_result_json(layout.check_output_file(path), result)
        if not partial:
            _remove_stale_partial(layout, result.experiment_id)
        entry = fresh_entry(path, csv_row(result), None if partial else inputs)
        fresh = {path.name: entry} if entry is not None else {}
        if pending is None:
            sync_table(layout, fresh)
        else:
            pending.update(fresh)
    return path, changed


def _remove_stale_partial(layout: ResultsLayout, experiment_id: str) -> None:
    """Remove ``<id>.partial.json``: the complete result written beside it supersedes it."""
    stale = layout.result_path(experiment_id, partial=True)
    if not os.path.lexists(stale):
        return
    layout.check_output_file(stale)
    try:
        stale.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LedgerError(f"cannot remove the stale {stale}: {exc.strerror or exc}") from exc
    fsync_dir(stale.parent)
    logger.info("removed %s: the complete result supersedes it", stale)


def emit(
    scan: ExperimentScan,
    *,
    inputs: str | None = None,
    pending: dict[str, Fresh] | None = None,
    recorder: SeriesRecorder | None = None,
) -> tuple[Path, bool]:
    """Aggregate a complete experiment, write its JSON and its CSV row; True when bytes changed.

    With pyarrow installed (the ``parquet`` extra) the time series and the request table are
    written first (``store.series``), from ``recorder`` when the scan fed one, else by reading
    the logs once more, and the result names the time series in ``timeseries``: the JSON is
    written last, so a result never names a file that is not there. See ``write_result`` for
    ``inputs`` and ``pending``.
    """
    _result, path, changed = emit_result(scan, inputs=inputs, pending=pending, recorder=recorder)
    return path, changed


def emit_result(
    scan: ExperimentScan,
    *,
    inputs: str | None = None,
    pending: dict[str, Fresh] | None = None,
    recorder: SeriesRecorder | None = None,
) -> tuple[ExperimentResult, Path, bool]:
    """``emit``, also returning the result as written (``recover`` reports it)."""
    result = aggregate_scan(scan)
    layout = scan.layout
    if parquet_available():
        # Outside the outputs lock: these files are the experiment's own, replaced atomically
        # with bytes that depend only on its logs, so concurrent writers cannot disagree; the
        # lock serialises the result and the CSV, which it must.
        # Without a recorder (the scan's tails were read before), the logs are read once more.
        files = (
            recorder.write(scan)
            if recorder is not None
            else write_series(scan.directory, layout=layout)
        )
        if files.timeseries is not None:
            result = result.model_copy(update={"timeseries": files.timeseries.name})
    path, changed = write_result(layout, result, inputs=inputs, pending=pending)
    return result, path, changed


def up_to_date(layout: ResultsLayout, experiment_id: str) -> bool:
    """True when the result, its CSV row and the experiment folder are all as last derived.

    Every test is an equality, none an ordering of timestamps (which coarse mtime granularity
    can tie): the result file and ``results.csv`` are the very files the CSV's sources file
    describes (inode, size, mtimes), and the experiment folder's listing (names, sizes, mtimes
    in ns) has the digest recorded when the result was derived; an append always changes a
    size. A missing or rebuilt-by-hand CSV, a result with no recorded inputs (written by an
    older version) or a stale partial result beside it is not up to date.
    """
    try:
        path = layout.result_path(experiment_id)
        directory = layout.experiment_dir(experiment_id)
    except UnsafePathError:
        return False
    source = current_source(layout, path.name)
    if source is None or source.inputs is None:
        return False
    if os.path.lexists(layout.result_path(experiment_id, partial=True)):
        return False
    return inputs_digest(layout, directory) == source.inputs


def process_experiment(
    layout: ResultsLayout,
    experiment_id: str,
    *,
    tails: dict[int, LogTail] | None = None,
    force: bool = False,
    pending: dict[str, Fresh] | None = None,
) -> Outcome:
    """Scan one experiment and emit it when complete; never raises for bad input.

    ``pending`` defers the CSV rebuild to the caller (see ``write_result``).
    """
    if not force and tails is None and up_to_date(layout, experiment_id):
        return Outcome(
            experiment_id, "complete", "up-to-date", "", layout.result_path(experiment_id)
        )
    recorder: SeriesRecorder | None = None
    try:
        directory = layout.experiment_dir(experiment_id)
        # Taken before the scan: a log that grows during it makes the next check fail, never
        # pass, so the worst case is one needless rescan.
        inputs = inputs_digest(layout, directory)
        if tails is None and parquet_available():
            # Read from the start here: the series come from the same replay as the result.
            recorder = SeriesRecorder(layout, experiment_id)
        with recorder if recorder is not None else contextlib.nullcontext():
            scan = scan_experiment(
                directory,
                layout=layout,
                tails=tails,
                observe=recorder.observe if recorder is not None else None,
            )
            report = scan.report
            if not report.is_complete:
                return Outcome(experiment_id, report.state, "skipped", report.error_message or "")
            try:
                path, changed = emit(scan, inputs=inputs, pending=pending, recorder=recorder)
            except LedgerError as exc:
                return Outcome(experiment_id, "complete", "error", f"cannot emit: {exc}")
    except LedgerError as exc:
        return Outcome(experiment_id, "invalid", "skipped", str(exc))
    return Outcome(experiment_id, "complete", "written" if changed else "up-to-date", "", path)


def sync_csv(layout: ResultsLayout, pending: dict[str, Fresh] | None = None) -> None:
    """Rebuild ``results.csv`` under the outputs lock (nothing at all when there are no outputs).

    Raises:
        LedgerError: the CSV cannot be written (or ``UnsafePathError``: a symbolic link).
    """
    if not pending and not os.path.lexists(layout.aggregated_dir):
        return
    with outputs_lock(layout):
        sync_table(layout, pending)


def replay_root(
    root: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: Callable[[Outcome], None] | None = None,
    jobs: int = 1,
) -> list[Outcome]:
    """Aggregate every complete experiment under ``root`` that has no up-to-date result.

    The CSV is rebuilt first (a deleted one comes back, a foreign one is moved aside) and once
    more at the end with the rows of the results written or checked.

    Args:
        root: the results root (the folder holding ``raw/``), or a bucket URL
            (``pipeline_objects.replay_url``: serial, whatever ``jobs`` says).
        force: replay even experiments whose result looks up to date (on a bucket: replace
            a result that holds other bytes).
        progress: called after each experiment (the CLI draws a progress bar with it).
        jobs: worker processes (``store.parallel``): with at least as many experiments to
            replay as jobs, whole experiments go to the workers; with fewer, each one's logs
            do. The outputs are the same bytes as with ``jobs=1``.

    Raises:
        LedgerError: ``root`` is not a results root (the message says what was meant), or its
            ``aggregated/`` folder or CSV cannot be used (``UnsafePathError`` for a link).
    """
    if is_url(root):
        return pipeline_objects.replay_url(str(root), force=force, progress=progress)
    layout = results_root(root)
    layout.outputs_dir()  # a linked aggregated/ is refused before anything is read or written
    listing = list_experiments(layout)
    outcomes = [Outcome(name, "rejected", "skipped", reason) for name, reason in listing.rejected]
    for outcome in outcomes:
        logger.warning("raw/%s: %s", outcome.experiment_id, outcome.detail)
    try:
        sync_csv(layout)
    except UnsafePathError:
        raise
    except LedgerError as exc:
        logger.error("%s (retried after the replay)", exc)  # e.g. a full disk: said below
    pending: dict[str, Fresh] = {}
    try:
        ids = listing.experiment_ids
        if jobs > 1 and ids:
            outcomes += _replay_parallel(layout, ids, force, pending, progress, jobs)
        else:
            for experiment_id in ids:
                outcome = process_experiment(layout, experiment_id, force=force, pending=pending)
                outcomes.append(outcome)
                if progress is not None:
                    progress(outcome)
    finally:
        try:
            sync_csv(layout, pending)
        except LedgerError as exc:
            failed = f"cannot rebuild {layout.csv_path}: {exc}"
            logger.error("%s", failed)
            outcomes = not_in_csv(outcomes, failed)
    return outcomes


def _experiment_job(root: str, experiment_id: str, force: bool) -> tuple[Outcome, dict[str, Fresh]]:
    """One experiment in a worker process: the serial code path, its CSV row handed back."""
    pending: dict[str, Fresh] = {}
    outcome = process_experiment(
        ResultsLayout.at(root), experiment_id, force=force, pending=pending
    )
    return outcome, pending


def _replay_parallel(
    layout: ResultsLayout,
    ids: Sequence[str],
    force: bool,
    pending: dict[str, Fresh],
    progress: Callable[[Outcome], None] | None,
    jobs: int,
) -> list[Outcome]:
    """``replay_root``'s loop on ``jobs`` worker processes (see ``store.parallel``)."""
    done: dict[str, Outcome] = {}
    todo = []
    for experiment_id in ids:
        if not force and up_to_date(layout, experiment_id):
            done[experiment_id] = Outcome(
                experiment_id, "complete", "up-to-date", "", layout.result_path(experiment_id)
            )
            if progress is not None:
                progress(done[experiment_id])
        else:
            todo.append(experiment_id)
    if not todo:
        return [done[i] for i in ids]
    by_experiment = len(todo) >= jobs
    folders = [layout.experiment_dir(i) for i in todo]
    workers = jobs if by_experiment else min(jobs, max(len(log_paths(d)) for d in folders))
    few = len(todo) < parallel.MIN_PARALLEL_EXPERIMENTS
    if few and sum(map(log_bytes, folders)) < parallel.MIN_PARALLEL_BYTES:
        workers = 1  # less to do than starting the workers costs
    if not by_experiment and parquet_available():
        # The series need a read of every log in this process after the workers' (the tails
        # come back folded, without an observer), which costs more than the workers save.
        workers = 1
    if workers > 1:
        layout.outputs_dir(create=True)  # so that each worker's scan feeds its series recorder
        try:
            _share_out(layout, todo, by_experiment, workers, done, pending, progress)
        except BrokenProcessPool as exc:  # a worker died (killed, out of memory): go on here
            logger.warning("a replay worker died (%s); replaying the rest in this process", exc)
    for experiment_id in todo:  # one log to read, or what a dead pool left
        if experiment_id not in done:
            done[experiment_id] = process_experiment(
                layout, experiment_id, force=True, pending=pending
            )
            if progress is not None:
                progress(done[experiment_id])
    return [done[i] for i in ids]


def _share_out(
    layout: ResultsLayout,
    todo: list[str],
    by_experiment: bool,
    workers: int,
    done: dict[str, Outcome],
    pending: dict[str, Fresh],
    progress: Callable[[Outcome], None] | None,
) -> None:
    """Replay ``todo`` on ``workers`` processes, filling ``done`` and ``pending``."""
    with worker_pool(workers) as pool:
        if by_experiment:
            futures = [pool.submit(_experiment_job, str(layout.root), i, True) for i in todo]
            for future in futures:
                outcome, fresh = future.result()
                done[outcome.experiment_id] = outcome
                pending.update(fresh)
                if progress is not None:
                    progress(outcome)
        else:
            for experiment_id in todo:
                tails = prefetch_tails(pool, layout.experiment_dir(experiment_id))
                outcome = process_experiment(
                    layout, experiment_id, tails=tails, force=True, pending=pending
                )
                done[experiment_id] = outcome
                if progress is not None:
                    progress(outcome)


def count_experiments(root: str | os.PathLike[str]) -> int:
    """How many experiment folders ``replay_root`` will look at (a folder or a bucket URL)."""
    if is_url(root):
        return pipeline_objects.count_url_experiments(str(root))
    return len(list_experiments(results_root(root)).experiment_ids)


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of ``recover``: the result written and the report behind it.

    Attributes:
        path: the file written (``<id>.partial.json``, or ``<id>.json`` when complete).
        report: the completeness report.
        coverage: processes, requests and seconds the result covers, lines skipped.
        result: the result written.
        partial: False when the experiment was complete and its full result was written.
        written: False when the file already held these bytes.
    """

    path: Path
    report: CompletenessReport
    coverage: dict[str, Any]
    result: ExperimentResult
    partial: bool = True
    written: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready values (``recover --json``)."""
        return {
            "experiment_id": self.report.experiment_id,
            "path": str(self.path),
            "partial": self.partial,
            "written": self.written,
            "state": self.report.state,
            "reasons": list(self.report.reasons),
            "coverage": self.coverage,
        }


@overload
def recover_experiment(experiment_dir: os.PathLike[str]) -> Recovery: ...
@overload
def recover_experiment(experiment_dir: str) -> Recovery | ObjectRecovery: ...
def recover_experiment(experiment_dir: str | os.PathLike[str]) -> Recovery | ObjectRecovery:
    """Aggregate whatever a crashed or partial run left into ``<id>.partial.json``.

    Corrupt lines are skipped (and listed), torn last lines ignored, missing markers and
    missing processes reported in the result's ``aggregation.completeness``. An experiment that
    is complete after all (and has no corrupt line) gets its full result instead, exactly as
    ``replay`` writes it, and any older partial result is removed. A bucket URL
    (``<root>/raw/<id>``) gives an ``ObjectRecovery`` (``pipeline_objects``).

    Raises:
        LedgerError: the folder is unsafe, not an experiment folder (a results root, say: the
            message says which folder was meant) or holds no replayable process log.
    """
    if is_url(experiment_dir):
        return pipeline_objects.recover_url_experiment(str(experiment_dir))
    layout, _experiment_id = experiment_location(experiment_dir)
    layout.outputs_dir()
    directory = Path(os.path.abspath(experiment_dir))
    inputs = inputs_digest(layout, directory)
    scan = scan_experiment(directory, layout=layout, strict=False)
    if scan.report.is_complete and not scan.problems:
        strict = scan_experiment(directory, layout=layout)
        if strict.report.is_complete:
            result, path, written = emit_result(strict, inputs=inputs)
            return Recovery(path, strict.report, coverage(strict), result, False, written)
    result = aggregate_scan(scan, partial=True)
    path, written = write_result(layout, result)
    return Recovery(path, scan.report, coverage(scan), result, True, written)


@overload
def validate_experiment(
    experiment_dir: os.PathLike[str], expected_processes: int | None = None
) -> ExperimentScan: ...
@overload
def validate_experiment(
    experiment_dir: str, expected_processes: int | None = None
) -> ExperimentScan | ObjectScan: ...
def validate_experiment(
    experiment_dir: str | os.PathLike[str], expected_processes: int | None = None
) -> ExperimentScan | ObjectScan:
    """Scan an experiment folder (strictly) for ``validate``; the report is ``scan.report``.

    A bucket URL (``<root>/raw/<id>``) is scanned as objects (``pipeline_objects``).
    """
    if is_url(experiment_dir):
        return pipeline_objects.validate_url_experiment(str(experiment_dir), expected_processes)
    layout, _experiment_id = experiment_location(experiment_dir)
    return scan_experiment(
        experiment_dir,
        layout=layout,
        expected_processes=expected_processes,
    )


def root_status(root: str | os.PathLike[str]) -> list[Outcome]:
    """The state of every experiment under ``root`` (a folder or a bucket URL), without
    writing anything.

    Raises:
        LedgerError: ``root`` is not a results root, or its ``aggregated/`` is a link.
    """
    if is_url(root):
        return pipeline_objects.url_root_status(str(root))
    layout = results_root(root)
    layout.outputs_dir()
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
        return emitted_validity(path.read_bytes())
    except OSError:
        return ()
