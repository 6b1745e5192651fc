"""Fixtures for tests on a real S3 server: one SeaweedFS per session, one bucket per test.

``s3_server`` skips every test that asks for it, with the reason, where ``weed`` is missing or
cannot start (``ENERGY_LEDGER_WEED=/nonexistent`` forces that). ``s3_url`` gives a test its own
bucket and the client environment (``monkeypatch``), as ``s3://<bucket>/root``.
``s3_prefix_url`` is cheaper: a fresh prefix of one bucket shared by the session (a new
bucket's first write takes 0.2 s, a new prefix nothing), for tests that need an empty root and
not a bucket of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.s3.server import SeaweedServer, WeedUnavailable, new_bucket_name

ROOT_PREFIX = "root"
"""The prefix of ``s3_url`` inside its bucket (a root is a bucket prefix, not a whole bucket)."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedServer]:
    """A running SeaweedFS for the whole session (or a skip saying why there is none)."""
    try:
        server = SeaweedServer()
        server.start()
    except WeedUnavailable as exc:
        reason = " | ".join(line for line in str(exc).splitlines() if line.strip())
        pytest.skip(f"no S3 test server: {reason[:1000]}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The client environment of ``s3_server``, set in this process; any other ``AWS_*``
    variable (a profile, a session token) is removed so nothing of the host leaks in."""
    env = s3_server.env
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_bucket(s3_server: SeaweedServer, s3_env: dict[str, str]) -> str:
    """A new, empty bucket of ``s3_server``."""
    name = new_bucket_name()
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    """A results root on its own bucket: ``s3://<bucket>/root``, the environment set."""
    return f"s3://{s3_bucket}/{ROOT_PREFIX}"


@pytest.fixture(scope="session")
def s3_shared_bucket(s3_server: SeaweedServer) -> str:
    """One bucket for the session, already written to once (so its volume exists)."""
    name = new_bucket_name()
    s3_server.create_bucket(name)
    s3_server.put_object(name, "warm-up", b"")
    return name


@pytest.fixture
def s3_prefix_url(s3_shared_bucket: str, s3_env: dict[str, str]) -> str:
    """An empty results root: ``s3://<shared bucket>/root-<uuid>``, the environment set."""
    return f"s3://{s3_shared_bucket}/{ROOT_PREFIX}-{uuid.uuid4().hex[:12]}"
