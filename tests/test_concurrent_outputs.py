"""Two ``energy-ledger replay`` processes and a running ``energy-ledger watch`` daemon on one root
lose no CSV row (issue 10, finding 1).

All three are real processes started through the command line. Each trial adds experiments
while the two replays run (one of them with ``--force``, so it rebuilds the CSV for every
experiment), and then checks that once they are done the CSV holds exactly one row per JSON
result, for every experiment written so far.
"""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from energy_ledger.simulate import simulate
from tests.helpers import child_env, read_status, wait_for

TRIALS = 20
EXPERIMENTS_PER_TRIAL = 2


def _start(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "energy_ledger", *args],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def _json_ids(root: Path) -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in (root / "aggregated").glob("*.json"))


def _csv_ids(root: Path) -> list[str]:
    try:
        text = (root / "aggregated" / "results.csv").read_text()
    except FileNotFoundError:
        return []
    return [row["experiment_id"] for row in csv.DictReader(io.StringIO(text))]


@pytest.mark.slow
def test_two_replays_and_a_daemon_lose_no_row(tmp_path: Path) -> None:
    """Twenty trials: after each, one CSV row per JSON result, and every experiment in both."""
    root = tmp_path / "root"
    (root / "raw").mkdir(parents=True)
    daemon_log = tmp_path / "daemon.log"
    daemon = _start("watch", str(root), log=daemon_log)
    try:
        wait_for(lambda: read_status(root), "the daemon's status file")
        expected: list[str] = []
        for trial in range(TRIALS):
            logs = [tmp_path / f"replay-{trial}-{n}.log" for n in (0, 1)]
            replays = [
                _start("replay", "-q", str(root), log=logs[0]),
                _start("replay", "-q", "--force", str(root), log=logs[1]),
            ]
            truths = simulate(
                root,
                experiments=EXPERIMENTS_PER_TRIAL,
                processes=2,
                requests=4,
                seed=trial,
                prefix=f"t{trial:02d}",
            )
            expected = sorted([*expected, *(t.experiment_id for t in truths)])
            codes = [replay.wait(timeout=120) for replay in replays]
            for code, log in zip(codes, logs, strict=True):
                text = log.read_text()
                assert code in (0, 1), text  # 1 while an experiment was still being written
                assert "Traceback" not in text
            wait_for(
                lambda want=expected: _json_ids(root) == want and sorted(_csv_ids(root)) == want,
                f"trial {trial}: every experiment's JSON and CSV row",
                timeout_sec=30,
            )
            rows = _csv_ids(root)
            assert rows == sorted(set(rows)), f"trial {trial}: a row appears twice"
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    assert code == 0, daemon_log.read_text()
    assert "Traceback" not in daemon_log.read_text()
    assert len(expected) == TRIALS * EXPERIMENTS_PER_TRIAL
