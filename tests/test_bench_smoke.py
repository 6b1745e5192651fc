"""The benchmark script runs every section end to end on tiny inputs (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


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
                        "5 incremental", "6 recorder"):  # fmt: skip
            assert any(line.startswith(section) for line in lines), section
        payload = json.loads(out.read_text())
        assert payload["mode"] == "smoke"
        assert payload["machine"]["python"]
        assert len(payload["rows"]) == sum(
            1 for line in lines if line[:1].isdigit() and "  " in line
        )
