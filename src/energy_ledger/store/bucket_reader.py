"""Reading an experiment of a bucket root (or of any ``ObjectStore``): the segmented layout.

A bucket cannot append, so what a bucket root holds is the segmented layout (docs/format.md
§7): ``raw/<id>/process_<i>.segments/<n>.jsonl`` and a version-2 ``raw/<id>/process_<i>.done``.
One ``list("raw/<id>/")`` serves every process of an experiment. Each process's segments are
folded by a ``SegmentTail`` through ``segment_tail.fold_segments``, the code the folder reader uses,
each segment fetched once; its marker is fetched only when the listing shows it no larger than
the bound its segment count allows (``core.marker.max_marker_bytes``). The evidence goes to the
same completeness check, and the scan has the folder scan's shape (``store.scan.Scan``), so
aggregation and the validity checks are the folder's, unchanged.

What a bucket root cannot hold is reported, not read: an appended log,
``process_<i>.events.jsonl``, which only a file can grow (an object of a finished log would
have to be fetched whole, with no bound on its size, where a segment has 64 MiB), and
LLenergyMeasure's older ``process_<i>.json``. Each makes its process invalid, with a reason
that names the object and says what to do instead.

``list_bucket_experiments`` finds a root's experiments with one paginated ``list("raw/")``,
and hands its objects back too, so that a replay of the whole root takes each experiment's
listing out of it (``experiment_objects``) instead of listing again.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from energy_ledger.core.completeness import ProcessEvidence, check_completeness
from energy_ledger.core.marker import Marker, SegmentedMarker
from energy_ledger.core.replay import Observer
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.layout import (
    RAW_DIR,
    experiment_key,
    is_valid_experiment_id,
    log_name,
    marker_name,
)
from energy_ledger.store.objectstore import ObjectInfo, ObjectNotFound, ObjectStore
from energy_ledger.store.scan import (
    RootListing,
    Scan,
    both_layouts_reason,
    marker_from_bytes,
    sort_names,
)
from energy_ledger.store.segment_tail import MarkerReader, SegmentTail, fold_segments
from energy_ledger.store.segments import segments_prefix

__all__ = [
    "ObjectScan",
    "experiment_objects",
    "list_bucket_experiments",
    "scan_bucket_experiment",
]


@dataclass(slots=True, kw_only=True)
class ObjectScan(Scan):
    """Everything read of one experiment of an ``ObjectStore`` root (``Scan``), and where.

    Attributes:
        objects: the root's store.
        url: the experiment's location, ``<root>/raw/<experiment_id>``, for messages.
    """

    objects: ObjectStore
    url: str


def experiment_objects(listing: Sequence[ObjectInfo], experiment_id: str) -> list[ObjectInfo]:
    """The objects of one experiment in a sorted listing of more (``list("raw/")``)."""
    prefix = experiment_key(experiment_id)
    start = bisect.bisect_left(listing, prefix, key=lambda info: info.key)
    end = bisect.bisect_left(listing, prefix[:-1] + "0", key=lambda info: info.key)  # "/" + 1
    return list(listing[start:end])


def scan_bucket_experiment(
    objects: ObjectStore,
    experiment_id: str,
    *,
    listing: Sequence[ObjectInfo] | None = None,
    strict: bool = True,
    expected_processes: int | None = None,
    segment_tails: dict[int, SegmentTail] | None = None,
    observe: Callable[[int], Observer] | None = None,
) -> ObjectScan:
    """Read one experiment of an object store root and check its completeness.

    Args:
        objects: the results root's store (``store.objects.open_objects``).
        experiment_id: the experiment.
        listing: its objects, sorted by key, when the caller listed them already
            (``experiment_objects``); otherwise they are listed here, with one call.
        strict: reject corrupt lines (``True``) or skip them and go on (``False``, ``recover``).
        expected_processes: override the world size the logs declare.
        segment_tails: per-index cursors to resume from (updated in place).
        observe: for a process whose tail is made here (none given for it), the observer its
            replay cursor calls with every batch of events folded (``core.timeline``), by
            process index: the report's power timeline, as ``store.reader.scan_experiment``.

    Raises:
        UnsafePathError: ``experiment_id`` is not a valid id.
        LedgerError: the store cannot be listed, or holds nothing of the experiment.
    """
    prefix = experiment_key(experiment_id)
    url = f"{objects.url}/{prefix.rstrip('/')}"
    if listing is None:
        listing = objects.list(prefix)
    if not listing:
        raise LedgerError(f"{url}: no such experiment (no object under it)")
    files: dict[str, ObjectInfo] = {}
    folders: set[str] = set()
    for info in listing:
        name, below, _ = info.key.removeprefix(prefix).partition("/")
        if below:
            folders.add(name)
        else:
            files[name] = info
    names = sort_names(files, folders)
    tails: dict[int, SegmentTail] = {} if segment_tails is None else segment_tails
    evidence: list[ProcessEvidence] = []
    problems: list[str] = []
    for index in names.logs:
        if index in names.segmented:
            reason = both_layouts_reason(index)
        else:
            reason = (
                f"{url}/{log_name(index)} is an appended log (marker version 1), which a "
                "bucket root does not read: a bucket cannot append, so a process writes its "
                "log there as segments (process_<i>.segments/, docs/format.md §7); copy the "
                "experiment into a folder's raw/ to replay it from there"
            )
        evidence.append(ProcessEvidence(index=index, log_error=reason))
    for index in names.only_segmented:
        marker = files.get(marker_name(index))
        seg_prefix = segments_prefix(experiment_id, index)
        evidence.append(
            fold_segments(
                objects,
                listing,
                index,
                seg_prefix,
                tails,
                read_marker=None if marker is None else _marker_reader(objects, marker, url),
                strict=strict,
                observe=observe,
                where=f"{objects.url}/{seg_prefix}",
            )
        )
        problems.extend(tails[index].cursor.problems)
    for index in names.orphan_markers:
        problems.append(f"process_{index}.done has no log beside it")
    for index in names.legacy_results:
        if index not in names.logs and index not in names.segmented:
            reason = (
                f"{url}/process_{index}.json is LLenergyMeasure's older per-process result, "
                "which energy-ledger reads from a folder only; not read"
            )
            evidence.append(ProcessEvidence(index=index, log_error=reason))
    report = check_completeness(experiment_id, evidence, expected_processes)
    return ObjectScan(
        experiment_id=experiment_id,
        evidence=evidence,
        report=report,
        problems=problems,
        states={i: tails[i].cursor.state for i in names.only_segmented if i in tails},
        objects=objects,
        url=url,
    )


def _marker_reader(objects: ObjectStore, info: ObjectInfo, url: str) -> MarkerReader:
    """Reads the marker ``info`` lists, fetching nothing larger than the bound it is given."""
    name = info.key.rpartition("/")[2]

    def read(limit: int) -> tuple[Marker | SegmentedMarker | None, str | None]:
        too_large = f"cannot read {name}: larger than {limit:,} bytes; not read"
        if info.size > limit:
            return None, too_large
        try:
            data = objects.get(info.key)
        except ObjectNotFound:
            return None, None
        except LedgerError as exc:
            return None, f"cannot read {name}: {exc}"
        if len(data) > limit:
            return None, too_large
        return marker_from_bytes(data, path=f"{url}/{name}")

    return read


def list_bucket_experiments(objects: ObjectStore) -> tuple[RootListing, list[ObjectInfo]]:
    """The experiments of a root, by one paginated ``list("raw/")``; and that listing.

    A name under ``raw/`` that is not a valid experiment id is refused (never read), as in
    a folder; hidden names (``.x``) and objects directly under ``raw/`` are ignored.

    Raises:
        LedgerError: the store cannot be listed.
    """
    prefix = f"{RAW_DIR}/"
    listing = objects.list(prefix)
    ids: set[str] = set()
    rejected: set[str] = set()
    for info in listing:
        name, below, _ = info.key.removeprefix(prefix).partition("/")
        if not below or name.startswith("."):
            continue
        (ids if is_valid_experiment_id(name) else rejected).add(name)
    return (
        RootListing(
            tuple(sorted(ids)),
            tuple((name, "unsafe experiment folder name; never read") for name in sorted(rejected)),
        ),
        listing,
    )
