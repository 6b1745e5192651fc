"""The watcher's durable state: which experiments were emitted and where each hook stands.

Format (version 1) under the state folder (``<root>/.energy-ledger`` unless configured)::

    emitted/<experiment_id>.json   one record per emitted experiment
    status.json                    the daemon's view, see ``energy_ledger.daemon.status``
    lease.json                     see ``energy_ledger.daemon.lease``

A record is ``{"v": 1, "experiment_id", "kind": "complete"|"partial", "result": <path>,
"emitted_t", "hook": {"state", "attempts", "error", "updated_t"}}`` where the hook state is
``none`` (no ``--on-emit``), ``pending`` (not started), ``running`` (started, not known to have
finished), ``done`` or ``failed`` (every retry failed). One small file per experiment, each replaced
atomically, was chosen over an append-only journal: a record is rewritten in place as its hook
advances, a torn write can never corrupt another experiment's record, and start-up reads 1,000
records in milliseconds. A hook is recorded as ``running`` *before* it starts and ``done`` after
it exits, so after a crash only a hook that was running at that moment is run again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from energy_ledger.store.atomic import write_atomic
from energy_ledger.store.layout import ResultsLayout, is_valid_experiment_id

logger = logging.getLogger(__name__)

STATE_VERSION = 1
EMITTED_DIR = "emitted"

HookState = Literal["none", "pending", "running", "done", "failed"]
Kind = Literal["complete", "partial"]


@dataclass(slots=True)
class EmissionRecord:
    """One emitted experiment and the progress of its hook."""

    experiment_id: str
    kind: Kind
    result: str
    emitted_t: float
    hook_state: HookState = "none"
    hook_attempts: int = 0
    hook_error: str | None = None
    hook_updated_t: float = 0.0

    def to_bytes(self) -> bytes:
        """The record file's content, in a fixed key order."""
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "experiment_id": self.experiment_id,
                "kind": self.kind,
                "result": self.result,
                "emitted_t": self.emitted_t,
                "hook": {
                    "state": self.hook_state,
                    "attempts": self.hook_attempts,
                    "error": self.hook_error,
                    "updated_t": self.hook_updated_t,
                },
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EmissionRecord:
        """Parse a record; raise ``ValueError`` when it is not one."""
        obj: Any = orjson.loads(data)
        if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION:
            raise ValueError("not a version-1 emission record")
        hook = obj.get("hook") or {}
        kind = obj.get("kind")
        state = hook.get("state", "none")
        if kind not in ("complete", "partial") or state not in (
            "none",
            "pending",
            "running",
            "done",
            "failed",
        ):
            raise ValueError("bad kind or hook state")
        return cls(
            experiment_id=str(obj["experiment_id"]),
            kind=kind,
            result=str(obj["result"]),
            emitted_t=float(obj["emitted_t"]),
            hook_state=state,
            hook_attempts=int(hook.get("attempts", 0)),
            hook_error=hook.get("error"),
            hook_updated_t=float(hook.get("updated_t", 0.0)),
        )


@dataclass(slots=True)
class StateStore:
    """The emission records of one state folder, in memory and on disk (thread-safe)."""

    state_dir: Path
    records: dict[str, EmissionRecord] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def emitted_dir(self) -> Path:
        """``<state_dir>/emitted``."""
        return self.state_dir / EMITTED_DIR

    def load(self) -> list[str]:
        """Read every record; return the problems found (unreadable records are ignored)."""
        problems: list[str] = []
        self.emitted_dir.mkdir(parents=True, exist_ok=True)
        with os.scandir(self.emitted_dir) as it:
            names = [e.name for e in it if e.name.endswith(".json")]
        for name in names:
            experiment_id = name[: -len(".json")]
            if not is_valid_experiment_id(experiment_id):
                continue
            try:
                record = EmissionRecord.from_bytes((self.emitted_dir / name).read_bytes())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"{self.emitted_dir / name}: unreadable record ({exc}); ignored")
                continue
            self.records[experiment_id] = record
        return problems

    def get(self, experiment_id: str) -> EmissionRecord | None:
        """The record of an experiment, if it was emitted."""
        with self._lock:
            return self.records.get(experiment_id)

    def _save(self, record: EmissionRecord) -> None:
        write_atomic(self.emitted_dir / f"{record.experiment_id}.json", record.to_bytes())

    def record_emission(
        self, experiment_id: str, kind: Kind, result: Path, *, with_hook: bool
    ) -> EmissionRecord:
        """Record that ``experiment_id`` was emitted (its hook, if any, still to run)."""
        now = time.time()
        record = EmissionRecord(
            experiment_id,
            kind,
            str(result),
            now,
            hook_state="pending" if with_hook else "none",
            hook_updated_t=now,
        )
        with self._lock:
            self._save(record)
            self.records[experiment_id] = record
        return record

    def set_hook(
        self,
        experiment_id: str,
        state: HookState,
        *,
        error: str | None = None,
        attempt: bool = False,
    ) -> EmissionRecord:
        """Move a record's hook to ``state`` (durably, before returning)."""
        with self._lock:
            record = self.records[experiment_id]
            record.hook_state = state
            record.hook_error = error
            record.hook_updated_t = time.time()
            if attempt:
                record.hook_attempts += 1
            self._save(record)
            return record

    def hook_counts(self) -> dict[str, Any]:
        """How many hooks are pending/running/done, and which failed."""
        with self._lock:
            counts = {"pending": 0, "running": 0, "done": 0}
            failed = []
            for record in self.records.values():
                if record.hook_state in counts:
                    counts[record.hook_state] += 1
                elif record.hook_state == "failed":
                    failed.append(
                        {"experiment_id": record.experiment_id, "error": record.hook_error}
                    )
        return {**counts, "failed": sorted(failed, key=lambda f: str(f["experiment_id"]))}


def state_dir_for(root: str | os.PathLike[str], state_dir: Path | None = None) -> Path:
    """The state folder of ``root``: ``state_dir`` when given, else ``<root>/.energy-ledger``."""
    return Path(os.path.abspath(state_dir)) if state_dir else ResultsLayout.at(root).state_dir
