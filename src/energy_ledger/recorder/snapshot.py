"""The environment snapshot a recorder writes into ``process_started.environment``.

``build_snapshot`` gathers the GPU's static facts (from ``DeviceInfo``), the driver and CUDA
versions, the CPU governor and model, container detection and the Python software stack, and
checks the result against ``models.EnvironmentSnapshot`` so the aggregator can always load it.
Facts the schema has no field for (GPU UUID, parent UUID of a MIG instance, persistence mode, the
NVML backend) ride along as extra keys under ``hardware.gpu``; the model ignores extra keys.
Nothing here raises for a missing fact: it becomes ``None`` or ``"unknown"``.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.protocol import DeviceInfo, GpuBackend
from energy_ledger.models import EnvironmentSnapshot

logger = logging.getLogger(__name__)

_CONTAINER_CGROUP_WORDS = ("docker", "kubepods", "containerd", "libpod", "lxc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_governor(sys_root: Path = Path("/")) -> str:
    """The frequency governor of CPU 0 (``performance``, ``powersave``, ...) or ``unknown``."""
    text = _read(sys_root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return text.strip() if text and text.strip() else "unknown"


def cpu_model(sys_root: Path = Path("/")) -> str | None:
    """The CPU model name from ``/proc/cpuinfo``, or the platform's processor string."""
    for line in (_read(sys_root / "proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or None


def detect_container(
    sys_root: Path = Path("/"), environ: dict[str, str] | None = None
) -> tuple[bool, str | None]:
    """Whether this process runs in a container, and which runtime if known.

    Looks for Apptainer/Singularity variables, ``/.dockerenv``, ``/run/.containerenv`` (podman),
    the ``container`` variable (systemd-nspawn, podman) and container words in PID 1's cgroup.
    """
    env = os.environ if environ is None else environ
    if env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER"):
        return True, "apptainer"
    if (sys_root / ".dockerenv").exists():
        return True, "docker"
    if (sys_root / "run/.containerenv").exists():
        return True, "podman"
    if env.get("container"):
        return True, env["container"]
    cgroup = _read(sys_root / "proc/1/cgroup") or ""
    for word in _CONTAINER_CGROUP_WORDS:
        if word in cgroup:
            return True, "kubernetes" if word == "kubepods" else word
    return False, None


def installed_packages() -> list[str]:
    """``name==version`` of every installed distribution, sorted and without duplicates."""
    found = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.add(f"{name}=={dist.version}")
    return sorted(found, key=str.lower)


def _tool_version() -> str:
    try:
        return metadata.version("energy-ledger")
    except metadata.PackageNotFoundError:
        from energy_ledger import __version__

        return __version__


def _cuda_runtime_version() -> str | None:
    """The CUDA runtime of an already-imported torch (never imports torch: it is slow)."""
    torch = sys.modules.get("torch")
    version = getattr(getattr(torch, "version", None), "cuda", None)
    return str(version) if version else None


def build_snapshot(
    backend: GpuBackend, info: DeviceInfo, *, packages: bool = True
) -> dict[str, Any]:
    """The ``EnvironmentSnapshot`` of this process and its GPU, as a JSON-ready dict.

    Args:
        backend: the NVML backend (for driver versions).
        info: the device's static facts.
        packages: list installed packages (tens of milliseconds; tests may skip it).

    Raises:
        LedgerError: the snapshot does not fit ``EnvironmentSnapshot`` (a bug in this module).
    """
    detected, runtime = detect_container()
    cuda_driver = backend.cuda_driver_version()
    cuda_runtime = _cuda_runtime_version()
    snapshot: dict[str, Any] = {
        "hardware": {
            "gpu": {
                "name": info.name or "unknown",
                "vram_total_mb": info.vram_total_mb or 0.0,
                "compute_capability": info.compute_capability,
                "pcie_gen": info.pcie_gen,
                "mig_enabled": info.mig_enabled,
                "uuid": info.uuid,
                "parent_uuid": info.parent_uuid,
                "mig_profile": info.mig_profile,
                "persistence_mode": info.persistence_mode,
                "nvml_backend": backend.name,
            },
            "cuda": {
                "version": cuda_runtime or cuda_driver or "unknown",
                "driver_version": backend.driver_version() or "unknown",
            },
            "thermal": {
                "temperature_c": info.temperature_c,
                "power_limit_w": info.power_limit_w,
                "default_power_limit_w": info.default_power_limit_w,
            },
            "cpu": {
                "governor": cpu_governor(),
                "model": cpu_model(),
                "platform": platform.platform(),
            },
            "container": {"detected": detected, "runtime": runtime},
            "collected_at": datetime.now(UTC).isoformat(),
        },
        "python_version": platform.python_version(),
        "installed_packages": installed_packages() if packages else [],
        "tool_version": _tool_version(),
        "cuda_version": cuda_runtime or cuda_driver,
        "cuda_version_source": (
            "torch" if cuda_runtime else "nvml_driver" if cuda_driver else None
        ),
    }
    try:
        EnvironmentSnapshot.model_validate(snapshot)
    except ValidationError as exc:
        raise LedgerError(f"environment snapshot does not fit the schema: {exc}") from exc
    return snapshot


__all__ = [
    "build_snapshot",
    "cpu_governor",
    "cpu_model",
    "detect_container",
    "installed_packages",
]
