"""Storage under failure: a server that stops answering mid-upload, one that dies,
wrong keys, a missing bucket, a closed port, transient 5xx answers.

Each case checks the error kind the CLI maps to an exit code, that it arrives
within the bound the retry settings imply, that messages carry no secrets, and
that the registry never lists a partial version or points an alias at one.
"""

from __future__ import annotations

import http.server
import os
import threading
import time

import pytest
from conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY, free_port, make_bucket

from kubeloop import storage
from kubeloop.config import StorageConfig
from kubeloop.registry import Registry
from kubeloop.storage import (
    BucketNotFound,
    EndpointUnreachable,
    PermissionDenied,
    StorageError,
    open_store,
)

ATTEMPTS, CONNECT_TIMEOUT, READ_TIMEOUT = 2, 1.0, 2.0


def fast_cfg(endpoint: str, **overrides) -> StorageConfig:
    values = {"endpoint_url": endpoint, "max_attempts": ATTEMPTS, "connect_timeout": CONNECT_TIMEOUT,
              "read_timeout": READ_TIMEOUT, **overrides}
    return StorageConfig(**values)


def request_bound(cfg: StorageConfig) -> float:
    """Longest one request may take: every attempt times out, with botocore's
    standard backoff (at most 2**i seconds before retry i) in between."""
    backoff = sum(min(2.0**i, 20.0) for i in range(cfg.max_attempts - 1))
    return cfg.max_attempts * (cfg.connect_timeout + cfg.read_timeout) + backoff


def small_files(tag: str) -> dict:
    return {"model/model.joblib": f"model-{tag}".encode(), "metrics.json": b"{}"}


def big_file(path, mb: int) -> str:
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    return str(path)


def assert_no_secrets(text: str) -> None:
    assert TEST_SECRET_KEY not in text and TEST_ACCESS_KEY not in text


# ----------------------------------------------------------------- server stops answering


@pytest.mark.slow
def test_server_paused_mid_upload_leaves_no_partial_version(moto_factory, tmp_path):
    server = moto_factory()
    bucket = make_bucket(server.endpoint)
    cfg = fast_cfg(server.endpoint)
    reg = Registry(f"s3://{bucket}/registry", cfg)
    reg.register("m", small_files("champion"))
    reg.set_alias("m", "production", "v1")

    big = big_file(tmp_path / "model.joblib", 40)
    paused = threading.Event()

    def pause_server(**_):
        # Stop the server as the first part leaves: the multipart upload is in flight.
        if not paused.is_set():
            paused.set()
            server.pause()

    events = reg.store.client.meta.events
    events.register("before-send.s3.UploadPart", pause_server, unique_id="pause-server")
    try:
        start = time.monotonic()
        with pytest.raises(EndpointUnreachable) as info:
            reg.register("m", {**small_files("x"), "model/model.joblib": big})
        elapsed = time.monotonic() - start
    finally:
        events.unregister("before-send.s3.UploadPart", unique_id="pause-server")
        server.resume()
    assert paused.is_set()
    # The failed part uploads and boto3's abort of the multipart upload each get one
    # request's budget; the registry does not try to clean up through a dead endpoint.
    assert elapsed < 2 * request_bound(cfg), elapsed
    assert "stopped answering" in str(info.value) or "cannot reach" in str(info.value)
    assert_no_secrets(str(info.value))

    # The server is back: the failed run is invisible and production is untouched.
    assert [v.version for v in reg.list_versions("m")] == ["v1"]
    assert reg.incomplete_versions("m") == ["v2"]
    assert reg.get_alias("m", "production") == "v1"
    with pytest.raises(storage.NotFound):
        reg.resolve("m", "v2")

    # Retrying the run (a new process, default timeouts: the resumed server is still
    # working through the requests it received while stopped) registers a complete
    # new version and can move production.
    reg = Registry(reg.uri, StorageConfig(endpoint_url=server.endpoint))
    info2 = reg.register("m", {**small_files("x"), "model/model.joblib": big})
    assert info2.version == "v3"
    reg.set_alias("m", "production", info2.version, expected_version="v1")
    assert [v.version for v in reg.list_versions("m")] == ["v1", "v3"]
    assert reg.verify("m", "production") == []
    assert reg.get_alias("m", "previous") == "v1"


@pytest.mark.slow
def test_server_killed_mid_upload(moto_factory, tmp_path):
    server = moto_factory()
    bucket = make_bucket(server.endpoint)
    cfg = fast_cfg(server.endpoint)
    store = open_store(f"s3://{bucket}/x", cfg)
    big = big_file(tmp_path / "blob", 40)
    killed = threading.Event()

    def kill_server(**_):
        if not killed.is_set():
            killed.set()
            server.process.kill()
            server.process.wait()

    events = store.client.meta.events
    events.register("before-send.s3.UploadPart", kill_server, unique_id="kill-server")
    try:
        start = time.monotonic()
        with pytest.raises(EndpointUnreachable):
            store.upload_file("blob", big)
        elapsed = time.monotonic() - start
    finally:
        events.unregister("before-send.s3.UploadPart", unique_id="kill-server")
    assert killed.is_set()
    assert elapsed < 2 * request_bound(cfg), elapsed


# ----------------------------------------------------------------- credentials


@pytest.fixture(scope="module")
def auth_server(moto_factory):
    """A server that checks signatures and IAM policies, with one bucket and one
    user who has keys but no permissions."""
    import boto3

    server = moto_factory()
    bucket = make_bucket(server.endpoint)
    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id=TEST_ACCESS_KEY, aws_secret_access_key=TEST_SECRET_KEY)
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]
    server.set_auth(True)
    yield server, bucket, key["AccessKeyId"], key["SecretAccessKey"]
    server.set_auth(False)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown-key", "wrong-secret", "no-permission"])
def test_bad_credentials_fail_fast_with_permission_denied(auth_server, monkeypatch, case):
    server, bucket, key_id, secret = auth_server
    creds, code = {
        "unknown-key": (("AKIAUNKNOWNKEY000000", "unknown-secret-value-123"), "InvalidAccessKeyId"),
        "wrong-secret": ((key_id, "wrong-secret-value-456"), "SignatureDoesNotMatch"),
        "no-permission": ((key_id, secret), "AccessDenied"),
    }[case]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds[1])
    cfg = fast_cfg(server.endpoint, max_attempts=5)
    store = open_store(f"s3://{bucket}/p", cfg)
    sent = []
    store.client.meta.events.register("before-send.s3", lambda **kw: sent.append(1),
                                      unique_id="count-sends")
    for op in (lambda: store.write_bytes("k", b"1"), lambda: store.read_bytes("k"), lambda: store.list()):
        sent.clear()
        with pytest.raises(PermissionDenied) as info:
            op()
        assert len(sent) == 1, len(sent)  # permanent: sent once, never retried
        msg = str(info.value)
        assert code in msg and "AWS_ACCESS_KEY_ID" in msg and "storage.credentials_secret" in msg
        for secret_value in (creds[1], TEST_SECRET_KEY):
            assert secret_value not in msg


def test_missing_credentials_are_reported(s3_endpoint, bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(f"s3://{bucket}/p", fast_cfg(s3_endpoint))
    with pytest.raises(PermissionDenied, match="no S3 credentials"):
        store.write_bytes("k", b"1")


# ----------------------------------------------------------------- missing bucket


def test_missing_bucket(s3_endpoint, tmp_path):
    uri = "s3://kubeloop-missing-bucket/registry"
    reg = Registry(uri, fast_cfg(s3_endpoint))
    with pytest.raises(BucketNotFound, match="kubeloop-missing-bucket"):
        reg.register("m", small_files("a"))
    with pytest.raises(BucketNotFound):
        reg.list_models()
    with pytest.raises(BucketNotFound):
        reg.get_alias("m", "production")
    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 1000)
    with pytest.raises(BucketNotFound):  # through boto3's transfer wrapper too
        storage.put_file(local, f"{uri}/f.bin", fast_cfg(s3_endpoint))
    with pytest.raises(BucketNotFound):
        with storage.local_copy(f"{uri}/f.bin", fast_cfg(s3_endpoint)):
            pass


# ----------------------------------------------------------------- unreachable endpoint


def test_closed_port_is_endpoint_unreachable_within_the_retry_bound():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = fast_cfg(endpoint, max_attempts=3)
    reg = Registry("s3://some-bucket/registry", cfg)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachable) as info:
        reg.register("m", small_files("a"))
    elapsed = time.monotonic() - start
    assert elapsed < request_bound(cfg), elapsed
    msg = str(info.value)
    assert endpoint in msg and "--s3-endpoint" in msg and "AWS_ENDPOINT_URL" in msg
    assert "storage.endpoint_url" in msg
    assert_no_secrets(msg)


def test_flag_beats_a_wrong_environment_endpoint(s3_endpoint, bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = open_store(f"s3://{bucket}/p", fast_cfg(None), endpoint_url=s3_endpoint)
    store.write_bytes("k", b"1")
    assert store.read_bytes("k") == b"1"
    with pytest.raises(EndpointUnreachable):
        open_store(f"s3://{bucket}/p", fast_cfg(s3_endpoint, max_attempts=1)).read_bytes("k")


# ----------------------------------------------------------------- transient errors


class _FlakyS3(http.server.BaseHTTPRequestHandler):
    """Answers ``failures`` requests with 503 SlowDown, then accepts PUTs."""

    failures = 0
    seen = 0
    # HTTP/1.1 so the server answers "Expect: 100-continue" instead of letting the
    # client wait a second for it.
    protocol_version = "HTTP/1.1"

    def do_PUT(self):  # noqa: N802 - http.server's naming
        cls = type(self)
        cls.seen += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if cls.seen <= cls.failures:
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
        else:
            body = b""
            self.send_response(200)
            self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("failures, attempts, ok", [(2, 3, True), (2, 2, False)])
def test_transient_errors_are_retried_up_to_max_attempts(failures, attempts, ok):
    handler = type("Flaky", (_FlakyS3,), {"failures": failures, "seen": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
        store = open_store("s3://bucket/p", fast_cfg(endpoint, max_attempts=attempts))
        if ok:
            store.write_bytes("k", b"1")
        else:
            with pytest.raises(StorageError, match="SlowDown"):
                store.write_bytes("k", b"1")
        assert handler.seen == min(failures + 1, attempts)
    finally:
        httpd.shutdown()
        httpd.server_close()
