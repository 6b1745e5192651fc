"""The one-shot operations on a results root that is a bucket: replay, recover, validate, status.

``pipeline``'s entry points hand a URL root here (``replay_root("s3://bucket/prefix")``), so
one API serves both kinds of root. This module does on an ``ObjectStore`` what ``pipeline``
does on a folder, with the same scan shape (``store.bucket_reader``) and the same aggregation
(``outcomes.aggregate_scan``), so a result's bytes are those a folder of the same segments
gives; its outputs are conditional writes (``store.bucket_results``) instead of files replaced
under a lock. What differs from a folder root, and why:

- **Unchanged experiments are not read.** A replay keeps what it derived in
  ``aggregated/.results.csv.sources`` (``store.bucket_sources``), as a folder root keeps its
  sources file: an experiment whose listing, result ETag and energy-ledger version are those
  recorded is up to date without a read. Otherwise (and with ``force``) up to date means equal
  bytes: the result derived is compared with the object there.
- **Serial.** ``replay_root(url, jobs=N)`` replays one experiment after another: the workers
  of ``store.parallel`` read files.
- **No time series.** The Parquet files are not written to a bucket, so a result's
  ``timeseries`` stays null there.
- **A result with other bytes is kept** unless forced (``store.bucket_results``): on a bucket
  any number of hosts may replay one root, so a result is written once and replaced only by
  compare-and-swap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from energy_ledger.core.completeness import CompletenessReport
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.outcomes import (
    Outcome,
    aggregate_scan,
    coverage,
    emitted_validity,
    not_in_csv,
)
from energy_ledger.store.bucket_reader import (
    ObjectScan,
    experiment_objects,
    list_bucket_experiments,
    scan_bucket_experiment,
)
from energy_ledger.store.bucket_results import (
    CSV_KEY,
    OUTPUTS_PREFIX,
    Put,
    put_result,
    remove_partial,
    result_key,
    sync_bucket_csv,
)
from energy_ledger.store.bucket_sources import (
    Source,
    listing_digest,
    read_bucket_sources,
    write_bucket_sources,
)
from energy_ledger.store.exporters import csv_row
from energy_ledger.store.layout import AGGREGATED_DIR, RAW_DIR, is_valid_experiment_id
from energy_ledger.store.objects import open_objects
from energy_ledger.store.objectstore import ObjectInfo, ObjectNotFound, ObjectStore, is_url
from energy_ledger.store.results import Shown, parse_result, parse_result_name
from energy_ledger.store.scan import RootListing

__all__ = [
    "ObjectRecovery",
    "count_url_experiments",
    "process_object_experiment",
    "recover_url_experiment",
    "replay_objects",
    "replay_url",
    "split_experiment_url",
    "url_results_to_show",
    "url_root_status",
    "validate_url_experiment",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ObjectRecovery:
    """The outcome of ``recover`` on a bucket root: ``pipeline.Recovery``'s fields, with the
    object written as a URL.

    Attributes:
        path: the object written, ``<root>/aggregated/<id>.partial.json`` (or ``<id>.json``).
        report: the completeness report.
        coverage: processes, requests and seconds the result covers, lines skipped.
        result: the result derived (what the object holds, unless ``kept``).
        partial: False when the experiment was complete and its full result was written.
        written: False when the object already held these bytes (or other bytes, kept).
        kept: a complete result with other bytes was there and was left as it is.
    """

    path: str
    report: CompletenessReport
    coverage: dict[str, Any]
    result: ExperimentResult
    partial: bool = True
    written: bool = True
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready values (``recover --json``), as ``Recovery`` has them."""
        return {
            "experiment_id": self.report.experiment_id,
            "path": self.path,
            "partial": self.partial,
            "written": self.written,
            "state": self.report.state,
            "reasons": list(self.report.reasons),
            "coverage": self.coverage,
        }


def _open_root(url: str) -> tuple[ObjectStore, RootListing, list[ObjectInfo]]:
    """The root's store and experiments (one listing of ``raw/``), or an error with a hint.

    Raises:
        LedgerError: nothing is under ``raw/`` (the message says what the URL looks like
            instead, and which root was probably meant), or the store cannot be used.
    """
    objects = open_objects(url)
    listing, raw = list_bucket_experiments(objects)
    if raw:
        return objects, listing, raw
    shown = objects.url
    parent, _, name = shown.rpartition("/")
    grandparent, _, parent_name = parent.rpartition("/")
    if name == RAW_DIR:
        hint = f"it is the raw/ prefix of a results root; did you mean {parent}?"
    elif name == AGGREGATED_DIR:
        hint = f"it is the aggregated/ prefix of a results root; did you mean {parent}?"
    elif parent_name == RAW_DIR and is_valid_experiment_id(name):
        hint = f"it looks like an experiment; did you mean {grandparent}?"
    else:
        hint = "a results root holds raw/<experiment_id>/ (see docs/object-storage.md)"
    raise LedgerError(f"{shown}: not a results root (no object under raw/); {hint}")


def split_experiment_url(url: str) -> tuple[str, str]:
    """``<root>/raw/<id>`` as ``(root, id)``.

    Raises:
        LedgerError: the URL does not end with ``/raw/<id>`` (the message says what to give).
    """
    trimmed = url.rstrip("/")
    root, _, rest = trimmed.rpartition(f"/{RAW_DIR}/")
    scheme, _, bucket = root.partition("://")
    if not rest or "/" in rest or not is_url(root) or not bucket or not scheme:
        raise LedgerError(
            f"{url}: not an experiment of a bucket root; give <root>/raw/<experiment_id>, "
            f"for example {trimmed}/raw/<experiment_id> when {trimmed} is the root"
        )
    return root, rest


def _open_experiment(url: str) -> tuple[ObjectStore, str]:
    root, experiment_id = split_experiment_url(url)
    return open_objects(root), experiment_id


def replay_url(
    url: str, *, force: bool = False, progress: Callable[[Outcome], None] | None = None
) -> list[Outcome]:
    """``pipeline.replay_root`` for a bucket root (see the module doc).

    Raises:
        LedgerError: ``url`` is not a results root, or its store cannot be listed.
    """
    objects, listing, raw = _open_root(url)
    return replay_objects(objects, listing, raw, force=force, progress=progress)


def replay_objects(
    objects: ObjectStore,
    listing: RootListing,
    raw: list[ObjectInfo],
    *,
    force: bool = False,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Emit every complete experiment of ``listing``, then rebuild the CSV once.

    Args:
        objects: the root's store.
        listing: its experiments (``bucket_reader.list_bucket_experiments``).
        raw: the objects that listing came from; each experiment's are taken out of it.
        force: replace results that hold other bytes.
        progress: called after each experiment.
    """
    outcomes = [Outcome(name, "rejected", "skipped", reason) for name, reason in listing.rejected]
    for outcome in outcomes:
        logger.warning("raw/%s: %s", outcome.experiment_id, outcome.detail)
    outputs = {info.key: info for info in objects.list(OUTPUTS_PREFIX)}
    known: dict[str, tuple[str, tuple[str, ...]]] = {}
    sources = {} if force else read_bucket_sources(objects)
    derived: dict[str, Source] = {}
    try:
        for experiment_id in listing.experiment_ids:
            objs = experiment_objects(raw, experiment_id)
            inputs = listing_digest(objs)
            unchanged = _unchanged(objects, experiment_id, sources.get(experiment_id), inputs,
                                   outputs, known)  # fmt: skip
            outcome = unchanged or process_object_experiment(
                objects, experiment_id, listing=objs, outputs=outputs, force=force, known=known
            )
            held = known.get(result_key(experiment_id))
            if outcome.action in ("written", "up-to-date") and held is not None:
                derived[experiment_id] = Source(inputs, held[0], held[1])
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        try:
            sync_bucket_csv(objects, known)
        except LedgerError as exc:
            failed = f"cannot rebuild {objects.url}/{CSV_KEY}: {exc}"
            logger.error("%s", failed)
            outcomes = not_in_csv(outcomes, failed)
        if derived != sources:
            write_bucket_sources(objects, derived)
    return outcomes


def _unchanged(
    objects: ObjectStore,
    experiment_id: str,
    source: Source | None,
    inputs: str,
    outputs: dict[str, ObjectInfo],
    known: dict[str, tuple[str, tuple[str, ...]]],
) -> Outcome | None:
    """Up to date without a read (``store.bucket_sources``): the same inputs, the very result
    object derived from them, no partial result beside it; ``None`` otherwise."""
    key = result_key(experiment_id)
    current = outputs.get(key)
    if source is None or source.inputs != inputs or current is None:
        return None
    if current.etag != source.result_etag or result_key(experiment_id, partial=True) in outputs:
        return None
    known[key] = (current.etag, source.row)
    return Outcome(experiment_id, "complete", "up-to-date", "", url=f"{objects.url}/{key}")


def process_object_experiment(
    objects: ObjectStore,
    experiment_id: str,
    *,
    listing: list[ObjectInfo] | None = None,
    outputs: dict[str, ObjectInfo] | None = None,
    force: bool = False,
    known: dict[str, tuple[str, tuple[str, ...]]] | None = None,
) -> Outcome:
    """Scan one experiment and emit it when complete; never raises for bad input.

    Args:
        objects: the root's store.
        experiment_id: the experiment.
        listing: its objects, when the caller listed them.
        outputs: the objects under ``aggregated/``, when the caller listed them (a result
            already there is then compared first, not sent in a create in vain).
        force: replace a result that holds other bytes.
        known: filled with the rows of the results written or found up to date, for the
            caller's CSV rebuild (``bucket_results.sync_bucket_csv``).
    """
    try:
        scan = scan_bucket_experiment(objects, experiment_id, listing=listing)
        report = scan.report
        if not report.is_complete:
            return Outcome(experiment_id, report.state, "skipped", report.error_message or "")
        try:
            put, result = _emit(scan, force=force, outputs=outputs)
        except LedgerError as exc:
            return Outcome(experiment_id, "complete", "error", f"cannot emit: {exc}")
    except LedgerError as exc:
        return Outcome(experiment_id, "invalid", "skipped", str(exc))
    url = f"{objects.url}/{put.key}"
    if put.action == "kept":
        detail = (
            f"{url} holds other bytes than this version derives (written by another version "
            "of energy-ledger?); left as it is: replay --force replaces it"
        )
        logger.warning("%s", detail)
        return Outcome(experiment_id, "complete", "kept", detail, url=url)
    if known is not None:
        known[put.key] = (put.etag, tuple(csv_row(result)))
    action = "written" if put.changed else "up-to-date"
    return Outcome(experiment_id, "complete", action, "", url=url)


def _emit(
    scan: ObjectScan, *, force: bool, outputs: dict[str, ObjectInfo] | None = None
) -> tuple[Put, ExperimentResult]:
    """Aggregate a complete experiment and write its result; remove a partial one beside it."""
    result = aggregate_scan(scan)
    objects = scan.objects
    key = result_key(scan.experiment_id)
    put = put_result(objects, result, force=force, current=(outputs or {}).get(key))
    partial = result_key(scan.experiment_id, partial=True)
    there = partial in outputs if outputs is not None else objects.head(partial) is not None
    if there:  # a partial one a later recover writes is removed by the next replay
        remove_partial(objects, scan.experiment_id)
    return put, result


def count_url_experiments(url: str) -> int:
    """``pipeline.count_experiments`` for a bucket root: one listing of ``raw/``."""
    return len(_open_root(url)[1].experiment_ids)


def recover_url_experiment(url: str) -> ObjectRecovery:
    """``pipeline.recover_experiment`` for ``<root>/raw/<id>`` on a bucket.

    The partial result is ``<root>/aggregated/<id>.partial.json``, replaced by compare-and-
    swap when its bytes change. An experiment that is complete after all (and has no corrupt
    line) gets its full result instead, exactly as ``replay`` writes it (created once), and
    the partial result is deleted. The CSV is rebuilt after either.

    Raises:
        LedgerError: the URL is not ``<root>/raw/<id>``, nothing is there, or no process log
            can be replayed.
    """
    objects, experiment_id = _open_experiment(url)
    scan = scan_bucket_experiment(objects, experiment_id, strict=False)
    if scan.report.is_complete and not scan.problems:
        strict = scan_bucket_experiment(objects, experiment_id)
        if strict.report.is_complete:
            put, result = _emit(strict, force=False)
            _sync_after(objects, put, result)
            return ObjectRecovery(
                f"{objects.url}/{put.key}",
                strict.report,
                coverage(strict),
                result,
                partial=False,
                written=put.changed,
                kept=put.action == "kept",
            )
    result = aggregate_scan(scan, partial=True)
    put = put_result(objects, result)
    _sync_after(objects, put, result)
    return ObjectRecovery(
        f"{objects.url}/{put.key}", scan.report, coverage(scan), result, written=put.changed
    )


def _sync_after(objects: ObjectStore, put: Put, result: ExperimentResult) -> None:
    known = {} if put.action == "kept" else {put.key: (put.etag, tuple(csv_row(result)))}
    sync_bucket_csv(objects, known)


def validate_url_experiment(url: str, expected_processes: int | None = None) -> ObjectScan:
    """``pipeline.validate_experiment`` for ``<root>/raw/<id>`` on a bucket (strict)."""
    objects, experiment_id = _open_experiment(url)
    return scan_bucket_experiment(objects, experiment_id, expected_processes=expected_processes)


def url_root_status(url: str) -> list[Outcome]:
    """``pipeline.root_status`` for a bucket root: every experiment's state, nothing written."""
    objects, listing, raw = _open_root(url)
    outputs = {info.key for info in objects.list(OUTPUTS_PREFIX)}
    rows = [Outcome(name, "rejected", "-", reason) for name, reason in listing.rejected]
    for experiment_id in listing.experiment_ids:
        key = result_key(experiment_id)
        try:
            scan = scan_bucket_experiment(
                objects, experiment_id, listing=experiment_objects(raw, experiment_id)
            )
        except LedgerError as exc:
            rows.append(Outcome(experiment_id, "invalid", "-", str(exc)))
            continue
        emitted = key in outputs
        rows.append(
            Outcome(
                experiment_id,
                scan.report.state,
                "emitted" if emitted else "not emitted",
                scan.report.error_message or "",
                None,
                _emitted_validity(objects, key) if emitted else (),
                url=f"{objects.url}/{key}" if emitted else None,
            )
        )
    return rows


def _emitted_validity(objects: ObjectStore, key: str) -> tuple[str, ...]:
    try:
        return emitted_validity(objects.get(key))
    except LedgerError:
        return ()


def url_results_to_show(url: str) -> Shown:
    """``store.results.results_to_show`` for a bucket: one result object
    (``<root>/aggregated/<id>.json``), or one per experiment of a root, a complete result
    preferred over a partial one, each fetched once.

    Raises:
        LedgerError: the URL names no result and no root with results, or the one result
            named cannot be read (the message names it).
    """
    trimmed = url.rstrip("/")
    root, sep, name = trimmed.rpartition(f"/{AGGREGATED_DIR}/")
    if sep and parse_result_name(name) is not None and is_url(root):
        objects = open_objects(root)
        key = f"{OUTPUTS_PREFIX}{name}"
        try:
            data = objects.get(key)
        except ObjectNotFound:
            raise LedgerError(f"{trimmed}: no such result object") from None
        return Shown([(trimmed, parse_result(data, trimmed))])
    objects = open_objects(trimmed)
    chosen: dict[str, tuple[bool, str]] = {}
    for info in objects.list(OUTPUTS_PREFIX):  # sorted: <id>.json before <id>.partial.json
        parsed = parse_result_name(info.key.removeprefix(OUTPUTS_PREFIX))
        if parsed is not None and parsed[0] not in chosen:
            chosen[parsed[0]] = (parsed[1], info.key)
    if not chosen:
        raise LedgerError(
            f"{objects.url}: no result objects under aggregated/ (run `energy-ledger replay "
            f"{objects.url}` first, or give the root that holds raw/ and aggregated/)"
        )
    shown = Shown()
    for _, key in (chosen[e] for e in sorted(chosen)):
        where = f"{objects.url}/{key}"
        try:
            shown.results.append((where, parse_result(objects.get(key), where)))
        except ObjectNotFound:
            continue  # a partial result superseded since the listing
        except LedgerError as exc:
            shown.problems.append(str(exc))
    return shown
