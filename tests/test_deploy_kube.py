"""The Kubernetes layer over the wire, against a loopback server answering like the API server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from deploy_support import WEBHOOK, FakeKubeAPI

from kubeloop.deploy.inferenceservice import ServingSettings, Target, build_inference_service
from kubeloop.deploy.kube import Expected, KubeError, connect, expect, pending, summarize_status
from kubeloop.deploy.patches import apply_merge_patch, deploy_patch, set_percent_patch
from kubeloop.errors import Conflict

BASE = "/apis/serving.kserve.io/v1beta1/namespaces/kubeloop/inferenceservices"


def target(v: str) -> Target:
    return Target("churn", v, f"s3://models/registry/churn/versions/{v}/model/")


@pytest.fixture
def fake():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


@pytest.fixture
def isvcs(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
    return connect()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.5)


def test_create_sends_strict_validation_and_field_manager(fake, isvcs):
    assert isvcs.get("churn", "kubeloop") is None
    obj = build_inference_service(target("v1"), ServingSettings())
    created = isvcs.create(obj)
    assert created["metadata"]["resourceVersion"]
    [post] = fake.writes()
    assert post.method == "POST" and post.path == BASE
    assert post.query["fieldValidation"] == ["Strict"] and post.query["fieldManager"] == ["kubeloop"]
    assert post.headers["content-type"] == "application/json"
    assert post.body == obj
    assert isvcs.get("churn", "kubeloop")["spec"] == obj["spec"]


def test_patch_is_a_merge_patch_with_the_resource_version(fake, isvcs):
    isvcs.create(build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=10))
    cur = isvcs.get("churn", "kubeloop")
    out = isvcs.patch("churn", "kubeloop", set_percent_patch(cur, 40))
    assert out["spec"]["predictor"]["canaryTrafficPercent"] == 40
    patch_req = fake.writes()[-1]
    assert patch_req.method == "PATCH" and patch_req.path == f"{BASE}/churn"
    assert patch_req.headers["content-type"] == "application/merge-patch+json"
    assert patch_req.query["fieldValidation"] == ["Strict"] and patch_req.query["fieldManager"] == ["kubeloop"]
    assert patch_req.body["metadata"]["resourceVersion"] == cur["metadata"]["resourceVersion"]


def test_dry_run_reaches_the_server_as_dry_run_and_stores_nothing(fake, isvcs):
    isvcs.create(build_inference_service(target("v1"), ServingSettings()), dry_run=True)
    assert fake.writes()[-1].query["dryRun"] == ["All"]
    assert isvcs.get("churn", "kubeloop") is None


def test_a_stale_read_is_a_conflict_not_an_overwrite(fake, isvcs):
    isvcs.create(build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=10))
    stale = isvcs.get("churn", "kubeloop")
    isvcs.patch("churn", "kubeloop", set_percent_patch(stale, 30))  # another writer
    with pytest.raises(Conflict, match="changed by someone else"):
        isvcs.patch("churn", "kubeloop", set_percent_patch(stale, 70))
    assert isvcs.get("churn", "kubeloop")["spec"]["predictor"]["canaryTrafficPercent"] == 30


def test_creating_twice_is_a_conflict(fake, isvcs):
    obj = build_inference_service(target("v1"), ServingSettings())
    isvcs.create(obj)
    with pytest.raises(Conflict, match="created by someone else"):
        isvcs.create(obj)


def test_unknown_fields_are_refused_by_strict_validation(fake, isvcs):
    obj = build_inference_service(target("v1"), ServingSettings())
    obj["spec"]["predictor"]["canaryPercent"] = 5
    with pytest.raises(KubeError, match="strict field validation.*canaryPercent"):
        isvcs.create(obj)


def test_webhook_denial_is_a_clear_message(fake, isvcs):
    obj = build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=10)
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 150  # bypassing kubeloop's own check
    with pytest.raises(KubeError, match="admission webhook refused it"):
        isvcs.create(obj)


@pytest.mark.parametrize("status,body,pattern", [
    (403, {"reason": "Forbidden", "message": 'inferenceservices.serving.kserve.io "churn" is forbidden: '
           'User "system:serviceaccount:kubeflow:default" cannot patch resource'}, "forbidden.*kubeloop-pipeline Role"),
    (404, {"reason": "NotFound", "message": "the server could not find the requested resource"}, "is KServe installed"),
    (422, {"reason": "Invalid", "message": "InferenceService.serving.kserve.io \"churn\" is invalid",
           "details": {"causes": [{"field": "spec.predictor.minReplicas", "message": "must be >= 0"}]}},
     "invalid.*spec.predictor.minReplicas: must be >= 0"),
    (403, {"reason": "Forbidden", "message": f"{WEBHOOK}: exactly one of [model] must be specified"},
     "admission webhook refused it: .*exactly one"),
    (500, {"reason": "InternalError", "message": "etcdserver: request timed out"}, "answered 500"),
])
def test_api_errors_become_clear_messages(fake, isvcs, status, body, pattern):
    fake.fail_next.append((status, {"kind": "Status", "code": status, **body}))
    with pytest.raises(KubeError, match=pattern):
        isvcs.create(build_inference_service(target("v1"), ServingSettings()))


def test_patching_a_missing_object_names_it(fake, isvcs):
    with pytest.raises(KubeError, match="not found; deploy it first"):
        isvcs.patch("churn", "kubeloop", {"spec": {"predictor": {"canaryTrafficPercent": 5}}})


def test_wrong_credentials_context_gives_401_message(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    path = fake.kubeconfig(tmp_path / "kc")
    with pytest.raises(KubeError, match="401 Unauthorized"):
        connect(context="wrong-token", kubeconfig=str(path)).get("churn", "kubeloop")
    assert connect(context="fake", kubeconfig=str(path)).get("churn", "kubeloop") is None


def test_unknown_context_and_missing_config(tmp_path, monkeypatch, fake):
    path = fake.kubeconfig(tmp_path / "kc")
    with pytest.raises(KubeError, match="cannot load the Kubernetes configuration"):
        connect(context="nope", kubeconfig=str(path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(KubeError, match="no Kubernetes configuration found"):
        connect()


def test_unreachable_api_server(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "kc"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    isvcs = connect(kubeconfig=str(path))
    with pytest.raises(KubeError, match="cannot reach the Kubernetes API server"):
        isvcs.get("churn", "kubeloop")


def _ready(isvcs, expected=None, before=None):
    clock = FakeClock()
    obj = isvcs.get("churn", "kubeloop")
    return isvcs.wait_ready("churn", "kubeloop", timeout=60, poll=1, clock=clock, sleep=clock.sleep,
                            expected=expected or expect(before, obj))


def test_wait_ready_reports_conditions_and_traffic(fake, isvcs):
    fake.ready_after = 3
    created = isvcs.create(build_inference_service(target("v1"), ServingSettings()))
    _ready(isvcs, expect(None, created))
    cur = isvcs.get("churn", "kubeloop")
    desired = build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=20)
    sent = deploy_patch(cur, desired)
    isvcs.patch("churn", "kubeloop", sent)
    clock, polls = FakeClock(), []
    st = isvcs.wait_ready("churn", "kubeloop", timeout=60, poll=1, clock=clock, sleep=clock.sleep,
                          expected=expect(cur, apply_merge_patch(cur, sent)), on_poll=polls.append)
    assert st.ready and len(polls) >= 3 and not polls[0].ready
    # the first poll still shows v1's revision Ready: the stale answer right after a patch
    assert polls[0].conditions[-1]["status"] == "True" or "Ready" in " ".join(polls[0].pending)
    assert {t.get("tag", "latest"): t["percent"] for t in st.traffic} == {"latest": 20, "prev": 80}


def test_a_stale_ready_right_after_a_patch_is_not_taken_for_the_new_revision(fake, isvcs):
    """Serverless: observedGeneration is the Knative Service's. After a change
    only Knative sees (an annotation), it runs ahead of the InferenceService's
    generation, so a generation check would accept the old revision's Ready."""
    isvcs.create(build_inference_service(target("v1"), ServingSettings()))
    _ready(isvcs)
    fake.edit("kubeloop", "churn", {"metadata": {"annotations": {"team": "fraud"}}})
    _ready(isvcs)
    cur = isvcs.get("churn", "kubeloop")
    assert cur["status"]["observedGeneration"] > cur["metadata"]["generation"]
    sent = deploy_patch(cur, build_inference_service(target("v2"), ServingSettings(), primary=target("v1"),
                                                     canary_percent=10))
    isvcs.patch("churn", "kubeloop", sent)
    stale = fake.objects[("kubeloop", "churn")]
    assert stale["status"]["observedGeneration"] >= stale["metadata"]["generation"]  # a generation check passes here
    expected = expect(cur, apply_merge_patch(cur, sent))
    assert summarize_status(stale, expected).pending  # ... but KServe has not made v2's revision yet
    st = _ready(isvcs, expected)
    new = isvcs.get("churn", "kubeloop")["status"]["components"]["predictor"]
    assert new["latestCreatedRevision"] != cur["status"]["components"]["predictor"]["latestCreatedRevision"]
    assert {t.get("tag", "latest"): t["percent"] for t in st.traffic} == {"latest": 10, "prev": 90}


def test_standard_mode_is_ready_although_observed_generation_lags(fake, isvcs):
    """Standard: observedGeneration is the stable Deployment's, which a change
    of the canary's share does not touch; a generation check would wait forever."""
    settings = ServingSettings(mode="standard")
    isvcs.create(build_inference_service(target("v1"), settings))
    _ready(isvcs)
    cur = isvcs.get("churn", "kubeloop")
    isvcs.patch("churn", "kubeloop", deploy_patch(cur, build_inference_service(
        target("v2"), settings, primary=target("v1"), canary_percent=10)))
    _ready(isvcs, before=cur)
    cur = isvcs.get("churn", "kubeloop")
    sent = set_percent_patch(cur, 50)
    isvcs.patch("churn", "kubeloop", sent)
    st = _ready(isvcs, expect(cur, apply_merge_patch(cur, sent)))
    obj = isvcs.get("churn", "kubeloop")
    assert st.ready and st.canaries == [{"name": "v2", "trafficPercent": 50, "ready": True}]
    assert obj["status"]["observedGeneration"] < obj["metadata"]["generation"]


def test_wait_ready_times_out_with_what_is_pending(fake, isvcs):
    fake.never_ready.add("churn")
    created = isvcs.create(build_inference_service(target("v1"), ServingSettings()))
    clock = FakeClock()
    with pytest.raises(KubeError, match="not Ready within 10s: Ready is Unknown; revision churn-predictor-00001 "
                                        "is not ready yet"):
        isvcs.wait_ready("churn", "kubeloop", timeout=10, poll=2, clock=clock, sleep=clock.sleep,
                         expected=expect(None, created))
    assert 10 <= clock.now <= 12


def test_wait_ready_stops_at_a_failed_revision(fake, isvcs):
    fake.fail_revision.add("churn")
    created = isvcs.create(build_inference_service(target("v1"), ServingSettings()))
    clock = FakeClock()
    with pytest.raises(KubeError, match="failed: .*RevisionFailed"):
        isvcs.wait_ready("churn", "kubeloop", timeout=100, poll=1, clock=clock, sleep=clock.sleep,
                         expected=expect(None, created))
    assert clock.now < 100


FIXTURES = sorted((Path(__file__).parent / "data" / "kserve").glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_readiness_of_kserve_status_shapes(path):
    """Statuses taken from KServe's controller tests (tests/data/kserve/README.md).
    observedGeneration differs from metadata.generation in both directions
    across them, and never decides."""
    doc = json.loads(path.read_text())
    want = doc["_expect"]
    mode = "standard" if want.get("canary_name") else "serverless"
    expected = Expected(mode, want["canary_percent"], canary_name=want.get("canary_name"))
    why = pending(doc, expected)
    assert (not why) == want["ready"], why
    if "pending" in want:
        assert any(want["pending"] in w for w in why), why
    # The generation counters can be swapped either way without changing the answer.
    for observed in (0, doc["metadata"]["generation"], doc["metadata"]["generation"] + 5):
        doc["status"]["observedGeneration"] = observed
        assert pending(doc, expected) == why


def test_fixtures_cover_both_directions_of_the_generation_counters():
    docs = [json.loads(p.read_text()) for p in FIXTURES]
    ready = [d for d in docs if d["_expect"]["ready"]]
    not_ready = [d for d in docs if not d["_expect"]["ready"]]
    assert any(d["status"]["observedGeneration"] < d["metadata"]["generation"] for d in ready)
    assert any(d["status"]["observedGeneration"] >= d["metadata"]["generation"] for d in not_ready)


def test_in_cluster_service_account_when_there_is_no_kubeconfig(tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("pod-token")
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    isvcs = connect()
    assert "https://10.96.0.1:443" in isvcs.where and "service account" in isvcs.where
    cfg = isvcs.api.api_client.configuration
    assert cfg.api_key["authorization"].lower() == "bearer pod-token" and cfg.ssl_ca_cert == str(cert)
    with pytest.raises(KubeError, match="only the in-cluster account"):
        connect(context="other")


@pytest.mark.parametrize("traffic,ready", [
    ([{"latestRevision": True, "percent": 0, "revisionName": "r2"},
      {"latestRevision": False, "percent": 100, "revisionName": "r1", "tag": "prev"}], True),
    ([{"latestRevision": False, "percent": 100, "revisionName": "r1", "tag": "prev"}], True),
    ([{"latestRevision": True, "percent": 100, "revisionName": "r2"}], False),
    ([{"latestRevision": False, "percent": 60, "revisionName": "r1", "tag": "prev"}], False),
])
def test_a_zero_percent_canary_is_ready_when_the_previous_revision_takes_everything(traffic, ready):
    obj = {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                      "components": {"predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r2",
                                                   "traffic": traffic}}}}
    assert (not pending(obj, Expected("serverless", 0))) is ready


@pytest.mark.parametrize("mode", ["serverless", "standard"])
def test_the_fake_answers_with_kserve_status_fields(fake, isvcs, mode):
    """Every status field the loopback server writes, and every fixture's, is one
    KServe's own SDK model of InferenceServiceStatus declares."""
    from deploy_support import unknown_fields

    settings = ServingSettings(mode=mode)
    isvcs.create(build_inference_service(target("v1"), settings))
    _ready(isvcs)
    cur = isvcs.get("churn", "kubeloop")
    isvcs.patch("churn", "kubeloop", deploy_patch(cur, build_inference_service(
        target("v2"), settings, primary=target("v1"), canary_percent=10)))
    seen = [isvcs.get("churn", "kubeloop")["status"] for _ in range(3)]
    for status in seen + [json.loads(p.read_text())["status"] for p in FIXTURES]:
        assert unknown_fields(status, "V1beta1InferenceServiceStatus") == []


def _with_status(obj, **predictor):
    obj = dict(obj)
    obj["status"] = {"components": {"predictor": predictor}}
    return obj


V1 = build_inference_service(target("v1"), ServingSettings())
V2_AT_10 = build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=10)
ROLLED = {"latestCreatedRevision": "churn-predictor-00001", "latestRolledoutRevision": "churn-predictor-00001"}
STD = ServingSettings(mode="standard")


@pytest.mark.parametrize("before,after,want", [
    (None, V1, Expected("serverless", None)),
    # a canary over a rolled-out revision: a new revision at the share asked
    (_with_status(V1, **ROLLED), V2_AT_10, Expected("serverless", 10, replaced_revision="churn-predictor-00001")),
    # ... over one that never rolled out: KServe gives the latest everything
    (_with_status(V1, latestCreatedRevision="churn-predictor-00001"), V2_AT_10,
     Expected("serverless", None, replaced_revision="churn-predictor-00001")),
    # moving the share makes no revision
    (_with_status(V2_AT_10, **ROLLED), apply_merge_patch(V2_AT_10, set_percent_patch(V2_AT_10, 50)),
     Expected("serverless", 50)),
    (None, build_inference_service(target("v2"), STD, primary=target("v1"), canary_percent=25),
     Expected("standard", 25, canary_name="v2")),
    (None, build_inference_service(target("v1"), STD), Expected("standard", None)),
], ids=["create", "canary", "canary-first-not-rolled-out", "set", "standard-canary", "standard-single"])
def test_expect_table(before, after, want):
    assert expect(before, after) == want
