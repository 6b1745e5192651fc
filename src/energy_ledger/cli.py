"""The ``energy-ledger`` command: thin wrappers over library calls.

``cli(*args)`` runs one command and returns its exit code, so tests call it directly. Only this
module sets up logging handlers and maps outcomes and errors to messages and exit codes, the
same for every command that reads a root (README.md, "Exit codes"):

- 0: everything asked about is complete and written (or already up to date);
- 1: something is pending, invalid or failed, or a result is only partial (each is listed);
- 2: a usage error or an I/O error (a message names what and where, never a traceback);
- 130: interrupted. ``watch`` has its own codes (3 and 4, docs/watcher.md).

Help is click's plain format, so a flag is shown without a value type and an argument by its
metavar (``ROOT``, ``EXPERIMENT_DIR``).
"""

from __future__ import annotations

import dataclasses
import functools
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
from energy_ledger.models import ExperimentResult

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

RootArg = Annotated[
    Path, typer.Argument(help="The results root (the folder holding raw/).", metavar="ROOT")
]
ExperimentArg = Annotated[
    Path,
    typer.Argument(
        help="An experiment folder, ROOT/raw/<experiment_id>.", metavar="EXPERIMENT_DIR"
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


def _number(help: str, least: int | None = None) -> Any:
    """An option taking a whole number (shown as ``N``), at least ``least``."""
    return typer.Option(min=least, metavar="N", help=help)


def _seconds(flag: str, help: str) -> Any:
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


def _print_json(obj: Any) -> None:
    """Machine-readable output: indented JSON on stdout, paths as strings."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _fmt(value: float | None, digits: int = 3) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else f"{value:,.{digits}f}"


@app.command(cls=Command)
def replay(
    root: RootArg,
    force: Annotated[
        bool, typer.Option("--force", help="Replay even results that look up to date.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Aggregate every complete experiment under ROOT that has no up-to-date result.

    Exit 0 when every experiment is complete and written, 1 when one is pending, invalid or
    failed, 2 when a result could not be written.
    """
    from energy_ledger.pipeline import count_experiments, replay_root, tally

    total = count_experiments(root)
    if total > PROGRESS_THRESHOLD and err.is_terminal and not (quiet or as_json):
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("replaying", total=total)
            outcomes = replay_root(root, force=force, progress=lambda _o: bar.advance(task))
    else:
        outcomes = replay_root(root, force=force)
    counts = tally(outcomes)
    code = EXIT_ERROR if counts["errors"] else EXIT_NOT_COMPLETE if counts["not_complete"] else 0
    if as_json:
        experiments = [dataclasses.asdict(o) for o in outcomes]
        _print_json(
            {"root": root.absolute(), "experiments": experiments, **counts, "exit_code": code}
        )
        raise typer.Exit(code)
    shown = [o for o in outcomes if not quiet or o.state != "complete" or o.action == "error"]
    if shown:
        rows = [(o.experiment_id, o.state, o.action, o.detail or str(o.path or "")) for o in shown]
        _print_table(f"replay {root}", ("experiment", "state", "action", "why / where"), rows)
    summary = (
        f"{counts['written']} written, {counts['up_to_date']} up to date, "
        f"{counts['not_complete']} not complete"
    )
    out.print(summary + (f", {counts['errors']} could not be written" if counts["errors"] else ""))
    raise typer.Exit(code)


@app.command(cls=Command)
def recover(experiment_dir: ExperimentArg, as_json: JsonFlag = False) -> None:
    """Aggregate what a crashed or partial run left into <id>.partial.json.

    A complete experiment gets its full result instead. Exit 0 for a full result, 1 for a
    partial one.
    """
    from energy_ledger.pipeline import recover_experiment

    r = recover_experiment(experiment_dir)
    cov = r.coverage
    code = EXIT_NOT_COMPLETE if r.partial else EXIT_OK
    if as_json:
        _print_json({**r.to_dict(), "exit_code": code})
        raise typer.Exit(code)
    done = "wrote" if r.written else "up to date:"
    if r.partial:
        out.print(f"{done} {r.path} (PARTIAL result)")
    else:
        out.print(
            f"{done} {r.path} (complete result: the experiment is complete, nothing to recover)"
        )
    out.print(
        f"covered: {cov['processes_found']}/{cov['processes_expected'] or '?'} processes "
        f"({cov['processes_finished']} finished), {cov['requests']} requests, "
        f"{cov['measured_seconds']:.3f} s measured"
    )
    for line in cov["skipped_lines"]:
        out.print(f"  skipped: {line}")
    for reason in r.report.reasons:
        out.print(f"  not complete: {reason}")
    raise typer.Exit(code)


@app.command(cls=Command)
def validate(
    experiment_dir: ExperimentArg,
    expected: Annotated[
        int | None,
        typer.Option("--expected", min=1, metavar="N", help="Expected number of processes."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the completeness report; exit 0 when complete, 1 when not."""
    from energy_ledger.pipeline import validate_experiment, validity_of

    scan = validate_experiment(experiment_dir, expected)
    report = scan.report
    weak = validity_of(scan) if report.is_complete else []
    if as_json:
        code = EXIT_OK if report.is_complete else EXIT_NOT_COMPLETE
        _print_json(
            {**report.to_dict(), "measurement_warnings": weak, "problems": scan.problems}
            | {"exit_code": code}
        )
    else:
        out.print(f"{report.experiment_id}: {report.state.upper()}")
        out.print(
            f"  processes: {report.found_processes} found, "
            f"{report.expected_processes if report.expected_processes is not None else '?'} "
            "expected"
        )
        for reason in report.reasons:
            out.print(f"  - {reason}")
        for problem in scan.problems:
            out.print(f"  - problem: {problem}")
        for warning in weak:
            out.print(f"  - warning: {warning}")
    if not report.is_complete:
        raise typer.Exit(EXIT_NOT_COMPLETE)


@app.command(cls=Command)
def status(
    root: RootArg,
    as_json: JsonFlag = False,
) -> None:
    """List the experiments under ROOT, their state, and what the daemon reports.

    Exit 0 when every experiment is complete and emitted, 1 otherwise.
    """
    from energy_ledger.daemon.status import daemon_lines, daemon_status
    from energy_ledger.pipeline import root_status

    rows = root_status(root)
    try:
        daemon = daemon_status(root) or None
    except (LedgerError, OSError):
        daemon = None
    done = all(r.state == "complete" and r.action == "emitted" for r in rows)
    code = EXIT_OK if done else EXIT_NOT_COMPLETE
    if as_json:
        keys = ("experiment_id", "state", "result", "detail", "warnings")
        experiments = [
            dict(zip(keys, (r.experiment_id, r.state, r.action, r.detail, r.warnings), strict=True))
            for r in rows
        ]
        _print_json({"experiments": experiments, "daemon": daemon, "exit_code": code})
        raise typer.Exit(code)
    why = ["; ".join(filter(None, (r.detail, *r.warnings))) for r in rows]
    lines = [(r.experiment_id, r.state, r.action, w) for r, w in zip(rows, why, strict=True)]
    _print_table(f"status {root}", ("experiment", "state", "result", "why"), lines)
    if daemon:
        for line in daemon_lines(daemon):
            out.print(line)
    raise typer.Exit(code)


@app.command(cls=Command)
def watch(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="The results root to watch.", metavar="ROOT")],
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", help="TOML file (see config/energy-ledger.toml)."),
    ] = None,
    polling: Annotated[
        bool | None,
        typer.Option(
            "--polling/--no-polling",
            help="Poll instead of inotify (default: poll on network filesystems).",
            show_default=False,
        ),
    ] = None,
    poll_interval: Annotated[
        float | None, _seconds("--poll-interval", "Seconds between polls [1].")
    ] = None,
    reconcile_interval: Annotated[
        float | None, _seconds("--reconcile-interval", "Seconds between full rescans [60].")
    ] = None,
    on_emit: Annotated[
        str | None,
        typer.Option(
            "--on-emit", metavar="CMD", help="Command run once per result: CMD RESULT_PATH ID."
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", metavar="DIR", help="Daemon state [ROOT/.energy-ledger]."),
    ] = None,
    stale_after: Annotated[
        float | None,
        _seconds("--stale-after", "Seconds idle before an experiment is stale [3600]."),
    ] = None,
    recover_stale: Annotated[
        bool | None,
        typer.Option("--recover-stale", help="Emit stale experiments as partial results."),
    ] = None,
    lease_timeout: Annotated[
        float | None,
        _seconds("--lease-timeout", "Seconds before another host's lease expires [30]."),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", metavar="FORMAT", help="Log format: text or json.")
    ] = None,
) -> None:
    """Run the daemon: emit every experiment under ROOT once, as soon as it is complete."""
    import os

    from energy_ledger.daemon.config import load_watch_config
    from energy_ledger.daemon.run import run_watch

    options = ctx.obj or {}
    overrides: dict[str, Any] = {
        "polling": polling,
        "poll_interval_sec": poll_interval,
        "reconcile_interval_sec": reconcile_interval,
        "on_emit": on_emit,
        "state_dir": state_dir,
        "stale_after_sec": stale_after,
        "recover_stale": recover_stale,
        "lease_timeout_sec": lease_timeout,
        # ``energy-ledger --log-format json watch`` counts as a flag too.
        "log_format": log_format or options.get("log_format"),
    }
    settings = load_watch_config(config, os.environ, overrides)
    setup_logging(max(1, options.get("verbose", 0)), settings.log_format)
    code = run_watch(root, settings)
    if code:
        raise typer.Exit(code)


@app.command(cls=Command)
def simulate(
    root: Annotated[Path, typer.Argument(help="Where to write (a new ROOT).", metavar="ROOT")],
    experiments: Annotated[int, _number("How many experiments.", 1)] = 1,
    processes: Annotated[int, _number("Processes (GPUs) each.", 1)] = 4,
    requests: Annotated[int, _number("Requests per process.", 0)] = 100,
    seed: Annotated[int, _number("Random seed (same seed, same files).")] = 0,
    crash: Annotated[int, _number("Processes per experiment that die.", 0)] = 0,
    fail: Annotated[int, _number("Processes that raise (process_failed).", 0)] = 0,
    torn: Annotated[
        bool, typer.Option("--torn", help="Crashed processes leave a torn line.")
    ] = False,
    itl: Annotated[bool, typer.Option(help="Write inter-token latency lists.")] = True,
    prefix: Annotated[str, typer.Option(metavar="TEXT", help="Experiment id prefix.")] = "sim",
    truth: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Also write the ground truth as JSON here.")
    ] = None,
) -> None:
    """Write realistic synthetic runs through the ledger writer (no GPU needed)."""
    from energy_ledger.simulate import simulate as run_simulation
    from energy_ledger.simulate import size_warning, truth_json

    if crash + fail > processes:
        raise LedgerError("--crash plus --fail cannot exceed --processes")
    size: dict[str, Any] = {"experiments": experiments, "processes": processes, "itl": itl}
    size["requests"] = requests
    if (warning := size_warning(**size)) is not None:
        err.print(f"warning: {warning} under {root}")
    run = functools.partial(
        run_simulation, root, seed=seed, crash=crash, fail=fail, torn=torn, prefix=prefix, **size
    )
    total = experiments * processes * requests
    if total > SIMULATE_PROGRESS_REQUESTS and err.is_terminal:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("simulating requests", total=total)
            truths = run(keep_samples=False, progress=lambda n: bar.advance(task, n))
    else:
        truths = run(keep_samples=False)
    events = sum(p.events for t in truths for p in t.processes)
    out.print(
        f"simulated {experiments} experiment(s) x {processes} process(es) x {requests} "
        f"request(s) under {root} ({events} events)"
    )
    if truth is not None:
        from energy_ledger.store.atomic import write_atomic

        write_atomic(truth, truth_json(truths))


@app.command(cls=Command)
def schema() -> None:
    """Print the JSON Schema of ExperimentResult (schema 2.0)."""
    sys.stdout.write(json.dumps(ExperimentResult.model_json_schema(), indent=2) + "\n")


@app.command(cls=Command)
def show(
    path: Annotated[Path, typer.Argument(help="A result file, or a results root.", metavar="PATH")],
    as_json: JsonFlag = False,
) -> None:
    """Print the key figures of aggregated results, once per experiment.

    Exit 0 when every result shown is complete, 1 when one is partial or a file is unreadable.
    """
    from energy_ledger.store.results import is_partial, key_figures, results_to_show

    shown = results_to_show(path)
    partial = any(is_partial(r) for _f, r in shown.results)
    code = EXIT_NOT_COMPLETE if partial or shown.problems else EXIT_OK
    if as_json:
        results = [
            {"experiment_id": r.experiment_id, "path": f, "partial": is_partial(r)}
            | key_figures(r)
            | {"measurement_warnings": r.measurement_warnings}
            for f, r in shown.results
        ]
        _print_json({"results": results, "problems": shown.problems, "exit_code": code})
        raise typer.Exit(code)
    for file, result in shown.results:
        _print_result(file, result, is_partial(result), key_figures(result))
    for problem in shown.problems:
        err.print(f"error: {problem}")
    raise typer.Exit(code)


def _print_result(file: Path, r: ExperimentResult, partial: bool, figures: dict[str, Any]) -> None:
    table = Table(title=f"{r.experiment_id}{' (PARTIAL)' if partial else ''}  [{file}]")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, _fmt(value, 6 if name.endswith("per_token_j") else 3))
    out.print(table)
    for warning in r.measurement_warnings:
        out.print(f"  warning: {warning}")


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


__all__ = ["__version__", "app", "cli", "main"]
