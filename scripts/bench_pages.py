"""Section 7 of the benchmark: the HTML report (issue 11's speed targets).

- The experiment page of a 1M-event log: its size (the figures are downsampled, so it must not
  grow with the log) and its build time against the replay that writes the result, measured
  side by side (the page replays the same logs once more, for the power timeline).
- The comparison page over 1,000 emitted experiments: its build time (issue 11 asks for
  "seconds"), and beside it the floor any tool pays, reading every result file with
  ``orjson.loads``. The page's cost is mostly fixed (drawing three figures), so that ratio says
  how much a page costs over reading, not how it scales; it has no target.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import orjson

from bench_logs import no_fsync, write_log
from bench_report import Report, Sizes, verdict

PAGE_BYTES_TARGET = 2_000_000
"""A page for a typical experiment stays under about 2 MB (issue 11)."""
PAGE_RATIO_TARGET = 2.5
"""The experiment page may take this many times the replay that writes the result."""
COMPARISON_SEC_TARGET = 5.0
"""The comparison page over 1,000 experiments builds in seconds (issue 11): at most 5 here."""


def _median_time(fn: object, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_pages(report: Report, sizes: Sizes, work: Path) -> None:
    """Section 7: experiment page of a long log, comparison page of many experiments."""
    from energy_ledger.pipeline import process_experiment, replay_root
    from energy_ledger.report.build import write_comparison_report, write_experiment_report
    from energy_ledger.simulate import simulate
    from energy_ledger.store.layout import ResultsLayout

    root = work / "pages"
    with no_fsync():
        log = write_log(root, "long-run", events=sizes.replay_events)
    layout = ResultsLayout.at(root)
    directory = layout.experiment_dir("long-run")
    replay_sec: list[float] = []
    page_sec: list[float] = []
    for rep in range(max(1, sizes.replay_reps // 2)):
        contenders = [
            ("replay", lambda: process_experiment(layout, "long-run", force=True), replay_sec),
            ("page", lambda: write_experiment_report(directory), page_sec),
        ]
        for _name, fn, into in contenders[rep % 2 :] + contenders[: rep % 2]:
            started = time.perf_counter()
            fn()
            into.append(time.perf_counter() - started)
    page = root / "aggregated" / "long-run.report.html"
    size = page.stat().st_size
    ratio = statistics.median(page_sec) / statistics.median(replay_sec)
    report.add("7 report", f"experiment page of a {log.events:,}-event log: size",
               f"{size / 1e6:.2f} MB", f"<= {PAGE_BYTES_TARGET / 1e6:.0f} MB",
               verdict(size <= PAGE_BYTES_TARGET), figures={"bytes": size})  # fmt: skip
    report.add("7 report", "experiment page build / replay that writes the result (same log)",
               f"{ratio:.2f}x ({statistics.median(page_sec):.2f} s vs "
               f"{statistics.median(replay_sec):.2f} s)",
               f"<= {PAGE_RATIO_TARGET}x", verdict(ratio <= PAGE_RATIO_TARGET),
               figures={"page_sec": page_sec, "replay_sec": replay_sec})  # fmt: skip

    many = work / "many"
    with no_fsync():
        simulate(many, experiments=sizes.report_experiments, processes=1, requests=20,
                 itl=False, keep_samples=False, sweep=True)  # fmt: skip
        replay_root(many)
    files = sorted((many / "aggregated").glob("*.json"))

    def read_all() -> None:
        for f in files:
            orjson.loads(f.read_bytes())

    floor_sec = _median_time(read_all, 3)
    build_sec = _median_time(lambda: write_comparison_report(many), 3)
    ratio = build_sec / floor_sec
    report.add("7 report", f"comparison page over {len(files):,} experiments",
               f"{build_sec:.2f} s", f"<= {COMPARISON_SEC_TARGET:.0f} s",
               verdict(build_sec <= COMPARISON_SEC_TARGET),
               figures={"build_sec": build_sec})  # fmt: skip
    report.add("7 report", "comparison page build / orjson.loads of every result file",
               f"{ratio:.1f}x ({build_sec:.2f} s vs {floor_sec:.3f} s)", "", "",
               figures={"floor_sec": floor_sec})  # fmt: skip
