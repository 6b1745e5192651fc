"""The daemon's memory and sweep cost on a root of many experiments, some of them failed.

Issue 10, item 6: failed, invalid and stale experiments used to stay in the daemon's active set
with their folded states (every latency of every process), and every sweep reopened their logs.
This builds a root of ``--experiments`` experiments of which ``--failed`` have a failed process
(the failed ones with many requests, so that their latency arrays weigh something), emits the
others with ``replay`` first (the daemon records those without reading them), then runs
``energy-ledger watch ROOT --polling`` in its own process and measures, once it has seen
everything and settled:

- its resident memory (``VmRSS``) and peak (``VmHWM``), from ``/proc/<pid>/status``;
- over ``--window-sec`` of idle polling: CPU seconds and ``read`` system calls
  (``/proc/<pid>/io``), per sweep.

Run it once per source tree to compare (``--src`` puts another checkout's ``src`` first)::

    python scripts/bench_daemon_memory.py --workdir /tmp/mem
    git archive HEAD~1 | tar -x -C /tmp/before
    python scripts/bench_daemon_memory.py --workdir /tmp/mem --src /tmp/before/src

The root is kept in ``--workdir`` and reused when its size parameters match (generating
10,000 experiments takes about a minute). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

SRC = Path(__file__).resolve().parents[1] / "src"


def proc_fields(pid: int, name: str) -> dict[str, int]:
    """``key: value`` lines of ``/proc/<pid>/<name>`` as integers (kB for ``status``)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
    return fields


def cpu_sec(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_status(root: Path) -> dict[str, Any] | None:
    """The daemon's ``status.json``, or None while it is missing or half written."""
    try:
        return dict(orjson.loads((root / ".energy-ledger" / "status.json").read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return None


def build_root(root: Path, args: argparse.Namespace) -> None:
    """Generate the experiments (or reuse them) and emit the complete ones with ``replay``."""
    sys.path.insert(0, str(SRC))
    from energy_ledger.pipeline import replay_root
    from energy_ledger.simulate import simulate

    stamp = root / "sizes.json"
    sizes = {k: getattr(args, k) for k in ("experiments", "failed", "processes", "requests")}
    if stamp.exists() and orjson.loads(stamp.read_bytes()) == sizes:
        return
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    # ``simulate`` starts experiment n at T0 + n hours; batches of 1,000 keep every event time
    # in the past (a log whose ``clock`` events come before its simulated times is invalid).
    for batch, start in enumerate(range(0, args.failed, 1000)):
        simulate(root, experiments=min(1000, args.failed - start), processes=args.processes,
                 requests=args.requests, fail=1, prefix=f"failed{batch}",
                 keep_samples=False)  # fmt: skip
    done = args.experiments - args.failed
    for batch, start in enumerate(range(0, done, 1000)):
        simulate(root, experiments=min(1000, done - start), processes=args.processes,
                 requests=5, itl=False, prefix=f"done{batch}", keep_samples=False)  # fmt: skip
    replay_root(root)
    stamp.write_bytes(orjson.dumps(sizes))
    print(f"generated and replayed {args.experiments} experiments in "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr)  # fmt: skip


def measure(root: Path, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run the daemon from ``src`` on ``root``; its memory and idle sweep cost."""
    shutil.rmtree(root / ".energy-ledger", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_LEDGER_")}
    env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "energy_ledger", "watch", str(root), "--polling",
           "--poll-interval", str(args.poll_interval), "--reconcile-interval", "3600"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    done = args.experiments - args.failed
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            status = read_status(root) or {}
            rows = status.get("active", [])
            seen = status.get("active_count", 0) == args.failed and status.get("emitted") == done
            if seen and all(r.get("state") == "failed" for r in rows):
                break
            if time.monotonic() - t0 > args.timeout_sec:
                raise RuntimeError("the daemon did not settle")
            time.sleep(0.2)
        start_sec = time.monotonic() - t0
        time.sleep(args.settle_sec)  # retirement, and the allocator settling
        status = read_status(root) or {}
        retired = sum(1 for r in status.get("active", []) if r.get("retired"))
        memory = proc_fields(proc.pid, "status")
        cpu0, io0 = cpu_sec(proc.pid), proc_fields(proc.pid, "io")
        time.sleep(args.window_sec)
        cpu1, io1 = cpu_sec(proc.pid), proc_fields(proc.pid, "io")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    sweeps = args.window_sec / args.poll_interval
    return {
        "src": str(src),
        "start_to_settled_sec": round(start_sec, 1),
        "retired_listed": retired,
        "rss_mb": round(memory["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(memory["VmHWM"] / 1024, 1),
        "cpu_ms_per_sweep": round((cpu1 - cpu0) * 1000 / sweeps, 2),
        "reads_per_sweep": round((io1["syscr"] - io0["syscr"]) / sweeps, 1),
        "read_kb_per_sweep": round((io1["rchar"] - io0["rchar"]) / 1024 / sweeps, 1),
        "idle_core_pct": round((cpu1 - cpu0) / args.window_sec * 100, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Build the root, run one daemon, print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-daemon-memory"))
    parser.add_argument("--src", type=Path, default=SRC, help="the src/ of the daemon to run")
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--failed", type=int, default=1_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200, help="per failed process")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--settle-sec", type=float, default=10.0)
    parser.add_argument("--window-sec", type=float, default=30.0)
    parser.add_argument("--timeout-sec", type=float, default=1800.0)
    args = parser.parse_args(argv)
    root = args.workdir / "root"
    build_root(root, args)
    figures = measure(root, args.src.resolve(), args)
    print(orjson.dumps({**vars(args), **figures}, default=str, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
