"""A process's samples and requests resampled to 1 Hz, incrementally (pure).

``SecondBins`` is a replay observer (``ReplayCursor.observer``), like ``core.timeline``'s
``TimelineBuilder``, but it keeps one row of running totals per whole UNIX second instead of
every event, so its memory grows with the run's duration in seconds, not with its events: an
hour of 10 Hz samples and a million requests is 3,600 rows. It sees exactly the events the
fold sees (a line skipped in lenient mode is skipped here too).

The bin of an event is ``floor(t)``, the whole UNIX second it was logged in. Every ``sample``
counts, inside and outside the measured window, so a series shows the warm-up too. Per second:

- ``t_sec``: the second's start (UNIX seconds, an integer).
- ``in_window``: some sample or request of that second was logged between ``window_started``
  and ``window_ended`` (in log order, as the fold decides what the result counts). Filtering on
  it keeps the seconds the result's figures come from; a second that straddles an edge of the
  window is kept whole.
- ``power_w``, ``temperature_c``, ``sm_util_pct``: the mean of the readings of the samples of
  that second that carry one. These are instantaneous readings taken at a steady period, so
  their mean is the second's average (for power: the second's energy in J, were the samples
  evenly spaced); a sum would depend on the sampling rate.
- ``energy_mj``: the last ``energy_mj`` reading of that second (the greatest ``t``; on a tie,
  the later in the log). The NVML energy counter is cumulative: its value at the end of a
  second is what a reader differences (``energy_mj[i] - energy_mj[i - 1]`` is the energy of
  second ``i``); a mean of a counter means nothing.
- ``memory_used_mb``: the maximum reading of that second: memory is a capacity question, and
  the peak is what an out-of-memory error depends on.
- ``throttle_reasons``: the bitwise OR of the NVML clocks-event bits of the samples of that
  second (0 when none carried bits): a reason that held at any sample of the second held
  during it, and OR keeps every reason seen, which a mean or a last value would hide.
- ``samples``: how many ``sample`` events fell in that second.
- ``requests``, ``output_tokens``: the ``request`` events logged in that second (by their
  ``t``, their completion time) and the sum of their output tokens, on this process.
- ``output_tokens_per_sec``: ``output_tokens / 1 s``: the tokens completed in that second.

A reading no sample of a second carried is NaN. A second with requests but no sample still
gets a row (its readings NaN, ``samples`` 0). Rows are sorted by ``t_sec``.

Processes sharing one physical GPU (the same ``gpu_uuid``) each sample that same GPU, so
``combine_by_gpu`` takes a GPU's readings from one process only: the one with the lowest index
among those that logged any sample. Adding or averaging the processes' readings would count
the GPU twice, or blend readings taken at different instants. Requests and output tokens are
work, not readings: they are summed over all of the GPU's processes per second, and
``in_window`` is true when it is for any of them.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from energy_ledger.core.events import (
    Event,
    ProcessStarted,
    Request,
    Sample,
    UnknownEvent,
    WindowEnded,
    WindowStarted,
)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

_MARKS = frozenset({ProcessStarted, WindowStarted, WindowEnded})
"""Event types that change how the events after them are binned."""

READING_COLUMNS = ("power_w", "energy_mj", "temperature_c", "sm_util_pct", "memory_used_mb")
"""The float readings of a row, in column order."""


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """A 1 Hz series, one row per second, all columns aligned by index (see the module doc).

    Attributes:
        t_sec: the second's start, UNIX seconds (sorted, distinct).
        in_window: some sample or request of the second was logged inside the window.
        power_w, temperature_c, sm_util_pct: means of the second's readings (NaN: none).
        energy_mj: the second's last energy counter reading (NaN: none).
        memory_used_mb: the second's largest reading (NaN: none).
        throttle_reasons: OR of the second's throttle bits (0: none).
        samples: samples in the second.
        requests: requests completed in the second.
        output_tokens: output tokens of those requests.
    """

    t_sec: Ints
    in_window: NDArray[np.bool_]
    power_w: Floats
    energy_mj: Floats
    temperature_c: Floats
    sm_util_pct: Floats
    memory_used_mb: Floats
    throttle_reasons: Ints
    samples: Ints
    requests: Ints
    output_tokens: Ints

    def __len__(self) -> int:
        return len(self.t_sec)

    @property
    def output_tokens_per_sec(self) -> Floats:
        """Output tokens completed per second: each row's ``output_tokens`` over its 1 s."""
        return self.output_tokens.astype(np.float64) / 1.0

    @classmethod
    def empty(cls) -> SeriesColumns:
        """A series of no rows."""
        f, i = np.empty(0, np.float64), np.empty(0, np.int64)
        return cls(i, np.empty(0, np.bool_), f, f, f, f, f, i, i, i, i)


@dataclass(frozen=True, slots=True)
class ProcessSeries:
    """One process's series and who it is.

    Attributes:
        process_index: the process's index.
        gpu_key: its physical GPU's key as the energy attribution gives it (``gpu:<uuid>``,
            else ``process:<index>``).
        hostname, gpu_id: from its ``process_started`` (``None`` without one).
        columns: the series.
    """

    process_index: int
    gpu_key: str
    hostname: str | None
    gpu_id: int | None
    columns: SeriesColumns


@dataclass(frozen=True, slots=True)
class GpuSeries:
    """One physical GPU's series (``combine_by_gpu``).

    Attributes:
        gpu_key: the GPU's key.
        reader_index: the process whose readings the rows hold (the lowest index with a
            sample; the lowest index when none has one).
        hostname, gpu_id: the reader's.
        process_indices: every process of this GPU, in index order.
        columns: readings of the reader; requests and tokens of all processes.
    """

    gpu_key: str
    reader_index: int
    hostname: str | None
    gpu_id: int | None
    process_indices: tuple[int, ...]
    columns: SeriesColumns


class SecondBins:
    """Running per-second totals of one log's samples and requests (feed it each batch).

    One entry per distinct second in each internal array, nothing per event. Events may come
    in any time order (a replay gives them in log order, where ``t`` never decreases); the
    rows come out sorted. Feeding in any batch split gives the same rows.
    """

    __slots__ = (
        "_energy_mj",
        "_energy_t",
        "_in_window",
        "_last_row",
        "_last_sec",
        "_memory_max_mb",
        "_n_power",
        "_n_sm",
        "_n_temperature",
        "_output_tokens",
        "_power_sum",
        "_requests",
        "_row_of",
        "_samples",
        "_sm_sum",
        "_t_sec",
        "_temperature_sum",
        "_throttle",
        "_window_ended",
        "_window_started",
        "started",
    )

    def __init__(self) -> None:
        self.started: ProcessStarted | None = None
        """The log's ``process_started`` event, once fed."""
        self._window_started = False
        self._window_ended = False
        self._row_of: dict[int, int] | None = None
        self._last_sec = -1
        self._last_row = -1
        self._t_sec: array[int] = array("q")
        self._in_window: array[int] = array("b")
        self._samples: array[int] = array("q")
        self._power_sum: array[float] = array("d")
        self._n_power: array[int] = array("q")
        self._temperature_sum: array[float] = array("d")
        self._n_temperature: array[int] = array("q")
        self._sm_sum: array[float] = array("d")
        self._n_sm: array[int] = array("q")
        self._energy_mj: array[float] = array("d")
        self._energy_t: array[float] = array("d")
        self._memory_max_mb: array[float] = array("d")
        self._throttle: array[int] = array("q")
        self._requests: array[int] = array("q")
        self._output_tokens: array[int] = array("q")

    def __len__(self) -> int:
        """The number of distinct seconds seen so far (the length of every internal array)."""
        return len(self._t_sec)

    def feed(self, events: Sequence[Event | UnknownEvent]) -> None:
        """Take the next events of the log, in order (the replay's observer).

        The events between two marks (the window's edges, ``process_started``) are taken as
        one run: its requests as columns (their counts and token sums are integers, so how
        the runs fall changes nothing), its samples one by one in log order (the readings'
        sums are floats, added in the order the log gives them).
        """
        if _MARKS.isdisjoint(map(type, events)):
            self._run(events)
            return
        start = 0
        for i, event in enumerate(events):
            kind = type(event)
            if kind in _MARKS:
                self._run(events[start:i])
                start = i + 1
                if kind is WindowStarted:
                    self._window_started = True
                elif kind is WindowEnded:
                    self._window_ended = True
                else:
                    self.started = cast(ProcessStarted, event)
        self._run(events[start:])

    def _run(self, events: Sequence[Event | UnknownEvent]) -> None:
        """Take events among which the window neither opens nor closes."""
        # ``type() is``, not ``isinstance``: the event types are final, and it is faster.
        requests = [e for e in events if type(e) is Request]
        # Samples first: a sampler's log has samples every second, so its rows are made in
        # time order and no index of seconds is needed (``_row_of_second``).
        if len(requests) < len(events):
            self._samples_of(events)
        if requests:
            self._requests_of(requests)

    def _requests_of(self, requests: list[Request]) -> None:
        inside = self._window_started and not self._window_ended
        times = [r.t for r in requests]
        tokens = [r.output_tokens for r in requests]
        first, last = math.floor(min(times)), math.floor(max(times))
        if first == last:  # usual: a block's requests within one second
            self._add_requests(first, len(times), sum(tokens), inside)
        elif last - first <= len(times) and times == sorted(times):  # a replay's order
            lo = 0
            for sec in range(first, last + 1):
                hi = bisect.bisect_left(times, sec + 1, lo)  # t < sec + 1 is floor(t) <= sec
                if hi > lo:
                    self._add_requests(sec, hi - lo, sum(tokens[lo:hi]), inside)
                lo = hi
        else:
            found, at = np.unique(np.floor(np.array(times)).astype(np.int64), return_inverse=True)
            per_second = np.zeros(len(found), np.int64)
            np.add.at(per_second, at, np.array(tokens, dtype=np.int64))
            counts = np.bincount(at, minlength=len(found)).tolist()
            for sec, n, n_tokens in zip(found.tolist(), counts, per_second.tolist(), strict=True):
                self._add_requests(sec, n, n_tokens, inside)

    def _add_requests(self, sec: int, n: int, output_tokens: int, inside: bool) -> None:
        row = self._row_of_second(sec)
        self._requests[row] += n
        self._output_tokens[row] += output_tokens
        if inside:
            self._in_window[row] = 1

    def _row_of_second(self, sec: int) -> int:
        """The row of second ``sec``, created when new.

        While seconds arrive in time order (a replay's), rows are sorted by second, so a row is
        found by bisection and no index is kept (a dict of an hour-long run's seconds would cost
        more than the rows); the first second older than the last one builds ``_row_of``.
        """
        if sec == self._last_sec:
            return self._last_row
        t_sec, row_of = self._t_sec, self._row_of
        if row_of is not None:
            row = row_of.get(sec)
            if row is None:
                row = row_of[sec] = self._new_row(sec)
        elif not t_sec or sec > t_sec[-1]:
            row = self._new_row(sec)
        else:
            row = bisect.bisect_left(t_sec, sec)
            if t_sec[row] != sec:  # out of time order: rows are no longer sorted
                self._row_of = {s: i for i, s in enumerate(t_sec)}
                row = self._row_of[sec] = self._new_row(sec)
        self._last_sec, self._last_row = sec, row
        return row

    def _new_row(self, sec: int) -> int:
        """Append an empty row for second ``sec``; its index."""
        row = len(self._t_sec)
        self._t_sec.append(sec)
        for ints in (self._in_window, self._samples, self._n_power, self._n_temperature):
            ints.append(0)
        for ints in (self._n_sm, self._throttle, self._requests, self._output_tokens):
            ints.append(0)
        for floats in (self._power_sum, self._temperature_sum, self._sm_sum):
            floats.append(0.0)
        self._energy_mj.append(math.nan)
        self._energy_t.append(-math.inf)
        self._memory_max_mb.append(math.nan)
        return row

    def _samples_of(self, events: Sequence[Event | UnknownEvent]) -> None:
        """Add the samples among ``events`` to their seconds' running values, in log order.

        One loop with the arrays in local names: this runs for every sample of a replay.
        """
        inside = self._window_started and not self._window_ended
        floor, nan, isnan = math.floor, math.nan, math.isnan
        row_of_second = self._row_of_second
        samples, in_window = self._samples, self._in_window
        power_sum, n_power = self._power_sum, self._n_power
        temperature_sum, n_temperature = self._temperature_sum, self._n_temperature
        sm_sum, n_sm = self._sm_sum, self._n_sm
        energy_mj, energy_t = self._energy_mj, self._energy_t
        memory_max_mb, throttle = self._memory_max_mb, self._throttle
        last_sec, row = nan, -1
        for s in events:
            if type(s) is not Sample:
                continue
            t = s.t
            sec = floor(t)
            if sec != last_sec:
                row, last_sec = row_of_second(sec), sec
                if inside:
                    in_window[row] = 1
            samples[row] += 1
            if s.power_w is not None:
                power_sum[row] += s.power_w
                n_power[row] += 1
            if s.temperature_c is not None:
                temperature_sum[row] += s.temperature_c
                n_temperature[row] += 1
            if s.sm_util_pct is not None:
                sm_sum[row] += s.sm_util_pct
                n_sm[row] += 1
            if s.energy_mj is not None and t >= energy_t[row]:
                energy_mj[row] = s.energy_mj
                energy_t[row] = t
            memory = s.memory_used_mb
            if memory is not None:
                peak = memory_max_mb[row]
                if isnan(peak) or memory > peak:
                    memory_max_mb[row] = memory
            if s.throttle_reasons:
                throttle[row] |= s.throttle_reasons

    def rows(self) -> SeriesColumns:
        """The series of everything fed so far, sorted by second (more may be fed afterwards)."""
        if not self._t_sec:
            return SeriesColumns.empty()
        t_sec = _ints(self._t_sec)
        if self._row_of is None:  # rows already sorted: no reordered copies
            order: slice | Ints = slice(None)
        else:
            order = np.argsort(t_sec, kind="stable")
        return SeriesColumns(
            t_sec=t_sec[order],
            in_window=np.array(self._in_window, dtype=np.bool_)[order],
            power_w=_mean(self._power_sum, self._n_power)[order],
            energy_mj=_floats(self._energy_mj)[order],
            temperature_c=_mean(self._temperature_sum, self._n_temperature)[order],
            sm_util_pct=_mean(self._sm_sum, self._n_sm)[order],
            memory_used_mb=_floats(self._memory_max_mb)[order],
            throttle_reasons=_ints(self._throttle)[order],
            samples=_ints(self._samples)[order],
            requests=_ints(self._requests)[order],
            output_tokens=_ints(self._output_tokens)[order],
        )

    def series(self, process_index: int | None = None) -> ProcessSeries:
        """The rows with the process's identity (index from ``process_started`` by default)."""
        s = self.started
        index = process_index if process_index is not None else (s.process_index if s else -1)
        key = f"gpu:{s.gpu_uuid}" if s is not None and s.gpu_uuid else f"process:{index}"
        return ProcessSeries(
            process_index=index,
            gpu_key=key,
            hostname=s.hostname if s else None,
            gpu_id=s.gpu_id if s else None,
            columns=self.rows(),
        )


def _floats(values: array[float]) -> Floats:
    return np.frombuffer(values, dtype=np.float64).copy()


def _ints(values: array[int]) -> Ints:
    return np.frombuffer(values, dtype=np.int64).copy()


def _mean(sums: array[float], counts: array[int]) -> Floats:
    total, n = _floats(sums), _ints(counts)
    out = np.full(len(total), np.nan)
    np.divide(total, n, out=out, where=n > 0)
    return out


def combine_by_gpu(processes: Iterable[ProcessSeries]) -> list[GpuSeries]:
    """One series per physical GPU, sorted by GPU key (see the module doc for the rules).

    Every second any of a GPU's processes has a row gets a row. Readings, ``samples`` and
    ``throttle_reasons`` are the reader's (NaN, 0 and 0 for a second it has no row for);
    ``requests`` and ``output_tokens`` are summed over the GPU's processes; ``in_window`` is
    their OR.
    """
    groups: dict[str, list[ProcessSeries]] = {}
    for p in processes:
        groups.setdefault(p.gpu_key, []).append(p)
    out: list[GpuSeries] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p.process_index)
        with_samples = [p for p in members if int(p.columns.samples.sum()) > 0]
        reader = (with_samples or members)[0]
        out.append(
            GpuSeries(
                gpu_key=key,
                reader_index=reader.process_index,
                hostname=reader.hostname,
                gpu_id=reader.gpu_id,
                process_indices=tuple(p.process_index for p in members),
                columns=_combine(reader.columns, [p.columns for p in members]),
            )
        )
    return out


def _combine(reader: SeriesColumns, members: Sequence[SeriesColumns]) -> SeriesColumns:
    if len(members) == 1:  # a GPU of one process (the usual): its rows are the GPU's
        return reader
    t_sec: Ints = np.unique(np.concatenate([m.t_sec for m in members]).astype(np.int64))
    n = len(t_sec)
    requests = np.zeros(n, np.int64)
    tokens = np.zeros(n, np.int64)
    in_window = np.zeros(n, np.bool_)
    for m in members:
        at = np.searchsorted(t_sec, m.t_sec)
        np.add.at(requests, at, m.requests)
        np.add.at(tokens, at, m.output_tokens)
        in_window[at] |= m.in_window
    at = np.searchsorted(t_sec, reader.t_sec)
    readings = {}
    for name in READING_COLUMNS:
        column = np.full(n, np.nan)
        column[at] = getattr(reader, name)
        readings[name] = column
    throttle = np.zeros(n, np.int64)
    throttle[at] = reader.throttle_reasons
    samples = np.zeros(n, np.int64)
    samples[at] = reader.samples
    return SeriesColumns(
        t_sec=t_sec,
        in_window=in_window,
        throttle_reasons=throttle,
        samples=samples,
        requests=requests,
        output_tokens=tokens,
        **readings,
    )


__all__ = [
    "READING_COLUMNS",
    "GpuSeries",
    "ProcessSeries",
    "SecondBins",
    "SeriesColumns",
    "combine_by_gpu",
]
