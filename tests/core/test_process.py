"""Tests for energy_ledger.core.process: the per-process figures docs/format.md promises."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import replay_bytes

STARTED: dict[str, Any] = {
    "type": "process_started",
    "experiment_id": "exp-1",
    "run_id": "run-1",
    "process_index": 0,
    "world_size": 1,
    "gpu_id": 0,
}


def _summary(*timed: tuple[float, dict[str, Any]]) -> ProcessSummary:
    """Replay ``process_started`` at t=0 then ``(t, body)`` events, and summarise."""
    lines = [orjson.dumps({"v": 1, "seq": 0, "t": 0.0, **STARTED})]
    for seq, (t, body) in enumerate(timed, start=1):
        lines.append(orjson.dumps({"v": 1, "seq": seq, "t": t, **body}))
    return summarize_process(replay_bytes(b"\n".join(lines) + b"\n").state)


def _sample(power_w: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "sample", "power_w": power_w, **extra}


def _ws(energy_mj: float | None = None) -> dict[str, Any]:
    return {"type": "window_started", "energy_mj": energy_mj}


def _we(energy_mj: float | None = None) -> dict[str, Any]:
    return {"type": "window_ended", "energy_mj": energy_mj}


class TestWindow:
    """The measured window runs from ``window_started.t`` to ``window_ended.t``."""

    def test_window_length_is_inference_time(self) -> None:
        """``inference_time_sec`` and ``duration_sec`` are the window's length."""
        s = _summary((10.0, _ws()), (12.5, _we()))
        assert s.inference_time_sec == 2.5
        assert s.raw.inference_metrics.inference_time_sec == 2.5
        assert s.raw.timestamps.duration_sec == 2.5
        assert s.raw.timestamps.start.timestamp() == 10.0

    def test_unclosed_window_ends_at_the_last_sample(self) -> None:
        """A window that was never closed covers up to its last sample, with a warning."""
        s = _summary((10.0, _ws()), (11.0, _sample(100.0)), (12.5, _sample(100.0)))
        assert s.inference_time_sec == 2.5
        assert any("never closed" in w for w in s.warnings)

    def test_unclosed_window_without_samples_has_no_length(self) -> None:
        """A window that was never closed and saw no sample has length 0."""
        s = _summary((10.0, _ws()), (11.0, {"type": "warning", "message": "x"}))
        assert s.inference_time_sec == 0.0
        assert not s.has_window


class TestEnergy:
    """Energy comes from the counter when it can, else from the power samples."""

    def test_counter_difference(self) -> None:
        """With both counter readings, energy is their difference in joules."""
        s = _summary((10.0, _ws(5_000_000)), (11.0, _sample(999.0)), (12.0, _we(5_123_400)))
        assert s.energy_j == pytest.approx(123.4)
        assert s.energy_source == "counter"
        assert s.raw.energy_metrics.total_energy_j == pytest.approx(123.4)

    @pytest.mark.parametrize(
        ("start_mj", "end_mj"), [(None, 5_000_000), (5_000_000, None), (None, None)]
    )
    def test_trapezoid_without_both_readings(
        self, start_mj: float | None, end_mj: float | None
    ) -> None:
        """Without both counter readings, energy is the trapezoid integral of in-window power,
        with the window's edges held at the nearest reading."""
        s = _summary(
            (9.0, _sample(1000.0)),
            (10.0, _ws(start_mj)),
            (10.5, _sample(100.0)),
            (11.5, _sample(200.0)),
            (13.5, _sample(150.0)),
            (14.0, _we(end_mj)),
            (15.0, _sample(1000.0)),
        )
        # 1.0 s * (100 + 200) / 2 + 2.0 s * (200 + 150) / 2, samples at 9.0 and 15.0 excluded,
        # plus the edges held at the nearest reading: 0.5 s * 100 W and 0.5 s * 150 W.
        assert s.energy_j == pytest.approx(150.0 + 350.0 + 50.0 + 75.0)
        assert s.energy_source == "power_integral"
        assert s.warnings

    def test_counter_going_backwards_falls_back_to_power(self) -> None:
        """An end reading below the start reading is a reset: the power integral is used."""
        s = _summary(
            (10.0, _ws(9_000_000)),
            (10.0, _sample(100.0)),
            (12.0, _sample(100.0)),
            (12.0, _we(1_000)),
        )
        assert s.energy_j == pytest.approx(200.0)
        assert s.energy_source == "power_integral"
        assert any("reset" in w for w in s.warnings)

    def test_sample_counter_reset_falls_back_to_power(self) -> None:
        """A sample counter reading that goes backwards in the window also means a reset."""
        s = _summary(
            (10.0, _ws(1_000)),
            (10.0, _sample(50.0, energy_mj=5_000)),
            (11.0, _sample(50.0, energy_mj=10)),
            (12.0, _we(900_000)),
        )
        assert s.energy_source == "power_integral"
        # 1 s at 50 W between the samples, and 1 s at 50 W held from 11.0 to the end at 12.0.
        assert s.energy_j == pytest.approx(50.0 + 50.0)

    def test_no_figure_at_all(self) -> None:
        """Without counter readings or two power samples, the energy is 0 with a warning."""
        s = _summary((10.0, _ws()), (11.0, _sample(100.0)), (12.0, _we()))
        assert (s.energy_j, s.energy_source) == (0.0, "none")
        assert any("no energy figure" in w for w in s.warnings)


class TestTokensAndLatencies:
    """Tokens are summed and latency lists kept raw."""

    def test_tokens_and_throughput(self) -> None:
        """Token sums and ``tokens_per_second`` follow the documented formulas."""
        req = {"type": "request", "latency_ms": 5.0}
        s = _summary(
            (10.0, _ws()),
            (11.0, {**req, "input_tokens": 10, "output_tokens": 30, "itl_ms": [1.0, 2.0]}),
            (12.0, {**req, "input_tokens": 20, "output_tokens": 40, "ttft_ms": 7.0}),
            (14.0, _we()),
        )
        m = s.raw.inference_metrics
        assert (m.input_tokens, m.output_tokens, m.total_tokens) == (30, 70, 100)
        assert m.tokens_per_second == pytest.approx(100 / 4.0)
        assert list(s.ttft_ms) == [7.0]
        assert list(s.itl_ms) == [1.0, 2.0]
        assert s.raw.per_request_latencies_ms == [5.0, 5.0]


class TestBaseline:
    """``adjusted_j = max(0, energy_j - baseline.power_w * inference_time_sec)``."""

    @pytest.mark.parametrize(
        ("energy_mj", "power_w", "expected_j"),
        [(1_000_000, 100.0, 1000.0 - 400.0), (1_000_000, 300.0, 0.0), (0, 0.0, 0.0)],
    )
    def test_adjusted_energy(self, energy_mj: float, power_w: float, expected_j: float) -> None:
        """The baseline-adjusted energy subtracts idle power over the window, floored at 0."""
        s = _summary(
            (1.0, {"type": "baseline", "power_w": power_w, "duration_sec": 30.0}),
            (10.0, _ws(0)),
            (14.0, _we(energy_mj)),
        )
        assert s.raw.energy_breakdown is not None
        assert s.raw.energy_breakdown.adjusted_j == pytest.approx(expected_j)
        assert s.baseline_power_w == power_w

    def test_no_baseline_no_adjusted_energy(self) -> None:
        """Without a baseline event there is no adjusted figure."""
        s = _summary((10.0, _ws(0)), (14.0, _we(1000)))
        assert s.raw.energy_breakdown is not None
        assert s.raw.energy_breakdown.adjusted_j is None


class TestThrottling:
    """Throttling is read from the NVML reason bits of in-window samples."""

    @pytest.mark.parametrize(
        ("bits", "detected", "thermal", "power", "sw_thermal", "hw_thermal", "hw_power"),
        [
            (0x0, False, False, False, False, False, False),
            (0x1, False, False, False, False, False, False),
            (0x2, False, False, False, False, False, False),
            (0x100, False, False, False, False, False, False),
            (0x4, True, False, True, False, False, False),
            (0x8, True, False, False, False, False, False),
            (0x20, True, True, False, True, False, False),
            (0x40, True, True, False, False, True, False),
            (0x80, True, False, False, False, False, True),
            (0x4 | 0x40, True, True, True, False, True, False),
        ],
    )
    def test_reason_bits(
        self,
        bits: int,
        detected: bool,
        thermal: bool,
        power: bool,
        sw_thermal: bool,
        hw_thermal: bool,
        hw_power: bool,
    ) -> None:
        """Each NVML reason bit sets the flags docs/format.md lists for it, and no others."""
        s = _summary(
            (10.0, _ws()),
            (11.0, _sample(100.0, throttle_reasons=bits)),
            (13.0, _sample(100.0, throttle_reasons=0)),
            (14.0, _we()),
        )
        info = s.raw.thermal_throttle
        assert info is not None
        assert (
            info.detected,
            info.thermal,
            info.power,
            info.sw_thermal,
            info.hw_thermal,
            info.hw_power,
        ) == (detected, thermal, power, sw_thermal, hw_thermal, hw_power)
        assert info.throttle_duration_sec == (2.0 if detected else 0.0)
        assert info.throttle_timestamps == ([11.0] if detected else [])

    def test_bits_outside_the_window_are_ignored(self) -> None:
        """Throttle bits of samples before or after the window do not count."""
        s = _summary(
            (9.0, _sample(100.0, throttle_reasons=0x40)),
            (10.0, _ws()),
            (11.0, _sample(100.0, throttle_reasons=0)),
            (14.0, _we()),
            (15.0, _sample(100.0, throttle_reasons=0x20)),
        )
        assert s.raw.thermal_throttle is not None
        assert not s.raw.thermal_throttle.detected

    def test_max_temperature(self) -> None:
        """The highest in-window temperature is reported."""
        s = _summary(
            (10.0, _ws()),
            (11.0, _sample(temperature_c=70.0)),
            (12.0, _sample(temperature_c=81.5)),
            (13.0, _sample(temperature_c=75.0)),
            (14.0, _we()),
            (15.0, _sample(temperature_c=99.0)),
        )
        assert s.max_temperature_c == 81.5
