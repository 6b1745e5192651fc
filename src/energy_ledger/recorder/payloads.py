"""What the recorder writes, built and checked without NVML, the clock or the file.

``ProcessRecorder`` (``recorder.py``) owns the lifecycle, the lock, the sampler and the writer;
this module turns the caller's Python values into the JSON-ready fields of ``process_started``
and ``request`` events and the start-up warnings, and refuses values the format cannot hold. It
is kept apart so that these rules can be read, and tested with tables, without a GPU or a log.

``request()`` checks plain ints and floats inline (its hot path) and calls the functions here
only for the rest: number-like values to convert, and values to refuse.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.protocol import DeviceInfo
from energy_ledger.recorder.launch import LaunchInfo

_INF = float("inf")


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of an experiment config (sorted keys; non-JSON values as text)."""
    data = orjson.dumps(dict(config), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:16]


def normalise_config(config: Any) -> dict[str, Any] | None:
    """The config as a JSON-ready dict: a pydantic model is dumped, other values become text.

    Raises:
        LedgerError: ``config`` is neither ``None``, a mapping nor a pydantic model.
    """
    if config is None:
        return None
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise LedgerError(f"config must be a mapping or a pydantic model, got {type(config)}")
    return orjson.loads(orjson.dumps(dict(config), default=str))  # type: ignore[no-any-return]


def started_fields(
    experiment_id: str,
    launch: LaunchInfo,
    info: DeviceInfo,
    *,
    hostname: str,
    pid: int,
    backend: str,
    backend_version: str | None,
    environment: dict[str, Any] | None,
    config: dict[str, Any] | None,
    counts_requests: bool | None = None,
) -> dict[str, Any]:
    """The fields of ``process_started``, leaving out those that are ``None``.

    The GPU is named by ``info.parent_uuid``: the physical GPU whose counter is read, so the
    aggregator counts a GPU shared by MIG instances once. A config adds ``effective_config``, its
    hash, and its ``config_name`` and ``model_name`` when they are strings. ``counts_requests``
    (from ``request_ownership``) is left out when ``None``, so the event takes the format's
    default, true: what a log meant before the field existed.
    """
    started: dict[str, Any] = {
        "experiment_id": experiment_id,
        "run_id": launch.run_id,
        "process_index": launch.process_index,
        "world_size": launch.world_size,
        "gpu_id": info.index,
        "gpu_uuid": info.parent_uuid,
        "gpu_name": info.name,
        "gpu_is_mig": info.is_mig,
        "gpu_mig_profile": info.mig_profile,
        "hostname": hostname,
        "pid": pid,
        "backend": backend,
        "backend_version": backend_version,
        "environment": environment,
        "counts_requests": counts_requests,
    }
    if config is not None:
        started["effective_config"] = config
        started["measurement_config_hash"] = config_hash(config)
        for key in ("config_name", "model_name"):
            if isinstance(config.get(key), str):
                started[key] = config[key]
    return {k: v for k, v in started.items() if v is not None}


def request_ownership(
    process_index: int,
    world_size: int,
    tensor_parallel_size: int | None,
    counts_requests: bool | None = None,
) -> bool | None:
    """Whether this process's ``request`` events count toward the experiment's tokens.

    Under tensor parallelism every rank of a group serves (and logs) the same requests, so
    only one rank per group may count them, or tokens and latencies come out k times too many.
    Groups are taken to be consecutive ranks (``[0, k)``, ``[k, 2k)``, ...: torchrun, Megatron
    and vLLM's ``external_launcher`` lay them out so), and the first rank of each counts.

    Args:
        process_index: the global rank.
        world_size: the number of processes.
        tensor_parallel_size: ranks per tensor-parallel group, or ``None`` when not given.
        counts_requests: an explicit answer, which wins (for another group layout).

    Returns:
        ``counts_requests`` when given; else ``process_index % k == 0`` with a size ``k``;
        else ``None`` (write nothing: the format's default, true).

    Raises:
        LedgerError: the size is not an int >= 1 or does not divide the world size, or
            ``counts_requests`` is not a bool.
    """
    if tensor_parallel_size is not None:
        size = tensor_parallel_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise LedgerError(f"tensor_parallel_size must be an int >= 1, got {size!r}")
        if world_size % size:
            raise LedgerError(
                f"tensor_parallel_size {size} does not divide the world size {world_size}: "
                "every tensor-parallel group must be whole"
            )
    if counts_requests is not None:
        if not isinstance(counts_requests, bool):
            raise LedgerError(f"counts_requests must be a bool, got {counts_requests!r}")
        return counts_requests
    if tensor_parallel_size is None:
        return None
    return process_index % tensor_parallel_size == 0


def device_warnings(info: DeviceInfo, backend_name: str) -> list[str]:
    """The warnings that every log from this device carries first, in the order written.

    Readings that are not from a real GPU, and a MIG instance's readings that are those of its
    whole parent GPU, must be visible in the aggregated result, not only in a log line.
    """
    warnings = []
    if backend_name != "nvml":
        warnings.append(f"NVML backend is {backend_name!r}: readings are not from a real GPU")
    if info.is_mig:
        warnings.append(
            f"GPU is a MIG instance ({info.mig_profile or 'unknown profile'}, {info.uuid}): "
            f"power and energy are those of the whole parent GPU {info.parent_uuid}, shared "
            "with any other instance on it"
        )
    return warnings


def as_number(name: str, value: object) -> float:
    """``value`` as a float (numpy scalars, ``Fraction`` and the like convert; bools do not).

    Raises:
        LedgerError: ``value`` is a bool or not a number.
    """
    if isinstance(value, bool):
        raise LedgerError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LedgerError(f"{name} must be a number, got {value!r}") from None


def normalise_request(obj: dict[str, Any]) -> None:
    """Coerce a request's numpy scalars and the like in place; reject what the format cannot hold.

    Raises:
        LedgerError: a bool, a negative value, NaN or infinity, or a non-number.
    """
    obj["latency_ms"] = as_number("latency_ms", obj["latency_ms"])
    if not 0.0 <= obj["latency_ms"] < _INF:
        raise LedgerError(f"latency_ms must be finite and >= 0, got {obj['latency_ms']}")
    for name in ("input_tokens", "output_tokens"):
        value = obj[name]
        if isinstance(value, bool):
            raise LedgerError(f"{name} must be an int, got {value!r}")
        try:
            obj[name] = value.__index__()
        except (AttributeError, TypeError):
            raise LedgerError(f"{name} must be an int, got {value!r}") from None
        if obj[name] < 0:
            raise LedgerError(f"{name} must be >= 0, got {obj[name]}")


def checked_ttft_ms(value: object) -> float:
    """A time to first token that is not a plain finite float yet, converted and checked.

    Raises:
        LedgerError: not a number, negative, NaN or infinity.
    """
    ttft_ms = value if type(value) is float else as_number("ttft_ms", value)
    if not 0.0 <= ttft_ms < _INF:
        raise LedgerError(f"ttft_ms must be finite and >= 0, got {ttft_ms}")
    return ttft_ms


def itl_values(itl_ms: Iterable[float]) -> list[float]:
    """Inter-token latencies as a list of floats (through ``array``: one C loop, no Python one).

    Raises:
        LedgerError: an item is not a number, or NaN or infinity (JSON holds neither).
    """
    try:
        values = array("d", itl_ms).tolist()
    except TypeError:
        raise LedgerError("itl_ms must be a sequence of numbers") from None
    if not -_INF < sum(values) < _INF:
        raise LedgerError("itl_ms must hold finite numbers")
    return values
