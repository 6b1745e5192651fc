"""The ``energy-ledger`` command: thin wrappers over library calls.

``cli(*args)`` runs one command and returns its exit code, so tests call it directly. Only this
module sets up logging handlers and maps errors to messages and exit codes:
0 success, 1 "not complete" (``validate``), 2 an error with a clear message, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from energy_ledger._version import __version__
from energy_ledger.exceptions import LedgerError
from energy_ledger.logfmt import JsonLogFormatter, text_formatter
from energy_ledger.models import ExperimentResult

app = typer.Typer(
    name="energy-ledger",
    help="Replay, validate and aggregate multi-GPU energy ledgers into ExperimentResult files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

PROGRESS_THRESHOLD = 20
"""``replay`` draws a progress bar when it has more experiments than this (and a terminal)."""


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


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")
    ] = 0,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="Log format: text or json (for log shippers) [text]."),
    ] = None,
) -> None:
    """Replay, validate and aggregate multi-GPU energy ledgers."""
    if log_format not in (None, "text", "json"):
        raise LedgerError(f"--log-format must be text or json, not {log_format!r}")
    ctx.obj = {"verbose": verbose, "log_format": log_format}
    setup_logging(verbose, log_format or "text")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


@app.command()
def replay(
    root: Annotated[Path, typer.Argument(help="The results root (holds raw/).")],
    force: Annotated[bool, typer.Option(help="Replay even results that look up to date.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems.")] = False,
) -> None:
    """Aggregate every complete experiment under ROOT that has no up-to-date result."""
    from energy_ledger.pipeline import count_experiments, replay_root

    total = count_experiments(root)
    if total > PROGRESS_THRESHOLD and err.is_terminal and not quiet:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("replaying", total=total)
            outcomes = replay_root(root, force=force, progress=lambda _o: bar.advance(task))
    else:
        outcomes = replay_root(root, force=force)
    table = Table(title=f"replay {root}", show_lines=False)
    for column in ("experiment", "state", "action", "why / where"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        if quiet and o.state == "complete":
            continue
        table.add_row(o.experiment_id, o.state, o.action, o.detail or str(o.path or ""))
    written = sum(1 for o in outcomes if o.action == "written")
    current = sum(1 for o in outcomes if o.action == "up-to-date")
    errors = sum(1 for o in outcomes if o.action == "error")
    rest = len(outcomes) - written - current - errors
    if outcomes and (not quiet or rest or errors):
        out.print(table)
    summary = f"{written} written, {current} up to date, {rest} not complete"
    out.print(summary + (f", {errors} could not be written" if errors else ""))
    if errors:
        raise typer.Exit(2)


@app.command()
def recover(
    experiment_dir: Annotated[Path, typer.Argument(help="ROOT/raw/<experiment_id>")],
) -> None:
    """Aggregate what a crashed or partial run left into <id>.partial.json."""
    from energy_ledger.pipeline import recover_experiment

    recovery = recover_experiment(experiment_dir)
    cov = recovery.coverage
    out.print(f"wrote {recovery.path} (PARTIAL result)")
    out.print(
        f"covered: {cov['processes_found']}/{cov['processes_expected'] or '?'} processes "
        f"({cov['processes_finished']} finished), {cov['requests']} requests, "
        f"{cov['measured_seconds']:.3f} s measured"
    )
    for line in cov["skipped_lines"]:
        out.print(f"  skipped: {line}")
    for reason in recovery.report.reasons:
        out.print(f"  not complete: {reason}")


@app.command()
def validate(
    experiment_dir: Annotated[Path, typer.Argument(help="ROOT/raw/<experiment_id>")],
    expected: Annotated[
        int | None, typer.Option("--expected", help="Expected number of processes.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Print the completeness report; exit 0 when complete, 1 when not."""
    from energy_ledger.pipeline import validate_experiment, validity_of

    scan = validate_experiment(experiment_dir, expected)
    report = scan.report
    weak = validity_of(scan) if report.is_complete else []
    if as_json:
        out.print_json(json.dumps({**report.to_dict(), "measurement_warnings": weak}))
    else:
        out.print(f"{report.experiment_id}: {report.state.upper()}")
        out.print(
            f"  processes: {report.found_processes} found, "
            f"{report.expected_processes if report.expected_processes is not None else '?'} "
            "expected"
        )
        for reason in report.reasons:
            out.print(f"  - {reason}")
        for warning in weak:
            out.print(f"  - warning: {warning}")
    if not report.is_complete:
        raise typer.Exit(1)


@app.command()
def status(
    root: Annotated[Path, typer.Argument(help="The results root.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the experiments under ROOT and their state, and what the daemon reports."""
    from energy_ledger.daemon.status import daemon_lines
    from energy_ledger.pipeline import root_status

    rows = root_status(root)
    daemon = _daemon_view(root)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "experiments": [
                        {
                            "experiment_id": r.experiment_id,
                            "state": r.state,
                            "result": r.action,
                            "detail": r.detail,
                            "warnings": list(r.warnings),
                        }
                        for r in rows
                    ],
                    "daemon": daemon,
                }
            )
        )
        return
    table = Table(title=f"status {root}")
    for column in ("experiment", "state", "result", "why"):
        table.add_column(column, overflow="fold")
    for r in rows:
        why = "; ".join(filter(None, (r.detail, *r.warnings)))
        table.add_row(r.experiment_id, r.state, r.action, why)
    out.print(table)
    if daemon:
        for line in daemon_lines(daemon):
            out.print(line)


def _daemon_view(root: Path) -> dict[str, Any] | None:
    """The daemon's view of ``root`` (``running`` false when none runs); ``None`` if unreadable."""
    from energy_ledger.daemon.status import daemon_status

    try:
        view = daemon_status(root)
    except (LedgerError, OSError):
        return None
    return view or None


@app.command()
def watch(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="The results root to watch.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file (see config/energy-ledger.toml).")
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
        float | None, typer.Option("--poll-interval", help="Seconds between polls [1].")
    ] = None,
    reconcile_interval: Annotated[
        float | None,
        typer.Option("--reconcile-interval", help="Seconds between full rescans of ROOT [60]."),
    ] = None,
    on_emit: Annotated[
        str | None,
        typer.Option("--on-emit", help="Command run once per result: CMD RESULT_PATH ID."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Daemon state [ROOT/.energy-ledger].")
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option("--stale-after", help="Seconds idle before an experiment is stale [3600]."),
    ] = None,
    recover_stale: Annotated[
        bool | None,
        typer.Option("--recover-stale", help="Emit stale experiments as partial results."),
    ] = None,
    lease_timeout: Annotated[
        float | None,
        typer.Option("--lease-timeout", help="Seconds before another host's lease expires [30]."),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="Log format: text or json.")
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


@app.command()
def simulate(
    root: Annotated[Path, typer.Argument(help="Where to write the synthetic runs.")],
    experiments: Annotated[int, typer.Option(min=1, help="How many experiments.")] = 1,
    processes: Annotated[int, typer.Option(min=1, help="Processes (GPUs) each.")] = 4,
    requests: Annotated[int, typer.Option(min=0, help="Requests per process.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    crash: Annotated[int, typer.Option(min=0, help="Processes per experiment that die.")] = 0,
    fail: Annotated[int, typer.Option(min=0, help="Processes that raise (process_failed).")] = 0,
    torn: Annotated[bool, typer.Option(help="Crashed processes leave a torn line.")] = False,
    itl: Annotated[bool, typer.Option(help="Write inter-token latency lists.")] = True,
    prefix: Annotated[str, typer.Option(help="Experiment id prefix.")] = "sim",
    truth: Annotated[
        Path | None, typer.Option(help="Also write the ground truth as JSON here.")
    ] = None,
) -> None:
    """Write realistic synthetic runs through the ledger writer (no GPU needed)."""
    from energy_ledger.simulate import simulate as run_simulation

    if crash + fail > processes:
        raise LedgerError("--crash plus --fail cannot exceed --processes")
    truths = run_simulation(
        root,
        experiments=experiments,
        processes=processes,
        requests=requests,
        seed=seed,
        crash=crash,
        fail=fail,
        torn=torn,
        itl=itl,
        prefix=prefix,
    )
    events = sum(p.events for t in truths for p in t.processes)
    out.print(
        f"simulated {experiments} experiment(s) x {processes} process(es) x {requests} "
        f"request(s) under {root} ({events} events)"
    )
    if truth is not None:
        from energy_ledger.store.atomic import write_atomic

        data = [
            {
                "experiment_id": t.experiment_id,
                "total_tokens": t.total_tokens,
                "energy_j": t.energy_j,
                "span_sec": t.span_sec,
            }
            for t in truths
        ]
        write_atomic(truth, orjson.dumps(data, option=orjson.OPT_INDENT_2))


@app.command()
def schema() -> None:
    """Print the JSON Schema of ExperimentResult (schema 2.0)."""
    sys.stdout.write(json.dumps(ExperimentResult.model_json_schema(), indent=2) + "\n")


@app.command()
def show(
    path: Annotated[Path, typer.Argument(help="A result file, or a results root.")],
) -> None:
    """Print the key figures of aggregated results."""
    files = sorted(p for p in (path / "aggregated").glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise LedgerError(f"{path}: no aggregated results (run `energy-ledger replay` first)")
    for file in files:
        try:
            result = ExperimentResult.model_validate_json(file.read_bytes())
        except OSError as exc:
            raise LedgerError(f"{file}: cannot read: {exc.strerror or exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            raise LedgerError(
                f"{file}: not an ExperimentResult ({exc.error_count()} problems; first: "
                f"{where}: {first['msg']})"
            ) from None
        _print_result(file, result)


def _print_result(file: Path, r: ExperimentResult) -> None:
    partial = bool(r.aggregation and (r.aggregation.model_extra or {}).get("partial"))
    table = Table(title=f"{r.experiment_id}{' (PARTIAL)' if partial else ''}  [{file}]")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat = r.latency_stats
    e2e = r.extended_metrics.request_latency if r.extended_metrics else None
    rows = [
        ("processes / GPUs", f"{len(r.process_results)} / {len(r.energy_per_device_j or [])}"),
        ("total_tokens", f"{r.total_tokens:,}"),
        ("total_energy_j", _fmt(r.total_energy_j)),
        ("energy_adjusted_j", _fmt(r.energy_adjusted_j)),
        ("total_inference_time_sec", _fmt(r.total_inference_time_sec)),
        ("avg_tokens_per_second", _fmt(r.avg_tokens_per_second, 1)),
        ("avg_energy_per_token_j", _fmt(r.avg_energy_per_token_j, 6)),
        (
            "ttft p50 / p95 ms",
            f"{_fmt(lat.ttft_median_ms if lat else None)} / "
            f"{_fmt(lat.ttft_p95_ms if lat else None)}",
        ),
        (
            "e2e latency p50 / p95 ms",
            f"{_fmt(e2e.e2e_latency_median_ms if e2e else None)} / "
            f"{_fmt(e2e.e2e_latency_p95_ms if e2e else None)}",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
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
    except typer.Abort:
        err.print("interrupted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except LedgerError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        err.print(f"error:{where} {exc.strerror or exc}", markup=False)
        return 2
    return rc if isinstance(rc, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli(*sys.argv[1:]))


__all__ = ["__version__", "app", "cli", "main"]
