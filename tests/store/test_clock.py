"""Tests for energy_ledger.store.clock: the anchored event clock and the filesystem offset."""

from __future__ import annotations

import time

import pytest

from energy_ledger.store import clock
from energy_ledger.store.clock import (
    WHOLE_SECOND_ERROR_SEC,
    AnchoredClock,
    CallerClock,
    estimate_fs_offset,
    event_clock,
)
from tests.helpers import ticking_clock


class TestAnchoredClock:
    """``AnchoredClock`` is the wall clock at the anchor plus the monotonic time since."""

    def test_reading_is_anchor_plus_elapsed_monotonic(self) -> None:
        """``t`` of a reading is ``wall0 + (monotonic - mono0)``, computed here from its parts."""
        anchored = AnchoredClock()
        t, mono_sec = anchored.reading()
        assert t == anchored.wall0_sec + (mono_sec - anchored.mono0_sec)
        assert mono_sec >= anchored.mono0_sec

    def test_starts_at_the_wall_clock(self) -> None:
        """Made now, it reads the wall clock of now (both were read within this test)."""
        before = time.time()
        anchored = AnchoredClock()
        after = time.time()
        assert before <= anchored.wall0_sec <= after
        assert anchored.now() >= anchored.wall0_sec

    def test_never_goes_backwards_when_the_wall_clock_steps_back(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A system clock set back an hour after the anchor does not move ``t`` back."""
        anchored = AnchoredClock()
        first = anchored.now()
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)
        readings = [anchored.now() if i % 2 else anchored.reading()[0] for i in range(200)]
        assert readings == sorted(readings)
        assert readings[0] >= first
        assert time.time() < first - 3000.0  # the step did happen, outside the anchored clock

    def test_now_and_reading_agree(self) -> None:
        """Interleaved ``now()`` and ``reading()`` calls give one non-decreasing series."""
        anchored = AnchoredClock()
        series = []
        for _ in range(100):
            series.append(anchored.now())
            series.append(anchored.reading()[0])
        assert series == sorted(series)


class TestEventClock:
    """``event_clock`` anchors a new clock unless the caller gives one."""

    def test_default_is_anchored(self) -> None:
        """Without a clock, events are stamped by an ``AnchoredClock``."""
        assert isinstance(event_clock(), AnchoredClock)
        assert isinstance(event_clock(None), AnchoredClock)

    def test_caller_clock_is_kept(self) -> None:
        """A given clock stamps events; its reading pairs it with the monotonic clock."""
        given = ticking_clock(100.0, 2.0)
        wrapped = event_clock(given)
        assert isinstance(wrapped, CallerClock)
        assert wrapped.now() == 100.0
        before = time.monotonic()
        t, mono_sec = wrapped.reading()
        assert t == 102.0
        assert before <= mono_sec <= time.monotonic()


class TestEstimateFsOffset:
    """The offset interval is ``[before - m - lag, after - m]``; estimate its middle."""

    @pytest.mark.parametrize(
        ("before_sec", "after_sec", "mtime_ns", "lag_sec"),
        [
            (1000.0, 1000.002, 1_000_001_000_000, 0.004),  # same clock
            (1003.0, 1003.002, 1_000_001_000_000, 0.004),  # this host 3 s ahead
            (997.5, 997.5, 1_000_000_000_000, 0.0),  # 2.5 s behind, an instant write
            (1000.0, 1000.5, 999_900_000_000, 0.01),  # a slow write (NFS round trip)
        ],
    )
    def test_interval_middle_and_half_width(
        self, before_sec: float, after_sec: float, mtime_ns: int, lag_sec: float
    ) -> None:
        """Estimate and error are the middle and half-width of the interval, worked out here."""
        m = mtime_ns / 1e9
        low, high = before_sec - m - lag_sec, after_sec - m
        got = estimate_fs_offset(before_sec, after_sec, mtime_ns, lag_sec=lag_sec)
        assert got is not None
        assert got.offset_sec == pytest.approx((low + high) / 2, abs=1e-9)
        assert got.error_sec == pytest.approx((high - low) / 2, abs=1e-9)
        assert not got.whole_second_mtime

    def test_whole_second_mtime_adds_a_second(self) -> None:
        """A filesystem that keeps whole seconds widens the error by ``WHOLE_SECOND_ERROR_SEC``."""
        fine = estimate_fs_offset(1000.2, 1000.3, 1_000_000_000_000, lag_sec=0.0)
        coarse = estimate_fs_offset(
            1000.2, 1000.3, 1_000_000_000_000, lag_sec=0.0, whole_second_mtime=True
        )
        assert fine is not None and coarse is not None
        assert coarse.offset_sec == fine.offset_sec
        assert coarse.error_sec == pytest.approx(fine.error_sec + WHOLE_SECOND_ERROR_SEC)
        assert coarse.whole_second_mtime

    def test_clock_stepped_during_the_write_bounds_nothing(self) -> None:
        """``after < before`` (the wall clock went back mid-write) gives no estimate."""
        assert estimate_fs_offset(1000.0, 999.0, 1_000_000_000_000) is None

    def test_default_lag_is_the_coarse_tick(self) -> None:
        """Without ``lag_sec`` the module's mtime lag bound widens the lower edge."""
        got = estimate_fs_offset(10.0, 10.0, 10_000_000_000)
        assert got is not None
        assert got.error_sec == pytest.approx(clock.MTIME_LAG_SEC / 2)
        assert 0.0 < clock.MTIME_LAG_SEC <= 0.1
