"""``energy-ledger status ROOT --watch``: the running experiments' figures, refreshed until Ctrl-C.

Where the figures come from: the daemon's ``status.json`` while a live daemon holds the root
(its ``live`` list, computed from the states it folds anyway, so nothing is read twice);
otherwise a light replay here. That replay keeps a ``LogTail`` per log between refreshes, so
each refresh reads only the bytes appended, and folds into light states (no latency arrays). It
looks at the experiments without a result whose folders changed most recently, at most
``core.live.MAX_LIVE_EXPERIMENTS``, as the daemon does. Either way the figures are
``core.live.live_figures``'s; this module only picks the source and draws the table (with
``rich.live`` on a terminal, one table per refresh otherwise, one JSON line per refresh with
``--json``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from energy_ledger.cli.app import fmt, out
from energy_ledger.core.live import live_figures, pick_live
from energy_ledger.daemon.status import daemon_status
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.layout import ResultsLayout, results_root
from energy_ledger.store.reader import list_experiments, newest_mtime, scan_experiment
from energy_ledger.store.tail import LogTail

__all__ = ["COLUMNS", "LiveSource", "LiveView", "live_rows", "live_table", "watch_status"]

COLUMNS = (
    "experiment",
    "state",
    "started",
    "finished",
    "of",
    "requests",
    "tokens out",
    "energy J",
    "power W",
)
"""The table's columns: processes started and finished of those expected, then the figures."""
WIDE = 120
"""Output that is not a terminal (a file, a pipe) is drawn this wide, so no figure is cut."""


@dataclass(frozen=True, slots=True)
class LiveView:
    """One refresh: where its figures came from (``daemon`` or ``logs``) and the figures."""

    source: str
    t: float
    experiments: list[dict[str, Any]]
    left_out: int

    def to_dict(self) -> dict[str, Any]:
        """One ``--json`` line."""
        return {
            "t": round(self.t, 3),
            "source": self.source,
            "experiments": self.experiments,
            "left_out": self.left_out,
        }


class LiveSource:
    """Reads the live figures of one root, from its daemon or, without one, from its logs."""

    def __init__(self, root: Path) -> None:
        self.layout: ResultsLayout = results_root(root)
        self._tails: dict[str, dict[int, LogTail]] = {}

    def read(self) -> LiveView:
        """The figures now."""
        try:
            daemon = daemon_status(self.layout.root)
        except (LedgerError, OSError):
            daemon = {}
        status = daemon.get("status") or {}
        if daemon.get("running") and isinstance(status.get("live"), list):
            self._tails.clear()  # the daemon reads the logs; ours would only go stale
            left_out = status.get("live_left_out")
            return LiveView(
                "daemon",
                float(status.get("updated_t") or time.time()),
                list(status["live"]),
                left_out if isinstance(left_out, int) else 0,
            )
        return self._replay()

    def _replay(self) -> LiveView:
        layout = self.layout
        changed_t: dict[str, float] = {}
        for experiment_id in list_experiments(layout).experiment_ids:
            if layout.result_path(experiment_id).exists():
                continue
            t = newest_mtime(layout.experiment_dir(experiment_id))
            if t is not None:
                changed_t[experiment_id] = t
        chosen, left_out = pick_live(changed_t)
        self._tails = {e: self._tails.get(e, {}) for e in chosen}
        experiments = []
        for experiment_id in chosen:
            tails = self._tails[experiment_id]
            try:
                scan = scan_experiment(
                    layout.experiment_dir(experiment_id), layout=layout, tails=tails, light=True
                )
            except LedgerError:
                continue  # vanished or unreadable meanwhile: `status` says why
            states = {i: tail.cursor.state for i, tail in tails.items()}
            experiments.append(live_figures(experiment_id, scan.report.state, states).to_dict())
        return LiveView("logs", time.time(), experiments, left_out)


def _count(value: Any) -> str:
    return fmt(value) if isinstance(value, int) else "-"


def _number(value: Any, digits: int) -> str:
    return fmt(float(value), digits) if isinstance(value, int | float) else "-"


def live_rows(experiments: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The table's rows, one per experiment (``LiveFigures.to_dict`` shapes), as text."""
    rows: list[tuple[str, ...]] = []
    for e in experiments:
        state = str(e.get("state", "?")) + (" (stale)" if e.get("stale") else "")
        rows.append(
            (
                str(e.get("experiment_id", "?")),
                state,
                _count(e.get("processes_started")),
                _count(e.get("processes_finished")),
                _count(e.get("processes_expected")),
                _count(e.get("requests")),
                _count(e.get("output_tokens")),
                _number(e.get("energy_j"), 1),
                _number(e.get("power_w"), 1),
            )
        )
    return rows


def live_table(root: Path, view: LiveView) -> Table:
    """The table of one refresh."""
    where = "the daemon" if view.source == "daemon" else "the logs (no daemon running)"
    clock = time.strftime("%H:%M:%S", time.localtime(view.t))
    table = Table(title=f"live {root}: from {where} at {clock}")
    for column in COLUMNS:
        if column in ("experiment", "state"):
            table.add_column(column, overflow="fold", min_width=len(column))
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for row in live_rows(view.experiments):
        table.add_row(*row)
    if not view.experiments:
        table.caption = "no running experiment"
    elif view.left_out:
        table.caption = f"{view.left_out} more active experiment(s) not shown"
    return table


def watch_status(root: Path, interval_sec: float, *, as_json: bool) -> None:
    """Refresh the live figures of ``root`` every ``interval_sec`` until Ctrl-C (then return).

    Raises:
        LedgerError: ``root`` is not a results root (before the first refresh).
    """
    source = LiveSource(root)
    try:
        if as_json:
            while True:
                sys.stdout.write(orjson.dumps(source.read().to_dict()).decode() + "\n")
                sys.stdout.flush()
                time.sleep(interval_sec)
        elif out.is_terminal:
            from rich.live import Live

            with Live(console=out, auto_refresh=False) as live:
                while True:
                    live.update(live_table(root, source.read()), refresh=True)
                    time.sleep(interval_sec)
        else:
            wide = Console(file=out.file, width=max(out.width, WIDE), highlight=False, markup=False)
            while True:
                wide.print(live_table(root, source.read()))
                wide.file.flush()
                time.sleep(interval_sec)
    except KeyboardInterrupt:
        return
