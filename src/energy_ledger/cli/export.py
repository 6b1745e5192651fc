"""``energy-ledger export``: a root's results as a Parquet dataset or LLenergyMeasure bundles.

A thin wrapper over ``export.dataset`` and ``export.lem_bundle`` (docs/data.md).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from energy_ledger.cli.app import (
    EXIT_NOT_COMPLETE,
    EXIT_OK,
    Command,
    JsonFlag,
    RootArg,
    app,
    err,
    out,
    print_json,
)
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.parquet import PARQUET_HINT, parquet_available


class Format(enum.StrEnum):
    """What ``export`` writes."""

    PARQUET = "parquet"
    LEM_BUNDLE = "lem-bundle"


def _require_pyarrow() -> None:
    if not parquet_available():
        raise LedgerError(PARQUET_HINT)


def _parquet(root: Path, as_json: bool) -> int:
    from energy_ledger.export.dataset import export_dataset

    _require_pyarrow()
    done = export_dataset(root)
    code = EXIT_NOT_COMPLETE if done.problems else EXIT_OK
    if as_json:
        print_json(
            {
                "format": "parquet",
                "path": str(done.path),
                "rows": done.rows,
                "written": done.written,
                "unchanged": done.unchanged,
                "removed": done.removed,
                "problems": list(done.problems),
                "exit_code": code,
            }
        )
        return code
    out.print(
        f"{done.path}: {done.rows} rows ({done.written} written, {done.unchanged} up to date, "
        f"{done.removed} removed)"
    )
    for problem in done.problems:
        err.print(f"problem: {problem}")
    return code


def _bundles(root: Path, target: Path | None, as_json: bool) -> int:
    from energy_ledger.export.lem_bundle import export_bundles

    done = export_bundles(root, target)
    code = EXIT_NOT_COMPLETE if done.problems else EXIT_OK
    if as_json:
        outcomes: list[dict[str, Any]] = [
            {
                "experiment_id": o.experiment_id,
                "status": o.status,
                "folder": str(o.folder) if o.folder else None,
                "detail": o.detail,
            }
            for o in done.outcomes
        ]
        print_json(
            {
                "format": "lem-bundle",
                "out": str(done.out),
                "bundles": outcomes,
                "written": done.written,
                "unchanged": done.unchanged,
                "problems": list(done.problems),
                "exit_code": code,
            }
        )
        return code
    for o in done.outcomes:
        if o.status != "unchanged":
            out.print(
                f"{o.status}: {o.folder or o.experiment_id}{f' ({o.detail})' * bool(o.detail)}"
            )
    out.print(f"{done.out}: {done.written} bundles written, {done.unchanged} up to date")
    for problem in done.problems:
        err.print(f"problem: {problem}")
    return code


@app.command(cls=Command)
def export(
    root: RootArg,
    format: Annotated[
        Format,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="parquet: aggregated/results.parquet/, one row per result. lem-bundle: "
            "LLenergyMeasure 0.7.0's results bundles.",
        ),
    ] = Format.PARQUET,
    target: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="DIR", help="lem-bundle: where to write [ROOT/exports/lem-bundle]."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Export every result under ROOT for other tools (only what changed is rewritten).

    Exit 0 when every result was exported, 1 when one could not be read (each is named).
    """
    if format is Format.PARQUET:
        if target is not None:
            raise LedgerError("--out is for --format lem-bundle; the dataset lives in aggregated/")
        raise typer.Exit(_parquet(root, as_json))
    raise typer.Exit(_bundles(root, target, as_json))


__all__ = ["Format", "export"]
