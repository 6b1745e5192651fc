"""One result as LLenergyMeasure 0.7.0's results bundle: the files' contents, as values (pure).

LLenergyMeasure 0.7.0 replaced the schema-2.0 result file with a folder per experiment (a
"bundle"): ``result.json`` (its newer ``ExperimentResult``, which refuses unknown keys),
``config.json`` (identity and configuration, not validated), ``system.json`` (its
``EnvironmentSnapshot``) and an optional ``timeseries.parquet``. This module maps one of our
schema-2.0 ``ExperimentResult`` values onto those files; ``export.lem_bundle`` writes them.

What cannot be carried exactly is said in the bundle itself, as ``measurement_warnings``
entries that start with ``EXPORT_NOTE_PREFIX`` (repeated in ``config.json``), and in
docs/data.md, which has the whole field mapping.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, Final

import orjson

from energy_ledger._version import __version__
from energy_ledger.models import ExperimentResult, ThermalThrottleInfo
from energy_ledger.models.results import is_partial

LEM_VERSION: Final = "0.7.0"
"""The LLenergyMeasure release whose bundle layout is written (from PyPI)."""

BUNDLE_VERSION: Final = "2.0"
"""The ``bundle_version`` stamped into the JSON files; 0.7.0 warns on any other value."""

RESULT_FILE: Final = "result.json"
CONFIG_FILE: Final = "config.json"
SYSTEM_FILE: Final = "system.json"
TIMESERIES_FILE: Final = "timeseries.parquet"
BUNDLE_FILES: Final = (RESULT_FILE, CONFIG_FILE, SYSTEM_FILE, TIMESERIES_FILE)
"""Every file an exported bundle may hold (the writer owns these names in a bundle folder)."""

ENGINES: Final = {
    "pytorch": "transformers",
    "transformers": "transformers",
    "vllm": "vllm",
    "tensorrt": "tensorrt",
}
"""Our ``backend`` values (lower-cased) and the 0.7.0 ``engine`` each becomes."""

EXPORT_NOTE_PREFIX: Final = "energy-ledger export: "
"""Starts every ``measurement_warnings`` entry the export adds."""

PARTIAL_NOTE: Final = (
    "partial result, recovered from an incomplete run: its figures cover only the processes, "
    "requests and time that were logged; do not compare it with complete results"
)

SLUG_MAX_CHARS: Final = 120
"""LLenergyMeasure cuts the ``{model}-{engine}`` part of a bundle name to this length."""

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")
_HASH8 = re.compile(r"[0-9a-f]{8}")

_AGGREGATION_KEYS: Final = (
    "method",
    "num_processes",
    "temporal_overlap_verified",
    "gpu_attribution_verified",
    "warnings",
)
"""The fields of 0.7.0's ``AggregationMetadata``; our other keys go to ``config.json``."""

_COPIED_KEYS: Final = (
    "experiment_id",
    "total_tokens",
    "total_energy_j",
    "total_inference_time_sec",
    "avg_tokens_per_second",
    "avg_energy_per_token_j",
    "total_flops",
    "flops_per_output_token",
    "flops_per_input_token",
    "flops_per_second",
    "energy_adjusted_j",
    "energy_per_device_j",
    "multi_gpu",
    "warmup_excluded_samples",
    "reproducibility_notes",
    "start_time",
    "end_time",
    "warmup_result",
    "latency_stats",
    "extended_metrics",
)
"""Top-level result fields that keep their name and shape in 0.7.0."""


def to_json_bytes(payload: dict[str, Any]) -> bytes:
    """A bundle file's bytes: indented JSON with sorted keys, ending with a newline."""
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def engine_of(backend: str) -> tuple[str, str | None]:
    """0.7.0's ``engine`` for our ``backend``, and a note when the name is not one it knows.

    An unknown backend is kept as given (0.7.0 does not check the value in ``result.json``)
    rather than guessed, and the note says so.
    """
    engine = ENGINES.get(backend.strip().lower())
    if engine is not None:
        return engine, None
    known = ", ".join(sorted(set(ENGINES.values())))
    return backend, (
        f"backend {backend!r} is not one of LLenergyMeasure's engines ({known}); "
        "engine keeps it as given"
    )


def throttle_of(info: ThermalThrottleInfo) -> tuple[dict[str, Any], list[str]]:
    """0.7.0's ``throttle`` block for our ``thermal_throttle``, and notes on what is lost.

    Our flags are NVML's clocks-event reasons (docs/metrics.md): ``power`` is the software
    power cap, ``hw_power`` the hardware power brake, ``sw_thermal``/``hw_thermal`` the two
    thermal slowdowns. Each lands on its own 0.7.0 axis flag, so no cause is invented. Two
    things have no place and are only noted: a ``thermal`` flag without either cause (possible
    in files we did not write), and throttling seen (``detected``) only as NVML's generic
    hardware slowdown, which 0.7.0 has no flag for (its ``detected`` then reads false).
    """
    thermal = {"hw": info.hw_thermal, "sw": info.sw_thermal}
    power = {"hw": info.hw_power, "sw": info.power}
    notes = []
    if info.thermal and not (info.hw_thermal or info.sw_thermal):
        notes.append(
            "thermal throttling was flagged without its cause (hardware or software); "
            "throttle.thermal records neither"
        )
    if info.detected and not (info.thermal or any(thermal.values()) or any(power.values())):
        notes.append(
            "throttling was seen only as NVML's generic hardware slowdown, which "
            "LLenergyMeasure 0.7.0's throttle block has no flag for (throttle.detected is false)"
        )
    block = {
        "thermal": thermal,
        "power": power,
        "throttle_duration_sec": info.throttle_duration_sec,
        "max_temperature_c": info.max_temperature_c,
        "throttle_timestamps": list(info.throttle_timestamps),
    }
    return block, notes


def token_split(result: ExperimentResult) -> tuple[int | None, int, str | None]:
    """``(input_tokens, output_tokens, note)`` for 0.7.0, which wants the split at the top.

    The sums over ``process_results`` where there are any (a rank that does not count its
    requests reports none, so the sums match ``total_tokens``). Without them (a file aggregated
    elsewhere) the output count is recovered from the per-output-token energy, else from the
    per-output-token FLOPs, and the note says so; when neither works, input is unknown (null)
    and output 0.
    """
    if result.process_results:
        inputs = sum(p.inference_metrics.input_tokens for p in result.process_results)
        outputs = sum(p.inference_metrics.output_tokens for p in result.process_results)
        note = None
        if inputs + outputs != result.total_tokens:
            note = (
                f"input + output tokens of the processes ({inputs + outputs}) differ from "
                f"total_tokens ({result.total_tokens})"
            )
        return inputs, outputs, note
    total = result.total_tokens
    ways = (
        ("total_energy_j / avg_energy_per_token_j", result.total_energy_j,
         result.avg_energy_per_token_j),
        ("total_flops / flops_per_output_token", result.total_flops,
         result.flops_per_output_token),
    )  # fmt: skip
    for how, numerator, per_token in ways:
        if per_token and numerator:
            outputs = round(numerator / per_token)
            if 0 < outputs <= total:
                return total - outputs, outputs, f"output_tokens derived as {how}"
    return None, 0, "the input/output token split is unknown: input_tokens null, output_tokens 0"


def model_name_of(result: ExperimentResult) -> str:
    """The model measured: the processes' ``model_name``, else the config's ``model``."""
    candidates: list[object] = [p.model_name for p in result.process_results]
    candidates.append(result.effective_config.get("model"))
    for name in candidates:
        if isinstance(name, str) and name.strip() and name != "unknown":
            return name
    return "unknown"


def hash8(config_hash: str) -> str:
    """The 8 lowercase hex characters a bundle name ends with.

    LLenergyMeasure uses the first 8 characters of the config hash, and its ``report-gaps``
    reads them back as hex. A hash that does not start with 8 lowercase hex characters (our
    simulated ``sim000...``, an empty one) is replaced by the first 8 hex characters of its
    SHA-256, which is as stable as the hash itself.
    """
    head = config_hash[:8]
    if _HASH8.fullmatch(head):
        return head
    return hashlib.sha256(config_hash.encode("utf-8")).hexdigest()[:8]


def _slug(text: str) -> str:
    text = text.replace(" ", "_").replace("/", "-").replace(":", "-")
    return _UNSAFE_CHARS.sub("_", text)[:SLUG_MAX_CHARS]


def bundle_name(result: ExperimentResult) -> str:
    """The bundle folder's name: ``c1_{model_short}-{engine}_{hash8}``, as LLenergyMeasure
    names a bundle of cycle 1 outside a study index.

    ``model_short`` is the model name after its last ``/``. Spaces become ``_``, ``/`` and
    ``:`` become ``-`` (as LLenergyMeasure does), and any other character outside
    ``[A-Za-z0-9._+-]`` becomes ``_``, so the name is always one safe path component.
    """
    model_short = model_name_of(result).rsplit("/", 1)[-1] or "unknown"
    engine, _ = engine_of(result.backend)
    return f"c1_{_slug(f'{model_short}-{engine}')}_{hash8(result.measurement_config_hash)}"


def bundle_names(results: Iterable[ExperimentResult]) -> dict[str, str]:
    """Each experiment id's bundle name, clashes resolved by ``_1``, ``_2``, ... suffixes.

    Experiments are taken in id order, so the first id keeps the plain name and the same set
    of results always gets the same names.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for result in sorted(results, key=lambda r: r.experiment_id):
        base = name = bundle_name(result)
        n = 0
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names[result.experiment_id] = name
    return names


def _run_ids(extra: dict[str, Any]) -> list[str]:
    value = extra.get("run_id")
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return sorted(v for v in value if isinstance(v, str) and v)
    return []


def _energy_breakdown(result: ExperimentResult, dumped: dict[str, Any]) -> Any:
    """The breakdown, which is where 0.7.0 keeps the baseline power we hold at the top."""
    breakdown = dumped["energy_breakdown"]
    if result.baseline_power_w is None:
        return breakdown
    if breakdown is None:
        return {
            "raw_j": result.total_energy_j,
            "adjusted_j": result.energy_adjusted_j,
            "baseline_power_w": result.baseline_power_w,
        }
    if breakdown.get("baseline_power_w") is None:
        return {**breakdown, "baseline_power_w": result.baseline_power_w}
    return breakdown


def _notes(result: ExperimentResult) -> tuple[list[str], dict[str, Any]]:
    """The export's notes (without their prefix) and the throttle block."""
    notes = [PARTIAL_NOTE] if is_partial(result) else []
    _, engine_note = engine_of(result.backend)
    if engine_note:
        notes.append(engine_note)
    _, _, token_note = token_split(result)
    if token_note:
        notes.append(token_note)
    throttle: dict[str, Any] = {}
    if result.thermal_throttle is not None:
        throttle, throttle_notes = throttle_of(result.thermal_throttle)
        notes.extend(throttle_notes)
    return notes, throttle


def result_payload(result: ExperimentResult, *, timeseries: bool) -> dict[str, Any]:
    """``result.json``: 0.7.0's ``ExperimentResult``, every required key, no key it refuses.

    Args:
        result: our result.
        timeseries: whether the bundle holds ``timeseries.parquet`` (``timeseries`` names it
            only then, as 0.7.0's reader warns about a named file that is missing).
    """
    # process_results (every request's latency) has no place in 0.7.0; not dumping it is faster.
    dumped = result.model_dump(mode="json", exclude={"process_results"})
    engine, _ = engine_of(result.backend)
    inputs, outputs, _ = token_split(result)
    notes, throttle = _notes(result)
    warnings = list(result.measurement_warnings)
    for note in notes:
        entry = EXPORT_NOTE_PREFIX + note
        if entry in warnings:
            continue
        if note == PARTIAL_NOTE:
            warnings.insert(0, entry)  # first, where a reader looks
        else:
            warnings.append(entry)
    payload: dict[str, Any] = {key: dumped[key] for key in _COPIED_KEYS}
    aggregation = dumped["aggregation"]
    payload.update(
        bundle_version=BUNDLE_VERSION,
        declared_config_hash=result.measurement_config_hash,
        llenergymeasure_version=None,
        serving_mode="offline",
        engine=engine,
        model_name=model_name_of(result),
        input_tokens=inputs,
        output_tokens=outputs,
        energy_per_token_mj_total=(result.total_energy_j / outputs * 1000.0 if outputs else None),
        energy_per_token_mj_adjusted=(
            result.energy_adjusted_j / outputs * 1000.0
            if outputs and result.energy_adjusted_j is not None
            else None
        ),
        energy_breakdown=_energy_breakdown(result, dumped),
        measurement_warnings=warnings,
        timeseries=TIMESERIES_FILE if timeseries else None,
        runner_provenance={"mode": "process"},
        aggregation=({key: aggregation[key] for key in _AGGREGATION_KEYS} if aggregation else None),
        throttle=throttle or None,
    )
    return payload


def config_payload(result: ExperimentResult) -> dict[str, Any]:
    """``config.json``: the bundle's identity, our configuration, and what had no other home.

    The keys 0.7.0 writes come first-class (``engine``, ``model_name``,
    ``measurement_methodology``, ``declared_config`` = our ``effective_config``, ...); ours
    sit under ``energy_ledger``: the exporting version, whether the result is partial, the run
    ids, our aggregation facts (per-GPU attribution, completeness), the environment fields
    0.7.0 dropped, and the export's notes.
    """
    engine, _ = engine_of(result.backend)
    notes, _ = _notes(result)
    extra = dict(result.aggregation.model_extra or {}) if result.aggregation else {}
    ours: dict[str, Any] = {
        "exported_by": f"energy-ledger {__version__}",
        "lem_version": LEM_VERSION,
        "source_schema_version": result.schema_version,
        "experiment_id": result.experiment_id,
        "backend": result.backend,
        "partial": is_partial(result),
        "run_ids": _run_ids(extra),
        "aggregation": extra,
        "export_notes": notes,
    }
    env = result.environment_snapshot
    if env is not None:
        ours["environment_not_in_system_json"] = {
            "pcie_gen": env.hardware.gpu.pcie_gen,
            "mig_enabled": env.hardware.gpu.mig_enabled,
            "cudnn_version": env.hardware.cuda.cudnn_version,
            "fan_speed_pct": env.hardware.thermal.fan_speed_pct,
            "installed_packages": list(env.installed_packages),
        }
    payload: dict[str, Any] = {
        "bundle_version": BUNDLE_VERSION,
        "experiment_id": result.experiment_id,
        "declared_config_hash": result.measurement_config_hash,
        "engine": engine,
        "model_name": model_name_of(result),
        "measurement_methodology": result.measurement_methodology,
        "steady_state_not_detected": (
            result.measurement_methodology == "steady_state" and result.steady_state_window is None
        ),
        "energy_ledger": ours,
    }
    # 0.7.0 leaves optional keys out rather than writing null.
    if result.backend_version is not None:
        payload["engine_version"] = result.backend_version
    if result.steady_state_window is not None:
        payload["steady_state_window"] = list(result.steady_state_window)
    if result.effective_config:
        payload["declared_config"] = dict(result.effective_config)
    return payload


def system_payload(result: ExperimentResult) -> dict[str, Any] | None:
    """``system.json``: 0.7.0's ``EnvironmentSnapshot`` from ours; ``None`` without one.

    0.7.0 renamed ``cuda.version`` to ``driver_supported_version`` and dropped ``pcie_gen``,
    ``mig_enabled``, ``cudnn_version``, ``fan_speed_pct`` and (per experiment)
    ``installed_packages``; those go to ``config.json`` instead.
    """
    env = result.environment_snapshot
    if env is None:
        return None
    hw = env.model_dump(mode="json")["hardware"]
    return {
        "bundle_version": BUNDLE_VERSION,
        "experiment_id": result.experiment_id,
        "declared_config_hash": result.measurement_config_hash,
        "hardware": {
            "gpu": {k: hw["gpu"][k] for k in ("name", "vram_total_mb", "compute_capability")},
            "cuda": {
                "driver_supported_version": hw["cuda"]["version"],
                "driver_version": hw["cuda"]["driver_version"],
            },
            "thermal": {
                k: hw["thermal"][k]
                for k in ("temperature_c", "power_limit_w", "default_power_limit_w")
            },
            "cpu": hw["cpu"],
            "container": hw["container"],
            "collected_at": hw["collected_at"],
        },
        "python_version": env.python_version,
        "tool_version": env.tool_version,
        "cuda_version": env.cuda_version,
        "cuda_version_source": env.cuda_version_source,
        "runner": {"mode": "process"},
    }


def bundle_files(result: ExperimentResult, *, timeseries: bool) -> dict[str, dict[str, Any]]:
    """The JSON files of one result's bundle, by file name.

    ``result.json`` and ``config.json`` always; ``system.json`` when the result has an
    environment snapshot. ``timeseries`` says whether ``timeseries.parquet`` will be written
    beside them (that file is made from our own time series by ``export.lem_bundle``).
    """
    files = {
        RESULT_FILE: result_payload(result, timeseries=timeseries),
        CONFIG_FILE: config_payload(result),
    }
    system = system_payload(result)
    if system is not None:
        files[SYSTEM_FILE] = system
    return files


__all__ = [
    "BUNDLE_FILES",
    "BUNDLE_VERSION",
    "CONFIG_FILE",
    "ENGINES",
    "EXPORT_NOTE_PREFIX",
    "LEM_VERSION",
    "PARTIAL_NOTE",
    "RESULT_FILE",
    "SYSTEM_FILE",
    "TIMESERIES_FILE",
    "bundle_files",
    "bundle_name",
    "bundle_names",
    "config_payload",
    "engine_of",
    "hash8",
    "model_name_of",
    "result_payload",
    "system_payload",
    "throttle_of",
    "to_json_bytes",
    "token_split",
]
