"""``energy-ledger report``: the HTML report of one experiment, or the comparison of a root.

A thin wrapper over ``report.build`` (a folder) and ``report.bucket`` (a bucket URL);
``replay --report`` calls ``write_root`` here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
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
    out,
    print_json,
    root_of,
)

PngFlag = Annotated[bool, typer.Option("--png", help="Also write every figure as a PNG file.")]
SvgFlag = Annotated[bool, typer.Option("--svg", help="Also write every figure as an SVG file.")]


def _is_root(path: Path | str) -> bool:
    """A results root holds ``raw/``; an experiment is ``ROOT/raw/<id>`` (on a bucket, a URL
    that ends so)."""
    if isinstance(path, str):
        from energy_ledger.report.bucket import is_experiment_url

        return not is_experiment_url(path)
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


def _root_writer(root: Path | str, experiments: bool) -> tuple[list[str], Callable[..., Any]]:
    """The emitted ids of a root (when ``experiments``) and its ``write_root_reports``."""
    if isinstance(root, Path):
        from energy_ledger.report.build import emitted_ids, write_root_reports

        ids = emitted_ids(root) if experiments else []
        return ids, functools.partial(write_root_reports, root)
    from energy_ledger.report.bucket import (
        bucket_emitted_ids,
        open_report_root,
        write_bucket_root_reports,
    )

    objects = open_report_root(root)
    ids = bucket_emitted_ids(objects) if experiments else []
    return ids, functools.partial(write_bucket_root_reports, objects)


def write_root(
    root: Path | str,
    experiment_ids: Sequence[str] | None,
    *,
    png: bool,
    svg: bool,
    quiet: bool,
) -> Any:
    """Write the given experiments' pages (``None``: every emitted one) and the comparison
    page, with progress on a terminal."""
    emitted, write = _root_writer(root, experiment_ids is None)
    ids = emitted if experiment_ids is None else experiment_ids
    if len(ids) > PROGRESS_THRESHOLD and err.is_terminal and not quiet:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("writing reports", total=len(ids))
            return write(ids, png=png, svg=svg, progress=lambda _i: bar.advance(task))
    return write(ids, png=png, svg=svg)


def _write_experiment(path: Path | str, *, png: bool, svg: bool) -> Any:
    if isinstance(path, Path):
        from energy_ledger.report.build import write_experiment_report

        return write_experiment_report(path, png=png, svg=svg)
    from energy_ledger.report.bucket import write_url_experiment_report

    return write_url_experiment_report(path, png=png, svg=svg)


@app.command(cls=Command)
def report(
    path: Annotated[
        str,
        typer.Argument(
            help="An experiment (ROOT/raw/<id>), or a results root: a folder, or a bucket URL "
            "(s3://bucket/prefix, gs://, az://).",
            metavar="PATH",
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
    when a result could not be read). On a bucket root the pages are objects under the root's
    aggregated/, replaced only when their bytes change.
    """
    from energy_ledger.report.extra import require_report_libraries

    require_report_libraries()
    target = root_of(path)
    if _is_root(target):
        done = write_root(target, None if experiments else [], png=png, svg=svg, quiet=as_json)
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
    written = _write_experiment(target, png=png, svg=svg)
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
