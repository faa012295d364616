"""The deploy and canary-analysis steps (and their KFP adapters) against the fake API server."""

from __future__ import annotations

import json

import pytest
from deploy_support import FakeKubeAPI, check_isvc, from_now, log_rows, write_log_part

from kubeloop.components.deploy import canary_analysis_step, deploy_step
from kubeloop.deploy.kube import connect
from kubeloop.errors import UserError
from kubeloop.registry import Registry

CONFIG = {"canary": {"initial_percent": 25, "min_rows": 100}}


@pytest.fixture
def registry(s3_endpoint, bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    reg = Registry(f"s3://{bucket}/registry")
    for _ in range(2):
        reg.register("churn", {"model/model.joblib": b"m", "model/kubeloop.json": b"{}"})
    reg.set_alias("churn", "production", "v1")
    return reg


@pytest.fixture
def isvcs(tmp_path, monkeypatch):
    api = FakeKubeAPI().start()
    client = connect(kubeconfig=str(api.kubeconfig(tmp_path / "kc")))
    client.fake = api
    yield client
    api.stop()


def test_first_version_goes_to_100_then_later_ones_as_canary(registry, isvcs):
    out = deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, isvcs=isvcs)
    assert out["rollout"] == "first" and out["version"] == "v1" and out["status"]["ready"]
    assert out["state"]["canary_version"] is None
    out = deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, version="v2", isvcs=isvcs)
    assert out["rollout"] == "canary" and out["state"]["canary_percent"] == 25
    assert registry.get_alias("churn", "canary") == "v2" and registry.get_alias("churn", "production") == "v1"
    json.dumps(out)  # the summary is a JSON document
    again = deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, version="v2", isvcs=isvcs)
    assert again["rollout"] == "unchanged" and not again["changed"]


def test_dry_run_needs_no_cluster(registry, monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    out = deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, dry_run=True)
    assert out["dry_run"] and out["kind"] == "object"
    check_isvc(out["sent"])


def _logs(root, bad):
    # 600 clean rows are what it takes to show a failure rate under the 1% bound
    # (the verdict's confidence sequence); the bad canary fails one request in six.
    start = from_now()
    write_log_part(root, log_rows("v1", 600, seed=1, start=start), part=0)
    write_log_part(root, log_rows("v2", 300, seed=2, error_every=6 if bad else 0, start=start), part=1)


@pytest.mark.parametrize("bad,decision,shares", [(False, "promote", [10, 50]), (True, "rollback", [10])])
def test_analysis_steps_the_traffic(registry, isvcs, tmp_path, bad, decision, shares):
    deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, isvcs=isvcs)
    deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, version="v2", isvcs=isvcs)
    _logs(tmp_path / "logs", bad)
    slept = []
    out = canary_analysis_step(registry=registry.uri, model_name="churn", config=CONFIG,
                               log_uri=str(tmp_path / "logs"), isvcs=isvcs, interval_seconds=60,
                               sleep=slept.append)
    assert out["decision"] == decision and [s["share"] for s in out["steps"]] == shares
    assert slept == [60] * len(shares)
    state = isvcs.get("churn", "kubeloop")["spec"]["predictor"]
    if bad:
        assert state["canaryTrafficPercent"] == 0 and registry.get_alias("churn", "production") == "v1"
    else:
        assert "canaryTrafficPercent" not in state and registry.get_alias("churn", "production") == "v2"


def test_analysis_can_only_judge(registry, isvcs, tmp_path):
    deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, isvcs=isvcs)
    deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, version="v2", isvcs=isvcs)
    _logs(tmp_path / "logs", bad=True)
    writes = len(isvcs.fake.writes())
    out = canary_analysis_step(registry=registry.uri, model_name="churn", config=CONFIG,
                               log_uri=str(tmp_path / "logs"), steps=[], isvcs=isvcs)
    assert out["decision"] == "rollback" and out["sent"] == []
    assert len(isvcs.fake.writes()) == writes


def test_analysis_needs_logs_that_are_on(registry, isvcs):
    with pytest.raises(UserError, match="prediction logs, but they are off"):
        canary_analysis_step(registry=registry.uri, model_name="churn", isvcs=isvcs,
                             config={"canary": {"log_uri": "off"}})


def test_analysis_reads_the_default_log_root(registry, isvcs, tmp_path, s3_endpoint, bucket):
    """No log_uri anywhere: the step reads where the deploy step pointed the predictor,
    the storage's logs bucket."""
    import boto3

    config = {**CONFIG, "storage": {"logs_bucket": f"{bucket}-logs"}}
    deploy_step(registry=registry.uri, model_name="churn", config=config, isvcs=isvcs)
    deploy_step(registry=registry.uri, model_name="churn", config=config, version="v2", isvcs=isvcs)
    obj = isvcs.get("churn", "kubeloop")
    env = {e["name"]: e.get("value") for e in obj["spec"]["predictor"]["model"]["env"]}
    assert env["KUBELOOP_LOG_URI"] == f"s3://{bucket}-logs/predictions"
    _logs(tmp_path / "logs", bad=True)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=f"{bucket}-logs")
    for path in (tmp_path / "logs").rglob("*.parquet"):
        s3.upload_file(str(path), f"{bucket}-logs", f"predictions/{path.relative_to(tmp_path / 'logs').as_posix()}")
    out = canary_analysis_step(registry=registry.uri, model_name="churn", config=config, steps=[], isvcs=isvcs)
    assert out["decision"] == "rollback" and out["analyses"][0]["files"] == 2


@pytest.mark.slow
def test_deploy_op_runs_under_the_kfp_local_runner(registry, tmp_path, monkeypatch):
    from kfp import local

    from kubeloop.components.deploy import deploy_op

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = deploy_op(registry=registry.uri, model_name="churn", config=CONFIG, dry_run=True)
    assert task.outputs["rollout"] == "first"
    summary = json.loads(task.outputs["summary"])
    check_isvc(summary["sent"])


def test_analysis_since_leaves_older_rows_out(registry, isvcs, tmp_path):
    deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, isvcs=isvcs)
    deploy_step(registry=registry.uri, model_name="churn", config=CONFIG, version="v2", isvcs=isvcs)
    _logs(tmp_path / "logs", bad=False)  # logged from now on
    out = canary_analysis_step(registry=registry.uri, model_name="churn", config=CONFIG, steps=[],
                               log_uri=str(tmp_path / "logs"), since="2099-12-01T00:00:00Z", isvcs=isvcs)
    assert out["decision"] == "hold" and out["analyses"][0]["rows"] == 0
    with pytest.raises(UserError, match="ISO 8601"):
        canary_analysis_step(registry=registry.uri, model_name="churn", config=CONFIG, steps=[],
                             log_uri=str(tmp_path / "logs"), since="yesterday", isvcs=isvcs)


def test_the_pipeline_deploy_with_the_example_config_writes_prediction_logs(registry, isvcs):
    """The pipeline's deploy step gets the run's config: with the example config
    the predictor it creates logs every answer where canary analyze reads."""
    from pathlib import Path

    from kubeloop.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "manifests" / "examples" / "churn-config.yaml")
    deploy_step(registry=registry.uri, model_name="churn", config=cfg.to_dict(), isvcs=isvcs)
    obj = isvcs.get("churn", "kubeloop")
    env = {e["name"]: e for e in obj["spec"]["predictor"]["model"]["env"]}
    assert env["KUBELOOP_LOG_URI"]["value"] == cfg.prediction_log_root() == "s3://logs/predictions"
    assert env["AWS_ENDPOINT_URL"]["value"] == cfg.storage.endpoint_url
    # A config that names no log root: the storage's logs bucket, as the pipeline's
    # config reaches the step (unset values dropped); "off" is still possible.
    from kubeloop.config import Config

    params = Config.from_dict(CONFIG).to_params()
    assert "log_uri" not in params["canary"]
    default = deploy_step(registry=registry.uri, model_name="churn", config=params, version="v2", dry_run=True)
    env = {e["name"]: e for e in default["sent"]["spec"]["predictor"]["model"]["env"]}
    assert env["KUBELOOP_LOG_URI"]["value"] == "s3://logs/predictions"
    assert not any("writes no logs" in n for n in default["notes"])
    off = deploy_step(registry=registry.uri, model_name="churn", version="v2", dry_run=True,
                      config={"canary": {**CONFIG["canary"], "log_uri": "off"}})
    assert "env" not in off["sent"]["spec"]["predictor"]["model"]
    assert any("writes no logs" in n for n in off["notes"])
