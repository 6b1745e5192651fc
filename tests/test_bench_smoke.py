"""The benchmark script runs every section end to end on tiny inputs (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench.py"
BASELINE_REF = "1c01940"


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def have_revision(ref: str) -> bool:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{ref}^{{commit}}"], capture_output=True
        )
    except OSError:
        return False
    return proc.returncode == 0


@pytest.mark.slow
class TestBenchSmoke:
    """``scripts/bench.py --smoke`` is what CI runs of the benchmark."""

    def test_smoke_run_prints_the_table_and_writes_json(self, tmp_path: Path) -> None:
        """Every section runs, the table is printed and the JSON holds one entry per row."""
        out = tmp_path / "bench.json"
        proc = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--smoke",
                "--json",
                str(out),
                "--workdir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        lines = proc.stdout.splitlines()
        assert any(line.startswith("section") and "result" in line for line in lines)
        for section in ("1 replay", "2 scaling", "2 memory", "3 daemon", "4 daemon",
                        "5 incremental", "6 recorder", "7 report", "8 parallel",
                        "9 object storage"):  # fmt: skip
            assert any(line.startswith(section) for line in lines), section
        payload = json.loads(out.read_text())
        assert payload["mode"] == "smoke"
        assert payload["machine"]["python"]
        assert len(payload["rows"]) == sum(
            1 for line in lines if line[:1].isdigit() and "  " in line
        )

    def test_replay_is_compared_with_the_baseline_revision(self, tmp_path: Path) -> None:
        """Both trees replay section 1's log and fold the same lines and requests."""
        if not have_revision(BASELINE_REF):
            pytest.skip(f"this clone lacks {BASELINE_REF} (shallow?)")
        out = tmp_path / "bench.json"
        proc = run_bench("--smoke", "--only", "1", "--json", str(out), "--workdir", str(tmp_path))
        assert proc.returncode == 0, proc.stderr[-4000:]
        rows = json.loads(out.read_text())["rows"]
        target = next(r for r in rows if r["target"].startswith("new/old"))
        assert target["verdict"] in ("PASS", "FAIL"), target
        assert target["figures"]["same_fold"], proc.stderr[-4000:]
        assert list(tmp_path.iterdir()) == [out]  # the extracted trees went with the work dir

    def test_an_unknown_baseline_revision_is_skipped_with_a_message(self, tmp_path: Path) -> None:
        """A revision the clone lacks is a "skipped" row and a line on stderr, not a traceback."""
        proc = run_bench("--smoke", "--only", "1", "--baseline-ref", "no-such-ref",
                         "--workdir", str(tmp_path))  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "Traceback" not in proc.stderr
        assert "revision 'no-such-ref' not found" in proc.stderr
        assert any(
            line.startswith("1 replay") and "skipped: revision 'no-such-ref'" in line
            for line in proc.stdout.splitlines()
        )
