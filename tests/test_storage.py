"""The storage contract, run against both backends (a local directory and S3 over HTTP),
plus the settings precedence and what error messages may (not) contain."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY

from kubeloop import storage
from kubeloop.config import StorageConfig
from kubeloop.storage import (
    BucketNotFound,
    ConflictError,
    InvalidURI,
    LocalStore,
    NotFound,
    S3Settings,
    S3Store,
    StorageError,
    open_store,
    resolve_settings,
)

# ----------------------------------------------------------------- contract, both backends


def test_open_store_picks_backend(store_uri):
    store = open_store(store_uri)
    assert isinstance(store, S3Store if store_uri.startswith("s3://") else LocalStore)
    assert store.root == store_uri


def test_round_trip_bytes(store_uri):
    store = open_store(store_uri)
    payload = bytes(range(256)) * 100
    store.write_bytes("a/b/blob.bin", payload)
    store.write_bytes("empty", b"")
    assert store.read_bytes("a/b/blob.bin") == payload
    assert store.read_bytes("empty") == b""
    assert store.exists("a/b/blob.bin")
    assert not store.exists("a/b/other.bin")


def test_overwrite_replaces_whole_object(store_uri):
    store = open_store(store_uri)
    store.write_bytes("doc", b"x" * 10_000)
    store.write_bytes("doc", b"short")
    assert store.read_bytes("doc") == b"short"


def test_readers_never_see_a_partial_write(store_uri):
    store = open_store(store_uri)
    big, small = b"A" * 2_000_000, b"B" * 1_000
    store.write_bytes("obj", big)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(hashlib.sha256(store.read_bytes("obj")).digest())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(10):
            store.write_bytes("obj", small if i % 2 == 0 else big)
    finally:
        stop.set()
        t.join()
    assert seen <= {hashlib.sha256(big).digest(), hashlib.sha256(small).digest()}


def test_list_is_recursive_sorted_and_relative(store_uri):
    store = open_store(store_uri)
    for key in ["m/versions/v2/x", "m/versions/v10/x", "m/aliases/p.json", "n/y", "mm/z"]:
        store.write_bytes(key, b"1")
    assert store.list() == sorted(["m/versions/v2/x", "m/versions/v10/x", "m/aliases/p.json", "n/y", "mm/z"])
    assert store.list("m/") == ["m/aliases/p.json", "m/versions/v10/x", "m/versions/v2/x"]
    # A plain prefix matches as in S3: "m" also matches "mm/...".
    assert store.list("m") == ["m/aliases/p.json", "m/versions/v10/x", "m/versions/v2/x", "mm/z"]
    assert store.list("m/versions/v1") == ["m/versions/v10/x"]
    assert store.list("nothing/") == []


def test_list_does_not_leak_into_a_sibling_root(store_uri):
    outer = open_store(store_uri)
    outer.write_bytes("sub/a", b"1")
    outer.write_bytes("sub2/b", b"2")
    inner = open_store(storage.join(store_uri, "sub"))
    assert inner.list() == ["a"]


def test_empty_store_lists_nothing(store_uri):
    assert open_store(store_uri).list() == []


def test_delete_and_delete_prefix(store_uri):
    store = open_store(store_uri)
    for key in ["v1/a", "v1/deep/b", "v10/c", "keep"]:
        store.write_bytes(key, b"1")
    store.delete("keep")
    store.delete("keep")  # deleting what is gone is not an error
    assert not store.exists("keep")
    assert store.delete_prefix("v1/") == 2
    assert store.list() == ["v10/c"]
    if isinstance(store, LocalStore):
        assert not (store.path / "v1").exists()  # no empty folders left behind


def test_missing_object_raises_not_found(store_uri, tmp_path):
    store = open_store(store_uri)
    with pytest.raises(NotFound):
        store.read_bytes("nope")
    with pytest.raises(NotFound):
        store.read_with_etag("nope")
    with pytest.raises(NotFound):
        store.download_file("nope", tmp_path / "out")
    with pytest.raises(FileNotFoundError):  # NotFound is also the builtin
        store.read_bytes("nope")
    assert not (tmp_path / "out").exists()


def test_put_if_absent(store_uri):
    store = open_store(store_uri)
    store.put_if_absent("claim", b"first")
    with pytest.raises(ConflictError):
        store.put_if_absent("claim", b"second")
    assert store.read_bytes("claim") == b"first"
    assert store.list() == ["claim"]  # no temporary files left visible


def test_put_if_match(store_uri):
    store = open_store(store_uri)
    store.write_bytes("alias", b"v1")
    data, etag = store.read_with_etag("alias")
    assert data == b"v1"
    store.put_if_match("alias", b"v2", etag)
    data2, etag2 = store.read_with_etag("alias")
    assert data2 == b"v2" and etag2 != etag
    with pytest.raises(ConflictError):
        store.put_if_match("alias", b"v3", etag)  # stale tag
    assert store.read_bytes("alias") == b"v2"
    with pytest.raises(ConflictError):
        store.put_if_match("absent", b"x", etag)


@pytest.mark.parametrize("op", ["absent", "match"])
def test_conditional_writes_have_one_winner(store_uri, op):
    store = open_store(store_uri)
    if op == "match":
        store.write_bytes("key", b"start")
        _, etag = store.read_with_etag("key")
    n = 8
    barrier = threading.Barrier(n)
    winners: list[int] = []
    errors: list[BaseException] = []

    def contender(i: int) -> None:
        barrier.wait()
        try:
            if op == "absent":
                store.put_if_absent("key", f"writer-{i}".encode())
            else:
                store.put_if_match("key", f"writer-{i}".encode(), etag)
            winners.append(i)
        except ConflictError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(winners) == 1
    assert store.read_bytes("key") == f"writer-{winners[0]}".encode()


def test_upload_and_download_stream_large_files(store_uri, tmp_path):
    # Bigger than one transfer chunk, so S3 goes through a multipart upload.
    size = storage.TRANSFER_CHUNK_BYTES + 1_234_567
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    store = open_store(store_uri)
    store.upload_file("artifacts/big.bin", src)
    out = tmp_path / "dl" / "big.bin"
    store.download_file("artifacts/big.bin", out)
    assert out.stat().st_size == size
    assert storage.sha256_file(out) == storage.sha256_file(src)
    assert [p.name for p in out.parent.iterdir()] == ["big.bin"]


def test_upload_of_a_missing_local_file(store_uri, tmp_path):
    with pytest.raises(NotFound, match="no such local file"):
        open_store(store_uri).upload_file("x", tmp_path / "missing")


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/abs/path", ""])
def test_keys_cannot_escape_the_root(store_uri, bad):
    with pytest.raises(StorageError):
        open_store(store_uri).write_bytes(bad, b"x")


def test_uri_of(store_uri):
    store = open_store(store_uri)
    assert store.uri_of("m/versions/v1/model") == storage.join(store_uri, "m/versions/v1/model")
    if store_uri.startswith("s3://"):
        assert store.uri_of("a/b").endswith("/root/prefix/a/b")


def test_module_helpers_round_trip(store_uri, tmp_path):
    uri = storage.join(store_uri, "data", "table.csv")
    storage.write_bytes(uri, b"a,b\n1,2\n")
    assert storage.read_bytes(uri) == b"a,b\n1,2\n"
    local = tmp_path / "up.txt"
    local.write_text("uploaded")
    storage.put_file(local, storage.join(store_uri, "up.txt"))
    assert storage.read_bytes(storage.join(store_uri, "up.txt")) == b"uploaded"


def test_local_copy(store_uri):
    uri = storage.join(store_uri, "data", "table.parquet")
    storage.write_bytes(uri, b"PAR1...")
    with storage.local_copy(uri) as path:
        assert isinstance(path, Path)
        assert path.name == "table.parquet"  # the suffix decides the reader
        assert path.read_bytes() == b"PAR1..."
        if storage.is_remote(uri):
            copied = path
        else:
            assert str(path) == uri  # local files are not copied
    if storage.is_remote(uri):
        assert not copied.exists() and not copied.parent.exists()


def test_local_copy_of_missing_object(store_uri):
    uri = storage.join(store_uri, "missing.csv")
    if storage.is_remote(uri):
        with pytest.raises(NotFound):
            with storage.local_copy(uri):
                pass
    else:
        with storage.local_copy(uri) as path:  # callers check local paths themselves
            assert not path.exists()


# ----------------------------------------------------------------- local specifics


def test_file_uris_are_local(tmp_path):
    store = open_store(f"file://{tmp_path}/reg")
    store.write_bytes("x", b"1")
    assert (tmp_path / "reg" / "x").read_bytes() == b"1"
    assert store.uri_of("x") == f"file://{tmp_path}/reg/x"


def test_local_etag_is_the_content_sha256(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes("f", b"hello")
    assert store.read_with_etag("f")[1] == hashlib.sha256(b"hello").hexdigest()


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes("d/x", b"1")
    store.put_if_absent("d/y", b"2")
    _, etag = store.read_with_etag("d/y")
    store.put_if_match("d/y", b"3", etag)
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert [n for n in names if n.startswith(".kubeloop-tmp-")] == []
    assert store.list() == ["d/x", "d/y"]


def test_local_put_if_absent_without_hard_links(tmp_path, monkeypatch):
    # Some filesystems (certain network and FUSE mounts) refuse link(); the lock path
    # must give the same guarantee.
    import errno

    def no_links(*_args, **_kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store = LocalStore(tmp_path)
    store.put_if_absent("claim", b"first")
    with pytest.raises(ConflictError):
        store.put_if_absent("claim", b"second")
    assert store.read_bytes("claim") == b"first"
    assert store.list() == ["claim"]


# ----------------------------------------------------------------- URIs


def test_uri_helpers():
    assert storage.is_remote("s3://b/k") and storage.is_remote("S3://b/k")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x")
    assert storage.split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert storage.split_s3_uri("s3://bucket") == ("bucket", "")
    assert storage.join("s3://b/p/", "x", "/y/") == "s3://b/p/x/y"
    assert storage.join("/tmp/reg", "m", "v1") == os.path.join("/tmp/reg", "m", "v1")
    with pytest.raises(InvalidURI):
        storage.split_s3_uri("s3:///key")
    with pytest.raises(InvalidURI, match="unsupported scheme gs://"):
        open_store("gs://bucket/x")
    with pytest.raises(InvalidURI, match="names a bucket"):
        storage.read_bytes("s3://bucket")


# ----------------------------------------------------------------- settings


CFG = StorageConfig(endpoint_url="http://cfg:9000", region="eu-cfg-1", path_style=False, max_attempts=7,
                    connect_timeout=2.5, read_timeout=11)


@pytest.mark.parametrize(
    "flag, env, cfg, endpoint, region",
    [
        (None, {}, None, None, "us-east-1"),
        (None, {}, CFG, "http://cfg:9000", "eu-cfg-1"),
        (None, {"AWS_ENDPOINT_URL": "http://env:1"}, CFG, "http://env:1", "eu-cfg-1"),
        (None, {"AWS_ENDPOINT_URL": "http://env:1", "AWS_ENDPOINT_URL_S3": "http://env-s3:2"}, CFG,
         "http://env-s3:2", "eu-cfg-1"),
        ("http://flag:3", {"AWS_ENDPOINT_URL_S3": "http://env-s3:2"}, CFG, "http://flag:3", "eu-cfg-1"),
        (None, {"AWS_DEFAULT_REGION": "ap-default-1"}, CFG, "http://cfg:9000", "ap-default-1"),
        (None, {"AWS_DEFAULT_REGION": "ap-default-1", "AWS_REGION": "ap-region-1"}, CFG, "http://cfg:9000",
         "ap-region-1"),
        (None, {"AWS_ENDPOINT_URL": ""}, CFG, "http://cfg:9000", "eu-cfg-1"),  # empty means unset
    ],
)
def test_resolve_settings_precedence(flag, env, cfg, endpoint, region):
    s = resolve_settings(cfg, endpoint_url=flag, env=env)
    assert (s.endpoint_url, s.region) == (endpoint, region)


def test_resolve_settings_takes_tuning_from_config_and_keys_from_env():
    env = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_SESSION_TOKEN": "tok"}
    s = resolve_settings(CFG, env=env)
    assert (s.path_style, s.max_attempts, s.connect_timeout, s.read_timeout) == (False, 7, 2.5, 11)
    assert (s.access_key_id, s.secret_access_key, s.session_token) == ("AKIAENV", "envsecret", "tok")
    defaults = resolve_settings(None, env={})
    assert defaults.path_style is True and defaults.max_attempts == 5
    assert defaults.access_key_id is None  # boto3's own credential chain applies


def test_settings_repr_has_no_secrets():
    s = resolve_settings(CFG, env={"AWS_ACCESS_KEY_ID": "AKIAREPR", "AWS_SECRET_ACCESS_KEY": "shh-secret",
                                   "AWS_SESSION_TOKEN": "token-secret"})
    text = repr(s) + str(s)
    for secret in ("AKIAREPR", "shh-secret", "token-secret"):
        assert secret not in text
    assert "http://cfg:9000" in text


def test_clients_are_cached_per_settings():
    a = S3Settings(endpoint_url="http://127.0.0.1:1", max_attempts=1)
    assert storage.s3_client(a) is storage.s3_client(S3Settings(endpoint_url="http://127.0.0.1:1", max_attempts=1))
    assert storage.s3_client(a) is not storage.s3_client(S3Settings(endpoint_url="http://127.0.0.1:1", max_attempts=2))


def test_client_config_follows_settings():
    client = storage.s3_client(S3Settings(endpoint_url="http://127.0.0.1:2", region="eu-west-3", path_style=True,
                                          max_attempts=3, connect_timeout=1.5, read_timeout=4))
    cfg = client.meta.config
    assert cfg.retries == {"mode": "standard", "total_max_attempts": 3}  # 3 attempts in all
    assert cfg.s3 == {"addressing_style": "path"}
    assert (cfg.connect_timeout, cfg.read_timeout, cfg.region_name) == (1.5, 4, "eu-west-3")


# ----------------------------------------------------------------- errors


def test_missing_bucket_is_named_and_secrets_stay_out(s3_endpoint):
    store = open_store("s3://no-such-bucket-kubeloop/x", endpoint_url=s3_endpoint)
    for op in (lambda: store.write_bytes("k", b"1"), lambda: store.read_bytes("k"),
               lambda: store.exists("k"), lambda: store.list()):
        with pytest.raises(BucketNotFound) as info:
            op()
        msg = str(info.value)
        assert "no-such-bucket-kubeloop" in msg and "mc mb" in msg
        assert TEST_SECRET_KEY not in msg and TEST_ACCESS_KEY not in msg


def test_storage_errors_belong_to_kubeloop():
    # The CLI turns exceptions from kubeloop modules into exit codes with a message.
    for cls in (storage.NotFound, storage.ConflictError, storage.PermissionDenied, storage.BucketNotFound,
                storage.EndpointUnreachable, storage.IntegrityError):
        assert issubclass(cls, StorageError)
        assert cls.__module__.startswith("kubeloop")
