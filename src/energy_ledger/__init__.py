"""energy-ledger: crash-safe event ledgers and late aggregation for multi-GPU energy results."""

from energy_ledger._version import __version__
from energy_ledger.events import FORMAT_VERSION
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
from energy_ledger.replay import ReplayCursor, replay_stream
from energy_ledger.writer import EventLogWriter

__all__ = [
    "FORMAT_VERSION",
    "EventLogWriter",
    "ExperimentResult",
    "FormatError",
    "IncompleteExperimentError",
    "LedgerError",
    "NvmlError",
    "NvmlUnavailableError",
    "RawProcessResult",
    "ReplayCursor",
    "UnsafePathError",
    "UnsupportedVersionError",
    "__version__",
    "replay_stream",
]
