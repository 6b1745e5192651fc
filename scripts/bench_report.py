"""The benchmark's modes and results: input sizes per mode, the table's rows, targets and machine.

``bench.py`` and its section modules (``bench_replay``, ``bench_baseline``, ``bench_daemon``) all
take a ``Sizes`` and add ``Row``s to one ``Report``; the entry point prints its table and the
PASS/FAIL count. Kept apart from the measurements so that what a row looks like, and how a target
is judged, is defined once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def optional_module(name: str) -> Any:
    """The module ``name``, or None when it is not installed (its column is then skipped)."""
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
    report_experiments: int


SIZES = {
    "full": Sizes("full", 1_000_000, 5, 3, 100_000, 5, 1_000_000_000, 50, 1.0, 1000, 10.0, 20,
                  200_000, 10.0, 5, 1000),
    "quick": Sizes("quick", 200_000, 3, 1, 25_000, 3, 100_000_000, 20, 0.25, 200, 3.0, 10,
                   50_000, 2.0, 3, 200),
    "smoke": Sizes("smoke", 3_000, 2, 1, 1_000, 1, 1_000_000, 3, 0.2, 5, 0.5, 3,
                   2_000, 0.3, 1, 5),
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
        """Append a ``Row`` (same arguments) and echo it on stderr, so a long run shows progress."""
        row = Row(*args, **kwargs)
        self.rows.append(row)
        mark = f"  [{row.verdict}]" if row.verdict else ""
        print(f"  {row.section}: {row.what}: {row.value}{mark}", file=sys.stderr, flush=True)

    def table(self) -> str:
        """The rows as a fixed-width text table, one line per row."""
        head = ("section", "measurement", "figure", "target", "result")
        body = [(r.section, r.what, r.value, r.target, r.verdict) for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        line = "  ".join("-" * w for w in widths)
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
        out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
        return "\n".join(s.rstrip() for s in out)


def verdict(ok: bool) -> str:
    """The result column for a target: PASS or FAIL."""
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
