"""The report's views, against the result JSON and the logs read here with ``json``.

Every expected number is taken from the result file as ``json.load`` reads it (or from the logs'
lines), and every derived one (J per request, the sum of the GPUs' power, the frontier) is
worked out in the test from those values, never by calling the code under test another way.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import replay_bytes
from energy_ledger.core.timeline import TimelineBuilder
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.report import checks, model, numbers
from energy_ledger.report.digest import (
    AggregationDigest,
    EnergyDigest,
    ExtendedDigest,
    GpuDigest,
    InferenceDigest,
    LatencyMeasurements,
    ProcessDigest,
    RequestLatencyDigest,
    ResultDigest,
    ThrottleDigest,
    decode_digest,
)
from energy_ledger.simulate import T0 as SIM_T0
from energy_ledger.simulate import simulate, simulate_process
from energy_ledger.store.exporters import result_to_json_bytes
from energy_ledger.store.reader import scan_experiment

LAWS = settings(max_examples=80, deadline=None)
T0 = 1_700_000_000.0


@dataclass(frozen=True)
class Experiment:
    """One experiment replayed by the pipeline: its folder, result (both readings), view."""

    folder: Path
    loaded: dict[str, Any]
    digest: ResultDigest
    view: model.ExperimentView
    summaries: list[ProcessSummary]

    def log(self, index: int) -> list[dict[str, Any]]:
        """Process ``index``'s events, read with ``json``."""
        path = self.folder / f"process_{index}.events.jsonl"
        return [json.loads(line) for line in path.read_bytes().splitlines()]


def _experiment(root: Path, experiment_id: str = "sim-0000", **view_args: Any) -> Experiment:
    """Replay ``root`` with the pipeline, then build the view the way ``report`` does."""
    replay_root(root)
    builders: dict[int, TimelineBuilder] = {}

    def observe(index: int) -> Callable[..., None]:
        builders[index] = TimelineBuilder()
        return builders[index].feed

    folder = root / "raw" / experiment_id
    scan = scan_experiment(folder, observe=observe)
    data = (root / "aggregated" / f"{experiment_id}.json").read_bytes()
    digest = decode_digest(data)
    timelines = [b.build(i) for i, b in builders.items()]
    view = model.experiment_view(digest, timelines, scan.summaries, **view_args)
    return Experiment(folder, json.loads(data), digest, view, list(scan.summaries))


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """Four simulated processes on four GPUs, 40 requests each (about 1.6 s windows)."""
    root = tmp_path_factory.mktemp("four")
    simulate(root, processes=4, requests=40, seed=1)
    return _experiment(root, expected_processes=4, markers=(4, 4))


def _check(view: model.ExperimentView, label: str) -> checks.Check:
    (check,) = [c for c in view.checks if c.label == label]
    return check


class TestFiguresOf:
    """The key figures are the result's fields; the two derived ones are worked out here."""

    def test_values_are_the_files(self, four: Experiment) -> None:
        """Each figure equals the file's field (or the sum, or the quotient, of its fields)."""
        j = four.loaded
        procs = j["process_results"]
        requests = sum(
            p["inference_metrics"]["latency_measurements"]["request_count"] for p in procs
        )
        assert requests == sum(len(p["per_request_latencies_ms"]) for p in procs) == 160
        lat, e2e = j["latency_stats"], j["extended_metrics"]["request_latency"]
        gpus = j["aggregation"]["gpus"]
        expected = {
            "energy_per_output_token_j": j["avg_energy_per_token_j"],
            "energy_per_request_j": j["total_energy_j"] / requests,
            "total_energy_j": j["total_energy_j"],
            "energy_adjusted_j": j["energy_adjusted_j"],
            "avg_power_w": pytest.approx(sum(g["avg_power_w"] for g in gpus), rel=1e-12),
            "tokens_per_second": j["avg_tokens_per_second"],
            "output_tokens_per_second": j["aggregation"]["output_tokens_per_second"],
            "requests": requests,
            "output_tokens": sum(p["inference_metrics"]["output_tokens"] for p in procs),
            "inference_time_sec": j["total_inference_time_sec"],
            "ttft_p50_ms": lat["ttft_median_ms"],
            "ttft_p95_ms": lat["ttft_p95_ms"],
            "ttft_p99_ms": lat["ttft_p99_ms"],
            "itl_p50_ms": lat["itl_median_ms"],
            "itl_p95_ms": lat["itl_p95_ms"],
            "itl_p99_ms": lat["itl_p99_ms"],
            "e2e_latency_p50_ms": e2e["e2e_latency_median_ms"],
            "e2e_latency_p95_ms": e2e["e2e_latency_p95_ms"],
            "e2e_latency_p99_ms": e2e["e2e_latency_p99_ms"],
            "processes": 4,
            "gpus": 4,
        }
        assert numbers.figures_of(four.digest) == expected

    def test_average_power_is_energy_over_covered_seconds(self, four: Experiment) -> None:
        """Summed over the GPUs, each GPU's energy over the seconds its intervals cover."""
        gpus = four.loaded["aggregation"]["gpus"]
        power = sum(g["energy_j"] / sum(b - a for a, b in g["intervals"]) for g in gpus)
        assert numbers.figures_of(four.digest)["avg_power_w"] == pytest.approx(power, rel=1e-9)

    def test_page_figures_are_the_figures(self, four: Experiment) -> None:
        """The page shows every figure of ``FIGURES``, in its order, with ``figures_of``'s value."""
        figures = numbers.figures_of(four.digest)
        assert [f.key for f in four.view.figures] == [k for k, _, _ in numbers.FIGURES]
        assert all(f.value == figures[f.key] for f in four.view.figures)


def _process(
    request_count: int | None = None, latencies: list[float] | None = None, lm: bool = True
) -> ProcessDigest:
    measurements = LatencyMeasurements(request_count=request_count) if lm else None
    return ProcessDigest(
        process_index=0,
        gpu_id=0,
        inference_metrics=InferenceDigest(latency_measurements=measurements),
        energy_metrics=EnergyDigest(),
        per_request_latencies_ms=latencies or [],
    )


def _digest(*processes: ProcessDigest, e2e_samples: int = 0, **fields: Any) -> ResultDigest:
    extended = ExtendedDigest(request_latency=RequestLatencyDigest(e2e_latency_samples=e2e_samples))
    return ResultDigest(
        experiment_id="x",
        total_energy_j=840.0,
        process_results=list(processes),
        extended_metrics=extended,
        **fields,
    )


class TestRequestsOf:
    """Requests: the e2e samples, else the processes' request counts, else their latencies."""

    @pytest.mark.parametrize(
        ("digest", "requests", "per_request_j"),
        [
            (_digest(_process(3), _process(4), e2e_samples=12), 12, 70.0),
            (_digest(_process(3), _process(4)), 7, 120.0),
            (_digest(_process(lm=False, latencies=[1.0, 2.0, 3.0]),
                     _process(lm=False, latencies=[4.0])), 4, 210.0),
            (_digest(_process(5), _process(lm=False, latencies=[1.0, 2.0, 3.0])), 8, 105.0),
            (_digest(_process(lm=False), _process(lm=False)), None, None),
            (_digest(_process(0), _process(lm=False)), 0, None),
            (_digest(), None, None),
        ],
    )  # fmt: skip
    def test_count(
        self, digest: ResultDigest, requests: int | None, per_request_j: float | None
    ) -> None:
        """840 J over the requests counted; no requests, no figure (never a division by 0)."""
        assert numbers.requests_of(digest) == requests
        figures = numbers.figures_of(digest)
        assert figures["requests"] == requests
        assert figures["energy_per_request_j"] == per_request_j


config_keys = st.text(alphabet="abxyz_", min_size=1, max_size=3)
leaves = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),  # NaN and infinities included
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.integers(0, 9), max_size=3),
)
configs = st.dictionaries(
    config_keys,
    st.recursive(
        leaves, lambda inner: st.dictionaries(config_keys, inner, max_size=4), max_leaves=25
    ),
    max_size=5,
)


def _flatten(value: Any, path: str) -> list[tuple[str, float]]:
    """(dotted path, number) of every int or float leaf that is finite; bools are no numbers."""
    if isinstance(value, dict):
        return [
            pair for k, v in value.items() for pair in _flatten(v, f"{path}.{k}" if path else k)
        ]
    if type(value) in (int, float) and math.isfinite(value):
        return [(path, float(value))]
    return []


class TestNumericParams:
    """Numeric ``effective_config`` values by dotted path."""

    @LAWS
    @given(config=configs)
    def test_flattening(self, config: dict[str, Any]) -> None:
        """Every finite number by its path, sorted by path; nothing else."""
        params = model.numeric_params(config)
        assert params == dict(_flatten(config, ""))
        assert list(params) == sorted(params)

    @LAWS
    @given(config=configs)
    def test_prefix(self, config: dict[str, Any]) -> None:
        """A prefix goes in front of every path."""
        assert model.numeric_params(config, "cfg") == dict(_flatten(config, "cfg"))

    def test_hand_worked(self) -> None:
        """Booleans, strings, lists, None and non-finite numbers are left out."""
        config = {"a": True, "b": 1, "c": {"d": 2.5, "e": {"f": -3}}, "g": "8", "h": [1, 2],
                  "i": None, "j": math.nan, "k": -math.inf, "l": {}}  # fmt: skip
        assert model.numeric_params(config) == {"b": 1.0, "c.d": 2.5, "c.e.f": -3.0}

    def test_an_integer_too_large_for_a_float_is_left_out(self) -> None:
        """A foreign result with ``n`` = 10**400 gives a row without that parameter."""
        data = b'{"experiment_id": "x", "effective_config": {"n": 1' + b"0" * 400 + b', "m": 2}}'
        row = model.comparison_row(decode_digest(data))
        assert row.params == {"m": 2.0}


def _row(
    experiment_id: str, params: dict[str, float], **figures: float | None
) -> model.ComparisonRow:
    return model.ComparisonRow(
        experiment_id=experiment_id,
        model_name="m",
        config_name="c",
        gpu_name="g",
        backend="pytorch",
        partial=False,
        warnings=(),
        figures=figures,
        params=params,
    )


small = st.sampled_from([1.0, 2.0, 3.0])
maybe_figure = st.none() | st.sampled_from([0.5, 1.0, 2.0, 4.0, math.nan])


def _dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``b`` dominates ``a``: no worse on both axes, better on one."""
    return b[0] <= a[0] and b[1] <= a[1] and (b[0] < a[0] or b[1] < a[1])


def _front(points: list[tuple[float | None, float | None]]) -> set[int]:
    """Indices of the points with two finite coordinates that no other such point dominates."""
    ok = {
        i: (x, y)
        for i, (x, y) in enumerate(points)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    }
    return {i for i, a in ok.items() if not any(_dominated(a, b) for j, b in ok.items() if j != i)}


class TestComparisonView:
    """The comparison page: rows by id, parameters worth plotting, the frontiers."""

    @LAWS
    @given(params=st.lists(st.dictionaries(st.sampled_from(["a", "b", "c.d"]), small), max_size=6))
    def test_params_vary_over_two_rows(self, params: list[dict[str, float]]) -> None:
        """A parameter is offered when it takes two distinct values in at least two rows."""
        rows = [_row(f"e{i}", p) for i, p in enumerate(params)]
        names = {n for p in params for n in p}
        expected = sorted(
            n for n in names
            if len({p[n] for p in params if n in p}) >= 2 and sum(n in p for p in params) >= 2
        )  # fmt: skip
        assert list(model.comparison_view(rows).params) == expected

    @LAWS
    @given(
        cases=st.lists(
            st.tuples(st.text(min_size=1, max_size=4), maybe_figure, maybe_figure, maybe_figure),
            unique_by=lambda c: c[0],
            max_size=8,
        )
    )
    def test_frontiers_index_the_sorted_rows(self, cases: list[tuple[Any, ...]]) -> None:
        """Rows come sorted by id; each frontier holds indices of that order."""
        rows = [
            _row(i, {}, e2e_latency_p50_ms=p50, e2e_latency_p95_ms=p95, energy_per_output_token_j=e)
            for i, p50, p95, e in cases
        ]
        view = model.comparison_view(reversed(rows))
        ordered = sorted(cases, key=lambda c: c[0])
        assert [r.experiment_id for r in view.rows] == [c[0] for c in ordered]
        assert set(view.frontier_p50) == _front([(c[1], c[3]) for c in ordered])
        assert set(view.frontier_p95) == _front([(c[2], c[3]) for c in ordered])

    def test_batch_size_sweep(self, tmp_path: Path) -> None:
        """A sweep varies the batch size, not ``n``: only the batch size is offered."""
        simulate(tmp_path, experiments=3, processes=1, requests=10, seed=4, sweep=True)
        replay_root(tmp_path)
        files = sorted((tmp_path / "aggregated").glob("*.json"))
        view = model.comparison_view(
            [model.comparison_row(decode_digest(f.read_bytes())) for f in files]
        )
        configs = [json.loads(f.read_bytes())["effective_config"] for f in files]
        assert len({c["batch_size"] for c in configs}) == 3
        assert len({c["n"] for c in configs}) == 1
        assert view.params == ("batch_size",)

    def test_simulated_sweep(self, tmp_path: Path) -> None:
        """Three simulated experiments with 10, 20, 30 requests: ``n`` is the one parameter."""
        for prefix, requests in (("c", 10), ("a", 30), ("b", 20)):
            simulate(tmp_path, processes=2, requests=requests, seed=4, prefix=prefix)
        replay_root(tmp_path)
        files = sorted((tmp_path / "aggregated").glob("*.json"))
        digests = [decode_digest(f.read_bytes()) for f in files]
        view = model.comparison_view([model.comparison_row(d) for d in reversed(digests)])
        assert [r.experiment_id for r in view.rows] == ["a-0000", "b-0000", "c-0000"]
        assert view.params == ("n",)
        assert [r.params for r in view.rows] == [{"n": 60.0}, {"n": 40.0}, {"n": 20.0}]
        for row, f in zip(view.rows, files, strict=True):
            loaded = json.loads(f.read_bytes())
            assert row.figures["total_energy_j"] == loaded["total_energy_j"]
            assert (row.model_name, row.gpu_name) == ("sim-gpt", "Simulated GPU 80GB")
        points = [
            (r.figures["e2e_latency_p50_ms"], r.figures["energy_per_output_token_j"])
            for r in view.rows
        ]
        assert set(view.frontier_p50) == _front(points)


class TestExperimentView:
    """The experiment page: one power series per GPU, the banner, the tables."""

    def test_one_series_per_gpu_with_the_logs_samples(self, four: Experiment) -> None:
        """Each GPU's series is its log's power samples (few enough to keep whole), from t0."""
        baselines = [e["t"] - e["duration_sec"] for i in range(4) for e in four.log(i)
                     if e["type"] == "baseline"]  # fmt: skip
        t0 = min(baselines)
        assert four.view.t0 == t0
        assert [s.process_indices for s in four.view.series] == [(0,), (1,), (2,), (3,)]
        for series in four.view.series:
            (index,) = series.process_indices
            events = four.log(index)
            samples = [e for e in events if e["type"] == "sample"]
            assert series.gpu_key == f"gpu:{events[0]['gpu_uuid']}"
            assert series.samples == len(samples)
            assert series.t_sec.tolist() == [e["t"] - t0 for e in samples]
            assert series.power_w.tolist() == [e["power_w"] for e in samples]
            (ws,) = [e["t"] for e in events if e["type"] == "window_started"]
            (we,) = [e["t"] for e in events if e["type"] == "window_ended"]
            assert model.Span("measured window", ws - t0, we - t0) in series.phases
            assert [p.name for p in series.phases] == ["baseline", "measured window"]

    def test_throttle_spans_add_up_to_the_process_figure(self, four: Experiment) -> None:
        """The spans drawn for a GPU add up to its process's ``throttle_duration_sec``."""
        by_index = {p["process_index"]: p for p in four.loaded["process_results"]}
        spans = 0
        for series in four.view.series:
            (index,) = series.process_indices
            drawn = sum(s.end_sec - s.start_sec for s in series.throttled)
            expected = by_index[index]["thermal_throttle"]["throttle_duration_sec"]
            assert drawn == pytest.approx(expected, abs=1e-6)
            spans += len(series.throttled)
        assert spans > 0  # seed 1 throttles somewhere, or this test shows nothing

    def test_two_processes_on_one_gpu_are_drawn_once(self, tmp_path: Path) -> None:
        """Two ranks sharing a GPU UUID: one series (rank 0's samples), one GPU row."""
        rng = random.Random(7)
        for index in range(2):
            simulate_process(tmp_path, "shared-0000", "run-s", index, 2, requests=20,
                             t_start=SIM_T0, rng=rng, gpu_uuid="GPU-shared")  # fmt: skip
        exp = _experiment(tmp_path, "shared-0000", expected_processes=2, markers=(2, 2))
        (series,) = exp.view.series
        assert series.gpu_key == "gpu:GPU-shared"
        assert series.process_indices == (0, 1)
        samples = [e for e in exp.log(0) if e["type"] == "sample"]
        assert series.power_w.tolist() == [e["power_w"] for e in samples]
        (gpu,) = exp.view.gpus
        assert gpu.process_indices == (0, 1)
        assert len(exp.loaded["aggregation"]["gpus"]) == 1

    def test_a_sweeps_warm_up_is_shaded_and_drawn(self, tmp_path: Path) -> None:
        """With a warm-up: baseline, warm-up and window spans; warm-up samples drawn too."""
        simulate(tmp_path, experiments=1, processes=1, requests=30, seed=3, sweep=True)
        exp = _experiment(tmp_path)
        events = exp.log(0)
        (b,) = [e for e in events if e["type"] == "baseline"]
        (w,) = [e["t"] for e in events if e["type"] == "warmup"]
        (ws,) = [e["t"] for e in events if e["type"] == "window_started"]
        (we,) = [e["t"] for e in events if e["type"] == "window_ended"]
        samples = [e for e in events if e["type"] == "sample"]
        assert any(e["t"] < ws for e in samples)  # the sweep's warm-up has samples
        (series,) = exp.view.series
        t0 = exp.view.t0
        assert t0 == b["t"] - b["duration_sec"]
        assert series.phases == (
            model.Span("baseline", 0.0, b["t"] - t0),
            model.Span("warm-up", b["t"] - t0, w - t0),
            model.Span("measured window", ws - t0, we - t0),
        )
        assert series.t_sec.tolist() == [e["t"] - t0 for e in samples]

    def test_checks(self, four: Experiment) -> None:
        """The banner's lines, in order, with statuses that follow from the file."""
        j = four.loaded
        assert [c.label for c in four.view.checks] == [
            "Processes", "Completion markers", "Energy method", "Measured window",
            "Clock skew", "Throttling", "Warnings",
        ]  # fmt: skip
        assert _check(four.view, "Processes").status == "ok"
        assert _check(four.view, "Completion markers").status == "ok"
        assert {g["energy_source"] for g in j["aggregation"]["gpus"]} == {"counter"}
        assert _check(four.view, "Energy method").status == "ok"
        assert min(p["energy_metrics"]["duration_sec"] for p in j["process_results"]) >= 1.0
        assert _check(four.view, "Measured window").status == "ok"
        assert _check(four.view, "Clock skew").status == "info"  # one host
        throttled = j["thermal_throttle"]["detected"]
        assert _check(four.view, "Throttling").status == ("warn" if throttled else "ok")
        assert _check(four.view, "Warnings").status == (
            "warn" if j["measurement_warnings"] else "ok"
        )

    @pytest.mark.parametrize(
        ("expected", "markers", "processes", "marker_status"),
        [(4, (4, 4), "ok", "ok"), (5, (4, 4), "fail", "fail"), (4, (3, 4), "ok", "fail")],
    )
    def test_processes_and_markers(
        self, four: Experiment, expected: int, markers: tuple[int, int], processes: str,
        marker_status: str,
    ) -> None:  # fmt: skip
        """Fewer processes than expected, or a missing marker, fails the line."""
        view = model.experiment_view(
            four.digest, (), four.summaries, expected_processes=expected, markers=markers
        )
        assert _check(view, "Processes").status == processes
        assert _check(view, "Completion markers").status == marker_status

    def test_a_short_window_warns(self, tmp_path: Path) -> None:
        """Three requests per process (a window of some 0.1 s) is under a second."""
        simulate(tmp_path, processes=2, requests=3, seed=2)
        exp = _experiment(tmp_path)
        assert min(p["energy_metrics"]["duration_sec"] for p in exp.loaded["process_results"]) < 1
        assert _check(exp.view, "Measured window").status == "warn"

    def test_rows_and_distributions_are_the_files(self, four: Experiment) -> None:
        """Process rows by index, with the file's figures; the raw samples concatenated."""
        procs = sorted(four.loaded["process_results"], key=lambda p: p["process_index"])
        for row, p in zip(four.view.processes, procs, strict=True):
            assert row.process_index == p["process_index"]
            assert row.requests == p["inference_metrics"]["latency_measurements"]["request_count"]
            assert row.energy_j == p["energy_metrics"]["total_energy_j"]
            assert row.duration_sec == p["energy_metrics"]["duration_sec"]
        raw = four.loaded["process_results"]
        dist = four.view.distributions
        assert dist["e2e_latency_ms"].tolist() == [
            x for p in raw for x in p["per_request_latencies_ms"]
        ]
        lms = [p["inference_metrics"]["latency_measurements"] for p in raw]
        assert dist["ttft_ms"].tolist() == [x for m in lms for x in m["ttft_ms"]]
        assert dist["itl_ms"].tolist() == [x for m in lms for x in m["itl_full_ms"]]

    @pytest.mark.parametrize(
        ("span_sec", "status"), [(35.0, "ok"), (30.0, "ok"), (25.0, "warn"), (20.0, "warn"),
                                 (10.0, "fail")]
    )  # fmt: skip
    def test_steady_state_thresholds(self, span_sec: float, status: str) -> None:
        """ML.ENERGY's bounds: 30 s and more is fine, under 20 s unstable, between a warning."""
        gpus = [
            GpuDigest(key="gpu:a", energy_source="counter", span_sec=span_sec),
            GpuDigest(key="gpu:b", energy_source="counter", span_sec=span_sec + 100.0),
        ]
        digest = _digest(
            measurement_methodology="steady_state", aggregation=AggregationDigest(gpus=gpus)
        )
        assert _check(model.experiment_view(digest), "Steady state").status == status


class TestBannerCases:
    """Banner lines of hand-built digests."""

    @pytest.mark.parametrize(
        ("sources", "status"),
        [(["counter", "counter"], "ok"), (["counter", "power_integral"], "warn"), ([], "warn")],
    )
    def test_energy_method(self, sources: list[str], status: str) -> None:
        """Only counter readings on every GPU is fine; integrated power, or no GPU, warns."""
        gpus = [GpuDigest(key=f"gpu:{i}", energy_source=src) for i, src in enumerate(sources)]
        digest = _digest(aggregation=AggregationDigest(gpus=gpus))
        check = _check(model.experiment_view(digest), "Energy method")
        assert check.status == status
        assert all(src in check.detail for src in sources)

    @pytest.mark.parametrize(
        ("throttle", "status", "detail"),
        [
            (None, "ok", "none reported"),
            (ThrottleDigest(), "ok", "none reported"),
            (ThrottleDigest(detected=True, power=True, throttle_duration_sec=2.5), "warn",
             "power for 2.5 s"),
            (ThrottleDigest(detected=True, power=True, thermal=True, throttle_duration_sec=1.0),
             "warn", "power and thermal for 1.0 s"),
        ],
    )  # fmt: skip
    def test_throttling(self, throttle: ThrottleDigest | None, status: str, detail: str) -> None:
        """The merged ``thermal_throttle`` block, in words."""
        check = _check(model.experiment_view(_digest(thermal_throttle=throttle)), "Throttling")
        assert (check.status, check.detail) == (status, detail)


def _clock_log(index: int, host: str, offset_sec: float) -> bytes:
    bodies: list[tuple[float, dict[str, Any]]] = [
        (0.0, {"type": "process_started", "experiment_id": "exp", "run_id": "run",
               "process_index": index, "world_size": 2, "gpu_id": 0,
               "gpu_uuid": f"GPU-{index}", "hostname": host}),
        (0.5, {"type": "clock", "monotonic_sec": 100.0, "fs_offset_sec": offset_sec,
               "fs_offset_error_sec": 0.01}),
        (1.0, {"type": "window_started", "energy_mj": 0}),
        (2.0, {"type": "request", "latency_ms": 10.0, "input_tokens": 1, "output_tokens": 2}),
        (31.0, {"type": "window_ended", "energy_mj": 9_000_000}),
    ]  # fmt: skip
    return b"".join(
        orjson.dumps({"v": 1, "seq": seq, "t": T0 + t, **body}) + b"\n"
        for seq, (t, body) in enumerate(bodies)
    )


class TestClockSkew:
    """The banner's clock-skew line, from the processes' clock readings."""

    @pytest.mark.parametrize(
        ("hosts", "status"),
        [
            ((("a", 0.5), ("b", -0.5)), "warn"),  # 1 s apart, +/- 0.02 s: over 0.4 s
            ((("a", 0.05), ("b", -0.05)), "ok"),
            ((("a", 0.5), ("a", -0.5)), "info"),  # one host: nothing to compare
        ],
    )
    def test_status(self, hosts: tuple[tuple[str, float], ...], status: str) -> None:
        """Two hosts a second apart warn; a tenth of a second is fine; one host is not compared."""
        summaries = [
            summarize_process(replay_bytes(_clock_log(i, host, offset)).state)
            for i, (host, offset) in enumerate(hosts)
        ]
        digest = decode_digest(result_to_json_bytes(aggregate_results(summaries, "exp")))
        view = model.experiment_view(digest, (), summaries, expected_processes=2)
        assert _check(view, "Clock skew").status == status
        assert _check(view, "Processes").status == "ok"

    def test_partial_result(self, tmp_path: Path) -> None:
        """A recovered result: marked partial, the processes line fails, the reason shown."""
        simulate(tmp_path, processes=2, requests=10, seed=3, crash=1)
        recovery = recover_experiment(tmp_path / "raw" / "sim-0000")
        loaded = json.loads(recovery.path.read_bytes())
        view = model.experiment_view(decode_digest(recovery.path.read_bytes()))
        assert view.partial
        assert view.partial_reason == loaded["aggregation"]["completeness"]["error_message"]
        assert view.partial_reason
        assert _check(view, "Processes").status == "fail"
        assert np.isfinite(view.t0)

    def test_a_complete_result_has_no_reason(self, four: Experiment) -> None:
        """Nothing to explain when the result is complete."""
        assert not four.view.partial
        assert four.view.partial_reason is None
        assert four.view.run_id == four.loaded["aggregation"]["run_id"]
