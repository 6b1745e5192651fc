"""Per-process state folded from a ledger's events, and the fold itself.

``apply(state, event)`` is the one function that turns a state and an event into the next state.
For speed it updates the state in place and returns it: a replay of millions of events must not
allocate a new state per event. ``ProcessState.copy()`` gives an independent snapshot when one is
needed (the property tests use it).

Latency lists are kept as ``array('d')`` (8 bytes a value) so that a large log replays in little
memory. Samples are folded as they arrive (power integral, maxima, throttle time) and not stored,
except the SM utilisation values that ``RawProcessResult.gpu_utilisation_samples`` carries.
"""

from __future__ import annotations

import copy as _copy
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, assert_never, cast

from energy_ledger.core.events import (
    Baseline,
    Clock,
    Compute,
    Event,
    ProcessFailed,
    ProcessFinished,
    ProcessStarted,
    Request,
    Sample,
    UnknownEvent,
    Warmup,
    WarningEvent,
    WindowEnded,
    WindowStarted,
)
from energy_ledger.core.stats import ExactSum

# NVML clocks-event-reason bits (nvmlClocksEventReason*), see docs/metrics.md.
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_HW_SLOWDOWN = 0x8
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40
THROTTLE_HW_POWER_BRAKE = 0x80
THROTTLE_ANY = (
    THROTTLE_SW_POWER_CAP
    | THROTTLE_HW_SLOWDOWN
    | THROTTLE_SW_THERMAL
    | THROTTLE_HW_THERMAL
    | THROTTLE_HW_POWER_BRAKE
)


if TYPE_CHECKING:
    _FloatArray = array[float]
else:
    _FloatArray = array  # not subscriptable at run time before Python 3.12


class DiscardedSamples(_FloatArray):
    """An ``array('d')`` that keeps nothing it is given.

    A replay that needs the fold's order checks and counts but not every latency (the second
    read that writes an experiment's time series, ``store.series``) folds into a state whose
    per-request arrays are these (``ProcessState.light``), so that read costs no memory per
    event. ``append`` and ``extend`` are the only ways the fold adds to an array.
    """

    def __new__(cls) -> DiscardedSamples:
        return cast(DiscardedSamples, super().__new__(cls, "d"))

    def append(self, value: float, /) -> None:
        """Keep nothing."""

    def extend(self, values: object, /) -> None:
        """Keep nothing."""


@dataclass(slots=True)
class ProcessState:
    """Everything the replay knows about one process after the events folded so far."""

    started: ProcessStarted | None = None
    next_seq: int = 0
    last_seq: int = -1
    first_t: float | None = None
    last_t: float | None = None
    events: int = 0
    baseline: Baseline | None = None
    warmup: Warmup | None = None
    compute: Compute | None = None
    window_start_t: float | None = None
    window_start_energy_mj: float | None = None
    window_end_t: float | None = None
    window_end_energy_mj: float | None = None
    # Requests.
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    ttft_ms: array[float] = field(default_factory=lambda: array("d"))
    itl_ms: array[float] = field(default_factory=lambda: array("d"))
    # Per request, as LLenergyMeasure defines them (docs/metrics.md, "Latency statistics"):
    # each request's itl_ms without its first and last interval (when it has >= 3), and its
    # time per output token (latency_ms - ttft_ms) / (output_tokens - 1).
    itl_trimmed_ms: array[float] = field(default_factory=lambda: array("d"))
    tpot_ms: array[float] = field(default_factory=lambda: array("d"))
    # The TPOTs beyond the last ``TPOT_SPILL`` are only needed for their mean: they go into
    # an exact sum, so a long run keeps no array of them (``tpot_total``).
    tpot_sum: ExactSum = field(default_factory=ExactSum)
    # Samples inside the window.
    samples: int = 0
    power_integral_j: float = 0.0
    power_samples: int = 0
    prev_sample_t: float | None = None
    prev_power_w: float | None = None
    prev_power_t: float | None = None
    first_power_w: float | None = None
    first_power_t: float | None = None
    prev_throttle: int = 0
    sample_energy_mj: float | None = None
    counter_reset: bool = False
    max_temperature_c: float | None = None
    max_memory_used_mb: float | None = None
    sm_util_pct: array[float] = field(default_factory=lambda: array("d"))
    throttle_bits: int = 0
    throttle_duration_sec: float = 0.0
    throttle_timestamps: list[float] = field(default_factory=list)
    # Requests logged outside the measured window (warm-up, after the end): not counted.
    requests_outside_window: int = 0
    # Clock readings: (t, monotonic_sec, wall_t, fs_offset_sec, fs_offset_error_sec).
    clocks: list[tuple[float, float, float | None, float | None, float | None]] = field(
        default_factory=list
    )
    # Outcome.
    warnings: list[str] = field(default_factory=list)
    unknown_types: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    failed_error: str | None = None

    @classmethod
    def light(cls) -> ProcessState:
        """A state that folds counts, edges and checks but keeps no per-request or per-sample
        values (``DiscardedSamples``): for a replay that only feeds an observer."""
        return cls(
            latencies_ms=DiscardedSamples(),
            ttft_ms=DiscardedSamples(),
            itl_ms=DiscardedSamples(),
            itl_trimmed_ms=DiscardedSamples(),
            tpot_ms=DiscardedSamples(),
            sm_util_pct=DiscardedSamples(),
        )

    def copy(self) -> ProcessState:
        """An independent deep copy of this state."""
        return _copy.deepcopy(self)

    @property
    def window_open(self) -> bool:
        """True between ``window_started`` and ``window_ended``."""
        return self.window_start_t is not None and self.window_end_t is None


def _counter_went_backwards(state: ProcessState, t: float, before: float, after: float) -> None:
    """Record a reset (or wrap) of the energy counter; the energy then comes from power."""
    if state.counter_reset:
        return
    state.counter_reset = True
    state.warnings.append(
        f"energy counter went backwards at t={t:.3f} ({float(before)} -> {float(after)} mJ): "
        "counter reset or wrap, energy integrated from power samples instead"
    )


def add_samples(state: ProcessState, samples: Sequence[Sample]) -> None:
    """Fold sampler readings, in log order, into ``state``; readings outside the window are
    ignored.

    The running values live in local variables for the whole list and go back to the state
    once at the end: a replay calls this with a block's hundreds of samples, ``apply`` with a
    list of one.
    """
    start_t = state.window_start_t
    if start_t is None or state.window_end_t is not None:
        return
    n = 0
    prev_t = state.prev_sample_t
    prev_throttle = state.prev_throttle
    throttle_sec = state.throttle_duration_sec
    integral_j = state.power_integral_j
    prev_power_w, prev_power_t = state.prev_power_w, state.prev_power_t
    power_samples = state.power_samples
    energy_before = state.sample_energy_mj
    max_temperature_c, max_memory_mb = state.max_temperature_c, state.max_memory_used_mb
    throttle_bits = state.throttle_bits
    sm_util = state.sm_util_pct.append
    throttled_at = state.throttle_timestamps.append
    for s in samples:
        t = s.t
        if t < start_t:
            continue
        n += 1
        if prev_t is not None and prev_throttle & THROTTLE_ANY:
            throttle_sec += t - prev_t
        power_w = s.power_w
        if power_w is not None:
            # Trapezoids between consecutive power readings: a sample without power_w does not
            # cut the interval around it out of the integral.
            if prev_power_t is not None and prev_power_w is not None:
                integral_j += (t - prev_power_t) * (power_w + prev_power_w) / 2.0
            else:
                state.first_power_w, state.first_power_t = power_w, t
            power_samples += 1
            prev_power_w, prev_power_t = power_w, t
        prev_t = t
        energy_mj = s.energy_mj
        if energy_mj is not None:
            previous = energy_before if energy_before is not None else state.window_start_energy_mj
            if previous is not None and energy_mj < previous:
                _counter_went_backwards(state, t, previous, energy_mj)
            energy_before = energy_mj
        temperature_c = s.temperature_c
        if temperature_c is not None and (
            max_temperature_c is None or temperature_c > max_temperature_c
        ):
            max_temperature_c = temperature_c
        memory_mb = s.memory_used_mb
        if memory_mb is not None and (max_memory_mb is None or memory_mb > max_memory_mb):
            max_memory_mb = memory_mb
        if s.sm_util_pct is not None:
            sm_util(s.sm_util_pct)
        bits = s.throttle_reasons or 0
        if bits & THROTTLE_ANY:
            throttled_at(t)
        throttle_bits |= bits
        prev_throttle = bits
    state.samples += n
    state.prev_sample_t = prev_t
    state.prev_throttle = prev_throttle
    state.throttle_duration_sec = throttle_sec
    state.power_integral_j = integral_j
    state.prev_power_w, state.prev_power_t = prev_power_w, prev_power_t
    state.power_samples = power_samples
    state.sample_energy_mj = energy_before
    state.max_temperature_c, state.max_memory_used_mb = max_temperature_c, max_memory_mb
    state.throttle_bits = throttle_bits


def apply(state: ProcessState, event: Event | UnknownEvent) -> ProcessState:
    """Fold one event into ``state`` and return it (updated in place, see the module docstring).

    The caller (the replay) has already checked the ``seq`` order; the decoder has checked
    every field.
    """
    state.events += 1
    state.last_seq = event.seq
    state.next_seq = event.seq + 1
    if state.first_t is None:
        state.first_t = event.t
    state.last_t = event.t
    match event:
        case Request():
            if not state.window_open:
                state.requests_outside_window += 1
                return state
            state.requests += 1
            state.input_tokens += event.input_tokens
            state.output_tokens += event.output_tokens
            state.latencies_ms.append(event.latency_ms)
            if event.ttft_ms is not None:
                state.ttft_ms.append(event.ttft_ms)
                if event.output_tokens >= 2 and event.latency_ms >= event.ttft_ms:
                    state.tpot_ms.append(
                        (event.latency_ms - event.ttft_ms) / (event.output_tokens - 1)
                    )
            if event.itl_ms:
                state.itl_ms.extend(event.itl_ms)
                if len(event.itl_ms) >= 3:
                    state.itl_trimmed_ms.extend(event.itl_ms[1:-1])
        case Sample():
            add_samples(state, (event,))
        case ProcessStarted():
            state.started = event
        case Baseline():
            state.baseline = event
        case Warmup():
            state.warmup = event
        case WindowStarted():
            state.window_start_t = event.t
            state.window_start_energy_mj = event.energy_mj
        case WindowEnded():
            before = state.sample_energy_mj
            if before is None:
                before = state.window_start_energy_mj
            if event.energy_mj is not None and before is not None and event.energy_mj < before:
                _counter_went_backwards(state, event.t, before, event.energy_mj)
            state.window_end_t = event.t
            state.window_end_energy_mj = event.energy_mj
        case Compute():
            state.compute = event
        case WarningEvent():
            state.warnings.append(event.message)
        case Clock():
            state.clocks.append(
                (
                    event.t,
                    event.monotonic_sec,
                    event.wall_t,
                    event.fs_offset_sec,
                    event.fs_offset_error_sec,
                )
            )
        case ProcessFinished():
            state.finished = True
        case ProcessFailed():
            state.failed_error = event.error
        case UnknownEvent():
            name = event.type_name
            state.unknown_types[name] = state.unknown_types.get(name, 0) + 1
        case _:
            assert_never(event)
    return state


def apply_all(state: ProcessState, events: list[Event]) -> ProcessState:
    """``for event in events: apply(state, event)``, run faster; the caller checked the order.

    Nearly every event of a log is a request or a sample. Requests are summed in local
    variables and the envelope bookkeeping is done once for the whole list. Samples are held
    back and folded by one ``add_samples`` call per run of them: a run ends at the list's end
    or at the next event that is neither a request nor a sample (a window edge or a warning
    could depend on the samples before it), and requests and samples touch disjoint parts of
    the state. Every other event goes through ``apply`` itself. Nothing that ``apply`` does for
    one event reads the fields updated at the end, so the result is the same state (property
    tests check it on random logs).
    """
    if not events:
        return state
    if state.first_t is None:
        state.first_t = events[0].t
    n_hot = n_req = n_in = n_out = n_outside = 0
    latencies = state.latencies_ms.append
    ttfts = state.ttft_ms.append
    itls = state.itl_ms.extend
    trimmed = state.itl_trimmed_ms.extend
    tpots = state.tpot_ms.append
    window_open = state.window_open
    samples: list[Sample] = []
    hold = samples.append
    for event in events:
        if type(event) is Request:
            if not window_open:
                n_outside += 1
                continue
            n_req += 1
            n_in += event.input_tokens
            out_tokens = event.output_tokens
            n_out += out_tokens
            latency = event.latency_ms
            latencies(latency)
            ttft = event.ttft_ms
            if ttft is not None:
                ttfts(ttft)
                if out_tokens >= 2 and latency >= ttft:
                    tpots((latency - ttft) / (out_tokens - 1))
            itl = event.itl_ms
            if itl:
                itls(itl)
                if len(itl) >= 3:
                    trimmed(itl[1:-1])
        elif type(event) is Sample:
            hold(event)
        else:
            if samples:
                n_hot += len(samples)
                add_samples(state, samples)
                samples.clear()
            apply(state, event)
            window_open = state.window_open
    if samples:
        n_hot += len(samples)
        add_samples(state, samples)
    state.requests += n_req
    state.requests_outside_window += n_outside
    state.input_tokens += n_in
    state.output_tokens += n_out
    state.events += n_hot + n_req + n_outside
    state.last_seq = events[-1].seq
    state.next_seq = events[-1].seq + 1
    state.last_t = events[-1].t
    if len(state.tpot_ms) >= TPOT_SPILL:
        state.tpot_sum.add(state.tpot_ms)
        del state.tpot_ms[:]
    return state


TPOT_SPILL = 1 << 16
"""TPOT values held as an array before they are added to the state's exact sum (512 KB)."""


def tpot_total(state: ProcessState) -> ExactSum:
    """The exact sum and count of every TPOT folded into ``state`` (spilled and held)."""
    held = ExactSum()
    held.add(state.tpot_ms)
    return state.tpot_sum.merged(held)
