"""One storage layer over local paths and S3-compatible object stores.

Every component that reads or writes artifacts goes through a ``Store`` rooted at a
URI: a local directory (a plain path or ``file://``) or ``s3://bucket/prefix``
(AWS S3, MinIO, or any server that speaks the S3 API). Both backends offer the
same operations with the same guarantees, so the registry and the tests are
written once:

- whole-object writes are atomic: a reader sees the old content or the new one,
  never a prefix of it;
- conditional writes (``put_if_absent``, ``put_if_match``) give compare-and-swap,
  which is what lets two pipeline runs race for a model alias safely;
- large files move by streaming, in bounded chunks, so memory does not grow with
  the size of the artifact.

Connection settings come, in order of precedence, from an explicit argument
(the ``--s3-endpoint`` flag), the standard ``AWS_*`` environment variables, and
the ``storage`` section of the config. Credentials only ever come from the
environment (or boto3's usual chain); the config names the Kubernetes Secret
that provides them, never the keys.

Failures surface as subclasses of ``StorageError`` whose messages say what to
check, and never contain credentials.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kubeloop.errors import Conflict, UserError

if TYPE_CHECKING:
    from kubeloop.config import StorageConfig

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"

# Streaming transfers: parts of this size, this many in flight at once. Peak memory
# per transfer stays around chunk size x concurrency whatever the object size.
TRANSFER_CHUNK_BYTES = 16 * 1024 * 1024
TRANSFER_CONCURRENCY = 4
TRANSFER_IO_QUEUE = 16
_HASH_BLOCK = 1024 * 1024

# Names the local backend uses for its own bookkeeping; listings never show them.
_TMP_PREFIX = ".kubeloop-tmp-"
_LOCK_PREFIX = ".kubeloop-lock-"


# --------------------------------------------------------------------------- errors


class StorageError(UserError):
    """Reading or writing an artifact failed; the message says what to check."""


class InvalidURI(StorageError, ValueError):
    """The location is not a local path, ``file://`` or ``s3://bucket/...`` URI."""


class NotFound(StorageError, FileNotFoundError):
    """The object does not exist."""


class ConflictError(StorageError, Conflict):
    """A conditional write lost: the object exists, or changed since it was read."""


# What to check when the store refuses a request (every reader says the same).
ACCESS_HINT = ("check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or on a cluster the Secret named "
               "in storage.credentials_secret (pipeline steps) or canary.credentials_secret "
               "(the predictor), and that these keys may use this bucket")


class PermissionDenied(StorageError, PermissionError):
    """The store rejected the credentials or the request."""


class BucketNotFound(StorageError):
    """The bucket in an ``s3://`` URI does not exist."""


class EndpointUnreachable(StorageError):
    """The S3 endpoint could not be reached, or stopped answering."""


class IntegrityError(StorageError):
    """Stored bytes do not match the hash recorded for them."""


# --------------------------------------------------------------------------- URIs


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for ``s3://`` URIs, False for local paths."""
    return os.fspath(uri).lower().startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")`` (the key may be empty)."""
    if not is_remote(uri):
        raise InvalidURI(f"{uri}: not an s3:// URI")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidURI(f"{uri}: no bucket name; expected s3://bucket/prefix")
    return bucket, key.strip("/")


def _local_path(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    if text.startswith("file://"):
        return text[len("file://") :]
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidURI(f"{text}: unsupported scheme {scheme}://; use a local path, file:// or s3://")
    return text


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Append path segments to a URI or local path, with ``/`` for URIs."""
    text = os.fspath(uri)
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if "://" in text:
        return "/".join([text.rstrip("/"), *clean]) if clean else text
    return os.path.join(text, *clean)


def _check_rel(rel: str) -> str:
    """A store-relative key, normalised; absolute paths and ``..`` are refused so a
    key can never escape the store's root."""
    text = str(rel).replace("\\", "/")
    if text.startswith("/"):
        raise StorageError(f"{rel!r}: keys are relative to the store root, not absolute")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise StorageError(f"{rel!r}: '..' is not allowed in a key")
    return "/".join(parts)


def _check_prefix(prefix: str) -> str:
    """Like ``_check_rel`` but keeps a trailing ``/`` (it restricts the match to a folder)."""
    if not prefix:
        return ""
    clean = _check_rel(prefix)
    return clean + "/" if prefix.endswith("/") and clean else clean


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to build an S3 client. Hashable, so clients are cached per
    settings; the credential fields are left out of ``repr`` so logging a settings
    object can never leak them."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    path_style: bool = True
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def has_explicit_credentials(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_id, self.secret_access_key, self.session_token) if s]


def resolve_settings(
    cfg: StorageConfig | None = None,
    endpoint_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> S3Settings:
    """Merge the connection settings: ``endpoint_url`` argument > environment > ``cfg``.

    ``AWS_ENDPOINT_URL_S3`` beats ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` beats
    ``AWS_DEFAULT_REGION``, as in the AWS SDKs. Credentials come from the environment
    only; without them boto3's own chain (profiles, web identity, instance roles) applies.
    """
    env = os.environ if env is None else env

    def pick(*values: Any) -> Any:
        return next((v for v in values if v not in (None, "")), None)

    endpoint = pick(
        endpoint_url,
        env.get("AWS_ENDPOINT_URL_S3"),
        env.get("AWS_ENDPOINT_URL"),
        cfg.endpoint_url if cfg else None,
    )
    region = pick(
        env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION"), cfg.region if cfg else None
    ) or DEFAULT_REGION
    defaults = S3Settings()
    return S3Settings(
        endpoint_url=endpoint,
        region=region,
        path_style=cfg.path_style if cfg else defaults.path_style,
        max_attempts=cfg.max_attempts if cfg else defaults.max_attempts,
        connect_timeout=cfg.connect_timeout if cfg else defaults.connect_timeout,
        read_timeout=cfg.read_timeout if cfg else defaults.read_timeout,
        access_key_id=pick(env.get("AWS_ACCESS_KEY_ID")),
        secret_access_key=pick(env.get("AWS_SECRET_ACCESS_KEY")),
        session_token=pick(env.get("AWS_SESSION_TOKEN")),
    )


_clients: dict[S3Settings, Any] = {}
_clients_lock = threading.Lock()


def s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for ``settings``, built once per distinct settings (building
    one costs tens of milliseconds; clients are thread-safe, sessions are not)."""
    with _clients_lock:
        client = _clients.get(settings)
        if client is not None:
            return client
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=settings.region,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts
            # every attempt, which is what storage.max_attempts means (as AWS_MAX_ATTEMPTS).
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            s3={"addressing_style": "path" if settings.path_style else "auto"},
            # Room for every part of a streaming transfer plus a few plain calls.
            max_pool_connections=max(10, TRANSFER_CONCURRENCY * 2),
            # Checksums only where the API requires them: several S3-compatible
            # servers reject the CRC headers newer SDKs add to every upload, and
            # artifact integrity is checked end to end with sha256 anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {}
        if settings.has_explicit_credentials:
            kwargs = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": settings.secret_access_key,
                "aws_session_token": settings.session_token,
            }
        session = boto3.session.Session()
        client = session.client("s3", endpoint_url=settings.endpoint_url, config=config, **kwargs)
        _clients[settings] = client
        return client


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=TRANSFER_CHUNK_BYTES,
        multipart_chunksize=TRANSFER_CHUNK_BYTES,
        max_concurrency=TRANSFER_CONCURRENCY,
        use_threads=True,
        # Downloaded chunks wait in this queue for the single writer thread. boto3's
        # default (100 x 256 KiB) lets a 500 MB download hold ~40 MB more than a 50 MB
        # one when the disk lags the network; 16 keeps it flat at the same speed.
        max_io_queue=TRANSFER_IO_QUEUE,
        io_chunksize=256 * 1024,
        # The CRT client sizes its own buffers; the classic one keeps to the bounds above.
        preferred_transfer_client="classic",
    )


# --------------------------------------------------------------------------- error mapping

_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "AllAccessDisabled",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _root_cause(exc: BaseException) -> BaseException:
    """The botocore error behind boto3's wrappers (S3UploadFailedError keeps only the
    text of the ClientError; the original is its implicit context)."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.startswith("botocore"):
            return current
        current = current.__cause__ or current.__context__
    return exc


def _scrub(text: str, settings: S3Settings) -> str:
    for secret in settings.secrets():
        text = text.replace(secret, "***")
    return text


def _translate(exc: BaseException, settings: S3Settings, where: str) -> StorageError:
    """Turn a boto3/botocore failure into a StorageError that says what to check."""
    from botocore import exceptions as bx

    cause = _root_cause(exc)
    endpoint = settings.endpoint_url or f"AWS S3 ({settings.region})"
    if isinstance(cause, bx.ClientError):
        err = cause.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = _scrub(str(err.get("Message", "")), settings)
        if code == "NoSuchBucket":
            bucket = where.split("/")[2] if where.startswith("s3://") else where
            return BucketNotFound(
                f"{where}: bucket '{bucket}' does not exist at {endpoint}; "
                f"create it first (e.g. `mc mb <alias>/{bucket}` or `aws s3 mb s3://{bucket}`)"
            )
        if code in _AUTH_CODES or status == 403:
            return PermissionDenied(f"{where}: access denied by {endpoint} ({code or status}); {ACCESS_HINT}")
        if code in _NOT_FOUND_CODES or status == 404:
            return NotFound(f"{where}: no such object")
        if code in _CONFLICT_CODES or status in (409, 412):
            return ConflictError(f"{where}: conditional write refused ({code or status})")
        detail = f"{code}: {message}" if message else code or str(status)
        return StorageError(f"{where}: S3 request to {endpoint} failed ({detail})")
    if isinstance(cause, bx.NoCredentialsError | bx.PartialCredentialsError):
        return PermissionDenied(
            f"{where}: no S3 credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or on a cluster the Secret named in storage.credentials_secret"
        )
    if isinstance(cause, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return EndpointUnreachable(
            f"{where}: cannot reach the S3 endpoint {endpoint} after {settings.max_attempts} "
            "attempts; check --s3-endpoint, AWS_ENDPOINT_URL or storage.endpoint_url, "
            "and that the server is running"
        )
    if isinstance(cause, bx.ReadTimeoutError | bx.ConnectionClosedError):
        return EndpointUnreachable(
            f"{where}: the S3 endpoint {endpoint} stopped answering (no response within "
            f"{settings.read_timeout:g}s, {settings.max_attempts} attempts); check that the "
            "server is healthy, or raise storage.read_timeout"
        )
    if isinstance(cause, bx.BotoCoreError):
        return StorageError(f"{where}: S3 request to {endpoint} failed: {_scrub(str(cause), settings)}")
    return StorageError(f"{where}: {type(exc).__name__}: {_scrub(str(exc), settings)}")


# --------------------------------------------------------------------------- stores


class Store(abc.ABC):
    """Objects under one root URI, addressed by relative ``/``-separated keys."""

    root: str

    @abc.abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        ...

    @abc.abstractmethod
    def write_bytes(self, rel: str, data: bytes) -> None:
        ...

    @abc.abstractmethod
    def upload_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        ...

    @abc.abstractmethod
    def download_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        ...

    @abc.abstractmethod
    def exists(self, rel: str) -> bool:
        ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a plain string prefix, as in S3), recursive, sorted."""

    @abc.abstractmethod
    def delete(self, rel: str) -> None:
        """Remove one object; removing a missing object is not an error."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many."""

    @abc.abstractmethod
    def uri_of(self, rel: str) -> str:
        ...

    @abc.abstractmethod
    def read_with_etag(self, rel: str) -> tuple[bytes, str]:
        """The content and a tag that changes whenever the content does."""

    @abc.abstractmethod
    def put_if_absent(self, rel: str, data: bytes) -> None:
        """Create the object; ConflictError if it already exists."""

    @abc.abstractmethod
    def put_if_match(self, rel: str, data: bytes, etag: str) -> None:
        """Replace the object if its tag is still ``etag``; ConflictError otherwise."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable across a crash; not every filesystem allows it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalStore(Store):
    """A directory on the local filesystem. The etag of a file is its sha256."""

    def __init__(self, root: str | os.PathLike[str]):
        text = os.fspath(root)
        self._file_uri = text.startswith("file://")
        self.root = text.rstrip("/") if len(text) > 1 else text
        self.path = Path(_local_path(text)).expanduser()

    def _p(self, rel: str) -> Path:
        clean = _check_rel(rel)
        if not clean:
            raise StorageError(f"{rel!r}: empty key")
        return self.path / clean

    def _tmp(self, directory: Path) -> tuple[int, str]:
        directory.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)

    def _write_tmp(self, target: Path, data: bytes | None = None, source: Path | None = None) -> str:
        """A complete, fsynced temporary file next to ``target`` (same filesystem, so it
        can be renamed or linked into place atomically)."""
        fd, tmp = self._tmp(target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                if source is not None:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, f, _HASH_BLOCK)
                else:
                    f.write(data or b"")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def _commit(self, tmp: str, target: Path) -> None:
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent)

    def _wrap_os(self, exc: OSError, rel: str) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return NotFound(f"{self.uri_of(rel)}: no such file")
        if isinstance(exc, PermissionError):
            return PermissionDenied(f"{self.uri_of(rel)}: permission denied ({exc.strerror})")
        if isinstance(exc, IsADirectoryError):
            return NotFound(f"{self.uri_of(rel)}: is a directory, not a file")
        return StorageError(f"{self.uri_of(rel)}: {exc.strerror or exc}")

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self._p(rel).read_bytes()
        except OSError as exc:
            raise self._wrap_os(exc, rel) from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self._p(rel)
        try:
            self._commit(self._write_tmp(target, data=bytes(data)), target)
        except OSError as exc:
            raise self._wrap_os(exc, rel) from None

    def upload_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        target = self._p(rel)
        source = Path(local_path)
        if not source.is_file():
            raise NotFound(f"{source}: no such local file to upload")
        try:
            self._commit(self._write_tmp(target, source=source), target)
        except OSError as exc:
            raise self._wrap_os(exc, rel) from None

    def download_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        source = self._p(rel)
        target = Path(local_path)
        if not source.is_file():
            raise NotFound(f"{self.uri_of(rel)}: no such file")
        fd, tmp = self._tmp(target.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._wrap_os(exc, rel) from None

    def exists(self, rel: str) -> bool:
        return self._p(rel).is_file()

    def list(self, prefix: str = "") -> list[str]:
        clean = _check_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by string prefix.
        base_rel = clean.rsplit("/", 1)[0] if "/" in clean else ""
        base = self.path / base_rel if base_rel else self.path
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP_PREFIX)]
            rel_dir = Path(dirpath).relative_to(self.path).as_posix()
            for name in filenames:
                if name.startswith((_TMP_PREFIX, _LOCK_PREFIX)):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(clean):
                    keys.append(key)
        return sorted(keys)

    def delete(self, rel: str) -> None:
        target = self._p(rel)
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise self._wrap_os(exc, rel) from None

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
            # The lock sidecar goes too, so the emptied directories can be removed.
            with contextlib.suppress(OSError):
                path = self._p(key)
                (path.parent / f"{_LOCK_PREFIX}{path.name}").unlink(missing_ok=True)
        # Leave no empty directories behind, deepest first; stop at the root.
        dirs = sorted({(self.path / k).parent for k in keys}, key=lambda p: len(p.parts), reverse=True)
        for d in dirs:
            while d != self.path and self.path in d.parents:
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent
        return len(keys)

    def uri_of(self, rel: str) -> str:
        clean = _check_rel(rel)
        return join(self.root, clean) if clean else self.root

    def read_with_etag(self, rel: str) -> tuple[bytes, str]:
        data = self.read_bytes(rel)
        return data, hashlib.sha256(data).hexdigest()

    def put_if_absent(self, rel: str, data: bytes) -> None:
        target = self._p(rel)
        try:
            tmp = self._write_tmp(target, data=bytes(data))
        except OSError as exc:
            raise self._wrap_os(exc, rel) from None
        try:
            # link() fails if the name exists, and the file it publishes is already
            # complete: no reader can see a half-written object.
            os.link(tmp, target)
        except FileExistsError:
            raise ConflictError(f"{self.uri_of(rel)}: already exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP):  # no hard links here
                raise self._wrap_os(exc, rel) from None
            self._put_if_absent_locked(tmp, target, rel)
            tmp = ""
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        _fsync_dir(target.parent)

    def _put_if_absent_locked(self, tmp: str, target: Path, rel: str) -> None:
        # Filesystems without hard links: the sidecar lock serialises creators.
        with self._locked(target):
            if target.exists():
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise ConflictError(f"{self.uri_of(rel)}: already exists")
            self._commit(tmp, target)

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        import fcntl

        target.parent.mkdir(parents=True, exist_ok=True)
        lock_path = target.parent / f"{_LOCK_PREFIX}{target.name}"
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def put_if_match(self, rel: str, data: bytes, etag: str) -> None:
        target = self._p(rel)
        try:
            with self._locked(target):
                try:
                    current = hashlib.sha256(target.read_bytes()).hexdigest()
                except FileNotFoundError:
                    raise ConflictError(f"{self.uri_of(rel)}: no longer exists") from None
                if current != etag:
                    raise ConflictError(f"{self.uri_of(rel)}: changed since it was read")
                self._commit(self._write_tmp(target, data=bytes(data)), target)
        except OSError as exc:
            raise self._wrap_os(exc, rel) from None


class S3Store(Store):
    """A bucket and key prefix on an S3-compatible server."""

    def __init__(self, uri: str, settings: S3Settings):
        self.bucket, self.prefix = split_s3_uri(uri)
        self.root = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.settings = settings
        self.client = s3_client(settings)
        self._bucket_checked = False

    def _key(self, rel: str) -> str:
        clean = _check_rel(rel)
        if not clean:
            raise StorageError(f"{rel!r}: empty key")
        return f"{self.prefix}/{clean}" if self.prefix else clean

    def _err(self, exc: BaseException, rel: str) -> StorageError:
        return _translate(exc, self.settings, self.uri_of(rel) if rel else self.root)

    def _missing(self, rel: str) -> StorageError:
        """A 404 without a body (HEAD) cannot tell a missing key from a missing bucket;
        ask once, so a typo in the bucket name is reported as such."""
        if not self._bucket_checked:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as exc:  # noqa: BLE001 - translated below
                err = self._err(exc, rel)
                if isinstance(err, NotFound):
                    err = _translate(_no_such_bucket(), self.settings, self.uri_of(rel))
                return err
            self._bucket_checked = True
        return NotFound(f"{self.uri_of(rel)}: no such object")

    def read_bytes(self, rel: str) -> bytes:
        return self.read_with_etag(rel)[0]

    def write_bytes(self, rel: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=bytes(data))
        except Exception as exc:
            raise self._err(exc, rel) from None

    def upload_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        source = Path(local_path)
        if not source.is_file():
            raise NotFound(f"{source}: no such local file to upload")
        try:
            self.client.upload_file(str(source), self.bucket, self._key(rel), Config=_transfer_config())
        except Exception as exc:
            raise self._err(exc, rel) from None

    def download_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # s3transfer writes to a temporary name and renames it when complete.
            self.client.download_file(self.bucket, self._key(rel), str(target), Config=_transfer_config())
        except Exception as exc:
            err = self._err(exc, rel)
            raise (self._missing(rel) if isinstance(err, NotFound) else err) from None

    def exists(self, rel: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
            return True
        except Exception as exc:
            err = self._err(exc, rel)
            if isinstance(err, NotFound):
                err = self._missing(rel)
                if isinstance(err, NotFound):
                    return False
            raise err from None

    def list(self, prefix: str = "") -> list[str]:
        clean = _check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + clean
            )
            for page in pages:
                keys.extend(obj["Key"][len(base) :] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._err(exc, prefix) from None
        return sorted(k for k in keys if k)

    def delete(self, rel: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(rel))
        except Exception as exc:
            raise self._err(exc, rel) from None

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # the DeleteObjects limit
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as exc:
                raise self._err(exc, prefix) from None
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                if all(e.get("Code") in _AUTH_CODES for e in errors):
                    # A bulk delete answers 200 and refuses key by key.
                    raise PermissionDenied(
                        f"{self.uri_of(prefix)}: access denied by {self.settings.endpoint_url or 'AWS S3'} "
                        f"deleting {len(errors)} objects ({first.get('Code')}); check that these keys "
                        "may delete in this bucket"
                    )
                raise StorageError(
                    f"{self.uri_of(prefix)}: could not delete {len(errors)} objects "
                    f"(first: {first.get('Key')}: {first.get('Code')})"
                )
        return len(keys)

    def uri_of(self, rel: str) -> str:
        clean = _check_rel(rel)
        return f"{self.root}/{clean}" if clean else self.root

    def read_with_etag(self, rel: str) -> tuple[bytes, str]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(rel))
            return resp["Body"].read(), resp["ETag"]
        except Exception as exc:
            raise self._err(exc, rel) from None

    def put_if_absent(self, rel: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(rel), Body=bytes(data), IfNoneMatch="*"
            )
        except Exception as exc:
            err = self._err(exc, rel)
            if isinstance(err, ConflictError):
                raise ConflictError(f"{self.uri_of(rel)}: already exists") from None
            raise err from None

    def put_if_match(self, rel: str, data: bytes, etag: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=bytes(data), IfMatch=etag)
        except Exception as exc:
            err = self._err(exc, rel)
            if isinstance(err, NotFound):
                raise ConflictError(f"{self.uri_of(rel)}: no longer exists") from None
            if isinstance(err, ConflictError):
                raise ConflictError(f"{self.uri_of(rel)}: changed since it was read") from None
            raise err from None


def _no_such_bucket() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket")


# --------------------------------------------------------------------------- entry points


def open_store(
    uri: str | os.PathLike[str],
    storage_cfg: StorageConfig | None = None,
    *,
    endpoint_url: str | None = None,
) -> Store:
    """A Store rooted at ``uri``: ``S3Store`` for ``s3://``, else ``LocalStore``."""
    text = os.fspath(uri)
    if is_remote(text):
        return S3Store(text, resolve_settings(storage_cfg, endpoint_url))
    _local_path(text)  # refuses unknown schemes
    return LocalStore(text)


def _store_and_key(
    uri: str | os.PathLike[str], cfg: StorageConfig | None, endpoint_url: str | None
) -> tuple[Store, str]:
    text = os.fspath(uri)
    if is_remote(text):
        bucket, key = split_s3_uri(text)
        if not key:
            raise InvalidURI(f"{text}: names a bucket, not an object")
        return S3Store(f"s3://{bucket}", resolve_settings(cfg, endpoint_url)), key
    path = Path(_local_path(text)).expanduser().absolute()
    return LocalStore(str(path.parent)), path.name


def read_bytes(
    uri: str | os.PathLike[str], cfg: StorageConfig | None = None, *, endpoint_url: str | None = None
) -> bytes:
    store, key = _store_and_key(uri, cfg, endpoint_url)
    return store.read_bytes(key)


def write_bytes(
    uri: str | os.PathLike[str],
    data: bytes,
    cfg: StorageConfig | None = None,
    *,
    endpoint_url: str | None = None,
) -> None:
    store, key = _store_and_key(uri, cfg, endpoint_url)
    store.write_bytes(key, data)


def put_file(
    local_path: str | os.PathLike[str],
    uri: str | os.PathLike[str],
    cfg: StorageConfig | None = None,
    *,
    endpoint_url: str | None = None,
) -> None:
    """Copy a local file to ``uri`` (streaming for s3://)."""
    store, key = _store_and_key(uri, cfg, endpoint_url)
    store.upload_file(key, local_path)


@contextlib.contextmanager
def local_copy(
    uri: str | os.PathLike[str],
    cfg: StorageConfig | None = None,
    *,
    endpoint_url: str | None = None,
) -> Iterator[Path]:
    """A local path holding the object at ``uri``.

    Local paths are yielded as they are (no copy); ``s3://`` objects are downloaded
    into a temporary directory that is removed on exit. The file keeps its name, so
    code that looks at the suffix (``.csv``, ``.parquet``) works the same on both.
    """
    text = os.fspath(uri)
    if not is_remote(text):
        yield Path(_local_path(text))
        return
    store, key = _store_and_key(text, cfg, endpoint_url)
    with tempfile.TemporaryDirectory(prefix="kubeloop-") as tmp:
        path = Path(tmp) / PurePosixPath(key).name
        store.download_file(key, path)
        yield path
