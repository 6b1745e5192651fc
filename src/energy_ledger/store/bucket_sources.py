"""What a bucket replay derived last time, so the next one reads only what changed.

A folder root keeps ``aggregated/.results.csv.sources`` (``store.table``): each result file's
identity and a digest of its experiment folder's listing. A bucket root keeps an object of the
same key, with what a bucket offers instead of inodes and mtimes: per experiment, a SHA-256 of
its listing (every key, size and ETag under ``raw/<id>/``), the ETag of the result object the
replay wrote or found, and that result's CSV row; and the energy-ledger version that derived
them.

A replay skips an experiment, reading none of its segments, when all of these are equal: the
version, the listing digest, and the result's ETag in this replay's listing of ``aggregated/``
(and no partial result lies beside it). Each is an exact equality, decided by the store's own
ETags, never a comparison of times: segments and markers are created once and never changed,
so an equal listing means equal inputs, and an equal ETag means the very result object that
was derived from them. The object is a cache: it is replaced by compare-and-swap after each
replay, an unreadable one is ignored (with a warning), and one that cannot be written costs
only the next replay's time. ``replay --force`` ignores it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from energy_ledger._version import __version__
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.bucket_results import OUTPUTS_PREFIX, put_derived
from energy_ledger.store.objectstore import ObjectInfo, ObjectNotFound, ObjectStore
from energy_ledger.store.table import SOURCES_NAME

__all__ = ["SOURCES_KEY", "Source", "listing_digest", "read_bucket_sources", "write_bucket_sources"]

logger = logging.getLogger(__name__)

SOURCES_KEY = f"{OUTPUTS_PREFIX}{SOURCES_NAME}"
SOURCES_VERSION = 1
MAX_SOURCES_BYTES = 256 << 20
"""The largest sources object read (a row is about 1 KB: 10,000 experiments are 10 MB)."""


@dataclass(frozen=True, slots=True)
class Source:
    """What one experiment's result was derived from.

    Attributes:
        inputs: ``listing_digest`` of its objects under ``raw/<id>/``.
        result_etag: the ETag of ``aggregated/<id>.json`` as written or found.
        row: its CSV row.
    """

    inputs: str
    result_etag: str
    row: tuple[str, ...]


def listing_digest(listing: Sequence[ObjectInfo]) -> str:
    """SHA-256 of a listing's keys, sizes and ETags, in key order."""
    digest = hashlib.sha256()
    for info in sorted(listing, key=lambda i: i.key):
        digest.update(orjson.dumps([info.key, info.size, info.etag]))
        digest.update(b"\n")
    return digest.hexdigest()


def read_bucket_sources(objects: ObjectStore) -> dict[str, Source]:
    """The sources a replay of this version wrote, by experiment id; empty when there are none,
    when another version wrote them, or when they cannot be read (logged)."""
    try:
        info = objects.head(SOURCES_KEY)
        if info is None:
            return {}
        if info.size > MAX_SOURCES_BYTES:
            raise ValueError(f"larger than {MAX_SOURCES_BYTES:,} bytes")
        obj: Any = orjson.loads(objects.get(SOURCES_KEY))
        if not isinstance(obj, dict) or obj.get("v") != SOURCES_VERSION:
            raise ValueError("not a sources object of this format")
        if obj.get("version") != __version__:
            return {}  # another version may derive other bytes: read everything again
        return {
            str(experiment_id): Source(str(e["inputs"]), str(e["etag"]), tuple(map(str, e["row"])))
            for experiment_id, e in obj["experiments"].items()
        }
    except ObjectNotFound:
        return {}
    except (LedgerError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning(
            "%s/%s is unusable (%s); every experiment is read again",
            objects.url,
            SOURCES_KEY,
            exc,
        )
        return {}


def write_bucket_sources(objects: ObjectStore, sources: Mapping[str, Source]) -> None:
    """Replace the sources object by compare-and-swap; a failure is logged, never raised."""
    data = orjson.dumps(
        {
            "v": SOURCES_VERSION,
            "version": __version__,
            "experiments": {
                experiment_id: {"inputs": s.inputs, "etag": s.result_etag, "row": list(s.row)}
                for experiment_id, s in sources.items()
            },
        },
        option=orjson.OPT_SORT_KEYS,
    )
    try:
        put_derived(objects, SOURCES_KEY, data, replace=True)
    except LedgerError as exc:
        logger.warning("cannot write %s/%s (the next replay reads everything): %s",
                       objects.url, SOURCES_KEY, exc)  # fmt: skip
