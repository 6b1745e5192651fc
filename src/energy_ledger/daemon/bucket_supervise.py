"""The supervisor of one hook attempt on an object-store root: claims it, runs it, records it.

The bucket hook runner (``daemon.bucket_hooks``) starts it in a session of its own as
``python -P -m energy_ledger.daemon.bucket_supervise ROOT_URL EXPERIMENT_ID N TIMEOUT_SEC HOLDER
-- COMMAND...``, with the daemon's environment, which carries the store's credentials and the
hook's variables. It creates ``emissions/<id>@attempt-<n>.json`` once (its own identity and a
nonce inside), runs the command with ``supervise.run`` (output kept, killed with its process
group at the timeout) and creates ``@done.json`` or ``@fail-<n>.json``. Because it, not the
daemon, records the outcome, a daemon killed meanwhile loses nothing; the next daemon waits for
this process (see ``bucket_hooks`` for how long, on this host and on another).

Two things keep that wait sound. The timeout is counted from just before the claim was sent, so
the hook is dead by the timeout after the claim first became visible to anyone. The outcome is
put once (with the store client's own retries, which ``bucket_hooks.GRACE_SEC`` covers), never
again later.

Exit status 0: an outcome was recorded; 75: another process had created that attempt (nothing
was run); 1: the outcome could not be recorded, or the attempt not claimed (why on stderr);
2: bad usage.
"""

from __future__ import annotations

import sys
import time

from energy_ledger.daemon.bucket_hooks import create_marker, marker_key
from energy_ledger.daemon.supervise import (
    CLAIMED_ELSEWHERE,
    own_identity,
    run,
    stop_hook_on_sigterm,
)
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.objects import open_objects

__all__ = ["main"]

USAGE = "usage: bucket_supervise ROOT_URL EXPERIMENT_ID N TIMEOUT_SEC HOLDER -- COMMAND..."


def main(argv: list[str]) -> int:
    """Claim the attempt, run the hook, record the outcome; return the exit status."""
    if len(argv) < 7 or argv[5] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    root_url, experiment_id, attempt, timeout, holder = argv[:5]
    command = argv[6:]
    try:
        n, timeout_sec = int(attempt), float(timeout)
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        objects = open_objects(root_url)
        started = time.monotonic()
        claim = {
            "attempt": n,
            "holder": holder,
            "t": time.time(),
            "timeout_sec": timeout_sec,
            "supervisor": own_identity(),
        }
        if not create_marker(objects, marker_key(experiment_id, f"attempt-{n}"), claim):
            return CLAIMED_ELSEWHERE
    except LedgerError as exc:
        print(f"cannot claim {experiment_id} attempt {n}: {exc}", file=sys.stderr)
        return 1
    stop_hook_on_sigterm()
    left_sec = timeout_sec - (time.monotonic() - started)
    if left_sec > 0:
        error = run(command, left_sec)
    else:
        error = f"not run: claiming it took past the timeout of {timeout_sec:g} s"
    try:
        if error is None:
            done = {"attempt": n, "t": time.time()}
            create_marker(objects, marker_key(experiment_id, "done"), done)
        else:
            failure = {"attempt": n, "error": error, "t": time.time()}
            create_marker(objects, marker_key(experiment_id, f"fail-{n}"), failure)
    except LedgerError as exc:
        print(f"cannot record the outcome of {experiment_id} attempt {n}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
