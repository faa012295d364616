"""The monitor step and the monitoring pipeline, end to end on a real registry:
train with `kubeloop run`, log the production model's answers, monitor.
Drifted traffic runs the retraining branch (a challenger reaches the gate);
undrifted traffic does not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from monitor_support import write_log

from kubeloop.config import Config
from kubeloop.datagen import make_churn
from kubeloop.registry import Registry

MODEL = "churn"
FAST = """\
target: churned
time_column: signup_date
train:
  families: [linear]
  search_iterations: 1
evaluation:
  stability_seeds: 0
"""
# The logged traffic spans three weeks: look at all of it.
MONITORING = """\
monitoring:
  cooldown_hours: 0
  min_labeled_rows: 100
  drift_window_hours: 0
  labels_window_hours: 0
"""
ALL_TRAFFIC = {"cooldown_hours": 0, "min_labeled_rows": 100, "drift_window_hours": 0, "labels_window_hours": 0}


def kubeloop(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("kubeloop")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "kubeloop.cli"]
    env = {k: v for k, v in os.environ.items() if k != "KUBELOOP_REGISTRY"}
    return subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A registry whose production model was trained on 2000 churn rows, with the
    production model's logged answers to stable and to drifted traffic."""
    root = tmp_path_factory.mktemp("monitor")
    make_churn(2000, seed=1).to_csv(root / "train.csv", index=False)
    (root / "config.yaml").write_text(FAST)
    proc = kubeloop("run", "--data", str(root / "train.csv"), "--model-name", MODEL, "--registry",
                    str(root / "registry"), "--config", str(root / "config.yaml"), "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    reg = Registry(str(root / "registry"))
    model, info = reg.load_model(MODEL, "production")
    schema = reg.read_json(MODEL, "production", "schema.json")
    features = [f["name"] for f in json.loads(reg.read_bytes(MODEL, "production", "model/kubeloop.json"))["features"]]
    start = datetime.now(timezone.utc) - timedelta(minutes=10 * 3000 + 60)  # all in the past
    for name, drift, seed in (("stable", 0.0, 5), ("drifted", 1.0, 6)):
        df = make_churn(3000, seed=seed, drift=drift)
        preds = model.predict(df[features])
        write_log(root / name, MODEL, df[features].drop(columns=[schema["time_column"]], errors="ignore"),
                  predictions=[str(p) for p in preds], version=info.version, start=start, rows_per_request=5)
        truth = df[schema["target"]].astype(str).to_numpy()
        pd.DataFrame({"request_id": [f"req-{i // 5:06d}" for i in range(len(df))], "row": [i % 5 for i in range(len(df))],
                      "label": truth, "labeled_at": datetime.now(timezone.utc)}).to_csv(root / f"{name}-labels.csv", index=False)
    make_churn(1500, seed=9, drift=1.0).to_csv(root / "fresh.csv", index=False)
    (root / "monitor.yaml").write_text(MONITORING)
    return root


@pytest.mark.slow
def test_monitor_step_on_stable_and_drifted_logs(trained, tmp_path):
    from kubeloop.components.monitor import monitor_step

    cfg = Config.from_dict({"monitoring": ALL_TRAFFIC})
    # A copy: the retrain this test starts is recorded in its registry, and the
    # labels it used then no longer count as new for the other tests.
    reg = str(shutil.copytree(trained / "registry", tmp_path / "registry"))
    stable = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "stable"), cfg=cfg,
                          out_dir=str(tmp_path / "s"), labels_uri=str(trained / "stable-labels.csv"),
                          retrain_data_uri=str(trained / "fresh.csv"))
    assert stable["verdict"]["drifted_columns"] == []
    assert stable["verdict"]["retrain"] is False
    assert stable["verdict"]["n_current"] == 3000
    assert stable["decay"]["n_labeled"] == 3000 and stable["decay"]["windows"]
    drifted = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "drifted"), cfg=cfg,
                           out_dir=str(tmp_path / "d"), labels_uri=str(trained / "drifted-labels.csv"),
                           retrain_data_uri=str(trained / "fresh.csv"))
    v = drifted["verdict"]
    assert v["retrain"] is True, v
    assert v["drifted_columns"] and any("drift" in r for r in v["reasons"])
    page = (tmp_path / "d" / "report.html").read_text()
    assert "Retrain" in page and "<svg" in page
    assert json.loads((tmp_path / "d" / "verdict.json").read_text())["retrain"] is True
    # without fresh data the same evidence is held back, not acted on
    held = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "drifted"), cfg=cfg,
                        out_dir=str(tmp_path / "h"), labels_uri=str(trained / "drifted-labels.csv"))
    assert held["verdict"]["retrain"] is False
    assert any("training data" in b for b in held["verdict"]["blocked_by"])
    # the default cool-down (24 h) holds a version registered minutes ago
    cool = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "drifted"), cfg=Config(),
                        out_dir=str(tmp_path / "c"), retrain_data_uri=str(trained / "fresh.csv"))
    assert any("cool-down" in b for b in cool["verdict"]["blocked_by"])
    # the retrain started above was recorded: its labels are not new any more, and
    # its attempt starts the cool-down even though no version was registered
    again = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "drifted"),
                         cfg=Config.from_dict({"monitoring": {**ALL_TRAFFIC, "cooldown_hours": 6}}),
                         out_dir=str(tmp_path / "a"), labels_uri=str(trained / "drifted-labels.csv"),
                         retrain_data_uri=str(trained / "fresh.csv"))
    blocked = " | ".join(again["verdict"]["blocked_by"])
    assert again["verdict"]["retrain"] is False
    assert "0 labels arrived since the last retrain" in blocked and "last retrain attempt" in blocked, blocked
    # the training data itself is nothing new
    same = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "drifted"), cfg=cfg,
                        out_dir=str(tmp_path / "t"), retrain_data_uri=str(trained / "train.csv"))
    assert any("the data v1 was trained on" in b for b in same["verdict"]["blocked_by"]), same["verdict"]
    # with no label feed no label can arrive: drift alone retrains, though min_labeled_rows is 100
    assert v["label_rule"].startswith("label feed") and json.loads((tmp_path / "d" / "verdict.json").read_text())["label_rule"]
    no_feed = monitor_step(model_name=MODEL, registry=reg, logs_uri=str(trained / "drifted"), cfg=cfg,
                           out_dir=str(tmp_path / "n"), retrain_data_uri=str(trained / "fresh.csv"))
    assert no_feed["verdict"]["retrain"] is True, no_feed["verdict"]
    assert "drift alone can retrain" in no_feed["verdict"]["label_rule"]
    assert "no label feed" in (tmp_path / "n" / "report.html").read_text()


@pytest.mark.slow
def test_monitor_step_default_windows(trained, tmp_path):
    from kubeloop.components.monitor import monitor_step

    # 3000 rows ten minutes apart, ending an hour ago: the default drift window (a
    # week) holds about the newest 1000 of them, the label window (30 days) all.
    out = monitor_step(model_name=MODEL, registry=str(trained / "registry"), logs_uri=str(trained / "stable"),
                       cfg=Config.from_dict({"monitoring": {"cooldown_hours": 0}}), out_dir=str(tmp_path),
                       labels_uri=str(trained / "stable-labels.csv"))
    assert 980 <= out["verdict"]["n_current"] <= 1008
    assert out["decay"]["n_labeled"] == 3000
    assert out["verdict"]["alerts"] == []
    assert out["verdict"]["serving"]["primary"] == out["verdict"]["version"] == out["verdict"]["production"]


@pytest.mark.slow
def test_monitor_step_window_with_no_traffic(trained, tmp_path):
    from kubeloop.components.monitor import monitor_step

    out = monitor_step(model_name=MODEL, registry=str(trained / "registry"), logs_uri=str(trained / "drifted"),
                       cfg=Config(), out_dir=str(tmp_path), window_hours=0.01)
    assert out["verdict"]["n_current"] == 0 and out["verdict"]["retrain"] is False
    # blind monitoring is an alert, not a note
    assert any("no answered requests" in a for a in out["verdict"]["alerts"]), out["verdict"]


@pytest.mark.slow
def test_monitor_step_on_s3(trained, tmp_path, s3_endpoint, bucket, monkeypatch):
    # registry, logs, labels and fresh data all in a bucket on a loopback S3 server
    import boto3

    from kubeloop.components.monitor import monitor_step, publish

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for local, prefix in ((trained / "registry", "registry"), (trained / "drifted", "logs")):
        for path in local.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
    s3.upload_file(str(trained / "drifted-labels.csv"), bucket, "labels/part-1.csv")
    s3.upload_file(str(trained / "fresh.csv"), bucket, "data/fresh.csv")
    cfg = Config.from_dict({"monitoring": ALL_TRAFFIC})
    out = monitor_step(model_name=MODEL, registry=f"s3://{bucket}/registry", logs_uri=f"s3://{bucket}/logs",
                       cfg=cfg, out_dir=str(tmp_path), labels_uri=f"s3://{bucket}/labels/",
                       retrain_data_uri=f"s3://{bucket}/data/fresh.csv")
    assert out["verdict"]["retrain"] is True and out["verdict"]["n_current"] == 3000
    assert out["decay"]["n_labeled"] == 3000
    publish(str(tmp_path), f"s3://{bucket}/reports/1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/1/")["Contents"]}
    assert {"reports/1/report.html", "reports/1/verdict.json"} <= keys


def test_monitoring_pipeline_compiles_with_the_training_branch(tmp_path):
    from kubeloop.pipelines.monitoring import compile_monitoring

    path = tmp_path / "monitoring.yaml"
    compile_monitoring(Config(), str(path), image="registry.example/kubeloop:test")
    text = path.read_text()
    assert "registry.example/kubeloop:test" in text
    assert "monitor-op" in text and "register-op" in text and "condition-" in text
    assert "AWS_SECRET_ACCESS_KEY" in text  # by secret reference, never a value
    assert "pipelinechannel--monitor-op-Output" in text  # the condition the local runner can resolve
    # deploy is a parameter of the monitoring run and reaches the training branch, so a
    # retrain that wins the gate goes out as a canary instead of moving production
    import yaml

    spec = next(yaml.safe_load_all(text))
    assert spec["root"]["inputDefinitions"]["parameters"]["deploy"]["defaultValue"] is False
    branch = next(c for c in spec["components"].values()
                  if "kubeloop-training" in (c.get("dag") or {}).get("tasks", {}))
    assert branch["dag"]["tasks"]["kubeloop-training"]["inputs"]["parameters"]["deploy"] == {
        "componentInputParameter": "pipelinechannel--deploy"}


@pytest.mark.slow
def test_monitor_command_end_to_end(trained):
    reg = trained / "registry"
    before = [v.version for v in Registry(str(reg)).list_versions(MODEL)]
    common = ["--model", MODEL, "--registry", str(reg), "--retrain-data", str(trained / "fresh.csv"),
              "--config", str(trained / "monitor.yaml"), "--json"]
    calm = kubeloop("monitor", "--logs", str(trained / "stable"), "--labels", str(trained / "stable-labels.csv"),
                    *common, cwd=trained)
    assert calm.returncode == 0, calm.stderr
    out = json.loads(calm.stdout)
    assert out["retrain"] is False and out["retrained"] is False
    assert [v.version for v in Registry(str(reg)).list_versions(MODEL)] == before
    assert Path(out["report"]).is_file()

    hot = kubeloop("monitor", "--logs", str(trained / "drifted"), "--labels", str(trained / "drifted-labels.csv"),
                   *common, cwd=trained)
    assert hot.returncode == 0, hot.stderr
    out = json.loads(hot.stdout)
    assert out["retrain"] is True and out["retrained"] is True, hot.stderr
    # the challenger went through the whole training pipeline to the gate and was registered
    assert {"ingest", "validate", "gate", "register"} <= set(out["training"]["stages"])
    after = Registry(str(reg)).list_versions(MODEL)
    assert len(after) == len(before) + 1
    assert (after[-1].metadata or {}).get("gate", {}).get("decision") in ("promote", "reject")

    # A promotion that moved production while the predictor kept serving v1 (deploy
    # off on a cluster): the next run watches v1, which still answers, and says loudly
    # that the registry is wrong instead of finding no rows of v2.
    Registry(str(reg)).set_alias(MODEL, "production", after[-1].version, reason="gate promote, not deployed")
    blind = kubeloop("monitor", "--logs", str(trained / "drifted"), *common, cwd=trained)
    assert blind.returncode == 0, blind.stderr
    out = json.loads(blind.stdout)
    v = out["verdict"]
    assert v["version"] == "v1" and v["n_current"] > 0 and v["serving"]["primary"] == "v1"
    assert any(f"production is {after[-1].version}" in a and "v1 serving" in a for a in v["alerts"]), v["alerts"]
    assert out["retrain"] is False and out["retrained"] is False
    assert "ALERT" in blind.stderr


def test_monitor_command_bad_input(tmp_path):
    proc = kubeloop("monitor", "--model", MODEL, "--logs", str(tmp_path), "--registry", str(tmp_path / "nope"),
                    cwd=tmp_path)
    assert proc.returncode == 2 and "no registry" in proc.stderr
