"""The timeline a replay's observer builds, against the log's lines read here with ``json``.

The expected columns are worked out in this file from the JSON of each line, with the meaning
the format gives them (a request is in the window when it is logged between ``window_started``
and ``window_ended``; a reading a sample lacks is NaN, missing throttle bits -1), never by
calling the builder a second way. The fold (``ProcessState``) is the second witness: the
timeline must hold exactly the events it counted.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from energy_ledger.core.decode import make_event
from energy_ledger.core.replay import ReplayCursor, replay_stream
from energy_ledger.core.timeline import Phase, ProcessTimeline, TimelineBuilder
from energy_ledger.simulate import simulate
from energy_ledger.store.reader import scan_experiment

LAWS = settings(max_examples=60, deadline=None)

T0 = 1_700_000_000.0
NAN = math.nan
READINGS = ("power_w", "energy_mj", "temperature_c", "sm_util_pct", "memory_used_mb")
THROTTLE_BITS = [0, 0x1, 0x4, 0x8, 0x20, 0x40, 0x80, 0x24, 0x100]

numbers = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**6),
)
maybe = st.none() | numbers
counts = st.integers(min_value=0, max_value=4096)

requests = st.builds(
    lambda latency, n_in, n_out, ttft, itl: {
        "type": "request",
        "latency_ms": latency,
        "input_tokens": n_in,
        "output_tokens": n_out,
        **({"ttft_ms": ttft} if ttft is not None else {}),
        **({"itl_ms": itl} if itl is not None else {}),
    },
    numbers,
    counts,
    counts,
    maybe,
    st.none() | st.lists(numbers, max_size=5),
)
samples = st.builds(
    lambda power, energy, temp, util, mem, bits: {
        "type": "sample",
        "power_w": power,
        "energy_mj": energy,
        "temperature_c": temp,
        "sm_util_pct": util,
        "memory_used_mb": mem,
        "throttle_reasons": bits,
    },
    maybe,
    maybe,
    maybe,
    st.none() | st.floats(min_value=0.0, max_value=100.0),
    maybe,
    st.none() | st.sampled_from(THROTTLE_BITS),
)
others = st.sampled_from(
    [
        {"type": "warning", "message": "hot"},
        {"type": "clock", "monotonic_sec": 5.0},
        {"type": "from_a_newer_writer", "x": 1},
    ]
)
middle = st.lists(st.one_of(requests, samples, others), max_size=10)


def _lines(bodies: list[dict[str, Any]], steps: list[float]) -> list[bytes]:
    """One JSONL line (with its newline) per body, ``seq`` in order, times moving on by steps."""
    out: list[bytes] = []
    t = T0
    for seq, (body, step) in enumerate(zip(bodies, steps, strict=True)):
        t += step
        out.append(orjson.dumps({"v": 1, "seq": seq, "t": t, **body}) + b"\n")
    return out


@st.composite
def log_lines(draw: st.DrawFn, *, min_step: float = 0.0, closed: bool | None = None) -> list[bytes]:
    """A valid log's lines: start, optional baseline and warm-up, the window, events between."""
    started: dict[str, Any] = {
        "type": "process_started",
        "experiment_id": "exp-t",
        "run_id": "run-t",
        "process_index": draw(st.integers(0, 3)),
        "world_size": 4,
        "gpu_id": 1,
    }
    if draw(st.booleans()):
        started["gpu_uuid"] = "GPU-abc"
        started["hostname"] = "node-a"
    bodies: list[dict[str, Any]] = [started]
    if draw(st.booleans()):
        bodies.append({"type": "baseline", "power_w": 60.0, "duration_sec": draw(numbers)})
    bodies += draw(middle)
    if draw(st.booleans()):
        bodies.append(
            {
                "type": "warmup",
                "converged": True,
                "final_cv": 0.01,
                "iterations_completed": 3,
                "target_cv": 0.05,
                "max_prompts": 10,
            }
        )
    bodies.append({"type": "window_started", "energy_mj": draw(maybe)})
    bodies += draw(middle)
    if closed if closed is not None else draw(st.booleans()):
        bodies.append({"type": "window_ended", "energy_mj": draw(maybe)})
        bodies += draw(middle)
    steps = draw(
        st.lists(
            st.floats(min_value=min_step, max_value=3.0, allow_nan=False),
            min_size=len(bodies),
            max_size=len(bodies),
        )
    )
    return _lines(bodies, steps)


def _expected(data: bytes) -> dict[str, Any]:
    """The timeline of a log, read line by line with ``json`` (every line must be an event)."""
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "sample_t",
            *READINGS,
            "throttle_reasons",
            "request_t",
            "latency_ms",
            "ttft_ms",
            "input_tokens",
            "output_tokens",
            "in_window",
            "itl_ms",
        )
    }
    meta: dict[str, Any] = {
        "process_index": -1,
        "gpu_key": "process:-1",
        "hostname": None,
        "gpu_uuid": None,
        "baseline": None,
        "warmup_end_t": None,
        "window_start_t": None,
        "window_end_t": None,
    }
    inside = False
    for line in data.splitlines():
        e = json.loads(line)
        kind = e["type"]
        if kind == "process_started":
            uuid = e.get("gpu_uuid")
            index = e["process_index"]
            meta.update(
                process_index=index,
                gpu_key=f"gpu:{uuid}" if uuid else f"process:{index}",
                hostname=e.get("hostname"),
                gpu_uuid=uuid,
            )
        elif kind == "baseline":
            meta["baseline"] = (e["t"] - e["duration_sec"], e["t"])
        elif kind == "warmup":
            meta["warmup_end_t"] = e["t"]
        elif kind == "window_started":
            inside = True
            meta["window_start_t"] = e["t"]
        elif kind == "window_ended":
            inside = False
            meta["window_end_t"] = e["t"]
        elif kind == "sample":
            cols["sample_t"].append(e["t"])
            for name in READINGS:
                cols[name].append(NAN if e.get(name) is None else e[name])
            bits = e.get("throttle_reasons")
            cols["throttle_reasons"].append(-1 if bits is None else bits)
        elif kind == "request":
            cols["request_t"].append(e["t"])
            cols["latency_ms"].append(e["latency_ms"])
            cols["ttft_ms"].append(NAN if e.get("ttft_ms") is None else e["ttft_ms"])
            cols["input_tokens"].append(e["input_tokens"])
            cols["output_tokens"].append(e["output_tokens"])
            cols["in_window"].append(inside)
            if inside:
                cols["itl_ms"].extend(e.get("itl_ms") or [])
    return {"columns": cols, **meta}


def _assert_matches(tl: ProcessTimeline, expected: dict[str, Any]) -> None:
    """Every column and edge of ``tl`` equals the expected reading (NaN equal to NaN)."""
    for name, values in expected["columns"].items():
        got = getattr(tl, name)
        assert len(got) == len(values), name
        np.testing.assert_array_equal(got, np.asarray(values, dtype=got.dtype), err_msg=name)
    for name in ("process_index", "gpu_key", "hostname", "gpu_uuid"):
        assert getattr(tl, name) == expected[name], name
    baseline = expected["baseline"]
    if baseline is None:
        assert tl.baseline is None
    else:
        assert tl.baseline is not None
        assert (tl.baseline.start_t, tl.baseline.end_t) == pytest.approx(baseline)
    assert tl.warmup_end_t == expected["warmup_end_t"]
    assert tl.window_start_t == expected["window_start_t"]
    assert tl.window_end_t == expected["window_end_t"]


def _assert_same(a: ProcessTimeline, b: ProcessTimeline) -> None:
    """Two timelines hold the same values (arrays compared element-wise, NaN equal to NaN)."""
    for name in ProcessTimeline.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x == y, name


def _observed(data: bytes, *, strict: bool = True, **kwargs: Any) -> tuple[ProcessTimeline, Any]:
    """Replay ``data`` with a builder as the observer; the timeline and the cursor."""
    builder = TimelineBuilder()
    cursor = replay_stream(
        io.BytesIO(data), ReplayCursor(observer=builder.feed), strict=strict, **kwargs
    )
    return builder.build(), cursor


def _timeline_of(bits: list[int | None], times: list[float]) -> ProcessTimeline:
    """A timeline fed only samples, one per time, with these throttle bits."""
    builder = TimelineBuilder()
    builder.feed(
        [
            make_event("sample", seq=i, t=t, power_w=100.0, throttle_reasons=b)
            for i, (t, b) in enumerate(zip(times, bits, strict=True))
        ]
    )
    return builder.build()


class TestObservedTimeline:
    """The observer's timeline holds the log's samples and requests, as the lines say."""

    @LAWS
    @given(lines=log_lines())
    def test_equals_the_lines_read_with_json(self, lines: list[bytes]) -> None:
        """Times, readings (NaN where absent), requests, window flags and ITLs match the JSON."""
        data = b"".join(lines)
        tl, _ = _observed(data)
        _assert_matches(tl, _expected(data))

    @LAWS
    @given(lines=log_lines(), chunk_bytes=st.integers(min_value=1, max_value=96))
    def test_chunk_size_changes_nothing(self, lines: list[bytes], chunk_bytes: int) -> None:
        """Reading in chunks of 1 to 96 bytes gives the timeline of the default read size."""
        data = b"".join(lines)
        small, _ = _observed(data, chunk_bytes=chunk_bytes)
        default, _ = _observed(data)
        _assert_same(small, default)

    @LAWS
    @given(lines=log_lines(), cut=st.floats(min_value=0.0, max_value=1.0))
    def test_resuming_feeds_the_rest(self, lines: list[bytes], cut: float) -> None:
        """A replay cut at any byte and resumed with the same cursor feeds every event once."""
        data = b"".join(lines)
        builder = TimelineBuilder()
        first = replay_stream(
            io.BytesIO(data[: int(cut * len(data))]), ReplayCursor(observer=builder.feed)
        )
        replay_stream(io.BytesIO(data), first)
        once, _ = _observed(data)
        _assert_same(builder.build(), once)

    @LAWS
    @given(lines=log_lines(min_step=0.001))
    def test_window_counts_equal_the_fold(self, lines: list[bytes]) -> None:
        """In-window requests, their latencies and ITLs, and in-window samples are the fold's."""
        tl, cursor = _observed(b"".join(lines))
        state = cursor.state
        assert int(tl.in_window.sum()) == state.requests
        assert len(tl.request_t) == state.requests + state.requests_outside_window
        assert tl.latency_ms[tl.in_window].tolist() == list(state.latencies_ms)
        assert tl.itl_ms.tolist() == list(state.itl_ms)
        assert tl.window_start_t is not None
        end = tl.window_end_t if tl.window_end_t is not None else math.inf
        inside = (tl.sample_t >= tl.window_start_t) & (tl.sample_t <= end)
        assert int(inside.sum()) == state.samples
        assert int((inside & ~np.isnan(tl.power_w)).sum()) == state.power_samples


class TestLenientTimeline:
    """In lenient mode the timeline skips exactly the lines the fold skips."""

    BAD = (b"not json at all", b'{"v":1,"seq":', b'{"v":1,"seq":1,"t":0,"type":"request"}')

    @LAWS
    @given(lines=log_lines(), where=st.integers(min_value=1), bad=st.sampled_from(BAD))
    def test_an_inserted_corrupt_line_is_skipped(
        self, lines: list[bytes], where: int, bad: bytes
    ) -> None:
        """A corrupt line anywhere after the first leaves the timeline of the log without it."""
        at = 1 + where % len(lines)
        corrupted = b"".join([*lines[:at], bad + b"\n", *lines[at:]])
        tl, cursor = _observed(corrupted, strict=False)
        assert len(cursor.problems) == 1
        _assert_matches(tl, _expected(b"".join(lines)))
        state = cursor.state
        assert len(tl.request_t) == state.requests + state.requests_outside_window
        assert int(tl.in_window.sum()) == state.requests

    @LAWS
    @given(lines=log_lines(), where=st.integers(min_value=0), crlf=st.booleans())
    def test_a_replaced_line_is_skipped(self, lines: list[bytes], where: int, crlf: bool) -> None:
        """A request, sample or warning line broken in place (or given a CRLF) is left out."""
        hot = [
            i
            for i, line in enumerate(lines)
            if json.loads(line)["type"] in ("request", "sample", "warning")
        ]
        assume(hot)
        at = hot[where % len(hot)]
        broken = lines[at][:-1] + b"\r\n" if crlf else lines[at][: len(lines[at]) // 2] + b"\n"
        tl, cursor = _observed(b"".join([*lines[:at], broken, *lines[at + 1 :]]), strict=False)
        assert cursor.problems
        _assert_matches(tl, _expected(b"".join([*lines[:at], *lines[at + 1 :]])))
        state = cursor.state
        assert len(tl.request_t) == state.requests + state.requests_outside_window


class TestScanObserver:
    """``scan_experiment(observe=...)`` gives each log's timeline, keyed by process index."""

    def test_each_process_gets_its_own_timeline(self, tmp_path: Path) -> None:
        """Two simulated processes: each observer's timeline equals that log's lines."""
        simulate(tmp_path, processes=2, requests=12, seed=5)
        builders: dict[int, TimelineBuilder] = {}

        def observe(index: int) -> Any:
            builders[index] = TimelineBuilder()
            return builders[index].feed

        folder = tmp_path / "raw" / "sim-0000"
        scan = scan_experiment(folder, observe=observe)
        assert sorted(builders) == [0, 1]
        for index, builder in builders.items():
            data = (folder / f"process_{index}.events.jsonl").read_bytes()
            tl = builder.build(index)
            _assert_matches(tl, _expected(data))
            (summary,) = [s for s in scan.summaries if s.process_index == index]
            assert int(tl.in_window.sum()) == summary.requests


class TestThrottleIntervals:
    """Throttle spans: from a sample with a slowdown bit to the next sample without one."""

    @pytest.mark.parametrize(
        ("bits", "expected"),
        [
            ([0, 0x4, 0x4, 0, 0], [(1.0, 3.0)]),
            ([0x4, 0, 0x20, 0x40, 0], [(0.0, 1.0), (2.0, 4.0)]),
            ([0, 0x1, 0x100, 0], []),  # idle and other bits are not slowdowns
            ([0, 0x4, 0x4], [(1.0, 2.0)]),  # still throttled at the last sample
            ([0, 0, 0x80], [(2.0, 2.0)]),
            ([0x24, 0x1, 0x80, 0x8], [(0.0, 1.0), (2.0, 3.0)]),
            ([None, 0, None, 0], []),  # a sample without bits starts nothing
            ([None, 0x8, 0], [(1.0, 2.0)]),
            ([0x4, None, 0x4, 0], [(0.0, 1.0), (2.0, 3.0)]),  # no bits: no slowdown known
            ([], []),
        ],
    )
    def test_hand_worked_spans(self, bits: list[int | None], expected: list[Any]) -> None:
        """Samples one second apart from t=0; the spans worked out by hand."""
        tl = _timeline_of(bits, [float(i) for i in range(len(bits))])
        assert tl.throttle_intervals() == expected

    def test_a_sample_without_bits_ends_a_span_as_the_fold_does(self) -> None:
        """0x4 at t=1, no bits at t=2, 0 at t=3: the fold counts 1 s, so the span is (1, 2)."""
        bits: list[int | None] = [0, 0x4, None, 0]
        body: list[dict[str, Any]] = [
            {"type": "process_started", "experiment_id": "e", "run_id": "r",
             "process_index": 0, "world_size": 1, "gpu_id": 0},
            {"type": "window_started"},
            *({"type": "sample", "throttle_reasons": b} for b in bits),
        ]  # fmt: skip
        _, cursor = _observed(b"".join(_lines(body, [0.0, 1.0, 0.0, 1.0, 1.0, 1.0])))
        assert cursor.state.throttle_duration_sec == 1.0
        tl = _timeline_of(bits, [0.0, 1.0, 2.0, 3.0])
        assert tl.throttle_intervals() == [(1.0, 2.0)]

    @LAWS
    @given(bits=st.lists(st.none() | st.sampled_from(THROTTLE_BITS), max_size=12), gaps=st.data())
    def test_span_total_equals_the_folds_throttle_time(
        self, bits: list[int | None], gaps: Any
    ) -> None:
        """With every sample inside the window, the spans add up to ``throttle_duration_sec``."""
        steps = gaps.draw(st.lists(st.floats(0.0, 2.0), min_size=len(bits), max_size=len(bits)))
        body: list[dict[str, Any]] = [
            {"type": "process_started", "experiment_id": "e", "run_id": "r",
             "process_index": 0, "world_size": 1, "gpu_id": 0},
            {"type": "window_started"},
            *({"type": "sample", "throttle_reasons": b} for b in bits),
            {"type": "window_ended"},
        ]  # fmt: skip
        tl, cursor = _observed(b"".join(_lines(body, [0.0, 1.0, *steps, 1.0])))
        total = math.fsum(b - a for a, b in tl.throttle_intervals())
        assert total == pytest.approx(cursor.state.throttle_duration_sec, abs=1e-6)


class TestPhases:
    """Baseline, warm-up and window as spans, from the log's own events."""

    def _timeline(self, bodies: list[tuple[float, dict[str, Any]]]) -> ProcessTimeline:
        started = {"type": "process_started", "experiment_id": "e", "run_id": "r",
                   "process_index": 0, "world_size": 1, "gpu_id": 0}  # fmt: skip
        lines = [orjson.dumps({"v": 1, "seq": 0, "t": T0, **started}) + b"\n"]
        lines += [
            orjson.dumps({"v": 1, "seq": seq, "t": T0 + t, **body}) + b"\n"
            for seq, (t, body) in enumerate(bodies, start=1)
        ]
        tl, _ = _observed(b"".join(lines))
        return tl

    def test_baseline_warmup_and_window(self) -> None:
        """Baseline 5 s ending at +6, warm-up to +8, window +9 to +20."""
        warmup = {"type": "warmup", "converged": True, "final_cv": 0.0,
                  "iterations_completed": 1, "target_cv": 0.1, "max_prompts": 1}  # fmt: skip
        tl = self._timeline(
            [
                (6.0, {"type": "baseline", "power_w": 60.0, "duration_sec": 5.0}),
                (8.0, warmup),
                (9.0, {"type": "window_started"}),
                (12.0, {"type": "sample", "power_w": 200.0}),
                (20.0, {"type": "window_ended"}),
            ]
        )
        assert tl.phases() == [
            Phase("baseline", T0 + 1.0, T0 + 6.0),
            Phase("warm-up", T0 + 6.0, T0 + 8.0),
            Phase("measured window", T0 + 9.0, T0 + 20.0),
        ]

    def test_window_without_end_runs_to_the_last_event(self) -> None:
        """A window never closed ends, on the page, at the last sample or request."""
        tl = self._timeline(
            [
                (1.0, {"type": "window_started"}),
                (2.0, {"type": "sample", "power_w": 200.0}),
                (4.5, {"type": "request", "latency_ms": 3.0, "input_tokens": 1,
                       "output_tokens": 1}),
            ]
        )  # fmt: skip
        assert tl.phases() == [Phase("measured window", T0 + 1.0, T0 + 4.5)]

    def test_warmup_without_baseline_starts_at_the_first_reading(self) -> None:
        """Without a baseline the warm-up span starts at the earliest sample or request."""
        warmup = {"type": "warmup", "converged": True, "final_cv": 0.0,
                  "iterations_completed": 1, "target_cv": 0.1, "max_prompts": 1}  # fmt: skip
        tl = self._timeline(
            [
                (2.0, {"type": "sample", "power_w": 90.0}),
                (3.0, warmup),
                (4.0, {"type": "window_started"}),
                (5.0, {"type": "window_ended"}),
            ]
        )
        assert tl.phases() == [
            Phase("warm-up", T0 + 2.0, T0 + 3.0),
            Phase("measured window", T0 + 4.0, T0 + 5.0),
        ]

    def test_no_window_no_phases(self) -> None:
        """A log that never opened its window has no phase to shade."""
        tl = self._timeline([(1.0, {"type": "sample", "power_w": 10.0})])
        assert tl.phases() == []
        assert (tl.first_t, tl.last_t) == (T0 + 1.0, T0 + 1.0)
