"""energy-ledger benchmarks: replay, scaling and memory, the daemon, the recorder, the report.

Every comparison is measured side by side in one run and reported as a ratio, because machines are
noisy: contenders are interleaved (the order rotates each repetition) and medians are taken.
Inputs are generated with the ledger's own writer (``simulate`` and ``EventLogWriter``), so the
logs have exactly the field sets the recorder writes.

    python scripts/bench.py            # full run (1M-event log, 1 GB log, 50 daemon experiments)
    python scripts/bench.py --quick    # under a minute, smaller inputs (the table says which)
    python scripts/bench.py --smoke    # seconds, tiny inputs: checks that every section runs
    python scripts/bench.py --json bench.json
    python scripts/bench.py --baseline-ref REF   # replay against another revision (or "none")

polars, pandas and psutil are the ``bench`` extras; a column whose library is missing is skipped.
See docs/performance.md for what each figure means and the latest results.

The sections live in sibling modules, imported by name (``python scripts/bench.py`` puts this
folder first on ``sys.path``): ``bench_report`` (modes, rows, table, targets), ``bench_logs``
(generated inputs), ``bench_replay`` (sections 1, 2 and 5), ``bench_baseline`` (section 1 against
a baseline revision), ``bench_daemon`` (sections 3 and 4), ``bench_recorder`` (section 6) and
``bench_pages`` (section 7, the HTML report), ``bench_parallel`` (section 8, every core) and
``bench_s3`` (section 9, object storage on SeaweedFS; skipped when ``weed`` cannot start).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench_baseline import DEFAULT_BASELINE_REF, bench_baseline
from bench_daemon import bench_daemon_idle, bench_daemon_latency
from bench_logs import no_fsync, write_log
from bench_pages import bench_pages
from bench_parallel import bench_parallel
from bench_replay import bench_incremental, bench_memory, bench_replay, bench_scaling
from bench_report import SIZES, Report, Sizes, machine_info, verdict
from bench_s3 import bench_s3


# --- 6. recorder ----------------------------------------------------------------------------------
def bench_recorder(report: Report, sizes: Sizes, work: Path) -> None:
    """Section 6: ``scripts/bench_recorder.py``'s request() latency and sampler CPU, as rows."""
    # Imported here, not at the top, so that sections 1-5 alone never load the recorder.
    import bench_recorder as recorder_bench

    root = work / "recorder"
    root.mkdir()
    for itl_len in (0, 64):
        r = recorder_bench.bench_requests(str(root), "fake", sizes.recorder_requests, itl_len)
        report.add("6 recorder", f"request() latency, itl_ms of {itl_len} values, fake NVML",
                   f"p50 {r['p50_us']:.2f} us, p99 {r['p99_us']:.2f} us",
                   *(("p50 <= 5 us", verdict(r["p50_us"] <= 5.0)) if not itl_len else ("", "")),
                   figures=r)  # fmt: skip
    s = recorder_bench.bench_sampler(str(root), "fake", sizes.sampler_sec, 10.0)
    report.add("6 recorder", f"sampler CPU at 10 Hz, fake NVML ({s['samples']:.0f} samples)",
               f"{s['core_pct']:.3f} % of a core", "<= 1 %", verdict(s["core_pct"] <= 1.0),
               figures=s)  # fmt: skip


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, print the table and the PASS/FAIL count; always 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller inputs, under a minute")
    size.add_argument("--smoke", action="store_true", help="tiny inputs, a few seconds")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where to write inputs (default: a temp dir)")
    parser.add_argument(
        "--only",
        default="1,2,3,4,5,6,7,8,9",
        help="comma-separated sections to run (default: all)",
    )
    parser.add_argument(
        "--baseline-ref",
        default=DEFAULT_BASELINE_REF,
        metavar="REF",
        help="section 1 also times replay_stream with this git revision's src/, on the same log "
        f"(default: {DEFAULT_BASELINE_REF}, the last commit before the refactor; 'none' skips)",
    )
    # Hidden, for testing the comparison itself: a revision in place of the working tree.
    parser.add_argument("--candidate-ref", metavar="REF", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    only = {s.strip() for s in args.only.split(",")}
    report = Report(sizes.name, machine_info())
    m = report.machine
    print(f"energy-ledger bench, {sizes.name} mode: {m['cpu']}, {m['cores']} cores, "
          f"Python {m['python']}", file=sys.stderr)  # fmt: skip
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="el-bench-", dir=args.workdir))
    try:
        if "1" in only:
            log = bench_replay(report, sizes, work)
            bench_baseline(report, sizes, log, work, args.baseline_ref, args.candidate_ref)
        if "2" in only:
            bench_scaling(report, sizes, work)
        big = None
        if "2" in only or "5" in only:
            with no_fsync():
                big = write_log(work / "big", "big-log", min_bytes=sizes.big_log_bytes,
                                finish=False)  # fmt: skip
        if "2" in only and big is not None:
            bench_memory(report, sizes, big)
        if "5" in only and big is not None:
            bench_incremental(report, sizes, big)
        if "3" in only:
            bench_daemon_latency(report, sizes, work, polling=False)
            bench_daemon_latency(report, sizes, work, polling=True)
        if "4" in only:
            bench_daemon_idle(report, sizes, work)
        if "6" in only:
            bench_recorder(report, sizes, work)
        if "7" in only:
            bench_pages(report, sizes, work)
        if "8" in only:
            bench_parallel(report, sizes, work)
        if "9" in only:
            bench_s3(report, sizes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    print(f"\nenergy-ledger benchmark ({sizes.name} mode, {elapsed:.0f} s)")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}")
    print(f"python {m['python']}; {versions}\n")
    print(report.table())
    verdicts = [r.verdict for r in report.rows if r.verdict]
    print(f"\n{verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL")
    if args.json is not None:
        payload = {
            "mode": sizes.name,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "elapsed_sec": elapsed,
            "machine": m,
            "sizes": dataclasses.asdict(sizes),
            "rows": [dataclasses.asdict(r) for r in report.rows],
            "max_rss_mb_bench_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        args.json.write_bytes(
            orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
