"""The report on a bucket root (I/O shell): pages read from and written to an ``ObjectStore``.

``energy-ledger report s3://bucket/prefix/raw/<id>`` and ``report s3://bucket/prefix`` do what
they do on a folder (``report.build``), with the same code wherever the root does not matter:
the experiment's view is built by ``build.experiment_view_of`` from ``scan_bucket_experiment``
(each process's replay feeding its power timeline, as in a folder), the comparison's rows by
``build.rows_of_results`` from the result objects, and the pages are rendered by the same
functions. So a bucket holding a folder's segments gets the folder's pages, byte for byte.
What differs is where they are written, and how:

- **Derived objects.** A page or a figure is put with ``bucket_results.put_derived(...,
  replace=True)``: created when absent, up to date (nothing written) when the object already
  holds these bytes, else replaced by compare-and-swap on the ETag read. ``Written.changed``
  says whether it was written; ``Written.page`` and ``figures`` are URLs.
- **One listing of ``aggregated/``** gives the comparison its results (a complete one
  preferred over a partial one, each fetched and turned into a row at once, so memory does not
  grow with the archive) and the experiment pages it links to. A result that cannot be read
  is a problem listed; one deleted since the listing (a partial result superseded) is skipped.
- **Inside the prefix.** Every key is built from a checked experiment id (or the fixed
  comparison names) and checked again (``check_key``), relative to the root: pages go under
  ``aggregated/`` and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from energy_ledger.core.replay import Observer
from energy_ledger.exceptions import LedgerError
from energy_ledger.pipeline_objects import split_experiment_url
from energy_ledger.report.build import (
    FIGURES_DIR,
    MAX_RESULT_BYTES,
    ResultItem,
    RootReport,
    Written,
    experiment_view_of,
    root_reports,
    rows_of_results,
    write_comparison_view,
    write_experiment_view,
)
from energy_ledger.report.model import ComparisonRow, ExperimentView
from energy_ledger.store.bucket_reader import scan_bucket_experiment
from energy_ledger.store.bucket_results import OUTPUTS_PREFIX, put_derived
from energy_ledger.store.layout import RAW_DIR, experiment_key
from energy_ledger.store.objects import open_objects
from energy_ledger.store.objectstore import ObjectInfo, ObjectNotFound, ObjectStore, check_key
from energy_ledger.store.results import parse_result_name
from energy_ledger.store.scan import Scan

__all__ = [
    "BucketOutputs",
    "bucket_comparison_rows",
    "bucket_emitted_ids",
    "bucket_experiment_page",
    "is_experiment_url",
    "open_report_root",
    "write_bucket_comparison_report",
    "write_bucket_experiment_report",
    "write_bucket_root_reports",
    "write_url_experiment_report",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BucketOutputs:
    """``build.Outputs`` into a store's ``aggregated/``: derived objects (see the module doc)."""

    objects: ObjectStore

    def _put(self, key: str, data: bytes) -> tuple[str, bool]:
        put = put_derived(self.objects, check_key(key), data, replace=True)
        return f"{self.objects.url}/{put.key}", put.changed

    def write_page(self, name: str, data: bytes) -> tuple[Path | str, bool]:
        """Put ``aggregated/<name>`` unless it holds ``data``: its URL, and whether written."""
        return self._put(f"{OUTPUTS_PREFIX}{name}", data)

    def write_figures(
        self, folder: str, files: Sequence[tuple[str, bytes]]
    ) -> tuple[Path | str, ...]:
        """Put each file as ``aggregated/figures/<folder>/<name>``: their URLs."""
        prefix = f"{OUTPUTS_PREFIX}{FIGURES_DIR}/{folder}/"
        return tuple(self._put(prefix + name, data)[0] for name, data in files)


def is_experiment_url(url: str) -> bool:
    """True when ``url`` names one experiment of a bucket root (``<root>/raw/<id>``)."""
    try:
        split_experiment_url(url)
    except LedgerError:
        return False
    return True


def bucket_experiment_page(objects: ObjectStore, experiment_id: str) -> ExperimentView:
    """Read one experiment of a store (one listing of ``raw/<id>/``) and build its page's view.

    Raises:
        LedgerError: the id is unsafe, nothing is stored under it, or no log replays.
    """
    listing = objects.list(experiment_key(experiment_id))

    def scan_with(strict: bool, observe: Callable[[int], Observer]) -> Scan:
        return scan_bucket_experiment(
            objects, experiment_id, listing=listing, strict=strict, observe=observe
        )

    return experiment_view_of(scan_with)


def write_bucket_experiment_report(
    objects: ObjectStore, experiment_id: str, *, png: bool = False, svg: bool = False
) -> Written:
    """Put ``aggregated/<id>.report.html`` (and its figures, if asked) into a store.

    Raises:
        LedgerError: see ``bucket_experiment_page``; or a put failed.
    """
    view = bucket_experiment_page(objects, experiment_id)
    return write_experiment_view(BucketOutputs(objects), view, png=png, svg=svg)


def write_url_experiment_report(url: str, *, png: bool = False, svg: bool = False) -> Written:
    """``write_bucket_experiment_report`` for ``<root>/raw/<id>`` given as a URL.

    Raises:
        LedgerError: the URL does not end with ``/raw/<id>``; or see the above.
    """
    root, experiment_id = split_experiment_url(url)
    return write_bucket_experiment_report(open_objects(root), experiment_id, png=png, svg=svg)


def _result_objects(listing: Sequence[ObjectInfo]) -> Iterator[tuple[str, bool, ObjectInfo]]:
    """``(experiment_id, partial, info)`` of each result object directly in ``aggregated/``."""
    for info in listing:
        name = info.key.removeprefix(OUTPUTS_PREFIX)
        parsed = None if "/" in name else parse_result_name(name)
        if parsed is not None:
            yield (*parsed, info)


def _results(listing: Sequence[ObjectInfo]) -> list[ObjectInfo]:
    """The result objects of an ``aggregated/`` listing, one per experiment (a complete one
    preferred over a partial one), sorted by id."""
    chosen: dict[str, ObjectInfo] = {}
    for experiment_id, _partial, info in sorted(
        _result_objects(listing), key=lambda found: (found[0], found[1])
    ):
        chosen.setdefault(experiment_id, info)  # False sorts first: the complete result
    return list(chosen.values())


def _fetch(objects: ObjectStore, results: Sequence[ObjectInfo]) -> Iterator[ResultItem]:
    for info in results:
        url = f"{objects.url}/{info.key}"
        data: bytes | str
        if info.size > MAX_RESULT_BYTES:
            data = f"{url}: larger than {MAX_RESULT_BYTES:,} bytes; not read"
        else:
            try:
                data = objects.get(info.key)
            except ObjectNotFound:
                logger.debug("%s: deleted since it was listed; not compared", url)
                continue
            except LedgerError as exc:
                data = f"{url}: cannot read: {exc}"
        yield url, data


def bucket_comparison_rows(
    objects: ObjectStore, progress: Callable[[int, int], None] | None = None
) -> tuple[list[ComparisonRow], list[str]]:
    """A row per result object (a complete one preferred over a partial), and the problems.

    Raises:
        LedgerError: ``aggregated/`` cannot be listed.
    """
    listing = objects.list(OUTPUTS_PREFIX)
    keys = {info.key for info in listing}
    results = _results(listing)
    return rows_of_results(
        _fetch(objects, results),
        lambda page: f"{OUTPUTS_PREFIX}{page}" in keys,
        total=len(results),
        progress=progress,
    )


def write_bucket_comparison_report(
    objects: ObjectStore,
    *,
    png: bool = False,
    svg: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Written:
    """Put ``aggregated/report.html`` over every result object of a store.

    Raises:
        LedgerError: the store cannot be listed, or a put failed.
    """
    rows, problems = bucket_comparison_rows(objects, progress)
    return write_comparison_view(BucketOutputs(objects), rows, problems, png=png, svg=svg)


def bucket_emitted_ids(objects: ObjectStore) -> list[str]:
    """The experiments of a store that have a result object (complete or partial), sorted.

    Raises:
        LedgerError: ``aggregated/`` cannot be listed.
    """
    return sorted({found[0] for found in _result_objects(objects.list(OUTPUTS_PREFIX))})


def write_bucket_root_reports(
    objects: ObjectStore,
    experiment_ids: Iterable[str],
    *,
    png: bool = False,
    svg: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RootReport:
    """``build.write_root_reports`` on a store: each experiment's page (one that cannot be
    made is a problem listed), then the comparison page over every result object.
    """
    return root_reports(
        lambda experiment_id: write_bucket_experiment_report(
            objects, experiment_id, png=png, svg=svg
        ),
        lambda: write_bucket_comparison_report(objects, png=png, svg=svg),
        experiment_ids,
        progress,
    )


def open_report_root(url: str) -> ObjectStore:
    """The store of a bucket results root, checked to hold something under ``aggregated/``
    or, when nothing is there, under ``raw/``.

    Raises:
        LedgerError: it holds neither (the message says what to give), or cannot be listed.
    """
    objects = open_objects(url)
    if objects.list(OUTPUTS_PREFIX) or objects.list(f"{RAW_DIR}/"):
        return objects
    raise LedgerError(
        f"{objects.url}: not a results root (no object under raw/ or aggregated/); give the "
        "root that holds raw/<experiment_id>/, or <root>/raw/<experiment_id> for one "
        "experiment's page (see docs/object-storage.md)"
    )
