"""The watcher's durable state: which experiments were emitted, and how far each hook got.

Format (version 2) under the state folder (``<root>/.energy-ledger`` unless configured)::

    emitted/<key>.json          the emission record, created once, never rewritten
    emitted/<key>@attempt-<n>   hook attempt n was started (created before the command runs)
    emitted/<key>@fail-<n>      hook attempt n exited non-zero or timed out (its error inside)
    emitted/<key>@done          the hook finished successfully
    emitted/<key>@failed        the hook was given up (why inside)
    status.json, lease.json, heartbeat.<token>.json   see ``status`` and ``lease``

``<key>`` is the experiment id for a complete result and ``<id>@partial`` for a partial one (an
experiment id never holds ``@``). A record is ``{"v": 2, "emission_id", "experiment_id", "kind",
"result", "emitted_t", "host", "lease_token", "hook"}``: ``result`` is relative to the root (a
host that mounts the root elsewhere finds the same file), ``hook`` says whether an ``--on-emit``
hook is owed for it, and ``emission_id`` is the stable idempotency key handed to that hook.

Every one of these files is created with :func:`~energy_ledger.daemon.claims.create_once`, and
none is ever rewritten, so the state only moves forward: two daemons racing (one of them paused
past its lease, say) can never both create a record, never both start attempt *n*, and can never
turn ``done`` back into "not done". Reading the record *from disk* right before an emission, and
the markers right before each hook attempt, is what makes that the gate. Version 1 records (one
rewritten file with a ``hook`` state) are upgraded once at start-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from energy_ledger.daemon.claims import create_once, is_temp_name, remove_temp_files
from energy_ledger.exceptions import LedgerError
from energy_ledger.store.atomic import write_atomic
from energy_ledger.store.layout import AGGREGATED_DIR, ResultsLayout, is_valid_experiment_id

__all__ = [
    "EMITTED_DIR",
    "STATE_VERSION",
    "EmissionRecord",
    "HookProgress",
    "Kind",
    "StateStore",
    "emission_key",
    "state_dir_for",
]

logger = logging.getLogger(__name__)

STATE_VERSION = 2
EMITTED_DIR = "emitted"
PARTIAL_SUFFIX = "@partial"

Kind = Literal["complete", "partial"]


def emission_key(experiment_id: str, kind: Kind) -> str:
    """The name under ``emitted/`` of an experiment's complete or partial emission."""
    return experiment_id if kind == "complete" else experiment_id + PARTIAL_SUFFIX


def result_relpath(experiment_id: str, kind: Kind) -> str:
    """Where the result of an emission lies, relative to the root (``aggregated/<id>.json``)."""
    suffix = ".partial.json" if kind == "partial" else ".json"
    return f"{AGGREGATED_DIR}/{experiment_id}{suffix}"


@dataclass(frozen=True, slots=True)
class EmissionRecord:
    """One emission: created once by the daemon that emitted, never changed afterwards."""

    emission_id: str
    experiment_id: str
    kind: Kind
    result: str
    emitted_t: float
    host: str = ""
    lease_token: str = ""
    hook: bool = False

    @property
    def key(self) -> str:
        """Its name under ``emitted/``."""
        return emission_key(self.experiment_id, self.kind)

    @classmethod
    def new(
        cls, experiment_id: str, kind: Kind, *, hook: bool, host: str = "", lease_token: str = ""
    ) -> EmissionRecord:
        """A fresh record with a new emission id, not yet on disk."""
        return cls(
            emission_id=uuid.uuid4().hex,
            experiment_id=experiment_id,
            kind=kind,
            result=result_relpath(experiment_id, kind),
            emitted_t=time.time(),
            host=host,
            lease_token=lease_token,
            hook=hook,
        )

    def result_path(self, root: Path) -> Path:
        """The result file under ``root`` (this host's mount of it)."""
        return root / self.result

    def to_bytes(self) -> bytes:
        """The record file's content, in a fixed key order."""
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "emission_id": self.emission_id,
                "experiment_id": self.experiment_id,
                "kind": self.kind,
                "result": self.result,
                "emitted_t": self.emitted_t,
                "host": self.host,
                "lease_token": self.lease_token,
                "hook": self.hook,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EmissionRecord:
        """Parse a version-2 record; raise ``ValueError`` when it is not one."""
        obj: Any = orjson.loads(data)
        if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION:
            raise ValueError("not a version-2 emission record")
        kind = obj.get("kind")
        experiment_id = obj.get("experiment_id")
        if kind not in ("complete", "partial") or not isinstance(experiment_id, str):
            raise ValueError("bad kind or experiment id")
        if not isinstance(obj.get("hook"), bool) or not isinstance(obj.get("emission_id"), str):
            raise ValueError("bad hook flag or emission id")
        return cls(
            emission_id=obj["emission_id"],
            experiment_id=experiment_id,
            kind=kind,
            result=result_relpath(experiment_id, kind),
            emitted_t=float(obj["emitted_t"]),
            host=str(obj.get("host", "")),
            lease_token=str(obj.get("lease_token", "")),
            hook=obj["hook"],
        )


def upcast_v1(obj: dict[str, Any]) -> tuple[EmissionRecord, str, int]:
    """A version-1 record as a version-2 one, with its hook state and attempts (pure).

    Version 1 stored an absolute result path; the path is rebuilt from the id and kind instead.
    The emission id is derived from the id and the emission time, so two upgrades agree.
    """
    experiment_id = str(obj["experiment_id"])
    kind = obj.get("kind")
    hook = obj.get("hook") or {}
    state = hook.get("state", "none")
    if kind not in ("complete", "partial") or state not in (
        "none",
        "pending",
        "running",
        "done",
        "failed",
    ):
        raise ValueError("bad kind or hook state")
    emitted_t = float(obj["emitted_t"])
    record = EmissionRecord(
        emission_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{experiment_id}/{kind}/{emitted_t!r}").hex,
        experiment_id=experiment_id,
        kind=kind,
        result=result_relpath(experiment_id, kind),
        emitted_t=emitted_t,
        hook=state != "none",
    )
    return record, state, int(hook.get("attempts", 0))


@dataclass(frozen=True, slots=True)
class HookProgress:
    """How far one emission's hook got, as its marker files say.

    Attributes:
        attempts: how many attempts were started (``@attempt-1`` .. ``@attempt-<n>``).
        failures: the attempts that ended in failure, with their errors.
        done: the hook finished successfully (``@done``).
        gave_up: why the hook was given up (``@failed``), or ``None``.
    """

    attempts: int = 0
    failures: dict[int, str] = field(default_factory=dict)
    done: bool = False
    gave_up: str | None = None

    @property
    def finished(self) -> bool:
        """Done or given up: the hook never runs again."""
        return self.done or self.gave_up is not None

    @property
    def last_interrupted(self) -> bool:
        """The last attempt started but has no outcome (a crash, or it is running right now)."""
        return not self.finished and self.attempts > 0 and self.attempts not in self.failures

    def state(self, *, in_flight: bool = False) -> str:
        """``pending``, ``running`` (here, now), ``interrupted``, ``done`` or ``failed``."""
        if self.done:
            return "done"
        if self.gave_up is not None:
            return "failed"
        if in_flight:
            return "running"
        return "interrupted" if self.last_interrupted else "pending"


@dataclass(slots=True)
class StateStore:
    """The emission records of one state folder, on disk and as last seen (thread-safe).

    ``records`` and ``progress`` are what was last read or written; the gates (:meth:`read`,
    :meth:`claim`, :meth:`read_progress`, :meth:`start_attempt`) always go to the disk.
    """

    state_dir: Path
    records: dict[str, EmissionRecord] = field(default_factory=dict)
    progress: dict[str, HookProgress] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def emitted_dir(self) -> Path:
        """``<state_dir>/emitted``."""
        return self.state_dir / EMITTED_DIR

    def _path(self, key: str, suffix: str = ".json") -> Path:
        return self.emitted_dir / f"{key}{suffix}"

    def load(self) -> list[str]:
        """Read every record and hook marker; return the problems found.

        Stray temp files of killed writers are removed first (only the lease holder writes
        here). Unreadable records are reported and left alone.
        """
        problems: list[str] = []
        self.emitted_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.emitted_dir)
        with os.scandir(self.emitted_dir) as it:
            names = [e.name for e in it if not is_temp_name(e.name)]
        markers: dict[str, set[str]] = {}
        record_names = []
        for name in names:
            if name.endswith(".json"):
                record_names.append(name)
            elif "@" in name:
                key, _, marker = name.rpartition("@")
                markers.setdefault(key, set()).add(marker)
        for name in record_names:
            key = name[: -len(".json")]
            if not is_valid_experiment_id(key.removesuffix(PARTIAL_SUFFIX)):
                continue
            try:
                data = self._path(key).read_bytes()
                obj: Any = orjson.loads(data)
                upgraded = isinstance(obj, dict) and obj.get("v") == 1
                record = self._upgrade(key, obj) if upgraded else EmissionRecord.from_bytes(data)
            except (OSError, ValueError, KeyError, TypeError, LedgerError) as exc:
                problems.append(f"{self._path(key)}: unreadable record ({exc}); ignored")
                continue
            if record.key != key:
                problems.append(f"{self._path(key)}: record of {record.key!r}; ignored")
                continue
            self.records[key] = record
            if upgraded:
                attempts = int((obj.get("hook") or {}).get("attempts", 0))
                markers[key] = self._markers_on_disk(key, up_to=attempts)
            self.progress[key] = self._progress_from(key, markers.get(key, set()))
        return problems

    def _upgrade(self, key: str, obj: dict[str, Any]) -> EmissionRecord:
        """Rewrite a version-1 record as version 2 plus markers (start-up, lease held)."""
        record, state, attempts = upcast_v1(obj)
        for n in range(1, attempts + 1):
            create_once(self._path(key, f"@attempt-{n}"), b"{}")
            if state in ("pending", "failed") or n < attempts:
                create_once(self._path(key, f"@fail-{n}"), b"failed before the upgrade")
        if state == "done":
            create_once(self._path(key, "@done"), b"{}")
        elif state == "failed":
            create_once(self._path(key, "@failed"), str(hook_error(obj)).encode())
        write_atomic(self._path(key), record.to_bytes())
        logger.info("%s: emission record upgraded to version %d", key, STATE_VERSION)
        return record

    def _progress_from(self, key: str, markers: set[str]) -> HookProgress:
        attempts = 0
        while f"attempt-{attempts + 1}" in markers:
            attempts += 1
        failures = {}
        for marker in markers:
            if marker.startswith("fail-") and marker[5:].isdigit():
                failures[int(marker[5:])] = self._text(key, f"@{marker}")
        gave_up = self._text(key, "@failed") if "failed" in markers else None
        return HookProgress(attempts, failures, "done" in markers, gave_up)

    def _text(self, key: str, suffix: str) -> str:
        try:
            return self._path(key, suffix).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    # -- emissions ---------------------------------------------------------------------------
    def get(self, key: str) -> EmissionRecord | None:
        """The record of an emission as last seen (memory only: cheap, may be out of date)."""
        with self._lock:
            return self.records.get(key)

    def read(self, key: str) -> EmissionRecord | None:
        """The record of an emission read from disk now (and remembered).

        A record that exists but does not parse (it cannot be torn: it was damaged by hand)
        still means "emitted": it comes back with an empty ``emission_id`` and no hook owed, so
        nothing is emitted a second time on a guess. Start-up lists it as a problem.

        Raises:
            LedgerError: the record could not be read (transient: try again later).
        """
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            record = EmissionRecord.from_bytes(data)
        except (ValueError, KeyError, TypeError):
            experiment_id, partial, _ = key.partition("@")
            kind: Kind = "partial" if partial else "complete"
            return EmissionRecord("", experiment_id, kind, result_relpath(experiment_id, kind), 0.0)
        with self._lock:
            self.records[key] = record
        return record

    def claim(self, record: EmissionRecord) -> EmissionRecord:
        """Create ``record`` on disk unless the emission exists; return the one that holds.

        The returned record is ``record`` itself when this call created it, else the one
        another daemon (or an earlier life of this one) created first.
        """
        if create_once(self._path(record.key), record.to_bytes()):
            with self._lock:
                self.records[record.key] = record
                self.progress[record.key] = HookProgress()
            return record
        existing = self.read(record.key)
        if existing is None:  # it vanished at once (someone deleted it): try again
            return self.claim(record)
        return existing

    # -- hooks -------------------------------------------------------------------------------
    def _markers_on_disk(self, key: str, *, up_to: int) -> set[str]:
        """The markers of one emission, by probing their names (no listing of ``emitted/``)."""
        markers = set()
        for name in ("done", "failed"):
            if self._path(key, f"@{name}").exists():
                markers.add(name)
        for n in range(1, up_to + 2):
            if not self._path(key, f"@attempt-{n}").exists():
                break
            markers.add(f"attempt-{n}")
            if self._path(key, f"@fail-{n}").exists():
                markers.add(f"fail-{n}")
        return markers

    def read_progress(self, key: str, *, up_to: int) -> HookProgress:
        """A hook's progress read from its markers on disk now (at most ``up_to`` attempts)."""
        progress = self._progress_from(key, self._markers_on_disk(key, up_to=up_to))
        with self._lock:
            self.progress[key] = progress
        return progress

    def start_attempt(self, key: str, n: int, holder: str) -> bool:
        """Claim attempt ``n`` of a hook; True when this call did (only then may it run).

        The daemon's hooks are claimed by their supervisor (``supervise.py``), which adds its
        own pid so that a later daemon can tell a running attempt from an interrupted one.
        """
        body = orjson.dumps({"attempt": n, "holder": holder, "t": time.time()})
        return create_once(self._path(key, f"@attempt-{n}"), body)

    def attempt_claim(self, key: str, n: int) -> dict[str, Any]:
        """What the ``@attempt-<n>`` marker says (who claimed it), or ``{}``."""
        try:
            obj: Any = orjson.loads(self._path(key, f"@attempt-{n}").read_bytes())
        except (OSError, ValueError):
            return {}
        return obj if isinstance(obj, dict) else {}

    def finish_attempt(self, key: str, n: int, error: str | None, *, give_up: bool) -> None:
        """Record how attempt ``n`` ended: done, or failed (and maybe given up)."""
        if error is None:
            create_once(self._path(key, "@done"), orjson.dumps({"attempt": n, "t": time.time()}))
        else:
            create_once(self._path(key, f"@fail-{n}"), error.encode("utf-8", "replace"))
            if give_up:
                self.give_up(key, error)
        self.read_progress(key, up_to=n)

    def give_up(self, key: str, why: str) -> None:
        """Record that a hook will not be run again (``@failed``)."""
        create_once(self._path(key, "@failed"), why.encode("utf-8", "replace"))

    def hook_counts(self) -> dict[str, Any]:
        """How many hooks are pending/running/interrupted/done, and which failed.

        ``running`` counts the hooks this daemon runs now (the hook runner keeps ``running``);
        ``interrupted`` those whose last attempt was started and never finished.
        """
        running = set(self.running)
        with self._lock:
            counts = {"pending": 0, "running": 0, "interrupted": 0, "done": 0}
            failed = []
            for key, record in self.records.items():
                if not record.hook:
                    continue
                progress = self.progress.get(key, HookProgress())
                state = progress.state(in_flight=key in running)
                if state == "failed":
                    failed.append({"experiment_id": key, "error": progress.gave_up})
                else:
                    counts[state] += 1
        return {**counts, "failed": sorted(failed, key=lambda f: str(f["experiment_id"]))}


def hook_error(obj: dict[str, Any]) -> str:
    """A version-1 record's hook error, for the upgrade."""
    hook = obj.get("hook") or {}
    return str(hook.get("error") or "failed before the upgrade")


def state_dir_for(root: str | os.PathLike[str], state_dir: Path | None = None) -> Path:
    """The state folder of ``root``: ``state_dir`` when given, else ``<root>/.energy-ledger``."""
    return Path(os.path.abspath(state_dir)) if state_dir else ResultsLayout.at(root).state_dir
