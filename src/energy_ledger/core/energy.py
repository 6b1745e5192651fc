"""Energy per physical GPU and its baseline adjustment (pure).

Processes that share a GPU (tensor parallel on MIG, several ranks on one device) read the same
energy counter, so energy is attributed per physical GPU, never summed per process. The
definitions are argued in docs/metrics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from energy_ledger.core.process import ProcessSummary


@dataclass(frozen=True, slots=True)
class GpuEnergy:
    """Energy attributed to one physical GPU."""

    key: str
    uuid: str | None
    hostname: str | None
    process_indices: tuple[int, ...]
    energy_j: float
    source: str
    span_sec: float
    baseline_power_w: float | None
    adjusted_j: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``aggregation.gpus``."""
        return {
            "key": self.key,
            "uuid": self.uuid,
            "hostname": self.hostname,
            "process_indices": list(self.process_indices),
            "energy_j": self.energy_j,
            "energy_source": self.source,
            "span_sec": self.span_sec,
            "baseline_power_w": self.baseline_power_w,
            "adjusted_j": self.adjusted_j,
        }


def gpu_energy(key: str, members: list[ProcessSummary], warnings: list[str]) -> GpuEnergy:
    """The energy of the GPU ``key`` from the processes that used it; warnings are appended.

    With a counter reading on every process: ``(max end counter - min start counter) / 1000``;
    otherwise the largest per-process figure. The baseline is the mean of the processes'
    baseline power, subtracted over the GPU's window span.
    """
    indices = tuple(m.process_index for m in members)
    windows = [m for m in members if m.has_window]
    span = (
        max(cast(float, m.window_end_t) for m in windows)
        - min(cast(float, m.window_start_t) for m in windows)
        if windows
        else 0.0
    )
    if all(m.energy_source == "counter" for m in members):
        start = min(cast(float, m.counter_start_mj) for m in members)
        end = max(cast(float, m.counter_end_mj) for m in members)
        energy_j, source = (end - start) / 1000.0, "counter"
    else:
        energy_j = max(m.energy_j for m in members)
        sources = sorted({m.energy_source for m in members})
        source = sources[0] if len(sources) == 1 else "mixed"
    if len(members) > 1:
        warnings.append(
            f"Duplicate GPU IDs: processes {list(indices)} share GPU {key}; "
            "its energy is counted once"
        )
    baselines = [m.baseline_power_w for m in members if m.baseline_power_w is not None]
    baseline_w = math.fsum(baselines) / len(baselines) if baselines else None
    adjusted = max(0.0, energy_j - baseline_w * span) if baseline_w is not None else None
    first = members[0]
    return GpuEnergy(
        key=key,
        uuid=first.gpu_uuid,
        hostname=first.hostname,
        process_indices=indices,
        energy_j=energy_j,
        source=source,
        span_sec=span,
        baseline_power_w=baseline_w,
        adjusted_j=adjusted,
    )
