"""Replay: read a ledger's bytes from an open binary file and fold them into ``ProcessState``.

The replay resumes: a ``ReplayCursor`` holds the byte offset of the first unread line, the line
count, the folded state and a running SHA-256 of the bytes consumed, so that reading only what was
appended since gives the same state as reading the whole file again (a property test checks it).

A last line without its ``\\n`` is torn: it is not an event yet and is left for the next read. Any
other line that is not a valid event is a ``FormatError`` naming the file and line. In lenient mode
(``strict=False``, used by ``recover``) such lines are recorded as problems and skipped instead.
A line ending in ``\\r\\n`` is such a line (docs/format.md §2.1). A line may hold at most
``MAX_LINE_BYTES``; a longer one is a ``FormatError`` in both modes, found without buffering more
than that limit while looking for its newline.

After a ``FormatError`` the cursor stands at the start of the bad line: its offset, digest, line
count and state cover exactly the lines before it, so the same call can be made again later. The
store's reader does that while no marker covers the bad bytes (on NFS they may be bytes that
another host's write has not landed yet).

Speed: the file is read in chunks; the complete lines of a chunk are decoded together into typed
events (``core.decode``) and folded with ``state.apply_all``. A chunk with any doubtful line is
taken line by line, with the same decoder and the same fold, so chunk boundaries change nothing.
"""

from __future__ import annotations

import hashlib
import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from energy_ledger.core.decode import decode_block, decode_line
from energy_ledger.core.events import (
    FORMAT_VERSION,
    Event,
    ProcessStarted,
    UnknownEvent,
    WindowEnded,
    WindowStarted,
)
from energy_ledger.core.state import ProcessState, apply, apply_all
from energy_ledger.exceptions import FormatError, UnsupportedVersionError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
"""How many bytes one read takes; batches are decoded per chunk (64 KiB fits in cache)."""
MAX_LINE_BYTES = 16 << 20
"""The longest line the reader takes (16 MiB; its ``\\n`` not counted). No event comes near it:
the largest, ``process_started`` with an environment snapshot, is some kilobytes."""
Observer = Callable[[Sequence[Event | UnknownEvent]], None]
"""Called with each batch of folded events (``ReplayCursor.observer``)."""
TOO_LONG = f"line is longer than {MAX_LINE_BYTES:,} bytes (16 MiB), the most a line may hold"
CRLF = "line ends with \\r\\n; lines must end with a single \\n (no CRLF)"


class FrozenDigestError(Exception):
    """A cursor that crossed a process boundary cannot hash more bytes (``FrozenDigest``)."""


class FrozenDigest:
    """The SHA-256 of a replay done in another process: its value, without its running state.

    ``hashlib`` objects cannot be pickled, so a cursor sent back from a worker process carries
    its digest's hex value only. It answers ``hexdigest``; reading more bytes into it raises
    ``FrozenDigestError``, and the reader replays that log from the start instead
    (``store.tail``): the same answer, read once more.
    """

    __slots__ = ("_hex",)

    def __init__(self, hex_digest: str) -> None:
        self._hex = hex_digest

    def hexdigest(self) -> str:
        return self._hex

    def update(self, data: bytes | memoryview) -> None:
        raise FrozenDigestError("this cursor was replayed in another process")

    def copy(self) -> FrozenDigest:
        return self


@dataclass(slots=True)
class ReplayCursor:
    """Where a replay of one log stands: resume a later read from here.

    Attributes:
        offset: bytes of complete lines consumed (the next read starts here).
        lines: complete lines consumed.
        state: the folded state.
        torn_bytes: bytes after ``offset`` that had no ``\\n`` yet at the last read.
        problems: lines skipped in lenient mode, as messages naming file and line.
        observer: called with each batch of events right after it is folded, in log order
            (``core.timeline`` builds its time series this way); it sees exactly the events
            the state holds.
    """

    offset: int = 0
    lines: int = 0
    state: ProcessState = field(default_factory=ProcessState)
    torn_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    observer: Observer | None = field(default=None, repr=False, compare=False)
    _digest: Any = field(default_factory=hashlib.sha256, repr=False)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the ``offset`` bytes consumed so far."""
        return str(self._digest.hexdigest())

    def __getstate__(self) -> dict[str, Any]:
        """For pickling (parallel replay): the digest travels as its value, the observer not."""
        state = {name: getattr(self, name) for name in self.__dataclass_fields__}
        state["_digest"] = FrozenDigest(self.sha256)
        state["observer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def copy(self) -> ReplayCursor:
        """An independent copy (the state is deep-copied, the digest cloned)."""
        return ReplayCursor(
            offset=self.offset,
            lines=self.lines,
            state=self.state.copy(),
            torn_bytes=self.torn_bytes,
            problems=list(self.problems),
            observer=self.observer,
            _digest=self._digest.copy(),
        )


def replay_stream(
    fp: IO[bytes],
    cursor: ReplayCursor | None = None,
    *,
    path: str | None = None,
    strict: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ReplayCursor:
    """Fold the complete lines of ``fp`` from ``cursor.offset`` on; return the advanced cursor.

    Args:
        fp: an open binary file (or ``io.BytesIO``); it is seeked to ``cursor.offset``.
        cursor: where a previous replay stopped; ``None`` starts from the beginning.
        path: the file's name, for messages.
        strict: raise on the first invalid line (``True``) or record it and go on (``False``).
        chunk_bytes: read size.
        max_line_bytes: the longest line taken (``MAX_LINE_BYTES``; tests lower it).

    After an error the cursor stands at the start of the bad line, with everything before it
    folded: calling again retries that line (the bytes may have changed since).

    Raises:
        FormatError: a corrupt line, a ``seq`` gap or duplicate, a missing field (strict mode);
            a line longer than ``max_line_bytes`` (always).
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
        else:
            complete = data[: cut + 1]
            pending = data[cut + 1 :]
            if len(complete) > max_line_bytes:
                _fold_up_to_long_line(cur, complete, path, strict, max_line_bytes)
            _fold_block(cur, complete, path, strict)
        if len(pending) > max_line_bytes:
            # No newline yet, and already too long to be a line: stop reading it.
            raise FormatError(TOO_LONG, path=path, line=cur.lines + 1)
    cur.torn_bytes = len(pending)
    return cur


def _fold_up_to_long_line(
    cur: ReplayCursor, block: bytes, path: str | None, strict: bool, max_line_bytes: int
) -> None:
    """Raise for the first line of ``block`` over the limit, after folding the lines before it.

    Only a block longer than the limit can hold such a line, and only a long line (or a huge
    ``chunk_bytes``) makes one, so this loop over lines never runs on an ordinary log.
    """
    start = 0
    while start < len(block):
        end = block.index(b"\n", start)
        if end - start > max_line_bytes:
            if start:
                _fold_block(cur, block[:start], path, strict)
            raise FormatError(TOO_LONG, path=path, line=cur.lines + 1)
        start = end + 1


def _fold_block(cur: ReplayCursor, block: bytes, path: str | None, strict: bool) -> None:
    """Decode and fold a block of complete lines (it ends with ``\\n``); advance the cursor.

    The whole block is decoded at once and folded with ``apply_all`` when every line is a
    current, valid event in ``seq`` order, which is nearly always. Otherwise each line takes
    ``_fold_line``, which names the exact line of any problem. Both run the same decoder and the
    same fold, so where the block boundaries fall changes nothing (a property test checks it).
    A block holding any ``\\r`` (one ``memchr``; ``b"\\r\\n" in block`` costs 70 times more) takes
    the line path, which refuses a line ending in it.
    On an error the cursor is left at the start of the bad line (the lines before it folded).
    """
    lines = block[:-1].split(b"\n")
    if b"\r" not in block:
        events = decode_block(lines)
        if events is not None and _in_order(cur.state, events):
            apply_all(cur.state, events)
            if cur.observer is not None:
                cur.observer(events)
            cur.lines += len(lines)
            cur._digest.update(block)
            cur.offset += len(block)
            return
    done = 0
    try:
        for line in lines:
            cur.lines += 1
            _fold_line(cur, line, path, strict)
            done += len(line) + 1
    except FormatError:
        cur.lines -= 1
        cur._digest.update(memoryview(block)[:done])
        cur.offset += done
        raise
    cur._digest.update(block)
    cur.offset += len(block)


_SEQ = operator.attrgetter("seq")
_T = operator.attrgetter("t")
_ORDERED = (ProcessStarted, WindowStarted, WindowEnded)
"""Event types with a place in the log (the first event, the window's edges): they always take
the line-by-line path, where ``_order_problem`` checks that place. They are a handful per log."""
_ORDERED_SET = frozenset(_ORDERED)


def _in_order(state: ProcessState, events: list[Event]) -> bool:
    """True when ``_order_problem`` would find nothing wrong with any of ``events``.

    That is: ``seq`` runs on from ``state.next_seq`` without a gap, ``t`` never decreases, and
    no event is one of ``_ORDERED``, whose place in the log needs checking one by one.
    """
    next_seq = state.next_seq
    if next_seq == 0 or list(map(_SEQ, events)) != list(range(next_seq, next_seq + len(events))):
        return False
    if not _ORDERED_SET.isdisjoint(map(type, events)):
        return False
    times = list(map(_T, events))
    last_t = state.last_t
    # ``sorted`` of an already sorted list is one C pass: the cheapest non-decreasing test.
    return (last_t is None or times[0] >= last_t) and sorted(times) == times


def _order_problem(state: ProcessState, event: Event | UnknownEvent) -> str | None:
    """Why ``event`` cannot come next in the log, or ``None`` when it can."""
    seq = event.seq
    if seq != state.next_seq:
        if seq < state.next_seq:
            return f"duplicate or out-of-order seq {seq} (expected {state.next_seq})"
        return f"seq gap: expected {state.next_seq}, got {seq}"
    starts = type(event) is ProcessStarted
    if seq == 0 and not starts:
        return "the first event (seq 0) must be process_started"
    if seq != 0 and starts:
        return "process_started may only be the first event (seq 0)"
    if state.last_t is not None and event.t < state.last_t:
        return f"time goes backwards: t={event.t!r} after t={state.last_t!r}"
    if type(event) is WindowStarted and state.window_start_t is not None:
        return "a second window_started (a log measures one window)"
    if type(event) is WindowEnded:
        if state.window_start_t is None:
            return "window_ended before window_started"
        if state.window_end_t is not None:
            return "a second window_ended (a log measures one window)"
    return None


def _fold_line(cur: ReplayCursor, line: bytes, path: str | None, strict: bool) -> None:
    """Check and fold one line the careful way; errors name ``path`` and the line number."""
    state = cur.state
    try:
        if line[-1:] == b"\r":
            raise FormatError(CRLF)
        event = decode_line(line)
    except FormatError as exc:
        error = type(exc)(exc.reason, path=path, line=cur.lines)
        if strict or isinstance(exc, UnsupportedVersionError):
            raise error from None
        _skip(cur, error)
        return
    problem = _order_problem(state, event)
    if problem is not None:
        error = FormatError(problem, path=path, line=cur.lines)
        if strict:
            raise error
        _skip(cur, error)
        if not problem.startswith("seq gap"):
            return
        # Lenient mode accepts what comes after a gap.
        state.next_seq = event.seq
        if _order_problem(state, event) is not None:
            return
    if isinstance(event, UnknownEvent):
        where = f"{path or '<stream>'}:{cur.lines}"
        logger.warning("%s: skipped event of unknown type %r", where, event.type_name)
    apply(state, event)
    if cur.observer is not None:
        cur.observer((event,))


def _skip(cur: ReplayCursor, error: FormatError) -> None:
    cur.problems.append(str(error))
    logger.warning("%s (skipped)", error)


def replay_bytes(data: bytes, *, path: str | None = None, strict: bool = True) -> ReplayCursor:
    """Replay a whole log held in memory (convenience for tests and small files)."""
    import io

    return replay_stream(io.BytesIO(data), path=path, strict=strict)


__all__ = [
    "CHUNK_BYTES",
    "FORMAT_VERSION",
    "MAX_LINE_BYTES",
    "FrozenDigest",
    "FrozenDigestError",
    "Observer",
    "ReplayCursor",
    "replay_bytes",
    "replay_stream",
]
