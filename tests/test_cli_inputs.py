"""Hostile inputs through the command line, as real processes (issue 10, items 7, 12, 13, 11).

Each case puts one bad experiment beside a good one and runs ``validate``, ``replay``,
``status`` and ``recover`` in a child process with a time limit: every command must end, print
a message naming the file (and line) instead of a traceback, and ``replay`` must still write the
good experiment (it does not stop part-way through the root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from energy_ledger.simulate import simulate
from tests.helpers import child_env

BAD = "bad-0000"
LOG = "process_0.events.jsonl"


def _replace_line(folder: Path, number: int, new: bytes, log: str = LOG) -> None:
    lines = (folder / log).read_bytes().split(b"\n")
    lines[number - 1] = new
    (folder / log).write_bytes(b"\n".join(lines))


def deep(folder: Path) -> None:
    """Line 4 holds JSON nested 100,000 levels deep."""
    _replace_line(folder, 4, b"[" * 100_000 + b"]" * 100_000)


def fifo_log(folder: Path) -> None:
    """The log of process 0 is a FIFO (a blocking open would wait for a writer forever)."""
    (folder / LOG).unlink()
    os.mkfifo(folder / LOG)


def fifo_marker(folder: Path) -> None:
    """The marker of process 0 is a FIFO."""
    (folder / "process_0.done").unlink()
    os.mkfifo(folder / "process_0.done")


def huge_world(folder: Path) -> None:
    """Both processes claim a world of 10**12 processes."""
    for log in (LOG, "process_1.events.jsonl"):
        first = orjson.loads((folder / log).read_bytes().split(b"\n", 1)[0])
        _replace_line(folder, 1, orjson.dumps({**first, "world_size": 10**12}), log)


def long_line(folder: Path) -> None:
    """Line 4 is 17 MiB long (the limit is 16 MiB)."""
    _replace_line(folder, 4, b'{"v":1,"pad":"' + b"x" * (17 << 20) + b'"}')


def crlf(folder: Path) -> None:
    """Every line of process 0 ends with \\r\\n."""
    (folder / LOG).write_bytes((folder / LOG).read_bytes().replace(b"\n", b"\r\n"))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "deep nesting": (deep, f"{LOG}:4: line is nested too deeply"),
    "fifo log": (fifo_log, f"{LOG}: cannot read: it is a FIFO"),
    "fifo marker": (fifo_marker, "cannot read process_0.done: it is a FIFO"),
    "world size 10**12": (huge_world, "world size 1,000,000,000,000 is more than"),
    "17 MiB line": (long_line, f"{LOG}:4: line is longer than 16,777,216 bytes"),
    "crlf": (crlf, f"{LOG}:1: line ends with \\r\\n"),
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m energy_ledger ARGS`` in a child; a hang fails the test after 60 s."""
    return subprocess.run(
        [sys.executable, "-m", "energy_ledger", *args],
        capture_output=True,
        text=True,
        env=child_env(COLUMNS="400"),
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_message_not_a_traceback_or_a_hang(tmp_path: Path, case: str) -> None:
    """validate, replay, status and recover end, name the file, and keep going."""
    make_bad, message = CASES[case]
    root = tmp_path / "root"
    simulate(root, experiments=1, processes=2, requests=20, prefix="good")
    simulate(root, experiments=1, processes=2, requests=20, prefix="bad")
    make_bad(root / "raw" / BAD)
    validate = run("validate", str(root / "raw" / BAD))
    assert validate.returncode == 1, validate.stdout + validate.stderr
    assert message in validate.stdout
    for args in (
        ["replay", str(root)],
        ["status", str(root)],
        ["recover", str(root / "raw" / BAD)],
    ):
        done = run(*args)
        output = done.stdout + done.stderr
        assert "Traceback" not in output, f"{args}: {output}"
        assert done.returncode in (0, 1, 2), f"{args}: {output}"
    assert (root / "aggregated" / "good-0000.json").exists()
    assert not (root / "aggregated" / f"{BAD}.json").exists()
