"""Tests for energy_ledger.store.lock: one writer at a time in ``aggregated/``, across processes.

The processes are real: children started with ``python -c`` take the same lock file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.lock import LOCK_NAME, outputs_lock
from tests.helpers import child_env

COUNTER = """
import sys, time
from pathlib import Path
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.lock import outputs_lock
layout = ResultsLayout.at(sys.argv[1])
counter = layout.aggregated_dir / "counter"
for _ in range(int(sys.argv[2])):
    with outputs_lock(layout):
        value = int(counter.read_text())
        time.sleep(0.001)  # widen the read-modify-write window
        counter.write_text(str(value + 1))
"""

HOLDER = """
import sys
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.lock import outputs_lock
with outputs_lock(ResultsLayout.at(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


class TestAcrossProcesses:
    """Children that take the lock never interleave their read-modify-write."""

    def test_no_update_is_lost(self, tmp_path: Path) -> None:
        """Four processes add 40 each to a counter under the lock: it ends at 160."""
        aggregated = tmp_path / "aggregated"
        aggregated.mkdir()
        (aggregated / "counter").write_text("0")
        children = [
            subprocess.Popen([sys.executable, "-c", COUNTER, str(tmp_path), "40"], env=child_env())
            for _ in range(4)
        ]
        assert [child.wait(timeout=60) for child in children] == [0] * 4
        assert (aggregated / "counter").read_text() == "160"

    def test_held_lock_times_out_with_a_message(self, tmp_path: Path) -> None:
        """While another process holds it, a short wait ends in an error naming the lock."""
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path)],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            with (
                pytest.raises(LedgerError, match=r"\.lock has been locked by another"),
                outputs_lock(ResultsLayout.at(tmp_path), timeout_sec=0.2),
            ):
                pass
        finally:
            holder.communicate("\n", timeout=30)
        with outputs_lock(ResultsLayout.at(tmp_path), timeout_sec=5):
            pass  # released when the holder exited


class TestInOneProcess:
    """The lock's own rules: where it lives, re-entry, refused folders."""

    def test_creates_the_folder_and_a_hidden_lock_file(self, tmp_path: Path) -> None:
        """Taking the lock makes ``aggregated/`` and ``aggregated/.lock``, and nothing else."""
        with outputs_lock(ResultsLayout.at(tmp_path)) as folder:
            assert folder == tmp_path / "aggregated"
        assert [p.name for p in folder.iterdir()] == [LOCK_NAME]

    def test_same_thread_enters_again(self, tmp_path: Path) -> None:
        """A nested use in the same thread does not wait on itself."""
        layout = ResultsLayout.at(tmp_path)
        with outputs_lock(layout), outputs_lock(layout, timeout_sec=0.1):
            pass

    def test_linked_folder_is_refused_and_untouched(self, tmp_path: Path) -> None:
        """A symbolic link as ``aggregated/`` is refused; no lock file appears where it leads."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        root = tmp_path / "root"
        root.mkdir()
        (root / "aggregated").symlink_to(elsewhere, target_is_directory=True)
        with (
            pytest.raises(UnsafePathError, match="symbolic link"),
            outputs_lock(ResultsLayout.at(root)),
        ):
            pass
        assert list(elsewhere.iterdir()) == []
