"""The test server helper itself: where it finds ``weed`` and how it fails (so that a
missing or broken binary skips the S3 tests with a reason instead of hanging them)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.s3.server import (
    WEED_ENV,
    SeaweedServer,
    WeedUnavailable,
    _ephemeral_low,
    find_weed,
    free_ports,
)


class TestFindWeed:
    """``find_weed`` honours the override, and says why when there is nothing to run."""

    def test_override_to_a_missing_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Pointing the override at nothing makes SeaweedFS unavailable, with the reason."""
        monkeypatch.setenv(WEED_ENV, "/nonexistent/weed")
        with pytest.raises(WeedUnavailable, match="ENERGY_LEDGER_WEED=/nonexistent/weed"):
            find_weed()

    def test_override_to_an_executable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An executable override is used as is."""
        true = shutil.which("true")
        assert true is not None
        monkeypatch.setenv(WEED_ENV, true)
        assert find_weed() == true


class TestStartFailure:
    """A binary that exits at once is retried on new ports, then reported."""

    def test_early_exit_is_reported_and_cleaned_up(self) -> None:
        """``start`` raises ``WeedUnavailable`` naming the exit, and leaves no folder."""
        false = shutil.which("false")
        assert false is not None
        before = set(Path(tempfile.gettempdir()).glob("el-weed-*"))
        server = SeaweedServer(false)
        with pytest.raises(WeedUnavailable, match="weed exited with 1"):
            server.start()
        assert set(Path(tempfile.gettempdir()).glob("el-weed-*")) == before
        assert server.proc is None


def test_free_ports_leave_room_for_grpc() -> None:
    """Each port and its gRPC twin (P + 10000) are distinct and below the ephemeral range."""
    ports = free_ports()
    both = ports + [p + 10000 for p in ports]
    assert len(set(both)) == len(both)
    assert all(10000 <= p < _ephemeral_low() for p in both)
