"""The commands that produce logs or run for long: ``watch`` (the daemon) and ``simulate``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from energy_ledger.cli.app import (
    SIMULATE_PROGRESS_REQUESTS,
    Command,
    app,
    err,
    number_option,
    out,
    root_of,
    seconds_option,
    setup_logging,
)
from energy_ledger.exceptions import LedgerError


@app.command(cls=Command)
def watch(
    ctx: typer.Context,
    root: Annotated[
        str,
        typer.Argument(
            help="The results root to watch: a folder, or a bucket URL (s3://bucket/prefix) "
            "that any number of daemons may watch together.",
            metavar="ROOT",
        ),
    ],
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
        float | None, seconds_option("--poll-interval", "Seconds between polls [1].")
    ] = None,
    reconcile_interval: Annotated[
        float | None, seconds_option("--reconcile-interval", "Seconds between full rescans [60].")
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
        seconds_option("--stale-after", "Seconds idle before an experiment is stale [3600]."),
    ] = None,
    recover_stale: Annotated[
        bool | None,
        typer.Option("--recover-stale", help="Emit stale experiments as partial results."),
    ] = None,
    lease_timeout: Annotated[
        float | None,
        seconds_option("--lease-timeout", "Seconds before another host's lease expires [30]."),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", metavar="FORMAT", help="Log format: text or json.")
    ] = None,
    report: Annotated[
        bool | None,
        typer.Option("--report", help="Write each result's HTML report, and the comparison page."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            help="Serve Prometheus metrics on http://HOST:PORT/metrics (0: any free port).",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option("--metrics-host", metavar="HOST", help="Address to serve on [127.0.0.1]."),
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
        "report": report,
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
        # ``energy-ledger --log-format json watch`` counts as a flag too.
        "log_format": log_format or options.get("log_format"),
    }
    settings = load_watch_config(config, os.environ, overrides)
    if settings.report:
        from energy_ledger.report.extra import require_report_libraries

        require_report_libraries()
    if settings.metrics_port is not None:
        from energy_ledger.daemon.metrics import require_metrics_library

        require_metrics_library()
    setup_logging(max(1, options.get("verbose", 0)), settings.log_format)
    code = run_watch(root_of(root), settings)
    if code:
        raise typer.Exit(code)


@app.command(cls=Command)
def simulate(
    root: Annotated[Path, typer.Argument(help="Where to write (a new ROOT).", metavar="ROOT")],
    experiments: Annotated[int, number_option("How many experiments.", 1)] = 1,
    processes: Annotated[int, number_option("Processes (GPUs) each.", 1)] = 4,
    requests: Annotated[int, number_option("Requests per process.", 0)] = 100,
    seed: Annotated[int, number_option("Random seed (same seed, same files).")] = 0,
    crash: Annotated[int, number_option("Processes per experiment that die.", 0)] = 0,
    fail: Annotated[int, number_option("Processes that raise (process_failed).", 0)] = 0,
    torn: Annotated[
        bool, typer.Option("--torn", help="Crashed processes leave a torn line.")
    ] = False,
    itl: Annotated[bool, typer.Option(help="Write inter-token latency lists.")] = True,
    prefix: Annotated[str, typer.Option(metavar="TEXT", help="Experiment id prefix.")] = "sim",
    truth: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Also write the ground truth as JSON here.")
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep", help="Vary the batch size over the experiments (with a warm-up phase)."
        ),
    ] = False,
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
        run_simulation,
        root,
        seed=seed,
        crash=crash,
        fail=fail,
        torn=torn,
        prefix=prefix,
        sweep=sweep,
        **size,
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
