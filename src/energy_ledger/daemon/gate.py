"""The emission gate: the one place that decides whether this daemon emits an experiment.

Writing a result is idempotent (the bytes are deterministic and written only when they differ),
so what must happen exactly once is the *emission*: the record, the "emitted" log line and the
hook. The gate reads the record from disk (never from memory), checks the lease on disk right
before, and creates the record exclusively; whoever loses any of these steps emits nothing.
"""

from __future__ import annotations

from energy_ledger.daemon.lease import Lease
from energy_ledger.daemon.records import EmissionRecord, Kind, StateStore, emission_key

__all__ = ["claim_emission"]


def claim_emission(
    store: StateStore, lease: Lease, experiment_id: str, kind: Kind, *, hook: bool
) -> tuple[EmissionRecord, bool]:
    """Claim the emission of a result already written; return its record and whether it is ours.

    Not ours means another daemon, or an earlier life of this one, emitted it first: the caller
    logs no emission and runs no hook.

    Raises:
        LeaseLostError: another daemon holds the root now (nothing was claimed).
        LedgerError: the record or the lease could not be read or written (try again later).
    """
    holder = store.read(emission_key(experiment_id, kind))
    if holder is not None:
        return holder, False
    lease.fence()
    fresh = EmissionRecord.new(
        experiment_id, kind, hook=hook, host=lease.info.host, lease_token=lease.token
    )
    holder = store.claim(fresh)
    return holder, holder is fresh
