"""The validity banner of an experiment page: can this measurement be trusted? (pure)

Each check compares a figure of the result with the threshold the ledger's validity warnings
use (``core.validity``), so the banner says how close a measurement came even when no warning
fired; docs/report.md lists them and docs/metrics.md ("Report") gives the clock-skew estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from energy_ledger.core.process import ProcessSummary
from energy_ledger.core.validity import (
    CLOCK_SKEW_SEC,
    MIN_WINDOW_SEC,
    STEADY_STATE_UNSTABLE_SEC,
    STEADY_STATE_WARN_SEC,
    clock_skew,
)
from energy_ledger.report.digest import GpuDigest, ResultDigest

Status = Literal["ok", "warn", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the validity banner."""

    label: str
    status: Status
    detail: str


def gpu_label(key: str, uuid: str | None, hostname: str | None, gpu_id: int | None = None) -> str:
    """A GPU's name for a legend: host and device index, else its UUID's end, else the process.

    The UUID is what the energy attribution groups by (``core.energy.gpu_key``); the device
    index is what a user recognises, and with the host it is unique in an experiment.
    """
    kind, _, name = key.partition(":")
    if kind == "process" and gpu_id is None:
        return f"process {name}'s GPU"
    if gpu_id is not None:
        return f"{hostname} GPU {gpu_id}" if hostname else f"GPU {gpu_id}"
    short = (uuid or name)[-8:]
    return f"{hostname} GPU …{short}" if hostname else f"GPU …{short}"


def gpu_row_label(g: GpuDigest, d: ResultDigest) -> str:
    """``gpu_label`` of an ``aggregation.gpus`` entry, with its first process's device index."""
    ids = {p.process_index: p.gpu_id for p in d.process_results}
    first = next((ids[i] for i in g.process_indices if i in ids), None)
    return gpu_label(g.key, g.uuid, g.hostname, first)


def validity_checks(
    d: ResultDigest,
    summaries: Sequence[ProcessSummary],
    expected: int | None,
    markers: tuple[int, int] | None,
) -> list[Check]:
    out: list[Check] = []
    seen = len(d.process_results)
    want = expected if expected is not None else seen
    out.append(
        Check(
            "Processes",
            "ok" if seen == want and not d.partial else "fail",
            f"{seen} of {want} expected processes in the result",
        )
    )
    if markers is not None:
        valid, total = markers
        out.append(
            Check(
                "Completion markers",
                "ok" if valid == total == want else "fail",
                f"{valid} valid markers for {total} logs",
            )
        )
    gpus = d.aggregation.gpus if d.aggregation else []
    sources = sorted({g.energy_source for g in gpus})
    counter_only = sources == ["counter"]
    out.append(
        Check(
            "Energy method",
            "ok" if counter_only else "warn",
            "; ".join(f"{gpu_row_label(g, d)}: {g.energy_source}" for g in gpus) or "no GPU energy",
        )
    )
    windows = [p.energy_metrics.duration_sec for p in d.process_results]
    shortest = min(windows) if windows else 0.0
    out.append(
        Check(
            "Measured window",
            "ok" if shortest >= MIN_WINDOW_SEC else "warn",
            f"shortest {shortest:.2f} s (at least {MIN_WINDOW_SEC:.1f} s wanted)",
        )
    )
    if d.measurement_methodology == "steady_state":
        covered = min((g.span_sec for g in gpus), default=0.0)
        status: Status = (
            "ok"
            if covered >= STEADY_STATE_WARN_SEC
            else "warn"
            if covered >= STEADY_STATE_UNSTABLE_SEC
            else "fail"
        )
        out.append(
            Check(
                "Steady state",
                status,
                f"{covered:.1f} s measured (at least {STEADY_STATE_WARN_SEC:.0f} s wanted, "
                f"under {STEADY_STATE_UNSTABLE_SEC:.0f} s is unstable)",
            )
        )
    skew = clock_skew(summaries)
    if skew is None:
        out.append(Check("Clock skew", "info", "one host, or no clock readings: not estimated"))
    else:
        seconds, error = skew
        out.append(
            Check(
                "Clock skew",
                "ok" if seconds - error <= CLOCK_SKEW_SEC else "warn",
                f"{seconds * 1000:.0f} ms ± {error * 1000:.0f} ms between hosts "
                f"(bound {CLOCK_SKEW_SEC * 1000:.0f} ms)",
            )
        )
    throttle = d.thermal_throttle
    if throttle is None or not throttle.detected:
        out.append(Check("Throttling", "ok", "none reported"))
    else:
        kinds = [k for k, on in (("power", throttle.power), ("thermal", throttle.thermal)) if on]
        out.append(
            Check(
                "Throttling",
                "warn",
                f"{' and '.join(kinds) or 'slowdown'} for {throttle.throttle_duration_sec:.1f} s",
            )
        )
    count = len(d.measurement_warnings)
    out.append(
        Check(
            "Warnings",
            "ok" if count == 0 else "warn",
            "none" if count == 0 else f"{count} (listed below)",
        )
    )
    return out


__all__ = ["Check", "Status", "gpu_label", "gpu_row_label", "validity_checks"]
