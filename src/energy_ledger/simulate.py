"""Synthetic experiments written through ``EventLogWriter``: demo, tests and benchmarks need no GPU.

Every figure is drawn from a seeded random generator, so the same arguments give the same files.
The simulator also returns the ground truth it wrote (tokens, counter energy per GPU, the window
span, every latency), computed from the generated values and not by the aggregator, so that tests
can compare the aggregated result against it.

Energy model: each simulated GPU draws a constant power ``power_w`` plus per-sample noise; its
counter reads ``base_mj + round(power_w * (t - t0) * 1000)`` (integer millijoules, as NVML gives).

A sweep (``sweep=True``) gives each experiment a batch size from ``SWEEP_BATCH_SIZES`` (in its
``effective_config``) and a warm-up phase with samples before the window. A batch of ``b``
requests runs at once: each request takes longer (``40 ms * (1 + 0.25 log2 b)`` median) and the
GPU draws more power, but requests complete ``b`` times as often, so energy per token falls as
latency rises: the trade-off a report's Pareto chart shows.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from energy_ledger.store.writer import EventLogWriter

T0 = 1_767_225_600.0
"""2026-01-01T00:00:00Z: simulated runs start here (plus one hour per experiment)."""

SAMPLE_PERIOD_SEC = 0.1
SWEEP_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
"""The batch sizes a sweep cycles through, one per experiment."""
WARMUP_SEC = 1.5
"""How long a sweep's warm-up runs before the window (with samples, outside the window)."""

LOG_BYTES_PER_REQUEST = 870
"""Measured log bytes per simulated request with inter-token latencies (samples included)."""
LOG_BYTES_PER_REQUEST_NO_ITL = 260
"""The same without inter-token latency lists."""
PROGRESS_EVERY_REQUESTS = 10_000
"""``progress`` is called after this many requests of a process (and at each process's end)."""

Progress = Callable[[int], None]
"""Called with the number of requests written since its last call."""


LARGE_REQUESTS = 1_000_000
"""More requests per process than this is a run big enough to warn about (``size_warning``)."""


def estimated_log_bytes(*, experiments: int, processes: int, requests: int, itl: bool) -> int:
    """About how many bytes ``simulate`` writes for these arguments (to warn before big runs)."""
    per_request = LOG_BYTES_PER_REQUEST if itl else LOG_BYTES_PER_REQUEST_NO_ITL
    return experiments * processes * requests * per_request


def size_warning(*, experiments: int, processes: int, requests: int, itl: bool) -> str | None:
    """A warning naming the size a run will write, when ``requests`` exceeds ``LARGE_REQUESTS``."""
    if requests <= LARGE_REQUESTS:
        return None
    size = estimated_log_bytes(
        experiments=experiments, processes=processes, requests=requests, itl=itl
    )
    return (
        f"--requests {requests:,} per process writes about {size / 1e9:,.1f} GB "
        f"({experiments} experiment(s) x {processes} process(es)"
        f"{'' if itl else ', no inter-token latencies'})"
    )


@dataclass
class ProcessTruth:
    """What one simulated process wrote."""

    process_index: int
    gpu_uuid: str
    window_start_t: float
    window_end_t: float
    counter_start_mj: int
    counter_end_mj: int
    input_tokens: int = 0
    output_tokens: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    finished: bool = True
    events: int = 0


@dataclass
class ExperimentTruth:
    """Ground truth of one simulated experiment."""

    experiment_id: str
    run_id: str
    processes: list[ProcessTruth]

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens over all processes."""
        return sum(p.input_tokens + p.output_tokens for p in self.processes)

    @property
    def energy_j(self) -> float:
        """Counter energy, once per GPU (each simulated process has its own GPU)."""
        by_gpu: dict[str, list[ProcessTruth]] = {}
        for p in self.processes:
            by_gpu.setdefault(p.gpu_uuid, []).append(p)
        return math.fsum(
            (max(p.counter_end_mj for p in ps) - min(p.counter_start_mj for p in ps)) / 1000.0
            for ps in by_gpu.values()
        )

    @property
    def span_sec(self) -> float:
        """Latest window end minus earliest window start."""
        return max(p.window_end_t for p in self.processes) - min(
            p.window_start_t for p in self.processes
        )

    @property
    def latencies_ms(self) -> list[float]:
        """Every request latency, all processes concatenated."""
        return [x for p in self.processes for x in p.latencies_ms]


def simulated_environment(gpu_uuid: str) -> dict[str, object]:
    """An ``EnvironmentSnapshot`` of a simulated machine (fixed, so outputs are reproducible)."""
    return {
        "hardware": {
            "gpu": {
                "name": "Simulated GPU 80GB",
                "vram_total_mb": 81920.0,
                "compute_capability": "9.0",
                "pcie_gen": 5,
                "mig_enabled": False,
                "uuid": gpu_uuid,
            },
            "cuda": {"version": "12.8", "driver_version": "570.00.00"},
            "thermal": {"temperature_c": 35.0, "power_limit_w": 700.0,
                        "default_power_limit_w": 700.0},
            "cpu": {"governor": "performance", "model": "simulated", "platform": "Linux"},
            "container": {"detected": False},
            "collected_at": "2026-01-01T00:00:00+00:00",
        },
        "python_version": "3.11",
        "installed_packages": [],
        "tool_version": "simulated",
    }  # fmt: skip


def _counter(base_mj: int, power_w: float, t0: float, t: float) -> int:
    return base_mj + round(power_w * (t - t0) * 1000.0)


def simulate_process(
    root: Path,
    experiment_id: str,
    run_id: str,
    index: int,
    world_size: int,
    *,
    requests: int,
    t_start: float,
    rng: random.Random,
    itl: bool = True,
    crash: bool = False,
    torn: bool = False,
    fail: bool = False,
    gpu_uuid: str | None = None,
    hostname: str = "sim-node-0",
    flush_every_events: int = 4096,
    keep_samples: bool = True,
    progress: Progress | None = None,
    batch_size: int | None = None,
) -> ProcessTruth:
    """Write one process's log (and marker unless it crashes or fails); return its truth.

    ``keep_samples=False`` keeps only totals in the truth (no latency lists), so that a run of
    millions of requests does not also hold them all in memory.
    """
    uuid = gpu_uuid or f"GPU-sim-{experiment_id}-{index:04d}"
    power_w = 250.0 + 100.0 * rng.random()
    batch = batch_size or 1
    if batch_size is not None:
        power_w += 45.0 * math.log2(batch)
    base_mj = 10_000_000 + rng.randrange(1_000_000)
    # Every event gets an explicit simulated time except the writer's own closing event
    # (process_finished or process_failed), stamped by this clock: the simulated time of the
    # last event, never the real time, which simulated runs may lie before or after.
    sim_now = [t_start]
    writer = EventLogWriter.open(
        root,
        experiment_id,
        index,
        flush_every_events=flush_every_events,
        flush_every_sec=1e9,
        clock=lambda: sim_now[0],
    )
    t = t_start + 0.05 * index
    writer.append(
        "process_started",
        t=t,
        experiment_id=experiment_id,
        run_id=run_id,
        process_index=index,
        world_size=world_size,
        gpu_id=index % 8,
        gpu_uuid=uuid,
        gpu_name="Simulated GPU 80GB",
        hostname=hostname,
        pid=10_000 + index,
        backend="pytorch",
        config_name="simulated",
        model_name="sim-gpt",
        measurement_config_hash="sim0000000000000",
        effective_config=_config(requests * world_size, batch_size),
        environment=simulated_environment(uuid),
    )
    writer.append(
        "baseline",
        t=t + 0.01,
        power_w=60.0 + 10.0 * rng.random(),
        duration_sec=5.0,
        method="fresh",
        measured_at="2026-01-01T00:00:00+00:00",
    )
    ws = t + 0.5
    if batch_size is not None:
        ws = _warm_up(writer, rng, base_mj, power_w, t, t + 0.02, t + 0.02 + WARMUP_SEC)
    truth = ProcessTruth(index, uuid, ws, ws, _counter(base_mj, power_w, t, ws), 0)
    writer.append("window_started", t=ws, energy_mj=truth.counter_start_mj)
    now = ws
    next_sample = ws + SAMPLE_PERIOD_SEC
    survive = rng.randrange(max(1, requests // 2), max(2, requests)) if crash or fail else requests
    reported = 0
    for i in range(requests):
        if i == survive:
            break
        if progress is not None and i - reported >= PROGRESS_EVERY_REQUESTS:
            progress(i - reported)
            reported = i
        latency_ms = rng.lognormvariate(math.log(40.0 * (1 + 0.25 * math.log2(batch))), 0.5)
        end = now + latency_ms / 1000.0 / batch
        while next_sample <= end:
            writer.append(
                "sample",
                t=next_sample,
                power_w=power_w + rng.uniform(-5.0, 5.0),
                energy_mj=_counter(base_mj, power_w, t, next_sample),
                temperature_c=55.0 + 10.0 * rng.random(),
                sm_util_pct=80.0 + 20.0 * rng.random(),
                memory_used_mb=20_000.0,
                throttle_reasons=4 if rng.random() < 0.05 else 0,
            )
            next_sample += SAMPLE_PERIOD_SEC
        n_in = rng.randrange(16, 512)
        n_out = rng.randrange(8, 128)
        ttft = latency_ms * rng.uniform(0.05, 0.2)
        gaps = [round((latency_ms - ttft) / max(1, n_out - 1), 6)] * (n_out - 1) if itl else None
        writer.append(
            "request",
            t=end,
            latency_ms=latency_ms,
            input_tokens=n_in,
            output_tokens=n_out,
            ttft_ms=ttft,
            itl_ms=gaps,
        )
        truth.input_tokens += n_in
        truth.output_tokens += n_out
        if keep_samples:
            truth.latencies_ms.append(latency_ms)
            truth.ttft_ms.append(ttft)
            truth.itl_ms.extend(gaps or ())
        now = end
    if progress is not None:
        progress(requests - reported)
    if crash:
        writer.flush()
        writer.abandon()
        if torn:
            with open(writer.path, "ab") as fh:
                fh.write(b'{"v":1,"seq":999999,"t":1.0,"type":"req')
        truth.finished = False
        truth.window_end_t = now
        truth.events = writer.next_seq
        return truth
    if fail:
        sim_now[0] = now
        writer.fail("RuntimeError: simulated CUDA out of memory")
        truth.finished = False
        truth.window_end_t = now
        return truth
    we = now + 0.001
    truth.window_end_t = we
    truth.counter_end_mj = _counter(base_mj, power_w, t, we)
    writer.append("window_ended", t=we, energy_mj=truth.counter_end_mj)
    writer.append(
        "compute",
        t=we + 0.01,
        flops_total=2.0e9 * truth.output_tokens,
        peak_memory_mb=21_000.0,
        model_memory_mb=14_000.0,
        flops_method="simulated",
    )
    sim_now[0] = we + 0.01
    writer.close()
    truth.events = writer.next_seq
    return truth


def _config(n: int, batch_size: int | None) -> dict[str, object]:
    config: dict[str, object] = {"model": "sim-gpt", "n": n, "simulated": True}
    if batch_size is not None:
        config["batch_size"] = batch_size
    return config


def _warm_up(
    writer: EventLogWriter,
    rng: random.Random,
    base_mj: int,
    power_w: float,
    t0: float,
    start: float,
    end: float,
) -> float:
    """Warm-up samples from ``start`` to ``end`` and the ``warmup`` event; the window's start."""
    t = start
    while t < end:
        writer.append(
            "sample",
            t=t,
            power_w=power_w * (0.6 + 0.4 * (t - start) / (end - start)) + rng.uniform(-5.0, 5.0),
            energy_mj=_counter(base_mj, power_w, t0, t),
            temperature_c=45.0 + 10.0 * (t - start) / (end - start),
            sm_util_pct=60.0 + 20.0 * rng.random(),
            memory_used_mb=20_000.0,
            throttle_reasons=0,
        )
        t += SAMPLE_PERIOD_SEC
    writer.append(
        "warmup",
        t=end,
        converged=True,
        final_cv=0.04,
        iterations_completed=5,
        target_cv=0.05,
        max_prompts=5,
    )
    return end + 0.05


def simulate(
    root: str | os.PathLike[str],
    *,
    experiments: int = 1,
    processes: int = 4,
    requests: int = 100,
    seed: int = 0,
    crash: int = 0,
    fail: int = 0,
    torn: bool = False,
    itl: bool = True,
    prefix: str = "sim",
    keep_samples: bool = True,
    progress: Progress | None = None,
    sweep: bool = False,
) -> list[ExperimentTruth]:
    """Write ``experiments`` synthetic experiments of ``processes`` processes under ``root``.

    Args:
        crash: how many processes (the last ranks) of each experiment die without a marker.
        fail: how many processes (before those) raise and write ``process_failed``.
        torn: crashed processes leave a torn last line.
        itl: write inter-token latency lists (they make lines long).
        prefix: experiment ids are ``<prefix>-<n>``.
        keep_samples: keep every latency in the returned truth (``False``: totals only).
        progress: called as requests are written (the CLI draws a progress bar with it); a
            crashed process reports its planned requests, so the total always adds up.
        sweep: give experiment ``n`` the batch size ``SWEEP_BATCH_SIZES[n % 6]`` and a warm-up
            (see the module docstring).
    """
    rng = random.Random(seed)
    root_path = Path(root)
    truths = []
    for n in range(experiments):
        experiment_id = f"{prefix}-{n:04d}"
        run_id = f"run-{seed}-{n}"
        t_start = T0 + 3600.0 * n
        batch = SWEEP_BATCH_SIZES[n % len(SWEEP_BATCH_SIZES)] if sweep else None
        procs = []
        for index in range(processes):
            crashed = index >= processes - crash
            failed = not crashed and index >= processes - crash - fail
            procs.append(
                simulate_process(
                    root_path,
                    experiment_id,
                    run_id,
                    index,
                    processes,
                    requests=requests,
                    t_start=t_start,
                    rng=rng,
                    itl=itl,
                    crash=crashed,
                    torn=torn and crashed,
                    fail=failed,
                    keep_samples=keep_samples,
                    progress=progress,
                    batch_size=batch,
                )
            )
        truths.append(ExperimentTruth(experiment_id, run_id, procs))
    return truths


def truth_json(truths: list[ExperimentTruth]) -> bytes:
    """The totals of the ground truth as JSON (``simulate --truth``)."""
    return orjson.dumps(
        [
            {
                "experiment_id": t.experiment_id,
                "total_tokens": t.total_tokens,
                "energy_j": t.energy_j,
                "span_sec": t.span_sec,
            }
            for t in truths
        ],
        option=orjson.OPT_INDENT_2,
    )
