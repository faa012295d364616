"""A canary that fails in production, served by the real predictor and judged from
what the predictor logged.

Three versions of ``churn`` run as ``python -m kubeloop.serving`` processes on
loopback, logging to one root:

    v1  HistGradientBoosting                          primary
    v2  logistic regression, head raising on ~15 % of rows   (about 28 % of 2-row requests fail)
    v3  logistic regression, head raising on every row       (every request fails)

The failing heads are ordinary pickled pipelines registered like any model; the
exception happens inside the predictor's scoring, so each failure is a 500 the
client sees. The analysis must count those rows and roll both canaries back.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from canary_e2e_support import MODEL, Client, failing, split_traffic, start_servers, stop_servers
from serving_support import get, register, rows_of, trained

from kubeloop.config import CanaryConfig
from kubeloop.deploy.analysis import analyze, read_prediction_logs
from kubeloop.registry import Registry

pytestmark = pytest.mark.slow

ROWS = 2000
REQUESTS = 300
ROWS_PER_REQUEST = 2
TESTS_DIR = str(Path(__file__).parent)
# Latency is not what these canaries are built to show (loopback on shared cores).
CFG = CanaryConfig(latency_slack_ms=1000)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("canary-failures")
    registry = Registry(root / "registry")
    primary = trained("hist_gradient_boosting", "classification", rows=ROWS)
    linear = trained("linear", "classification", rows=ROWS)
    models = {"v1": primary, "v2": failing(linear, 0.15), "v3": failing(linear, 1.0)}
    for version, model in models.items():
        assert register(registry, model, name=MODEL, promote=version == "v1") == version
    logs = root / "logs"
    env = {"KUBELOOP_LOG_URI": str(logs), "KUBELOOP_LOG_FLUSH_SECONDS": "0.5",
           "PYTHONPATH": TESTS_DIR + ":" + ":".join(sys.path)}
    specs = {v: {"args": ["kubeloop.serving", f"--model_name={MODEL}",
                          f"--model_dir={registry.model_uri(MODEL, v)}"], "env": env} for v in models}
    servers: dict = {}
    request.addfinalizer(lambda: stop_servers(servers, sig=signal.SIGKILL, timeout=10))
    start_servers(specs, servers, timeout=180)
    clients = {v: Client(s.url) for v, s in servers.items()}
    pool = primary.test.reset_index(drop=True)
    features = primary.features
    sent = {v: split_traffic(clients["v1"], clients[v], pool, features, requests=REQUESTS,
                             rows_per_request=ROWS_PER_REQUEST, canary_share=0.5, seed=7 + i)
            for i, v in enumerate(("v2", "v3"))}
    # After failures the server still answers, and says it is ready.
    good = rows_of(pool.iloc[:1], features)
    after = {v: clients[v].predict(good, f"after-{v}") for v in ("v1", "v2")}
    ready = {v: get(servers[v].url + "/v2/health/ready")[0] for v in models}
    bad = next(r for r in sent["v3"].requests if r["side"] == "canary")
    answer = clients["v3"].predict(rows_of(pool.iloc[bad["rows"]], features), "known-failure")
    for c in clients.values():
        c.close()
    time.sleep(0.05)
    codes = stop_servers(servers, sig=signal.SIGTERM, timeout=30)
    assert all(c == 0 for c in codes.values()), {v: servers[v].log()[-3000:] for v in codes}
    server_logs = {v: s.log() for v, s in servers.items()}
    return {"logs": logs, "sent": sent, "after": after, "ready": ready, "answer": answer,
            "server_logs": server_logs}


def test_a_failure_is_a_500_naming_the_request_and_the_server_stays_healthy(fleet):
    status, body = fleet["answer"]
    assert status == 500
    assert body["request_id"] == "known-failure" and body["version"] == "v3" and body["model"] == MODEL
    assert "RuntimeError" in body["error"]
    assert fleet["ready"] == {"v1": 200, "v2": 200, "v3": 200}
    assert fleet["after"]["v1"][0] == 200
    # The traceback is in the server's log, under the request id.
    assert "request known-failure failed" in fleet["server_logs"]["v3"]
    assert "cannot score this row" in fleet["server_logs"]["v3"]


def test_every_failed_request_is_in_the_prediction_log(fleet):
    df, _ = read_prediction_logs(str(fleet["logs"]), MODEL)
    for version in ("v2", "v3"):
        statuses = fleet["sent"][version].statuses("canary")
        assert 500 in statuses
        failed_ids = {r["request_id"] for r in fleet["sent"][version].requests
                      if r["side"] == "canary" and r["status"] == 500}
        ok_ids = {r["request_id"] for r in fleet["sent"][version].requests
                  if r["side"] == "canary" and r["status"] == 200}
        rows = df[df["version"] == version]
        logged_failed = set(rows.loc[rows["status"] == "failed", "request_id"])
        assert logged_failed - {"known-failure"} == failed_ids
        assert set(rows.loc[rows["status"] == "ok", "request_id"]) >= ok_ids
        # One log row per row sent, failed ones included.
        per_request = rows[rows["request_id"].isin(failed_ids)].groupby("request_id").size()
        assert (per_request == ROWS_PER_REQUEST).all()
    known = df[df["request_id"] == "known-failure"]
    assert list(known["status"]) == ["failed"] * len(known) and len(known) == ROWS_PER_REQUEST


@pytest.mark.parametrize("canary", ["v2", "v3"])
def test_a_failing_canary_is_rolled_back(fleet, canary):
    a = analyze(str(fleet["logs"]), MODEL, "v1", canary, CFG)
    assert a.verdict.decision == "rollback", a.verdict.reasons
    failed_rows = sum(ROWS_PER_REQUEST for r in fleet["sent"][canary].requests
                      if r["side"] == "canary" and r["status"] == 500)
    assert failed_rows > 0
    # Every failure the client saw is counted (plus the one request sent after the traffic).
    assert a.canary.errors >= failed_rows
    assert a.primary.errors == 0
    assert any(r.startswith("error rate") or "failed" in r for r in a.verdict.reasons)
    share = pd.Series(fleet["sent"][canary].statuses("canary")).eq(500).mean()
    assert (share > 0.15) if canary == "v2" else (share == 1.0)
