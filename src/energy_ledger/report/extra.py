"""Whether the report's optional libraries are installed (``pip install 'energy-ledger[report]'``).

The report draws with matplotlib and lays pages out with jinja2. Neither is needed to measure
or to aggregate, so a GPU node's install stays light; the commands that write reports check
here first and say what to install instead of failing on an import.
"""

from __future__ import annotations

import importlib.util

from energy_ledger.exceptions import LedgerError

LIBRARIES = ("matplotlib", "jinja2")
INSTALL_HINT = "pip install 'energy-ledger[report]'"


def missing_libraries() -> list[str]:
    """The report libraries that cannot be imported here."""
    return [name for name in LIBRARIES if importlib.util.find_spec(name) is None]


def require_report_libraries() -> None:
    """Raise a ``LedgerError`` naming what to install when a report library is missing."""
    missing = missing_libraries()
    if missing:
        raise LedgerError(
            f"writing reports needs {' and '.join(missing)}, which are not installed: "
            f"{INSTALL_HINT}"
        )


__all__ = ["INSTALL_HINT", "LIBRARIES", "missing_libraries", "require_report_libraries"]
