"""Where the samples live: ``Samples`` views from the fold to the writer, never Python lists.

A 1 GB log holds millions of latencies. The fold keeps them as ``array('d')``; the summary, its
``RawProcessResult`` and the aggregated result hold ``Samples`` views of those same arrays, and
statistics copy one list at a time into numpy. These tests check the sharing (no copy), the
snapshot law (a view does not change when the state is folded further), ``Samples`` as a model
field (the schema, validation and dump of ``list[float]``), the pooled statistics against the
plain ones, and a memory bound on summarising, aggregating and streaming a long run.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import statistics
import tracemalloc
from array import array
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field, ValidationError

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.events import Request
from energy_ledger.core.process import summarize_process
from energy_ledger.core.replay import replay_bytes
from energy_ledger.core.state import ProcessState, apply
from energy_ledger.core.stats import mean, mean_pooled, summarize, summarize_pooled
from energy_ledger.models.samples import Samples, SamplesField
from energy_ledger.store.exporters import result_json_chunks
from tests.core.ledgers import Req, ledger


class _Plain(BaseModel):
    values: list[float] = Field(default_factory=list)


class _Compact(BaseModel):
    values: SamplesField = Field(default_factory=Samples)


def _open_window_state() -> ProcessState:
    """A state folded up to two requests inside a window that is still open."""
    lines = ledger(0, [Req(10.0, ttft_ms=1.0, itl_ms=[1.0, 2.0, 3.0]), Req(20.0)]).splitlines()
    return replay_bytes(b"\n".join(lines[:-2]) + b"\n").state  # without window_ended, finished


class TestSamples:
    """``Samples`` behaves as a read-only list of floats."""

    def test_compares_equal_to_lists_tuples_and_arrays(self) -> None:
        """Equal to a list, tuple, array or ``Samples`` of the same values, and only those."""
        s = Samples([1.0, 2.5])
        assert s == [1.0, 2.5] and [1.0, 2.5] == s  # noqa: SIM300 (both operand orders)
        assert s == (1.0, 2.5) and s == array("d", [1.0, 2.5]) and s == Samples([1, 2.5])
        assert s != [1.0] and s != [2.5, 1.0] and s != "12" and Samples() == []

    def test_indexing_and_slicing(self) -> None:
        """Indexes (negative too) and slices read like a list's; out of range raises."""
        s = Samples.view(array("d", [1.0, 2.0, 3.0]))
        assert (s[0], s[-1], s[1:], s[::-2]) == (1.0, 3.0, [2.0, 3.0], [3.0, 1.0])
        with pytest.raises(IndexError):
            s[3]

    def test_a_view_is_a_snapshot_of_an_append_only_array(self) -> None:
        """Values appended after the view was taken do not show in it, or in its copies."""
        values = array("d", [1.0, 2.0])
        view = Samples.view(values)
        values.extend([3.0, 4.0])
        assert view == [1.0, 2.0] and len(view) == 2 and list(view) == [1.0, 2.0]
        assert pickle.loads(pickle.dumps(view)) == [1.0, 2.0]
        assert view.tolist() == [1.0, 2.0] and list(view.lists(1)) == [[1.0], [2.0]]
        assert view.as_array() == array("d", [1.0, 2.0])

    def test_a_view_shares_the_array(self) -> None:
        """A view of a whole array hands back that very array (no copy)."""
        values = array("d", [1.0])
        assert Samples.view(values).as_array() is values

    def test_a_released_memoryview_lets_the_array_grow(self) -> None:
        """``memoryview`` pins the array only until it is released."""
        values = array("d", [1.0])
        view = Samples.view(values).memoryview()
        with pytest.raises(BufferError):
            values.append(2.0)
        view.release()
        values.append(2.0)
        assert values.tolist() == [1.0, 2.0]

    def test_view_needs_doubles(self) -> None:
        """Only an ``array('d')`` can be viewed (its values are 8-byte floats)."""
        with pytest.raises(TypeError):
            Samples.view(array("i", [1]))


class TestSamplesField:
    """To pydantic a ``SamplesField`` is a ``list[float]`` held as ``Samples``."""

    @pytest.mark.parametrize("mode", ["validation", "serialization"])
    def test_json_schema_is_list_of_floats(self, mode: Any) -> None:
        """The JSON Schema is the one a ``list[float]`` field has, in both modes."""
        plain = _Plain.model_json_schema(mode=mode)
        compact = _Compact.model_json_schema(mode=mode)
        assert compact["properties"] == plain["properties"]

    @pytest.mark.parametrize(
        "value", [[1, 2.5], (1.0,), [], array("d", [3.0]), Samples([4.0]), ["5"]]
    )
    def test_validates_what_a_list_of_floats_accepts(self, value: Any) -> None:
        """Python values validate to ``Samples`` of the floats a ``list[float]`` gets."""
        model = _Compact(values=value)
        assert isinstance(model.values, Samples)
        assert model.values == [float(x) for x in value]

    @pytest.mark.parametrize("value", [["x"], [None], "12", 3.0])
    def test_rejects_what_a_list_of_floats_rejects(self, value: Any) -> None:
        """What ``list[float]`` refuses, a ``SamplesField`` refuses."""
        with pytest.raises(ValidationError):
            _Plain(values=value)
        with pytest.raises(ValidationError):
            _Compact(values=value)

    def test_json_in_and_dumps_out_as_lists(self) -> None:
        """From JSON it is ``Samples``; ``model_dump`` in either mode gives a list."""
        model = _Compact.model_validate_json(b'{"values": [1, 2.5]}')
        assert isinstance(model.values, Samples)
        assert model.model_dump() == model.model_dump(mode="json") == {"values": [1.0, 2.5]}
        assert model.model_dump_json() == _Plain(values=[1.0, 2.5]).model_dump_json()

    def test_a_samples_value_is_kept_not_copied(self) -> None:
        """A ``Samples`` given to a model is the model's value itself."""
        samples = Samples.view(array("d", [1.0]))
        assert _Compact(values=samples).values is samples


class TestNoCopies:
    """From the fold to the aggregated result the samples are shared, never copied."""

    def test_summary_and_raw_result_view_the_states_arrays(self) -> None:
        """Every sample list of the summary and its raw result is a view of the state's array."""
        state = replay_bytes(
            ledger(0, [Req(10.0, ttft_ms=1.0, itl_ms=[1.0, 2.0, 3.0]), Req(20.0, ttft_ms=2.0)])
        ).state
        s = summarize_process(state)
        lm = s.raw.inference_metrics.latency_measurements
        assert s.raw.per_request_latencies_ms is s.latencies_ms
        assert s.latencies_ms.as_array() is state.latencies_ms
        assert lm["ttft_ms"] is s.ttft_ms and s.ttft_ms.as_array() is state.ttft_ms
        assert lm["itl_full_ms"].as_array() is state.itl_ms
        assert lm["itl_trimmed_ms"].as_array() is state.itl_trimmed_ms
        assert s.raw.gpu_utilisation_samples.as_array() is state.sm_util_pct
        # TPOTs are kept only as their exact sum: the summary holds a sum, not the values.
        assert s.tpot_ms is not None and s.tpot_ms.count == len(state.tpot_ms)
        assert s.tpot_ms.total() == math.fsum(state.tpot_ms)

    def test_the_aggregated_result_holds_the_same_views(self) -> None:
        """``aggregate_results`` keeps the processes' raw results as they are."""
        s = summarize_process(replay_bytes(ledger(0, [Req(10.0, ttft_ms=1.0)])).state)
        result = aggregate_results([s], "exp")
        assert result.process_results[0].per_request_latencies_ms is s.latencies_ms

    def test_folding_further_leaves_an_earlier_summary_as_it_was(self) -> None:
        """A summary is a snapshot: requests folded after it show only in a new summary."""
        state = _open_window_state()
        before = summarize_process(state)
        dumped = before.raw.model_dump(mode="json")
        apply(state, Request(seq=state.next_seq, t=11.0, latency_ms=30.0, input_tokens=1,
                             output_tokens=4, ttft_ms=3.0, itl_ms=(1.0, 1.0, 1.0)))  # fmt: skip
        assert before.raw.model_dump(mode="json") == dumped
        assert before.latencies_ms == [10.0, 20.0] and before.requests == 2
        after = summarize_process(state)
        assert after.latencies_ms == [10.0, 20.0, 30.0] and after.ttft_ms == [1.0, 3.0]

    def test_statistics_leave_the_arrays_free_to_grow(self) -> None:
        """Aggregating pins no buffer: the fold can append to the arrays afterwards."""
        state = _open_window_state()
        aggregate_results([summarize_process(state)], "exp")
        state.latencies_ms.append(1.0)  # a BufferError if a view were still exported


class TestPooledStatistics:
    """Pooling the processes' lists gives the statistics of their concatenation."""

    PARTS: ClassVar[list[list[list[float]]]] = [
        [[3.0, 1.0], [2.0], []],
        [[], [5.0, 5.0, 0.5]],
        [[0.1] * 7, [0.2, 0.30000000000000004], [1e16, 1.0, -0.0]],
        [[], []],
    ]

    @pytest.mark.parametrize("parts", PARTS)
    def test_summarize_pooled_is_summarize_of_the_concatenation(
        self, parts: list[list[float]]
    ) -> None:
        """Same mean, percentiles, extremes and count, as lists, arrays or ``Samples``."""
        joined = [x for part in parts for x in part]
        expected = summarize(joined)
        assert summarize_pooled(parts) == expected
        assert summarize_pooled([array("d", p) for p in parts]) == expected
        assert summarize_pooled([Samples(p) for p in parts]) == expected
        if joined:
            assert expected is not None
            assert expected.median == statistics.median(joined)
            assert expected.mean == mean(joined)

    @pytest.mark.parametrize("parts", PARTS)
    def test_mean_pooled_is_the_mean_of_the_concatenation(self, parts: list[list[float]]) -> None:
        """Exactly the mean of the joined values (``None`` without any)."""
        joined = [x for part in parts for x in part]
        assert mean_pooled([Samples(p) for p in parts]) == (mean(joined) if joined else None)

    def test_summarize_does_not_reorder_its_input(self) -> None:
        """The sort happens on a copy: the caller's values keep their order."""
        values = array("d", [3.0, 1.0, 2.0])
        summarize_pooled([Samples.view(values), values])
        assert values.tolist() == [3.0, 1.0, 2.0]


class TestMemoryBound:
    """Summarising, aggregating and streaming a long run costs bytes per request, not lists."""

    REQUESTS = 200_000

    def test_peak_beyond_the_folded_state(self) -> None:
        """Peak traced memory stays under 10 bytes a request plus 2 MB of fixed costs.

        The fold's own arrays (about 27 bytes a request here) are built before tracing starts.
        What remains is the selection's bins and chunks (about 2 MB, whatever the requests) and a
        chunk of formatted values; one Python list of the latencies alone would take 32 bytes a
        request.
        """
        n = self.REQUESTS
        state = ProcessState()
        state.window_start_t, state.window_end_t = 0.0, 100.0
        state.requests = n
        state.latencies_ms = array("d", (400.0 + i % 977 for i in range(n)))
        state.ttft_ms = array("d", (40.0 + i % 311 for i in range(n)))
        state.tpot_ms = array("d", (1.0 + i % 7 for i in range(n)))
        state.sm_util_pct = array("d", (90.0 + i % 10 for i in range(n // 3)))
        digest = hashlib.sha256()
        tracemalloc.start()
        try:
            result = aggregate_results([summarize_process(state)], "exp")
            for chunk in result_json_chunks(result):
                digest.update(chunk)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.latency_stats is not None and result.latency_stats.ttft_samples == n
        assert peak < 10 * n + 2_000_000, f"{peak / n:.1f} bytes a request"
