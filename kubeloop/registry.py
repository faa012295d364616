"""The model registry: immutable numbered versions and movable aliases, on any store.

Layout under the registry root (a local directory or ``s3://bucket/prefix``)::

    <model>/versions/vN/CLAIM              written first, create-only: reserves the number
    <model>/versions/vN/model/model.joblib the estimator; the KServe storageUri is
    <model>/versions/vN/model/kubeloop.json   .../versions/vN/model/ (see serving_uri)
    <model>/versions/vN/...                schema, metrics, evaluation, gate, lineage,
                                           model card, reports/, monitoring/
    <model>/versions/vN/MANIFEST.json      written last, create-only: sha256 and size of
                                           every file, plus the run's metadata
    <model>/aliases/<alias>.json           {alias, version, previous_version, updated_at, reason}
    <model>/history/<ts>-<alias>-<vN>.json one record per alias move

A version exists for readers only once its MANIFEST.json does, so a run that dies
halfway leaves files nobody lists, resolves or serves. Version numbers are claimed
with a create-only write, so two concurrent runs never share a number. Aliases
move by compare-and-swap against the alias object's etag, so a run cannot replace
a production model it never compared itself with. Models are unpickled only after
their bytes match the sha256 in the manifest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeloop.storage import (
    ConflictError,
    EndpointUnreachable,
    IntegrityError,
    NotFound,
    StorageError,
    open_store,
    sha256_file,
)

if TYPE_CHECKING:
    from kubeloop.config import StorageConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model/model.joblib"
PREDICTOR_FILE = "model/kubeloop.json"  # the request schema and the versions the model was pickled with
MANIFEST = "MANIFEST.json"
CLAIM = "CLAIM"

# Aliases with a meaning elsewhere in kubeloop: ``production`` is what the gate
# compares with and what serving loads, ``canary`` is the version receiving a share
# of traffic, ``previous`` is where ``production`` was before its last move (the
# rollback target). Any other lowercase name is allowed for a team's own use.
PRODUCTION, CANARY, PREVIOUS = "production", "canary", "previous"
KNOWN_ALIASES = (PRODUCTION, CANARY, PREVIOUS, "staging", "shadow")

_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_VERSION_RE = re.compile(r"v([1-9][0-9]*)")
# Concurrent runs that keep taking the number this one wanted; far beyond any real race.
_MAX_CLAIM_ATTEMPTS = 100


class RegistryError(StorageError):
    """A registry operation was refused; the message says why and what exists."""


class VersionNotFound(RegistryError, NotFound):
    """No complete version or alias by that name."""


class IncompleteVersion(VersionNotFound):
    """The version was claimed but its registration never finished (no manifest)."""


class AliasConflict(RegistryError, ConflictError):
    """Another writer moved the alias first; the message names expected and actual."""


class VersionTaken(RegistryError, ConflictError):
    """``register(..., exact=True)``: the wanted version number is already claimed."""


@dataclass(frozen=True)
class VersionInfo:
    """One complete registered version, as its manifest describes it."""

    model: str
    version: str
    created_at: str
    sha256: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False).encode()


def _version_number(version: str) -> int:
    m = _VERSION_RE.fullmatch(version)
    if not m:
        raise RegistryError(f"version {version!r} must look like v1, v2, ... (no leading zeros)")
    return int(m.group(1))


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RegistryError(
            f"model name {name!r} must be lowercase letters, digits and '-', starting and "
            "ending with a letter or digit, at most 63 characters (it becomes a Kubernetes name)"
        )
    return name


def check_alias_name(alias: str) -> str:
    if not isinstance(alias, str) or not _NAME_RE.fullmatch(alias):
        raise RegistryError(
            f"alias {alias!r} must be lowercase letters, digits and '-' "
            f"(known aliases: {', '.join(KNOWN_ALIASES)})"
        )
    if _VERSION_RE.fullmatch(alias):
        raise RegistryError(f"alias {alias!r} looks like a version number; choose another name")
    return alias


def _check_file_rel(rel: str) -> str:
    text = str(rel)
    parts = text.split("/")
    if not text or text.startswith("/") or "\\" in text or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(
            f"file name {rel!r} must be a relative path with '/' separators, without '..' or empty parts"
        )
    if text in (MANIFEST, CLAIM):
        raise RegistryError(f"file name {rel!r} is reserved by the registry")
    return text


class Registry:
    """Versions and aliases of models under one root URI."""

    def __init__(
        self,
        uri: str | os.PathLike[str],
        storage_cfg: StorageConfig | None = None,
        *,
        endpoint_url: str | None = None,
    ):
        self.store = open_store(uri, storage_cfg, endpoint_url=endpoint_url)
        self.uri = self.store.root

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    # -- paths ---------------------------------------------------------------------

    @staticmethod
    def _vdir(model: str, version: str) -> str:
        return f"{model}/versions/{version}"

    def model_uri(self, model: str, version: str) -> str:
        """URI of the version's ``model/`` folder (no trailing slash)."""
        check_model_name(model)
        _version_number(version)
        return self.store.uri_of(f"{self._vdir(model, version)}/model")

    def serving_uri(self, model: str, version: str) -> str:
        """The KServe ``storageUri`` of a version: ``model_uri`` with a trailing ``/``.

        KServe's S3 storage initializer lists objects by the raw prefix, so
        ``.../vN/model`` would also fetch ``.../vN/model_card.md`` into the model folder.
        """
        return self.model_uri(model, version) + "/"

    def file_uri(self, model: str, version: str, rel: str) -> str:
        check_model_name(model)
        _version_number(version)
        return self.store.uri_of(f"{self._vdir(model, version)}/{_check_file_rel(rel)}")

    # -- versions ------------------------------------------------------------------

    def _claimed_numbers(self, model: str) -> set[int]:
        numbers = set()
        for key in self.store.list(f"{model}/versions/"):
            m = _VERSION_RE.fullmatch(key.split("/")[2])
            if m:
                numbers.add(int(m.group(1)))
        return numbers

    def next_version(self, model: str) -> str:
        """The number after every version ever claimed (complete or not). Only a
        proposal: ``register`` claims atomically and may end up with a later one."""
        check_model_name(model)
        return f"v{max(self._claimed_numbers(model), default=0) + 1}"

    def register(
        self,
        model: str,
        files: dict[str, bytes | str | os.PathLike[str]],
        *,
        version: str | None = None,
        metadata: dict[str, Any] | None = None,
        exact: bool = False,
    ) -> VersionInfo:
        """Store ``files`` as a new immutable version; returns what was registered.

        ``files`` maps names relative to the version folder to bytes or local file
        paths; ``model/model.joblib`` is required. If ``version`` is already taken
        (by an earlier or a concurrent run) the next free number is used instead:
        read the outcome from the returned ``VersionInfo.version``. With
        ``exact=True`` a taken ``version`` raises VersionTaken instead and nothing
        is written (for files that name their own version, such as a model card).
        """
        check_model_name(model)
        if MODEL_FILE not in files:
            raise RegistryError(f"register {model}: {MODEL_FILE} is required among the files")
        items: list[tuple[str, bytes | Path]] = []
        for rel, content in files.items():
            rel = _check_file_rel(rel)
            if isinstance(content, bytes | bytearray | memoryview):
                items.append((rel, bytes(content)))
            elif isinstance(content, str | os.PathLike):
                path = Path(content)
                if not path.is_file():
                    raise RegistryError(f"register {model}: {rel}: local file {path} does not exist")
                items.append((rel, path))
            else:
                raise RegistryError(
                    f"register {model}: {rel}: expected bytes or a local path, got {type(content).__name__}"
                )
        # Everything that can be refused is checked before a number is claimed.
        try:
            meta_json = json.loads(_dumps(metadata or {}))
        except ValueError as exc:
            raise RegistryError(f"register {model}: metadata is not valid JSON: {exc}") from None

        if exact and not version:
            raise RegistryError(f"register {model}: exact=True needs a version")
        version = self._claim(model, version, exact=exact)
        vdir = self._vdir(model, version)
        entries: dict[str, dict[str, Any]] = {}
        try:
            for rel, content in items:
                if isinstance(content, bytes):
                    digest, size = hashlib.sha256(content).hexdigest(), len(content)
                    self.store.write_bytes(f"{vdir}/{rel}", content)
                else:
                    digest, size = sha256_file(content), content.stat().st_size
                    self.store.upload_file(f"{vdir}/{rel}", content)
                entries[rel] = {"sha256": digest, "size": size}
            manifest = {
                "model": model,
                "version": version,
                "created_at": _now(),
                "sha256": entries[MODEL_FILE]["sha256"],
                "files": entries,
                "metadata": meta_json,
            }
            self._write_manifest(vdir, _dumps(manifest))
        except EndpointUnreachable:
            # Cleaning up through an endpoint that just stopped answering would only
            # make the caller wait longer; the files are invisible without a manifest.
            raise
        except BaseException:
            self._discard_partial(vdir, [rel for rel, _ in items])
            raise
        log.info("registered %s %s at %s", model, version, self.model_uri(model, version))
        return self._info(manifest)

    def _claim(self, model: str, wanted: str | None, *, exact: bool = False) -> str:
        number = _version_number(wanted) if wanted else max(self._claimed_numbers(model), default=0) + 1
        claim = {"model": model, "claimed_at": _now(), "host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            version = f"v{number}"
            try:
                self.store.put_if_absent(
                    f"{self._vdir(model, version)}/{CLAIM}", _dumps({**claim, "version": version})
                )
                return version
            except ConflictError:
                if exact:
                    raise VersionTaken(
                        f"register {model}: {version} is already claimed by another run"
                    ) from None
                # Taken by an earlier or concurrent run; skip past everything claimed since.
                number = max(number + 1, max(self._claimed_numbers(model), default=0) + 1)
        raise RegistryError(
            f"register {model}: could not claim a version number after {_MAX_CLAIM_ATTEMPTS} attempts"
        )

    def _write_manifest(self, vdir: str, payload: bytes) -> None:
        # Create-only: a manifest, once written, is never replaced.
        try:
            self.store.put_if_absent(f"{vdir}/{MANIFEST}", payload)
        except ConflictError:
            # A retried request whose first attempt landed conflicts with itself.
            if self.store.read_bytes(f"{vdir}/{MANIFEST}") != payload:
                raise

    def _discard_partial(self, vdir: str, rels: list[str]) -> None:
        """Best effort: remove what a failed registration uploaded. The CLAIM stays,
        so the number is never reused for different content; readers ignore the
        folder anyway because it has no manifest."""
        for rel in rels:
            try:
                self.store.delete(f"{vdir}/{rel}")
            except Exception:  # noqa: BLE001 - the store may be the thing that failed
                log.debug("could not remove %s/%s after a failed registration", vdir, rel)
                return

    def _read_manifest(self, model: str, version: str) -> dict[str, Any]:
        try:
            return json.loads(self.store.read_bytes(f"{self._vdir(model, version)}/{MANIFEST}"))
        except NotFound:
            if self.store.exists(f"{self._vdir(model, version)}/{CLAIM}"):
                raise IncompleteVersion(
                    f"{model} {version} is incomplete: its registration did not finish "
                    "(no MANIFEST.json), so it cannot be used"
                ) from None
            raise VersionNotFound(
                f"{model} has no version {version}; {self._what_exists(model)}"
            ) from None

    def _info(self, manifest: dict[str, Any]) -> VersionInfo:
        model, version = manifest["model"], manifest["version"]
        return VersionInfo(
            model=model,
            version=version,
            created_at=manifest["created_at"],
            sha256=manifest["sha256"],
            uri=self.model_uri(model, version),
            metadata=manifest.get("metadata") or {},
            files=manifest.get("files") or {},
        )

    def _complete_versions(self, model: str) -> list[str]:
        found = []
        for key in self.store.list(f"{model}/versions/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST and _VERSION_RE.fullmatch(parts[2]):
                found.append(parts[2])
        return sorted(found, key=_version_number)

    def list_models(self) -> list[str]:
        """Models with at least one complete version."""
        models = set()
        for key in self.store.list():
            parts = key.split("/")
            if (
                len(parts) == 4
                and parts[1] == "versions"
                and parts[3] == MANIFEST
                and _NAME_RE.fullmatch(parts[0])
                and _VERSION_RE.fullmatch(parts[2])
            ):
                models.add(parts[0])
        return sorted(models)

    def list_versions(self, model: str) -> list[VersionInfo]:
        """Complete versions, oldest (lowest number) first."""
        check_model_name(model)
        return [self._info(self._read_manifest(model, v)) for v in self._complete_versions(model)]

    def info(self, model: str, version_or_alias: str) -> VersionInfo:
        check_model_name(model)
        return self._info(self._read_manifest(model, self.resolve(model, version_or_alias)))

    def _what_exists(self, model: str) -> str:
        versions = self._complete_versions(model)
        if not versions:
            models = self.list_models()
            return f"no versions of {model} in {self.uri} (models: {', '.join(models) or 'none'})"
        aliases = self.aliases(model)
        pointing = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        return f"versions: {', '.join(versions)}; aliases: {pointing}"

    def resolve(self, model: str, version_or_alias: str) -> str:
        """The complete version a version name or alias stands for."""
        check_model_name(model)
        name = str(version_or_alias)
        if _VERSION_RE.fullmatch(name):
            if not self.store.exists(f"{self._vdir(model, name)}/{MANIFEST}"):
                self._read_manifest(model, name)  # raises the precise error
            return name
        if not _NAME_RE.fullmatch(name):
            raise VersionNotFound(
                f"{model}: {name!r} is neither a version (v1, v2, ...) nor an alias; "
                f"{self._what_exists(model)}"
            )
        target = self.get_alias(model, name)
        if target is None:
            raise VersionNotFound(f"{model} has no alias {name!r}; {self._what_exists(model)}")
        return target

    def show(self, model: str, version_or_alias: str) -> dict[str, Any]:
        """The manifest of a version, with its URI and the aliases pointing at it."""
        version = self.resolve(model, version_or_alias)
        manifest = self._read_manifest(model, version)
        manifest["uri"] = self.model_uri(model, version)
        manifest["aliases"] = sorted(a for a, v in self.aliases(model).items() if v == version)
        return manifest

    def read_bytes(self, model: str, version_or_alias: str, rel: str) -> bytes:
        version = self.resolve(model, version_or_alias)
        try:
            return self.store.read_bytes(f"{self._vdir(model, version)}/{_check_file_rel(rel)}")
        except NotFound:
            raise NotFound(f"{model} {version} has no file {rel!r}") from None

    def read_json(self, model: str, version_or_alias: str, name: str) -> Any:
        """A JSON document of a version; ``name`` with or without ``.json``."""
        rel = name if name.endswith(".json") else f"{name}.json"
        return json.loads(self.read_bytes(model, version_or_alias, rel))

    def load_model(
        self, model: str, version_or_alias: str, *, check_environment: bool = True
    ) -> tuple[Any, VersionInfo]:
        """Unpickle a version's estimator after checking its sha256 against the manifest.

        Returns ``(estimator, info)``; ``info`` describes exactly the bytes that were
        loaded, even if an alias moves meanwhile. Unpickling runs code, so bytes that
        do not match the manifest raise IntegrityError and are never loaded. A model
        saved under other versions of the libraries it pickles (``model/kubeloop.json``
        records them) raises EnvironmentMismatch naming both, unless
        ``check_environment`` is off.
        """
        info = self.info(model, version_or_alias)
        if check_environment:
            self.check_environment(model, info.version)
        with tempfile.TemporaryDirectory(prefix="kubeloop-model-") as tmp:
            local = Path(tmp) / "model.joblib"
            self.store.download_file(f"{self._vdir(model, info.version)}/{MODEL_FILE}", local)
            actual = sha256_file(local)
            if actual != info.sha256:
                raise IntegrityError(
                    f"{model} {info.version}: {MODEL_FILE} has sha256 {actual} but its manifest "
                    f"records {info.sha256}; refusing to load it (the file was altered or corrupted)"
                )
            import joblib

            estimator = joblib.load(local)
        return estimator, info

    def check_environment(self, model: str, version: str) -> None:
        """EnvironmentMismatch when ``version`` was saved under other library versions."""
        from kubeloop.environment import check_compatible

        try:
            meta = json.loads(self.store.read_bytes(f"{self._vdir(model, version)}/{PREDICTOR_FILE}"))
        except NotFound:
            return  # saved before the request schema existed: nothing to compare
        check_compatible(meta.get("packages"), what=f"{model} {version}")

    def verify(self, model: str, version_or_alias: str) -> list[str]:
        """Problems found re-hashing every file of a version (empty: all intact)."""
        info = self.info(model, version_or_alias)
        vdir = self._vdir(model, info.version)
        problems = []
        with tempfile.TemporaryDirectory(prefix="kubeloop-verify-") as tmp:
            for rel, entry in sorted(info.files.items()):
                local = Path(tmp) / "file"
                try:
                    self.store.download_file(f"{vdir}/{rel}", local)
                except NotFound:
                    problems.append(f"{rel}: missing")
                    continue
                actual = sha256_file(local)
                if actual != entry.get("sha256"):
                    problems.append(f"{rel}: sha256 {actual}, manifest records {entry.get('sha256')}")
        return problems

    def incomplete_versions(self, model: str) -> list[str]:
        """Versions claimed but never completed (failed or still running registrations)."""
        check_model_name(model)
        complete = set(self._complete_versions(model))
        return [f"v{n}" for n in sorted(self._claimed_numbers(model)) if f"v{n}" not in complete]

    # -- aliases -------------------------------------------------------------------

    def _alias_key(self, model: str, alias: str) -> str:
        return f"{model}/aliases/{alias}.json"

    def get_alias(self, model: str, alias: str) -> str | None:
        """The version an alias points at, or None if it is not set."""
        check_model_name(model)
        check_alias_name(alias)
        try:
            return json.loads(self.store.read_bytes(self._alias_key(model, alias)))["version"]
        except NotFound:
            return None

    def aliases(self, model: str) -> dict[str, str]:
        """Every alias of the model and the version it points at."""
        check_model_name(model)
        found = {}
        for key in self.store.list(f"{model}/aliases/"):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and _NAME_RE.fullmatch(name[: -len(".json")]):
                try:
                    found[name[: -len(".json")]] = json.loads(self.store.read_bytes(key))["version"]
                except NotFound:
                    continue  # removed while listing
        return found

    def set_alias(
        self,
        model: str,
        alias: str,
        version: str,
        *,
        expected_version: str | None | Any = ...,
        reason: str = "",
    ) -> None:
        """Point ``alias`` at a complete ``version``, atomically.

        ``expected_version``: ``...`` (default) moves the alias whatever it points at;
        ``None`` requires that the alias is not set yet; a version requires that the
        alias still points there. Either way the write is a compare-and-swap against
        what was read, so a concurrent move is never silently overwritten: the loser
        gets AliasConflict. Moving ``production`` also points ``previous`` at the
        version it leaves (the rollback target).
        """
        check_model_name(model)
        check_alias_name(alias)
        _version_number(version)
        if expected_version is not ... and expected_version is not None:
            _version_number(expected_version)
        self._read_manifest(model, version)  # complete versions only

        key = self._alias_key(model, alias)
        try:
            raw, etag = self.store.read_with_etag(key)
            current: str | None = json.loads(raw)["version"]
        except NotFound:
            etag, current = None, None
        if expected_version is not ... and current != expected_version:
            raise self._conflict(model, alias, expected_version, current)
        if current == version:
            return  # already there: nothing changes, nothing to record
        record = {
            "alias": alias,
            "version": version,
            "previous_version": current,
            "updated_at": _now(),
            "reason": reason,
        }
        payload = _dumps(record)
        try:
            if etag is None:
                self.store.put_if_absent(key, payload)
            else:
                self.store.put_if_match(key, payload, etag)
        except ConflictError:
            # A retried request whose first attempt did land reports a conflict with
            # itself: that is a success.
            now = self._read_alias_bytes(model, alias)
            if now != payload:
                actual = json.loads(now)["version"] if now else None
                raise self._conflict(
                    model, alias, current if expected_version is ... else expected_version, actual
                ) from None
        self._record_history(model, record)
        if alias == PRODUCTION and current is not None:
            self._set_previous(model, current, reason=f"production moved {current} -> {version}")

    def _read_alias_bytes(self, model: str, alias: str) -> bytes | None:
        try:
            return self.store.read_bytes(self._alias_key(model, alias))
        except NotFound:
            return None

    def _conflict(self, model: str, alias: str, expected: str | None, actual: str | None) -> AliasConflict:
        return AliasConflict(
            f"{model}: alias {alias!r} was expected to point at {expected or 'nothing'} but "
            f"points at {actual or 'nothing'} (another run moved it); nothing was changed"
        )

    def _set_previous(self, model: str, version: str, *, reason: str) -> None:
        # Best effort and without compare-and-swap: production has already moved, and
        # failing now would tell the caller the promotion failed when it did not.
        try:
            key = self._alias_key(model, PREVIOUS)
            before = self._read_alias_bytes(model, PREVIOUS)
            old = json.loads(before)["version"] if before else None
            if old == version:
                return
            record = {
                "alias": PREVIOUS,
                "version": version,
                "previous_version": old,
                "updated_at": _now(),
                "reason": reason,
            }
            self.store.write_bytes(key, _dumps(record))
            self._record_history(model, record)
        except StorageError as exc:
            log.warning("%s: could not point 'previous' at %s: %s", model, version, exc)

    def _record_history(self, model: str, record: dict[str, Any]) -> None:
        stamp = record["updated_at"].replace(":", "").replace("-", "").replace(".", "")
        key = f"{model}/history/{stamp}-{record['alias']}-{record['version']}.json"
        try:
            self.store.write_bytes(key, _dumps(record))
        except StorageError as exc:
            # The alias itself has moved; a missing audit record must not undo that.
            log.warning("%s: alias moved but its history record was not written: %s", model, exc)

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every alias move, oldest first."""
        check_model_name(model)
        records = []
        for key in self.store.list(f"{model}/history/"):
            if not key.endswith(".json"):
                continue
            try:
                doc = json.loads(self.store.read_bytes(key))
            except (NotFound, ValueError):
                continue
            records.append(
                {k: doc.get(k) for k in ("alias", "version", "previous_version", "updated_at", "reason")}
            )
        return sorted(records, key=lambda r: (r["updated_at"] or "", r["alias"] or ""))
