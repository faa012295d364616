"""Shared fixtures: a real S3 server on loopback, and one URI per storage backend.

The S3 tests talk HTTP to moto's standalone server running as a separate process,
the way the code talks to MinIO or AWS: signing, retries, multipart uploads and
conditional writes all go over the wire. Nothing in boto3 is patched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Dummy keys: moto accepts any unless told to enforce auth, and real AWS never sees them.
TEST_ACCESS_KEY = "AKIAKUBELOOPTESTKEY1"
TEST_SECRET_KEY = "kubeloop-test-secret-do-not-leak-0123456789"

_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch, tmp_path_factory):
    """No test may pick up the developer's AWS profile, endpoint or real keys."""
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    """A moto S3 server in its own process."""

    process: subprocess.Popen
    endpoint: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def set_auth(self, enforce: bool) -> None:
        """Switch moto's IAM authentication on or off (its /moto-api/reset-auth hook:
        the number of requests served before authentication starts)."""
        body = b"0" if enforce else b"inf"
        # text/plain: a form content type would let the server parse the body away.
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200


def _die_with_parent() -> None:
    """Runs in the server's process before exec: on Linux, ask the kernel to stop it
    when the test process dies, so an interrupted run leaves no server behind."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _moto_command(host: str, port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", host, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


def start_moto(env: dict[str, str] | None = None, timeout: float = 30.0) -> MotoServer:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _moto_command("127.0.0.1", port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    server = MotoServer(proc, endpoint, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto server did not answer within {timeout:g}s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def moto_factory() -> Iterator[Callable[..., MotoServer]]:
    """Starts extra servers (for tests that pause them or enforce auth); all are
    stopped at the end of the session."""
    pytest.importorskip("moto.server")
    started: list[MotoServer] = []

    def start(**kwargs) -> MotoServer:
        server = start_moto(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def moto_server(moto_factory) -> MotoServer:
    """One server shared by the whole session; tests isolate themselves by bucket."""
    return moto_factory()


@pytest.fixture(scope="session")
def s3_endpoint(moto_server) -> str:
    return moto_server.endpoint


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"kubeloop-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=TEST_ACCESS_KEY,
        aws_secret_access_key=TEST_SECRET_KEY,
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh, empty bucket for one test."""
    return make_bucket(s3_endpoint)


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path, monkeypatch) -> str:
    """The root of a store on each backend. For s3 the endpoint comes from
    AWS_ENDPOINT_URL, so code under test needs no extra arguments."""
    if request.param == "local":
        return str(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return f"s3://{make_bucket(endpoint)}/root/prefix"
