"""pyarrow, when installed, and the one set of Parquet write options every file uses.

The time series and request tables (``store.series``), the dataset of all results
(``export.dataset``) and the bundles' time series (``export.lem_bundle``) are derived outputs:
the same logs must give the same bytes. Every option that shapes the bytes is fixed here, so
the files differ only where their data does; pyarrow's own version is written into each file's
footer (``created_by``), so bytes are stable for one pyarrow version.

pyarrow comes with the ``parquet`` extra. It is imported on first use (``arrow``), never at
module import, so everything else works on a GPU node without it.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from energy_ledger.exceptions import LedgerError

PARQUET_HINT = "writing Parquet needs pyarrow: pip install 'energy-ledger[parquet]'"


def parquet_available() -> bool:
    """True when pyarrow is installed (without importing it)."""
    return importlib.util.find_spec("pyarrow") is not None


def arrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a ``LedgerError`` saying what to install."""
    # import_module rather than an import statement: pyarrow ships no type information, and
    # this keeps mypy quiet whether or not a stub package or an override is installed.
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise LedgerError(PARQUET_HINT) from exc


def write_options(zstd_level: int) -> dict[str, Any]:
    """Options for ``pyarrow.parquet.write_table`` and ``ParquetWriter`` that fix the bytes:
    format 2.6, data pages v1, zstd at ``zstd_level``, statistics on, the Arrow schema stored.

    Dictionary encoding is each caller's (``use_dictionary``): it pays only on columns of few
    distinct values.
    """
    return {
        "version": "2.6",
        "data_page_version": "1.0",
        "compression": "zstd",
        "compression_level": zstd_level,
        "write_statistics": True,
        "store_schema": True,
    }


__all__ = ["PARQUET_HINT", "arrow", "parquet_available", "write_options"]
