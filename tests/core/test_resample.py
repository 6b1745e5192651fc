"""The 1 Hz resampler, against a brute-force group-by of the log's lines read here with ``json``.

Expected rows are worked out in this file from each line's JSON, with the meaning
``core.resample`` documents (bin ``floor(t)``; mean power, temperature and utilisation; the last
counter reading; the largest memory reading; OR of the throttle bits; a second is in the window
when a sample or request of it was logged between ``window_started`` and ``window_ended``),
never by calling ``SecondBins`` a second way.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import operator
from array import array
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.decode import make_event
from energy_ledger.core.events import Event, UnknownEvent
from energy_ledger.core.replay import ReplayCursor, replay_stream
from energy_ledger.core.resample import (
    ProcessSeries,
    SecondBins,
    SeriesColumns,
    combine_by_gpu,
)

LAWS = settings(max_examples=80, deadline=None)
T0 = 1_700_000_000.0
NAN = math.nan
MEANS = ("power_w", "temperature_c", "sm_util_pct")

readings = st.none() | st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
samples = st.builds(
    lambda power, energy, temp, util, mem, bits: {
        "type": "sample",
        **{
            k: v
            for k, v in {
                "power_w": power,
                "energy_mj": energy,
                "temperature_c": temp,
                "sm_util_pct": util,
                "memory_used_mb": mem,
                "throttle_reasons": bits,
            }.items()
            if v is not None
        },
    },
    readings,
    st.none() | st.integers(0, 10**9),
    readings,
    st.none() | st.floats(min_value=0.0, max_value=100.0),
    readings,
    st.none() | st.sampled_from([0, 0x1, 0x4, 0x8, 0x24, 0x100]),
)
requests = st.builds(
    lambda n_out, ttft: {
        "type": "request",
        "latency_ms": 12.5,
        "input_tokens": 7,
        "output_tokens": n_out,
        **({"ttft_ms": ttft} if ttft is not None else {}),
    },
    st.integers(0, 4096),
    st.none() | st.floats(min_value=0.0, max_value=1e3),
)
others = st.sampled_from(
    [{"type": "warning", "message": "hot"}, {"type": "clock", "monotonic_sec": 1.0}]
)
middle = st.lists(st.one_of(samples, samples, requests, others), max_size=25)
steps = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.7), st.just(1.0))


@st.composite
def logs(draw: st.DrawFn, gpu_uuid: str | None = None, index: int = 0) -> list[bytes]:
    """A valid log: start, events, maybe a window with events in it and after it."""
    started: dict[str, Any] = {
        "type": "process_started",
        "experiment_id": "exp",
        "run_id": "run",
        "process_index": index,
        "world_size": 8,
        "gpu_id": index,
        "hostname": f"node-{index}",
    }
    if gpu_uuid is not None:
        started["gpu_uuid"] = gpu_uuid
    bodies: list[dict[str, Any]] = [started, *draw(middle)]
    if draw(st.booleans()):
        bodies += [{"type": "window_started"}, *draw(middle)]
        if draw(st.booleans()):
            bodies += [{"type": "window_ended"}, *draw(middle)]
    out = []
    t = T0 + draw(st.floats(min_value=0.0, max_value=0.999))
    for seq, body in enumerate(bodies):
        t += draw(steps)
        out.append(orjson.dumps({"v": 1, "seq": seq, "t": t, **body}) + b"\n")
    return out


def brute_force(lines: list[bytes]) -> dict[int, dict[str, Any]]:
    """Rows by second, from the lines' JSON, by grouping every sample and request."""
    opened = closed = False
    groups: dict[int, dict[str, Any]] = {}
    for line in lines:
        e = json.loads(line)
        if e["type"] == "window_started":
            opened = True
        elif e["type"] == "window_ended":
            closed = True
        elif e["type"] in ("sample", "request"):
            g = groups.setdefault(math.floor(e["t"]), {"sample": [], "request": [], "in": False})
            g[e["type"]].append(e)
            g["in"] = g["in"] or (opened and not closed)
    rows = {}
    for sec, g in groups.items():
        ss, rs = g["sample"], g["request"]
        row: dict[str, Any] = {"in_window": g["in"], "samples": len(ss), "requests": len(rs)}
        for name in MEANS:
            values = [s[name] for s in ss if name in s]
            row[name] = sum(values) / len(values) if values else NAN
        counter = [(s["t"], i, s["energy_mj"]) for i, s in enumerate(ss) if "energy_mj" in s]
        row["energy_mj"] = max(counter)[2] if counter else NAN
        memory = [s["memory_used_mb"] for s in ss if "memory_used_mb" in s]
        row["memory_used_mb"] = max(memory) if memory else NAN
        bits = [s["throttle_reasons"] for s in ss if "throttle_reasons" in s]
        row["throttle_reasons"] = functools.reduce(operator.or_, bits, 0)
        row["output_tokens"] = sum(r["output_tokens"] for r in rs)
        rows[sec] = row
    return rows


def replayed(lines: list[bytes]) -> tuple[SecondBins, list[Event | UnknownEvent]]:
    """The bins a real replay's observer fills, and every event it was fed."""
    bins = SecondBins()
    seen: list[Event | UnknownEvent] = []

    def observe(events: Any) -> None:
        seen.extend(events)
        bins.feed(events)

    cursor = ReplayCursor(observer=observe)
    replay_stream(io.BytesIO(b"".join(lines)), cursor, chunk_bytes=97)
    return bins, seen


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


def assert_rows(columns: SeriesColumns, expected: dict[int, dict[str, Any]]) -> None:
    assert columns.t_sec.tolist() == sorted(expected)
    for i, sec in enumerate(columns.t_sec.tolist()):
        row = expected[sec]
        for name in ("in_window", "samples", "requests", "output_tokens", "throttle_reasons"):
            assert getattr(columns, name)[i] == row[name], (sec, name)
        for name in (*MEANS, "energy_mj", "memory_used_mb"):
            assert same(float(getattr(columns, name)[i]), row[name]), (sec, name)
        assert columns.output_tokens_per_sec[i] == row["output_tokens"] / 1.0


def assert_same_columns(a: SeriesColumns, b: SeriesColumns) -> None:
    for name in SeriesColumns.__dataclass_fields__:
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


class TestSecondBinsLaws:
    """Laws over random logs of samples, requests and window edges."""

    @LAWS
    @given(lines=logs())
    def test_rows_equal_a_brute_force_group_by(self, lines: list[bytes]) -> None:
        """Every column of every second equals the group-by of the lines' JSON."""
        bins, _ = replayed(lines)
        assert_rows(bins.rows(), brute_force(lines))

    @LAWS
    @given(lines=logs(), cuts=st.lists(st.integers(0, 60), max_size=6))
    def test_any_batch_split_gives_the_same_rows(self, lines: list[bytes], cuts: list[int]) -> None:
        """Feeding the events in any batches, reading rows between them, equals one batch."""
        whole, events = replayed(lines)
        parts = SecondBins()
        edges = sorted({0, len(events), *(c for c in cuts if c < len(events))})
        for start, end in itertools.pairwise(edges):
            parts.feed(events[start:end])
            parts.rows()  # reading in between changes nothing
        assert_same_columns(parts.rows(), whole.rows())

    @LAWS
    @given(lines=logs(), order=st.randoms(use_true_random=False))
    def test_out_of_order_times_land_in_their_own_seconds(
        self, lines: list[bytes], order: Any
    ) -> None:
        """Samples and requests fed out of time order still give each second's group-by."""
        kept = [ln for ln in lines if json.loads(ln)["type"] in ("sample", "request")]
        order.shuffle(kept)
        bins = SecondBins()
        for line in kept:
            e = json.loads(line)
            body = {k: v for k, v in e.items() if k not in ("v", "seq", "t", "type")}
            bins.feed([make_event(e["type"], seq=e["seq"], t=e["t"], **body)])
        assert_rows(bins.rows(), brute_force(kept))

    @LAWS
    @given(lines=logs(), order=st.randoms(use_true_random=False), size=st.integers(2, 9))
    def test_out_of_order_batches_land_in_their_own_seconds(
        self, lines: list[bytes], order: Any, size: int
    ) -> None:
        """Batches of events out of time order, each spanning seconds, give the group-by too."""
        kept = [ln for ln in lines if json.loads(ln)["type"] in ("sample", "request")]
        order.shuffle(kept)
        events = []
        for line in kept:
            e = json.loads(line)
            body = {k: v for k, v in e.items() if k not in ("v", "seq", "t", "type")}
            events.append(make_event(e["type"], seq=e["seq"], t=e["t"], **body))
        bins = SecondBins()
        for start in range(0, len(events), size):
            bins.feed(events[start : start + size])
        assert_rows(bins.rows(), brute_force(kept))

    @LAWS
    @given(lines=logs())
    def test_memory_is_one_entry_per_second(self, lines: list[bytes]) -> None:
        """Each internal array holds one entry per distinct second, none per event (and the
        index of seconds, when rows came out of time order, one per second too)."""
        bins, _ = replayed(lines)
        seconds = len(brute_force(lines))
        assert len(bins) == seconds
        held = [getattr(bins, name) for name in SecondBins.__slots__]
        arrays = [h for h in held if isinstance(h, array)]
        assert len(arrays) == 15
        assert all(len(a) == seconds for a in [*arrays, *(h for h in held if isinstance(h, dict))])

    def test_a_replay_with_samples_every_second_keeps_no_index(self) -> None:
        """Samples each second (a sampler's log) and requests between them: rows are made in
        time order, so no dict of seconds is kept."""
        lines = []
        for seq in range(400):
            t = T0 + seq * 0.05
            kind = (
                {"type": "sample", "power_w": 100.0}
                if seq % 2
                else {"type": "request", "latency_ms": 1.0, "input_tokens": 1, "output_tokens": 2}
            )
            lines.append(orjson.dumps({"v": 1, "seq": seq + 1, "t": t, **kind}) + b"\n")
        started = {
            "v": 1,
            "seq": 0,
            "t": T0,
            "type": "process_started",
            "experiment_id": "e",
            "run_id": "r",
            "process_index": 0,
            "world_size": 1,
            "gpu_id": 0,
        }
        bins = SecondBins()
        cursor = ReplayCursor(observer=bins.feed)
        replay_stream(io.BytesIO(orjson.dumps(started) + b"\n" + b"".join(lines)), cursor)
        assert bins._row_of is None
        assert bins.rows().t_sec.tolist() == list(range(int(T0), int(T0) + 20))
        assert bins.rows().requests.tolist() == [10] * 20

    def test_many_events_in_one_second_are_one_row(self) -> None:
        """Ten thousand samples and requests within one second keep every array at length 1."""
        bins = SecondBins()
        for seq in range(10_000):
            kind = "sample" if seq % 2 else "request"
            fields: dict[str, Any] = (
                {"power_w": 100.0 + seq % 7}
                if kind == "sample"
                else {"latency_ms": 1.0, "input_tokens": 1, "output_tokens": 2}
            )
            bins.feed([make_event(kind, seq=seq, t=T0 + seq / 20_000, **fields)])
        held = [getattr(bins, name) for name in SecondBins.__slots__]
        assert {len(h) for h in held if isinstance(h, array | dict)} == {1}
        rows = bins.rows()
        assert (rows.samples.tolist(), rows.requests.tolist()) == ([5_000], [5_000])
        assert rows.output_tokens_per_sec.tolist() == [10_000.0]


def _bins(*events: tuple[str, float, dict[str, Any]]) -> SeriesColumns:
    bins = SecondBins()
    bins.feed([make_event(kind, seq=i, t=t, **f) for i, (kind, t, f) in enumerate(events)])
    return bins.rows()


REQ = {"latency_ms": 5.0, "input_tokens": 3, "output_tokens": 4}


class TestSecondBinsTable:
    """Single cases of the rules, by hand."""

    def test_a_sample_without_readings_counts_but_gives_nan_and_no_bits(self) -> None:
        """A bare sample: samples 1, readings NaN, throttle 0."""
        rows = _bins(("sample", T0 + 0.5, {}))
        assert rows.samples.tolist() == [1]
        assert all(math.isnan(getattr(rows, n)[0]) for n in (*MEANS, "energy_mj"))
        assert math.isnan(rows.memory_used_mb[0])
        assert rows.throttle_reasons.tolist() == [0]

    def test_a_second_with_requests_only_gets_a_row(self) -> None:
        """Requests with no sample in their second: a row with NaN readings and 0 samples."""
        rows = _bins(("sample", T0, {"power_w": 10.0}), ("request", T0 + 2.5, REQ))
        assert rows.t_sec.tolist() == [int(T0), int(T0) + 2]
        assert rows.samples.tolist() == [1, 0]
        assert rows.requests.tolist() == [0, 1]
        assert math.isnan(rows.power_w[1])
        assert rows.output_tokens_per_sec.tolist() == [0.0, 4.0]

    @pytest.mark.parametrize(
        ("times", "expected"),
        [
            ([0.1, 0.5, 0.9], 3.0),  # the latest in time
            ([0.1, 0.5, 0.5], 3.0),  # a tie: the later in the log
        ],
    )
    def test_the_counter_is_the_last_reading(self, times: list[float], expected: float) -> None:
        """energy_mj is the second's last counter reading, not a mean."""
        rows = _bins(*(("sample", T0 + t, {"energy_mj": i + 1.0}) for i, t in enumerate(times)))
        assert rows.energy_mj.tolist() == [expected]

    def test_window_flag_follows_log_order(self) -> None:
        """Only seconds with a sample or request logged inside the window are in it."""
        rows = _bins(
            ("sample", T0 + 0.2, {}),
            ("window_started", T0 + 1.2, {}),
            ("sample", T0 + 1.5, {}),
            ("request", T0 + 2.1, REQ),
            ("window_ended", T0 + 2.5, {}),
            ("sample", T0 + 3.1, {}),
        )
        assert rows.in_window.tolist() == [False, True, True, False]

    def test_identity_comes_from_process_started(self) -> None:
        """The GPU key is gpu:<uuid>, else process:<index>, as the energy attribution's."""
        started = {
            "experiment_id": "e",
            "run_id": "r",
            "process_index": 2,
            "world_size": 4,
            "gpu_id": 5,
            "hostname": "h",
        }
        bins = SecondBins()
        bins.feed([make_event("process_started", seq=0, t=T0, **started)])
        assert (bins.series().gpu_key, bins.series().hostname) == ("process:2", "h")
        bins = SecondBins()
        bins.feed([make_event("process_started", seq=0, t=T0, gpu_uuid="GPU-x", **started)])
        series = bins.series()
        assert (series.gpu_key, series.process_index, series.gpu_id) == ("gpu:GPU-x", 2, 5)
        assert len(series.columns) == 0


class TestCombineByGpu:
    """Processes sharing a GPU: one reader's readings, everyone's requests."""

    @LAWS
    @given(data=st.data(), shared=st.integers(1, 3), order=st.permutations(range(4)))
    def test_shared_gpu_rows_equal_the_brute_force(
        self, data: st.DataObject, shared: int, order: list[int]
    ) -> None:
        """Per second: the lowest-index sampling process's readings, requests summed."""
        streams = {i: data.draw(logs("GPU-a", i)) for i in range(shared)}
        streams[3] = data.draw(logs(None, 3))
        series = []
        for i in order:
            if i in streams:
                bins, _ = replayed(streams[i])
                series.append(bins.series())
        combined = combine_by_gpu(series)
        assert [g.gpu_key for g in combined] == ["gpu:GPU-a", "process:3"]
        groups = {"gpu:GPU-a": list(range(shared)), "process:3": [3]}
        for gpu in combined:
            members = groups[gpu.gpu_key]
            rows = {i: brute_force(streams[i]) for i in members}
            sampling = [i for i in members if any(r["samples"] for r in rows[i].values())]
            reader = (sampling or members)[0]
            assert (gpu.reader_index, gpu.process_indices) == (reader, tuple(members))
            assert (gpu.hostname, gpu.gpu_id) == (f"node-{reader}", reader)
            expected = {}
            for sec in sorted({s for i in members for s in rows[i]}):
                own = rows[reader].get(sec)
                row = dict(own) if own is not None else {
                    **dict.fromkeys((*MEANS, "energy_mj", "memory_used_mb"), NAN),
                    "samples": 0,
                    "throttle_reasons": 0,
                }  # fmt: skip
                present = [rows[i][sec] for i in members if sec in rows[i]]
                row["requests"] = sum(r["requests"] for r in present)
                row["output_tokens"] = sum(r["output_tokens"] for r in present)
                row["in_window"] = any(r["in_window"] for r in present)
                expected[sec] = row
            assert_rows(gpu.columns, expected)

    def test_no_process_gives_no_gpu(self) -> None:
        """An experiment without logs has no GPU series."""
        assert combine_by_gpu([]) == []

    def test_a_gpu_whose_processes_have_no_rows_has_an_empty_series(self) -> None:
        """Processes that logged nothing to bin give a GPU with zero rows."""
        empty = ProcessSeries(0, "gpu:x", None, None, SeriesColumns.empty())
        (gpu,) = combine_by_gpu([empty])
        assert (gpu.reader_index, len(gpu.columns)) == (0, 0)
