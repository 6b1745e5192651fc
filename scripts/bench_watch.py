"""Benchmark the watcher daemon: marker -> result latency, restart time, idle CPU.

Runs the real daemon (``python -m energy_ledger watch``) as a separate process on a scratch root:

1. latency: experiments are written in a staging folder on the same filesystem, their logs moved
   into the root, then their markers renamed in (as a writer's atomic marker write would appear);
   the time from the last marker rename to ``aggregated/<id>.json`` existing is recorded, in
   inotify mode and in polling mode;
2. restart: a root holding ``--idle-experiments`` emitted experiments of 8 processes each; the
   time a restarted daemon takes to write its first status file;
3. idle CPU: that daemon's user+system CPU over ``--idle-seconds``, in both modes.

Usage: ``PYTHONPATH=src python scripts/bench_watch.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from energy_ledger.simulate import simulate  # noqa: E402


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_LEDGER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    return env


def _cpu_sec(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(root: Path, mode: list[str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "energy_ledger", "watch", str(root), *mode],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    status = root / ".energy-ledger" / "status.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if json.loads(status.read_bytes()).get("pid") == proc.pid:
                return proc, time.monotonic() - started
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: see {log}")
        time.sleep(0.01)
    raise SystemExit("daemon did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_latency(work: Path, mode: list[str], count: int) -> dict[str, Any]:
    """Marker -> result latency over ``count`` experiments of 4 processes."""
    root, stage = work / "lat-root", work / "lat-stage"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)
    root.mkdir(parents=True)
    simulate(stage, experiments=count, processes=4, requests=50, prefix="lat")
    proc, _ = _start(root, mode, work / "lat.log")
    latencies_ms: list[float] = []
    try:
        for n in range(count):
            experiment_id = f"lat-{n:04d}"
            src, dst = stage / "raw" / experiment_id, root / "raw" / experiment_id
            dst.mkdir(parents=True)
            for log in sorted(src.glob("*.events.jsonl")):
                os.rename(log, dst / log.name)
            time.sleep(0.05)  # the logs settle before the markers appear
            for marker in sorted(src.glob("*.done")):
                os.rename(marker, dst / marker.name)
            t_marker = time.monotonic()
            result = root / "aggregated" / f"{experiment_id}.json"
            deadline = t_marker + 30
            while not result.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"{experiment_id} was never emitted")
                time.sleep(0.0005)
            latencies_ms.append((time.monotonic() - t_marker) * 1000.0)
    finally:
        _stop(proc)
    return {
        "mode": "polling" if mode else "inotify",
        "experiments": count,
        "p50_ms": round(statistics.median(latencies_ms), 1),
        "p99_ms": round(_pct(latencies_ms, 0.99), 1),
        "max_ms": round(max(latencies_ms), 1),
    }


def bench_idle(work: Path, experiments: int, idle_sec: float) -> list[dict[str, Any]]:
    """Restart time and idle CPU over ``experiments`` emitted experiments of 8 processes."""
    root = work / "idle-root"
    if not (root / "raw").is_dir():
        simulate(root, experiments=experiments, processes=8, requests=5, itl=False, prefix="idle")
    proc, first_sec = _start(root, [], work / "idle.log")
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        status = json.loads((root / ".energy-ledger" / "status.json").read_bytes())
        if status.get("emitted") == experiments:
            break
        time.sleep(0.2)
    _stop(proc)
    rows = []
    for mode in ([], ["--polling"]):
        proc, restart_sec = _start(root, mode, work / "idle.log")
        try:
            time.sleep(1.0)  # let start-up work finish before measuring
            cpu0, t0 = _cpu_sec(proc.pid), time.monotonic()
            time.sleep(idle_sec)
            cpu1, t1 = _cpu_sec(proc.pid), time.monotonic()
        finally:
            _stop(proc)
        rows.append(
            {
                "mode": "polling" if mode else "inotify",
                "emitted_experiments": experiments,
                "first_start_sec": round(first_sec, 2),
                "restart_sec": round(restart_sec, 2),
                "idle_cpu_pct_of_one_core": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 3),
            }
        )
    return rows


def main() -> None:
    """Run the benchmarks and print one JSON object per measurement."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer experiments, shorter idle")
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--idle-experiments", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.experiments, args.idle_experiments, args.idle_seconds = 20, 100, 5.0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-watch-"))
    work.mkdir(parents=True, exist_ok=True)
    for mode in ([], ["--polling", "--poll-interval", "1"]):
        print(json.dumps({"latency": bench_latency(work, mode, args.experiments)}), flush=True)
    for row in bench_idle(work, args.idle_experiments, args.idle_seconds):
        print(json.dumps({"idle": row}), flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
