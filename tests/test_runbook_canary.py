"""The runbook's canary commands (README "On a cluster", steps 7 to 9) exactly as
printed, against the loopback API server and a private S3 server."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import start_moto
from deploy_support import FakeKubeAPI, from_now, log_rows, write_log_part

from kubeloop.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"### {title}")
    return README[start:README.index("\n### ", start + 1)]


def _commands(text: str, prefix: str) -> list[list[str]]:
    """The shell commands in ``text``'s code blocks that start with ``prefix``,
    continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].strip()
            if cmd.startswith(prefix):
                out.append(shlex.split(cmd))
    return out


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    api = FakeKubeAPI().start()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.stop()


@pytest.fixture
def minio(monkeypatch):
    """The runbook's MinIO (port-forwarded to localhost:9000), here a private moto."""
    server = start_moto()
    yield server
    server.stop()


def _upload_logs(endpoint: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="logs")
    root = tmp_path / "logs"
    start = from_now()
    write_log_part(root, log_rows("v1", 400, seed=1, start=start), part=0)
    write_log_part(root, log_rows("v2", 200, seed=2, start=start), part=1)
    for path in root.rglob("*.parquet"):
        s3.upload_file(str(path), "logs", f"predictions/{path.relative_to(root).as_posix()}")


def test_step_8_analyze_works_as_printed(cluster, minio, tmp_path, monkeypatch, capsys):
    # Step 7: `kubectl apply --server-side -k manifests/examples` creates the InferenceService.
    isvc = yaml.safe_load((REPO / "manifests" / "examples" / "inferenceservice.yaml").read_text())
    from kubeloop.deploy.kube import connect

    connect().create(isvc)
    for _ in range(3):
        connect().get("churn", "kubeloop")  # KServe brings v1 up
    # Step 8: the kubectl patch that starts the canary, as printed (the shell fills in the time).
    step8 = _section("8. Train a challenger")
    (patch,) = re.findall(r"patch inferenceservice churn --type merge -p '(\{.*?\})'\n", step8, re.S)
    cluster.edit("kubeloop", "churn", json.loads(patch.replace("'$(date -u +%FT%TZ)'", "2026-01-01T00:00:00Z")))
    # Both revisions serve; the predictor writes its logs to the example config's log root.
    _upload_logs(minio.endpoint, tmp_path)

    (argv,) = _commands(step8, ".venv/bin/kubeloop canary analyze")
    assert "--logs" not in argv  # the config names them
    argv = [a.replace("http://localhost:9000", minio.endpoint) for a in argv[1:]]
    monkeypatch.chdir(REPO)
    # --s3-endpoint sets AWS_ENDPOINT_URL for the process; recorded here so it is undone after the test.
    monkeypatch.setenv("AWS_ENDPOINT_URL", minio.endpoint)
    code = main(argv + ["--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert (res["primary"], res["canary"]) == ("v1", "v2")
    assert res["decision"] == "promote", res["analyses"][-1]["verdict"]
    assert "analysis window: since 2026-01-01T00:00:00Z" in err

    # Step 9: the promote patch as printed moves traffic only: the analysed revision serves it all.
    revisions = list(cluster.controllers[("kubeloop", "churn")].revisions)
    step9 = _section("9. Promote it")
    promote, rollback = re.findall(r"patch inferenceservice churn --type merge -p '(\{.*?\})'\n", step9, re.S)
    cluster.edit("kubeloop", "churn", json.loads(promote))
    isvcs = connect()
    for _ in range(3):
        obj = isvcs.get("churn", "kubeloop")
    assert cluster.controllers[("kubeloop", "churn")].revisions == revisions
    assert obj["status"]["components"]["predictor"]["traffic"] == [
        {"latestRevision": True, "percent": 100, "revisionName": revisions[-1]}]
