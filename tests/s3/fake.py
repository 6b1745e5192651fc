"""A tiny fake S3 endpoint on 127.0.0.1 that does what a careless gateway does.

``FakeS3(mode)`` answers just enough of the S3 API for obstore (PUT, GET, HEAD, DELETE,
DeleteObjects, ListObjectsV2) from a dict, checking no signature:

- ``"ignore-conditions"``: every PUT succeeds, whatever ``If-None-Match`` or ``If-Match`` say
  (an S3-compatible store from before conditional writes, or a proxy that drops the headers);
- ``"ignore-if-match"``: ``If-None-Match: *`` is honoured, ``If-Match`` is not;
- ``"echo-headers"``: every request fails with 403 and a body that repeats the request's
  headers (signature and session token included), as a badly written error page might.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, unescape

MODES = ("ignore-conditions", "ignore-if-match", "echo-headers")


class FakeS3:
    """The fake endpoint, served by a thread while the context is open."""

    def __init__(self, mode: str) -> None:
        assert mode in MODES
        self.mode = mode
        self.objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, access: str, secret: str, token: str | None = None) -> dict[str, str]:
        """What a client needs to reach it, with the given (fake) credentials."""
        env = {
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        if token is not None:
            env["AWS_SESSION_TOKEN"] = token
        return env

    def __enter__(self) -> FakeS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Last-Modified", email.utils.formatdate(usegmt=True))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _key(self) -> str:
                return urlsplit(self.path).path.lstrip("/")

            def _meta(self, data: bytes) -> dict[str, str]:
                return {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}

            def _refuse_echo(self) -> bool:
                fake.requests.append((self.command, self.path))
                if fake.mode != "echo-headers":
                    return False
                echoed = " ".join(f"{k}={v}" for k, v in self.headers.items())
                self._reply(403, f"AccessDenied: {echoed}".encode())
                return True

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self._refuse_echo():
                    return
                key = self._key()
                if (
                    fake.mode == "ignore-if-match"
                    and self.headers.get("If-None-Match") == "*"
                    and key in fake.objects
                ):
                    self._reply(412, b"<Error><Code>PreconditionFailed</Code></Error>")
                    return
                fake.objects[key] = body
                self._reply(200, **self._meta(body))

            def do_GET(self) -> None:
                if self._refuse_echo():
                    return
                query = parse_qs(urlsplit(self.path).query)
                if "list-type" in query:
                    self._list(query.get("prefix", [""])[0])
                    return
                data = fake.objects.get(self._key())
                if data is None:
                    self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
                else:
                    self._reply(200, data, **self._meta(data))

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_DELETE(self) -> None:
                if self._refuse_echo():
                    return
                fake.objects.pop(self._key(), None)
                self._reply(204)

            def do_POST(self) -> None:
                # obstore deletes through DeleteObjects (POST ?delete), even a single key.
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self._refuse_echo():
                    return
                bucket = self._key()
                keys = re.findall(r"<Key>(.*?)</Key>", body.decode())
                for key in keys:
                    fake.objects.pop(f"{bucket}/{unescape(key)}", None)
                deleted = "".join(f"<Deleted><Key>{key}</Key></Deleted>" for key in keys)
                result = (
                    f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>{deleted}</DeleteResult>'
                )
                self._reply(200, result.encode(), Content_Type="application/xml")

            def _list(self, prefix: str) -> None:
                bucket = self._key()
                entries = "".join(
                    f"<Contents><Key>{escape(key.split('/', 1)[1])}</Key>"
                    f"<LastModified>2024-01-01T00:00:00.000Z</LastModified>"
                    f"<ETag>{self._meta(data)['ETag']}</ETag><Size>{len(data)}</Size></Contents>"
                    for key, data in sorted(fake.objects.items())
                    if key.startswith(f"{bucket}/{prefix}")
                )
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                    f"<Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
                    f"<IsTruncated>false</IsTruncated>{entries}</ListBucketResult>"
                )
                self._reply(200, body.encode(), Content_Type="application/xml")

        return Handler
