"""What ``/metrics`` shows for a daemon on a bucket root (``watch s3://... --metrics-port``).

The same ``MetricsSnapshot`` a folder daemon publishes (``daemon.metrics``), built from what the
bucket loop holds instead of a status view. What differs, and why:

- **States count what this daemon knows of**: every experiment it holds a claim on (by its
  last scan), those it retired (failed, invalid, stale), and every emitted one it has settled
  or is seeing a hook through for. Experiments other daemons hold are theirs to count, so the
  sum over the daemons of one root counts each experiment in progress once; the emitted count
  is the root's in each (every daemon settles every emitted experiment at its full polls).
- **``claims_held``** instead of ``lease_held``: a bucket root has no lease.
- **Lag** is the duration of the last poll: a change listed by it was seen at most that long
  after the poll began.
- **Live figures** are those of the experiments it holds, from their folded segment states.
"""

from __future__ import annotations

from collections.abc import Mapping

from energy_ledger.core.live import live_figures, pick_live
from energy_ledger.daemon.active import STATES
from energy_ledger.daemon.metrics import LoopCounters, MetricsSnapshot, Tailed

__all__ = ["HeldView", "bucket_snapshot", "bucket_state_counts"]

HeldView = tuple[str, bool, float, Mapping[int, Tailed]]
"""One held experiment as the snapshot needs it: (state, emitted, changed_t, tails)."""


def bucket_state_counts(
    held_states: Mapping[str, tuple[str, bool]],
    retired_states: Mapping[str, str],
    settled: int,
) -> dict[str, int]:
    """Experiments by state, each counted once (``status.json``'s ``counts``' keys).

    Args:
        held_states: per held experiment, its last scan's state and whether it is emitted.
        retired_states: per retired experiment, ``failed``, ``invalid`` or ``stale``.
        settled: emitted experiments no longer held.
    """
    counts = dict.fromkeys(STATES, 0)
    counts["emitted"] = settled
    for state, emitted in held_states.values():
        if emitted:
            counts["emitted"] += 1
        else:
            counts[state if state in counts and state != "emitted" else "pending"] += 1
    for state in retired_states.values():
        counts[state if state in counts else "pending"] += 1
    return counts


def bucket_snapshot(
    counters: LoopCounters,
    held: Mapping[str, HeldView],
    retired_states: Mapping[str, str],
    settled: int,
    *,
    host: str,
    poll_sec: float,
    hook_runs: int,
    hook_failures: int,
) -> MetricsSnapshot:
    """The snapshot a scrape shows after a poll of a bucket root."""
    active = {e: view for e, view in held.items() if not view[1]}
    chosen, left_out = pick_live({e: view[2] for e, view in active.items()})
    live = []
    for experiment_id in chosen:
        state, _, _, tails = active[experiment_id]
        states = {i: tail.cursor.state for i, tail in tails.items()}
        live.append(live_figures(experiment_id, "pending" if state == "new" else state, states))
    counts = bucket_state_counts(
        {e: (view[0], view[1]) for e, view in held.items()}, retired_states, settled
    )
    status = {"lag_sec": poll_sec, "counts": counts, "live_left_out": left_out}
    return counters.snapshot(
        status,
        live,
        host=host,
        lease_held=False,
        hook_runs=hook_runs,
        hook_failures=hook_failures,
        claims_held=len(held),
    )
