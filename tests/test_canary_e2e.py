"""Canary analysis end to end, with no cluster: real predictor processes, a traffic
split, prediction logs, and ``kubeloop canary analyze`` run as a user runs it.

Five versions of ``churn`` are registered, each served by its own
``python -m kubeloop.serving`` process on loopback, all writing their prediction
logs to one log root with the same environment (as the two revisions of a KServe
canary do, so the logs tell them apart by ``version`` only):

    v1  HistGradientBoosting on the churn table        primary (production)
    v2  logistic regression on the same table          a good canary
    v3  HistGradientBoosting with yes/no swapped        predicts the opposite of the truth
    v4  HistGradientBoosting without ``support_calls``  refuses what clients send
    v5  logistic regression on shuffled labels          has learnt nothing: "no" for everyone

For each canary the harness sends v1 requests of held-out rows, 80 % to v1 and
20 % to the canary by a seeded draw per request. The servers are then stopped
(SIGTERM writes every queued log row) and ``kubeloop canary analyze churn --logs
ROOT --json`` judges each canary against v1, without and with a ground-truth
labels file (request_id, row, label, labeled_at).

The one threshold changed from its default, through a ``--config`` file as a
user changes it, is ``canary.latency_slack_ms``: on a loopback server sharing
two cores with other work, a version's p95 over ~100 requests moves by 10-20 ms
between runs of the same model (scheduler noise, not the model), so the
latency bounds get a 50 ms slack and the verdicts rest on the signals each
canary was built to show. (The latency rules have table-driven tests.)

The expected verdicts are what the rules of ``kubeloop/deploy/verdict.py``
guarantee for that evidence with the default thresholds (latency slack aside):
- v2: every bound holds and the prediction distributions agree: promote (without
  labels the reasons say the metric was not compared; with labels the metric
  check is there and passes);
- v3: its predictions diverge (PSI far above 0.25): hold while no labels can say
  which side is right, rollback on accuracy once they have arrived;
- v4: every row rejected (unknown_field): rollback on the rejection rate;
- v5: its predictions diverge (no churner found): hold without labels. With
  labels it is never promoted: accuracy alone would pass it (the target is "no"
  four times in five), the Brier score of its probabilities does not, and where
  the labelled rows cannot yet separate it from the primary the verdict holds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from canary_e2e_support import (
    MODEL,
    TARGET,
    Client,
    Sent,
    split_traffic,
    start_servers,
    stop_servers,
    variant,
    write_labels,
)
from helpers_cli import kubeloop_command
from serving_support import free_port, register, rows_of, trained

from kubeloop.registry import Registry

pytestmark = pytest.mark.slow

ROWS = 2000                 # generated table; its held-out split (~300 rows) is the request pool
REQUESTS = 400              # per canary scenario
ROWS_PER_REQUEST = 10
CANARY_SHARE = 0.2
DROPPED = "support_calls"
CLI_TIMEOUT = 120
SERVER_TIMEOUT = 180  # five servers starting at once on two shared cores
CONFIG = """\
canary:
  latency_slack_ms: 50
"""

SCENARIOS = {"good": "v2", "swapped": "v3", "rejecting": "v4", "constant": "v5"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("canary-e2e")
    registry = Registry(root / "registry")
    primary = trained("hist_gradient_boosting", "classification", rows=ROWS)
    models = {
        "v1": primary,
        "v2": trained("linear", "classification", rows=ROWS),
        "v3": variant("hist_gradient_boosting", rows=ROWS, labels="swapped"),
        "v4": variant("hist_gradient_boosting", rows=ROWS, drop=DROPPED),
        "v5": variant("linear", rows=ROWS, labels="shuffled"),
    }
    for version, model in models.items():
        assert register(registry, model, name=MODEL, promote=version == "v1") == version
    logs = root / "logs"
    env = {"KUBELOOP_LOG_URI": str(logs), "KUBELOOP_LOG_FLUSH_SECONDS": "0.5"}
    specs = {v: {"args": ["kubeloop.serving", f"--model_name={MODEL}",
                          f"--model_dir={registry.model_uri(MODEL, v)}"], "env": env} for v in models}
    servers: dict[str, Any] = {}

    def kill_all() -> None:
        stop_servers(servers, sig=signal.SIGKILL, timeout=10)
        for s in servers.values():
            s.log_path.unlink(missing_ok=True)

    request.addfinalizer(kill_all)
    start_servers(specs, servers, timeout=SERVER_TIMEOUT)
    clients = {v: Client(s.url) for v, s in servers.items()}

    pool = primary.test.reset_index(drop=True)
    features = primary.features
    # Warm-up requests, before the window the analysis judges (--since).
    for client in clients.values():
        for i in range(3):
            client.predict(rows_of(pool.iloc[i * 5:(i + 1) * 5], features), f"warmup-{i}")
    time.sleep(0.05)
    since = datetime.now(timezone.utc)

    sent: dict[str, Sent] = {}
    for seed, (scenario, version) in enumerate(SCENARIOS.items()):
        sent[scenario] = split_traffic(clients["v1"], clients[version], pool, features, requests=REQUESTS,
                                       rows_per_request=ROWS_PER_REQUEST, canary_share=CANARY_SHARE,
                                       seed=100 + seed)
    for client in clients.values():
        client.close()
    # SIGTERM: each predictor writes every queued log row before it exits.
    codes = stop_servers(servers, sig=signal.SIGTERM, timeout=30)
    assert all(c == 0 for c in codes.values()), {v: (c, servers[v].log()[-2000:]) for v, c in codes.items()}

    (root / "kubeloop.yaml").write_text(CONFIG)
    all_sent = Sent([r for s in sent.values() for r in s.requests])
    labels = write_labels(root / "labels.csv", all_sent, pool[TARGET])
    return {"root": root, "registry": registry, "logs": logs, "models": models, "sent": sent,
            "since": since, "labels": labels, "pool": pool}


def analyze(fleet: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``kubeloop canary analyze churn --logs ROOT --since T --config FILE ARGS --json``, as a user runs it
    on a machine with no Kubernetes configuration at all."""
    home = fleet["root"] / "home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST",
                                                            "KUBELOOP_REGISTRY")}
    cmd = kubeloop_command() + ["canary", "analyze", MODEL, "--logs", str(fleet["logs"]),
                                "--since", fleet["since"].isoformat(), "--config", str(fleet["root"] / "kubeloop.yaml"),
                                *args, "--json"]
    return subprocess.run(cmd, cwd=fleet["root"], env={**base, "HOME": str(home), **(env or {})},
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


_runs: dict[tuple[str, ...], dict[str, Any]] = {}


def verdict_of(fleet: dict[str, Any], scenario: str, *, labels: bool) -> dict[str, Any]:
    """The command's JSON for one canary judged against v1 (each run once per module)."""
    key = (scenario, str(labels))
    if key not in _runs:
        extra = ["--primary", "v1", "--canary", SCENARIOS[scenario]]
        if labels:
            extra += ["--labels", str(fleet["labels"])]
        proc = analyze(fleet, *extra)
        assert proc.returncode == 0, proc.stderr
        _runs[key] = json.loads(proc.stdout)
    return _runs[key]


def _checks(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in out["analyses"][-1]["verdict"]["checks"]}


def _primary_rows(fleet: dict[str, Any]) -> int:
    return sum(s.rows_to("primary") for s in fleet["sent"].values())


# --------------------------------------------------------------------------- the logs themselves


def test_logs_follow_the_contract(fleet):
    logs: Path = fleet["logs"]
    parts = sorted(logs.rglob("*.parquet"))
    assert parts, "no prediction logs written"
    layout = re.compile(rf"{MODEL}/date=\d{{4}}-\d{{2}}-\d{{2}}/part-\d{{8}}T\d{{6}}-[0-9a-f]{{8}}\.parquet")
    assert all(layout.fullmatch(p.relative_to(logs).as_posix()) for p in parts), parts[:3]

    df = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    for version, model in fleet["models"].items():
        part = next(p for p in parts if (pq.read_table(p, columns=["version"]).column(0).to_pylist() or [None])[0]
                    == version)
        schema = pq.read_schema(part)
        expected = (["request_id", "row", "time", "model", "version", "role", *model.features, "prediction"]
                    + [f"proba_{label}" for label in model.metadata["labels"]] + ["latency_ms", "status"])
        assert schema.names == expected, version
        types = {n: str(schema.field(n).type) for n in schema.names}
        assert types["request_id"] == types["model"] == types["version"] == types["role"] == "string"
        assert types["row"] == "int64" and types["time"] == "timestamp[us, tz=UTC]"
        assert types["prediction"] == "string" and types["status"] == "string"
        assert types["latency_ms"] == "double" and all(types[f"proba_{label}"] == "double"
                                                       for label in model.metadata["labels"])

    # Same environment everywhere, as in a KServe canary: only `version` tells them apart.
    assert set(df["role"]) == {"primary"}
    # Every request is in the log once per row, under the version of the server it went to.
    logged = {rid: (sorted(g["row"]), set(g["version"])) for rid, g in df.groupby("request_id")}
    for scenario, version in SCENARIOS.items():
        for r in fleet["sent"][scenario].requests:
            assert logged[r["request_id"]] == (list(range(len(r["rows"]))),
                                               {"v1" if r["side"] == "primary" else version}), r


def test_harness_split_traffic_and_the_canaries_answered_as_built(fleet):
    for scenario, sent in fleet["sent"].items():
        n = sum(1 for r in sent.requests if r["side"] == "canary")
        # A seeded 80/20 draw over 400 requests, and enough canary rows for a verdict.
        assert 0.12 * REQUESTS < n < 0.28 * REQUESTS, (scenario, n)
        assert sent.rows_to("canary") >= 200
        assert set(sent.statuses("primary")) == {200}
        assert set(sent.statuses("canary")) == ({400} if scenario == "rejecting" else {200})


# --------------------------------------------------------------------------- verdicts


def test_good_canary_promotes_before_labels_arrive(fleet):
    out = verdict_of(fleet, "good", labels=False)
    a = out["analyses"][-1]
    assert (out["primary"], out["canary"]) == ("v1", "v2")
    assert out["decision"] == "promote", a["verdict"]["reasons"]
    # The window is the harness's traffic only (warm-up requests came before --since).
    assert a["primary"]["rows"] == _primary_rows(fleet)
    assert a["canary"]["rows"] == fleet["sent"]["good"].rows_to("canary")
    assert a["canary"]["errors"] == a["canary"]["rejections"] == 0
    checks = _checks(out)
    assert checks["prediction divergence"]["passed"]
    assert not any(name.startswith("metric") for name in checks)
    assert any("labels not yet arrived" in r for r in a["verdict"]["reasons"])


def test_good_canary_promotes_with_labels(fleet):
    out = verdict_of(fleet, "good", labels=True)
    a = out["analyses"][-1]
    assert out["decision"] == "promote", a["verdict"]["reasons"]
    assert a["canary"]["labeled_rows"] == fleet["sent"]["good"].rows_to("canary")
    assert a["primary"]["labeled_rows"] == _primary_rows(fleet)
    metric = _checks(out)["metric brier_score"]
    assert metric["passed"] and metric["canary"] < 0.5 and metric["primary"] < 0.5


def test_diverging_canary_is_held_until_labels_arrive(fleet):
    out = verdict_of(fleet, "swapped", labels=False)
    a = out["analyses"][-1]
    assert out["decision"] == "hold", a["verdict"]["reasons"]
    counts = a["canary"]["prediction_counts"]
    assert counts.get("yes", 0) > counts.get("no", 0)  # the swapped model calls most customers churners
    div = _checks(out)["prediction divergence"]
    assert not div["passed"] and div["canary"] > div["limit"]
    assert any("PSI" in r and "no labels yet" in r for r in a["verdict"]["reasons"])


def test_diverging_canary_rolls_back_once_labels_show_it_wrong(fleet):
    out = verdict_of(fleet, "swapped", labels=True)
    a = out["analyses"][-1]
    assert out["decision"] == "rollback", a["verdict"]["reasons"]
    metric = _checks(out)["metric brier_score"]
    assert not metric["passed"] and metric["canary"] > metric["primary"] + 0.1  # lower is better
    assert any(r.startswith("brier_score on labelled rows") for r in a["verdict"]["reasons"])


def test_canary_that_refuses_client_requests_rolls_back(fleet):
    out = verdict_of(fleet, "rejecting", labels=False)
    a = out["analyses"][-1]
    assert out["decision"] == "rollback", a["verdict"]["reasons"]
    rows = fleet["sent"]["rejecting"].rows_to("canary")
    assert a["canary"]["rows"] == a["canary"]["rejections"] == rows
    assert a["canary"]["errors"] == 0  # refusing bad input is not a failure of the predictor
    rejection = _checks(out)["rejection rate"]
    assert not rejection["passed"] and rejection["canary"] == 1.0
    assert any(r.startswith("rejection rate") for r in a["verdict"]["reasons"])

    logged = pd.concat([pq.read_table(p).to_pandas() for p in fleet["logs"].rglob("*.parquet")])
    v4 = logged[(logged["version"] == "v4") & logged["request_id"].isin(
        [r["request_id"] for r in fleet["sent"]["rejecting"].requests])]
    assert set(v4["status"]) == {"unknown_field"} and v4["prediction"].isna().all()


def test_canary_that_learnt_nothing_is_held_without_labels(fleet):
    out = verdict_of(fleet, "constant", labels=False)
    a = out["analyses"][-1]
    assert out["decision"] == "hold", a["verdict"]["reasons"]
    assert set(a["canary"]["prediction_counts"]) == {"no"}  # not one churner found
    assert not _checks(out)["prediction divergence"]["passed"]


def test_canary_that_learnt_nothing_is_never_promoted_once_labels_arrive(fleet):
    # Accuracy alone would pass it (the target is "no" ~80% of the time); the Brier
    # score of its logged probabilities does not.
    out = verdict_of(fleet, "constant", labels=True)
    a = out["analyses"][-1]
    assert a["canary"]["labeled_rows"] >= 100 and a["primary"]["labeled_rows"] >= 100
    assert out["decision"] in ("hold", "rollback"), a["verdict"]["reasons"]
    assert _checks(out)["metric brier_score"]["canary"] >= _checks(out)["metric brier_score"]["primary"]


# --------------------------------------------------------------------------- without a cluster, as a user


UNREACHABLE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster: {server: "https://127.0.0.1:%d"}
contexts:
- name: gone
  context: {cluster: gone, user: me}
current-context: gone
users:
- name: me
  user: {token: not-a-real-token}
"""


@pytest.mark.parametrize("kube", ["none", "unreachable"])
def test_versions_come_from_the_registry_when_there_is_no_cluster(fleet, kube):
    """No --primary/--canary: the registry's production and canary aliases say which
    versions to compare. With no Kubernetes configuration, or one whose API server
    does not answer (a laptop's stale kubeconfig), the command notes it and judges."""
    env = {}
    if kube == "unreachable":
        path = fleet["root"] / "kubeconfig"
        path.write_text(UNREACHABLE_KUBECONFIG % free_port())
        env["KUBECONFIG"] = str(path)
    registry: Registry = fleet["registry"]
    registry.set_alias(MODEL, "canary", "v2", reason="canary e2e")
    proc = analyze(fleet, "--registry", str(fleet["root"] / "registry"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "working without a cluster" in proc.stderr
    out = json.loads(proc.stdout)
    assert (out["primary"], out["canary"]) == ("v1", "v2")
    assert out["decision"] == verdict_of(fleet, "good", labels=False)["decision"] == "promote"


def test_stepped_dry_run_prints_the_patches_each_verdict_leads_to(fleet, s3_endpoint, bucket, monkeypatch):
    """--steps with --dry-run and no cluster: the schedule is judged step by step
    against the InferenceService the registry's aliases describe (so the registry
    must be one a cluster can fetch from: S3); the good canary ends promoted, the
    rejecting one is rolled back at its first step."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    uri = f"s3://{bucket}/registry"
    registry = Registry(uri)
    for version, model in fleet["models"].items():
        assert register(registry, model, name=MODEL, promote=version == "v1") == version
    patches = {}
    for scenario in ("good", "rejecting"):
        registry.set_alias(MODEL, "canary", SCENARIOS[scenario], reason="canary e2e")
        proc = analyze(fleet, "--registry", uri, "--steps", "10,50,100", "--interval", "0", "--dry-run",
                       env={"AWS_ENDPOINT_URL": s3_endpoint})
        assert proc.returncode == 0, proc.stderr
        assert "nothing was changed" in proc.stderr
        patches[scenario] = json.loads(proc.stdout)
    shares = {k: [p["spec"]["predictor"].get("canaryTrafficPercent", "unset") for p in v]
              for k, v in patches.items()}
    # Good: 10 % is where deploy left it (nothing to send), then 50 %, then promoted
    # (canaryTrafficPercent removed).
    assert shares["good"] == [50, None], patches["good"]
    # only the traffic field: an annotation would make KServe roll a fresh revision
    assert all(set(p) <= {"spec", "metadata"} and set(p.get("metadata", {})) <= {"resourceVersion"}
               for v in patches.values() for p in v), patches
    # Rejecting: judged at 10 % and rolled back there (all traffic to the primary).
    assert shares["rejecting"] == [0], patches["rejecting"]
