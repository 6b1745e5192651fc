"""Hypothesis laws of the replay: how and in what pieces a log is read changes nothing."""

from __future__ import annotations

import io
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.decode import parse_event
from energy_ledger.core.process import summarize_process
from energy_ledger.core.replay import ReplayCursor, replay_stream
from energy_ledger.core.state import ProcessState, apply

LAWS = settings(max_examples=150, deadline=None)

T0 = 1700000000.0

numbers = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**6),
)
counts = st.integers(min_value=0, max_value=4096)
optional_number = st.none() | numbers
throttle_bits = st.sampled_from([0, 0x1, 0x4, 0x8, 0x20, 0x40, 0x80, 0x24, 0x100])

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
    optional_number,
    st.none() | st.lists(numbers, max_size=5),
)
percent = st.none() | st.floats(min_value=0.0, max_value=100.0) | st.integers(0, 100)
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
    optional_number,
    optional_number,
    optional_number,
    percent,
    optional_number,
    st.none() | throttle_bits,
)
warnings = st.builds(lambda text: {"type": "warning", "message": text}, st.text(max_size=30))
middle = st.lists(st.one_of(requests, samples, warnings), max_size=12)


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    """A valid log: started, events, window, events, window end, events, finished."""
    bodies: list[dict[str, Any]] = [
        {
            "type": "process_started",
            "experiment_id": "exp-1",
            "run_id": draw(st.text(min_size=1, max_size=8)),
            "process_index": 0,
            "world_size": 1,
            "gpu_id": 0,
        },
        *draw(middle),
        {"type": "window_started", "energy_mj": draw(optional_number)},
        *draw(middle),
        {"type": "window_ended", "energy_mj": draw(optional_number)},
        *draw(middle),
    ]
    if draw(st.booleans()):
        bodies.append({"type": "process_finished"})
    steps = draw(
        st.lists(
            st.one_of(
                st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
                st.integers(min_value=0, max_value=3),
            ),
            min_size=len(bodies),
            max_size=len(bodies),
        )
    )
    lines: list[bytes] = []
    t: float = T0
    for seq, (body, step) in enumerate(zip(bodies, steps, strict=True)):
        t = t + step
        lines.append(orjson.dumps({"v": 1, "seq": seq, "t": t, **body}))
    return b"\n".join(lines) + b"\n"


def _replay(data: bytes, cursor: ReplayCursor | None = None, **kwargs: Any) -> ReplayCursor:
    return replay_stream(io.BytesIO(data), cursor, **kwargs)


def _fingerprint(cursor: ReplayCursor) -> tuple[Any, ...]:
    """What a replay produced, in comparable form: the summary and the cursor's position."""
    summary = summarize_process(cursor.state)
    return (
        summary.raw.model_dump(),
        summary.energy_j,
        summary.energy_source,
        list(summary.latencies_ms),
        list(summary.ttft_ms),
        list(summary.itl_ms),
        list(summary.sm_util_pct),
        summary.warnings,
        cursor.offset,
        cursor.lines,
        cursor.sha256,
        cursor.torn_bytes,
        cursor.problems,
    )


class TestResumeLaw:
    """Replaying a log in pieces, resuming from the cursor, equals replaying it at once."""

    @LAWS
    @given(data=logs(), cut=st.floats(min_value=0.0, max_value=1.0))
    def test_two_pieces_equal_one(self, data: bytes, cut: float) -> None:
        """Cutting the log at any byte, even mid-line, then resuming gives the same result."""
        k = int(cut * len(data))
        first = _replay(data[:k])
        assert first.offset + first.torn_bytes == k
        resumed = _replay(data, first)
        once = _replay(data)
        assert resumed.state == once.state
        assert _fingerprint(resumed) == _fingerprint(once)

    @LAWS
    @given(data=logs(), cuts=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=6))
    def test_many_pieces_equal_one(self, data: bytes, cuts: list[float]) -> None:
        """Following a growing log through any number of prefixes gives the same result."""
        cursor = None
        for k in sorted(int(c * len(data)) for c in cuts):
            cursor = _replay(data[:k], cursor)
        cursor = _replay(data, cursor)
        assert _fingerprint(cursor) == _fingerprint(_replay(data))

    @LAWS
    @given(data=logs())
    def test_resuming_at_the_end_changes_nothing(self, data: bytes) -> None:
        """Resuming a finished replay on the same bytes folds nothing more."""
        once = _replay(data)
        before = _fingerprint(once)
        again = _replay(data, once.copy())
        assert _fingerprint(again) == before


class TestChunkLaw:
    """The read size is an implementation detail."""

    @LAWS
    @given(data=logs(), chunk_bytes=st.integers(min_value=1, max_value=64))
    def test_small_chunks_equal_the_default(self, data: bytes, chunk_bytes: int) -> None:
        """Reading in chunks of 1 to 64 bytes gives the same state as the default read size."""
        small = _replay(data, chunk_bytes=chunk_bytes)
        default = _replay(data)
        assert small.state == default.state
        assert _fingerprint(small) == _fingerprint(default)


class TestTypedFoldLaw:
    """The replay's fast path is an optimisation of the typed fold, nothing more."""

    @LAWS
    @given(data=logs())
    def test_typed_fold_equals_replay(self, data: bytes) -> None:
        """Folding ``parse_event`` of each line with ``state.apply`` gives the replay's state."""
        typed = ProcessState()
        for line in data.splitlines():
            apply(typed, parse_event(orjson.loads(line)))
        replayed = _replay(data).state
        assert replayed == typed
        a, b = summarize_process(replayed), summarize_process(typed)
        assert a.raw.model_dump() == b.raw.model_dump()
        assert (a.energy_j, list(a.latencies_ms)) == (b.energy_j, list(b.latencies_ms))
