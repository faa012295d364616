"""What serves, as monitoring sees it: versions answering in the prediction logs,
the InferenceService on a (loopback) Kubernetes API, the registry checked against
both; and log reads that open only the date= partitions of their window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from deploy_support import FakeKubeAPI
from monitor_support import drift_frame, write_log

from kubeloop.deploy.inferenceservice import ServingSettings, Target, build_inference_service
from kubeloop.monitoring.serving import alerts, read_cluster, serving_state, version_counts
from kubeloop.monitoring.stream import DataError, in_window, iter_batches

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def counts(**recent: int) -> dict:
    return {"rows": dict(recent), "recent": dict(recent), "newest": T0}


@pytest.mark.parametrize(
    "case, logs, cluster, primary, canary, source",
    [
        ("nothing logged, no cluster", None, None, None, None, None),
        ("one version answering", counts(v1=900), None, "v1", None, "logs"),
        ("a canary beside it", counts(v1=900, v2=100), None, "v1", "v2", "logs"),
        ("promoted: the new version holds the newest rows", counts(v2=1000), None, "v2", None, "logs"),
        ("a tie is broken by name, not by chance", counts(v2=500, v1=500), None, "v1", "v2", "logs"),
        ("the cluster wins over the logs (they lag)", counts(v1=1000),
         {"primary_version": "v2", "canary_version": None}, "v2", None, "cluster"),
        ("the cluster's canary", counts(v1=900, v2=100),
         {"primary_version": "v1", "canary_version": "v2"}, "v1", "v2", "cluster"),
        ("a cluster that knows no version: the logs decide", counts(v3=10),
         {"primary_version": None}, "v3", None, "logs"),
    ],
)
def test_serving_state(case, logs, cluster, primary, canary, source):
    out = serving_state(logs, cluster)
    assert (out["primary"], out["canary"], out["source"]) == (primary, canary, source), case


@pytest.mark.parametrize(
    "case, production, canary_alias, serving, n_rows, words",
    [
        ("all agree", "v1", None, {"primary": "v1", "source": "logs"}, 500, []),
        ("a canary in progress, registry in step", "v1", "v2",
         {"primary": "v1", "canary": "v2", "source": "cluster"}, 500, []),
        ("gate moved production, nothing deployed", "v2", None, {"primary": "v1", "source": "logs"}, 500,
         ["production is v2", "v1 serving", "never deployed"]),
        ("canary promoted on the cluster, not in the registry", "v1", "v2",
         {"primary": "v2", "source": "cluster"}, 500, ["InferenceService", "(the canary)", "canary promote"]),
        ("a canary the registry does not know", "v1", "v3", {"primary": "v1", "canary": "v4", "source": "cluster"},
         500, ["canary is v3", "v4 as the canary"]),
        ("nothing answering", "v1", None, {"primary": None, "source": None}, 0, ["no answered requests"]),
        ("serving version answered nothing in the window", "v1", None, {"primary": "v1", "source": "cluster"}, 0,
         ["serving version churn v1"]),
    ],
)
def test_alerts(case, production, canary_alias, serving, n_rows, words):
    out = alerts(production=production, canary_alias=canary_alias, serving=serving, n_rows=n_rows, model="churn")
    text = " | ".join(out)
    if not words:
        assert out == [], case
    for w in words:
        assert w in text, (case, text)


def _log(root, version, n, start, **kw):
    df = drift_frame(n, seed=len(version) + n, drift=False)[["n0", "c0"]]
    return write_log(root, "churn", df, predictions=["yes"] * n, version=version, start=start, **kw)


def test_version_counts_follow_a_promotion(tmp_path):
    # v1 answered for two weeks, then v2 took over; a shadow and rejected rows never count
    _log(tmp_path, "v1", 2000, T0)
    later = T0 + timedelta(minutes=10 * 2000)
    _log(tmp_path, "v2", 300, later)
    _log(tmp_path, "v3", 300, later, role="shadow")
    _log(tmp_path, "v2", 50, later, status=["invalid_input"] * 50)
    out = version_counts(str(tmp_path / "churn"), recent_rows=200)
    assert out["rows"] == {"v1": 2000, "v2": 300}
    assert out["recent"] == {"v2": 200}
    assert serving_state(out, None)["primary"] == "v2"
    # a canary started late: the primary keeps the majority of the newest rows
    _log(tmp_path / "c", "v1", 900, T0)
    _log(tmp_path / "c", "v2", 100, T0 + timedelta(minutes=8003), rows_per_request=3)
    state = serving_state(version_counts(str(tmp_path / "c" / "churn"), recent_rows=500), None)
    assert (state["primary"], state["canary"]) == ("v1", "v2")


def test_in_window_by_date_partition():
    since, until = datetime(2026, 11, 10, 6, tzinfo=timezone.utc), datetime(2026, 11, 12, 1, tzinfo=timezone.utc)
    assert in_window("logs/churn/date=2026-11-10/part-1.parquet", since, until)
    assert in_window("logs/churn/date=2026-11-12/part-1.parquet", since, until)
    assert not in_window("logs/churn/date=2026-11-09/part-1.parquet", since, until)
    assert not in_window("logs/churn/date=2026-11-13/part-1.parquet", since, until)
    assert in_window("logs/churn/date=2026-11-01/part-1.parquet", None, None)
    assert in_window("data/fresh.parquet", since, until)  # not a partition: always read
    assert in_window("logs/churn/date=2026-11-09/part-1.parquet", None, until)


def test_log_reads_never_open_partitions_outside_the_window(tmp_path):
    _log(tmp_path, "v1", 500, T0 + timedelta(days=20))
    # an unreadable file in an old partition: opening it would fail the read
    old = tmp_path / "churn" / "date=2026-10-01" / "part-x.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"not parquet")
    root = str(tmp_path / "churn")
    with pytest.raises(DataError):
        sum(b.num_rows for b in iter_batches(root, ["version"]))
    since = T0 + timedelta(days=19)
    assert sum(b.num_rows for b in iter_batches(root, ["version"], since=since)) == 500
    assert version_counts(root, since=since)["rows"] == {"v1": 500}


@pytest.fixture
def kube(tmp_path, monkeypatch):
    api = FakeKubeAPI().start()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.stop()


def _isvc(version, primary=None, percent=None):
    uri = "s3://models/registry/churn/versions/{}/model/"
    target = Target("churn", version, uri.format(version))
    prim = Target("churn", primary, uri.format(primary)) if primary else None
    return build_inference_service(target, ServingSettings(), primary=prim, canary_percent=percent)


def test_read_cluster_reads_the_inference_service(kube):
    assert read_cluster("churn", "kubeloop")[0] is None  # none deployed yet: a note
    assert "no InferenceService kubeloop/churn" in read_cluster("churn", "kubeloop")[1]
    from kubeloop.deploy.kube import connect
    from kubeloop.deploy.patches import deploy_patch

    client = connect()
    client.create(_isvc("v1"))
    current = client.get("churn", "kubeloop")
    client.patch("churn", "kubeloop", deploy_patch(current, _isvc("v2", primary="v1", percent=10)))
    before = len(kube.writes())
    state, note = read_cluster("churn", "kubeloop")
    assert note is None
    assert (state["primary_version"], state["canary_version"], state["canary_percent"]) == ("v1", "v2", 10)
    # reading never writes
    assert len(kube.writes()) == before


def test_read_cluster_without_a_cluster_is_quiet(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert read_cluster("churn", "kubeloop") == (None, None)


def test_read_cluster_that_cannot_be_reached_is_a_note(tmp_path, monkeypatch):
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{name: x, cluster: {server: "
                  "'http://127.0.0.1:9'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: "
                  "{cluster: x, user: u}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    state, note = read_cluster("churn", "kubeloop")
    assert state is None and "not read" in note


def test_version_counts_of_logs_without_time(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"version": ["v1", "v1", "v2"], "status": ["ok"] * 3,
                             "x": np.arange(3.0)}), path)
    out = version_counts(str(path))
    assert out["rows"] == out["recent"] == {"v1": 2, "v2": 1}
