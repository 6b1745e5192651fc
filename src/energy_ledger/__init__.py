"""energy-ledger: crash-safe event ledgers and late aggregation for multi-GPU energy results.

This module only re-exports what users call; everything else stays importable from its own
module (docs/architecture.md says what lives where). Each name is loaded on first use, so
``import energy_ledger`` (which every submodule's import runs first) costs almost nothing: an
aggregation host loads neither the recorder nor pynvml nor watchdog, and a hook's supervisor
process (``daemon.bucket_supervise``) loads neither pydantic nor numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from energy_ledger._version import __version__
from energy_ledger.exceptions import (
    ConfigError,
    FormatError,
    IncompleteExperimentError,
    LedgerError,
    NvmlError,
    NvmlUnavailableError,
    UnsafePathError,
    UnsupportedVersionError,
)

if TYPE_CHECKING:
    from energy_ledger.core.aggregation import aggregate_results
    from energy_ledger.models import ExperimentResult, RawProcessResult
    from energy_ledger.pipeline import recover_experiment, replay_root
    from energy_ledger.recorder.recorder import ProcessRecorder
    from energy_ledger.store.exporters import export_aggregated_to_csv
    from energy_ledger.store.reader import validate_process_completeness
    from energy_ledger.store.writer import EventLogWriter

_LAZY = {
    "aggregate_results": "energy_ledger.core.aggregation",
    "ExperimentResult": "energy_ledger.models",
    "RawProcessResult": "energy_ledger.models",
    "recover_experiment": "energy_ledger.pipeline",
    "replay_root": "energy_ledger.pipeline",
    "ProcessRecorder": "energy_ledger.recorder.recorder",
    "export_aggregated_to_csv": "energy_ledger.store.exporters",
    "validate_process_completeness": "energy_ledger.store.reader",
    "EventLogWriter": "energy_ledger.store.writer",
}
"""Where each name the package exports lives; loaded on first use."""


def __getattr__(name: str) -> Any:
    """Load an exported name's module on first use (and cache the name here)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ConfigError",
    "EventLogWriter",
    "ExperimentResult",
    "FormatError",
    "IncompleteExperimentError",
    "LedgerError",
    "NvmlError",
    "NvmlUnavailableError",
    "ProcessRecorder",
    "RawProcessResult",
    "UnsafePathError",
    "UnsupportedVersionError",
    "__version__",
    "aggregate_results",
    "export_aggregated_to_csv",
    "recover_experiment",
    "replay_root",
    "validate_process_completeness",
]
