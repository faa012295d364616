"""The loop over many cycles, as a recurring monitoring run lives on a cluster.

Every part is real but the Kubernetes API: ``kubeloop run`` trains churn v1 into
a registry on a loopback S3 server; ``kubeloop deploy`` puts it on an
InferenceService of a loopback Kubernetes API that answers as KServe does
(tests/deploy_support.FakeKubeAPI). Each cycle is one week compressed:

1. the harness plays KServe: it reads the InferenceService, starts one
   ``kubeloop serve`` per version it routes to (the primary, and the canary at its
   share), and sends the week's requests, split by a seeded draw per request;
2. the week's labels arrive (``request_id,row,label,labeled_at``);
3. ``kubeloop monitor --deploy`` reads that week's logs and labels, decides, and
   when it retrains, the challenger that passes the gate goes out as a canary
   through the same API (its deploy step);
4. after a week of canary traffic, the person on call promotes it with
   ``kubeloop canary promote`` (what ``kubectl patch`` does, and the registry follows).

Weeks 1-3 are stable, week 4 drifts (the customers of ``make demo``: prices and
support calls up, more mobile and monthly contracts, and their relation to churn
changed, ``kubeloop.datagen``'s drift 1.5), and the world stays drifted after
that: the retrained version learnt it.
Asserted: no retrain in the stable weeks; the drift caught in its own week;
monitoring watches the new version's traffic after the promotion; and the
registry's ``production`` is the InferenceService's primary at every step.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deploy_support import FakeKubeAPI
from helpers_cli import MODEL, run_args, run_cli, write_config, write_csv
from serving_support import post, rows_of, start_server

from kubeloop.datagen import make_churn
from kubeloop.demo import DRIFT
from kubeloop.deploy.patches import read_state
from kubeloop.registry import Registry

pytestmark = pytest.mark.slow

TRAIN_ROWS = 5000  # a 3500-row reference profile (see test_loop_e2e on sampling noise)
WEEK_ROWS = 2000
ROWS_PER_REQUEST = 100
STEP_TIMEOUT = 600.0
# Weeks compressed into minutes: no cool-down between them; each run reads one
# week's logs and labels.
MONITORING = """\
monitoring:
  cooldown_hours: 0
  min_labeled_rows: 200
canary:
  initial_percent: 20
  wait_timeout_seconds: 30
"""
WEEKS = ["stable", "stable", "stable", "drift", "drifted", "drifted", "drifted", "drifted"]


def _cli(args: list[str], cwd: Path) -> dict:
    proc = run_cli(args, cwd=cwd, timeout=STEP_TIMEOUT)
    assert proc.returncode == 0, f"kubeloop {' '.join(args[:2])} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def serve_week(registry: str, state: dict, frame: pd.DataFrame, features: list[str], logs: Path,
               week: int) -> tuple[dict[str, int], list[tuple[str, int, int]]]:
    """Play KServe for a week: a predictor per routed version, the canary's share of
    requests to the canary; returns the rows answered per version and the requests
    sent (id, first row, rows)."""
    shares = {state["primary_version"]: 100}
    if state.get("canary_version") and state.get("canary_percent"):
        shares = {state["primary_version"]: 100 - state["canary_percent"],
                  state["canary_version"]: state["canary_percent"]}
    servers = {
        v: start_server(["kubeloop.cli", "serve", "--model", f"{MODEL}@{v}", "--registry", registry,
                         "--log-to", str(logs)], port_flag="--port", timeout=90)
        for v in shares
    }
    rng = np.random.default_rng(week)
    versions = list(shares)
    weights = np.array([shares[v] for v in versions], float) / 100
    rows = rows_of(frame, features)
    answered = {v: 0 for v in versions}
    sent = []
    try:
        for start in range(0, len(rows), ROWS_PER_REQUEST):
            v = versions[rng.choice(len(versions), p=weights)]
            rid = f"w{week}-{start // ROWS_PER_REQUEST:03d}-{uuid.uuid4().hex[:6]}"
            batch = rows[start:start + ROWS_PER_REQUEST]
            status, body = post(f"{servers[v].url}/v1/models/{MODEL}:predict", {"instances": batch},
                                headers={"x-request-id": rid}, timeout=30)
            assert status == 200, body
            assert body["version"] == v
            answered[v] += len(batch)
            sent.append((rid, start, len(batch)))
    finally:
        for server in servers.values():
            code = server.stop(signal.SIGTERM, timeout=30)  # SIGTERM flushes the log
            assert code == 0, server.log()[-3000:]
    return answered, sent


def write_week_labels(path: Path, sent: list, truth: pd.Series) -> Path:
    rows = []
    now = pd.Timestamp.now(tz="UTC")
    for rid, start, n in sent:
        for i in range(n):
            rows.append({"request_id": rid, "row": i, "label": str(truth.iloc[start + i]), "labeled_at": now})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def test_the_loop_over_eight_weeks(tmp_path, s3_endpoint, bucket, monkeypatch):
    kube = FakeKubeAPI().start()
    try:
        _run_weeks(tmp_path, s3_endpoint, bucket, kube, monkeypatch)
    finally:
        kube.stop()


def _run_weeks(tmp_path, s3_endpoint, bucket, kube, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_REGION": "us-east-1",
           "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig"))}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    registry = f"s3://{bucket}/registry"
    reg = Registry(registry)
    train = write_csv(make_churn(TRAIN_ROWS, seed=0), tmp_path / "train.csv")
    config = write_config(tmp_path / "fast.yaml")
    out = _cli(run_args(train, registry, config), tmp_path)
    assert out["gate"]["decision"] == "promote" and out["version"] == "v1"
    _cli(["deploy", MODEL, "--registry", registry, "--json"], tmp_path)

    meta = json.loads(reg.read_bytes(MODEL, "production", "model/kubeloop.json"))
    features = [f["name"] for f in meta["features"]]

    def world(week: int, kind: str, rows: int) -> pd.DataFrame:
        return make_churn(rows, seed=100 + week, drift=0.0 if kind == "stable" else DRIFT)

    # The newest data, drifted as the traffic will be, for the retraining branch.
    fresh = write_csv(world(50, "drift", TRAIN_ROWS), tmp_path / "fresh.csv")
    monitor_config = tmp_path / "monitor.yaml"
    monitor_config.write_text(MONITORING)
    logs = tmp_path / "predictions"

    def serving() -> dict:
        return read_state(kube.objects[("kubeloop", MODEL)]).to_dict()

    def registry_follows(when: str) -> None:
        state = serving()
        assert reg.get_alias(MODEL, "production") == state["primary_version"], (when, state, reg.aliases(MODEL))
        if state["canary_version"]:
            assert reg.get_alias(MODEL, "canary") == state["canary_version"], (when, state, reg.aliases(MODEL))

    registry_follows("after the first deploy")
    history = []
    for week, kind in enumerate(WEEKS, start=1):
        state = serving()
        frame = world(week, kind, WEEK_ROWS)
        # Each week's logs under a root of their own: a week here lasts a minute, too
        # short for a time window to tell one week's rows from the last's.
        week_logs = logs / f"week-{week}"
        answered, sent = serve_week(registry, state, frame, features, week_logs, week)
        labels = write_week_labels(tmp_path / "labels" / f"week-{week}.parquet", sent, frame["churned"])
        out = _cli(["monitor", "--model", MODEL, "--logs", str(week_logs), "--labels", str(labels),
                    "--retrain-data", str(fresh), "--registry", registry, "--config", str(monitor_config),
                    "--deploy", "--work-dir", str(tmp_path / f"work-{week}"), "--json"], tmp_path)
        v = out["verdict"]
        history.append({"week": week, "kind": kind, "served": state, "answered": answered, "watched": v["version"],
                        "drifted": v["drifted_columns"], "retrain": out["retrain"], "alerts": v["alerts"],
                        "blocked": v["blocked_by"]})
        # monitoring watched the primary the cluster routes to, and saw its traffic
        assert v["version"] == state["primary_version"], history[-1]
        assert v["n_current"] == answered[state["primary_version"]], history[-1]
        assert v["alerts"] == [], history[-1]
        registry_follows(f"week {week}, after monitoring")

        if kind == "stable":
            assert out["retrain"] is False and v["drifted_columns"] == [], history[-1]
        if kind == "drift":
            # caught in the week it happened, retrained, and the challenger is a canary
            assert any(r.startswith("drift on important features") for r in v["reasons"]), history[-1]
            assert out["retrain"] is True and out["retrained"] is True, history[-1]
            after = serving()
            assert after["canary_version"] == "v2" and after["primary_version"] == "v1", after
            assert reg.get_alias(MODEL, "production") == "v1"  # only the promotion moves it
        if kind == "drifted" and state.get("canary_version"):
            # a week of canary traffic: the same drift, but the data is what v2 learnt from
            assert answered.get("v2", 0) > 0, history[-1]
            assert out["retrain"] is False and any("v2 was trained on" in b for b in v["blocked_by"]), history[-1]
            _cli(["canary", "promote", MODEL, "--registry", registry, "--json"], tmp_path)
            assert serving()["primary_version"] == "v2" and reg.get_alias(MODEL, "production") == "v2"
            registry_follows(f"week {week}, after the promotion")
        elif kind == "drifted":
            # after the promotion: the new version's traffic, watched against its own profile
            assert v["version"] == "v2" and answered == {"v2": WEEK_ROWS}, history[-1]
            assert out["retrain"] is False and v["drifted_columns"] == [], history[-1]

    assert [h["watched"] for h in history] == ["v1"] * 5 + ["v2"] * 3, history
    assert [v.version for v in reg.list_versions(MODEL)] == ["v1", "v2"]
