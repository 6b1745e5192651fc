"""Live figures of a running experiment, read off the states its logs have folded so far (pure).

The watcher holds a folded ``ProcessState`` per log of every active experiment; these figures
come from those states alone, so showing them reads no log again. The daemon writes them into
``status.json`` and exports them on ``/metrics`` (``daemon.exporter``); ``energy-ledger status
--watch`` shows them. The definitions (docs/metrics.md, "Live metrics"):

- **Energy so far** of a process: the energy counter's delta since ``window_started`` (to
  ``window_ended`` once the window closed, else to the last sampled counter reading) when both
  readings exist and the counter never went backwards; otherwise the trapezoid integral of the
  window's power readings so far (``ProcessState.power_integral_j``). No figure before the
  window starts.
- **Per GPU** (``core.energy.key_of``): processes that share a GPU read the same counter, so a
  GPU's energy is the largest of its processes' figures, never their sum, and its power the
  latest power reading among them (readings inside the window only).
- **Requests and output tokens**: those inside the window, of the processes that count their
  requests (``counts_requests``; under tensor parallelism one rank per group), as the result
  counts them.
- **Processes**: started (a ``process_started`` was read), finished (``process_finished``),
  failed (``process_failed``), and expected (the largest ``world_size`` declared).
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from energy_ledger.core.energy import key_of
from energy_ledger.core.state import ProcessState

__all__ = [
    "MAX_LIVE_EXPERIMENTS",
    "GpuFigures",
    "LiveFigures",
    "live_figures",
    "pick_live",
    "process_energy_j",
]

MAX_LIVE_EXPERIMENTS = 100
"""At most this many experiments get live figures (the most recently active ones), so that the
status file and the number of Prometheus series stay bounded however many runs are active."""


@dataclass(frozen=True, slots=True)
class GpuFigures:
    """One GPU's figures so far.

    Attributes:
        gpu: ``gpu:<uuid>``, or ``process:<index>`` for a process that named no GPU UUID (the
            key of the result's per-GPU list).
        energy_j: energy so far, or ``None`` before any of its processes opened its window.
        energy_source: ``counter``, ``power_integral`` or ``none``.
        power_w: the latest power reading inside a window, or ``None`` before the first.
        processes: the indices of the processes on this GPU.
    """

    gpu: str
    energy_j: float | None
    energy_source: str
    power_w: float | None
    processes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with fixed rounding (the same states give the same bytes)."""
        return {
            "gpu": self.gpu,
            "energy_j": _round(self.energy_j),
            "energy_source": self.energy_source,
            "power_w": _round(self.power_w),
            "processes": list(self.processes),
        }


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """An active experiment's figures so far (see the module docstring for each definition)."""

    experiment_id: str
    state: str
    stale: bool
    processes_expected: int | None
    processes_started: int
    processes_finished: int
    processes_failed: int
    requests: int
    output_tokens: int
    gpus: tuple[GpuFigures, ...]

    @property
    def energy_j(self) -> float | None:
        """The sum over its GPUs, or ``None`` when no GPU has a figure yet."""
        values = [g.energy_j for g in self.gpus if g.energy_j is not None]
        return sum(values) if values else None

    @property
    def power_w(self) -> float | None:
        """The sum of its GPUs' latest power readings, or ``None`` before the first."""
        values = [g.power_w for g in self.gpus if g.power_w is not None]
        return sum(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``status.json``'s ``live`` list, ``status --watch --json``)."""
        return {
            "experiment_id": self.experiment_id,
            "state": self.state,
            "stale": self.stale,
            "processes_expected": self.processes_expected,
            "processes_started": self.processes_started,
            "processes_finished": self.processes_finished,
            "processes_failed": self.processes_failed,
            "requests": self.requests,
            "output_tokens": self.output_tokens,
            "energy_j": _round(self.energy_j),
            "power_w": _round(self.power_w),
            "gpus": [g.to_dict() for g in self.gpus],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def process_energy_j(state: ProcessState) -> tuple[float | None, str]:
    """One process's energy so far in J and where it comes from (module docstring)."""
    if state.window_start_t is None:
        return None, "none"
    start = state.window_start_energy_mj
    end = state.window_end_energy_mj if state.window_end_t is not None else state.sample_energy_mj
    if start is not None and end is not None and end >= start and not state.counter_reset:
        return (end - start) / 1000.0, "counter"
    if state.power_samples >= 2:
        return state.power_integral_j, "power_integral"
    return 0.0, "none"


def _gpu(key: str, members: list[tuple[int, ProcessState]]) -> GpuFigures:
    best_j: float | None = None
    source = "none"
    power_w: float | None = None
    power_t = -float("inf")
    for _index, state in members:
        energy_j, how = process_energy_j(state)
        if energy_j is not None and (best_j is None or energy_j > best_j):
            best_j, source = energy_j, how
        last_w, last_t = state.prev_power_w, state.prev_power_t
        if last_w is not None and last_t is not None and last_t >= power_t:
            power_w, power_t = last_w, last_t
    return GpuFigures(key, best_j, source, power_w, tuple(i for i, _ in members))


def live_figures(
    experiment_id: str,
    state: str,
    processes: Mapping[int, ProcessState],
    *,
    stale: bool = False,
) -> LiveFigures:
    """The figures so far of one experiment, from its processes' folded states by index.

    Args:
        experiment_id: the experiment.
        state: its completeness state as the caller knows it (``pending``, ``failed``, ...).
        processes: the folded state of each process log read so far, by process index.
        stale: whether the caller counts it as stale (no new bytes for a long time).
    """
    groups: dict[str, list[tuple[int, ProcessState]]] = {}
    started = finished = failed = requests = output_tokens = 0
    expected: int | None = None
    for index in sorted(processes):
        ps = processes[index]
        info = ps.started
        groups.setdefault(key_of(info.gpu_uuid if info else None, index), []).append((index, ps))
        if info is not None:
            started += 1
            expected = max(expected or 0, info.world_size)
        finished += ps.finished
        failed += ps.failed_error is not None
        if info is None or info.counts_requests:
            requests += ps.requests
            output_tokens += ps.output_tokens
    gpus = tuple(_gpu(key, members) for key, members in sorted(groups.items()))
    return LiveFigures(
        experiment_id=experiment_id,
        state=state,
        stale=stale,
        processes_expected=expected,
        processes_started=started,
        processes_finished=finished,
        processes_failed=failed,
        requests=requests,
        output_tokens=output_tokens,
        gpus=gpus,
    )


def pick_live(
    last_activity_t: Mapping[str, float], limit: int = MAX_LIVE_EXPERIMENTS
) -> tuple[list[str], int]:
    """The experiments to show: the ``limit`` most recently active, sorted by id.

    Returns:
        The ids chosen, and how many were left out.
    """
    if len(last_activity_t) <= limit:
        return sorted(last_activity_t), 0
    # Newest first; among equal times the smaller id, so the choice is deterministic.
    chosen = heapq.nsmallest(limit, last_activity_t.items(), key=lambda item: (-item[1], item[0]))
    return sorted(map(operator.itemgetter(0), chosen)), len(last_activity_t) - limit
