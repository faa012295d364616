"""The built image, run as a cluster runs it.

One loop, in the order a cluster goes through it: the compiled training pipeline
runs step by step in containers of the image (KFP's DockerRunner) and registers
a model into a loopback S3 server; the predictor starts from the ServingRuntime's
own container spec with that model where KServe's storage initializer puts it,
answers like batch scoring in the image, and logs its traffic to S3; the
compiled monitoring pipeline, in containers again, reads those logs and retrains.
Credentials reach every container as environment, standing in for the Secret.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY, make_bucket
from helpers_cli import MODEL, TARGET, TIME_COLUMN, run_cli
from image_support import (
    DEFAULT_GRACE_SECONDS,
    IMAGE,
    MODEL_DIR_MODE,
    MODEL_FILE_MODE,
    container_env,
    cpu_flag,
    docker,
    example_inferenceservice,
    image_config,
    image_size_bytes,
    kserve_args,
    memory_flag,
    place_like_storage_initializer,
    secret_names,
    security_flags,
    serving_runtime,
    skip_reason,
)
from serving_support import json_value, post

from kubeloop.datagen import make_churn

_SKIP = skip_reason()
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

REGION = "us-east-1"
# One cheap family and no stability refits: the pipelines' own work stays small,
# the time goes into what is tested (containers, S3, the predictor).
FAST = {"train": {"families": ["linear"], "search_iterations": 1}, "evaluation": {"stability_seeds": 0}}
TRAFFIC_ROWS = 240  # above the monitoring policy's minimum number of logged rows


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=TEST_ACCESS_KEY, aws_secret_access_key=TEST_SECRET_KEY)


def _put_csv(endpoint: str, bucket: str, key: str, df: pd.DataFrame) -> str:
    _s3(endpoint).put_object(Bucket=bucket, Key=key, Body=df.to_csv(index=False).encode())
    return f"s3://{bucket}/{key}"


def _credentials() -> dict[str, str]:
    """What the predictor's S3 Secret gives a pod."""
    return {"AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_SECRET_KEY}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def s3(moto_server) -> dict[str, str]:
    return {"endpoint": moto_server.endpoint, "bucket": make_bucket(moto_server.endpoint)}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image")
    os.chmod(path, 0o777)  # the image's user writes the pipeline root under it
    return path


# --- the CLI ---------------------------------------------------------------------------------


def test_image_size_is_reported():
    size = image_size_bytes(IMAGE)
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB")
    assert size > 0


def test_cli_runs_as_non_root_on_a_read_only_root():
    assert image_config(IMAGE)["User"] == "10001:10001"
    proc = docker("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges", IMAGE,
                  "sh", "-c", "id -u; id -g; kubeloop --help; kubeloop run --help >/dev/null")
    uid, gid, *help_lines = proc.stdout.splitlines()
    assert (uid, gid) == ("10001", "10001")
    text = "\n".join(help_lines)
    for command in ("run", "compile", "serve", "predict", "monitor", "canary", "registry"):
        assert command in text
    # Only /tmp is writable.
    probe = docker("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", IMAGE, "sh", "-c",
                   "touch /tmp/ok && echo tmp-ok; touch /home/kubeloop/x 2>/dev/null && echo home-writable; "
                   "touch /opt/venv/x 2>/dev/null && echo venv-writable; true")
    assert probe.stdout.split() == ["tmp-ok"]


def test_no_installer_compiler_or_cache_in_the_image():
    proc = docker("run", "--rm", "--network", "host", IMAGE, "sh", "-c",
                  "for c in pip pip3 gcc cc g++ c++ make apt-get; do command -v $c || true; done; "
                  "python -c 'import pip' 2>/dev/null && echo pip-importable; "
                  "python -c 'import setuptools' 2>/dev/null && echo setuptools-importable; "
                  "find /root/.cache /home/kubeloop/.cache /var/lib/apt/lists /run/secrets -mindepth 1 "
                  "-print 2>/dev/null; "
                  "find / -xdev \\( -name '*.whl' -o -name pip-ca -o -name 'pip' -type d \\) -print 2>/dev/null; true")
    found = [line for line in proc.stdout.splitlines() if line.strip()]
    # apt-get is the base's own (Debian's), never used at run time; anything else is a leak.
    assert [f for f in found if not f.endswith("/apt-get")] == []
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
    assert "BEGIN CERTIFICATE" not in history and "PIP_CERT=/" not in history.replace(
        "PIP_CERT=/run/secrets/pip-ca", "")


# --- the training pipeline in containers ---------------------------------------------------


def _compile(work: Path, which: str, registry: str, endpoint: str) -> Path:
    """`kubeloop compile` as a person runs it, with the S3 endpoint the pods use."""
    out = work / f"{which}.yaml"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION}
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        proc = run_cli(["compile", "--pipeline", which, "--image", IMAGE, "--registry", registry,
                        "--target", TARGET, "--time-column", TIME_COLUMN, "--model-name", MODEL,
                        "--output", str(out)], cwd=work)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert TEST_SECRET_KEY not in text and TEST_ACCESS_KEY not in text
    spec = next(yaml.safe_load_all(text))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE}
    return out


@pytest.fixture(scope="module")
def docker_runner(work):
    """KFP's local DockerRunner on the image, host network, credentials as env."""
    from kfp import local

    root = work / "pipeline-root"
    root.mkdir()
    os.chmod(root, 0o777)
    local.init(runner=local.DockerRunner(network_mode="host", environment=_credentials()),
               pipeline_root=str(root))


def _config(pipeline_yaml: Path, **extra: Any) -> dict[str, Any]:
    spec = next(yaml.safe_load_all(pipeline_yaml.read_text()))
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    return {**config, **FAST, **extra}


@pytest.fixture(scope="module")
def trained(work, s3, docker_runner) -> dict[str, Any]:
    from kfp import components

    registry = f"s3://{s3['bucket']}/registry"
    data = _put_csv(s3["endpoint"], s3["bucket"], "data/churn-2025.csv", make_churn(900, seed=7, start="2024-07-01"))
    path = _compile(work, "training", registry, s3["endpoint"])
    pipeline = components.load_component_from_file(str(path))
    task = pipeline(data_uri=data, target=TARGET, model_name=MODEL, time_column=TIME_COLUMN,
                    config=_config(path))
    summary = json.loads(task.output)
    return {"summary": summary, "registry": registry, "data": data, **s3}


def _registry(trained: dict[str, Any]):
    """The registry as the test sees it (made inside a test, where the keys are set)."""
    from kubeloop.registry import Registry

    return Registry(trained["registry"], endpoint_url=trained["endpoint"])


def test_training_pipeline_registers_a_model_from_containers(trained):
    summary, reg = trained["summary"], _registry(trained)
    assert (summary["model"], summary["version"]) == (MODEL, "v1")
    assert reg.resolve(MODEL, "production") == "v1"
    lineage = reg.read_json(MODEL, "v1", "lineage")
    assert lineage["run_id"]
    assert lineage["config"]["image"] == IMAGE  # the image the steps ran on
    assert lineage["config"]["registry"] == trained["registry"]
    listed = _s3(trained["endpoint"]).list_objects_v2(Bucket=trained["bucket"],
                                                      Prefix=f"registry/{MODEL}/versions/v1/model/")
    assert {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])} >= {"model.joblib", "kubeloop.json"}




# --- the predictor, started from the ServingRuntime ----------------------------------------


def _storage_initializer(trained: dict[str, Any], dst: Path) -> Path:
    """What KServe's storage initializer does with `storageUri`: every object under
    the version's model/ prefix, downloaded into the model folder."""
    prefix = f"registry/{MODEL}/versions/v1/model/"
    client = _s3(trained["endpoint"])
    fetched = dst.parent / "fetched"
    fetched.mkdir()
    for obj in client.list_objects_v2(Bucket=trained["bucket"], Prefix=prefix)["Contents"]:
        target = fetched / obj["Key"][len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(trained["bucket"], obj["Key"], str(target))
    return place_like_storage_initializer(fetched, dst)


def _traffic() -> pd.DataFrame:
    """Customers of a later period with drifted features (the model never saw them)."""
    return make_churn(TRAFFIC_ROWS, seed=19, start="2026-07-01", drift=1.5).drop(columns=[TARGET])


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


@pytest.fixture(scope="module")
def batch_scored(trained, work) -> pd.DataFrame:
    """`kubeloop predict` (components/predict.py) in the image, S3 in and out."""
    data = _put_csv(trained["endpoint"], trained["bucket"], "batch/traffic.csv", _traffic())
    out = f"s3://{trained['bucket']}/batch/scored.parquet"
    env = {**_credentials(), "AWS_ENDPOINT_URL": trained["endpoint"], "AWS_REGION": REGION}
    flags = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    proc = docker("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "-w", "/tmp",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *flags, IMAGE,
                  "kubeloop", "predict", "--model", f"{MODEL}@v1", "--data", data, "--out", out,
                  "--registry", trained["registry"], "--json")
    summary = json.loads(proc.stdout)
    assert summary["scored"] == TRAFFIC_ROWS and summary["rejected"] == 0, summary
    body = _s3(trained["endpoint"]).get_object(Bucket=trained["bucket"], Key="batch/scored.parquet")["Body"]
    return pd.read_parquet(io.BytesIO(body.read()))


def test_batch_scoring_runs_in_the_image(batch_scored):
    assert len(batch_scored) == TRAFFIC_ROWS
    assert set(batch_scored["prediction"]) <= {"no", "yes"}
    assert {"proba_no", "proba_yes"} <= set(batch_scored.columns)


@pytest.fixture(scope="module")
def predictor(trained, work, batch_scored):
    """The ServingRuntime's container, run as the kubelet would run it."""
    runtime = serving_runtime()
    (container,) = runtime["spec"]["containers"]
    isvc = example_inferenceservice()["spec"]["predictor"]["model"]
    http_port = next(int(a.split("=", 1)[1]) for a in container["args"] if a.startswith("--http_port="))
    for port in (http_port, http_port + 1):  # KServe's gRPC port follows the HTTP one (8081)
        if not _port_free(port):
            pytest.fail(f"port {port} is taken on this machine: the predictor uses the ServingRuntime's ports")

    secrets = {name: _credentials() for name in secret_names(container.get("env", []), isvc.get("env", []))}
    env = container_env(container, secrets, extra=isvc.get("env", []))
    # The in-cluster MinIO name does not resolve here: the loopback S3 server stands in
    # for it, and the logs go to this test's bucket under the same key layout.
    env["AWS_ENDPOINT_URL"] = trained["endpoint"]
    log_uri = env["KUBELOOP_LOG_URI"].replace("s3://logs/", f"s3://{trained['bucket']}/logs/")
    env["KUBELOOP_LOG_URI"] = log_uri

    mounts = []
    volumes = {v["name"]: v for v in runtime["spec"].get("volumes", [])}
    for m in container.get("volumeMounts", []):
        size = volumes[m["name"]]["emptyDir"].get("sizeLimit")
        mounts += ["--tmpfs", m["mountPath"] + (f":size={memory_flag(size)}" if size else "")]
    model_dir = _storage_initializer(trained, work / "mnt-models")
    mounts += ["-v", f"{model_dir}:/mnt/models:ro"]

    limits = container.get("resources", {}).get("limits", {})
    name = f"kubeloop-predictor-{uuid.uuid4().hex[:8]}"
    command = [*container["command"], *kserve_args(container["args"], MODEL)]
    docker("run", "-d", "--name", name, "--network", "host",
           *security_flags(container.get("securityContext", {}), image_config(IMAGE)["User"]),
           *mounts, "--memory", memory_flag(limits["memory"]), "--cpus", cpu_flag(limits["cpu"]),
           *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
           "--entrypoint", command[0], IMAGE, *command[1:])
    url = f"http://127.0.0.1:{http_port}"
    state = {"name": name, "url": url, "log_uri": log_uri, "model_dir": model_dir,
             "features": [f["name"] for f in json.loads((model_dir / "kubeloop.json").read_text())["features"]]}
    try:
        deadline = time.monotonic() + 180
        while _get(url + "/v2/health/ready") != 200:
            running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            if running != "true" or time.monotonic() > deadline:
                logs = docker("logs", name, check=False)
                pytest.fail(f"the predictor never became ready:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
            time.sleep(0.5)
        yield state
    finally:
        docker("rm", "-f", name, check=False)


def test_the_model_folder_is_read_only_with_the_initializers_modes(predictor):
    listing = docker("exec", predictor["name"], "sh", "-c",
                     "stat -c '%a %u %n' /mnt/models/*; touch /mnt/models/x 2>/dev/null && echo writable; true")
    lines = listing.stdout.split("\n")
    assert "writable" not in lines
    files = [line.split() for line in lines if line.strip()]
    assert files and all(mode == f"{MODEL_FILE_MODE:o}" and uid == "1000" for mode, uid, _ in files), files
    assert MODEL_DIR_MODE == 0o755  # (no subfolders in a model/ folder today)


def _v1(predictor, rows: pd.DataFrame) -> tuple[int, Any]:
    instances = [{c: json_value(v) for c, v in zip(predictor["features"], values, strict=True)}
                 for values in rows[predictor["features"]].itertuples(index=False, name=None)]
    return post(f"{predictor['url']}/v1/models/{MODEL}:predict", {"instances": instances}, timeout=60)


def _v2(predictor, rows: pd.DataFrame) -> tuple[int, Any]:
    inputs = [{"name": f, "shape": [len(rows)], "datatype": "BYTES",
               "data": [json_value(v) for v in rows[f]]} for f in predictor["features"]]
    return post(f"{predictor['url']}/v2/models/{MODEL}/infer", {"inputs": inputs}, timeout=60)


def test_predictor_answers_v1_and_v2_like_batch_scoring(predictor, batch_scored):
    traffic = _traffic()
    half = TRAFFIC_ROWS // 2
    status, v1 = _v1(predictor, traffic.iloc[:half])
    assert status == 200, v1
    assert v1["predictions"] == list(batch_scored["prediction"].iloc[:half])
    got = np.array([p["yes"] for p in v1["probabilities"]])
    np.testing.assert_allclose(got, batch_scored["proba_yes"].iloc[:half], atol=1e-9, rtol=0)

    status, v2 = _v2(predictor, traffic.iloc[half:])
    assert status == 200, v2
    outputs = {o["name"]: o["data"] for o in v2["outputs"]}
    assert outputs["prediction"] == list(batch_scored["prediction"].iloc[half:])
    np.testing.assert_allclose(outputs["proba_yes"], batch_scored["proba_yes"].iloc[half:], atol=1e-9, rtol=0)


def test_predictor_answers_400_to_a_bad_request(predictor):
    status, body = post(f"{predictor['url']}/v1/models/{MODEL}:predict",
                        {"instances": [{"no_such_feature": 1}]}, timeout=30)
    assert status == 400, body
    status, body = post(f"{predictor['url']}/v1/models/{MODEL}:predict", b"{not json", timeout=30)
    assert status == 400, body
    # Still serving after both.
    assert _get(predictor["url"] + "/v2/health/ready") == 200


def test_predictor_exits_cleanly_on_sigterm_and_its_logs_are_in_s3(predictor, trained):
    # `docker stop` is the kubelet's stop: SIGTERM, then SIGKILL once the grace period is over.
    docker("stop", "-t", str(DEFAULT_GRACE_SECONDS), predictor["name"], timeout=DEFAULT_GRACE_SECONDS + 60)
    state = json.loads(docker("inspect", "-f", "{{json .State}}", predictor["name"]).stdout)
    logs = docker("logs", predictor["name"], check=False)
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, logs.stderr[-3000:])

    prefix = predictor["log_uri"].split("/", 3)[3].rstrip("/") + f"/{MODEL}/"
    client = _s3(trained["endpoint"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=trained["bucket"], Prefix=prefix).get("Contents", [])]
    assert keys and all("/date=" in k and k.endswith(".parquet") for k in keys), keys
    frames = [pd.read_parquet(io.BytesIO(client.get_object(Bucket=trained["bucket"], Key=k)["Body"].read()))
              for k in keys]
    logged = pd.concat(frames, ignore_index=True)
    ok = logged[logged["status"] == "ok"]
    assert len(ok) == TRAFFIC_ROWS  # every scored row, flushed before the exit
    assert set(ok["version"]) == {"v1"} and set(ok["role"]) == {"primary"}
    assert (logged["status"] != "ok").sum() >= 1  # the bad request's row, with its reason


# --- the monitoring pipeline in containers -------------------------------------------------


def test_monitoring_pipeline_reads_the_logs_and_retrains_from_containers(
        trained, predictor, work, docker_runner):
    from kfp import components

    # The logs are complete once the predictor has stopped (its last flush); a no-op
    # when the SIGTERM test already stopped it.
    docker("stop", "-t", str(DEFAULT_GRACE_SECONDS), predictor["name"], check=False,
           timeout=DEFAULT_GRACE_SECONDS + 60)
    newest = make_churn(900, seed=9, start="2026-07-01", drift=1.5)
    retrain = _put_csv(trained["endpoint"], trained["bucket"], "data/churn-2026.csv", newest)
    path = _compile(work, "monitoring", trained["registry"], trained["endpoint"])
    pipeline = components.load_component_from_file(str(path))
    # No label feed here: retraining on drift alone needs min_labeled_rows 0, as the
    # demo sets it (the default asks for labels that arrived since the last retrain).
    config = _config(path, monitoring={**_config(path).get("monitoring", {}), "cooldown_hours": 0,
                                       "min_labeled_rows": 0})
    task = pipeline(logs_uri=predictor["log_uri"], registry=trained["registry"], model_name=MODEL,
                    retrain_data_uri=retrain, target=TARGET, time_column=TIME_COLUMN, config=config)
    assert task.output is True  # drift on features the model relies on: retrain
    reg = _registry(trained)
    versions = [v.version for v in reg.list_versions(MODEL)]
    assert versions == ["v1", "v2"]
    lineage = reg.read_json(MODEL, "v2", "lineage")
    assert lineage["run_id"] and lineage["config"]["image"] == IMAGE
    assert retrain in json.dumps(lineage)  # trained on the retraining data
