"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture
def compat_dir() -> Path:
    """Return the shared compat folder beside the repository, skipping when it is absent."""
    path = Path(__file__).resolve().parents[2] / "shared" / "compat"
    if not path.is_dir():
        pytest.skip(f"compat files not found at {path}")
    return path
