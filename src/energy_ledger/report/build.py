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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from energy_ledger._version import __version__
from energy_ledger.core.replay import Observer
from energy_ledger.core.timeline import ProcessTimeline, TimelineBuilder
from energy_ledger.exceptions import FormatError, LedgerError, UnsafePathError
from energy_ledger.pipeline import aggregate_scan
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
from energy_ledger.store.reader import ExperimentScan, scan_experiment
from energy_ledger.store.results import list_results, preferred

logger = logging.getLogger(__name__)

REPORT_SUFFIX = ".report.html"
COMPARISON_NAME = "report.html"
FIGURES_DIR = "figures"
COMPARISON_FIGURES = "_comparison"
"""The comparison page's figure folder: an experiment id cannot start with "_"."""
MAX_RESULT_BYTES = 1 << 30
"""The largest result file the comparison reads (a result holds every latency)."""


@dataclass(frozen=True, slots=True)
class Written:
    """What a report run wrote: the page, the figure files, whether the page changed, whether
    it shows a partial result, and the result files that could not be read (comparison)."""

    page: Path
    changed: bool
    figures: tuple[Path, ...] = ()
    problems: tuple[str, ...] = field(default=())
    partial: bool = False


def page_name(experiment_id: str) -> str:
    """The experiment page's file name in ``aggregated/``."""
    return f"{experiment_id}{REPORT_SUFFIX}"


def _generated_by() -> str:
    return f"energy-ledger {__version__}"


def _scan(
    directory: Path, layout: ResultsLayout, strict: bool
) -> tuple[ExperimentScan, dict[int, TimelineBuilder]]:
    builders: dict[int, TimelineBuilder] = {}

    def observe(index: int) -> Observer:
        builder = builders[index] = TimelineBuilder()
        return builder.feed

    return scan_experiment(directory, layout=layout, strict=strict, observe=observe), builders


def _timelines(scan: ExperimentScan, builders: dict[int, TimelineBuilder]) -> list[ProcessTimeline]:
    """The timelines of the processes the result holds (a log that failed to replay has none)."""
    replayed = {s.process_index for s in scan.summaries}
    return [b.build(i) for i, b in sorted(builders.items()) if i in replayed]


def _markers(scan: ExperimentScan) -> tuple[int, int]:
    """(valid markers, logs) of a scan."""
    report = scan.report
    logs = len(report.found_indices)
    bad = {*report.missing_markers, *report.invalid_markers, *report.pending_markers}
    return logs - len(bad & set(report.found_indices)), logs


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
    scan, builders = _scan(directory, layout, strict=True)
    if scan.report.is_complete:
        result = aggregate_scan(scan)
    else:
        scan, builders = _scan(directory, layout, strict=False)
        result = aggregate_scan(scan, partial=True)
    digest = decode_digest(result_to_json_bytes(result))
    environment = (
        result.environment_snapshot.model_dump(mode="json") if result.environment_snapshot else {}
    )
    view = experiment_view(
        digest,
        _timelines(scan, builders),
        scan.summaries,
        environment=environment,
        expected_processes=scan.report.expected_processes,
        markers=_markers(scan),
    )
    return layout, view


def _write_figures(
    layout: ResultsLayout,
    folder_name: str,
    figures: Sequence[FigureOut],
    *,
    png: bool,
    svg: bool,
) -> tuple[Path, ...]:
    """Each figure as its own file in ``aggregated/figures/<folder_name>/``."""
    if not (png or svg):
        return ()
    outputs = layout.outputs_dir(create=True)
    folder = outputs / FIGURES_DIR / folder_name
    for level in (folder.parent, folder):
        real_folder(level)
    written: list[Path] = []
    for fig in figures:
        items: list[tuple[str, bytes]] = []
        if svg:
            items.append(("svg", fig.svg.encode()))
        if png and fig.png is not None:
            items.append(("png", fig.png))
        for ext, data in items:
            path = folder / f"{fig.name}.{ext}"
            if path.is_symlink():
                raise UnsafePathError(f"{path} is a symbolic link; refusing to replace it")
            write_if_changed(path, data)
            written.append(path)
    return tuple(written)


def write_experiment_report(
    experiment_dir: str | os.PathLike[str], *, png: bool = False, svg: bool = False
) -> Written:
    """Write ``aggregated/<id>.report.html`` for one experiment (and its figures, if asked).

    Raises:
        LedgerError: see ``experiment_page``; or a write failed (nothing half-written).
    """
    layout, view = experiment_page(experiment_dir)
    figures = experiment_figures(view, png=png)
    page = render_experiment(view, figures, generated_by=_generated_by())
    path = layout.outputs_dir(create=True) / page_name(view.experiment_id)
    changed = write_if_changed(layout.check_output_file(path), page)
    files = _write_figures(layout, view.experiment_id, figures, png=png, svg=svg)
    return Written(path, changed, files, partial=view.partial)


def comparison_rows(
    layout: ResultsLayout, progress: Callable[[int, int], None] | None = None
) -> tuple[list[ComparisonRow], list[str]]:
    """A row per emitted result (a complete one preferred over a partial), and the problems."""
    files = preferred(list_results(layout))
    rows: list[ComparisonRow] = []
    problems: list[str] = []
    aggregated = layout.aggregated_dir
    for n, file in enumerate(files, 1):
        path = file.path
        try:
            digest = decode_digest(read_regular(path, MAX_RESULT_BYTES), path=str(path))
        except FormatError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        else:
            page = page_name(digest.experiment_id)
            rows.append(comparison_row(digest, page if (aggregated / page).is_file() else None))
        if progress is not None:
            progress(n, len(files))
    return rows, problems


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
    view = comparison_view(rows, problems)
    figures = comparison_figures(view, png=png)
    page = render_comparison(view, figures, generated_by=_generated_by())
    path = layout.outputs_dir(create=True) / COMPARISON_NAME
    changed = write_if_changed(layout.check_output_file(path), page)
    files = _write_figures(layout, COMPARISON_FIGURES, figures, png=png, svg=svg)
    return Written(path, changed, files, tuple(problems))


@dataclass(slots=True)
class RootReport:
    """What ``write_root_reports`` did: the pages written, and what could not be written."""

    pages: list[Written] = field(default_factory=list)
    comparison: Written | None = None
    problems: list[str] = field(default_factory=list)


def emitted_ids(root: str | os.PathLike[str]) -> list[str]:
    """The experiments of a root that have a result file (complete or partial), sorted."""
    return sorted({f.experiment_id for f in list_results(results_root(root))})


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
    done = RootReport()
    for experiment_id in experiment_ids:
        try:
            done.pages.append(
                write_experiment_report(layout.experiment_dir(experiment_id), png=png, svg=svg)
            )
        except LedgerError as exc:
            done.problems.append(f"{experiment_id}: {exc}")
        if progress is not None:
            progress(experiment_id)
    done.comparison = write_comparison_report(root, png=png, svg=svg)
    done.problems += done.comparison.problems
    return done


__all__ = [
    "COMPARISON_NAME",
    "REPORT_SUFFIX",
    "RootReport",
    "Written",
    "comparison_rows",
    "emitted_ids",
    "experiment_page",
    "page_name",
    "write_comparison_report",
    "write_experiment_report",
    "write_root_reports",
]
