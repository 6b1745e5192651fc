"""Energy per physical GPU and its baseline adjustment (pure).

Processes that share a GPU (several ranks on one device, MIG instances of one parent) read the
same energy counter, so energy is attributed per physical GPU, never summed per process. The
definitions are argued in docs/metrics.md ("Energy per physical GPU"):

- A GPU is named by its UUID. A process that names none is its own group: it is never merged
  with another on ``gpu_id`` alone, because under Slurm or ``CUDA_VISIBLE_DEVICES`` isolation
  every process says ``gpu_id`` 0.
- The windows of a GPU's processes are merged into disjoint intervals. Over each interval the
  energy is the counter at its end minus the counter at its start (the readings of the processes
  whose windows open and close it); the gaps between intervals are left out.
- Where a process of an interval has no counter readings, the interval's energy is the largest
  figure among its processes, and it covers only that process's window.
- The baseline is subtracted over exactly the seconds the energy covers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from energy_ledger.core.process import ProcessSummary


@dataclass(frozen=True, slots=True)
class GpuEnergy:
    """Energy attributed to one physical GPU (or to one process whose GPU is unknown).

    Attributes:
        key: ``gpu:<uuid>``, or ``process:<index>`` when the process named no UUID.
        covered_sec: seconds the energy covers (the union of the windows, or less, see above).
        intervals: the ``(start_t, end_t)`` intervals the energy covers.
        source: ``counter``, ``power_integral``, ``mixed`` or ``none``.
        baseline_power_w: mean idle power the GPU's processes measured.
        adjusted_j: ``max(0, energy_j - baseline_power_w * covered_sec)``.
        avg_power_w: ``energy_j / covered_sec``.
        power_limit_w: the GPU's power limit, when its environment snapshot gives it.
    """

    key: str
    uuid: str | None
    hostname: str | None
    process_indices: tuple[int, ...]
    energy_j: float
    source: str
    covered_sec: float
    intervals: tuple[tuple[float, float], ...]
    baseline_power_w: float | None
    adjusted_j: float | None
    avg_power_w: float | None
    power_limit_w: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``aggregation.gpus``."""
        return {
            "key": self.key,
            "uuid": self.uuid,
            "hostname": self.hostname,
            "process_indices": list(self.process_indices),
            "energy_j": self.energy_j,
            "energy_source": self.source,
            "span_sec": self.covered_sec,
            "intervals": [list(i) for i in self.intervals],
            "baseline_power_w": self.baseline_power_w,
            "adjusted_j": self.adjusted_j,
            "avg_power_w": self.avg_power_w,
            "power_limit_w": self.power_limit_w,
        }


def gpu_key(process: ProcessSummary) -> str:
    """The group a process's energy belongs to: its GPU's UUID, else the process itself."""
    return key_of(process.gpu_uuid, process.process_index)


def key_of(gpu_uuid: str | None, process_index: int) -> str:
    """``gpu:<uuid>``, or ``process:<index>`` for a process that named no GPU (``gpu_key``'s
    rule, for callers that hold the ``process_started`` fields rather than a summary)."""
    return f"gpu:{gpu_uuid}" if gpu_uuid else f"process:{process_index}"


def gpu_name(key: str) -> str:
    """A group key as the words a warning uses: ``GPU <uuid>`` or ``process <i>'s GPU``."""
    kind, _, name = key.partition(":")
    return f"GPU {name}" if kind == "gpu" else f"process {name}'s GPU"


def group_by_gpu(
    processes: Sequence[ProcessSummary], warnings: list[str]
) -> dict[str, list[ProcessSummary]]:
    """Processes grouped by ``gpu_key``, in first-appearance order; warnings are appended."""
    groups: dict[str, list[ProcessSummary]] = {}
    for p in processes:
        groups.setdefault(gpu_key(p), []).append(p)
    unnamed = [p.process_index for p in processes if not p.gpu_uuid]
    if unnamed:
        warnings.append(
            f"processes {unnamed} name no GPU UUID: their energy is summed per process; "
            "if any of them shared a GPU, that GPU's energy is counted more than once"
        )
    for key, members in groups.items():
        if len(members) > 1:
            warnings.append(
                f"processes {[m.process_index for m in members]} share {gpu_name(key)}; "
                "its energy is counted once"
            )
    return groups


Window = tuple[float, float, ProcessSummary]


def _components(members: list[ProcessSummary]) -> list[list[Window]]:
    """The processes' windows, grouped into runs that overlap or touch, in time order."""
    windows = sorted(
        (
            (m.window_start_t, m.window_end_t, m)
            for m in members
            if m.window_start_t is not None and m.window_end_t is not None
        ),
        key=lambda w: (w[0], w[2].process_index),
    )
    out: list[list[Window]] = []
    end = -math.inf
    for w in windows:
        if out and w[0] <= end:
            out[-1].append(w)
            end = max(end, w[1])
        else:
            out.append([w])
            end = w[1]
    return out


def _counter_span_j(run: list[Window]) -> float | None:
    """Counter energy over a run of overlapping windows, or ``None`` if it cannot be read.

    The counter at the run's start is read by the process whose window opens it, the counter
    at its end by the one whose window closes it; both read the same physical counter.
    """
    if not all(w[2].energy_source == "counter" for w in run):
        return None
    # Ties in time are broken by the reading: the counter only grows, so of two readings at
    # one moment the smaller start and the larger end bound the interval.
    opener = min(run, key=lambda w: (w[0], w[2].counter_start_mj or 0.0))[2]
    closer = max(run, key=lambda w: (w[1], w[2].counter_end_mj or 0.0))[2]
    start, end = opener.counter_start_mj, closer.counter_end_mj
    if start is None or end is None or end < start:
        return None
    return (end - start) / 1000.0


def gpu_energy(key: str, members: list[ProcessSummary], warnings: list[str]) -> GpuEnergy:
    """The energy of GPU ``key`` from the processes that used it; warnings are appended.

    See the module docstring for the definition.
    """
    energy_parts: list[float] = []
    intervals: list[tuple[float, float]] = []
    sources: set[str] = set()
    for run in _components(members):
        lo, hi = run[0][0], max(w[1] for w in run)
        counted = _counter_span_j(run)
        if counted is not None:
            energy_parts.append(counted)
            intervals.append((lo, hi))
            sources.add("counter")
            continue
        best = max(run, key=lambda w: (w[2].energy_j, w[1] - w[0], -w[2].process_index))
        energy_parts.append(best[2].energy_j)
        intervals.append((best[0], best[1]))
        sources.add(best[2].energy_source)
        if len(run) > 1 and all(w[2].energy_source == "counter" for w in run):
            warnings.append(
                f"{gpu_name(key)}: its processes' counter readings disagree with their order in "
                "time (a counter reset, or different GPUs under one UUID); energy taken from "
                f"process {best[2].process_index} alone"
            )
        elif (best[0], best[1]) != (lo, hi):
            warnings.append(
                f"{gpu_name(key)}: no counter readings for t={lo:.3f}..{hi:.3f}; energy taken "
                f"from process {best[2].process_index}, covering {best[1] - best[0]:.3f} s "
                f"of the {hi - lo:.3f} s its processes measured"
            )
    if len(intervals) > 1:
        gap = sum(b[0] - a[1] for a, b in itertools.pairwise(intervals))
        warnings.append(
            f"{gpu_name(key)}: its processes' windows leave {gap:.3f} s of gaps, left out of its "
            "energy and baseline"
        )
    covered = math.fsum(b - a for a, b in intervals)
    energy_j = math.fsum(energy_parts)
    baselines = [m.baseline_power_w for m in members if m.baseline_power_w is not None]
    baseline_w = math.fsum(baselines) / len(baselines) if baselines else None
    limits = [m.power_limit_w for m in members if m.power_limit_w is not None]
    first = members[0]
    return GpuEnergy(
        key=key,
        uuid=first.gpu_uuid,
        hostname=first.hostname,
        process_indices=tuple(m.process_index for m in members),
        energy_j=energy_j,
        source=(sources.pop() if len(sources) == 1 else "mixed") if sources else "none",
        covered_sec=covered,
        intervals=tuple(intervals),
        baseline_power_w=baseline_w,
        adjusted_j=max(0.0, energy_j - baseline_w * covered) if baseline_w is not None else None,
        avg_power_w=energy_j / covered if covered > 0 else None,
        power_limit_w=min(limits) if limits else None,
    )
