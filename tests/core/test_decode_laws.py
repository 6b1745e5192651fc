"""Hypothesis laws of decoding: where chunk boundaries fall never changes what a log means.

A log is drawn with every event type (and unknown ones), then some lines are corrupted the ways
real writers and filesystems corrupt them. Reading it in any chunking (fixed sizes from 1 byte,
or a reader that returns a random number of bytes per call) must give the same state, or the
same error at the same line, as reading it line by line through ``decode_line`` and ``apply``.
The reference at the bottom of this file is written independently of the replay's block path.
"""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.decode import decode_block, decode_line
from energy_ledger.core.events import EVENT_CLASSES, ProcessStarted, WindowEnded, WindowStarted
from energy_ledger.core.replay import ReplayCursor, replay_stream
from energy_ledger.core.state import ProcessState, apply
from energy_ledger.exceptions import FormatError

LAWS = settings(max_examples=200, deadline=None)
T0 = 1700000000.0

small = st.floats(min_value=0.0, max_value=1e4, allow_nan=False) | st.integers(0, 10**4)
maybe = st.none() | small
text = st.text(max_size=12)

BODIES: dict[str, Any] = {
    "baseline": st.fixed_dictionaries(
        {"power_w": small, "duration_sec": small}, optional={"method": text}
    ),
    "warmup": st.fixed_dictionaries(
        {
            "converged": st.booleans(),
            "final_cv": small,
            "iterations_completed": st.integers(0, 100),
            "target_cv": small,
            "max_prompts": st.integers(0, 100),
        },
        optional={"latencies_ms": st.lists(small, max_size=3)},
    ),
    "window_started": st.fixed_dictionaries({}, optional={"energy_mj": small}),
    "sample": st.fixed_dictionaries(
        {},
        optional={
            "power_w": maybe,
            "energy_mj": maybe,
            "temperature_c": st.floats(-20, 120),
            "sm_util_pct": st.floats(0, 100),
            "memory_used_mb": maybe,
            "throttle_reasons": st.sampled_from([0, 4, 0x20, 0x24]),
        },
    ),
    "request": st.fixed_dictionaries(
        {"latency_ms": small, "input_tokens": st.integers(0, 4096), "output_tokens": small},
        optional={"ttft_ms": maybe, "itl_ms": st.none() | st.lists(small, max_size=4)},
    ).map(lambda d: {**d, "output_tokens": int(d["output_tokens"])}),
    "window_ended": st.fixed_dictionaries({}, optional={"energy_mj": small}),
    "compute": st.fixed_dictionaries({"flops_total": small}, optional={"flops_method": text}),
    "warning": st.fixed_dictionaries({"message": text}),
    "clock": st.fixed_dictionaries(
        {"monotonic_sec": small},
        optional={"wall_t": small, "fs_offset_sec": st.floats(-5, 5), "fs_offset_error_sec": small},
    ),
    "process_finished": st.fixed_dictionaries({}, optional={"status": text}),
    "process_failed": st.fixed_dictionaries({"error": text}),
    "gpu_clock": st.fixed_dictionaries({"mhz": small}),  # a type this version does not know
}
START = {
    "type": "process_started",
    "experiment_id": "exp-1",
    "run_id": "run-1",
    "process_index": 0,
    "world_size": 1,
    "gpu_id": 0,
    "effective_config": {"batch": 8, "nested": {"a": [1, 2]}},
}


def _line(seq: int, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": 1, "seq": seq, "t": T0 + seq / 8, **body})


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Each corruption turns (seq, a valid line) into the bytes that replace it.
CORRUPTIONS = {
    "not json": lambda seq, line: b"{not json",
    "blank": lambda seq, line: b"",
    "crlf": lambda seq, line: line + b"\r",
    "array": lambda seq, line: b"[1, 2]",
    "two values": lambda seq, line: line + b" " + line,
    "torn middle": lambda seq, line: line[: len(line) // 2],
    "int too big": lambda seq, line: _line(
        seq, {"type": "request", "latency_ms": 1, "input_tokens": 7, "output_tokens": 1}
    ).replace(b'"input_tokens":7', b'"input_tokens":18446744073709551616'),
    "negative tokens": lambda seq, line: _line(
        seq, {"type": "request", "latency_ms": 1, "input_tokens": -5, "output_tokens": 1}
    ),
    "float overflow": lambda seq, line: _line(seq, {"type": "sample"})[:-1] + b',"power_w":1e999}',
    "util over 100": lambda seq, line: _line(seq, {"type": "sample", "sm_util_pct": 101}),
    "newer version": lambda seq, line: orjson.dumps({**orjson.loads(line), "v": 2}),
    "version zero": lambda seq, line: orjson.dumps({**orjson.loads(line), "v": 0}),
    "seq duplicate": lambda seq, line: _line(seq - 1, {"type": "warning", "message": "dup"}),
    "seq gap": lambda seq, line: _line(seq + 2, {"type": "warning", "message": "gap"}),
    "second start": lambda seq, line: _line(seq, START),
    "time backwards": lambda seq, line: orjson.dumps({**orjson.loads(line), "t": T0 - 1.0}),
    "second window": lambda seq, line: _line(seq, {"type": "window_started"}),
    "early window end": lambda seq, line: _line(seq, {"type": "window_ended"}),
    "deep nesting": lambda seq, line: (
        _line(seq, {"type": "warning", "message": "x"})[:-1] + b',"junk":' + _deep(3000) + b"}"
    ),
    "deep config": lambda seq, line: _line(
        seq, {**START, "effective_config": {"a": [[[[[[0]]]]]]}}
    ).replace(b"[[[[[[0]]]]]]", _deep(40)),
}


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    """A log with events of every kind, some lines corrupted, and maybe a torn last line.

    Half the logs are clean (no corruption, no unknown type), so that the block path, which
    any doubtful line turns off for its whole block, is exercised as much as the line path.
    """
    clean = draw(st.booleans())
    known = sorted(k for k in BODIES if k in EVENT_CLASSES and not k.startswith("window_"))
    # Requests and samples make up most of a real log, so they are drawn most often.
    pool = [*known, *["request", "sample"] * 6, *([] if clean else ["gpu_clock"])]
    kinds = draw(st.lists(st.sampled_from(pool), max_size=40))
    # The window's edges have their place: started once, then maybe ended once.
    opened = draw(st.integers(0, len(kinds)))
    kinds.insert(opened, "window_started")
    if draw(st.booleans()):
        kinds.insert(draw(st.integers(opened + 1, len(kinds))), "window_ended")
    lines = [_line(0, START)]
    for seq, kind in enumerate(kinds, start=1):
        line = _line(seq, {"type": kind, **draw(BODIES[kind])})
        if not clean and draw(st.integers(0, 24)) == 0:
            line = CORRUPTIONS[draw(st.sampled_from(sorted(CORRUPTIONS)))](seq, line)
        lines.append(line)
    data = b"\n".join(lines) + b"\n"
    if draw(st.booleans()):
        data += _line(len(lines), {"type": "warning", "message": "torn"})[:-3]
    return data


class RaggedReader(io.BytesIO):
    """A file that returns between 1 byte and the asked-for size per read, as a pipe or NFS may."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        super().__init__(data)
        self._sizes = sizes or [1]
        self._i = 0

    def read(self, size: int | None = -1) -> bytes:
        want = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        limit = want if size is None or size < 0 else min(size, want)
        return super().read(max(1, limit))


def _outcome(fp: io.BytesIO, *, strict: bool, chunk_bytes: int = 1 << 16) -> tuple[Any, ...]:
    """What reading ``fp`` gave: the error, or the state and the cursor's position."""
    try:
        cur = replay_stream(fp, strict=strict, chunk_bytes=chunk_bytes)
    except FormatError as exc:
        return ("error", type(exc).__name__, str(exc), exc.line)
    return ("ok", cur.state, cur.lines, cur.offset, cur.torn_bytes, cur.sha256, cur.problems)


def _reference(data: bytes) -> tuple[str, ...] | ProcessState:
    """Strict reading written without the block path: split lines, decode each, check order."""
    state = ProcessState()
    complete = data[: data.rfind(b"\n") + 1]
    last_t = -1.0
    started = ended = False
    for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
        if line.endswith(b"\r"):
            return ("error", "line ends with \\r\\n", str(number))
        try:
            event = decode_line(line)
        except FormatError as exc:
            return ("error", exc.reason, str(number))
        expected = state.next_seq
        if event.seq != expected:
            return ("error", "order", str(number))
        if (event.seq == 0) != isinstance(event, ProcessStarted):
            return ("error", "start", str(number))
        if event.t < last_t:
            return ("error", "order", str(number))
        if isinstance(event, WindowStarted):
            if started:
                return ("error", "order", str(number))
            started = True
        if isinstance(event, WindowEnded):
            if not started or ended:
                return ("error", "order", str(number))
            ended = True
        last_t = event.t
        apply(state, event)
    return state


class TestChunkingLaw:
    """Any chunking of any log gives the same state and the same error, at the same line."""

    @LAWS
    @given(data=logs(), chunk=st.integers(1, 300))
    def test_fixed_chunks_equal_one_read(self, data: bytes, chunk: int) -> None:
        """Reads of ``chunk`` bytes (1 byte included) mean what one big read means."""
        for strict in (True, False):
            once = _outcome(io.BytesIO(data), strict=strict)
            assert _outcome(io.BytesIO(data), strict=strict, chunk_bytes=chunk) == once
            assert _outcome(io.BytesIO(data), strict=strict, chunk_bytes=1) == once

    @LAWS
    @given(data=logs(), sizes=st.lists(st.integers(1, 500), min_size=1, max_size=20))
    def test_ragged_reads_equal_one_read(self, data: bytes, sizes: list[int]) -> None:
        """A reader that returns a different number of bytes each time changes nothing."""
        for strict in (True, False):
            once = _outcome(io.BytesIO(data), strict=strict)
            assert _outcome(RaggedReader(data, sizes), strict=strict, chunk_bytes=256) == once

    @LAWS
    @given(data=logs())
    def test_replay_equals_the_line_by_line_reference(self, data: bytes) -> None:
        """The replay's state, or the line of its first error, is the reference's."""
        got = _outcome(io.BytesIO(data), strict=True)
        expected = _reference(data)
        if isinstance(expected, ProcessState):
            assert got[0] == "ok", got
            assert got[1] == expected
        else:
            assert got[0] == "error"
            assert got[3] == int(expected[2])
            if expected[1] not in ("order", "start"):
                assert expected[1] in got[2]

    @LAWS
    @given(data=logs(), step=st.integers(1, 200))
    def test_following_a_growing_log_equals_one_read(self, data: bytes, step: int) -> None:
        """Reading each prefix of a growing log, resuming the cursor, gives the one-read outcome."""
        for strict in (True, False):
            once = _outcome(io.BytesIO(data), strict=strict)
            cursor = ReplayCursor()
            try:
                for end in [*range(0, len(data), step), len(data)]:
                    cursor = replay_stream(io.BytesIO(data[:end]), cursor, strict=strict)
            except FormatError as exc:
                got: tuple[Any, ...] = ("error", type(exc).__name__, str(exc), exc.line)
            else:
                got = ("ok", cursor.state, cursor.lines, cursor.offset, cursor.torn_bytes)
                got += (cursor.sha256, cursor.problems)
            assert got == once


class TestBlockDecoding:
    """``decode_block`` is ``decode_line`` on every line, or ``None``."""

    @LAWS
    @given(data=logs())
    def test_block_is_all_lines_or_nothing(self, data: bytes) -> None:
        """A block decodes to exactly the per-line events, or to ``None`` when one line fails."""
        lines = data[: data.rfind(b"\n")].split(b"\n")
        block = decode_block(lines)
        singles: list[Any] = []
        for line in lines:
            try:
                singles.append(decode_line(line))
            except FormatError:
                singles.append(None)
        if block is None:
            assert None in singles or any(type(e).__name__ == "UnknownEvent" for e in singles)
        else:
            assert block == singles

    @settings(max_examples=20, deadline=None)
    @pytest.mark.parametrize("kind", sorted(EVENT_CLASSES))
    @given(data=st.data())
    def test_every_event_type_takes_the_block_path(self, kind: str, data: st.DataObject) -> None:
        """Each of the twelve types decodes in a block (so every type has the fast path)."""
        body = START if kind == "process_started" else {"type": kind, **data.draw(BODIES[kind])}
        assert decode_block([_line(1, body)]) is not None
