"""Synthetic inputs for the benchmark: long serving-run logs written with the ledger's own writer.

The logs come from ``EventLogWriter`` (and the event shapes ``ProcessRecorder`` writes), so the
replay, memory and incremental sections read exactly the field sets a real run leaves behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from energy_ledger.simulate import T0
from energy_ledger.store.writer import EventLogWriter


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """Skip fsync while generating inputs (their durability is not what is measured)."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


@dataclass
class BigLog:
    """A generated log: where it is, how many events and bytes, and the next ``seq``."""

    root: Path
    experiment_id: str
    path: Path
    events: int
    size: int
    next_seq: int
    last_t: float


def write_log(
    root: Path,
    experiment_id: str,
    *,
    events: int | None = None,
    min_bytes: int | None = None,
    seed: int = 0,
    finish: bool = True,
) -> BigLog:
    """Write one process's log of a long serving run: a request stream with 10 Hz samples.

    Requests carry latency, token counts and TTFT (what ``ProcessRecorder.request`` writes when
    the caller gives no inter-token list); about one event in four is a sampler reading. The run
    stops after ``events`` events or once the file holds ``min_bytes``. ``finish`` closes it
    with ``window_ended``/``compute``/``process_finished`` and a marker; otherwise it is left
    open (as a running process leaves it) so that more events can be appended.
    """
    rng = random.Random(seed)
    writer = EventLogWriter.open(root, experiment_id, 0, flush_every_events=8192)
    t = T0
    writer.append("process_started", t=t, experiment_id=experiment_id, run_id="bench-run",
                  process_index=0, world_size=1, gpu_id=0, gpu_uuid="GPU-bench-0",
                  gpu_name="Simulated GPU 80GB", hostname="bench", pid=4242, backend="pytorch",
                  model_name="sim-gpt", effective_config={"model": "sim-gpt"})  # fmt: skip
    writer.append("baseline", t=t + 0.01, power_w=61.5, duration_sec=5.0, method="fresh")
    t += 0.5
    energy_mj = 10_000_000
    writer.append("window_started", t=t, energy_mj=energy_mj)
    next_sample = t + 0.1
    limit_events = events if events is not None else 1 << 62
    limit_bytes = min_bytes if min_bytes is not None else 1 << 62
    append = writer.append_raw
    # Check the size only every so often: the writer buffers, so ``_bytes`` lags a little.
    while writer.next_seq < limit_events and writer._bytes < limit_bytes:
        for _ in range(4096):
            t += rng.expovariate(30.0)  # ~30 requests a second finish on this GPU
            while t >= next_sample:  # every sample due before this request, in time order
                energy_mj += round(300_000 * 0.1 + rng.uniform(-500.0, 500.0))
                append({"v": 1, "seq": 0, "t": round(next_sample, 6), "type": "sample",
                        "power_w": round(rng.uniform(290.0, 310.0), 3), "energy_mj": energy_mj,
                        "temperature_c": round(rng.uniform(55.0, 70.0), 1),
                        "sm_util_pct": round(rng.uniform(80.0, 100.0), 1),
                        "memory_used_mb": 20_480.0,
                        "throttle_reasons": 4 if rng.random() < 0.02 else 0})  # fmt: skip
                next_sample += 0.1
            latency_ms = rng.lognormvariate(math.log(400.0), 0.5)
            append({"v": 1, "seq": 0, "t": round(t, 6), "type": "request",
                    "latency_ms": round(latency_ms, 3), "input_tokens": rng.randrange(16, 2048),
                    "output_tokens": rng.randrange(8, 512),
                    "ttft_ms": round(latency_ms * rng.uniform(0.05, 0.2), 3)})  # fmt: skip
            if writer.next_seq >= limit_events:
                break
    if finish:
        writer.append("window_ended", t=t + 0.001, energy_mj=energy_mj)
        writer.append("compute", t=t + 0.01, flops_total=1.0e15)
        writer.close()
    else:
        writer.flush()
        writer.abandon()
    return BigLog(root, experiment_id, writer.path, writer.next_seq, writer.path.stat().st_size,
                  writer.next_seq, t)  # fmt: skip


def request_line(seq: int, t: float) -> bytes:
    """One more ``request`` event, as the writer would append it."""
    obj = {"v": 1, "seq": seq, "t": t, "type": "request", "latency_ms": 401.5,
           "input_tokens": 700, "output_tokens": 200, "ttft_ms": 41.0}  # fmt: skip
    return orjson.dumps(obj) + b"\n"
