"""A bucket as an ``ObjectStore``: S3, GCS or Azure Blob through obstore.

obstore (the ``s3`` extra) is the only library this module uses and the only place it is
imported, on first use, so a GPU node without it loses nothing but bucket roots. It speaks the
conditional writes natively: ``put(create=True)`` is ``If-None-Match: *`` and
``put(if_match=etag)`` is ``If-Match``, both refused by the server with 412 when the condition
does not hold, so no store-side lock or extra service is needed (see docs/object-storage.md).

Credentials and the endpoint come from the environment, as every S3, GCS and Azure tool reads
them (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_ACCOUNT_NAME``, ...), never from the URL or a file of ours. They never reach a
message: obstore's error text is cut to its first line, URL query strings (where a signed URL
keeps its signature) are dropped, and the value of every credential-like variable set in the
environment is blanked before it is shown.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import re
from typing import TYPE_CHECKING, Literal, NoReturn
from urllib.parse import urlsplit

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.store.objectstore import (
    URL_SCHEMES,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    check_key,
    folder_of,
)

if TYPE_CHECKING:
    from obstore import ObjectMeta, PutMode
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

S3_HINT = "a bucket root needs obstore: pip install 'energy-ledger[s3]'"

CONNECT_TIMEOUT_SEC = 10
"""obstore's default is 5 s; a loaded gateway can be slower to accept."""
REQUEST_TIMEOUT_SEC = 30
"""One request, from connecting to the last byte. Contended conditional writes on one key are
serialized by the server and took up to 6 s each on SeaweedFS (docs/object-storage.md)."""
RETRY_TIMEOUT_SEC = 60
"""How long obstore keeps retrying a failed idempotent request (its default is 180 s: a daemon
would sit that long on an unreachable endpoint before saying so)."""
MAX_DETAIL_CHARS = 300
"""How much of obstore's own message a ``LedgerError`` carries."""

_ENV_PREFIX = {"s3": "AWS_", "gs": "GOOGLE_", "az": "AZURE_"}
"""Where obstore reads each store's settings from the environment."""
_CLIENT_KEYS = (
    "allow_http",
    "allow_invalid_certificates",
    "connect_timeout",
    "timeout",
    "proxy_url",
    "proxy_ca_certificate",
    "proxy_excludes",
    "user_agent",
    "http1_only",
    "http2_only",
    "pool_idle_timeout",
    "pool_max_idle_per_host",
)
"""Client settings obstore would read from ``<PREFIX><KEY>`` itself, but ignores once
``client_options`` is passed: they are copied over so the environment still rules."""
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|SAS|KEY|CREDENTIAL", re.IGNORECASE)
_QUERY = re.compile(r"(https?://[^\s?#]*)\?[^\s]*")
_SIGNED_FIELD = re.compile(r"(Credential|Signature|Security-Token|sig)=[^\s,&;]+", re.IGNORECASE)


def open_bucket(url: str) -> Bucket:
    """The bucket (and prefix) a URL names: ``s3://bucket/prefix``, ``gs://...``, ``az://...``.

    Raises:
        LedgerError: obstore is not installed, or the URL or the environment's settings
            cannot make a store.
    """
    if not url.startswith(URL_SCHEMES):
        raise LedgerError(f"not a bucket URL: {url!r} (s3://, gs:// or az://)")
    try:
        from obstore.store import from_url
    except ImportError as exc:
        raise LedgerError(S3_HINT) from exc
    shown = _clean_url(url)
    try:
        store = from_url(
            url,
            client_options=_client_options(url.split(":", 1)[0]),
            retry_config=_retry_config(),
        )
    except Exception as exc:  # obstore raises its own errors and ValueError
        _fail(shown, "", "open", exc)
    return Bucket(shown, store, version_tags=url.startswith("gs://"))


class Bucket:
    """An ``ObjectStore`` on a bucket prefix, through one obstore client.

    Keys are relative to the URL's prefix, so two roots in one bucket never see each other's
    objects. Thread-safe: obstore's client is, and this class holds no other state.

    ``ObjectInfo.etag`` is the tag ``if_match`` compares: the ETag on S3 and Azure
    (``If-Match``), the object's generation on GCS (``version_tags``), where obstore makes a
    conditional update with ``x-goog-if-generation-match`` and needs the generation, not the
    ETag.
    """

    def __init__(self, url: str, store: ObjectStore, *, version_tags: bool = False) -> None:
        self._url = url
        self._store = store
        self._tag: Literal["e_tag", "version"] = "version" if version_tags else "e_tag"

    @property
    def url(self) -> str:
        return self._url

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # obstore matches a prefix whole segments at a time ("a" lists a/x, not ab): ask for
        # the folder part and keep what starts with the whole prefix.
        folder = prefix.rpartition("/")[0]
        if folder:
            try:
                check_key(folder)
            except UnsafePathError:  # no key has an unsafe part
                return []
        try:
            found = self._store.list(folder or None).collect()
        except Exception as exc:
            _fail(self._url, prefix, "list", exc)
        infos = [self._info(meta) for meta in found if meta["path"].startswith(prefix)]
        return sorted(infos, key=lambda info: info.key)

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        folder = folder_of(prefix)
        if folder is None:
            return []
        try:
            found = self._store.list_with_delimiter(folder or None)
        except Exception as exc:
            _fail(self._url, prefix, "list", exc)
        # Common prefixes come back without the final "/" ("raw/e1").
        return sorted(path.rpartition("/")[2] for path in found["common_prefixes"])

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            meta = self._store.head(key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            _fail(self._url, key, "head", exc)
        return self._info(meta)

    def get(self, key: str, start: int = 0) -> bytes:
        check_key(key)
        try:
            if start <= 0:
                return bytes(self._store.get(key).bytes())
            return bytes(self._store.get(key, options={"range": {"offset": start}}).bytes())
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self._url}") from None
        except Exception as exc:
            # A range starting at or past the end is refused (416); a file read from there
            # gives nothing, and so does this.
            if start > 0 and (info := self.head(key)) is not None and info.size <= start:
                return b""
            _fail(self._url, key, "get", exc)

    def put(
        self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        check_key(key)
        mode: PutMode = "overwrite"
        if create:
            mode = "create"
        elif if_match is not None:
            mode = {"version": if_match} if self._tag == "version" else {"e_tag": if_match}
        try:
            result = self._store.put(key, data, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            raise self._lost(key, create) from None
        except FileNotFoundError as exc:
            if if_match is not None:  # AWS answers If-Match on a missing key with 404
                raise self._lost(key, create) from None
            _fail(self._url, key, "put", exc)  # no such bucket
        except Exception as exc:
            _fail(self._url, key, "put", exc)
        etag = result[self._tag]
        if not etag:
            raise LedgerError(f"{self._url} returned no ETag for {key!r}")
        return ObjectInfo(key, len(data), etag)

    def _lost(self, key: str, create: bool) -> PreconditionFailed:
        if create:
            return PreconditionFailed(f"object {key!r} exists in {self._url}")
        return PreconditionFailed(f"object {key!r} in {self._url} is missing or another version")

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._store.delete(key)
        except FileNotFoundError:
            pass
        except Exception as exc:
            _fail(self._url, key, "delete", exc)

    def _info(self, meta: ObjectMeta) -> ObjectInfo:
        etag = meta[self._tag]
        if not etag:
            raise LedgerError(f"{self._url} listed {meta['path']!r} without an ETag")
        modified = meta.get("last_modified")
        modified_t = modified.timestamp() if modified is not None else None
        return ObjectInfo(meta["path"], meta["size"], etag, modified_t)


def _client_options(scheme: str) -> ClientConfig:
    options: ClientConfig = {
        "connect_timeout": dt.timedelta(seconds=CONNECT_TIMEOUT_SEC),
        "timeout": dt.timedelta(seconds=REQUEST_TIMEOUT_SEC),
    }
    prefix = _ENV_PREFIX.get(scheme, "AWS_")
    for key in _CLIENT_KEYS:
        value = os.environ.get(prefix + key.upper())
        if value is not None:
            options[key] = value  # type: ignore[literal-required]
    return options


def _retry_config() -> RetryConfig:
    return {"retry_timeout": dt.timedelta(seconds=RETRY_TIMEOUT_SEC)}


def _fail(url: str, key: str, action: str, exc: BaseException) -> NoReturn:
    """Raise the ``LedgerError`` for a failed call: where, what, and obstore's reason with
    every credential taken out.

    The original exception is not chained (``from None``): its text and its debug dump are
    what this function cleans, and a traceback would print them whole.
    """
    where = f"{url}/{key}" if key else url
    raise LedgerError(
        f"cannot {action} {where}: {type(exc).__name__}: {redact(str(exc))}"
    ) from None


def redact(text: str) -> str:
    """obstore's message made safe to show: first line only, no URL query, no signature
    fields, no value of a credential-like environment variable, at most
    ``MAX_DETAIL_CHARS`` characters."""
    text = text.strip().split("\n", 1)[0]
    text = _QUERY.sub(r"\1?...", text)
    text = _SIGNED_FIELD.sub(r"\1=...", text)
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "...")
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 3] + "..."
    return text


def _clean_url(url: str) -> str:
    """The URL as shown in messages: scheme, bucket and prefix only (no user, password,
    query or fragment), without a trailing ``/``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


__all__ = ["S3_HINT", "Bucket", "open_bucket", "redact"]
