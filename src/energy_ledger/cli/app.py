"""The typer application, its options and output helpers, and ``cli(*args)``.

``cli(*args)`` runs one command and returns its exit code, so tests call it directly. Only this
package sets up logging handlers and maps outcomes and errors to messages and exit codes, the
same for every command that reads a root (README.md, "Exit codes"):

- 0: everything asked about is complete and written (or already up to date);
- 1: something is pending, invalid or failed, or a result is only partial (each is listed);
- 2: a usage error or an I/O error (a message names what and where, never a traceback);
- 130: interrupted. ``watch`` has its own codes (3 and 4, docs/watcher.md).

Help is click's plain format, so a flag is shown without a value type and an argument by its
metavar (``ROOT``, ``EXPERIMENT_DIR``). The commands are in ``cli.results`` and ``cli.run``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand
from typer.exceptions import TyperException

from energy_ledger._version import __version__
from energy_ledger.exceptions import LedgerError
from energy_ledger.logfmt import JsonLogFormatter, text_formatter

EXIT_OK = 0
EXIT_NOT_COMPLETE = 1
EXIT_ERROR = 2

PROGRESS_THRESHOLD = 20
"""``replay`` draws a progress bar when it has more experiments than this (and a terminal)."""
SIMULATE_PROGRESS_REQUESTS = 200_000
"""``simulate`` draws a progress bar (on a terminal) when it writes more requests than this."""


class Command(TyperCommand):
    """A command whose usage line reads ``energy-ledger replay [OPTIONS] ROOT`` (typer writes
    a required argument as ``{ROOT}``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """Click's usage pieces, with the braces around required arguments taken off."""
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


app = typer.Typer(
    name="energy-ledger",
    help="Replay, validate and aggregate multi-GPU energy ledgers into ExperimentResult files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

BUCKET_COMMANDS = "replay, status, validate, recover, report, show and watch"
"""The commands that take a bucket URL as their root (docs/object-storage.md)."""


def local_only(value: Path | None) -> Path | None:
    """Refuse a bucket URL where a command reads folders only (a ``Path`` has eaten one '/')."""
    if value is not None and str(value).startswith(("s3:/", "gs:/", "az:/")):
        raise typer.BadParameter(
            f"{value}: a bucket root works with {BUCKET_COMMANDS}; this command needs a local "
            "folder (copy the experiment to one)"
        )
    return value


RootArg = Annotated[
    Path,
    typer.Argument(
        help="The results root (the folder holding raw/).", metavar="ROOT", callback=local_only
    ),
]
ExperimentArg = Annotated[
    Path,
    typer.Argument(
        help="An experiment folder, ROOT/raw/<experiment_id>.",
        metavar="EXPERIMENT_DIR",
        callback=local_only,
    ),
]
RootOrUrlArg = Annotated[
    str,
    typer.Argument(
        help="The results root: a folder holding raw/, or a bucket URL (s3://bucket/prefix, "
        "gs://, az://).",
        metavar="ROOT",
    ),
]
ExperimentOrUrlArg = Annotated[
    str,
    typer.Argument(
        help="An experiment: ROOT/raw/<experiment_id>, a folder or a bucket URL.",
        metavar="EXPERIMENT_DIR",
    ),
]


def root_of(value: str) -> str | Path:
    """A root argument as the library takes it: the URL as given, or a local path."""
    from energy_ledger.store.objectstore import is_url

    return value if is_url(value) else Path(value)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


def number_option(help: str, least: int | None = None) -> Any:
    """An option taking a whole number (shown as ``N``), at least ``least``."""
    return typer.Option(min=least, metavar="N", help=help)


def seconds_option(flag: str, help: str) -> Any:
    """An option taking seconds (shown as ``SEC``)."""
    return typer.Option(flag, metavar="SEC", help=help)


def setup_logging(verbose: int, log_format: str = "text") -> None:
    """Send library logs to stderr: warnings by default, more with ``-v``."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    elif verbose > 0:
        handler.setFormatter(text_formatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("energy_ledger")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _print_version(value: bool) -> None:
    if value:
        out.print(f"energy-ledger {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logs.")] = 0,
    log_format: Annotated[
        str | None, typer.Option(metavar="FORMAT", help="Log format: text or json.")
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Replay, validate and aggregate multi-GPU energy ledgers."""
    if log_format not in (None, "text", "json"):
        raise LedgerError(f"--log-format must be text or json, not {log_format!r}")
    ctx.obj = {"verbose": verbose, "log_format": log_format}
    setup_logging(verbose, log_format or "text")


def print_json(obj: Any) -> None:
    """Machine-readable output: indented JSON on stdout, paths as strings."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def fmt(value: float | None, digits: int = 3) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else f"{value:,.{digits}f}"


def cli(*args: str) -> int:
    """Run the command line ``args``; return the exit code (never raises for bad input)."""
    try:
        # Outside standalone mode, ``typer.Exit(code)`` comes back as the return value.
        rc = app(args=list(args), prog_name="energy-ledger", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc.format_message()}", markup=False)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        return 130
    except LedgerError as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_ERROR
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        err.print(f"error:{where} {exc.strerror or exc}", markup=False)
        return EXIT_ERROR
    return rc if isinstance(rc, int) else EXIT_OK


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli(*sys.argv[1:]))


__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_COMPLETE",
    "EXIT_OK",
    "app",
    "cli",
    "err",
    "main",
    "out",
    "setup_logging",
]
