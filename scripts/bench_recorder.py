"""Overhead of the recorder: ``request()`` latency and the sampler's CPU use.

Runs with the fake NVML by default (``--nvml nvml`` on a GPU machine), so the request figures are
the recorder's own cost (dict, checks, lock, orjson, buffered write) and the sampler figure is its
Python overhead, not the cost of NVML calls (which release the GIL; see docs/recorder.md).

``request()`` is timed in each layout: the appended log on a local folder, the segmented layout
on a local folder, and on a bucket when one is reachable (``AWS_ENDPOINT_URL`` set and
``--bucket-url s3://bucket/prefix`` or ``$ENERGY_LEDGER_BENCH_BUCKET_URL`` naming an existing
bucket; otherwise that row is skipped, saying why). Segmented rows run with the background
uploader (the recorder's default) and, for comparison, with the puts made inside the cutting
``request()`` (``background=False``). A segment is cut every 8,192 events, so the puts show in
the tail (p99.9, max, calls over 1 ms), not in p50 or p99.

    python scripts/bench_recorder.py [--requests 200000] [--sampler-sec 10] [--nvml fake]
        [--bucket-url s3://bucket/prefix]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

from energy_ledger.exceptions import LedgerError
from energy_ledger.recorder.launch import LaunchInfo
from energy_ledger.recorder.recorder import ProcessRecorder
from energy_ledger.store.objects import open_objects

BUCKET_URL_ENV = "ENERGY_LEDGER_BENCH_BUCKET_URL"


def percentile(sorted_values: list[float], pct: float) -> float:
    """The ``pct`` percentile of already sorted values (nearest rank)."""
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def bench_requests(
    root: str,
    nvml: str,
    n: int,
    itl_len: int,
    *,
    layout: str | None = None,
    writer_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Time ``n`` calls of ``request()`` one by one, with the sampler running at 10 Hz.

    ``finish_ms`` is the time ``finish()`` took (in the segmented layout: waiting for the
    uploader, then the marker's put)."""
    rec = ProcessRecorder(
        root,
        f"bench-req-{itl_len}",
        launch=LaunchInfo(0, 1, 0, "bench", "0"),
        nvml=nvml,
        snapshot_packages=False,
        layout=layout,  # type: ignore[arg-type]  # a Layout, or None
        writer_options=writer_options,
    )
    itl = [12.5] * itl_len if itl_len else None
    clock = time.perf_counter_ns
    timer_ns = statistics.median(-(clock() - clock()) for _ in range(10_000))
    samples_ns: list[float] = []
    rec.start()  # not ``with rec``: finish() is timed on its own
    try:
        with rec.window():
            t0 = time.perf_counter()
            for _ in range(n):
                a = clock()
                rec.request(latency_ms=35.2, input_tokens=512, output_tokens=128, ttft_ms=8.1,
                            itl_ms=itl)  # fmt: skip
                samples_ns.append(clock() - a - timer_ns)
            wall_sec = time.perf_counter() - t0
    except BaseException as exc:
        rec.fail(f"{type(exc).__name__}: {exc}")
        raise
    f0 = time.perf_counter()
    marker = rec.finish()
    finish_ms = (time.perf_counter() - f0) * 1000
    if marker is None:
        raise LedgerError(f"the benchmark's log was lost: {rec.write_error}")
    samples_ns.sort()
    return {
        "p50_us": percentile(samples_ns, 50) / 1000,
        "p99_us": percentile(samples_ns, 99) / 1000,
        "p999_us": percentile(samples_ns, 99.9) / 1000,
        "max_us": samples_ns[-1] / 1000,
        "over_1ms": float(sum(1 for ns in samples_ns if ns > 1e6)),
        "mean_us_incl_loop": wall_sec / n * 1e6,
        "finish_ms": finish_ms,
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


def bucket_root(url: str | None) -> tuple[str | None, str]:
    """A fresh prefix of the bucket to time against, or ``None`` and why there is none."""
    if not os.environ.get("AWS_ENDPOINT_URL"):
        return None, "AWS_ENDPOINT_URL is not set"
    if not url:
        return None, f"no bucket named (--bucket-url or ${BUCKET_URL_ENV})"
    root = f"{url.rstrip('/')}/bench-{uuid.uuid4().hex[:12]}"
    try:
        open_objects(root).list("raw/")
    except LedgerError as exc:
        return None, f"cannot reach {url}: {exc}"
    return root, ""


LAYOUTS: list[tuple[str, str | None, dict[str, Any] | None]] = [
    ("appended log, local folder", None, None),
    ("segmented, local folder, uploader", "segmented", {"background": True}),
    ("segmented, local folder, puts in request()", "segmented", {"background": False}),
]
"""Rows of the request() table: name, layout, writer options (the bucket rows are added when
a bucket is reachable)."""


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--sampler-sec", type=float, default=10.0)
    parser.add_argument("--sample-hz", type=float, default=10.0)
    parser.add_argument("--nvml", default="fake", choices=["fake", "nvml"])
    parser.add_argument("--bucket-url", default=os.environ.get(BUCKET_URL_ENV))
    args = parser.parse_args()
    bucket, why_not = bucket_root(args.bucket_url)
    with tempfile.TemporaryDirectory() as root:
        rows = [(name, layout, options, "") for name, layout, options in LAYOUTS]
        rows += [
            ("segmented, bucket, uploader", "segmented", {"background": True}, "bucket"),
            ("segmented, bucket, puts in request()", "segmented", {"background": False}, "bucket"),
        ]
        for itl_len in (0, 64):
            for name, layout, options, where in rows:
                if where == "bucket" and bucket is None:
                    print(f"request() itl_ms={itl_len:>3} values, {name}: skipped ({why_not})")
                    continue
                target = f"{bucket}/{uuid.uuid4().hex[:8]}" if where else tempfile.mkdtemp(dir=root)
                r = bench_requests(target, args.nvml, args.requests, itl_len, layout=layout,
                                   writer_options=options)  # fmt: skip
                print(
                    f"request() itl_ms={itl_len:>3} values, {name}: p50 {r['p50_us']:.2f} us, "
                    f"p99 {r['p99_us']:.2f} us, p99.9 {r['p999_us']:.1f} us, "
                    f"max {r['max_us'] / 1000:.2f} ms, {r['over_1ms']:.0f} calls > 1 ms, "
                    f"mean incl. loop {r['mean_us_incl_loop']:.2f} us, "
                    f"finish {r['finish_ms']:.1f} ms"
                )
        s = bench_sampler(root, args.nvml, args.sampler_sec, args.sample_hz)
        print(
            f"sampler at {args.sample_hz:g} Hz for {args.sampler_sec:g} s: {s['samples']:.0f} "
            f"samples, {s['cpu_ms']:.1f} ms CPU = {s['core_pct']:.3f} % of a core"
        )


if __name__ == "__main__":
    main()
