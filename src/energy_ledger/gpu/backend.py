"""Choosing the GPU backend: real NVML, or the fake one for tests and demos."""

from __future__ import annotations

import os

from energy_ledger.exceptions import NvmlError
from energy_ledger.gpu.protocol import NVML_ENV_VAR, GpuBackend


def open_backend(kind: str | None = None) -> GpuBackend:
    """The backend to use: ``kind`` if given, else ``$ENERGY_LEDGER_NVML``, else real NVML.

    Args:
        kind: ``"nvml"``, ``"fake"`` or ``None``.

    Raises:
        NvmlUnavailableError: real NVML was asked for and cannot start here.
        NvmlError: ``kind`` is not a known backend name.
    """
    chosen = (kind or os.environ.get(NVML_ENV_VAR) or "nvml").strip().lower()
    if chosen == "fake":
        from energy_ledger.gpu.fake import FakeNvml

        return FakeNvml.from_env()
    if chosen == "nvml":
        from energy_ledger.gpu.nvml import NvmlBackend

        return NvmlBackend()
    raise NvmlError(f"unknown NVML backend {chosen!r} (from {NVML_ENV_VAR}); use 'nvml' or 'fake'")
