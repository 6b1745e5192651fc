"""Overhead of the recorder: ``request()`` latency and the sampler's CPU use.

Runs with the fake NVML by default (``--nvml nvml`` on a GPU machine), so the request figures are
the recorder's own cost (dict, checks, lock, orjson, buffered write) and the sampler figure is its
Python overhead, not the cost of NVML calls (which release the GIL; see docs/recorder.md).

    python scripts/bench_recorder.py [--requests 200000] [--sampler-sec 10] [--nvml fake]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from energy_ledger.recorder.launch import LaunchInfo
from energy_ledger.recorder.recorder import ProcessRecorder


def percentile(sorted_values: list[float], pct: float) -> float:
    """The ``pct`` percentile of already sorted values (nearest rank)."""
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def bench_requests(root: str, nvml: str, n: int, itl_len: int) -> dict[str, float]:
    """Time ``n`` calls of ``request()`` one by one, with the sampler running at 10 Hz."""
    rec = ProcessRecorder(
        root,
        f"bench-req-{itl_len}",
        launch=LaunchInfo(0, 1, 0, "bench", "0"),
        nvml=nvml,
        snapshot_packages=False,
    )
    itl = [12.5] * itl_len if itl_len else None
    clock = time.perf_counter_ns
    timer_ns = statistics.median(-(clock() - clock()) for _ in range(10_000))
    samples_ns: list[float] = []
    with rec, rec.window():
        t0 = time.perf_counter()
        for _ in range(n):
            a = clock()
            rec.request(latency_ms=35.2, input_tokens=512, output_tokens=128, ttft_ms=8.1,
                        itl_ms=itl)  # fmt: skip
            samples_ns.append(clock() - a - timer_ns)
        wall_sec = time.perf_counter() - t0
    samples_ns.sort()
    return {
        "p50_us": percentile(samples_ns, 50) / 1000,
        "p99_us": percentile(samples_ns, 99) / 1000,
        "mean_us_incl_loop": wall_sec / n * 1e6,
    }


def bench_sampler(root: str, nvml: str, seconds: float, sample_hz: float) -> dict[str, float]:
    """CPU time of the sampler thread over ``seconds`` of an idle window."""
    rec = ProcessRecorder(
        root,
        "bench-sampler",
        launch=LaunchInfo(0, 1, 0, "bench", "0"),
        nvml=nvml,
        sample_hz=sample_hz,
        snapshot_packages=False,
    )
    with rec, rec.window():
        time.sleep(seconds)
    return {
        "samples": rec.samples,
        "cpu_ms": rec.sampler_cpu_sec * 1000,
        "core_pct": rec.sampler_cpu_sec / seconds * 100,
    }


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--sampler-sec", type=float, default=10.0)
    parser.add_argument("--sample-hz", type=float, default=10.0)
    parser.add_argument("--nvml", default="fake", choices=["fake", "nvml"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        for itl_len in (0, 64):
            r = bench_requests(root, args.nvml, args.requests, itl_len)
            print(
                f"request() itl_ms={itl_len:>3} values: p50 {r['p50_us']:.2f} us, "
                f"p99 {r['p99_us']:.2f} us, mean incl. loop {r['mean_us_incl_loop']:.2f} us"
            )
        s = bench_sampler(root, args.nvml, args.sampler_sec, args.sample_hz)
        print(
            f"sampler at {args.sample_hz:g} Hz for {args.sampler_sec:g} s: {s['samples']:.0f} "
            f"samples, {s['cpu_ms']:.1f} ms CPU = {s['core_pct']:.3f} % of a core"
        )


if __name__ == "__main__":
    main()
