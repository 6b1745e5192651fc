"""Tests for simulate: synthetic runs replay whatever the real clock says."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from energy_ledger import simulate as simulate_module
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate


class TestSimulatedTime:
    """Every event of a simulated log carries simulated time, so ``t`` never goes backwards."""

    @pytest.mark.parametrize("start", [4_102_444_800.0, 946_684_800.0])  # 2100 and 2000
    def test_runs_after_or_before_now_replay_complete(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: float
    ) -> None:
        """Simulated runs dated in 2100 or in 2000 (crashed, failed and finished) all replay."""
        monkeypatch.setattr(simulate_module, "T0", start)
        simulate(tmp_path, experiments=2, processes=2, requests=5, seed=3, fail=1)
        outcomes = replay_root(tmp_path)
        assert {o.state for o in outcomes} == {"failed"}
        for log in (tmp_path / "raw").glob("*/process_*.events.jsonl"):
            times = [orjson.loads(line)["t"] for line in log.read_bytes().splitlines()]
            assert times == sorted(times)
            assert abs(times[-1] - start) < 3 * 3600.0

    def test_finished_runs_in_the_future_are_emitted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An experiment simulated in 2100 is complete and written, not refused."""
        monkeypatch.setattr(simulate_module, "T0", 4_102_444_800.0)
        simulate(tmp_path, experiments=1, processes=2, requests=5, seed=4)
        (outcome,) = replay_root(tmp_path)
        assert (outcome.state, outcome.action) == ("complete", "written")
