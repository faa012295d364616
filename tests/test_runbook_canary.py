"""The runbook's canary commands (README "On a cluster", steps 7 to 9) exactly as
printed, against the loopback API server and a loopback S3 server that enforces
the shipped MinIO policies (one user per identity, as the bucket Job makes them)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from deploy_support import FakeKubeAPI, from_now, log_rows, write_log_part

from kubeloop.cli import main
from tests.test_storage_policies import enforced, shipped  # noqa: F401 - the runbook's MinIO and its users

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


def _upload_logs(minio, tmp_path: Path) -> None:
    """What the predictor wrote (as the bucket Job's admin: the test stands in for it)."""
    s3 = minio.s3("admin")
    root = tmp_path / "logs"
    start = from_now()
    write_log_part(root, log_rows("v1", 400, seed=1, start=start), part=0)
    write_log_part(root, log_rows("v2", 200, seed=2, start=start), part=1)
    for path in root.rglob("*.parquet"):
        s3.upload_file(str(path), "logs", f"predictions/{path.relative_to(root).as_posix()}")


def _keys_sourced(section: str, minio) -> tuple[str, object]:
    """The key file a section sources (`set -a; . FILE`): one `make s3-env` writes,
    and the keys of that identity on the loopback server."""
    (path,) = re.findall(r"set -a; \. (\S+); set \+a", section)
    makefile = (REPO / "Makefile").read_text()
    identities = re.search(r"^S3_IDENTITIES\s*:?=\s*(.+)$", makefile, re.M).group(1).split()
    written = {f"manifests/base/s3-{who}.env": who for who in identities}
    assert path in written, f"the runbook sources {path}, which `make s3-env` does not write ({sorted(written)})"
    who = written[path]
    return path, minio.admin if who == "root" else minio.users[f"kubeloop-{who}"]


def test_step_8_analyze_works_as_printed(cluster, enforced, tmp_path, monkeypatch, capsys):  # noqa: F811
    minio = enforced
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
    _upload_logs(minio, tmp_path)

    # The keys the section sources, and the region it exports: the identity the
    # analysis runs as, under its policy (the predictor's keys may not read logs).
    path, keys = _keys_sourced(step8, minio)
    assert path == "manifests/base/s3-pipeline.env"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_access_key)
    assert "export AWS_REGION=us-east-1" in step8
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    (argv,) = _commands(step8, ".venv/bin/kubeloop canary analyze")
    assert "--logs" not in argv  # the default log root, where the example's predictor writes
    argv = [a.replace("http://localhost:9000", minio.endpoint) for a in argv[1:]]
    monkeypatch.chdir(REPO)
    code = main(argv + ["--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "AWS_ENDPOINT_URL" not in os.environ  # --s3-endpoint stays in the process's calls
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
