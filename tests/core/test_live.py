"""The live figures of a running experiment, from folded states (``core.live``)."""

from __future__ import annotations

from typing import Any

import pytest

from energy_ledger.core.decode import make_event
from energy_ledger.core.live import live_figures, pick_live, process_energy_j
from energy_ledger.core.state import ProcessState, apply

T = 1000.0


def folded(*events: tuple[str, dict[str, Any]]) -> ProcessState:
    """A state folded from ``(type, fields)`` pairs, each a second apart."""
    state = ProcessState()
    for seq, (kind, fields) in enumerate(events):
        apply(state, make_event(kind, seq=seq, t=fields.pop("t", T + seq), **fields))
    return state


def started(index: int, uuid: str | None, **extra: Any) -> tuple[str, dict[str, Any]]:
    fields = {"experiment_id": "e", "run_id": "r", "process_index": index, "world_size": 4}
    return "process_started", {**fields, "gpu_id": 0, "gpu_uuid": uuid, **extra}


def sample(t: float, power_w: float, energy_mj: float | None = None) -> tuple[str, dict[str, Any]]:
    return "sample", {"t": t, "power_w": power_w, "energy_mj": energy_mj}


def request(t: float, output_tokens: int) -> tuple[str, dict[str, Any]]:
    return "request", {
        "t": t,
        "latency_ms": 10.0,
        "input_tokens": 1,
        "output_tokens": output_tokens,
    }


class TestProcessEnergy:
    """Energy so far: the counter's delta where it can be trusted, else the power integral."""

    @pytest.mark.parametrize(
        ("events", "expected"),
        [
            ([started(0, "a")], (None, "none")),
            (
                [started(0, "a"), ("window_started", {"t": 1001, "energy_mj": 1000.0}),
                 sample(1002, 100.0, 3000.0), sample(1003, 300.0, 6500.0)],
                (5.5, "counter"),
            ),
            (
                [started(0, "a"), ("window_started", {"t": 1001}),
                 sample(1002, 100.0), sample(1004, 300.0)],
                (400.0, "power_integral"),
            ),
            (
                # The counter went backwards (a reset): the power readings are integrated.
                [started(0, "a"), ("window_started", {"t": 1001, "energy_mj": 9000.0}),
                 sample(1002, 100.0, 10000.0), sample(1003, 100.0, 50.0)],
                (100.0, "power_integral"),
            ),
            (
                [started(0, "a"), ("window_started", {"t": 1001, "energy_mj": 0.0}),
                 sample(1002, 100.0, 2000.0), ("window_ended", {"t": 1003, "energy_mj": 4000.0})],
                (4.0, "counter"),
            ),
        ],
        ids=["no-window", "counter", "power-only", "counter-reset", "closed-window"],
    )  # fmt: skip
    def test_definition(
        self, events: list[tuple[str, dict[str, Any]]], expected: tuple[float | None, str]
    ) -> None:
        """Each case gives the documented figure and source."""
        energy_j, source = process_energy_j(folded(*events))
        assert source == expected[1]
        assert energy_j == (None if expected[0] is None else pytest.approx(expected[0]))


class TestExperimentFigures:
    """Per GPU, per experiment: shared GPUs counted once, requests as the result counts them."""

    def test_shared_gpu_counts_once_and_latest_power(self) -> None:
        """Two processes on one GPU: the larger energy figure, the newer power reading."""
        a = folded(started(0, "shared"), ("window_started", {"t": 1001, "energy_mj": 0.0}),
                   sample(1002, 100.0, 5000.0), sample(1003, 110.0, 6000.0))  # fmt: skip
        b = folded(started(1, "shared"), ("window_started", {"t": 1001, "energy_mj": 0.0}),
                   sample(1002.5, 120.0, 5500.0))  # fmt: skip
        figures = live_figures("e", "pending", {0: a, 1: b})
        (gpu,) = figures.gpus
        assert gpu.gpu == "gpu:shared" and gpu.processes == (0, 1)
        assert gpu.energy_j == pytest.approx(6.0)
        assert gpu.power_w == 110.0
        assert figures.energy_j == pytest.approx(6.0) and figures.power_w == 110.0

    def test_requests_inside_the_window_of_counting_processes(self) -> None:
        """Warm-up requests and a rank with counts_requests false are left out."""
        counting = folded(started(0, "a"), request(1000.5, 7), ("window_started", {"t": 1001}),
                          request(1002, 5), request(1003, 6))  # fmt: skip
        silent = folded(started(1, "b", counts_requests=False), ("window_started", {"t": 1001}),
                        request(1002, 5))  # fmt: skip
        figures = live_figures("e", "pending", {0: counting, 1: silent})
        assert (figures.requests, figures.output_tokens) == (2, 11)

    def test_processes(self) -> None:
        """Started, finished, failed and expected processes are counted from their events."""
        done = folded(started(0, "a"), ("process_finished", {}))
        failed = folded(started(1, "b"), ("process_failed", {"error": "OOM"}))
        running = folded(started(2, "c"))
        figures = live_figures("e", "pending", {0: done, 1: failed, 2: running, 3: ProcessState()})
        assert figures.processes_expected == 4
        assert (figures.processes_started, figures.processes_finished) == (3, 1)
        assert figures.processes_failed == 1
        assert figures.gpus[-1].gpu == "process:3" and figures.gpus[-1].energy_j is None

    def test_dict_is_rounded_and_complete(self) -> None:
        """The JSON form rounds to 3 digits and names every figure."""
        state = folded(started(0, "a"), ("window_started", {"t": 1001, "energy_mj": 0.0}),
                       sample(1002, 100.123456, 1234.5678))  # fmt: skip
        d = live_figures("e", "pending", {0: state}, stale=True).to_dict()
        assert d["energy_j"] == 1.235 and d["power_w"] == 100.123 and d["stale"] is True
        assert d["gpus"] == [
            {"gpu": "gpu:a", "energy_j": 1.235, "energy_source": "counter", "power_w": 100.123,
             "processes": [0]}
        ]  # fmt: skip


class TestPickLive:
    """The cap keeps the most recently active experiments."""

    @pytest.mark.parametrize(
        ("activity", "limit", "chosen", "left_out"),
        [
            ({"b": 1.0, "a": 2.0}, 5, ["a", "b"], 0),
            ({"a": 1.0, "b": 3.0, "c": 2.0, "d": 0.5}, 2, ["b", "c"], 2),
            ({"x": 1.0, "y": 1.0, "z": 1.0}, 2, ["x", "y"], 1),
            ({}, 3, [], 0),
        ],
        ids=["under-cap", "newest-kept", "ties-by-id", "empty"],
    )
    def test_pick(
        self, activity: dict[str, float], limit: int, chosen: list[str], left_out: int
    ) -> None:
        """The newest ``limit`` are kept, sorted by id; the rest are counted."""
        assert pick_live(activity, limit) == (chosen, left_out)
