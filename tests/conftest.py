"""Shared pytest fixtures (plain helper functions are in modules beside this one)."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def compat_dir() -> Path:
    """Return the shared compat folder beside the repository, skipping when it is absent."""
    path = Path(__file__).resolve().parents[2] / "shared" / "compat"
    if not path.is_dir():
        pytest.skip(f"compat files not found at {path}")
    return path


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the CLI's logging set-up, so later tests' ``caplog`` still sees records."""
    logger = logging.getLogger("energy_ledger")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
