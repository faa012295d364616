"""Loading a registry version's ``model/`` folder: integrity first, unpickling after.

The folder is what a KServe ``storageUri`` points at (``<registry>/<model>/versions/
vN/model/``): ``kubeloop.json`` (the request contract and the sha256 of the model
file) and ``model.joblib``. Only that folder reaches a pod, so the check is against
``kubeloop.json``'s sha256: bytes that do not match are never unpickled (unpickling
runs code). ``kubeloop serve`` also checks that sha256 against the registry's
manifest before it starts the predictor.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kubeloop.environment import check_compatible
from kubeloop.serving.fastpath import CompiledModel
from kubeloop.serving.schema import DEFAULT_MAX_ROWS, RequestSchema
from kubeloop.storage import (
    IntegrityError,
    NotFound,
    StorageError,
    is_remote,
    join,
    open_store,
)

METADATA_FILE = "kubeloop.json"
_VERSION_IN_URI = re.compile(r"/versions/(v[1-9][0-9]*)/model/?$")


class ModelLoadError(StorageError):
    """The folder is not a loadable kubeloop model; the message says what is wrong."""


@dataclass
class LoadedVersion:
    """One version, ready to score."""

    name: str
    version: str
    uri: str
    metadata: dict[str, Any]
    schema: RequestSchema
    compiled: CompiledModel

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def labels(self) -> list[Any]:
        return list(self.compiled.classes)


def version_of(uri: str, metadata: dict[str, Any]) -> str:
    """``kubeloop.json``'s version, else the ``versions/vN/`` part of the URI."""
    version = metadata.get("version")
    if isinstance(version, str) and version:
        return version
    m = _VERSION_IN_URI.search(uri.rstrip("/") + "/")
    return m.group(1) if m else "unknown"


def _read_metadata(store: Any, uri: str) -> dict[str, Any]:
    try:
        raw = store.read_bytes(METADATA_FILE)
    except NotFound:
        raise ModelLoadError(
            f"{uri} has no {METADATA_FILE}: point at a registry version's model/ folder "
            "(the serving_uri of `kubeloop run --json`)"
        ) from None
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise ModelLoadError(f"{uri}/{METADATA_FILE} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("task") not in ("classification", "regression"):
        raise ModelLoadError(f"{uri}/{METADATA_FILE} is not a kubeloop predictor document (no task)")
    if not isinstance(meta.get("sha256"), str):
        raise ModelLoadError(f"{uri}/{METADATA_FILE} records no sha256 of the model; refusing to load it")
    return meta


def _checked_load(f: BinaryIO, expected: str, where: str) -> Any:
    """Unpickle the open file ``f`` only if its bytes have sha256 ``expected``: the
    same open file (or buffer) is hashed and then loaded, so what was checked is
    what is unpickled."""
    import hashlib

    import joblib

    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise IntegrityError(
            f"{where} has sha256 {actual} but {METADATA_FILE} records {expected}; refusing to load it "
            "(the file was altered, corrupted or belongs to another version)"
        )
    f.seek(0)
    return joblib.load(f)


def load_version(
    uri: str | os.PathLike[str],
    *,
    name: str | None = None,
    storage_cfg: Any = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> LoadedVersion:
    """Read ``kubeloop.json``, fetch the model file, check its sha256, then unpickle it."""
    text = os.fspath(uri)
    if not is_remote(text):
        text = str(Path(text.removeprefix("file://")).expanduser().absolute())
        if not Path(text).is_dir():
            raise ModelLoadError(f"model folder {text} does not exist")
    store = open_store(text, storage_cfg)
    meta = _read_metadata(store, text)
    # Before anything is unpickled: another scikit-learn, numpy, scipy or joblib
    # than the model was saved with may load it and then predict differently.
    check_compatible(meta.get("packages"), what=f"{meta.get('model_name') or text} "
                     f"{version_of(text, meta)}")
    model_file = meta.get("model_file") or "model.joblib"
    if "/" in model_file or model_file in ("", ".", ".."):
        raise ModelLoadError(f"{text}/{METADATA_FILE} names an odd model file {model_file!r}")
    where = join(text, model_file)
    if is_remote(text):
        # Into memory, not into /tmp: the bytes are hashed where they lie and those
        # same bytes are unpickled (a second read could return other bytes). On a
        # cluster this is the shadow's path (KUBELOOP_SHADOW_URI): the primary's
        # model is what KServe's storage initializer copied into /mnt/models (the
        # emptyDir kserve-provision-location, mounted read-only into the model
        # server: kserve/kserve pkg/webhook/admission/pod/
        # storage_initializer_injector.go), a local folder loaded below; and the
        # pod's /tmp is a small emptyDir (256Mi in manifests/base/servingruntime.yaml)
        # that a copy could overflow.
        try:
            data = store.read_bytes(model_file)
        except NotFound:
            raise ModelLoadError(f"{where} does not exist") from None
        with io.BytesIO(data) as buffer:
            del data  # the buffer shares the bytes; nothing else holds them
            pipeline = _checked_load(buffer, meta["sha256"], where)
    else:
        # Hashed where it lies (KServe's /mnt/models is often read-only and /tmp small).
        local = Path(text) / model_file
        if not local.is_file():
            raise ModelLoadError(f"{where} does not exist")
        with open(local, "rb") as f:
            pipeline = _checked_load(f, meta["sha256"], where)
    schema = RequestSchema.from_metadata(meta, max_rows=max_rows)
    compiled = CompiledModel(pipeline, schema, task=meta["task"], labels=meta.get("labels"))
    return LoadedVersion(
        name=name or meta.get("model_name") or "model",
        version=version_of(text, meta),
        uri=text,
        metadata=meta,
        schema=schema,
        compiled=compiled,
    )
