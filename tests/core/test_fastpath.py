"""The replay's fast path for blocks of requests and samples."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from energy_ledger.core.events import make_event, parse_event
from energy_ledger.core.fastpath import fold_hot_block
from energy_ledger.core.state import ProcessState, apply

T0 = 1_700_000_000.0


def _started_state() -> ProcessState:
    state = ProcessState()
    apply(
        state,
        make_event(
            "process_started",
            seq=0,
            t=T0,
            experiment_id="e",
            run_id="r",
            process_index=0,
            world_size=1,
            gpu_id=0,
        ),
    )
    apply(state, make_event("window_started", seq=1, t=T0, energy_mj=0))
    return state


def _line(number: int, body: dict[str, Any], **envelope: Any) -> bytes:
    return orjson.dumps({"v": 1, "seq": number, "t": T0 + number, **body, **envelope})


REQUEST = {"type": "request", "latency_ms": 12.5, "input_tokens": 3, "output_tokens": 4}
SAMPLE = {"type": "sample", "power_w": 200.0, "energy_mj": 5, "sm_util_pct": 90}


class TestFoldHotBlock:
    """``fold_hot_block`` folds only blocks it can check completely, like ``state.apply``."""

    def test_folds_like_the_typed_fold(self) -> None:
        """A block of requests and samples gives the state the typed fold gives."""
        bodies = [REQUEST, SAMPLE, {**REQUEST, "ttft_ms": 2, "itl_ms": [1, 2.5]}, SAMPLE]
        lines = [_line(2 + i, body) for i, body in enumerate(bodies)]
        fast = _started_state()
        assert fold_hot_block(fast, lines)
        typed = _started_state()
        for line in lines:
            apply(typed, parse_event(orjson.loads(line)))
        assert fast == typed

    @pytest.mark.parametrize(
        "bad",
        [
            pytest.param(_line(3, {**REQUEST, "input_tokens": True}), id="bool-count"),
            pytest.param(_line(3, {**REQUEST, "input_tokens": 1.0}), id="float-count"),
            pytest.param(_line(3, {**REQUEST, "latency_ms": "1"}), id="string-latency"),
            pytest.param(_line(3, {"type": "request", "latency_ms": 1.0}), id="missing-field"),
            pytest.param(_line(3, {"type": "warning", "message": "x"}), id="other-type"),
            pytest.param(_line(3, {"type": "mystery"}), id="unknown-type"),
            pytest.param(_line(4, REQUEST), id="seq-gap"),
            pytest.param(_line(2, REQUEST), id="seq-duplicate"),
            pytest.param(_line(3, REQUEST, v=2), id="newer-version"),
            pytest.param(_line(3, REQUEST, seq=True), id="bool-seq"),
            pytest.param(_line(3, REQUEST) + _line(4, REQUEST), id="two-on-one-line"),
            pytest.param(b"", id="blank-line"),
            pytest.param(b'{"v":1,', id="corrupt"),
        ],
    )
    def test_leaves_anything_else_to_the_general_path(self, bad: bytes) -> None:
        """One doubtful line makes the whole block fall back, with the state untouched."""
        state = _started_state()
        before = state.copy()
        assert not fold_hot_block(state, [_line(2, REQUEST), bad])
        assert state == before

    def test_first_event_is_never_folded_here(self) -> None:
        """Before process_started (seq 0) nothing takes the fast path."""
        state = ProcessState()
        assert not fold_hot_block(state, [_line(0, REQUEST)])
        assert state == ProcessState()
