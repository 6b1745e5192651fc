"""Writing the report pages into ``aggregated/`` (I/O shell).

``write_experiment_report`` reads an experiment folder once: the same replay that folds the
logs for the result feeds each process's ``TimelineBuilder`` (``ReplayCursor.observer``), so
the power figure shows exactly the events the numbers come from. The result is aggregated as
``replay`` would write it when the experiment is complete, and as ``recover`` would write it
(explicitly partial, corrupt lines skipped) when it is not, so a report can be made for a run
that is still going or that crashed; the page says which. Its numbers are read from the
result's own JSON bytes (``report.digest``), the same bytes ``aggregated/<id>.json`` holds.

``write_comparison_report`` reads every result file of ``aggregated/`` (one at a time, each
turned into a table row at once, so memory does not grow with the archive) and writes
``aggregated/report.html``.

Pages and figure files are written atomically and only when their bytes change; every path is
checked to be a regular file directly in the root's real ``aggregated/`` folder (figure files:
directly in ``aggregated/figures/<id>/``), so nothing is written through a link or outside the
root.

What does not depend on where a root is (building a page's view from a scan, a comparison row
from a result's bytes, rendering and naming the files) is shared with a bucket root
(``report.bucket``) through ``experiment_view_of``, ``rows_of_results`` and an ``Outputs``,
so a bucket holding a folder's segments gets the folder's pages, byte for byte.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from energy_ledger._version import __version__
from energy_ledger.core.replay import Observer
from energy_ledger.core.timeline import ProcessTimeline, TimelineBuilder
from energy_ledger.exceptions import FormatError, LedgerError, UnsafePathError
from energy_ledger.outcomes import aggregate_scan
from energy_ledger.report.digest import decode_digest
from energy_ledger.report.figures import FigureOut, experiment_figures
from energy_ledger.report.html import render_comparison, render_experiment
from energy_ledger.report.model import (
    ComparisonRow,
    ExperimentView,
    comparison_row,
    comparison_view,
    experiment_view,
)
from energy_ledger.report.scatter import comparison_figures
from energy_ledger.store.atomic import write_if_changed
from energy_ledger.store.exporters import result_to_json_bytes
from energy_ledger.store.files import read_regular
from energy_ledger.store.layout import (
    ResultsLayout,
    experiment_location,
    real_folder,
    results_root,
)
from energy_ledger.store.reader import scan_experiment
from energy_ledger.store.results import ResultFile, list_results, preferred
from energy_ledger.store.scan import Scan

logger = logging.getLogger(__name__)

REPORT_SUFFIX = ".report.html"
COMPARISON_NAME = "report.html"
FIGURES_DIR = "figures"
COMPARISON_FIGURES = "_comparison"
"""The comparison page's figure folder: an experiment id cannot start with "_"."""
MAX_RESULT_BYTES = 1 << 30
"""The largest result file the comparison reads (a result holds every latency)."""

Scanner = Callable[[bool, Callable[[int], Observer]], Scan]
"""Scans one experiment: ``(strict, observe)`` -> the scan, each new replay cursor's observer
made by ``observe(process_index)`` (``scan_experiment``'s and ``scan_bucket_experiment``'s
arguments of those names)."""
ResultItem = tuple[str, bytes | str]
"""One result file of a comparison: its name for messages, and its bytes or why it could not
be read."""


@dataclass(frozen=True, slots=True)
class Written:
    """What a report run wrote: the page, the figure files, whether the page changed, whether
    it shows a partial result, and the result files that could not be read (comparison).

    ``page`` and ``figures`` are paths on a folder root, URLs on a bucket root."""

    page: Path | str
    changed: bool
    figures: tuple[Path | str, ...] = ()
    problems: tuple[str, ...] = field(default=())
    partial: bool = False


class Outputs(Protocol):
    """Where a root's pages go: a folder's ``aggregated/`` (``FolderOutputs``) or a bucket's
    (``report.bucket.BucketOutputs``)."""

    def write_page(self, name: str, data: bytes) -> tuple[Path | str, bool]:
        """Write ``aggregated/<name>`` unless it holds ``data``: where, and whether written."""
        ...

    def write_figures(
        self, folder: str, files: Sequence[tuple[str, bytes]]
    ) -> tuple[Path | str, ...]:
        """Write each ``(name, data)`` as ``aggregated/figures/<folder>/<name>``; where each
        went."""
        ...


def page_name(experiment_id: str) -> str:
    """The experiment page's file name in ``aggregated/``."""
    return f"{experiment_id}{REPORT_SUFFIX}"


def _generated_by() -> str:
    return f"energy-ledger {__version__}"


def _observed(scan_with: Scanner, strict: bool) -> tuple[Scan, dict[int, TimelineBuilder]]:
    builders: dict[int, TimelineBuilder] = {}

    def observe(index: int) -> Observer:
        builder = builders[index] = TimelineBuilder()
        return builder.feed

    return scan_with(strict, observe), builders


def _timelines(scan: Scan, builders: dict[int, TimelineBuilder]) -> list[ProcessTimeline]:
    """The timelines of the processes the result holds (a log that failed to replay has none)."""
    replayed = {s.process_index for s in scan.summaries}
    return [b.build(i) for i, b in sorted(builders.items()) if i in replayed]


def _markers(scan: Scan) -> tuple[int, int]:
    """(valid markers, logs) of a scan."""
    report = scan.report
    logs = len(report.found_indices)
    bad = {*report.missing_markers, *report.invalid_markers, *report.pending_markers}
    return logs - len(bad & set(report.found_indices)), logs


def experiment_view_of(scan_with: Scanner) -> ExperimentView:
    """The page's view of one experiment, wherever it is read from (nothing is written).

    The experiment is scanned strictly; when that finds it complete, its result is aggregated
    as ``replay`` writes it, otherwise it is scanned again skipping corrupt lines and
    aggregated as ``recover`` writes it (partial). Either scan's replay feeds a
    ``TimelineBuilder`` per process.

    Raises:
        LedgerError: the scan failed, or no log replays.
    """
    scan, builders = _observed(scan_with, strict=True)
    if scan.report.is_complete:
        result = aggregate_scan(scan)
    else:
        scan, builders = _observed(scan_with, strict=False)
        result = aggregate_scan(scan, partial=True)
    digest = decode_digest(result_to_json_bytes(result))
    environment = (
        result.environment_snapshot.model_dump(mode="json") if result.environment_snapshot else {}
    )
    return experiment_view(
        digest,
        _timelines(scan, builders),
        scan.summaries,
        environment=environment,
        expected_processes=scan.report.expected_processes,
        markers=_markers(scan),
    )


def experiment_page(
    experiment_dir: str | os.PathLike[str],
) -> tuple[ResultsLayout, ExperimentView]:
    """Read an experiment folder and build its page's view (nothing is written).

    Raises:
        LedgerError: the folder is unsafe, not an experiment folder, or holds no log that
            replays.
    """
    layout, _ = experiment_location(experiment_dir)
    directory = Path(os.path.abspath(experiment_dir))

    def scan_with(strict: bool, observe: Callable[[int], Observer]) -> Scan:
        return scan_experiment(directory, layout=layout, strict=strict, observe=observe)

    return layout, experiment_view_of(scan_with)


@dataclass(frozen=True, slots=True)
class FolderOutputs:
    """``Outputs`` into a folder root's ``aggregated/``: atomic files, each path checked."""

    layout: ResultsLayout

    def write_page(self, name: str, data: bytes) -> tuple[Path | str, bool]:
        """Write the page atomically, unless it holds ``data`` (see the module doc)."""
        path = self.layout.outputs_dir(create=True) / name
        return path, write_if_changed(self.layout.check_output_file(path), data)

    def write_figures(
        self, folder: str, files: Sequence[tuple[str, bytes]]
    ) -> tuple[Path | str, ...]:
        """Each file directly in the real ``aggregated/figures/<folder>/``, never a link."""
        where = self.layout.outputs_dir(create=True) / FIGURES_DIR / folder
        for level in (where.parent, where):
            real_folder(level)
        written: list[Path | str] = []
        for name, data in files:
            path = where / name
            if path.is_symlink():
                raise UnsafePathError(f"{path} is a symbolic link; refusing to replace it")
            write_if_changed(path, data)
            written.append(path)
        return tuple(written)


def _write_figures(
    outputs: Outputs, folder: str, figures: Sequence[FigureOut], *, png: bool, svg: bool
) -> tuple[Path | str, ...]:
    """Each figure as its own file in ``aggregated/figures/<folder>/``, when asked for."""
    if not (png or svg):
        return ()
    files: list[tuple[str, bytes]] = []
    for fig in figures:
        if svg:
            files.append((f"{fig.name}.svg", fig.svg.encode()))
        if png and fig.png is not None:
            files.append((f"{fig.name}.png", fig.png))
    return outputs.write_figures(folder, files)


def write_experiment_view(
    outputs: Outputs, view: ExperimentView, *, png: bool = False, svg: bool = False
) -> Written:
    """Render an experiment's page (and its figures, if asked) and write it to ``outputs``."""
    figures = experiment_figures(view, png=png)
    page = render_experiment(view, figures, generated_by=_generated_by())
    where, changed = outputs.write_page(page_name(view.experiment_id), page)
    files = _write_figures(outputs, view.experiment_id, figures, png=png, svg=svg)
    return Written(where, changed, files, partial=view.partial)


def write_experiment_report(
    experiment_dir: str | os.PathLike[str], *, png: bool = False, svg: bool = False
) -> Written:
    """Write ``aggregated/<id>.report.html`` for one experiment (and its figures, if asked).

    Raises:
        LedgerError: see ``experiment_page``; or a write failed (nothing half-written).
    """
    layout, view = experiment_page(experiment_dir)
    return write_experiment_view(FolderOutputs(layout), view, png=png, svg=svg)


def rows_of_results(
    items: Iterable[ResultItem],
    has_page: Callable[[str], bool],
    *,
    total: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ComparisonRow], list[str]]:
    """A comparison row per result read, and a problem per result that was not.

    Args:
        items: the results to compare, read one at a time (see ``ResultItem``).
        has_page: whether ``aggregated/`` holds the experiment page of that name, to link to.
        total: how many items there are, for ``progress``.
        progress: called with (items done, ``total``) after each item.
    """
    rows: list[ComparisonRow] = []
    problems: list[str] = []
    for n, (name, data) in enumerate(items, 1):
        if isinstance(data, str):
            problems.append(data)
        else:
            try:
                digest = decode_digest(data, path=name)
            except FormatError as exc:
                problems.append(str(exc))
            else:
                page = page_name(digest.experiment_id)
                rows.append(comparison_row(digest, page if has_page(page) else None))
        if progress is not None:
            progress(n, total)
    return rows, problems


def _read_results(files: Iterable[ResultFile]) -> Iterable[ResultItem]:
    for file in files:
        path = file.path
        data: bytes | str
        try:
            data = read_regular(path, MAX_RESULT_BYTES)
        except OSError as exc:
            data = f"{path}: cannot read: {exc.strerror or exc}"
        yield str(path), data


def comparison_rows(
    layout: ResultsLayout, progress: Callable[[int, int], None] | None = None
) -> tuple[list[ComparisonRow], list[str]]:
    """A row per emitted result (a complete one preferred over a partial), and the problems."""
    files = preferred(list_results(layout))
    aggregated = layout.aggregated_dir
    return rows_of_results(
        _read_results(files),
        lambda page: (aggregated / page).is_file(),
        total=len(files),
        progress=progress,
    )


def write_comparison_view(
    outputs: Outputs,
    rows: list[ComparisonRow],
    problems: list[str],
    *,
    png: bool = False,
    svg: bool = False,
) -> Written:
    """Render the comparison page of ``rows`` (and its figures, if asked) into ``outputs``."""
    view = comparison_view(rows, problems)
    figures = comparison_figures(view, png=png)
    page = render_comparison(view, figures, generated_by=_generated_by())
    where, changed = outputs.write_page(COMPARISON_NAME, page)
    files = _write_figures(outputs, COMPARISON_FIGURES, figures, png=png, svg=svg)
    return Written(where, changed, files, tuple(problems))


def write_comparison_report(
    root: str | os.PathLike[str],
    *,
    png: bool = False,
    svg: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Written:
    """Write ``aggregated/report.html`` over every emitted result of a root.

    Raises:
        LedgerError: the root is not a results root, or a write failed.
    """
    layout = results_root(root)
    rows, problems = comparison_rows(layout, progress)
    return write_comparison_view(FolderOutputs(layout), rows, problems, png=png, svg=svg)


@dataclass(slots=True)
class RootReport:
    """What ``write_root_reports`` did: the pages written, and what could not be written."""

    pages: list[Written] = field(default_factory=list)
    comparison: Written | None = None
    problems: list[str] = field(default_factory=list)


def emitted_ids(root: str | os.PathLike[str]) -> list[str]:
    """The experiments of a root that have a result file (complete or partial), sorted."""
    return sorted({f.experiment_id for f in list_results(results_root(root))})


def root_reports(
    write_page: Callable[[str], Written],
    write_comparison: Callable[[], Written],
    experiment_ids: Iterable[str],
    progress: Callable[[str], None] | None = None,
) -> RootReport:
    """Write each experiment's page, then the comparison page, wherever they go.

    An experiment whose page cannot be written (``LedgerError``) is listed in ``problems``;
    the others go on.
    """
    done = RootReport()
    for experiment_id in experiment_ids:
        try:
            done.pages.append(write_page(experiment_id))
        except LedgerError as exc:
            done.problems.append(f"{experiment_id}: {exc}")
        if progress is not None:
            progress(experiment_id)
    done.comparison = write_comparison()
    done.problems += done.comparison.problems
    return done


def write_root_reports(
    root: str | os.PathLike[str],
    experiment_ids: Sequence[str],
    *,
    png: bool = False,
    svg: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RootReport:
    """Write the pages of ``experiment_ids``, then the comparison page over the whole root.

    An experiment whose page cannot be written is listed in ``problems``; the others go on.
    """
    layout = results_root(root)
    return root_reports(
        lambda experiment_id: write_experiment_report(
            layout.experiment_dir(experiment_id), png=png, svg=svg
        ),
        lambda: write_comparison_report(root, png=png, svg=svg),
        experiment_ids,
        progress,
    )


__all__ = [
    "COMPARISON_NAME",
    "REPORT_SUFFIX",
    "FolderOutputs",
    "Outputs",
    "ResultItem",
    "RootReport",
    "Scanner",
    "Written",
    "comparison_rows",
    "emitted_ids",
    "experiment_page",
    "experiment_view_of",
    "page_name",
    "root_reports",
    "rows_of_results",
    "write_comparison_report",
    "write_comparison_view",
    "write_experiment_report",
    "write_experiment_view",
    "write_root_reports",
]
