"""Replay: read a ledger's bytes from an open binary file and fold them into ``ProcessState``.

The replay resumes: a ``ReplayCursor`` holds the byte offset of the first unread line, the line
count, the folded state and a running SHA-256 of the bytes consumed, so that reading only what was
appended since gives the same state as reading the whole file again (a property test checks it).

A last line without its ``\\n`` is torn: it is not an event yet and is left for the next read. Any
other line that is not a valid event is a ``FormatError`` naming the file and line. In lenient mode
(``strict=False``, used by ``recover``) such lines are recorded as problems and skipped instead.

Speed: lines are decoded in batches (one ``orjson.loads`` of a JSON array built from many lines)
and ``request``/``sample`` events are folded straight from the decoded dicts, without building an
event object; every other event goes through ``events.parse_event`` and ``state.apply``.
"""

from __future__ import annotations

import hashlib
import logging
import operator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from energy_ledger.core.events import (
    FORMAT_VERSION,
    UnknownEventType,
    check_envelope,
    parse_event,
)
from energy_ledger.core.fastpath import fold_hot_block
from energy_ledger.core.state import ProcessState, add_sample, apply
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
"""How many bytes one read takes; batches are decoded per chunk (64 KiB fits in cache)."""


@dataclass(slots=True)
class ReplayCursor:
    """Where a replay of one log stands: resume a later read from here.

    Attributes:
        offset: bytes of complete lines consumed (the next read starts here).
        lines: complete lines consumed.
        state: the folded state.
        torn_bytes: bytes after ``offset`` that had no ``\\n`` yet at the last read.
        problems: lines skipped in lenient mode, as messages naming file and line.
    """

    offset: int = 0
    lines: int = 0
    state: ProcessState = field(default_factory=ProcessState)
    torn_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    _digest: Any = field(default_factory=hashlib.sha256, repr=False)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the ``offset`` bytes consumed so far."""
        return str(self._digest.hexdigest())

    def copy(self) -> ReplayCursor:
        """An independent copy (the state is deep-copied, the digest cloned)."""
        return ReplayCursor(
            offset=self.offset,
            lines=self.lines,
            state=self.state.copy(),
            torn_bytes=self.torn_bytes,
            problems=list(self.problems),
            _digest=self._digest.copy(),
        )


def replay_stream(
    fp: IO[bytes],
    cursor: ReplayCursor | None = None,
    *,
    path: str | None = None,
    strict: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> ReplayCursor:
    """Fold the complete lines of ``fp`` from ``cursor.offset`` on; return the advanced cursor.

    Args:
        fp: an open binary file (or ``io.BytesIO``); it is seeked to ``cursor.offset``.
        cursor: where a previous replay stopped; ``None`` starts from the beginning.
        path: the file's name, for messages.
        strict: raise on the first invalid line (``True``) or record it and go on (``False``).
        chunk_bytes: read size.

    After an error the cursor is left part-way through a batch: discard it (replay the file
    again from a fresh cursor once it has been replaced); do not resume from it.

    Raises:
        FormatError: a corrupt line, a ``seq`` gap or duplicate, a missing field (strict mode).
        UnsupportedVersionError: an event's ``v`` is newer than this version reads (always).
    """
    cur = cursor if cursor is not None else ReplayCursor()
    fp.seek(cur.offset)
    pending = b""
    while True:
        # A line longer than a chunk: read more each time, so a long line costs O(its length).
        chunk = fp.read(max(chunk_bytes, len(pending)))
        if not chunk:
            break
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            continue
        complete = data[: cut + 1]
        pending = data[cut + 1 :]
        _fold_block(cur, complete, path, strict)
        cur._digest.update(complete)
        cur.offset += len(complete)
    cur.torn_bytes = len(pending)
    return cur


def _fold_block(cur: ReplayCursor, block: bytes, path: str | None, strict: bool) -> None:
    """Decode and fold a block of complete lines (it ends with ``\\n``).

    A block of nothing but requests and samples takes ``fastpath``. Otherwise each line is
    decoded on its own (``map(orjson.loads, ...)`` runs the loop in C), so a line
    that holds two values, or a value spread over two lines, is always an error. Measured, this
    is faster than decoding the block as one JSON array (see docs/performance.md).
    """
    lines = block[:-1].split(b"\n")
    if fold_hot_block(cur.state, lines):
        cur.lines += len(lines)
        return
    try:
        records = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        # Find and name the bad line(s); fold the good ones around them.
        for line in lines:
            cur.lines += 1
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                detail = str(exc).replace("line 1 column", "column")
                _problem(cur, f"line is not valid JSON ({detail})", path, strict)
                continue
            _fold_records(cur, [rec], path, strict, cur.lines - 1)
        return
    first_line = cur.lines
    cur.lines += len(records)
    _fold_records(cur, records, path, strict, first_line)


def _problem(cur: ReplayCursor, message: str, path: str | None, strict: bool) -> None:
    error = FormatError(message, path=path, line=cur.lines)
    if strict:
        raise error
    cur.problems.append(str(error))
    logger.warning("%s (skipped)", error)


def _fold_records(
    cur: ReplayCursor, records: list[Any], path: str | None, strict: bool, line0: int
) -> None:
    """Fold decoded records; ``line0`` is the number of lines before the first of them."""
    i, n = 0, len(records)
    while i < n:
        i = _fold_run(cur.state, records, i)
        if i < n:
            _fold_slow(cur, records[i], path, strict, line0 + i + 1)
            i += 1


_ENVELOPE = operator.itemgetter("v", "seq", "t", "type")
_REQUEST = operator.itemgetter("latency_ms", "input_tokens", "output_tokens")


def _fold_run(state: ProcessState, records: list[Any], i: int) -> int:
    """Fold well-formed ``request``/``sample`` records from ``records[i]`` on, as fast as we can.

    This is ``state.apply`` for the two event kinds that make up nearly all of a log, written
    with local variables instead of attribute updates (the replay's hot loop). It stops at the
    first record that is anything else, or not obviously valid, and returns its position; that
    record then takes the careful path. A property test checks it against ``state.apply``.
    """
    seq = state.next_seq
    if seq == 0:
        return i  # the first event must be process_started: the careful path checks it
    start_seq = seq
    n_req = n_in_tok = n_out_tok = 0
    lat_append = state.latencies_ms.append
    ttft_append = state.ttft_ms.append
    itl_extend = state.itl_ms.extend
    first_t = state.first_t
    last_t = state.last_t
    n = len(records)
    while i < n:
        rec = records[i]
        try:
            version, rec_seq, t, kind = _ENVELOPE(rec)
        except (KeyError, TypeError):
            break  # not an object, or a field missing: the careful path says which
        if (
            rec_seq != seq
            or version != 1
            or type(rec_seq) is not int
            or type(version) is not int
            or (type(t) is not float and type(t) is not int)
        ):
            break
        if kind == "request":
            try:
                lat, n_in, n_out = _REQUEST(rec)
            except KeyError:
                break
            ttft = rec.get("ttft_ms")
            itl = rec.get("itl_ms")
            if not (
                (type(lat) is float or type(lat) is int)
                and type(n_in) is int
                and type(n_out) is int
                and (ttft is None or type(ttft) is float or type(ttft) is int)
                and (itl is None or _numbers(itl))
            ):
                break
            n_req += 1
            n_in_tok += n_in
            n_out_tok += n_out
            lat_append(lat)
            if ttft is not None:
                ttft_append(ttft)
            if itl:
                itl_extend(itl)
        elif kind == "sample":
            readings = _sample_readings(rec)
            if readings is None:
                break
            add_sample(state, t, *readings)
        else:
            break
        if first_t is None:
            first_t = t
        last_t = t
        seq += 1
        i += 1
    if seq != start_seq:
        state.requests += n_req
        state.input_tokens += n_in_tok
        state.output_tokens += n_out_tok
        state.events += seq - start_seq
        state.last_seq = seq - 1
        state.next_seq = seq
        state.first_t = first_t
        state.last_t = last_t
    return i


def _advance(state: ProcessState, t: float) -> None:
    state.events += 1
    state.last_seq = state.next_seq
    state.next_seq += 1
    if state.first_t is None:
        state.first_t = t
    state.last_t = t


SampleReadings = tuple[
    float | None, float | None, float | None, float | None, float | None, int | None
]


def _sample_readings(rec: dict[str, Any]) -> SampleReadings | None:
    """A sample's readings in ``SAMPLE_FIELDS`` order, or ``None`` when one has a wrong type."""
    power = rec.get("power_w")
    energy = rec.get("energy_mj")
    temperature = rec.get("temperature_c")
    sm_util = rec.get("sm_util_pct")
    memory = rec.get("memory_used_mb")
    bits = rec.get("throttle_reasons")
    for value in (power, energy, temperature, sm_util, memory):
        if value is not None and type(value) is not float and type(value) is not int:
            return None
    if bits is not None and type(bits) is not int:
        return None
    return power, energy, temperature, sm_util, memory, bits


def _numbers(values: object) -> bool:
    if type(values) is not list:
        return False
    return all(type(x) is float or type(x) is int for x in values)


def _fold_slow(cur: ReplayCursor, rec: Any, path: str | None, strict: bool, line: int) -> None:
    """Check and fold one record the careful way; errors name ``path`` and ``line``."""
    state = cur.state
    try:
        if not isinstance(rec, dict):
            raise FormatError(f"line is not a JSON object (got {type(rec).__name__})")
        seq, _t, _type = check_envelope(rec)
        if seq != state.next_seq:
            if seq < state.next_seq:
                raise FormatError(
                    f"duplicate or out-of-order seq {seq} (expected {state.next_seq})"
                )
            raise FormatError(f"seq gap: expected {state.next_seq}, got {seq}")
        if seq == 0 and rec.get("type") != "process_started":
            raise FormatError("the first event (seq 0) must be process_started")
        event = parse_event(rec)
        if seq != 0 and event.TYPE == "process_started":
            raise FormatError("process_started may only be the first event (seq 0)")
    except UnknownEventType as exc:
        message = f"{path or '<stream>'}:{line}: skipped event of unknown type {exc.type_name!r}"
        logger.warning("%s", message)
        name = str(exc.type_name)
        state.unknown_types[name] = state.unknown_types.get(name, 0) + 1
        _advance(state, float(rec["t"]))
        return
    except FormatError as exc:
        error = type(exc)(exc.reason, path=path, line=line)
        if strict or isinstance(exc, UnsupportedVersionError):
            raise error from None
        cur.problems.append(str(error))
        logger.warning("%s (skipped)", error)
        # A gap in lenient mode: accept what comes after it.
        gap_to = rec.get("seq") if isinstance(rec, dict) else None
        if isinstance(gap_to, int) and gap_to > state.next_seq and "seq gap" in exc.reason:
            state.next_seq = gap_to
            _fold_slow(cur, rec, path, strict, line)
        return
    apply(state, event)


def replay_bytes(data: bytes, *, path: str | None = None, strict: bool = True) -> ReplayCursor:
    """Replay a whole log held in memory (convenience for tests and small files)."""
    import io

    return replay_stream(io.BytesIO(data), path=path, strict=strict)


__all__ = ["CHUNK_BYTES", "FORMAT_VERSION", "ReplayCursor", "replay_bytes", "replay_stream"]
