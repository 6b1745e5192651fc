"""Tests of the recorder's time: the anchored event clock and the ``clock`` events (fake NVML)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.fake import FakeFaults, FakeNvml
from energy_ledger.recorder.launch import LaunchInfo
from energy_ledger.recorder.recorder import ProcessRecorder
from tests.helpers import read_events, ticking_clock, wait_for
from tests.recorder.test_recorder import of_type, recorder, run_window


def types(evs: list[dict[str, Any]]) -> list[str]:
    """The event types in log order."""
    return [e["type"] for e in evs]


def after(evs: list[dict[str, Any]], type_name: str) -> dict[str, Any]:
    """The event right after the first event of ``type_name``."""
    return evs[types(evs).index(type_name) + 1]


class TestClockEventPlaces:
    """``clock`` events come at the documented places, with consistent readings."""

    def test_after_start_at_window_edges_and_before_finish(self, tmp_path: Path) -> None:
        """One after process_started, one after each window edge with its ``t``, one last."""
        rec = recorder(tmp_path)
        with rec:
            rec.baseline(seconds=0.02)
            with rec.window():
                rec.request(latency_ms=1.0, input_tokens=1, output_tokens=1)
        evs = read_events(rec.log_path)
        assert evs[1]["type"] == "clock"
        for edge in ("window_started", "window_ended"):
            clock = after(evs, edge)
            assert clock["type"] == "clock"
            assert clock["t"] == of_type(evs, edge)[0]["t"]
        assert types(evs)[-2:] == ["clock", "process_finished"]

    def test_readings_are_consistent(self, tmp_path: Path) -> None:
        """``t`` never decreases, ``monotonic_sec`` increases, and ``wall_t`` is the host's."""
        before = time.time()
        rec = recorder(tmp_path)
        run_window(rec)
        evs = read_events(rec.log_path)
        times = [e["t"] for e in evs]
        assert times == sorted(times)
        clocks = of_type(evs, "clock")
        monotonic = [c["monotonic_sec"] for c in clocks]
        assert monotonic == sorted(monotonic) and len(set(monotonic)) == len(monotonic)
        assert all(before <= c["wall_t"] <= time.time() for c in clocks)
        # t is the anchored clock: the anchor's wall time plus elapsed monotonic time, so the
        # t and monotonic differences between two clock events are the same.
        first, last = clocks[0], clocks[-1]
        elapsed = last["monotonic_sec"] - first["monotonic_sec"]
        assert last["t"] - first["t"] == pytest.approx(elapsed, abs=1e-6)

    def test_filesystem_offset_on_a_local_file_is_zero(self, tmp_path: Path) -> None:
        """Every clock event measures the offset; on a local file it is 0 within its error."""
        rec = recorder(tmp_path)
        run_window(rec)
        clocks = of_type(read_events(rec.log_path), "clock")
        assert clocks and all("fs_offset_sec" in c for c in clocks)
        assert all(abs(c["fs_offset_sec"]) <= c["fs_offset_error_sec"] for c in clocks)

    def test_failure_writes_a_clock_before_process_failed(self, tmp_path: Path) -> None:
        """A run that raises still ends with a clock event and then process_failed."""
        rec = recorder(tmp_path)
        with pytest.raises(RuntimeError), rec, rec.window():
            raise RuntimeError("boom")
        assert types(read_events(rec.log_path))[-2:] == ["clock", "process_failed"]

    def test_injected_clock_stamps_the_clock_events(self, tmp_path: Path) -> None:
        """With ``clock=`` every event, clock events too, carries that clock's ``t``; a clock
        event's ``wall_t`` is still the host's ``time.time()``."""
        t0 = 2_000_000_000.0
        fake_clock = ticking_clock(t0, 0.001)
        before = time.time()
        rec = recorder(tmp_path, fake=FakeNvml(4, clock=fake_clock), clock=fake_clock)
        run_window(rec)
        after_sec = time.time()
        evs = read_events(rec.log_path)
        assert all(t0 <= e["t"] < t0 + 100.0 for e in evs)
        assert [e["t"] for e in evs] == sorted(e["t"] for e in evs)
        assert all(before <= c["wall_t"] <= after_sec for c in of_type(evs, "clock"))

    def test_interval_must_be_positive(self, tmp_path: Path) -> None:
        """A zero ``clock_interval_sec`` is refused."""
        with pytest.raises(LedgerError, match="clock_interval_sec"):
            recorder(tmp_path, clock_interval_sec=0.0)


class TestPeriodicClock:
    """In the window, the sampler thread writes a clock event every ``clock_interval_sec``."""

    def test_periodic_clock_events_ride_on_samples(self, tmp_path: Path) -> None:
        """Between the edges, clock events share a sample's ``t`` and are an interval apart."""
        interval_sec = 0.05
        rec = recorder(
            tmp_path, clock_interval_sec=interval_sec, writer_options={"flush_every_events": 1}
        )
        with rec, rec.window():

            def periodic() -> list[dict[str, Any]]:
                data = Path(rec.log_path).read_bytes()
                evs = [orjson.loads(line) for line in data.split(b"\n")[:-1]]  # whole lines
                return of_type(evs[types(evs).index("window_started") + 2 :], "clock")

            wait_for(lambda: len(periodic()) >= 2, "two periodic clock events")
        evs = read_events(rec.log_path)
        start = types(evs).index("window_started") + 1
        end = types(evs).index("window_ended")
        inside = of_type(evs[start:end], "clock")
        sample_times = {s["t"] for s in of_type(evs, "sample")}
        assert len(inside) >= 3 and all(c["t"] in sample_times for c in inside[1:])
        gaps = [b["monotonic_sec"] - a["monotonic_sec"] for a, b in itertools.pairwise(inside)]
        assert all(gap >= interval_sec for gap in gaps)

    def test_time_order_holds_when_a_sample_brings_warnings(self, tmp_path: Path) -> None:
        """A periodic clock event and the warnings of the same sample keep ``t`` in order."""
        fake = FakeNvml(1, faults=FakeFaults.parse("power_w@3;temperature_c@4;sm_util_pct@5"))
        rec = recorder(tmp_path, fake=fake, clock_interval_sec=1e-6)
        with rec, rec.window():
            wait_for(lambda: fake.devices[0].calls("sm_util_pct") >= 6, "six samples")
        data = Path(rec.log_path).read_bytes()
        evs = read_events(rec.log_path)
        assert [e["t"] for e in evs] == sorted(e["t"] for e in evs)
        assert sum("failed" in w["message"] for w in of_type(evs, "warning")) == 3
        assert replay_bytes(data).state.finished


class TestTimeOrder:
    """``t`` never goes backwards, whichever thread appends."""

    def test_every_event_is_stamped_under_the_lock(self, tmp_path: Path) -> None:
        """The clock is read only while the recorder's lock is held, so the sampler thread
        cannot append an event between a ``t`` being read and its event being appended."""
        held: list[bool] = []
        ticks = ticking_clock(2_000_000_000.0, 0.001)

        def clock() -> float:
            held.append(rec._lock.locked())
            return ticks()

        # A sampler that never samples (its first reading would come in 100 s), so that the
        # lock is held only by this thread, and ``locked()`` says whether it holds it.
        rec = ProcessRecorder(
            tmp_path,
            "exp",
            launch=LaunchInfo(0, 1, 0, "run-1", "0"),
            nvml=FakeNvml(1),
            sample_hz=0.01,
            clock=clock,
            snapshot_packages=False,
        )
        with rec:
            rec.baseline(power_w=50.0)
            with rec.window():
                for _ in range(5):
                    rec.request(latency_ms=1.0, input_tokens=1, output_tokens=1)
            rec.warning("after the window")
        stamps = {e["t"] for e in read_events(rec.log_path)}
        assert len(stamps) > 10 and len(held) >= len(stamps)
        assert all(held)


class TestAnchoredClock:
    """The default event clock does not follow the system clock backwards."""

    def test_wall_clock_stepped_back_mid_window(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``t`` keeps increasing and the log replays; ``wall_t - t`` shows the step."""
        real_time = time.time
        rec = recorder(tmp_path, fake=FakeNvml(4, clock=real_time))
        with rec, rec.window():
            rec.request(latency_ms=1.0, input_tokens=1, output_tokens=1)
            monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)
            rec.request(latency_ms=1.0, input_tokens=1, output_tokens=1)
        monkeypatch.undo()
        data = Path(rec.log_path).read_bytes()
        evs = read_events(rec.log_path)
        assert [e["t"] for e in evs] == sorted(e["t"] for e in evs)
        steps = [c["wall_t"] - c["t"] for c in of_type(evs, "clock")]
        assert steps[0] == pytest.approx(0.0, abs=1.0)
        assert steps[-1] == pytest.approx(-3600.0, abs=1.0)
        state = replay_bytes(data).state
        assert state.finished and state.requests == 2
