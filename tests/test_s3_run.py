"""``kubeloop run`` against S3: the registry and the data on a loopback S3 server.

A run into ``s3://bucket/registry`` must give exactly the run a local registry
gets (same version, metrics, gate decision), its artifacts must live in the
bucket, and a second run must compare itself with the champion loaded from the
bucket. Data read from ``s3://`` must give the same run as the local file.
The access keys must never show up in what a run prints or leaves behind, and a
wrong endpoint or bucket must be refused quickly with a message that says what
to check.

Every run is the installed command in a subprocess, with an environment built
here (module-scoped fixtures run before the per-test AWS isolation of conftest).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY, free_port
from helpers_cli import (
    FAST_CONFIG,
    MODEL,
    GoodRun,
    good_churn_run,
    kubeloop_command,
    progress_lines,
    run_args,
    write_csv,
)

from kubeloop import storage
from kubeloop.cli import NOTHING_CHANGED
from kubeloop.components.evaluate import predict, score
from kubeloop.components.gate import decide_from_evaluation
from kubeloop.components.ingest import read_parquet
from kubeloop.config import EvaluationConfig, GateConfig
from kubeloop.datagen import make_churn
from kubeloop.registry import Registry

pytestmark = pytest.mark.slow

# Recognizable keys for the leak check; moto accepts any key while auth is off.
CANARY_ACCESS_KEY = "AKIACANARY7Q2Z9XLEAK"
CANARY_SECRET_KEY = "canary/Secret+Value=kubeloop-9f8e7d6c5b4a3210"

# A bad endpoint must be given up on quickly: at most 2 attempts of ~1 s each.
FAST_FAIL_STORAGE = """\
storage:
  max_attempts: 2
  connect_timeout: 1
  read_timeout: 2
"""
# Pipeline start-up (a few seconds) plus the bounded retries of one step.


def aws_env(access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY) -> dict[str, str]:
    """This process's environment without any AWS setting of the developer's, with
    the given keys and no config files, profiles or instance metadata to fall back on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("KUBELOOP_REGISTRY", None)
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def kubeloop(args: list[str], cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(kubeloop_command() + args, cwd=cwd, env=env or aws_env(),
                          capture_output=True, text=True, timeout=timeout)


def s3_client(endpoint: str, access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key)


def new_bucket(client) -> str:
    name = f"kubeloop-run-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def bucket_objects(client, bucket: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def copy_bucket(client, src: str) -> str:
    """A new bucket holding a copy of every object of ``src``."""
    dst = new_bucket(client)
    for key in bucket_objects(client, src):
        client.copy_object(Bucket=dst, Key=key, CopySource={"Bucket": src, "Key": key})
    return dst


@dataclass
class S3Run:
    root: Path
    work: Path
    bucket: str
    registry: str
    proc: subprocess.CompletedProcess
    summary: dict[str, Any]


def s3_run(root: Path, endpoint: str, bucket: str, data: str | Path, config: Path,
           env: dict[str, str] | None = None) -> S3Run:
    registry = f"s3://{bucket}/registry"
    work = root / "work"
    proc = kubeloop(
        run_args(data, registry, config, "--s3-endpoint", endpoint, "--work-dir", str(work)),
        cwd=root, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return S3Run(root, work, bucket, registry, proc, json.loads(proc.stdout))


def fast_config(root: Path, extra: str = "") -> Path:
    path = root / "fast.yaml"
    path.write_text(FAST_CONFIG + extra)
    return path


# ----------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> GoodRun:
    """The churn run into a local registry (shared with test_pipeline.py and test_cli.py)."""
    return good_churn_run(tmp_path_factory)


@pytest.fixture(scope="module")
def first(local: GoodRun, s3_endpoint, tmp_path_factory) -> S3Run:
    """The same data and config as ``local``, into an empty registry on S3."""
    bucket = new_bucket(s3_client(s3_endpoint))
    return s3_run(tmp_path_factory.mktemp("s3-first"), s3_endpoint, bucket, local.data, local.config)


@pytest.fixture(scope="module")
def second(first: S3Run, s3_endpoint, tmp_path_factory) -> S3Run:
    """A run on more data, into a copy of ``first``'s bucket (v1 is production)."""
    root = tmp_path_factory.mktemp("s3-second")
    bucket = copy_bucket(s3_client(s3_endpoint), first.bucket)
    data = write_csv(make_churn(1500, seed=1), root / "churn-more.csv")
    return s3_run(root, s3_endpoint, bucket, data, fast_config(root))


@pytest.fixture(scope="module")
def from_s3(local: GoodRun, s3_endpoint, tmp_path_factory) -> S3Run:
    """``local``'s CSV read from the bucket, registry in the same bucket, with
    recognizable keys (the leak check looks for them)."""
    root = tmp_path_factory.mktemp("s3-data")
    client = s3_client(s3_endpoint, CANARY_ACCESS_KEY, CANARY_SECRET_KEY)
    bucket = new_bucket(client)
    client.upload_file(str(local.data), bucket, "data/churn.csv")
    return s3_run(root, s3_endpoint, bucket, f"s3://{bucket}/data/churn.csv", local.config,
                  env=aws_env(CANARY_ACCESS_KEY, CANARY_SECRET_KEY))


# ----------------------------------------------------------------- same run, other store


def assert_same_run(s3: dict[str, Any], loc: dict[str, Any]) -> None:
    assert (s3["model"], s3["version"], s3["task"], s3["family"]) == (
        loc["model"], loc["version"], loc["task"], loc["family"])
    # Seeds are fixed and both runs are on this machine: the model's bytes are the
    # same, so the floats are equal, not merely close.
    assert s3["sha256"] == loc["sha256"]
    assert s3["metrics"] == loc["metrics"]
    assert s3["baseline_metrics"] == loc["baseline_metrics"]
    assert s3["gate"] == loc["gate"]
    assert (s3["promoted"], s3["production_version"], s3["champion_version"]) == (
        loc["promoted"], loc["production_version"], loc["champion_version"])


def test_run_into_an_s3_registry_is_the_local_run(local: GoodRun, first: S3Run, s3_endpoint):
    s = first.summary
    assert_same_run(s, local.summary)
    assert (s["version"], s["gate"]["decision"]) == ("v1", "promote")
    prefix = f"{first.registry}/{MODEL}/versions/v1/"
    assert set(s["artifacts"]) == set(local.summary["artifacts"])
    for name, uri in s["artifacts"].items():
        assert uri.startswith(prefix), (name, uri)
        key = storage.join(uri, "kubeloop.json") if name in ("model", "serving_uri") else uri
        assert storage.read_bytes(key, endpoint_url=s3_endpoint), uri
    card = storage.read_bytes(s["artifacts"]["model_card"], endpoint_url=s3_endpoint).decode()
    assert card.startswith(f"# Model card: {MODEL} v1\n")

    remote, here = Registry(first.registry, endpoint_url=s3_endpoint), Registry(str(local.registry))
    assert remote.get_alias(MODEL, "production") == "v1"
    assert remote.verify(MODEL, "v1") == []
    for doc in ("metrics", "gate", "schema"):
        assert remote.read_json(MODEL, "v1", doc) == here.read_json(MODEL, "v1", doc), doc
    assert (remote.read_json(MODEL, "v1", "lineage")["data"]
            == here.read_json(MODEL, "v1", "lineage")["data"])


def test_registry_commands_read_the_s3_registry(first: S3Run, s3_endpoint):
    where = ["--registry", first.registry, "--s3-endpoint", s3_endpoint, "--json"]

    def cmd(*args: str) -> Any:
        proc = kubeloop(["registry", *args, *where], cwd=first.root)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert cmd("list") == [MODEL]
    (v1,) = cmd("list", MODEL)
    assert (v1["version"], v1["aliases"], v1["sha256"]) == ("v1", ["production"], first.summary["sha256"])
    assert v1["metrics"] == first.summary["metrics"]
    assert v1["gate"] == {k: first.summary["gate"][k] for k in ("decision", "reason")}
    shown = cmd("show", MODEL)
    assert (shown["version"], shown["aliases"]) == ("v1", ["production"])
    assert shown["uri"] == first.summary["artifacts"]["model"]
    assert shown["metadata"]["metrics"] == first.summary["metrics"]
    assert {"model/model.joblib", "model_card.md", "evaluation.json"} <= set(shown["files"])
    history = cmd("history", MODEL)
    assert [(h["alias"], h["previous_version"], h["version"]) for h in history] == [("production", None, "v1")]


def test_second_run_on_s3_is_gated_against_the_champion_from_s3(second: S3Run, s3_endpoint):
    s = second.summary
    assert (s["version"], s["champion_version"]) == ("v2", "v1")
    reg = Registry(second.registry, endpoint_url=s3_endpoint)
    # Which way the gate goes depends on the last bits of the fits (they differ from
    # one BLAS kernel to another); what the code guarantees is that the decision is
    # the gate's rule applied to the metrics it stored, against the champion v1.
    evaluation = reg.read_json(MODEL, "v2", "evaluation")
    again = decide_from_evaluation(evaluation, GateConfig())
    assert again.compared_with == "champion"
    assert (s["gate"]["decision"], s["gate"]["reason"]) == (again.decision, again.reason)
    assert s["promoted"] == again.promote
    assert [v.version for v in reg.list_versions(MODEL)] == ["v1", "v2"]
    assert reg.get_alias(MODEL, "production") == s["production_version"]
    assert s["production_version"] == ("v2" if s["promoted"] else "v1")
    assert evaluation["champion_version"] == "v1" and evaluation["champion_error"] is None

    # The champion's metrics are v1, as stored in the bucket, scored on this run's test split.
    (test_split,) = second.work.glob("runs/*/split-op/test")
    champion, info = reg.load_model(MODEL, "v1")
    assert info.sha256 == reg.info(MODEL, "v1").sha256
    expected = score(predict(champion, read_parquet(test_split), reg.read_json(MODEL, "v2", "schema")),
                     bins=EvaluationConfig().calibration_bins)
    assert s["champion_metrics"] == expected
    assert s["champion_metrics"] != s["metrics"]


def test_data_read_from_s3_gives_the_same_run(local: GoodRun, from_s3: S3Run, s3_endpoint):
    assert_same_run(from_s3.summary, local.summary)
    reg = Registry(from_s3.registry, endpoint_url=s3_endpoint)
    data = reg.read_json(MODEL, "v1", "lineage")["data"]
    assert data["uri"] == f"s3://{from_s3.bucket}/data/churn.csv"
    local_data = Registry(str(local.registry)).read_json(MODEL, "v1", "lineage")["data"]
    assert {k: v for k, v in data.items() if k != "uri"} == {
        k: v for k, v in local_data.items() if k != "uri"}
    assert f"s3://{from_s3.bucket}/data/churn.csv" in from_s3.proc.stderr


# ----------------------------------------------------------------- credentials


def leaks(blob: bytes) -> list[str]:
    """Which forms of the canary keys ``blob`` contains (plain or URL-encoded)."""
    forms = {CANARY_SECRET_KEY, CANARY_ACCESS_KEY, urllib.parse.quote(CANARY_SECRET_KEY, safe="")}
    return sorted(f for f in forms if f.encode() in blob)


def test_credentials_never_leak(from_s3: S3Run, s3_endpoint):
    assert leaks(from_s3.proc.stdout.encode()) == []
    assert leaks(from_s3.proc.stderr.encode()) == []

    files = [p for p in from_s3.root.rglob("*") if p.is_file()]
    # Not vacuous: the run's log and the pipeline root's files are there to search.
    assert any(p.match("work/logs/*.log") for p in files)
    assert sum(1 for p in files if "runs" in p.parts) >= 10
    found = {str(p): leaks(p.read_bytes()) for p in files}
    assert {p: f for p, f in found.items() if f} == {}

    objects = bucket_objects(s3_client(s3_endpoint, CANARY_ACCESS_KEY, CANARY_SECRET_KEY), from_s3.bucket)
    assert f"registry/{MODEL}/versions/v1/lineage.json" in objects
    assert {k: leaks(v) for k, v in objects.items() if leaks(v)} == {}


# ----------------------------------------------------------------- refused quickly


@pytest.fixture
def failing(tmp_path) -> tuple[Path, Path]:
    """A work directory and a config that gives up on an endpoint after ~2 s."""
    return tmp_path, fast_config(tmp_path, FAST_FAIL_STORAGE)


def refused(proc: subprocess.CompletedProcess) -> str:
    """Exit 2 with a clear message, and refused before any data was read: no step
    past settings ran (timing the refusal would measure the machine's load)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert set(progress_lines(proc.stderr)) <= {"settings"}, proc.stderr
    assert NOTHING_CHANGED in proc.stderr
    assert "Traceback" not in proc.stderr
    assert leaks(proc.stderr.encode()) == []
    return proc.stderr


def test_unreachable_endpoint_is_refused_quickly(failing, local: GoodRun):
    root, config = failing
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = kubeloop(
        run_args(local.data, "s3://b/r", config, "--s3-endpoint", endpoint, "--work-dir", str(root / "work")),
        cwd=root, env=aws_env(CANARY_ACCESS_KEY, CANARY_SECRET_KEY),
    )
    err = refused(proc)
    assert f"cannot reach the S3 endpoint {endpoint}" in err
    for what_to_check in ("--s3-endpoint", "AWS_ENDPOINT_URL", "storage.endpoint_url", "server is running"):
        assert what_to_check in err, err


@pytest.mark.parametrize("what", ["registry", "data"])
def test_missing_bucket_is_named(failing, local: GoodRun, s3_endpoint, what):
    root, config = failing
    missing = f"kubeloop-missing-{uuid.uuid4().hex[:8]}"
    data, registry = str(local.data), root / "registry"
    if what == "registry":
        registry = f"s3://{missing}/registry"
    else:
        data = f"s3://{missing}/data/churn.csv"
    proc = kubeloop(
        run_args(data, registry, config, "--s3-endpoint", s3_endpoint, "--work-dir", str(root / "work")),
        cwd=root,
    )
    err = refused(proc)
    assert f"bucket '{missing}' does not exist at {s3_endpoint}" in err, err
    assert f"aws s3 mb s3://{missing}" in err
    if what == "data":
        assert not (root / "registry").exists()
