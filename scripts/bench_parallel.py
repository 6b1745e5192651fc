"""Section 8 of the benchmark: replay on every core (issue 12's parallel targets).

- One experiment of 4 processes, about 1M events in all: ``replay --jobs N`` (N = the cores
  here) against ``polars.read_ndjson`` reading the same 4 logs, and against ``--jobs 1``.
- An archive of 1,000 small experiments: ``--jobs 1`` against ``--jobs N``.
- From the two timings of each, the serial fraction ``s`` of Amdahl's law,
  ``T_N = T_1 (s + (1 - s) / N)``, and what it predicts for 64 cores (docs/performance.md says
  what bounds it besides ``s``: one experiment's logs, the disk).

Contenders are interleaved (the order alternates each round) and medians taken. Every replay is
forced (``force=True``), so each round replays everything; the outputs are written once (the
later rounds find the same bytes and write nothing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench_replay import polars_read
from bench_report import Report, Sizes, optional_module, verdict

POLARS_TARGET = 1.5
"""Issue 12: a 4-process experiment replayed on all cores at least 1.5x polars' reading."""
EVENTS_PER_REQUEST = 1.45
"""Events a simulated request brings without inter-token lists (its line and the samples
between requests), measured: 4 x 200,000 requests make 1.16M events."""


def amdahl_serial_fraction(t1_sec: float, tn_sec: float, n: int) -> float:
    """``s`` in ``T_N = T_1 (s + (1 - s) / N)``, from two timings (clamped to 0..1)."""
    if n <= 1:
        return 1.0
    s = (tn_sec / t1_sec - 1.0 / n) / (1.0 - 1.0 / n)
    return min(1.0, max(0.0, s))


def amdahl_speedup(s: float, n: int) -> float:
    """The speed-up Amdahl's law predicts on ``n`` cores for serial fraction ``s``."""
    return 1.0 / (s + (1.0 - s) / n)


def _without_series(run: Callable[[], object]) -> object:
    """``run()`` as it goes without pyarrow: no Parquet series, so one experiment's logs go to
    the workers (``pipeline`` splits them only when no second read of the logs would follow)."""
    from energy_ledger import pipeline

    real = pipeline.parquet_available
    pipeline.parquet_available = lambda: False
    try:
        return run()
    finally:
        pipeline.parquet_available = real


def rounds(contenders: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each contender over ``reps`` rounds, the order rotated each round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_parallel(report: Report, sizes: Sizes, work: Path) -> None:
    """Section 8: one 4-process experiment against polars, and a 1,000-experiment archive."""
    from energy_ledger.pipeline import replay_root
    from energy_ledger.simulate import simulate
    from energy_ledger.store.parallel import available_cores

    cores = available_cores()
    sec = "8 parallel"
    one = work / "four"
    requests = max(100, round(sizes.replay_events / EVENTS_PER_REQUEST / 4))
    simulate(one, processes=4, requests=requests, itl=False, keep_samples=False)
    logs = sorted((one / "raw" / "sim-0000").glob("*.events.jsonl"))
    events = sum(sum(1 for _ in open(p, "rb")) for p in logs)  # noqa: SIM115 - closed by GC
    replay_root(one, jobs=1)  # writes the result once, warms the page cache
    contenders: dict[str, Callable[[], object]] = {
        f"jobs {cores}": lambda: replay_root(one, jobs=cores, force=True),
        "jobs 1": lambda: replay_root(one, jobs=1, force=True),
    }
    if optional_module("pyarrow") is not None:
        contenders[f"jobs {cores}, JSON and CSV only"] = lambda: _without_series(
            lambda: replay_root(one, jobs=cores, force=True)
        )
    if optional_module("polars") is not None:
        contenders["polars"] = lambda: [polars_read(p) for p in logs]
    median = rounds(contenders, max(2, sizes.replay_reps // 2))
    ours, serial = median[f"jobs {cores}"], median["jobs 1"]
    report.add(sec, f"4-process experiment, {events:,} events, --jobs {cores}",
               f"{events / ours / 1e6:.2f} M events/s ({ours:.2f} s)",
               figures={"events": events, "median_sec": median})  # fmt: skip
    if "polars" in median:
        ratio = median["polars"] / ours
        report.add(sec, f"vs polars.read_ndjson of the 4 logs ({median['polars']:.2f} s)",
                   f"{ratio:.2f}x its speed", f">= {POLARS_TARGET}x",
                   verdict(ratio >= POLARS_TARGET), figures={"ratio": ratio})  # fmt: skip
    bare = median.get(f"jobs {cores}, JSON and CSV only")
    if bare is not None and "polars" in median:
        report.add(sec, f"same, without the Parquet series: its logs split over the workers "
                   f"({bare:.2f} s)", f"{median['polars'] / bare:.2f}x polars' speed",
                   figures={"median_sec": bare})  # fmt: skip
    s = amdahl_serial_fraction(serial, ours, cores)
    report.add(sec, f"same experiment, --jobs 1 / --jobs {cores}",
               f"{serial / ours:.2f}x ({serial:.2f} s vs {ours:.2f} s); serial fraction "
               f"{s:.2f}, so at most {amdahl_speedup(s, min(64, len(logs))):.2f}x with "
               f"{len(logs)} logs on any number of cores",
               figures={"serial_fraction": s})  # fmt: skip

    many = work / "archive"
    simulate(many, experiments=sizes.report_experiments, processes=2, requests=20, itl=False,
             keep_samples=False)  # fmt: skip
    replay_root(many, jobs=1)
    median = rounds(
        {
            "jobs 1": lambda: replay_root(many, jobs=1, force=True),
            f"jobs {cores}": lambda: replay_root(many, jobs=cores, force=True),
        },
        max(2, sizes.replay_reps // 2),
    )
    serial, ours = median["jobs 1"], median[f"jobs {cores}"]
    s = amdahl_serial_fraction(serial, ours, cores)
    report.add(sec, f"archive of {sizes.report_experiments:,} experiments x 2 processes, "
               f"--jobs 1 / --jobs {cores}",
               f"{serial / ours:.2f}x ({serial:.2f} s vs {ours:.2f} s)",
               figures={"median_sec": median})  # fmt: skip
    report.add(sec, "archive: Amdahl serial fraction, and 64 cores predicted",
               f"s = {s:.2f}: {amdahl_speedup(s, 64):.1f}x on 64 cores",
               figures={"serial_fraction": s, "speedup_64": amdahl_speedup(s, 64)})  # fmt: skip
