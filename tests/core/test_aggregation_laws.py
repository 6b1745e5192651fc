"""Hypothesis laws of aggregation: the order in which processes are replayed changes nothing."""

from __future__ import annotations

import io
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import replay_stream
from energy_ledger.store.exporters import result_to_json_bytes

LAWS = settings(max_examples=60, deadline=None)
T0 = 1_700_000_000.0

latency = st.floats(min_value=0.01, max_value=5000.0, allow_nan=False)
request = st.builds(
    lambda lat, n_in, n_out, ttft, itl: {
        "type": "request",
        "latency_ms": lat,
        "input_tokens": n_in,
        "output_tokens": n_out,
        "ttft_ms": ttft,
        "itl_ms": itl,
    },
    latency,
    st.integers(min_value=0, max_value=4096),
    st.integers(min_value=0, max_value=4096),
    latency,
    st.lists(latency, max_size=4),
)
sample = st.builds(
    lambda power, util, bits: {
        "type": "sample",
        "power_w": power,
        "sm_util_pct": util,
        "throttle_reasons": bits,
    },
    st.floats(min_value=10.0, max_value=700.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    st.sampled_from([0, 0x4, 0x20]),
)


@st.composite
def process_log(draw: st.DrawFn, index: int, world_size: int) -> bytes:
    """One process's complete log; GPUs, hosts and counters drawn so that some are shared."""
    start = T0 + draw(st.floats(min_value=0.0, max_value=5.0, allow_nan=False))
    counter = draw(st.integers(min_value=0, max_value=10**9))
    bodies: list[dict[str, Any]] = [
        {
            "type": "process_started",
            "experiment_id": "exp",
            "run_id": "run",
            "process_index": index,
            "world_size": world_size,
            "gpu_id": index,
            "gpu_uuid": f"GPU-{draw(st.integers(min_value=0, max_value=2))}",
            "hostname": draw(st.sampled_from(["node-a", "node-b"])),
            "backend": draw(st.sampled_from(["pytorch", "vllm"])),
        },
        {
            "type": "baseline",
            "power_w": draw(st.floats(min_value=0.0, max_value=100.0)),
            "duration_sec": 1.0,
        },
        {"type": "window_started", "energy_mj": counter},
        *draw(st.lists(st.one_of(request, sample), max_size=10)),
    ]
    duration = draw(st.floats(min_value=0.001, max_value=60.0, allow_nan=False))
    bodies.append({"type": "window_ended", "energy_mj": counter + draw(st.integers(0, 10**7))})
    bodies.append({"type": "process_finished"})
    lines = []
    for seq, body in enumerate(bodies):
        t = start + duration * seq / (len(bodies) - 1)
        lines.append(orjson.dumps({"v": 1, "seq": seq, "t": t, **body}))
    return b"\n".join(lines) + b"\n"


@st.composite
def experiments(draw: st.DrawFn) -> list[ProcessSummary]:
    """The replayed processes of one experiment of 1 to 5 processes."""
    n = draw(st.integers(min_value=1, max_value=5))
    out = []
    for i in range(n):
        cursor = replay_stream(io.BytesIO(draw(process_log(i, n))))
        out.append(summarize_process(cursor.state, i))
    return out


class TestProcessOrderLaw:
    """Aggregating the same processes in any order gives the same bytes."""

    @LAWS
    @given(processes=experiments(), data=st.data())
    def test_any_permutation_gives_the_same_result(
        self, processes: list[ProcessSummary], data: st.DataObject
    ) -> None:
        """A shuffled list of processes aggregates to a byte-identical result file."""
        shuffled = data.draw(st.permutations(processes))
        once = result_to_json_bytes(aggregate_results(processes, "exp"))
        again = result_to_json_bytes(aggregate_results(shuffled, "exp"))
        assert once == again

    @LAWS
    @given(processes=experiments())
    def test_tokens_add_up_over_processes(self, processes: list[ProcessSummary]) -> None:
        """Tokens add up over processes (the energy laws are in test_energy_laws.py)."""
        result = aggregate_results(processes, "exp")
        assert result.total_tokens == sum(p.input_tokens + p.output_tokens for p in processes)
