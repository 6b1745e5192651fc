"""Laws of the fold: the batched ``apply_all`` is ``apply`` on each event, however batched.

The replay's fast blocks hold requests and samples with, at most, baselines, clocks and such;
``apply_all`` is also correct on any list (window edges, warnings and counter resets in the
middle of it), and that is what these logs exercise: samples before the window, inside it and
after it, counters that go backwards, readings missing, throttle bits, warnings between samples.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.decode import make_event
from energy_ledger.core.events import Event
from energy_ledger.core.state import ProcessState, apply, apply_all

_OPTIONAL_READING = st.one_of(st.none(), st.floats(0.0, 500.0))
_SAMPLE = st.fixed_dictionaries(
    {
        "power_w": _OPTIONAL_READING,
        "energy_mj": st.one_of(st.none(), st.integers(0, 10_000)),
        "temperature_c": _OPTIONAL_READING,
        "sm_util_pct": st.one_of(st.none(), st.floats(0.0, 100.0)),
        "memory_used_mb": _OPTIONAL_READING,
        "throttle_reasons": st.one_of(st.none(), st.sampled_from([0, 0x4, 0x8, 0x1, 0x40])),
    }
)
_REQUEST = st.fixed_dictionaries(
    {
        "latency_ms": st.floats(0.0, 1000.0),
        "input_tokens": st.integers(0, 50),
        "output_tokens": st.integers(0, 50),
    },
    optional={
        "ttft_ms": st.floats(0.0, 1000.0),
        "itl_ms": st.lists(st.floats(0.0, 50.0), max_size=5),
    },
)
_BODY_EVENT = st.one_of(
    st.tuples(st.just("sample"), _SAMPLE),
    st.tuples(st.just("sample"), _SAMPLE),
    st.tuples(st.just("request"), _REQUEST),
    st.tuples(st.just("request"), _REQUEST),
    st.tuples(st.just("warning"), st.fixed_dictionaries({"message": st.text(max_size=5)})),
    st.tuples(st.just("clock"), st.fixed_dictionaries({"monotonic_sec": st.floats(0.0, 1e6)})),
)


@st.composite
def _logs(draw: st.DrawFn) -> tuple[list[Event], list[int]]:
    """A log (after its ``process_started``) and cut points that batch it."""
    body: list[tuple[str, dict[str, Any]]] = draw(st.lists(_BODY_EVENT, max_size=40))
    # The window opens and closes somewhere in it (or never closes, or never opens).
    start = draw(st.one_of(st.none(), st.integers(0, len(body))))
    if start is not None:
        body.insert(start, ("window_started", {"energy_mj": draw(st.integers(0, 5_000))}))
        end = draw(st.one_of(st.none(), st.integers(start + 1, len(body))))
        if end is not None:
            body.insert(end, ("window_ended", {"energy_mj": draw(st.integers(0, 10_000))}))
    steps = draw(st.lists(st.floats(0.0, 0.5), min_size=len(body), max_size=len(body)))
    events: list[Event] = []
    t = 1.0
    for seq, ((kind, fields), dt) in enumerate(zip(body, steps, strict=True), start=1):
        t += dt
        events.append(make_event(kind, seq=seq, t=t, **fields))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(events)), max_size=6))))
    return events, cuts


def _started() -> ProcessState:
    state = ProcessState()
    apply(
        state,
        make_event(
            "process_started",
            seq=0,
            t=1.0,
            experiment_id="e",
            run_id="r",
            process_index=0,
            world_size=1,
            gpu_id=0,
        ),
    )
    return state


@settings(max_examples=300, deadline=None)
@given(_logs())
def test_apply_all_is_apply_on_each_event_under_any_batching(
    log: tuple[list[Event], list[int]],
) -> None:
    events, cuts = log
    reference = _started()
    for event in events:
        apply(reference, event)
    batched = _started()
    bounds = [0, *cuts, len(events)]
    for lo, hi in itertools.pairwise(bounds):
        apply_all(batched, events[lo:hi])
    assert batched == reference
    # Independent of the fold's code: the counts it must have reached.
    opened = next((e.t for e in events if e.__class__.__name__ == "WindowStarted"), None)
    assert batched.events == len(events) + 1
    assert batched.requests + batched.requests_outside_window == sum(
        1 for e in events if e.__class__.__name__ == "Request"
    )
    if opened is None:
        assert batched.samples == 0 and batched.requests == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 1000.0), st.floats(0.0, 1000.0), st.integers(0, 40))),
    st.integers(1, 5),
)
def test_tpots_spilled_into_the_exact_sum_keep_their_mean(
    requests: list[tuple[float, float, int]], spill: int
) -> None:
    """However often the fold moves TPOTs from its array into its exact sum, their total and
    count are those of every request's (latency - ttft) / (output_tokens - 1)."""
    import math

    from energy_ledger.core import state as state_module

    expected = [(lat - f) / (n - 1) for lat, f, n in requests if n >= 2 and lat >= f]
    original = state_module.TPOT_SPILL
    state_module.TPOT_SPILL = spill
    try:
        folded = _started()
        apply(folded, make_event("window_started", seq=1, t=1.0))
        events = [
            make_event(
                "request",
                seq=seq,
                t=2.0,
                latency_ms=lat,
                ttft_ms=f,
                input_tokens=1,
                output_tokens=n,
            )
            for seq, (lat, f, n) in enumerate(requests, start=2)
        ]
        for lo in range(0, len(events), 3):
            apply_all(folded, events[lo : lo + 3])
    finally:
        state_module.TPOT_SPILL = original
    assert len(folded.tpot_ms) <= max(spill, 3) + 2
    total = state_module.tpot_total(folded)
    assert total.count == len(expected)
    assert total.total() == math.fsum(expected)
