"""``energy-ledger report``: the HTML report of one experiment, or the comparison of a root.

A thin wrapper over ``report.build``; ``replay --report`` calls ``write_after_replay`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from energy_ledger.cli.app import (
    EXIT_NOT_COMPLETE,
    EXIT_OK,
    PROGRESS_THRESHOLD,
    Command,
    JsonFlag,
    app,
    err,
    local_only,
    out,
    print_json,
)

PngFlag = Annotated[bool, typer.Option("--png", help="Also write every figure as a PNG file.")]
SvgFlag = Annotated[bool, typer.Option("--svg", help="Also write every figure as an SVG file.")]


def _is_root(path: Path) -> bool:
    """A results root holds ``raw/``; an experiment folder is ``ROOT/raw/<id>``."""
    return (path / "raw").is_dir() or (path / "aggregated").is_dir()


def _written(w: Any) -> dict[str, Any]:
    return {
        "page": str(w.page),
        "changed": w.changed,
        "figures": [str(f) for f in w.figures],
    }


def _say(w: Any) -> None:
    out.print(f"{'wrote' if w.changed else 'up to date:'} {w.page}")
    for f in w.figures:
        out.print(f"  figure {f}")


def write_root(
    root: Path,
    experiment_ids: Sequence[str],
    *,
    png: bool,
    svg: bool,
    quiet: bool,
) -> Any:
    """Write the given experiments' pages and the comparison page, with progress on a terminal."""
    from energy_ledger.report.build import write_root_reports

    if len(experiment_ids) > PROGRESS_THRESHOLD and err.is_terminal and not quiet:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("writing reports", total=len(experiment_ids))
            return write_root_reports(
                root, experiment_ids, png=png, svg=svg, progress=lambda _i: bar.advance(task)
            )
    return write_root_reports(root, experiment_ids, png=png, svg=svg)


@app.command(cls=Command)
def report(
    path: Annotated[
        Path,
        typer.Argument(
            help="An experiment folder (ROOT/raw/<id>), or a results root.",
            metavar="PATH",
            callback=local_only,
        ),
    ],
    experiments: Annotated[
        bool,
        typer.Option(
            "--experiments", help="With a ROOT: also write every emitted experiment's page."
        ),
    ] = False,
    png: PngFlag = False,
    svg: SvgFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a self-contained HTML report (opens offline, nothing fetched).

    For ROOT/raw/<id>: aggregated/<id>.report.html (a PARTIAL page when the experiment is not
    complete; exit 1). For ROOT: aggregated/report.html comparing every emitted result (exit 1
    when a result could not be read).
    """
    from energy_ledger.report.extra import require_report_libraries

    require_report_libraries()
    from energy_ledger.report.build import emitted_ids, write_experiment_report

    if _is_root(path):
        ids = emitted_ids(path) if experiments else []
        done = write_root(path, ids, png=png, svg=svg, quiet=as_json)
        code = EXIT_NOT_COMPLETE if done.problems else EXIT_OK
        if as_json:
            print_json(
                {
                    "comparison": _written(done.comparison),
                    "pages": [_written(w) for w in done.pages],
                    "problems": done.problems,
                    "exit_code": code,
                }
            )
            raise typer.Exit(code)
        for w in done.pages:
            _say(w)
        _say(done.comparison)
        for problem in done.problems:
            err.print(f"problem: {problem}")
        raise typer.Exit(code)
    written = write_experiment_report(path, png=png, svg=svg)
    partial = written.partial
    code = EXIT_NOT_COMPLETE if partial else EXIT_OK
    if as_json:
        print_json({**_written(written), "partial": partial, "exit_code": code})
        raise typer.Exit(code)
    _say(written)
    if partial:
        out.print("  PARTIAL: the experiment is not complete; the page says why")
    raise typer.Exit(code)


__all__ = ["report", "write_root"]
