"""The commands over a results root: ``replay``, ``recover``, ``validate``, ``status``, ``show``,
``schema``. Each is a thin wrapper over a library call (``pipeline``, ``store.results``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from energy_ledger.cli.app import (
    EXIT_ERROR,
    EXIT_NOT_COMPLETE,
    EXIT_OK,
    PROGRESS_THRESHOLD,
    Command,
    ExperimentOrUrlArg,
    JsonFlag,
    RootOrUrlArg,
    app,
    err,
    fmt,
    number_option,
    out,
    print_json,
    print_table,
    root_of,
    seconds_option,
)
from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult


@app.command(cls=Command)
def replay(
    root_arg: RootOrUrlArg,
    force: Annotated[
        bool, typer.Option("--force", help="Replay even results that look up to date.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems.")] = False,
    jobs: Annotated[
        int | None,
        number_option("Worker processes [the cores available; 1: no workers].", 1),
    ] = None,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Also write the HTML report of each result written (or lacking one), and "
            "the comparison page.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Aggregate every complete experiment under ROOT that has no up-to-date result.

    Exit 0 when every experiment is complete and written, 1 when one is pending, invalid or
    failed, 2 when a result could not be written (or, with --report, a page).
    """
    from energy_ledger.pipeline import count_experiments, replay_root, tally
    from energy_ledger.store.parallel import available_cores

    root = root_of(root_arg)
    if report:
        if not isinstance(root, Path):
            raise LedgerError(
                f"{root}: replay --report needs a local root; on a bucket, run "
                f"`energy-ledger report {root}` after the replay"
            )
        from energy_ledger.report.extra import require_report_libraries

        require_report_libraries()

    total = count_experiments(root)
    workers = jobs if jobs is not None else available_cores()
    if total > PROGRESS_THRESHOLD and err.is_terminal and not (quiet or as_json):
        from rich.progress import Progress

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("replaying", total=total)
            outcomes = replay_root(
                root, force=force, progress=lambda _o: bar.advance(task), jobs=workers
            )
    else:
        outcomes = replay_root(root, force=force, jobs=workers)
    counts = tally(outcomes)
    code = EXIT_ERROR if counts["errors"] else EXIT_NOT_COMPLETE if counts["not_complete"] else 0
    reports: dict[str, Any] = {}
    if report and isinstance(root, Path):
        done = _reports_after_replay(root, outcomes, quiet=quiet or as_json)
        if done.problems:
            code = EXIT_ERROR
        reports = {
            "reports": {
                "pages": [str(w.page) for w in done.pages],
                "comparison": str(done.comparison.page) if done.comparison else None,
                "problems": done.problems,
            }
        }
    if as_json:
        experiments = [dataclasses.asdict(o) for o in outcomes]
        print_json(
            {
                "root": root.absolute() if isinstance(root, Path) else root,
                "experiments": experiments,
                **counts,
                **reports,
                "exit_code": code,
            }
        )
        raise typer.Exit(code)
    shown = [o for o in outcomes if not quiet or o.state != "complete" or o.action == "error"]
    if shown:
        rows = [(o.experiment_id, o.state, o.action, o.detail or o.where) for o in shown]
        print_table(f"replay {root}", ("experiment", "state", "action", "why / where"), rows)
    summary = (
        f"{counts['written']} written, {counts['up_to_date']} up to date, "
        f"{counts['not_complete']} not complete"
    )
    out.print(summary + (f", {counts['errors']} could not be written" if counts["errors"] else ""))
    if reports:
        pages = reports["reports"]
        out.print(f"reports: {len(pages['pages'])} pages written; comparison {pages['comparison']}")
        for problem in pages["problems"]:
            err.print(f"report problem: {problem}")
    raise typer.Exit(code)


def _reports_after_replay(root: Path, outcomes: list[Any], *, quiet: bool) -> Any:
    """The pages of the results just written, or that have no page yet; then the comparison."""
    from energy_ledger.cli.report import write_root
    from energy_ledger.report.build import page_name
    from energy_ledger.store.layout import results_root

    aggregated = results_root(root).aggregated_dir
    ids = [
        o.experiment_id
        for o in outcomes
        if o.path is not None
        and (o.action == "written" or not (aggregated / page_name(o.experiment_id)).exists())
    ]
    return write_root(root, ids, png=False, svg=False, quiet=quiet)


@app.command(cls=Command)
def recover(experiment_dir: ExperimentOrUrlArg, as_json: JsonFlag = False) -> None:
    """Aggregate what a crashed or partial run left into <id>.partial.json.

    A complete experiment gets its full result instead. Exit 0 for a full result, 1 for a
    partial one.
    """
    from energy_ledger.pipeline import recover_experiment

    r = recover_experiment(root_of(experiment_dir))
    cov = r.coverage
    code = EXIT_NOT_COMPLETE if r.partial else EXIT_OK
    if as_json:
        print_json({**r.to_dict(), "exit_code": code})
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
    experiment_dir: ExperimentOrUrlArg,
    expected: Annotated[
        int | None,
        typer.Option("--expected", min=1, metavar="N", help="Expected number of processes."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the completeness report; exit 0 when complete, 1 when not."""
    from energy_ledger.pipeline import validate_experiment, validity_of

    scan = validate_experiment(root_of(experiment_dir), expected)
    report = scan.report
    weak = validity_of(scan) if report.is_complete else []
    if as_json:
        code = EXIT_OK if report.is_complete else EXIT_NOT_COMPLETE
        print_json(
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
    root_arg: RootOrUrlArg,
    as_json: JsonFlag = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Show the running experiments' live figures, refreshed until Ctrl-C "
            "(with --json: one JSON line per refresh).",
        ),
    ] = False,
    interval: Annotated[
        float | None, seconds_option("--interval", "Seconds between refreshes of --watch [2].")
    ] = None,
) -> None:
    """List the experiments under ROOT, their state, and what the daemon reports.

    Exit 0 when every experiment is complete and emitted, 1 otherwise; with --watch, 0 when
    stopped with Ctrl-C.
    """
    root = root_of(root_arg)
    if interval is not None and not watch:
        raise LedgerError("--interval is the refresh period of --watch; add --watch")
    if watch:
        if interval is not None and not (0 < interval < float("inf")):
            raise LedgerError(f"--interval must be a number of seconds > 0, got {interval:g}")
        if not isinstance(root, Path):
            raise LedgerError(
                f"{root}: status --watch needs a local root; a daemon on a bucket serves its "
                "live figures with watch --metrics-port"
            )
        from energy_ledger.cli.live import watch_status

        watch_status(root, interval if interval is not None else 2.0, as_json=as_json)
        raise typer.Exit(EXIT_OK)
    from energy_ledger.daemon.status import daemon_lines, daemon_status
    from energy_ledger.pipeline import root_status

    rows = root_status(root)
    daemon: dict[str, Any] | None = None
    if isinstance(root, Path):
        try:
            daemon = daemon_status(root) or None
        except (LedgerError, OSError):
            daemon = None
    else:
        daemon = _bucket_claims(root)
    done = all(r.state == "complete" and r.action == "emitted" for r in rows)
    code = EXIT_OK if done else EXIT_NOT_COMPLETE
    if as_json:
        keys = ("experiment_id", "state", "result", "detail", "warnings")
        experiments = [
            dict(zip(keys, (r.experiment_id, r.state, r.action, r.detail, r.warnings), strict=True))
            for r in rows
        ]
        print_json({"experiments": experiments, "daemon": daemon, "exit_code": code})
        raise typer.Exit(code)
    why = ["; ".join(filter(None, (r.detail, *r.warnings))) for r in rows]
    lines = [(r.experiment_id, r.state, r.action, w) for r, w in zip(rows, why, strict=True)]
    print_table(f"status {root}", ("experiment", "state", "result", "why"), lines)
    if daemon:
        for line in daemon_lines(daemon) if isinstance(root, Path) else _claim_lines(daemon):
            out.print(line)
    raise typer.Exit(code)


MAX_CLAIM_LINES = 20


def _bucket_claims(url: str) -> dict[str, Any] | None:
    """The claims the daemons on a bucket root hold now (``status --json``'s ``daemon``);
    ``None`` when there are none."""
    from energy_ledger.store.bucket_claims import list_claims
    from energy_ledger.store.objects import open_objects

    claims = [
        {"experiment_id": e, "owner": b.owner, "term": b.term, "released": b.released}
        if b is not None
        else {"experiment_id": e, "owner": None, "term": None, "released": None}
        for e, b in list_claims(open_objects(url))
    ]
    return {"claims": claims} if claims else None


def _claim_lines(daemon: dict[str, Any]) -> list[str]:
    claims = daemon["claims"]
    held = [c for c in claims if c["owner"] is not None and not c["released"]]
    owners = {c["owner"] for c in held}
    lines = [f"daemons: {len(owners)} holding {len(held)} claim(s) on experiments in progress"]
    for c in held[:MAX_CLAIM_LINES]:
        lines.append(f"  {c['experiment_id']}: {c['owner']} (term {c['term']})")
    if len(held) > MAX_CLAIM_LINES:
        lines.append(f"  ... and {len(held) - MAX_CLAIM_LINES} more (--json lists them all)")
    return lines


@app.command(cls=Command)
def schema() -> None:
    """Print the JSON Schema of ExperimentResult (schema 2.0)."""
    sys.stdout.write(json.dumps(ExperimentResult.model_json_schema(), indent=2) + "\n")


@app.command(cls=Command)
def show(
    path_arg: Annotated[
        str,
        typer.Argument(
            help="A result file, or a results root (a folder, or a bucket URL).", metavar="PATH"
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Print the key figures of aggregated results, once per experiment.

    Exit 0 when every result shown is complete, 1 when one is partial or a file is unreadable.
    """
    from energy_ledger.models.results import is_partial
    from energy_ledger.store.results import key_figures, results_to_show

    path = root_of(path_arg)
    if isinstance(path, Path):
        shown = results_to_show(path)
    else:
        from energy_ledger.pipeline_objects import url_results_to_show

        shown = url_results_to_show(path)
    partial = any(is_partial(r) for _f, r in shown.results)
    code = EXIT_NOT_COMPLETE if partial or shown.problems else EXIT_OK
    if as_json:
        results = [
            {"experiment_id": r.experiment_id, "path": f, "partial": is_partial(r)}
            | key_figures(r)
            | {"measurement_warnings": r.measurement_warnings}
            for f, r in shown.results
        ]
        print_json({"results": results, "problems": shown.problems, "exit_code": code})
        raise typer.Exit(code)
    for file, result in shown.results:
        _print_result(file, result, is_partial(result), key_figures(result))
    for problem in shown.problems:
        err.print(f"error: {problem}")
    raise typer.Exit(code)


def _print_result(
    file: Path | str, r: ExperimentResult, partial: bool, figures: dict[str, Any]
) -> None:
    table = Table(title=f"{r.experiment_id}{' (PARTIAL)' if partial else ''}  [{file}]")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, fmt(value, 6 if name.endswith("per_token_j") else 3))
    out.print(table)
    for warning in r.measurement_warnings:
        out.print(f"  warning: {warning}")
