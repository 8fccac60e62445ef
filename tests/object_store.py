"""A real S3 server on loopback for tests: moto in server mode (`moto[server]`), one bucket, stopped at the end.

Test modules import the fixtures they use (`from tests.object_store import s3_server, s3_root`, and name them
once so linters see them used). Clients talk to it over HTTP like to any S3-compatible store: pyarrow's
S3FileSystem, delta-rs and boto3.

The server runs in a child process, not in a thread of the test process: some deltalake calls
(`DeltaTable.is_deltatable`) wait for the network while holding the GIL, so a server thread in the same
process could never answer them (each such call hung until its 180 s retry budget ran out).

moto answers PutObject's `If-None-Match: *` and `If-Match: <etag>` with 412 PreconditionFailed, as S3 does, but
checks and stores in two steps without a lock (two racing PUTs of one key could both pass the check); the
server serializes PutObject (`_atomic_put_object`) so that conditional puts are atomic, as on S3.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BUCKET = "relevance-tests"
REGION = "us-east-1"
# moto accepts any credentials; real-looking ones keep every client on the signed (SigV4) path.
ACCESS_KEY_ID = "AKIATESTRELEVANCE000"
SECRET_ACCESS_KEY = "test-secret-access-key-for-moto-only"


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server: where it is, its bucket and the credentials it takes."""

    endpoint_url: str  # http://127.0.0.1:<port>
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    def uri(self, *parts: str) -> str:
        """`s3://<bucket>/<parts...>`."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts if p.strip("/"))])

    def storage_options(self, **extra: str) -> dict[str, str]:
        """delta-rs storage options for this server (also what plumbing.storage.filesystem takes).

        AWS_CONDITIONAL_PUT=etag: delta-rs commits a version with PutObject `If-None-Match: *`, so of two
        writers of one version exactly one succeeds (no AWS_S3_ALLOW_UNSAFE_RENAME, no DynamoDB lock).
        deltalake 1.6 does so on s3:// without the option too (seen on this server); it is set to say so, and
        `disabled` would make every commit fail (delta-rs 1.x has no unsafe-rename fallback any more)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            "AWS_CONDITIONAL_PUT": "etag",
            **extra,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (to set up and inspect objects independently of the code under test)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key, region_name=self.region)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key of the bucket under `prefix` (an s3:// URI of the bucket or a plain key prefix), sorted."""
        prefix = prefix.removeprefix(f"s3://{self.bucket}/") if prefix.startswith("s3://") else prefix
        keys: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)


@contextlib.contextmanager
def _atomic_put_object() -> Iterator[None]:
    """Serialize moto's PutObject handler, so its If-None-Match / If-Match check and the store are one step."""
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    @functools.wraps(original)
    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    S3Response.put_object = put_object  # type: ignore[method-assign]
    try:
        yield
    finally:
        S3Response.put_object = original  # type: ignore[method-assign]


def serve() -> None:
    """The server process: moto's S3 on 127.0.0.1 (a free port) with atomic conditional puts; prints
    `port <n>` once listening and stops when its standard input closes (the test session ended or died)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with _atomic_put_object():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        print(f"port {server.get_host_and_port()[1]}", flush=True)
        sys.stdin.read()
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server in a child process on 127.0.0.1 (a free port), with the bucket BUCKET; stopped after
    the session. Its log: <pytest tmp>/moto-*/server.log."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    log = tmp_path_factory.mktemp("moto") / "server.log"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with log.open("w") as errors:
        process = subprocess.Popen([sys.executable, "-c", "from tests.object_store import serve; serve()"], cwd=root,
                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        first = _read_line(process, timeout=60)
        if not first.startswith("port "):
            raise RuntimeError(f"the moto S3 server did not start (exit {process.poll()}); see {log}: "
                               f"{log.read_text()[-2000:]}")
        s3 = S3Server(f"http://127.0.0.1:{int(first.split()[1])}", BUCKET, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line the process prints ("" when it exits or prints nothing within `timeout` seconds)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


@pytest.fixture()
def s3_root(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh `s3://` folder of the shared bucket for one test (no object under it yet)."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return s3_server.uri(f"{name}-{uuid.uuid4().hex[:8]}")
