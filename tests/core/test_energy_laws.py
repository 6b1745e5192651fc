"""Hypothesis laws of energy per physical GPU: counted once, never mixed across devices.

Each drawn experiment has a few physical GPUs, each with its own counter that rises at its own
constant rate, and processes spread over them with windows anywhere in time. Some processes name
their GPU's UUID, others (as under Slurm isolation) name none and say ``gpu_id`` 0. The expected
energies are computed here from the GPUs' rates and the measure of the windows, independently of
the aggregator: a UUID'd GPU's energy is its rate times the measure of the union of its
processes' windows; a process without a UUID is its own device, its rate times its window.
"""

from __future__ import annotations

import io
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import replay_stream

LAWS = settings(max_examples=200, deadline=None)
T0 = 1_700_000_000.0
STEP_SEC = 0.25  # times on a quarter-second grid: every sum below is exact in binary floats


def _union_measure(windows: list[tuple[float, float]]) -> float:
    """Length of the union of intervals, by sweeping sorted endpoints (written for this test)."""
    total, reach = 0.0, -math.inf
    for lo, hi in sorted(windows):
        if lo > reach:
            total += hi - lo
            reach = hi
        elif hi > reach:
            total += hi - reach
            reach = hi
    return total


@st.composite
def experiments(draw: st.DrawFn) -> tuple[list[ProcessSummary], list[float]]:
    """Processes over GPUs, and the per-device energies expected in process-index order."""
    n_gpus = draw(st.integers(1, 3))
    rates_w = [draw(st.integers(50, 700)) for _ in range(n_gpus)]
    bases_mj = [draw(st.integers(0, 10**9)) for _ in range(n_gpus)]
    n = draw(st.integers(1, 6))
    placed: list[dict[str, Any]] = []
    for index in range(n):
        gpu = draw(st.integers(0, n_gpus - 1))
        start = draw(st.integers(0, 40)) * STEP_SEC
        length = draw(st.integers(1, 40)) * STEP_SEC
        placed.append(
            {
                "index": index,
                "gpu": gpu,
                "uuid": draw(st.booleans()),
                "window": (start, start + length),
            }
        )
    summaries = []
    for p in placed:
        lo, hi = p["window"]
        rate, base = rates_w[p["gpu"]], bases_mj[p["gpu"]]
        started: dict[str, Any] = {
            "type": "process_started",
            "experiment_id": "exp",
            "run_id": "run",
            "process_index": p["index"],
            "world_size": n,
            "gpu_id": 0,
            "hostname": "node",
        }
        if p["uuid"]:
            started["gpu_uuid"] = f"GPU-{p['gpu']}"
        bodies = [
            (T0 - 1.0, started),
            (T0 + lo, {"type": "window_started", "energy_mj": base + rate * lo * 1000}),
            (T0 + hi, {"type": "window_ended", "energy_mj": base + rate * hi * 1000}),
            (T0 + hi, {"type": "process_finished"}),
        ]
        data = b"".join(
            orjson.dumps({"v": 1, "seq": seq, "t": t, **body}) + b"\n"
            for seq, (t, body) in enumerate(bodies)
        )
        summaries.append(summarize_process(replay_stream(io.BytesIO(data)).state))
    expected: list[float] = []
    seen: set[int] = set()
    for p in placed:
        if not p["uuid"]:
            lo, hi = p["window"]
            expected.append(rates_w[p["gpu"]] * (hi - lo))
        elif p["gpu"] not in seen:
            seen.add(p["gpu"])
            windows = [q["window"] for q in placed if q["uuid"] and q["gpu"] == p["gpu"]]
            expected.append(rates_w[p["gpu"]] * _union_measure(windows))
    return summaries, expected


class TestEnergyPerPhysicalGpu:
    """Total energy is the sum over physical GPUs; no device's counter meets another's."""

    @LAWS
    @given(drawn=experiments())
    def test_each_device_is_its_own_counter_over_its_windows(
        self, drawn: tuple[list[ProcessSummary], list[float]]
    ) -> None:
        """Per-device energies are the rates times the union of windows, in order."""
        processes, expected = drawn
        result = aggregate_results(processes, "exp")
        assert result.energy_per_device_j == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert result.total_energy_j == pytest.approx(math.fsum(expected), rel=1e-12, abs=1e-9)

    @LAWS
    @given(drawn=experiments())
    def test_no_device_energy_is_negative(
        self, drawn: tuple[list[ProcessSummary], list[float]]
    ) -> None:
        """Subtracting one GPU's counter from another's could go negative; it never happens."""
        processes, _ = drawn
        result = aggregate_results(processes, "exp")
        assert all(e >= 0 for e in result.energy_per_device_j)

    def test_two_gpus_without_uuids_are_not_merged(self) -> None:
        """Finding 1: two isolated GPUs of 100 J each, both ``gpu_id`` 0, give 200 J."""
        processes = []
        for index, base_mj in ((0, 5_000_000), (1, 90_000_000)):
            bodies = [
                (T0, {"type": "process_started", "experiment_id": "exp", "run_id": "run",
                      "process_index": index, "world_size": 2, "gpu_id": 0}),
                (T0 + 1, {"type": "window_started", "energy_mj": base_mj}),
                (T0 + 11, {"type": "window_ended", "energy_mj": base_mj + 100_000}),
            ]  # fmt: skip
            data = b"".join(
                orjson.dumps({"v": 1, "seq": s, "t": t, **b}) + b"\n"
                for s, (t, b) in enumerate(bodies)
            )
            processes.append(summarize_process(replay_stream(io.BytesIO(data)).state))
        result = aggregate_results(processes, "exp")
        assert result.energy_per_device_j == [100.0, 100.0]
        assert result.total_energy_j == 200.0
        assert any("name no GPU UUID" in w for w in result.measurement_warnings)
