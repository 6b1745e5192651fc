"""A process's log as time series: every sample and request with its time (pure).

The fold (``core.state``) keeps only what the result needs, so a plot of power over time, or a
histogram of TTFT, needs a second projection of the same events. ``TimelineBuilder`` is that
projection: it is fed the events the replay folds, in the same batches (``ReplayCursor``'s
``observer``), so a timeline holds exactly the events the result was computed from, no more and
no fewer, whether a corrupt line was skipped or not.

Values are kept in ``array('d')`` (8 bytes each) while feeding and handed out as numpy arrays.
A reading a sample did not carry is NaN (``-1`` for throttle bits), so all columns of a
timeline stay aligned by index.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from energy_ledger.core.energy import key_of
from energy_ledger.core.events import (
    Baseline,
    Event,
    ProcessStarted,
    Request,
    Sample,
    UnknownEvent,
    Warmup,
    WindowEnded,
    WindowStarted,
)
from energy_ledger.core.state import THROTTLE_ANY

NAN = math.nan

Floats = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Phase:
    """A named span of a process's run, in the writer's UNIX seconds."""

    name: str
    start_t: float
    end_t: float


@dataclass(frozen=True, slots=True)
class ProcessTimeline:
    """One process's samples and requests, aligned by index within each group.

    Attributes:
        process_index: the process's index (from ``process_started``; -1 if the log had none).
        gpu_key: the physical GPU's key as the energy attribution uses it (``gpu:<uuid>``, else
            ``process:<index>``), so that processes sharing a GPU can be drawn together.
        hostname, gpu_id, gpu_uuid, gpu_name: from ``process_started``.
        sample_t: UNIX seconds of every ``sample`` event (inside and outside the window).
        power_w, energy_mj, temperature_c, sm_util_pct, memory_used_mb: the readings; NaN
            where a sample did not carry one.
        throttle_reasons: NVML clocks-event bits; -1 where a sample did not carry them.
        request_t: UNIX seconds each request was logged (its completion).
        latency_ms, ttft_ms: per request (TTFT NaN where not logged).
        input_tokens, output_tokens: per request.
        in_window: per request, whether it was logged inside the measured window (the
            requests the result counts).
        itl_ms: every inter-token interval of the requests inside the window, in log order.
        baseline: the idle-baseline measurement as a phase (it ends at the ``baseline``
            event), or ``None``.
        warmup_end_t: time of the ``warmup`` event, or ``None``.
        window_start_t, window_end_t: the measured window's edges, or ``None``.
    """

    process_index: int
    gpu_key: str
    hostname: str | None
    gpu_id: int | None
    gpu_uuid: str | None
    gpu_name: str | None
    sample_t: Floats
    power_w: Floats
    energy_mj: Floats
    temperature_c: Floats
    sm_util_pct: Floats
    memory_used_mb: Floats
    throttle_reasons: NDArray[np.int64]
    request_t: Floats
    latency_ms: Floats
    ttft_ms: Floats
    input_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]
    in_window: NDArray[np.bool_]
    itl_ms: Floats
    baseline: Phase | None
    warmup_end_t: float | None
    window_start_t: float | None
    window_end_t: float | None

    @property
    def first_t(self) -> float | None:
        """The earliest time any column or phase of this timeline holds."""
        times = [t for t in self._edges() if t is not None]
        return min(times) if times else None

    @property
    def last_t(self) -> float | None:
        """The latest time any column or phase of this timeline holds."""
        times = [t for t in self._edges() if t is not None]
        return max(times) if times else None

    def _edges(self) -> list[float | None]:
        out: list[float | None] = [self.window_start_t, self.window_end_t, self.warmup_end_t]
        if self.baseline is not None:
            out += [self.baseline.start_t, self.baseline.end_t]
        for column in (self.sample_t, self.request_t):
            if len(column):
                out += [float(column[0]), float(column[-1])]
        return out

    def phases(self) -> list[Phase]:
        """Baseline, warm-up and the measured window, where the log has them, in time order.

        Warm-up runs from the end of the baseline (or the first event) to the ``warmup``
        event; the window from ``window_started`` to ``window_ended`` (or the last event
        while it is open).
        """
        out: list[Phase] = []
        if self.baseline is not None:
            out.append(self.baseline)
        if self.warmup_end_t is not None:
            start = self.baseline.end_t if self.baseline is not None else self.first_t
            if start is not None and start < self.warmup_end_t:
                out.append(Phase("warm-up", start, self.warmup_end_t))
        if self.window_start_t is not None:
            end = self.window_end_t if self.window_end_t is not None else self.last_t
            out.append(Phase("measured window", self.window_start_t, end or self.window_start_t))
        return out

    def throttle_intervals(self) -> list[tuple[float, float]]:
        """Spans during which the GPU reported a power or thermal slowdown.

        A span starts at a sample whose bits include one of ``THROTTLE_ANY`` and ends at the
        next sample that has none (or at the last sample), as ``core.state`` counts
        ``throttle_duration_sec`` inside the window; a sample that carried no bits counts as
        none there too.
        """
        out: list[tuple[float, float]] = []
        start: float | None = None
        for t, bits in zip(self.sample_t.tolist(), self.throttle_reasons.tolist(), strict=True):
            throttled = bits > 0 and bool(bits & THROTTLE_ANY)
            if throttled and start is None:
                start = t
            elif not throttled and start is not None:
                out.append((start, t))
                start = None
        if start is not None:
            out.append((start, float(self.sample_t[-1])))
        return out


@dataclass(slots=True)
class TimelineBuilder:
    """Collects a ``ProcessTimeline`` from the events a replay folds (``feed`` each batch)."""

    started: ProcessStarted | None = None
    baseline: Baseline | None = None
    warmup: Warmup | None = None
    window_start_t: float | None = None
    window_end_t: float | None = None
    sample_t: array[float] = field(default_factory=lambda: array("d"))
    power_w: array[float] = field(default_factory=lambda: array("d"))
    energy_mj: array[float] = field(default_factory=lambda: array("d"))
    temperature_c: array[float] = field(default_factory=lambda: array("d"))
    sm_util_pct: array[float] = field(default_factory=lambda: array("d"))
    memory_used_mb: array[float] = field(default_factory=lambda: array("d"))
    throttle_reasons: array[int] = field(default_factory=lambda: array("q"))
    request_t: array[float] = field(default_factory=lambda: array("d"))
    latency_ms: array[float] = field(default_factory=lambda: array("d"))
    ttft_ms: array[float] = field(default_factory=lambda: array("d"))
    input_tokens: array[int] = field(default_factory=lambda: array("q"))
    output_tokens: array[int] = field(default_factory=lambda: array("q"))
    in_window: array[int] = field(default_factory=lambda: array("b"))
    itl_ms: array[float] = field(default_factory=lambda: array("d"))

    def feed(self, events: Sequence[Event | UnknownEvent]) -> None:
        """Take the next events of the log, in order (the replay's observer)."""
        for event in events:
            kind = type(event)
            if kind is Sample:
                self._sample(event)  # type: ignore[arg-type]
            elif kind is Request:
                self._request(event)  # type: ignore[arg-type]
            elif kind is ProcessStarted:
                self.started = event  # type: ignore[assignment]
            elif kind is Baseline:
                self.baseline = event  # type: ignore[assignment]
            elif kind is Warmup:
                self.warmup = event  # type: ignore[assignment]
            elif kind is WindowStarted:
                self.window_start_t = event.t
            elif kind is WindowEnded:
                self.window_end_t = event.t

    def _sample(self, s: Sample) -> None:
        self.sample_t.append(s.t)
        self.power_w.append(NAN if s.power_w is None else s.power_w)
        self.energy_mj.append(NAN if s.energy_mj is None else s.energy_mj)
        self.temperature_c.append(NAN if s.temperature_c is None else s.temperature_c)
        self.sm_util_pct.append(NAN if s.sm_util_pct is None else s.sm_util_pct)
        self.memory_used_mb.append(NAN if s.memory_used_mb is None else s.memory_used_mb)
        self.throttle_reasons.append(-1 if s.throttle_reasons is None else s.throttle_reasons)

    def _request(self, r: Request) -> None:
        inside = self.window_start_t is not None and self.window_end_t is None
        self.request_t.append(r.t)
        self.latency_ms.append(r.latency_ms)
        self.ttft_ms.append(NAN if r.ttft_ms is None else r.ttft_ms)
        self.input_tokens.append(r.input_tokens)
        self.output_tokens.append(r.output_tokens)
        self.in_window.append(1 if inside else 0)
        if inside and r.itl_ms:
            self.itl_ms.extend(r.itl_ms)

    def build(self, process_index: int | None = None) -> ProcessTimeline:
        """The timeline of everything fed so far (the builder may be fed more afterwards)."""
        s = self.started
        index = process_index if process_index is not None else (s.process_index if s else -1)
        baseline = None
        if self.baseline is not None:
            b = self.baseline
            baseline = Phase("baseline", max(0.0, b.t - b.duration_sec), b.t)
        return ProcessTimeline(
            process_index=index,
            gpu_key=key_of(s.gpu_uuid if s else None, index),
            hostname=s.hostname if s else None,
            gpu_id=s.gpu_id if s else None,
            gpu_uuid=s.gpu_uuid if s else None,
            gpu_name=s.gpu_name if s else None,
            sample_t=_floats(self.sample_t),
            power_w=_floats(self.power_w),
            energy_mj=_floats(self.energy_mj),
            temperature_c=_floats(self.temperature_c),
            sm_util_pct=_floats(self.sm_util_pct),
            memory_used_mb=_floats(self.memory_used_mb),
            throttle_reasons=np.array(self.throttle_reasons, dtype=np.int64),
            request_t=_floats(self.request_t),
            latency_ms=_floats(self.latency_ms),
            ttft_ms=_floats(self.ttft_ms),
            input_tokens=np.array(self.input_tokens, dtype=np.int64),
            output_tokens=np.array(self.output_tokens, dtype=np.int64),
            in_window=np.array(self.in_window, dtype=np.bool_),
            itl_ms=_floats(self.itl_ms),
            baseline=baseline,
            warmup_end_t=self.warmup.t if self.warmup is not None else None,
            window_start_t=self.window_start_t,
            window_end_t=self.window_end_t,
        )


def _floats(values: array[float]) -> Floats:
    return np.frombuffer(values, dtype=np.float64).copy() if len(values) else np.empty(0)


__all__ = ["Phase", "ProcessTimeline", "TimelineBuilder"]
