"""The one error hierarchy of energy-ledger.

Library code raises these; only the CLI maps them to messages and exit codes. Third-party errors
(OSError, orjson, pydantic, pynvml) are translated where they enter, with ``raise ... from exc``.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error energy-ledger raises on purpose."""


class FormatError(LedgerError):
    """A ledger file breaks the on-disk contract (corrupt line, bad marker, seq gap, ...).

    Attributes:
        path: the file, as given to the reader (may be ``None`` for in-memory streams).
        line: 1-based line number where the problem is, when it is about one line.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = path or "<stream>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.reason = message


class UnsupportedVersionError(FormatError):
    """An event or marker declares a format version newer than this aggregator reads."""


class UnsafePathError(LedgerError):
    """A name or path would lead outside the results root, or is not a valid experiment id."""


class StoreWriteError(LedgerError):
    """Writing to the results store failed: a full disk, a bucket that refused or could not be
    reached, or another writer's object already under the key (a conditional create lost).

    What it says is bad luck with the storage, not a bug: the recorder loses the recording
    instead of raising into the measured program. Its cause is the ``OSError`` when there is one.
    """


class IncompleteExperimentError(LedgerError):
    """An experiment was asked to aggregate as complete but its completeness check failed."""


class NvmlUnavailableError(LedgerError):
    """NVML cannot be used here (no driver, no GPU, or the library is missing)."""


class NvmlError(LedgerError):
    """An NVML call failed; the recorder turns these into warnings mid-run."""


class NvmlNotSupportedError(NvmlError):
    """The device does not offer this reading at all (NVML_ERROR_NOT_SUPPORTED).

    Unlike a transient ``NvmlError``, retrying is pointless: the recorder stops asking for it.
    """


class ConfigError(LedgerError):
    """The daemon's configuration is invalid (bad file, bad value, unknown key)."""


class LeaseHeldError(LedgerError):
    """Another live daemon holds the root's lease."""


class LeaseLostError(LedgerError):
    """This daemon's lease was taken over (it was presumed dead) or removed."""
