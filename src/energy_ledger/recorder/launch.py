"""Who this process is, as the launcher says: rank, world size, run id and GPU.

Read from the environment that torchrun, accelerate and Slurm set:

- rank and world size: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun, accelerate), else
  ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, else a single process (rank 0 of 1);
- run id (the same for every rank of one launch): ``ENERGY_LEDGER_RUN_ID``, else
  ``TORCHELASTIC_RUN_ID`` (torchrun's rendezvous id), else ``SLURM_JOB_ID`` (with
  ``.SLURM_STEP_ID`` when set); a single process with none of them gets a random one;
- device: the ``LOCAL_RANK``-th entry of ``CUDA_VISIBLE_DEVICES`` (or its only entry), which may
  be an index, a GPU UUID or a MIG id; the NVML backend maps it to a device through the UUID;
- tensor-parallel size: ``ENERGY_LEDGER_TP_SIZE`` (which ranks' requests count, see
  ``payloads.request_ownership``);
- log layout: ``ENERGY_LEDGER_LAYOUT`` (``appended`` or ``segmented``; a bucket root is always
  segmented, see ``store.logwriter``).

Everything here is pure except ``check_peers`` and ``check_segmented_peers``, which read the
first line of the other ranks' logs (or first segments) to catch ranks that disagree on the run
id or world size before any data is written.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.layout import LOG_RE, SEGMENTS_RE, experiment_key, segment_name
from energy_ledger.store.objectstore import ObjectStore

RUN_ID_ENV_VAR = "ENERGY_LEDGER_RUN_ID"
"""The variable that names the run; set it to the same value for every rank of one launch."""

TP_SIZE_ENV_VAR = "ENERGY_LEDGER_TP_SIZE"
"""The variable that gives the tensor-parallel group size (ranks that log the same requests)."""

LAYOUT_ENV_VAR = "ENERGY_LEDGER_LAYOUT"
"""The variable that picks the log layout of a folder root: ``appended`` or ``segmented``."""

PEER_SEGMENT_CHECKS = 8
"""At most this many other ranks' first segments are read at the start: each is a request to
the store, and ranks that disagree on the run id disagree with every peer."""


@dataclass(frozen=True, slots=True)
class LaunchInfo:
    """This process's place in the launch.

    Attributes:
        process_index: the global rank.
        world_size: the number of processes.
        local_rank: the rank on this node (picks the GPU).
        run_id: the id all ranks of this launch share.
        device_spec: what names the GPU for NVML: an index, a UUID or a MIG id.
        source: where rank and run id came from, for messages.
        tensor_parallel_size: ranks per tensor-parallel group (``ENERGY_LEDGER_TP_SIZE``), or
            ``None`` when not given; the recorder turns it into ``counts_requests``.
    """

    process_index: int
    world_size: int
    local_rank: int
    run_id: str
    device_spec: str
    source: str = "explicit"
    tensor_parallel_size: int | None = None


def _int(env: Mapping[str, str], name: str) -> int:
    text = env[name].strip()
    try:
        value = int(text)
    except ValueError:
        raise LedgerError(f"{name}={text!r} is not an integer") from None
    if value < 0:
        raise LedgerError(f"{name}={value} must not be negative")
    return value


def _ranks(env: Mapping[str, str]) -> tuple[int, int, int, str]:
    """(rank, world size, local rank, launcher name) from the environment."""
    if "RANK" in env:
        if "WORLD_SIZE" not in env:
            raise LedgerError("RANK is set but WORLD_SIZE is not: cannot tell the world size")
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        # torchrun inside srun runs one task per node; only one task per rank must agree.
        if (
            "SLURM_PROCID" in env
            and "SLURM_NTASKS" in env
            and _int(env, "SLURM_NTASKS") == world
            and _int(env, "SLURM_PROCID") != rank
        ):
            raise LedgerError(
                f"RANK={rank} but SLURM_PROCID={env['SLURM_PROCID']} with "
                f"WORLD_SIZE=SLURM_NTASKS={world}: the launchers disagree on this rank"
            )
        launcher = "torchrun"
    elif "SLURM_PROCID" in env:
        if "SLURM_NTASKS" not in env:
            raise LedgerError("SLURM_PROCID is set but SLURM_NTASKS is not")
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        launcher = "slurm"
    else:
        if "WORLD_SIZE" in env and _int(env, "WORLD_SIZE") != 1:
            raise LedgerError(f"WORLD_SIZE={env['WORLD_SIZE']} but RANK is not set")
        rank, world, local, launcher = 0, 1, 0, "single process"
    if world < 1 or rank >= world:
        raise LedgerError(f"rank {rank} is not in a world of size {world} ({launcher})")
    return rank, world, local, launcher


def run_id_from_env(env: Mapping[str, str], world_size: int) -> str:
    """The run id all ranks share (see the module docstring for the order)."""
    for name in (RUN_ID_ENV_VAR, "TORCHELASTIC_RUN_ID"):
        value = env.get(name, "").strip()
        if value:
            return value
    job = env.get("SLURM_JOB_ID", "").strip()
    if job:
        step = env.get("SLURM_STEP_ID", "").strip()
        return f"{job}.{step}" if step else job
    if world_size == 1:
        return uuid.uuid4().hex
    raise LedgerError(
        f"no run id for a launch of {world_size} processes: set {RUN_ID_ENV_VAR} to the same "
        "value for every rank (torchrun's TORCHELASTIC_RUN_ID and Slurm's SLURM_JOB_ID are "
        "used when present)"
    )


def device_spec_from_env(
    env: Mapping[str, str], local_rank: int, device: int | str | None = None
) -> str:
    """The NVML spec of this process's GPU.

    Args:
        env: the environment.
        local_rank: the node-local rank (the default CUDA ordinal).
        device: a CUDA ordinal (index into ``CUDA_VISIBLE_DEVICES``) or an NVML spec that
            overrides the default.
    """
    if isinstance(device, str):
        return device
    visible = env.get("CUDA_VISIBLE_DEVICES")
    ordinal = local_rank if device is None else device
    if visible is None:
        return str(ordinal)
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if not entries or entries[0] in ("-1", "NoDevFiles"):
        raise LedgerError(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    if len(entries) == 1 and device is None:
        return entries[0]
    if ordinal >= len(entries):
        raise LedgerError(
            f"this process wants CUDA device {ordinal} but CUDA_VISIBLE_DEVICES={visible!r} "
            f"shows only {len(entries)}"
        )
    return entries[ordinal]


def launch_from_env(
    environ: Mapping[str, str] | None = None, *, device: int | str | None = None
) -> LaunchInfo:
    """This process's ``LaunchInfo`` from the launcher's environment variables.

    Raises:
        LedgerError: a variable is malformed, the launchers disagree, a multi-process launch
            has no run id, or ``CUDA_VISIBLE_DEVICES`` does not hold this process's GPU.
    """
    env = os.environ if environ is None else environ
    rank, world, local, launcher = _ranks(env)
    return LaunchInfo(
        process_index=rank,
        world_size=world,
        local_rank=local,
        run_id=run_id_from_env(env, world),
        device_spec=device_spec_from_env(env, local, device),
        source=launcher,
        tensor_parallel_size=tensor_parallel_size_from_env(env),
    )


def tensor_parallel_size_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The tensor-parallel size from ``ENERGY_LEDGER_TP_SIZE``; ``None`` when unset or empty.

    Raises:
        LedgerError: the value is not a non-negative integer (``0`` is refused later, with the
            rule that the size must divide the world size).
    """
    env = os.environ if environ is None else environ
    if not env.get(TP_SIZE_ENV_VAR, "").strip():
        return None
    return _int(env, TP_SIZE_ENV_VAR)


def layout_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The log layout ``ENERGY_LEDGER_LAYOUT`` asks for; ``None`` when unset or empty (checked
    by ``store.logwriter.check_layout``)."""
    env = os.environ if environ is None else environ
    return env.get(LAYOUT_ENV_VAR, "").strip() or None


def check_peers(experiment_dir: Path, launch: LaunchInfo) -> None:
    """Refuse to start when another rank's log names a different run id or world size.

    Only logs that exist already are checked (ranks start in any order); the aggregator checks
    the rest. An unreadable or torn first line is skipped.

    Raises:
        LedgerError: a peer disagrees.
    """
    try:
        paths = sorted(experiment_dir.iterdir())
    except OSError:
        return
    for path in paths:
        name = path.name
        match = LOG_RE.match(name)
        if not match or int(match.group(1)) == launch.process_index:
            continue
        try:
            with path.open("rb") as fp:
                first = orjson.loads(fp.readline())
        except (OSError, orjson.JSONDecodeError):
            continue
        _check_peer(str(path), first, launch)


def check_segmented_peers(objects: ObjectStore, experiment_id: str, launch: LaunchInfo) -> None:
    """``check_peers`` for the segmented layout: the first line of other ranks' segment 0.

    One listing of the experiment, then at most ``PEER_SEGMENT_CHECKS`` segments read. A
    store that cannot be listed, or a segment that cannot be read or decoded, is skipped (the
    aggregator checks every process later).

    Raises:
        LedgerError: a peer disagrees.
    """
    prefix = experiment_key(experiment_id)
    first_segment = "/" + segment_name(0)
    try:
        listing = objects.list(prefix)
    except (OSError, LedgerError):
        return
    checked = 0
    for info in listing:
        folder, _, name = info.key[len(prefix) :].partition("/")
        match = SEGMENTS_RE.match(folder)
        if not match or "/" + name != first_segment:
            continue
        if int(match.group(1)) == launch.process_index:
            continue
        if checked >= PEER_SEGMENT_CHECKS:
            return
        checked += 1
        try:
            first = orjson.loads(objects.get(info.key).split(b"\n", 1)[0])
        except (OSError, LedgerError, orjson.JSONDecodeError):
            continue
        _check_peer(f"{objects.url.rstrip('/')}/{info.key}", first, launch)


def _check_peer(where: str, first: object, launch: LaunchInfo) -> None:
    """Refuse a peer's first event that names another run id or world size."""
    if not isinstance(first, dict):
        return
    if first.get("run_id") != launch.run_id:
        raise LedgerError(
            f"{where} belongs to run {first.get('run_id')!r} but this "
            f"process has run id {launch.run_id!r}: the ranks could not agree on a run id "
            f"(set {RUN_ID_ENV_VAR} to one value for all ranks, or use a new experiment id)"
        )
    if first.get("world_size") != launch.world_size:
        raise LedgerError(
            f"{where} says world size {first.get('world_size')} but this "
            f"process has {launch.world_size}"
        )


__all__ = [
    "LAYOUT_ENV_VAR",
    "PEER_SEGMENT_CHECKS",
    "RUN_ID_ENV_VAR",
    "TP_SIZE_ENV_VAR",
    "LaunchInfo",
    "check_peers",
    "check_segmented_peers",
    "device_spec_from_env",
    "launch_from_env",
    "layout_from_env",
    "run_id_from_env",
    "tensor_parallel_size_from_env",
]
