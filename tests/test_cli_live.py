"""``energy-ledger status ROOT --watch``: the live table, with no daemon running (``cli.live``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from energy_ledger.cli import cli
from energy_ledger.cli.live import COLUMNS, LiveSource, live_rows
from energy_ledger.simulate import simulate
from tests.helpers import RunningExperiment, child_env, live_truth, wait_for

RUNNING = "run-live"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningExperiment]:
    """A root with a finished experiment (no result yet) and one running."""
    simulate(tmp_path, processes=1, requests=3, prefix="old")
    experiment = RunningExperiment(tmp_path, RUNNING)
    yield experiment
    experiment.abandon()


def watch(root: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    """``status ROOT --watch`` as a process, its output to a file."""
    with open(out, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "energy_ledger", "status", str(root), "--watch", *args],
            env=child_env(), stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip


def interrupt(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, and the exit status."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


class TestStatusWatch:
    """The command refreshes until Ctrl-C, then exits 0 without a traceback."""

    def test_table_from_the_logs(self, running: RunningExperiment, tmp_path: Path) -> None:
        """Without a daemon the figures come from the logs; a few refreshes, then Ctrl-C."""
        truth = live_truth(running.directory)
        out = tmp_path / "out.txt"
        proc = watch(running.root, out, "--interval", "0.1")
        wait_for(lambda: out.read_text().count("from the logs") >= 2, "two refreshes")
        assert interrupt(proc) == 0
        shown = out.read_text()
        assert "Traceback" not in shown and "interrupted" not in shown
        assert all(column in shown for column in COLUMNS)
        row = next(line for line in shown.splitlines() if RUNNING in line)
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        figures = [str(truth[k]) for k in ("started", "finished", "expected")]
        assert cells[:2] == [RUNNING, "pending"] and cells[2:5] == figures
        assert cells[5:7] == [f"{truth['requests']:,}", f"{truth['output_tokens']:,}"]
        # Shown to 0.1 (of figures the daemon rounds to 0.001 in its status file).
        assert float(cells[7].replace(",", "")) == pytest.approx(
            sum(truth["energy_j"].values()), abs=0.051
        )
        assert float(cells[8].replace(",", "")) == pytest.approx(
            sum(truth["power_w"].values()), abs=0.051
        )
        assert "old-0000" in shown  # finished but not aggregated: still listed, as complete

    def test_json_lines(self, running: RunningExperiment, tmp_path: Path) -> None:
        """With --json each refresh is one JSON line; a growing log shows in the next one."""
        out = tmp_path / "out.jsonl"
        proc = watch(running.root, out, "--json", "--interval", "0.1")
        wait_for(lambda: out.read_text().count("\n") >= 1, "a first line")
        running.finish()
        truth = live_truth(running.directory)
        finished = f'"processes_finished":{truth["finished"]}'
        wait_for(lambda: finished in out.read_text(), "a refresh after the processes finished")
        time.sleep(0.05)
        assert interrupt(proc) == 0
        views = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(v["source"] == "logs" and v["left_out"] == 0 for v in views)
        last = {e["experiment_id"]: e for e in views[-1]["experiments"]}[RUNNING]
        assert last["state"] == "complete"
        assert (last["requests"], last["output_tokens"]) == (
            truth["requests"],
            truth["output_tokens"],
        )

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--interval", "1"], "add --watch"),
            (["--watch", "--interval", "0"], "--interval must be a number of seconds > 0"),
        ],
    )
    def test_bad_interval(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
    ) -> None:
        """A meaningless interval is a usage error (exit 2)."""
        (tmp_path / "raw").mkdir()
        assert cli("status", str(tmp_path), *args) == 2
        assert message in capsys.readouterr().err

    def test_not_a_root(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A folder that is not a root is refused before the first refresh."""
        assert cli("status", str(tmp_path / "nope"), "--watch") == 2
        assert "no such results folder" in capsys.readouterr().err


class TestLiveSource:
    """Where the figures come from, and the rows drawn from them."""

    def test_replay_is_incremental(self, running: RunningExperiment) -> None:
        """A second read takes only what was appended (the cursors are kept)."""
        source = LiveSource(running.root)
        first = {e["experiment_id"]: e for e in source.read().experiments}[RUNNING]
        offsets = {i: t.cursor.offset for i, t in source._tails[RUNNING].items()}
        running.finish()
        second = {e["experiment_id"]: e for e in source.read().experiments}[RUNNING]
        assert (first["processes_finished"], second["processes_finished"]) == (1, 3)
        assert all(source._tails[RUNNING][i].cursor.offset > o for i, o in offsets.items() if i)

    def test_rows(self) -> None:
        """Each figure is formatted; missing ones are shown as '-'; stale is said."""
        rows = live_rows(
            [
                {"experiment_id": "a", "state": "pending", "stale": True, "processes_started": 2,
                 "processes_finished": 1, "processes_expected": 4, "requests": 12345,
                 "output_tokens": 7, "energy_j": 1234.56, "power_w": None},
            ]
        )  # fmt: skip
        assert rows == [
            ("a", "pending (stale)", "2", "1", "4", "12,345", "7", "1,234.6", "-"),
        ]
