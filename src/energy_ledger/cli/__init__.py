"""The ``energy-ledger`` command line: thin wrappers over library calls.

``app`` (the typer application), ``cli(*args)`` (run one command line, return its exit code) and
``main`` (the console script) are in ``cli.app``; the commands register themselves on ``app``
from ``cli.results`` (replay, recover, validate, status, show, schema), ``cli.run`` (watch,
simulate), ``cli.report`` (report) and ``cli.export`` (export), imported here for that;
``cli.live`` draws ``status --watch``, loaded by that command only. Only
this package sets up logging handlers and exit codes.
"""

from energy_ledger.cli import export, report, results, run
from energy_ledger.cli.app import app, cli, main, setup_logging

__all__ = ["app", "cli", "export", "main", "report", "results", "run", "setup_logging"]
