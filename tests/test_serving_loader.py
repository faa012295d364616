"""Loading a registry version's model/ folder, locally and from S3, integrity first."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from serving_support import register, rows_of, trained

from kubeloop.registry import Registry
from kubeloop.serving.loader import ModelLoadError, load_version, version_of
from kubeloop.serving.schema import validate
from kubeloop.storage import IntegrityError


@pytest.fixture
def version_uri(store_uri):
    """A registered version on each backend (local directory, S3 on a loopback server)."""
    registry = Registry(store_uri)
    version = register(registry, trained("linear", "classification"))
    return registry.model_uri("churn", version), registry


def test_loads_a_registered_version_and_scores_like_the_pipeline(version_uri):
    uri, _ = version_uri
    loaded = load_version(uri)
    model = trained("linear", "classification")
    assert (loaded.name, loaded.version, loaded.task) == ("churn", "v1", "classification")
    assert loaded.labels == ["no", "yes"]
    frame = model.test[model.features].head(20)
    _, proba = loaded.compiled.predict(validate(rows_of(frame, model.features), loaded.schema).rows)
    np.testing.assert_allclose(proba, model.pipeline.predict_proba(frame), atol=1e-6, rtol=0)
    # the serving URI (trailing slash) works too
    assert load_version(uri + "/").version == "v1"


def test_altered_model_bytes_are_never_unpickled(tmp_path):
    registry = Registry(tmp_path / "reg")
    version = register(registry, trained("linear", "classification"))
    folder = tmp_path / "reg" / "churn" / "versions" / version / "model"
    # A pickle that would run code if it were loaded.
    marker = tmp_path / "pwned"
    (folder / "model.joblib").write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )
    with pytest.raises(IntegrityError, match="refusing to load it"):
        load_version(folder)
    assert not marker.exists()


def test_the_model_is_hashed_where_it_lies_with_no_temporary_copy(version_uri, monkeypatch, tmp_path):
    """Local or in S3, nothing is copied into a temporary directory first: with none
    usable the version still loads (a pod's /tmp is a small emptyDir)."""
    import tempfile

    uri, _ = version_uri
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no-such-dir"))
    loaded = load_version(uri)
    assert loaded.version == "v1" and loaded.labels == ["no", "yes"]


def test_altered_model_bytes_in_s3_are_never_unpickled(s3_endpoint, bucket, monkeypatch, tmp_path):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    registry = Registry(f"s3://{bucket}/registry")
    version = register(registry, trained("linear", "classification"))
    marker = tmp_path / "pwned"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key=f"registry/churn/versions/{version}/model/model.joblib",
                  Body=b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(IntegrityError, match="refusing to load it"):
        load_version(registry.model_uri("churn", version))
    assert not marker.exists()


@pytest.mark.parametrize("breakage, message", [
    ("no-metadata", "has no kubeloop.json"),
    ("bad-json", "not valid JSON"),
    ("no-sha", "no sha256"),
    ("no-model", "does not exist"),
])
def test_broken_folders_are_clear_errors(tmp_path, breakage, message):
    registry = Registry(tmp_path / "reg")
    version = register(registry, trained("linear", "classification"))
    src = tmp_path / "reg" / "churn" / "versions" / version / "model"
    folder = tmp_path / "copy" / "model"
    shutil.copytree(src, folder)
    meta = json.loads((folder / "kubeloop.json").read_text())
    if breakage == "no-metadata":
        (folder / "kubeloop.json").unlink()
    elif breakage == "bad-json":
        (folder / "kubeloop.json").write_text("{")
    elif breakage == "no-sha":
        meta.pop("sha256")
        (folder / "kubeloop.json").write_text(json.dumps(meta))
    else:
        (folder / "model.joblib").unlink()
    with pytest.raises(ModelLoadError, match=message):
        load_version(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_version(tmp_path / "nowhere")


@pytest.mark.parametrize("uri, meta, expected", [
    ("s3://models/registry/churn/versions/v12/model/", {}, "v12"),
    ("/reg/churn/versions/v3/model", {}, "v3"),
    ("/mnt/models", {}, "unknown"),
    ("/mnt/models", {"version": "v7"}, "v7"),
    ("s3://b/r/churn/versions/v2/model/", {"version": "v9"}, "v9"),
])
def test_version_of(uri, meta, expected):
    assert version_of(uri, meta) == expected


def test_the_predictor_process_refuses_a_tampered_model(tmp_path):
    import subprocess
    import sys

    registry = Registry(tmp_path / "reg")
    version = register(registry, trained("linear", "classification"))
    folder = tmp_path / "reg" / "churn" / "versions" / version / "model"
    with open(folder / "model.joblib", "ab") as fh:
        fh.write(b"\0")
    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop.serving", "--model_name=churn", f"--model_dir={folder}",
         "--http_port=1", "--enable_grpc=false"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "refusing to load it" in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_saved_under_other_library_versions_is_refused_before_unpickling(tmp_path):
    import json as _json
    import shutil as _shutil

    from kubeloop.environment import EnvironmentMismatch, pickle_versions
    from kubeloop.serving.loader import load_version

    folder = tmp_path / "model"
    folder.mkdir()
    marker = tmp_path / "unpickled"
    import pickle as _pickle

    class _Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = _pickle.dumps(_Evil())
    (folder / "model.joblib").write_bytes(blob)
    from kubeloop.storage import sha256_file

    meta = {"format": "kubeloop/v1", "model_name": "m", "version": "v1", "model_file": "model.joblib",
            "sha256": sha256_file(folder / "model.joblib"), "task": "regression", "target": "y",
            "labels": None, "features": [{"name": "x", "kind": "numeric", "categories": None}],
            "packages": {**pickle_versions(), "numpy": "1.0.0"}}
    (folder / "kubeloop.json").write_text(_json.dumps(meta))
    with pytest.raises(EnvironmentMismatch) as err:
        load_version(folder)
    assert "numpy 1.0.0 when saved" in str(err.value) and "m v1" in str(err.value)
    assert not marker.exists()
    _shutil.rmtree(folder)
