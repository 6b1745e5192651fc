"""energy-ledger: crash-safe event ledgers and late aggregation for multi-GPU energy results.

The package only re-exports; see docs/architecture.md for what lives where.
"""

from energy_ledger._version import __version__
from energy_ledger.core.aggregation import aggregate_results
from energy_ledger.core.completeness import CompletenessReport, check_completeness
from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import ReplayCursor, replay_stream
from energy_ledger.exceptions import (
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
from energy_ledger.recorder.recorder import ProcessRecorder
from energy_ledger.store.exporters import export_aggregated_to_csv, export_result_json
from energy_ledger.store.reader import scan_experiment, validate_process_completeness
from energy_ledger.store.writer import EventLogWriter

__all__ = [
    "FORMAT_VERSION",
    "CompletenessReport",
    "EventLogWriter",
    "ExperimentResult",
    "FormatError",
    "IncompleteExperimentError",
    "LedgerError",
    "NvmlError",
    "NvmlUnavailableError",
    "ProcessRecorder",
    "ProcessSummary",
    "RawProcessResult",
    "ReplayCursor",
    "UnsafePathError",
    "UnsupportedVersionError",
    "__version__",
    "aggregate_results",
    "check_completeness",
    "export_aggregated_to_csv",
    "export_result_json",
    "recover_experiment",
    "replay_root",
    "replay_stream",
    "scan_experiment",
    "summarize_process",
    "validate_process_completeness",
]
