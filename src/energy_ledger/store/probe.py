"""Whether a store really honours conditional writes, checked before relying on them.

Exactly-once emission from several daemons rests on two refusals: a second ``create`` of a key
that exists, and an ``if_match`` with an ETag that is no longer current. A store that quietly
ignores the conditions (an old S3-compatible gateway, a proxy that drops the headers) accepts
every write instead, and each daemon would believe it won. Nothing fails, so it has to be asked:
``probe_conditional_writes`` writes a throwaway object under a unique key and checks both
refusals and one acceptance, then removes it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import NoReturn

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.objectstore import ObjectStore, PreconditionFailed

logger = logging.getLogger(__name__)

PROBE_PREFIX = ".energy-ledger/probe-"
"""Probe objects are ``<PROBE_PREFIX><uuid4 hex>``: unique per call, so probes never meet."""


class ConditionalWritesUnsupported(LedgerError):
    """The store accepted a write whose condition did not hold."""


def probe_conditional_writes(store: ObjectStore) -> None:
    """Check that ``store`` refuses a lost ``create`` and a stale ``if_match``.

    Four writes under one fresh key: a ``create`` (accepted), a second ``create`` (must be
    refused), an ``if_match`` with an ETag the object never had (must be refused), one with
    its current ETag (must be accepted), and one with the ETag it had before that (must be
    refused). Each body is different, so the ETags differ on stores whose ETag is the MD5 of
    the body. The probe object is removed whatever the outcome.

    Raises:
        ConditionalWritesUnsupported: a condition was ignored (the message says which, and what
            it means for several daemons).
        PreconditionFailed: the right ETag was refused.
        LedgerError: the store could not be written at all.
    """
    token = uuid.uuid4().hex
    key = f"{PROBE_PREFIX}{token}"

    def body(step: int) -> bytes:
        return f"energy-ledger conditional-write probe {token} step {step}\n".encode()

    try:
        first = store.put(key, body(1), create=True)
        if _accepted(lambda: store.put(key, body(2), create=True)):
            _unsupported(store, "a second create of an existing key was accepted (If-None-Match)")
        wrong = f'"{uuid.uuid4().hex}"'
        if _accepted(lambda: store.put(key, body(3), if_match=wrong)):
            _unsupported(store, "a write with an ETag the object never had was accepted (If-Match)")
        try:
            store.put(key, body(4), if_match=first.etag)
        except PreconditionFailed as exc:
            raise PreconditionFailed(
                f"{store.url} refused a write with the object's current ETag, so its "
                f"If-Match cannot be used to update anything: {exc}"
            ) from exc
        if _accepted(lambda: store.put(key, body(5), if_match=first.etag)):
            _unsupported(store, "a write with a replaced ETag was accepted (If-Match)")
    finally:
        try:
            store.delete(key)
        except LedgerError as exc:
            logger.warning("could not remove the probe object %s: %s", key, exc)


def _accepted(write: Callable[[], object]) -> bool:
    """True when the conditional ``write`` went through, False when it was refused."""
    try:
        write()
    except PreconditionFailed:
        return False
    return True


def _unsupported(store: ObjectStore, what: str) -> NoReturn:
    raise ConditionalWritesUnsupported(
        f"{store.url} does not honour conditional writes: {what}. energy-ledger relies on "
        "them to emit each experiment exactly once; on this store several daemons could both "
        "emit the same experiment. Use a store that refuses them (AWS S3, GCS, Azure Blob, "
        "MinIO, SeaweedFS; see docs/object-storage.md)."
    )


__all__ = ["PROBE_PREFIX", "ConditionalWritesUnsupported", "probe_conditional_writes"]
