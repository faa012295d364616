"""`kubeloop deploy` and `kubeloop canary` end to end: a real registry on disk,
the Kubernetes client talking HTTP to the loopback fake API server."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml
from deploy_support import FakeKubeAPI, Request, check_isvc, from_now, log_rows, write_log_part

from kubeloop.cli import main
from kubeloop.registry import Registry


@pytest.fixture
def registry(tmp_path, s3_endpoint, bucket, monkeypatch):
    """A registry in S3 (moto on loopback): the only kind a cluster can fetch from."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    reg = Registry(f"s3://{bucket}/registry")
    for _ in range(3):
        info = reg.register("churn", {"model/model.joblib": b"model bytes", "model/kubeloop.json": b"{}"})
    assert info.version == "v3"
    reg.set_alias("churn", "production", "v1", reason="test")
    return reg


@pytest.fixture
def no_cluster(tmp_path, monkeypatch, registry):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBELOOP_REGISTRY", registry.uri)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake(tmp_path, monkeypatch, registry):
    api = FakeKubeAPI().start()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("KUBELOOP_REGISTRY", registry.uri)
    monkeypatch.chdir(tmp_path)
    yield api
    api.stop()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def jrun(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# -- dry runs with no cluster ----------------------------------------------------------------

def test_deploy_dry_run_prints_the_object_with_no_cluster(capsys, no_cluster):
    code, out, err = run(capsys, "deploy", "churn", "--dry-run")
    assert code == 0, err
    obj = yaml.safe_load(out)
    check_isvc(obj)
    assert obj["spec"]["predictor"]["model"]["storageUri"].endswith("/churn/versions/v1/model/")
    assert "working without a cluster" in err and "nothing was changed" in err
    code, out, _ = run(capsys, "deploy", "churn@v2", "--dry-run", "--json", "-n", "ml")
    obj = json.loads(out)
    assert obj["metadata"]["namespace"] == "ml" and obj["spec"]["predictor"]["labels"]["kubeloop.dev/version"] == "v2"


def test_canary_dry_run_with_no_cluster_uses_the_registry_aliases(capsys, no_cluster, registry):
    registry.set_alias("churn", "canary", "v2")
    code, out, err = run(capsys, "canary", "promote", "churn", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out) == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert registry.get_alias("churn", "production") == "v1"  # nothing moved
    code, out, _ = run(capsys, "canary", "set", "churn", "--percent", "30", "--dry-run")
    assert yaml.safe_load(out)["spec"] == {"predictor": {"canaryTrafficPercent": 30}}


@pytest.mark.parametrize("argv,pattern", [
    (["deploy", "churn@v2", "--canary-percent", "150", "--dry-run"], "between 0 and 100"),
    (["deploy", "Churn", "--dry-run"], "DNS-1035"),
    (["deploy", "churn@v9", "--dry-run"], "no version v9"),
    (["canary", "set", "churn", "--dry-run"], "--percent N"),
    (["canary", "set", "churn", "--percent", "-3", "--dry-run"], "between 0 and 100"),
    (["canary", "promote", "churn", "--percent", "3"], "applies to `canary set`"),
    (["canary", "status", "churn"], "no Kubernetes configuration found"),
    (["deploy", "churn"], "no Kubernetes configuration found"),
    (["canary", "promote", "churn", "--dry-run"], "no 'canary' alias"),
    (["canary", "analyze", "churn", "--logs", "off"], "prediction logs are off"),
    (["canary", "analyze", "churn"], "which versions to compare"),  # the logs have a default; versions not
])
def test_bad_input_is_exit_2_with_a_message(capsys, no_cluster, argv, pattern):
    code, out, err = run(capsys, *argv)
    assert code == 2 and pattern in err and "Traceback" not in err


# -- against the API server --------------------------------------------------------------------

def test_deploy_canary_promote_rollback_cycle(capsys, fake, registry):
    res = jrun(capsys, "deploy", "churn")
    assert res["action"] == "created" and res["status"]["ready"]
    assert res["state"]["primary_version"] == "v1" and res["state"]["canary_version"] is None

    # the same deploy again sends nothing
    writes = len(fake.writes())
    assert jrun(capsys, "deploy", "churn")["action"] == "unchanged"
    assert len(fake.writes()) == writes

    res = jrun(capsys, "deploy", "churn@v2", "--canary-percent", "20")
    assert res["action"] == "updated" and res["kind"] == "patch"
    since = res["state"].pop("canary_since")
    assert dt.datetime.fromisoformat(since.replace("Z", "+00:00")).tzinfo is not None
    assert res["state"] == {"name": "churn", "namespace": "kubeloop", "mode": "serverless",
                            "primary_version": "v1", "canary_version": "v2", "canary_percent": 20,
                            "primary_percent": 80}
    revisions = list(fake.controllers[("kubeloop", "churn")].revisions)
    assert len(revisions) == 2
    assert {t.get("tag", "latest"): t["percent"] for t in res["status"]["traffic"]} == {"latest": 20, "prev": 80}
    assert registry.get_alias("churn", "canary") == "v2"
    assert registry.get_alias("churn", "production") == "v1"

    st = jrun(capsys, "canary", "status", "churn")
    assert st["state"]["canary_percent"] == 20 and st["registry"]["canary"] == "v2"

    # dry run: the patch, and no write
    writes = len(fake.writes())
    code, out, err = run(capsys, "canary", "set", "churn", "--percent", "50", "--dry-run", "--json")
    patch = json.loads(out)
    assert patch["spec"] == {"predictor": {"canaryTrafficPercent": 50}} and patch["metadata"]["resourceVersion"]
    assert len(fake.writes()) == writes

    assert jrun(capsys, "canary", "set", "churn", "--percent", "50", "--no-wait")["state"]["canary_percent"] == 50
    writes = len(fake.writes())
    assert jrun(capsys, "canary", "set", "churn", "--percent", "50")["action"] == "unchanged"
    assert len(fake.writes()) == writes

    res = jrun(capsys, "canary", "promote", "churn")
    assert res["action"] == "promoted" and res["state"]["primary_version"] == "v2"
    # set and promote moved traffic only: the revision that was analysed is the one serving
    assert fake.controllers[("kubeloop", "churn")].revisions == revisions
    assert res["status"]["traffic"] == [{"revisionName": revisions[-1], "percent": 100, "latestRevision": True}]
    assert res["registry"] == [{"alias": "production", "from": "v1", "to": "v2"}]
    assert registry.get_alias("churn", "production") == "v2"
    assert registry.get_alias("churn", "previous") == "v1"
    assert jrun(capsys, "canary", "promote", "churn")["action"] == "unchanged"

    res = jrun(capsys, "deploy", "churn@v3")  # default share from the config: 10
    assert res["state"]["canary_version"] == "v3" and res["state"]["canary_percent"] == 10
    res = jrun(capsys, "canary", "rollback", "churn")
    assert res["state"]["canary_percent"] == 0 and res["state"]["primary_version"] == "v2"
    assert registry.get_alias("churn", "production") == "v2"
    assert jrun(capsys, "canary", "rollback", "churn")["action"] == "unchanged"

    code, out, err = run(capsys, "canary", "status", "churn")
    assert code == 0 and "primary v2 100%, canary v3 0%" in out


def test_promote_refuses_when_the_registry_disagrees(capsys, fake, registry):
    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "10")
    registry.set_alias("churn", "production", "v3", reason="someone else")
    writes = len(fake.writes())
    code, out, err = run(capsys, "canary", "promote", "churn")
    assert code == 3 and "production alias points at v3" in err
    assert len(fake.writes()) == writes


def test_a_concurrent_change_is_a_conflict(capsys, fake, registry):
    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "10")

    def someone_else_writes_first(api, req):
        if req.method == "PATCH":
            obj = api.objects[("kubeloop", "churn")]
            obj["spec"]["predictor"]["canaryTrafficPercent"] = 30
            obj["metadata"]["resourceVersion"] = "9999"
            api.hook = None

    fake.hook = someone_else_writes_first
    code, out, err = run(capsys, "canary", "set", "churn", "--percent", "40")
    assert code == 3 and "changed by someone else" in err
    assert fake.objects[("kubeloop", "churn")]["spec"]["predictor"]["canaryTrafficPercent"] == 30


def test_forbidden_is_a_clear_message(capsys, fake):
    fake.fail_next.append(FakeKubeAPI.status(403, "Forbidden", 'inferenceservices.serving.kserve.io "churn" is '
                                             'forbidden: User "x" cannot get resource'))
    code, out, err = run(capsys, "canary", "status", "churn")
    assert code == 2 and "forbidden (403)" in err and "Traceback" not in err


# -- analysis ----------------------------------------------------------------------------------

def _logs(root, bad: bool, start=None):
    """Both versions' logs, from ``start`` (default: now, inside a canary deployed just before)."""
    start = start or from_now()
    write_log_part(root, log_rows("v1", 400, seed=1, start=start), part=0)
    write_log_part(root, log_rows("v2", 200, seed=2, error_every=8 if bad else 0, start=start), part=1)


@pytest.mark.parametrize("bad,decision", [(False, "promote"), (True, "rollback")])
def test_analyze_offline_from_log_files(capsys, no_cluster, tmp_path, bad, decision):
    _logs(tmp_path / "logs", bad)
    res = jrun(capsys, "canary", "analyze", "churn", "--logs", str(tmp_path / "logs"),
               "--primary", "v1", "--canary", "v2")
    assert res["decision"] == decision and res["analyses"][0]["verdict"]["decision"] == decision
    assert res["analyses"][0]["primary"]["rows"] == 800 and res["analyses"][0]["canary"]["rows"] == 400


@pytest.mark.parametrize("bad", [False, True])
def test_analyze_steps_through_the_schedule(capsys, fake, registry, tmp_path, bad):
    _logs(tmp_path / "logs", bad)
    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "5")
    res = jrun(capsys, "canary", "analyze", "churn", "--logs", str(tmp_path / "logs"),
               "--steps", "10,50,100", "--interval", "0")
    state = jrun(capsys, "canary", "status", "churn")["state"]
    if bad:
        assert res["decision"] == "rollback" and [s["share"] for s in res["steps"]] == [10]
        assert state["canary_percent"] == 0 and registry.get_alias("churn", "production") == "v1"
    else:
        assert res["decision"] == "promote" and [s["share"] for s in res["steps"]] == [10, 50]
        assert [s["action"] for s in res["sent"]] == ["set", "set", "promoted"]
        assert state["primary_version"] == "v2" and state["canary_version"] is None
        assert registry.get_alias("churn", "production") == "v2"


def test_dry_run_with_an_unreachable_cluster_still_prints(capsys, no_cluster, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kc = tmp_path / "dead-kubeconfig"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n")
    code, out, err = run(capsys, "deploy", "churn", "--dry-run", "--kubeconfig", str(kc))
    assert code == 0 and "cannot reach" in err and yaml.safe_load(out)["kind"] == "InferenceService"
    code, out, err = run(capsys, "deploy", "churn", "--kubeconfig", str(kc))
    assert code == 2 and "cannot reach the Kubernetes API server" in err


def test_analyze_steps_dry_run_prints_the_patches_offline(capsys, no_cluster, registry, tmp_path):
    registry.set_alias("churn", "canary", "v2")
    _logs(tmp_path / "logs", bad=False)
    code, out, err = run(capsys, "canary", "analyze", "churn", "--logs", str(tmp_path / "logs"),
                         "--steps", "10,50,100", "--dry-run", "--json")
    assert code == 0, err
    patches = json.loads(out)
    shares = [p["spec"]["predictor"]["canaryTrafficPercent"] for p in patches]
    # the registry's canary starts at canary.initial_percent (10): 10 sends nothing, then 50, then promote
    assert shares == [50, None]
    assert registry.get_alias("churn", "production") == "v1"


# -- steps that cannot race --------------------------------------------------------------------

PEOPLE = {
    # a person's `kubeloop canary rollback` while the stepper waits
    "rollback": (lambda capsys, fake: jrun(capsys, "canary", "rollback", "churn"),
                 "the canary's share is 0%, not 10%", {"canary_version": "v2", "canary_percent": 0}),
    # a person's `kubeloop deploy churn@v3 --canary-percent 10`: v3 must not be promoted on v2's evidence
    "deploy-v3": (lambda capsys, fake: jrun(capsys, "deploy", "churn@v3", "--canary-percent", "10"),
                  "the canary is v3, not v2", {"canary_version": "v3", "canary_percent": 10}),
    # the same rollback by hand with kubectl
    "kubectl": (lambda capsys, fake: fake.edit("kubeloop", "churn", {"spec": {"predictor": {"canaryTrafficPercent": 0}}}),
                "last written by kubectl-patch", {"canary_version": "v2", "canary_percent": 0}),
}


@pytest.mark.parametrize("person", sorted(PEOPLE))
def test_a_change_between_steps_stops_the_stepper(capsys, fake, registry, tmp_path, monkeypatch, person):
    from kubeloop.deploy import rollout

    act, said, after = PEOPLE[person]
    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "5")
    _logs(tmp_path / "logs", bad=False)
    looks = []

    def meanwhile(seconds):
        looks.append(seconds)
        if len(looks) == 1:
            act(capsys, fake)

    monkeypatch.setattr(rollout, "pause", meanwhile)
    writes = len(fake.writes())
    code, out, err = run(capsys, "canary", "analyze", "churn", "--logs", str(tmp_path / "logs"),
                         "--steps", "10,50,100", "--interval", "7")
    assert code == 3, err
    assert said in err and "Nothing was sent" in err and "Traceback" not in err
    assert looks == [7]  # it stopped at the step after the change
    # the person's change stands; the stepper sent nothing after it
    own = [w for w in fake.writes()[writes:] if w.query.get("fieldManager") == ["kubeloop"]]
    state = jrun(capsys, "canary", "status", "churn")["state"]
    assert {k: state[k] for k in after} == after
    assert registry.get_alias("churn", "production") == "v1"
    assert all((w.body or {}).get("spec", {}).get("predictor", {}).get("canaryTrafficPercent") != 50 for w in own)


def test_a_status_write_between_steps_is_not_a_change(capsys, fake, registry, tmp_path, monkeypatch):
    """KServe's controller moves the resourceVersion with every status write; the
    stepper carries on, and its next patch is conditional on its fresh read."""
    from kubeloop.deploy import rollout

    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "5")
    _logs(tmp_path / "logs", bad=False)

    def meanwhile(seconds):
        obj = fake.objects[("kubeloop", "churn")]
        obj["status"]["conditions"][0]["lastTransitionTime"] = "2026-12-01T08:00:00Z"
        fake._rv += 1
        obj["metadata"]["resourceVersion"] = str(fake._rv)

    monkeypatch.setattr(rollout, "pause", meanwhile)
    res = jrun(capsys, "canary", "analyze", "churn", "--logs", str(tmp_path / "logs"),
               "--steps", "10,50,100", "--interval", "7")
    assert res["decision"] == "promote"
    assert [s["action"] for s in res["sent"]] == ["set", "set", "promoted"]
    sent_rvs = [s["resource_version"] for s in res["sent"]]
    patches = [w for w in fake.writes() if w.method == "PATCH"][-3:]
    assert [p.body["metadata"]["resourceVersion"] for p in patches] == sent_rvs
    assert all((s["primary"], s["canary"]) == ("v1", "v2") for s in res["sent"])


def test_analyze_reads_the_canary_window_by_default(capsys, fake, registry, tmp_path):
    """Rows logged before the canary was deployed are not its evidence."""
    root = tmp_path / "logs"
    old = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.timezone.utc)
    # A month of bad v2 rows from an earlier trial, then good ones after this deploy.
    write_log_part(root, log_rows("v2", 300, seed=5, error_every=3, start=old), part=7)
    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "10")
    _logs(root, bad=False)
    code, out, err = run(capsys, "canary", "analyze", "churn", "--logs", str(root), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert "analysis window: since" in err
    state = jrun(capsys, "canary", "status", "churn")["state"]
    assert res["since"] == state["canary_since"].replace("Z", "+00:00")
    assert res["decision"] == "promote" and res["analyses"][0]["canary"]["rows"] == 400
    # an explicit --since still wins
    res = jrun(capsys, "canary", "analyze", "churn", "--logs", str(root), "--since", "2026-10-01T00:00:00Z")
    assert res["analyses"][0]["canary"]["rows"] == 400 + 600


def test_standard_mode_cycle_is_accepted_and_promote_keeps_the_canary_pods(capsys, fake, registry, tmp_path):
    """Standard mode on the wire: KServe's webhook rules (no maxReplicas on a
    canary), readiness from PredictorReady and canaryStatuses, and a promotion
    that reuses the canary's Deployment as it is."""
    cfg = tmp_path / "standard.yaml"
    cfg.write_text("canary:\n  mode: standard\n  min_replicas: 2\n  max_replicas: 4\n")
    c = ("--config", str(cfg))
    assert jrun(capsys, "deploy", "churn", *c)["status"]["ready"]
    res = jrun(capsys, "deploy", "churn@v2", "--canary-percent", "10", *c)
    assert res["status"]["ready"] and res["status"]["canaries"] == [{"name": "v2", "trafficPercent": 10, "ready": True}]
    ctl = fake.controllers[("kubeloop", "churn")]
    templates = list(ctl.pod_templates)
    assert templates == ["churn-v1-predictor", "churn-v2-predictor"]

    res = jrun(capsys, "canary", "set", "churn", "--percent", "50", *c)
    obj = fake.objects[("kubeloop", "churn")]
    # observedGeneration is the stable Deployment's: behind, and the share is still ready
    assert res["status"]["ready"] and obj["status"]["observedGeneration"] < obj["metadata"]["generation"]
    assert res["status"]["canaries"] == [{"name": "v2", "trafficPercent": 50, "ready": True}]

    res = jrun(capsys, "canary", "promote", "churn", *c)
    assert res["state"]["primary_version"] == "v2" and res["status"]["ready"] and not res["status"]["canaries"]
    assert ctl.pod_templates == templates  # the canary's pods became the primary's; none restarted
    assert fake.objects[("kubeloop", "churn")]["spec"]["predictor"]["maxReplicas"] == 4
    assert registry.get_alias("churn", "production") == "v2"

    res = jrun(capsys, "deploy", "churn@v3", "--canary-percent", "10", *c)
    assert res["state"]["canary_version"] == "v3" and ctl.pod_templates == [*templates, "churn-v3-predictor"]
    res = jrun(capsys, "canary", "rollback", "churn", *c)
    assert res["state"]["primary_version"] == "v2" and res["state"]["canary_version"] is None
    assert res["status"]["ready"] and ctl.pod_templates == [*templates, "churn-v3-predictor"]


def test_status_says_what_it_is_waiting_for(capsys, fake, registry):
    fake.never_ready.add("churn")
    code, out, err = run(capsys, "deploy", "churn", "--no-wait")
    assert code == 0, err
    run(capsys, "canary", "status", "churn")  # KServe makes the revision
    code, out, err = run(capsys, "canary", "status", "churn")
    assert code == 0 and "ready: False" in out
    assert "waiting: revision churn-predictor-00001 is not ready yet (latest ready: none)" in out


def test_a_change_while_a_step_rolls_out_stops_the_next_step(capsys, fake, registry, tmp_path, monkeypatch):
    """A person's rollback lands while the stepper waits for its own 10 % to be
    Ready: the wait stops at once (it would never see 10 %), with exit 3, and
    nothing more is sent."""
    from kubeloop.deploy import rollout

    jrun(capsys, "deploy", "churn")
    jrun(capsys, "deploy", "churn@v2", "--canary-percent", "5")
    _logs(tmp_path / "logs", bad=False)
    seen = {"patched": False, "done": False}

    def person_during_the_wait(api, req):
        pct = ((req.body or {}).get("spec") or {}).get("predictor", {}).get("canaryTrafficPercent")
        if req.method == "PATCH" and pct == 10:
            seen["patched"] = True
        elif req.method == "GET" and seen["patched"] and not seen["done"]:
            seen["done"] = True
            status, _ = api._patch("kubeloop", "churn", Request(
                "PATCH", "", {"fieldManager": ["kubectl-patch"]}, {"content-type": "application/merge-patch+json"},
                {"spec": {"predictor": {"canaryTrafficPercent": 0}}}))
            assert status == 200

    fake.hook = person_during_the_wait
    monkeypatch.setattr(rollout, "pause", lambda s: None)
    code, out, err = run(capsys, "canary", "analyze", "churn", "--logs", str(tmp_path / "logs"),
                         "--steps", "10,50,100", "--interval", "7")
    assert seen["done"] and code == 3, err
    assert "changed by someone else while kubeloop waited" in err and "last written by kubectl-patch" in err
    assert fake.objects[("kubeloop", "churn")]["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_a_port_forwarded_endpoint_stays_on_this_machine(capsys, no_cluster, registry, s3_endpoint, tmp_path,
                                                        monkeypatch):
    """`--s3-endpoint http://127.0.0.1:PORT` (a port-forward) reaches the registry from
    here; the InferenceService gets the config's endpoint, the one pods use, and the
    process environment is left as it was."""
    import os

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("storage:\n  endpoint_url: http://minio.kubeloop-storage.svc:9000\n")
    for extra in (["--config", str(cfg)], []):
        code, out, err = run(capsys, "deploy", "churn", "--dry-run", "--json", "--s3-endpoint", s3_endpoint, *extra)
        assert code == 0, err
        assert "AWS_ENDPOINT_URL" not in os.environ
        obj = json.loads(out)
        check_isvc(obj)
        assert s3_endpoint not in out
        env = {e["name"]: e.get("value") for e in obj["spec"]["predictor"]["model"]["env"]}
        assert env["KUBELOOP_LOG_URI"] == "s3://logs/predictions"  # logs by default
        if extra:
            assert env["AWS_ENDPOINT_URL"] == "http://minio.kubeloop-storage.svc:9000"
        else:  # no endpoint in the config: the ServingRuntime's applies
            assert "AWS_ENDPOINT_URL" not in env
    # The same endpoint exported in the environment instead of the flag.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    code, out, err = run(capsys, "deploy", "churn", "--dry-run", "--json", "--config", str(cfg))
    assert code == 0 and s3_endpoint not in out and "http://minio.kubeloop-storage.svc:9000" in out
    # A config that names this machine's endpoint: left out, and said so.
    cfg.write_text(f"storage:\n  endpoint_url: {s3_endpoint}\n")
    code, out, err = run(capsys, "deploy", "churn", "--dry-run", "--json", "--config", str(cfg))
    assert code == 0 and s3_endpoint not in out and "is this machine's" in err
