"""Is the measurement strong enough to trust? Warnings, never blockers (pure).

Each check names a condition under which a published figure would be weak, with the threshold
the field uses where one exists; docs/metrics.md ("Measurement validity") argues each one. The
warnings go into ``measurement_warnings`` of the result, and ``validate``/``status`` print them
as reasons. None of them stops an experiment from being emitted: the numbers are still the
best the logs allow, and the reader decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from energy_ledger.core.energy import GpuEnergy, gpu_name
from energy_ledger.core.process import ProcessSummary

COUNTER_UPDATE_SEC: Final = 0.1
"""How often NVML's energy counter changes (measured: about every 100 ms on an H100)."""
MIN_WINDOW_SEC: Final = 10 * COUNTER_UPDATE_SEC
"""A window shorter than ten counter updates: a single update more or less is over 10 %."""
STEADY_STATE_WARN_SEC: Final = 30.0
"""ML.ENERGY's shortest steady-state window it reports without a warning."""
STEADY_STATE_UNSTABLE_SEC: Final = 20.0
"""Below this ML.ENERGY calls a steady-state measurement unstable."""
POWER_LIMIT_TOLERANCE: Final = 0.01
"""Average power may exceed the power limit by this fraction (sensor noise) before a warning."""
CLOCK_SKEW_SEC: Final = 0.4
"""MLPerf's time-sync bound between hosts (its checker tolerates 800 ms)."""
CLOCK_STEP_SEC: Final = 0.4
"""A wall clock that moved this much against the monotonic clock during a run was stepped."""


KINDS: Final = (
    "energy_unreliable",
    "steady_state_unstable",
    "steady_state_short",
    "power_below_idle",
    "power_above_limit",
    "clock_skew",
    "clock_stepped",
)
"""The first word of each validity warning, so that ``validate`` and ``status`` can pick them
out of ``measurement_warnings``."""


def is_validity_warning(text: str) -> bool:
    """True for a warning this module wrote (by its first word)."""
    return text.split(":", 1)[0] in KINDS


def validity_warnings(
    processes: Sequence[ProcessSummary], gpus: Sequence[GpuEnergy], methodology: str
) -> list[str]:
    """Every validity warning for an experiment, in a fixed order (see the module docstring)."""
    out: list[str] = []
    for p in processes:
        if p.has_window and p.inference_time_sec < MIN_WINDOW_SEC:
            out.append(
                f"energy_unreliable: process {p.process_index}'s window is "
                f"{p.inference_time_sec:.3f} s, shorter than {MIN_WINDOW_SEC:.1f} s (ten "
                f"{COUNTER_UPDATE_SEC * 1000:.0f} ms energy-counter updates)"
            )
    if methodology == "steady_state":
        measured = [g for g in gpus if g.covered_sec > 0]
        if measured:
            shortest = min(measured, key=lambda g: g.covered_sec)
            seconds = shortest.covered_sec
            if seconds < STEADY_STATE_UNSTABLE_SEC:
                out.append(
                    f"steady_state_unstable: {gpu_name(shortest.key)} measured {seconds:.1f} s "
                    f"of steady state, under {STEADY_STATE_UNSTABLE_SEC:.0f} s"
                )
            elif seconds < STEADY_STATE_WARN_SEC:
                out.append(
                    f"steady_state_short: {gpu_name(shortest.key)} measured {seconds:.1f} s of "
                    f"steady state, under {STEADY_STATE_WARN_SEC:.0f} s"
                )
    for g in gpus:
        if g.avg_power_w is None:
            continue
        if g.baseline_power_w is not None and g.avg_power_w < g.baseline_power_w:
            out.append(
                f"power_below_idle: {gpu_name(g.key)} averaged {g.avg_power_w:.1f} W, below its "
                f"idle baseline of {g.baseline_power_w:.1f} W (energy or baseline is wrong)"
            )
        limit = g.power_limit_w
        if limit is not None and g.avg_power_w > limit * (1 + POWER_LIMIT_TOLERANCE):
            out.append(
                f"power_above_limit: {gpu_name(g.key)} averaged {g.avg_power_w:.1f} W, above "
                f"its power limit of {limit:.1f} W (energy is wrong, or two GPUs are mixed)"
            )
    out.extend(_clock_warnings(processes))
    return out


def _clock_warnings(processes: Sequence[ProcessSummary]) -> list[str]:
    """Skew between hosts, and wall clocks stepped during a run."""
    out: list[str] = []
    for p in processes:
        if p.wall_step_sec > CLOCK_STEP_SEC:
            out.append(
                f"clock_stepped: process {p.process_index}'s wall clock moved "
                f"{p.wall_step_sec:.3f} s against its monotonic clock during the run"
            )
    hosts = host_offsets(processes)
    if len(hosts) < 2:
        return out
    skew, error = _spread(hosts)
    if skew - error > CLOCK_SKEW_SEC:
        offsets = ", ".join(f"{h} {hosts[h][0]:+.3f} s" for h in sorted(hosts))
        out.append(
            f"clock_skew: the hosts' clocks disagree by {skew:.3f} s (+/- {error:.3f} s), "
            f"more than {CLOCK_SKEW_SEC * 1000:.0f} ms; offsets from the results filesystem's "
            f"clock: {offsets}. Windows on different hosts are compared on skewed clocks"
        )
    return out


def host_offsets(processes: Sequence[ProcessSummary]) -> dict[str, tuple[float, float]]:
    """Each host's clock minus the results filesystem's, with its error bound, in seconds.

    A host with several processes takes the reading with the smallest error.
    """
    hosts: dict[str, tuple[float, float]] = {}
    for p in processes:
        if p.clock_offset_sec is None or not p.hostname:
            continue
        error = p.clock_offset_error_sec or 0.0
        known = hosts.get(p.hostname)
        if known is None or error < known[1]:
            hosts[p.hostname] = (p.clock_offset_sec, error)
    return hosts


def _spread(hosts: dict[str, tuple[float, float]]) -> tuple[float, float]:
    ahead = max(hosts, key=lambda h: (hosts[h][0], h))
    behind = min(hosts, key=lambda h: (hosts[h][0], h))
    return hosts[ahead][0] - hosts[behind][0], hosts[ahead][1] + hosts[behind][1]


def clock_skew(processes: Sequence[ProcessSummary]) -> tuple[float, float] | None:
    """The largest disagreement between the hosts' clocks and its error bound, in seconds.

    ``None`` with fewer than two hosts that read their clock offset (nothing to compare).
    """
    hosts = host_offsets(processes)
    return _spread(hosts) if len(hosts) >= 2 else None
