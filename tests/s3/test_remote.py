"""store.remote without a real S3 server: the missing-extra hint, the URL shown, redaction, and
the probe against fake endpoints that ignore conditions or echo credentials."""

from __future__ import annotations

import os
import sys
import traceback

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.store.objects import open_objects
from energy_ledger.store.probe import ConditionalWritesUnsupported, probe_conditional_writes
from energy_ledger.store.remote import S3_HINT, open_bucket, redact
from tests.s3.fake import FakeS3

pytest.importorskip("obstore")

FAKE_ACCESS = "AKIAFAKEACCESS0000042"
FAKE_SECRET = "fakeSecretKey-do-not-print-7f3a9c1e"
FAKE_TOKEN = "FwoGZXIvYXdzFAKESESSIONTOKEN-do-not-print-91bc"
SECRETS = (FAKE_SECRET, FAKE_TOKEN, FAKE_ACCESS)


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly ``env`` of the ``AWS_*`` variables (nothing of the host's)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _everything_said(exc: BaseException) -> str:
    """The message, the repr and the whole printed traceback, chained exceptions included."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


class TestOpening:
    """What ``open_bucket`` needs and what it shows."""

    def test_without_obstore(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the extra, a bucket root says what to install."""
        monkeypatch.setitem(sys.modules, "obstore", None)
        monkeypatch.setitem(sys.modules, "obstore.store", None)
        with pytest.raises(LedgerError) as caught:
            open_objects("s3://bucket/prefix")
        assert str(caught.value) == S3_HINT
        assert "pip install 'energy-ledger[s3]'" in S3_HINT

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("s3://bucket/prefix", "s3://bucket/prefix"),
            ("s3://bucket/prefix/", "s3://bucket/prefix"),
            ("s3://bucket", "s3://bucket"),
            ("gs://bucket/a/b", "gs://bucket/a/b"),
        ],
    )
    def test_url_shown(self, url: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """The URL in messages is scheme, bucket and prefix only."""
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        assert open_bucket(url).url == shown

    def test_not_a_bucket_url(self) -> None:
        """A local path is not a bucket."""
        with pytest.raises(LedgerError, match="not a bucket URL"):
            open_bucket("/data/results")

    def test_a_bad_setting_is_a_ledger_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A setting obstore cannot parse fails on opening, naming the URL."""
        monkeypatch.setenv("AWS_ALLOW_HTTP", "maybe")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
        with pytest.raises(LedgerError, match="cannot open s3://bucket/p") as caught:
            open_bucket("s3://bucket/p")
        assert FAKE_SECRET not in _everything_said(caught.value)


class TestRedact:
    """``redact`` takes every credential out of obstore's text."""

    def test_first_line_only(self) -> None:
        """The debug dump after the first line is dropped."""
        assert redact("Generic error: boom\n\nDebug source:\nGeneric { secret }") == (
            "Generic error: boom"
        )

    def test_query_strings_and_signature_fields(self) -> None:
        """A signed URL's query and an echoed authorization header are blanked."""
        text = redact(
            "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1%2F2024&X-Amz-Signature=ab12 "
            "failed; Authorization: AWS4-HMAC-SHA256 Credential=AKIA1/2024/us-east-1/s3, "
            "SignedHeaders=host, Signature=deadbeef"
        )
        assert "AKIA1" not in text and "ab12" not in text and "deadbeef" not in text
        assert "https://b.s3.amazonaws.com/k?..." in text

    def test_environment_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The value of a credential-like variable is blanked wherever it appears."""
        monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_TOKEN)
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", FAKE_SECRET)
        text = redact(f"server said token {FAKE_TOKEN} and key {FAKE_SECRET}")
        assert FAKE_TOKEN not in text and FAKE_SECRET not in text

    def test_bounded(self) -> None:
        """A long message is cut."""
        assert len(redact("x" * 5000)) == 300


class TestFakeEndpoints:
    """Through ``open_bucket`` over HTTP, against endpoints that misbehave on purpose."""

    @pytest.mark.parametrize(
        ("mode", "check"),
        [
            ("ignore-conditions", "a second create of an existing key was accepted"),
            ("ignore-if-match", "a write with an ETag the object never had was accepted"),
        ],
    )
    def test_probe_refuses_a_store_that_ignores_conditions(
        self, mode: str, check: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The probe fails with a message naming the store, the failed check and what it
        means, and removes its object."""
        with FakeS3(mode) as fake:
            _set_env(monkeypatch, fake.env(FAKE_ACCESS, FAKE_SECRET))
            store = open_bucket("s3://careless/root")
            with pytest.raises(ConditionalWritesUnsupported) as caught:
                probe_conditional_writes(store)
            assert fake.objects == {}
        message = str(caught.value)
        assert message.startswith("s3://careless/root does not honour conditional writes")
        assert check in message
        assert "several daemons could both emit" in message

    def test_credentials_echoed_by_a_server_are_not_repeated(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A server whose error body repeats the request's headers (session token,
        signature) does not get them into a message or a traceback."""
        with FakeS3("echo-headers") as fake:
            _set_env(monkeypatch, fake.env(FAKE_ACCESS, FAKE_SECRET, FAKE_TOKEN))
            store = open_bucket("s3://echo/root")
            calls = {
                "list": lambda: store.list("raw/"),
                "head": lambda: store.head("raw/x"),
                "get": lambda: store.get("raw/x", 3),
                "put": lambda: store.put("raw/x", b"x"),
                "create": lambda: store.put("raw/x", b"x", create=True),
                "if_match": lambda: store.put("raw/x", b"x", if_match='"e"'),
                "delete": lambda: store.delete("raw/x"),
            }
            for name, call in calls.items():
                with pytest.raises(LedgerError) as caught:
                    call()
                said = _everything_said(caught.value)
                for secret in SECRETS:
                    assert secret not in said, (name, said)
                assert "Signature=..." in str(caught.value) or "403" in str(caught.value)
                assert "s3://echo/root" in str(caught.value)
