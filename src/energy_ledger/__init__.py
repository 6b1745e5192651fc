"""energy-ledger: crash-safe event ledgers and late aggregation for multi-GPU energy results.

This module only re-exports what users call; everything else stays importable from its own
module (docs/architecture.md says what lives where). ``ProcessRecorder`` is loaded on first
use, so ``import energy_ledger`` on an aggregation host loads neither the recorder nor pynvml
nor watchdog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from energy_ledger._version import __version__
from energy_ledger.core.aggregation import aggregate_results
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
from energy_ledger.models import ExperimentResult, RawProcessResult
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.store.exporters import export_aggregated_to_csv
from energy_ledger.store.reader import validate_process_completeness
from energy_ledger.store.writer import EventLogWriter

if TYPE_CHECKING:
    from energy_ledger.recorder.recorder import ProcessRecorder


def __getattr__(name: str) -> Any:
    """Load ``ProcessRecorder`` (and with it the GPU backend) only when it is asked for."""
    if name == "ProcessRecorder":
        from energy_ledger.recorder.recorder import ProcessRecorder

        return ProcessRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
