"""energy-ledger benchmarks: replay, scaling and memory, the watcher daemon, the recorder.

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
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.process import summarize_process
from energy_ledger.core.replay import replay_stream
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import T0, simulate
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.reader import LogTail, scan_experiment
from energy_ledger.store.writer import EventLogWriter

SCRIPTS = Path(__file__).resolve().parent


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --- sizes per mode -------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """How big each input is and how often each measurement repeats."""

    name: str
    replay_events: int
    replay_reps: int
    peer_reps: int
    scale_events: int
    scale_reps: int
    big_log_bytes: int
    daemon_experiments: int
    poll_interval_sec: float
    idle_experiments: int
    idle_sec: float
    incremental_appends: int
    recorder_requests: int
    sampler_sec: float
    baseline_rounds: int


SIZES = {
    "full": Sizes("full", 1_000_000, 5, 3, 100_000, 5, 1_000_000_000, 50, 1.0, 1000, 10.0, 20,
                  200_000, 10.0, 5),
    "quick": Sizes("quick", 200_000, 3, 1, 25_000, 3, 100_000_000, 20, 0.25, 200, 3.0, 10,
                   50_000, 2.0, 3),
    "smoke": Sizes("smoke", 3_000, 2, 1, 1_000, 1, 1_000_000, 3, 0.2, 5, 0.5, 3,
                   2_000, 0.3, 1),
}  # fmt: skip


# --- results ----------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table."""

    section: str
    what: str
    value: str
    target: str = ""
    verdict: str = ""  # PASS, FAIL or "" (no target)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Everything measured in one run."""

    mode: str
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        mark = f"  [{row.verdict}]" if row.verdict else ""
        print(f"  {row.section}: {row.what}: {row.value}{mark}", file=sys.stderr, flush=True)

    def table(self) -> str:
        head = ("section", "measurement", "figure", "target", "result")
        body = [(r.section, r.what, r.value, r.target, r.verdict) for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        line = "  ".join("-" * w for w in widths)
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
        out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
        return "\n".join(s.rstrip() for s in out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``values`` need not be sorted)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    versions = {}
    packages = ("energy-ledger", "orjson", "msgspec", "numpy", "pydantic", "polars", "pandas",
                "psutil", "watchdog")  # fmt: skip
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """Skip fsync while generating inputs (their durability is not what is measured)."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


# --- inputs ------------------------------------------------------------------------------------
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
            if t >= next_sample:
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


# --- 1. replay throughput ----------------------------------------------------------------------
def energy_ledger_replay(path: Path) -> object:
    """What ``energy-ledger replay`` does with one log: parse, fold, summarize, aggregate."""
    with open(path, "rb") as fh:
        cursor = replay_stream(fh, path=str(path))
    summary = summarize_process(cursor.state, 0)
    return aggregate_results([summary], "bench")


def orjson_loop(path: Path) -> int:
    """The practical limit: decode every line with orjson and do nothing else."""
    n = 0
    loads = orjson.loads
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    return n


def polars_read(path: Path) -> object:
    """What a user would reach for: polars' NDJSON reader (all columns, schema inferred)."""
    import polars as pl

    try:
        return pl.read_ndjson(path)
    except Exception:  # schema inference from the first rows can fail on a mixed log
        return pl.read_ndjson(path, infer_schema_length=None)


def pandas_read(path: Path) -> object:
    """The other usual choice: ``pandas.read_json(lines=True)``."""
    import pandas as pd

    return pd.read_json(path, lines=True)


def interleaved(
    contenders: dict[str, tuple[Callable[[Path], object], int]], path: Path
) -> dict[str, list[float]]:
    """Time each contender ``reps`` times, interleaving them (the order rotates each round)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    rounds = max(reps for _fn, reps in contenders.values())
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, reps = contenders[name]
            if len(times[name]) >= reps:
                continue
            t0 = time.perf_counter()
            fn(path)
            times[name].append(time.perf_counter() - t0)
    return times


def bench_replay(report: Report, sizes: Sizes, work: Path) -> BigLog:
    """Section 1 against the peers, in this process; returns the log, for the baseline rows."""
    log = write_log(work / "replay", "replay-big", events=sizes.replay_events)
    mb = log.size / 1e6
    contenders: dict[str, tuple[Callable[[Path], object], int]] = {
        "energy-ledger": (energy_ledger_replay, sizes.replay_reps),
        "orjson loop": (orjson_loop, sizes.replay_reps),
    }
    if _optional("polars") is not None:
        contenders["polars"] = (polars_read, sizes.peer_reps)
    if _optional("pandas") is not None:
        contenders["pandas"] = (pandas_read, sizes.peer_reps)
    energy_ledger_replay(log.path)  # warm the page cache and the imports
    times = interleaved(contenders, log.path)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ours = median["energy-ledger"]
    sec = "1 replay"
    report.add(sec, f"energy-ledger replay, {log.events:,} events ({mb:.0f} MB)",
               f"{log.events / ours / 1e6:.2f} M events/s ({ours:.2f} s)",
               figures={"events": log.events, "bytes": log.size, "times_sec": times})  # fmt: skip
    targets = {"orjson loop": 0.5, "polars": 1.5}
    for name in ("orjson loop", "polars", "pandas"):
        if name not in median:
            report.add(sec, f"vs {name}", "skipped (not installed)")
            continue
        ratio = median[name] / ours  # >1: energy-ledger is faster
        target = targets.get(name)
        report.add(sec, f"vs {name} ({median[name]:.2f} s)", f"{ratio:.2f}x its speed",
                   f">= {target}x" if target else "",
                   verdict(ratio >= target) if target else "",
                   figures={"ratio": ratio, "median_sec": median[name]})  # fmt: skip
    return log


# --- 1. replay against a baseline revision --------------------------------------------------------
REPO = SCRIPTS.parent
DEFAULT_BASELINE_REF = "1c01940"  # the last commit before issue 8 moved the replay into core/
BASELINE_TARGET = 1.05  # new/old median time: not slower than before, 5 % allowed for noise

# One timed replay in a fresh interpreter whose PYTHONPATH is one tree's src/. The clock covers
# open + replay_stream only (no interpreter start, no import); the tree is checked to be the one
# imported, since an installed copy of the package would otherwise be measured silently.
REPLAY_CHILD = """
import json, sys, time
from pathlib import Path
src, path = Path(sys.argv[1]).resolve(), sys.argv[2]
try:
    from energy_ledger.core.replay import replay_stream
    api = "energy_ledger.core.replay"
except ModuleNotFoundError as exc:
    # Only a tree from before the subpackages falls back; a broken import in core/ is an error.
    if exc.name not in ("energy_ledger.core", "energy_ledger.core.replay"):
        raise
    from energy_ledger.replay import replay_stream
    api = "energy_ledger.replay"
import energy_ledger
where = Path(energy_ledger.__file__).resolve()
if src not in where.parents:
    sys.exit(f"imported energy_ledger from {where}, not from {src}")
t0 = time.perf_counter()
with open(path, "rb") as fh:
    cursor = replay_stream(fh)
sec = time.perf_counter() - t0
print(json.dumps({"sec": sec, "lines": cursor.lines, "requests": cursor.state.requests,
                  "api": api}))
"""


class BaselineError(Exception):
    """A tree to compare could not be extracted or could not replay; the message says why."""


def git(*args: str) -> bytes:
    """Run ``git -C REPO ARGS``; its stdout, or BaselineError with git's own message."""
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False)
    except OSError as exc:
        raise BaselineError(f"git could not run ({exc})") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BaselineError(f"git {args[0]}: {said[-1] if said else f'exit {proc.returncode}'}")
    return proc.stdout


def extract_src(ref: str, dest: Path) -> tuple[Path, str]:
    """``git archive REF src | tar -x -C dest``: the tree's ``src/`` folder and its short hash.

    No worktree and no network: the files come from the local object store and land under the
    bench's temporary folder, which is removed at the end of the run.
    """
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
    except BaselineError as exc:
        try:
            shallow = git("rev-parse", "--is-shallow-repository").strip() == b"true"
        except BaselineError:
            raise BaselineError(f"{REPO} is not a git checkout ({exc})") from exc
        hint = " (a shallow clone: `git fetch --unshallow`)" if shallow else ""
        raise BaselineError(f"revision {ref!r} not found in {REPO}{hint}") from exc
    short = git("rev-parse", "--short", commit).decode().strip()
    archive = git("archive", commit, "src")
    dest.mkdir(parents=True)
    try:
        tar = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, capture_output=True,
                             check=False)  # fmt: skip
    except OSError as exc:
        raise BaselineError(f"tar could not run ({exc})") from exc
    if tar.returncode != 0 or not (dest / "src" / "energy_ledger").is_dir():
        said = tar.stderr.decode(errors="replace").strip()
        raise BaselineError(f"revision {short} has no src/energy_ledger to extract {said}".strip())
    return dest / "src", short


def replay_in_tree(src: Path, log: Path, cwd: Path) -> dict[str, Any]:
    """Replay ``log`` once in a fresh interpreter importing the package from ``src``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_LEDGER_")}
    env["PYTHONPATH"] = str(src)
    # -P: no cwd or script folder on sys.path, so only PYTHONPATH decides which tree is imported.
    proc = subprocess.run([sys.executable, "-P", "-c", REPLAY_CHILD, str(src), str(log)],
                          capture_output=True, text=True, env=env, cwd=cwd,
                          check=False)  # fmt: skip
    if proc.returncode != 0:
        said = proc.stderr.strip().splitlines()
        print("\n".join(f"    | {line}" for line in said[-15:]), file=sys.stderr)
        raise BaselineError(f"replay with {src} failed: {said[-1] if said else proc.returncode}")
    return dict(orjson.loads(proc.stdout.strip().splitlines()[-1]))


def bench_baseline(
    report: Report, sizes: Sizes, log: BigLog, work: Path, ref: str, candidate_ref: str | None
) -> None:
    """Replay alone, this tree against revision ``ref``, on section 1's log, in subprocesses.

    Each timed run is its own interpreter (old and new never share a process, so neither warms
    or fragments the other's heap); runs alternate and the order flips every round.
    """
    sec = "1 replay"
    if ref.lower() == "none":
        report.add(sec, "vs a baseline revision", "skipped (--baseline-ref none)")
        return
    try:
        old_src, old_name = extract_src(ref, work / "tree-baseline")
        if candidate_ref is None:
            new_src, new_name = REPO / "src", "working tree"
        else:
            new_src, new_name = extract_src(candidate_ref, work / "tree-candidate")
    except BaselineError as exc:
        print(f"bench: replay vs a baseline revision skipped: {exc}", file=sys.stderr)
        report.add(sec, f"vs revision {ref}", f"skipped: {exc}")
        return
    trees = {"new": new_src, "old": old_src}
    times: dict[str, list[float]] = {"new": [], "old": []}
    folded: dict[str, set[tuple[int, int]]] = {"new": set(), "old": set()}
    apis: dict[str, str] = {}
    try:
        for r in range(sizes.baseline_rounds):
            for name in ("new", "old") if r % 2 == 0 else ("old", "new"):
                out = replay_in_tree(trees[name], log.path, work)
                times[name].append(float(out["sec"]))
                folded[name].add((int(out["lines"]), int(out["requests"])))
                apis[name] = str(out["api"])
    except BaselineError as exc:
        print(f"bench: replay vs {old_name} failed: {exc}", file=sys.stderr)
        report.add(sec, f"vs revision {old_name}", f"error: {exc}", f"new/old <= {BASELINE_TARGET}",
                   "FAIL")  # fmt: skip
        return
    best = {name: min(ts) for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ratio, ratio_best = median["new"] / median["old"], best["new"] / best["old"]
    same = len(folded["new"]) == 1 and folded["new"] == folded["old"]
    if not same:
        print(f"bench: ERROR: the trees folded different (lines, requests): {new_name} "
              f"{sorted(folded['new'])}, {old_name} {sorted(folded['old'])}",
              file=sys.stderr)  # fmt: skip
    n = sizes.baseline_rounds
    report.add(sec, f"replay_stream alone, {new_name} vs {old_name}, {log.events:,} events, "
               f"{n} run{'s' if n > 1 else ''} each, one process per run",
               f"new best {best['new']:.3f} s, median {median['new']:.3f} s; "
               f"old best {best['old']:.3f} s, median {median['old']:.3f} s",
               figures={"ref": ref, "baseline": old_name, "candidate": new_name,
                        "times_sec": times, "apis": apis,
                        "lines_requests": {k: sorted(v) for k, v in folded.items()}})  # fmt: skip
    report.add(sec, f"vs {old_name} ({median['old']:.2f} s), replay_stream alone",
               f"new/old {ratio:.3f} (best {ratio_best:.3f})"
               + ("" if same else "; ERROR: different lines/requests folded"),
               f"new/old <= {BASELINE_TARGET}", verdict(same and ratio <= BASELINE_TARGET),
               figures={"ratio": ratio, "ratio_best": ratio_best, "median_sec": median,
                        "best_sec": best, "same_fold": same})  # fmt: skip


# --- 2. scaling and memory ------------------------------------------------------------------------
def bench_scaling(report: Report, sizes: Sizes, work: Path) -> None:
    logs = {
        k: write_log(work / "scale", f"scale-{k}x", events=sizes.scale_events * k, seed=k)
        for k in (1, 4, 16)
    }
    contenders = {f"{k}x": (lambda _p, log=log: energy_ledger_replay(log.path), sizes.scale_reps)
                  for k, log in logs.items()}  # fmt: skip
    times = interleaved(contenders, work)
    median = {k: statistics.median(times[f"{k}x"]) for k in logs}
    # Slope of log(time) against log(events): 1.0 is exactly linear.
    xs = [math.log(logs[k].events) for k in logs]
    ys = [math.log(median[k]) for k in logs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    per_event = {k: median[k] / logs[k].events * 1e6 for k in logs}
    report.add("2 scaling",
               "replay time 1x/4x/16x " f"({logs[1].events:,}/{logs[4].events:,}/"
               f"{logs[16].events:,} events)",
               " / ".join(f"{median[k]:.3f} s" for k in logs)
               + f"; {per_event[1]:.2f}/{per_event[4]:.2f}/{per_event[16]:.2f} us/event",
               figures={"median_sec": median, "us_per_event": per_event})  # fmt: skip
    report.add("2 scaling", "log-log slope of time vs events", f"{slope:.3f}",
               "0.9..1.1 (linear)", verdict(0.9 <= slope <= 1.1),
               figures={"slope": slope})  # fmt: skip


RSS_CHILD = """
import json, resource, sys, time
from energy_ledger.core.replay import replay_stream
path, full = sys.argv[1], sys.argv[2] == "full"
t0 = time.perf_counter()
if sys.argv[2] != "import":
    with open(path, "rb") as fh:
        cursor = replay_stream(fh, path=path)
    if full:
        from energy_ledger.core.aggregation import aggregate_results
        from energy_ledger.core.process import summarize_process
        aggregate_results([summarize_process(cursor.state, 0)], "bench")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent across exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"maxrss_kb": kb, "sec": time.perf_counter() - t0}))
"""


def child_rss(path: Path, what: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(path), what],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(orjson.loads(out.strip().splitlines()[-1]))


def bench_memory(report: Report, sizes: Sizes, big: BigLog) -> None:
    gb = big.size / 1e9
    note = "" if sizes.name == "full" else f" ({sizes.name} mode: smaller log than 1 GB)"
    floor = child_rss(big.path, "import")["maxrss_kb"] / 1024
    fold = child_rss(big.path, "replay")
    rss_mb = fold["maxrss_kb"] / 1024
    report.add("2 memory", f"peak RSS replaying a {gb:.2f} GB log, {big.events:,} events{note}",
               f"{rss_mb:.0f} MB (interpreter + imports alone: {floor:.0f} MB)", "<= 200 MB",
               verdict(rss_mb <= 200), figures={"rss_mb": rss_mb, "floor_mb": floor,
                                                "bytes": big.size, "sec": fold["sec"]})  # fmt: skip
    full = child_rss(big.path, "full")
    full_mb = full["maxrss_kb"] / 1024
    report.add(
        "2 memory",
        "peak RSS replay + summarize + aggregate, same log",
        f"{full_mb:.0f} MB",
        "",
        "",
        figures={"rss_mb": full_mb, "sec": full["sec"]},
    )


# --- 3 and 4. the daemon --------------------------------------------------------------------
def daemon_argv(root: Path, polling: bool, poll_interval_sec: float) -> list[str]:
    """``energy-ledger watch ROOT``, as users run it, in its own interpreter."""
    mode = "--polling" if polling else "--no-polling"
    return [sys.executable, "-m", "energy_ledger", "watch", str(root), mode,
            "--poll-interval", str(poll_interval_sec)]  # fmt: skip


def cpu_sec(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads)."""
    psutil = _optional("psutil")
    if psutil is not None:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_status(root: Path) -> dict[str, Any] | None:
    try:
        return dict(orjson.loads((root / ".energy-ledger" / "status.json").read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return None


def wait_for(predicate: Callable[[], bool], timeout_sec: float, step_sec: float = 0.001) -> bool:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_sec)
    return False


class Daemon:
    """The watcher as a separate process, as users run it."""

    def __init__(self, root: Path, polling: bool, poll_interval_sec: float) -> None:
        self.root = root
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            daemon_argv(root, polling, poll_interval_sec),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # The flags say how it runs, not the caller's ENERGY_LEDGER_* settings.
            env={k: v for k, v in os.environ.items() if not k.startswith("ENERGY_LEDGER_")},
        )

    def wait_ready(self, emitted: int = 0, timeout_sec: float = 120.0) -> float:
        """Seconds from the start until its status file shows ``emitted`` experiments, idle."""

        def ready() -> bool:
            status = read_status(self.root)
            return (
                status is not None
                and status.get("pid") == self.proc.pid
                and status.get("emitted", 0) >= emitted
                and status.get("active_count", 1) == 0
            )

        if not wait_for(ready, timeout_sec, 0.005):
            self.stop()
            raise RuntimeError(f"the daemon on {self.root} did not get ready")
        return time.monotonic() - self.t_start

    def stop(self) -> float:
        """SIGTERM; seconds until it exited."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0


def bench_daemon_latency(report: Report, sizes: Sizes, work: Path, polling: bool) -> None:
    mode = "polling" if polling else "inotify"
    root = work / f"latency-{mode}"
    (root / "raw").mkdir(parents=True)
    interval = sizes.poll_interval_sec
    daemon = Daemon(root, polling, interval)
    layout = ResultsLayout.at(root)
    latencies_ms: list[float] = []
    rng = random.Random(7)
    try:
        daemon.wait_ready()
        for i in range(sizes.daemon_experiments):
            # Experiments of 4 processes; the last process's close() writes the last marker.
            simulate(root, experiments=1, processes=4, requests=20, seed=i, prefix=f"lat{i}",
                     itl=False)  # fmt: skip
            t0 = time.perf_counter()
            result = layout.result_path(f"lat{i}-0000")
            if not wait_for(result.exists, max(10.0, 5 * interval)):
                raise RuntimeError(f"{mode}: lat{i}-0000 was not emitted")
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            # De-phase from the poll clock, so the samples cover the whole interval.
            time.sleep(rng.uniform(0.0, interval if polling else 0.05))
    finally:
        daemon.stop()
    p50, p99 = percentile(latencies_ms, 50), percentile(latencies_ms, 99)
    limit50, limit99 = (interval * 1000 + 100, interval * 1000 + 100) if polling else (50, 250)
    what = f"latency last marker -> result, {mode}"
    if polling:
        what += f" (poll every {interval:g} s)"
    report.add("3 daemon", what + f", n={len(latencies_ms)}",
               f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies_ms):.1f} ms",
               f"p50 <= {limit50:.0f} ms, p99 <= {limit99:.0f} ms",
               verdict(p50 <= limit50 and p99 <= limit99),
               figures={"p50_ms": p50, "p99_ms": p99, "samples_ms": latencies_ms})  # fmt: skip


def bench_daemon_idle(report: Report, sizes: Sizes, work: Path) -> None:
    root = work / "idle"
    n = sizes.idle_experiments
    with no_fsync():
        simulate(root, experiments=n, processes=8, requests=3, itl=False, prefix="idle")
        replay_root(root)
    note = f"{n:,} emitted experiments x 8 processes"
    first = Daemon(root, False, sizes.poll_interval_sec)
    adopt_sec = first.wait_ready(emitted=n)
    first.stop()
    for polling in (False, True):
        mode = "polling" if polling else "inotify"
        interval = 1.0 if polling else sizes.poll_interval_sec
        daemon = Daemon(root, polling, interval)
        try:
            restart_sec = daemon.wait_ready(emitted=n)
            time.sleep(min(1.0, sizes.idle_sec))  # let start-up settle
            c0, t0 = cpu_sec(daemon.proc.pid), time.monotonic()
            time.sleep(sizes.idle_sec)
            c1, t1 = cpu_sec(daemon.proc.pid), time.monotonic()
        finally:
            stop_sec = daemon.stop()
        pct = (c1 - c0) / (t1 - t0) * 100
        extra = " (poll every 1 s)" if polling else ""
        report.add("4 daemon", f"idle CPU, {mode}{extra}, {note}, over {t1 - t0:.0f} s",
                   f"{pct:.2f} % of a core", "<= 1 %", verdict(pct <= 1.0),
                   figures={"core_pct": pct})  # fmt: skip
        report.add("4 daemon", f"restart time, {mode} (start -> status shows all emitted)",
                   f"{restart_sec:.2f} s (stop on SIGTERM {stop_sec:.2f} s)",
                   "seconds; stop <= 2 s",
                   verdict(restart_sec < 30 and stop_sec <= 2.0),
                   figures={"restart_sec": restart_sec, "stop_sec": stop_sec})  # fmt: skip
    report.add("4 daemon", "first start adopting results written by `replay` (no re-read)",
               f"{adopt_sec:.2f} s", "", "", figures={"adopt_sec": adopt_sec})  # fmt: skip


# --- 5. incremental cost ------------------------------------------------------------------------
def bench_incremental(report: Report, sizes: Sizes, big: BigLog) -> None:
    """CPU to absorb one appended event at the end of a big log that is still being written."""
    tail = LogTail(big.path)
    t0 = time.perf_counter()
    tail.refresh()
    first_sec = time.perf_counter() - t0
    tails = {0: tail}
    directory = big.path.parent
    layout = ResultsLayout.at(big.root)
    scan_experiment(directory, layout=layout, tails=tails)
    seq, t = tail.cursor.state.next_seq, big.last_t
    refresh_ms: list[float] = []
    scan_ms: list[float] = []
    for _ in range(sizes.incremental_appends):
        for costs, absorb in (
            (refresh_ms, tail.refresh),
            (scan_ms, lambda: scan_experiment(directory, layout=layout, tails=tails)),
        ):
            t += 0.01
            with open(big.path, "ab") as fh:
                fh.write(request_line(seq, t))
            seq += 1
            c0 = time.process_time()
            absorb()
            costs.append((time.process_time() - c0) * 1000)
    assert tail.error is None and tail.cursor.state.next_seq == seq, tail.error
    p50 = statistics.median(refresh_ms)
    gb = big.size / 1e9
    report.add("5 incremental", f"CPU to absorb 1 appended event, {gb:.2f} GB log: LogTail.refresh",
               f"p50 {p50:.3f} ms, max {max(refresh_ms):.3f} ms (first read {first_sec:.1f} s)",
               "<= 1 ms", verdict(p50 <= 1.0),
               figures={"refresh_ms": refresh_ms, "first_read_sec": first_sec})  # fmt: skip
    s50 = statistics.median(scan_ms)
    report.add("5 incremental", "same, the daemon's whole step: scan_experiment with tails",
               f"p50 {s50:.1f} ms, max {max(scan_ms):.1f} ms", "<= 1 ms", verdict(s50 <= 1.0),
               figures={"scan_ms": scan_ms})  # fmt: skip


# --- 6. recorder ----------------------------------------------------------------------------------
def bench_recorder(report: Report, sizes: Sizes, work: Path) -> None:
    sys.path.insert(0, str(SCRIPTS))
    try:
        recorder_bench = importlib.import_module("bench_recorder")
    finally:
        sys.path.remove(str(SCRIPTS))
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller inputs, under a minute")
    size.add_argument("--smoke", action="store_true", help="tiny inputs, a few seconds")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="where to write inputs (default: a temp dir)")
    parser.add_argument(
        "--only",
        default="1,2,3,4,5,6",
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
