"""Sections 3 and 4: the watcher daemon as users run it, in its own process.

Section 3 times the last marker of an experiment to its result file, in inotify and in polling
mode; section 4 measures a restarted daemon's idle CPU, its restart and stop times on a root of
already emitted experiments, and its idle CPU again with ``--metrics-port 0`` scraped once a
second (as a Prometheus with a fast interval would). ``scripts/bench_watch.py`` is the
standalone version of the same.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench_logs import no_fsync
from bench_report import Report, Sizes, optional_module, percentile, verdict
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store.layout import ResultsLayout


def daemon_argv(
    root: Path, polling: bool, poll_interval_sec: float, extra: tuple[str, ...] = ()
) -> list[str]:
    """``energy-ledger watch ROOT``, as users run it, in its own interpreter."""
    mode = "--polling" if polling else "--no-polling"
    return [sys.executable, "-m", "energy_ledger", "watch", str(root), mode,
            "--poll-interval", str(poll_interval_sec), *extra]  # fmt: skip


def cpu_sec(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads)."""
    psutil = optional_module("psutil")
    if psutil is not None:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_status(root: Path) -> dict[str, Any] | None:
    """The daemon's ``status.json`` under ``root``, or None while it is missing or half written."""
    try:
        return dict(orjson.loads((root / ".energy-ledger" / "status.json").read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return None


def wait_for(predicate: Callable[[], bool], timeout_sec: float, step_sec: float = 0.001) -> bool:
    """Poll ``predicate`` every ``step_sec`` until it holds (True) or ``timeout_sec`` passes."""
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_sec)
    return False


class Daemon:
    """The watcher as a separate process, as users run it."""

    def __init__(
        self, root: Path, polling: bool, poll_interval_sec: float, extra: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            daemon_argv(root, polling, poll_interval_sec, extra),
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
    """Section 3: last marker -> result file latency, p50/p99, in one watch mode."""
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
    """Section 4: idle CPU, restart and stop times on a root of emitted experiments, both modes."""
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
    bench_metrics_idle(report, sizes, root, note)
    report.add("4 daemon", "first start adopting results written by `replay` (no re-read)",
               f"{adopt_sec:.2f} s", "", "", figures={"adopt_sec": adopt_sec})  # fmt: skip


class Scraper:
    """Fetches ``/metrics`` once a second on a thread, as Prometheus would; counts its scrapes."""

    def __init__(self, url: str, every_sec: float = 1.0) -> None:
        self.url, self.every_sec = url, every_sec
        self.scrapes, self.bytes, self.errors = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_sec):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.bytes += len(response.read())
                self.scrapes += 1
            except OSError:
                self.errors += 1

    def stop(self) -> None:
        """Stop scraping (the scrape in flight finishes)."""
        self._stop.set()
        self._thread.join(10)


def bench_metrics_idle(report: Report, sizes: Sizes, root: Path, note: str) -> None:
    """Section 4, ``--metrics-port 0``: idle CPU (inotify) while scraped once a second."""
    if optional_module("prometheus_client") is None:
        report.add("4 daemon", "idle CPU with --metrics-port (scraped every 1 s)",
                   "skipped: prometheus-client is not installed", "<= 1 %", "")  # fmt: skip
        return
    n = sizes.idle_experiments
    daemon = Daemon(root, False, sizes.poll_interval_sec, ("--metrics-port", "0"))
    try:
        daemon.wait_ready(emitted=n)
        url = (read_status(root) or {})["metrics_url"]
        scraper = Scraper(url)
        time.sleep(min(1.0, sizes.idle_sec))  # let start-up settle
        c0, t0, s0 = cpu_sec(daemon.proc.pid), time.monotonic(), scraper.scrapes
        time.sleep(sizes.idle_sec)
        c1, t1, s1 = cpu_sec(daemon.proc.pid), time.monotonic(), scraper.scrapes
        scraper.stop()
    finally:
        daemon.stop()
    pct = (c1 - c0) / (t1 - t0) * 100
    size_kb = scraper.bytes / max(1, scraper.scrapes) / 1000
    report.add("4 daemon", f"idle CPU, inotify, --metrics-port 0 scraped every 1 s, {note}, "
               f"over {t1 - t0:.0f} s ({s1 - s0} scrapes of {size_kb:.1f} kB)",
               f"{pct:.2f} % of a core", "<= 1 %", verdict(pct <= 1.0 and not scraper.errors),
               figures={"core_pct": pct, "scrapes": s1 - s0, "scrape_errors": scraper.errors,
                        "scrape_kb": size_kb})  # fmt: skip
