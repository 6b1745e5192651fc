"""The GPU check's child processes: a recorder process under load, the load probe, the overhead.

    python scripts/gpu_check_worker.py record --root R --experiment E --seconds S --load K \
        --barrier DIR [--warmup-sec W]
    python scripts/gpu_check_worker.py probe --load auto
    python scripts/gpu_check_worker.py overhead --root R --nvml nvml --device UUID --requests N \
        --seconds S

``record`` is one rank of a case: rank, world size and run id come from the launcher variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``ENERGY_LEDGER_RUN_ID``) and the GPU from
``CUDA_VISIBLE_DEVICES``, which ``ProcessRecorder.from_env`` reads. It starts its load, runs it for
``--warmup-sec``, touches ``DIR/ready-<rank>`` and keeps the load running until the parent creates
``DIR/go`` (so that every rank's window opens at the same moment on a GPU already under load),
then records one window of ``--seconds`` with a ``request`` per load step.

``overhead`` times ``--requests`` calls of ``request()`` one by one, as
``scripts/bench_recorder.py`` does, but spread over ``--seconds`` (bursts of 100) so that the
sampler takes its readings of the real GPU meanwhile and contends for the lock as it would in a
measured program. ``probe`` and ``overhead`` print one line ``GPU_CHECK_RESULT <json>`` for the
parent.

Loads, tried in this order by ``--load auto``: torch with CUDA (bf16 matmuls), cupy (fp16
matmuls), else a CPU busy loop (the GPU then idles; the comparison still holds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULT_PREFIX = "GPU_CHECK_RESULT "
MATMUL_N = 8192
MATMULS_PER_STEP = 4
GO_TIMEOUT_SEC = 600.0


def ensure_energy_ledger() -> None:
    """Make ``import energy_ledger`` work from a plain checkout (``src`` beside ``scripts``)."""
    try:
        import energy_ledger  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "energy_ledger":
            raise
        src = str(Path(__file__).resolve().parents[1] / "src")
        sys.path.insert(0, src)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [src, os.environ.get("PYTHONPATH")])
        )


def torch_load() -> tuple[Callable[[], None], str]:
    """A step of bf16 matmuls on the visible GPU, and its description."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA GPU")
    a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)

    def step() -> None:
        for _ in range(MATMULS_PER_STEP):
            a @ b
        torch.cuda.synchronize()

    step()
    return step, (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}): {MATMULS_PER_STEP} bf16 "
        f"{MATMUL_N}x{MATMUL_N} matmuls per step"
    )


def cupy_load() -> tuple[Callable[[], None], str]:
    """A step of fp16 matmuls through cupy, and its description."""
    import cupy

    a = cupy.random.random((MATMUL_N, MATMUL_N), dtype=cupy.float32).astype(cupy.float16)
    b = cupy.random.random((MATMUL_N, MATMUL_N), dtype=cupy.float32).astype(cupy.float16)

    def step() -> None:
        for _ in range(MATMULS_PER_STEP):
            a @ b
        cupy.cuda.Device().synchronize()

    step()
    return step, (
        f"cupy {cupy.__version__}: {MATMULS_PER_STEP} fp16 {MATMUL_N}x{MATMUL_N} matmuls per step"
    )


def cpu_load() -> tuple[Callable[[], None], str]:
    """A few milliseconds of pure-Python arithmetic per step (the GPU idles)."""

    def step() -> None:
        x = 0
        for i in range(30_000):
            x += i * i

    return step, "CPU busy loop in each process (the GPU idles)"


LOADS: dict[str, Callable[[], tuple[Callable[[], None], str]]] = {
    "torch": torch_load,
    "cupy": cupy_load,
    "cpu": cpu_load,
}


def probe(load: str) -> dict[str, Any]:
    """The first load of ``torch, cupy, cpu`` (or just ``load``) that runs a step here."""
    order = ["torch", "cupy", "cpu"] if load == "auto" else [load]
    tried: dict[str, str] = {}
    for kind in order:
        try:
            _step, detail = LOADS[kind]()
        except Exception as exc:  # ImportError, no CUDA, a CUDA error: try the next
            tried[kind] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        return {"kind": kind, "detail": detail, "tried": tried}
    return {"kind": None, "detail": None, "tried": tried}


def record(args: argparse.Namespace) -> None:
    """One rank of a case (see the module docstring)."""
    from energy_ledger.recorder.recorder import ProcessRecorder

    step, detail = LOADS[args.load]()
    barrier = Path(args.barrier)
    config = {
        "check": "gpu_check",
        "case": args.experiment,
        "load": args.load,
        "window_sec": args.seconds,
    }
    with ProcessRecorder.from_env(args.root, args.experiment, config=config) as rec:
        rank = rec.launch.process_index
        warm_end = time.monotonic() + args.warmup_sec
        while time.monotonic() < warm_end:
            step()
        (barrier / f"ready-{rank}").touch()
        give_up = time.monotonic() + GO_TIMEOUT_SEC
        while not (barrier / "go").exists():
            step()
            if time.monotonic() > give_up:
                raise RuntimeError(f"no go from the parent within {GO_TIMEOUT_SEC:.0f} s")
        with rec.window():
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                step()
                rec.request(
                    latency_ms=(time.perf_counter() - t0) * 1000, input_tokens=1, output_tokens=1
                )
    print(f"rank {rank}: {detail}", flush=True)


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """``request()`` cost, timed call by call with the sampler running (see the module docs)."""
    from energy_ledger.recorder.launch import LaunchInfo
    from energy_ledger.recorder.recorder import ProcessRecorder

    rec = ProcessRecorder(
        args.root,
        "gpu-check-overhead",
        launch=LaunchInfo(0, 1, 0, "gpu-check-overhead", args.device),
        nvml=args.nvml,
        snapshot_packages=False,
    )
    clock = time.perf_counter_ns
    timer_ns = statistics.median(-(clock() - clock()) for _ in range(10_000))
    samples_ns: list[float] = []
    n, burst = args.requests, 100
    with rec, rec.window():
        t0 = time.perf_counter()
        for i in range(n):
            if i % burst == 0:
                time.sleep(max(0.0, t0 + args.seconds * i / n - time.perf_counter()))
            a = clock()
            rec.request(latency_ms=35.2, input_tokens=512, output_tokens=128, ttft_ms=8.1)
            samples_ns.append(clock() - a - timer_ns)
        window_sec = time.perf_counter() - t0
    samples_ns.sort()

    def pct_us(p: float) -> float:
        return samples_ns[min(len(samples_ns) - 1, round(p / 100 * (len(samples_ns) - 1)))] / 1e3

    return {
        "nvml": args.nvml,
        "requests": args.requests,
        "request_p50_us": pct_us(50),
        "request_p99_us": pct_us(99),
        "request_mean_us_incl_loop": window_sec / args.requests * 1e6,
        "window_sec": window_sec,
        "sampler_samples": rec.samples,
        "sampler_core_pct": rec.sampler_cpu_sec / window_sec * 100 if window_sec else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--root", required=True)
    rec.add_argument("--experiment", required=True)
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--load", choices=sorted(LOADS), required=True)
    rec.add_argument("--barrier", required=True)
    rec.add_argument("--warmup-sec", type=float, default=0.0)
    prb = sub.add_parser("probe")
    prb.add_argument("--load", choices=["auto", *sorted(LOADS)], default="auto")
    ovh = sub.add_parser("overhead")
    ovh.add_argument("--root", required=True)
    ovh.add_argument("--nvml", choices=["nvml", "fake"], required=True)
    ovh.add_argument("--device", required=True)
    ovh.add_argument("--requests", type=int, default=200_000)
    ovh.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    ensure_energy_ledger()
    if args.mode == "record":
        record(args)
    elif args.mode == "probe":
        print(RESULT_PREFIX + json.dumps(probe(args.load)), flush=True)
    else:
        print(RESULT_PREFIX + json.dumps(overhead(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
