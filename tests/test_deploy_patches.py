"""Merge patches: set a canary's share, promote, roll back, deploy over an existing object."""

from __future__ import annotations

import copy

import pytest
from deploy_support import check_isvc, unknown_fields, webhook_problem

from kubeloop.deploy.inferenceservice import (
    ANN_CANARY,
    LABEL_VERSION,
    ServingSettings,
    Target,
    build_inference_service,
)
from kubeloop.deploy.patches import (
    apply_merge_patch,
    deploy_patch,
    merge_diff,
    pod_template_inputs,
    promote_patch,
    read_state,
    rollback_patch,
    rolls_pods,
    set_percent_patch,
)
from kubeloop.errors import UserError


def target(version: str) -> Target:
    return Target("churn", version, f"s3://models/registry/churn/versions/{version}/model/")


def live(obj: dict, rv: str = "41") -> dict:
    """The object as the API server returns it: a resourceVersion, server-set
    fields the builders never send, and a status."""
    out = copy.deepcopy(obj)
    out["metadata"].update(resourceVersion=rv, generation=3, uid="u-1", creationTimestamp="2026-11-30T00:00:00Z")
    out["spec"]["predictor"]["model"]["protocolVersion"] = "v1"  # a webhook default
    out["status"] = {"observedGeneration": 3}
    return out


def canary(mode: str = "serverless", percent: int = 10) -> dict:
    return live(build_inference_service(target("v2"), ServingSettings(mode=mode), primary=target("v1"),
                                        canary_percent=percent))


def after(obj: dict, patch: dict) -> dict:
    result = apply_merge_patch(obj, patch)
    assert not unknown_fields(patch, "V1beta1InferenceService")
    body = {k: v for k, v in result.items() if k != "status"}
    body["metadata"] = {k: v for k, v in body["metadata"].items()
                        if k in ("name", "namespace", "labels", "annotations")}
    check_isvc(body)
    return result


# -- RFC 7386 ----------------------------------------------------------------------------

@pytest.mark.parametrize("target_doc,patch,expected", [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_apply_merge_patch_rfc7386_examples(target_doc, patch, expected):
    before = copy.deepcopy(target_doc)
    assert apply_merge_patch(target_doc, patch) == expected
    assert target_doc == before


def test_merge_diff_round_trips_and_leaves_unnamed_keys():
    cur = {"a": 1, "b": {"c": 2, "d": 3}, "keep": True}
    want = {"a": 1, "b": {"c": 5}, "n": [1]}
    patch = merge_diff(cur, want)
    assert patch == {"b": {"c": 5}, "n": [1]}
    assert apply_merge_patch(cur, patch) == {"a": 1, "b": {"c": 5, "d": 3}, "keep": True, "n": [1]}
    assert merge_diff(cur, {"a": 1}) == {}


# -- state -----------------------------------------------------------------------------

def test_read_state_serverless():
    st = read_state(canary(percent=30))
    assert (st.primary_version, st.canary_version, st.canary_percent, st.mode) == ("v1", "v2", 30, "serverless")
    assert st.in_progress and st.resource_version == "41"
    first = read_state(live(build_inference_service(target("v1"), ServingSettings())))
    assert (first.primary_version, first.canary_version, first.canary_percent) == ("v1", None, None)


def test_read_state_standard():
    st = read_state(canary("standard", 25))
    assert (st.primary_version, st.canary_version, st.canary_percent, st.mode) == ("v1", "v2", 25, "standard")


# -- set --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["serverless", "standard"])
def test_set_percent(mode):
    cur = canary(mode, 10)
    patch = set_percent_patch(cur, 50)
    assert patch["metadata"]["resourceVersion"] == "41"
    res = after(cur, patch)
    assert read_state(res).canary_percent == 50
    assert (read_state(res).primary_version, read_state(res).canary_version) == ("v1", "v2")
    assert set(patch["metadata"]) == {"resourceVersion"}  # no annotation: it would roll a revision
    if mode == "serverless":
        assert patch["spec"] == {"predictor": {"canaryTrafficPercent": 50}}
    else:
        assert patch["spec"]["canary"][0]["predictor"] == cur["spec"]["canary"][0]["predictor"]
    # the same input again changes nothing
    assert set_percent_patch(res, 50) == {}


@pytest.mark.parametrize("bad", [-5, 101, 33.3, "x"])
def test_set_percent_refuses_bad_shares(bad):
    with pytest.raises(UserError, match="canary traffic percent"):
        set_percent_patch(canary(), bad)


def test_set_percent_without_a_canary_is_a_clear_error():
    first = live(build_inference_service(target("v1"), ServingSettings()))
    with pytest.raises(UserError, match="no canary in progress"):
        set_percent_patch(first, 20)


# -- promote ----------------------------------------------------------------------------

def test_promote_serverless_removes_only_the_traffic_field():
    cur = canary(percent=50)
    patch = promote_patch(cur)
    assert patch == {"spec": {"predictor": {"canaryTrafficPercent": None}}, "metadata": {"resourceVersion": "41"}}
    res = after(cur, patch)
    assert "canaryTrafficPercent" not in res["spec"]["predictor"]
    assert res["spec"]["predictor"]["model"]["storageUri"].endswith("/v2/model/")
    st = read_state(res)
    assert (st.primary_version, st.canary_version) == ("v2", None)
    assert LABEL_VERSION not in res["metadata"]["labels"]  # per pod, not per InferenceService
    assert promote_patch(res) == {}  # already promoted: nothing to send


def test_promote_standard_makes_the_canary_predictor_the_primary():
    cur = canary("standard", 25)
    patch = promote_patch(cur)
    assert patch["spec"]["canary"] is None
    res = after(cur, patch)
    pred = res["spec"]["predictor"]
    assert pred["name"] == "v2" and pred["model"]["storageUri"].endswith("/v2/model/")
    assert "canary" not in res["spec"]
    # exactly the canary's predictor: nothing of the old primary's is left behind
    assert pred == cur["spec"]["canary"][0]["predictor"]
    st = read_state(res)
    assert (st.primary_version, st.canary_version) == ("v2", None)
    assert promote_patch(res) == {}


# -- rollback ---------------------------------------------------------------------------

def test_rollback_serverless_pins_traffic_to_the_previous_revision():
    cur = canary(percent=50)
    patch = rollback_patch(cur)
    # no annotation: a changed annotation would roll a new Knative revision
    assert patch == {"spec": {"predictor": {"canaryTrafficPercent": 0}}, "metadata": {"resourceVersion": "41"}}
    res = after(cur, patch)
    st = read_state(res)
    assert (st.primary_version, st.canary_version, st.canary_percent) == ("v1", "v2", 0)
    assert rollback_patch(res) == {}  # twice is a no-op


def test_rollback_standard_removes_the_canary_entry():
    cur = canary("standard", 25)
    res = after(cur, rollback_patch(cur))
    assert "canary" not in res["spec"]
    assert res["spec"]["predictor"]["model"]["storageUri"].endswith("/v1/model/")
    st = read_state(res)
    assert (st.primary_version, st.canary_version) == ("v1", None)
    with pytest.raises(UserError, match="no canary"):
        rollback_patch(res)


def test_promote_after_rollback_is_allowed():
    res = apply_merge_patch(canary(), rollback_patch(canary()))
    assert read_state(apply_merge_patch(res, promote_patch(res))).primary_version == "v2"


# -- deploy over an existing object --------------------------------------------------------

def test_deploy_same_object_twice_is_a_no_op():
    desired = build_inference_service(target("v1"), ServingSettings())
    assert deploy_patch(live(desired), desired) == {}


def test_deploy_a_canary_over_the_first_version():
    first = live(build_inference_service(target("v1"), ServingSettings()))
    desired = build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=10)
    patch = deploy_patch(first, desired)
    assert patch["metadata"]["resourceVersion"] == "41"
    res = after(first, patch)
    st = read_state(res)
    assert (st.primary_version, st.canary_version, st.canary_percent) == ("v1", "v2", 10)
    assert res["spec"]["predictor"]["model"]["protocolVersion"] == "v1"  # untouched server default


def test_deploy_full_rollout_over_a_canary_removes_the_canary_fields():
    cur = canary(percent=10)
    desired = build_inference_service(target("v3"), ServingSettings())
    res = after(cur, deploy_patch(cur, desired))
    assert "canaryTrafficPercent" not in res["spec"]["predictor"]
    assert ANN_CANARY not in res["metadata"]["annotations"]
    cur_std = canary("standard")
    res_std = after(cur_std, deploy_patch(cur_std, build_inference_service(target("v3"), ServingSettings(mode="standard"))))
    assert "canary" not in res_std["spec"]


def test_the_readme_kubectl_patches_are_the_ones_kubeloop_sends():
    import json
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    rows = dict(re.findall(r"\| `kubeloop canary (\w+) churn[^`]*` \| `kubectl [^']*'([^']+)'` \|",
                           readme.read_text()))
    assert set(rows) == {"set", "promote", "rollback"}
    cur = live(build_inference_service(Target("churn", "v4", "s3://models/registry/churn/versions/v4/model/"),
                                       ServingSettings(), primary=target("v3"), canary_percent=10))

    def without_rv(patch):
        patch = copy.deepcopy(patch)
        patch["metadata"].pop("resourceVersion")
        return {k: v for k, v in patch.items() if k != "metadata" or v}

    assert json.loads(rows["set"]) == without_rv(set_percent_patch(cur, 50))
    assert json.loads(rows["promote"]) == without_rv(promote_patch(cur))
    assert json.loads(rows["rollback"]) == without_rv(rollback_patch(cur))


def test_a_canary_started_with_kubectl_is_recognised():
    cur = canary(percent=20)
    del cur["metadata"]["annotations"][ANN_CANARY]
    st = read_state(cur)
    assert (st.primary_version, st.canary_version, st.canary_percent) == ("v1", "v2", 20)
    res = apply_merge_patch(cur, promote_patch(cur))
    assert read_state(res).primary_version == "v2"


# -- traffic moves never roll pods ----------------------------------------------------------

MOVES = {
    "set 50": lambda cur: set_percent_patch(cur, 50),
    "set 0": lambda cur: set_percent_patch(cur, 0),
    "promote": promote_patch,
    "rollback": rollback_patch,
}


def _paths(patch: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in patch.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out |= _paths(v, path)
        else:
            out.add(path)
    return out


@pytest.mark.parametrize("mode", ["serverless", "standard"])
@pytest.mark.parametrize("move", sorted(MOVES))
@pytest.mark.parametrize("settings", [{}, {"max_replicas": 4, "min_replicas": 2}], ids=["defaults", "autoscaled"])
def test_traffic_moves_change_only_traffic_fields_and_roll_no_pods(mode, move, settings):
    """KServe copies annotations and labels into the revision template (Serverless)
    or the pod template (Standard): set, promote and rollback touch neither, so
    the revision that was analysed is the one that gets the traffic."""
    cur = live(build_inference_service(target("v2"), ServingSettings(mode=mode, **settings), primary=target("v1"),
                                       canary_percent=10, canary_since="2026-12-01T08:00:00Z"))
    patch = MOVES[move](cur)
    res = after(cur, patch)
    assert not rolls_pods(cur, res)
    assert pod_template_inputs(cur)["annotations"] == pod_template_inputs(res)["annotations"]
    assert pod_template_inputs(cur)["labels"] == pod_template_inputs(res)["labels"]
    paths = _paths(patch) - {"metadata.resourceVersion"}
    if mode == "serverless":
        assert paths == {"spec.predictor.canaryTrafficPercent"}
    elif move.startswith("set"):
        assert paths == {"spec.canary"}
        assert [{k: v for k, v in c.items() if k != "trafficPercent"} for c in patch["spec"]["canary"]] == \
               [{k: v for k, v in c.items() if k != "trafficPercent"} for c in cur["spec"]["canary"]]
    elif move == "rollback":
        assert paths == {"spec.canary"}
    else:
        # the canary's predictor, as it ran, becomes the primary (KServe keeps its Deployment)
        assert {p.split(".")[1] for p in paths} == {"predictor", "canary"}
        promoted = {k: v for k, v in res["spec"]["predictor"].items() if k not in ("maxReplicas",)}
        assert promoted == cur["spec"]["canary"][0]["predictor"]
    assert not webhook_problem(res)


def test_a_change_of_annotation_or_model_rolls_pods():
    cur = canary()
    assert rolls_pods(cur, apply_merge_patch(cur, {"metadata": {"annotations": {"team": "fraud"}}}))
    assert rolls_pods(cur, apply_merge_patch(cur, {"spec": {"predictor": {"model": {"storageUri": "s3://x/"}}}}))
    # ... but not one KServe keeps out of its pods
    assert not rolls_pods(cur, apply_merge_patch(
        cur, {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}}))


def test_standard_canary_is_what_the_webhook_accepts_and_promote_restores_autoscaling():
    settings = ServingSettings(mode="standard", min_replicas=2, max_replicas=5)
    obj = build_inference_service(target("v2"), settings, primary=target("v1"), canary_percent=10)
    cpred = obj["spec"]["canary"][0]["predictor"]
    assert "maxReplicas" not in cpred and cpred["minReplicas"] <= obj["spec"]["predictor"]["minReplicas"]
    assert not webhook_problem(obj)
    # what the earlier builder sent (maxReplicas inherited) is refused
    bad = copy.deepcopy(obj)
    bad["spec"]["canary"][0]["predictor"]["maxReplicas"] = 5
    assert "must not set maxReplicas" in webhook_problem(bad)
    res = apply_merge_patch(live(obj), promote_patch(live(obj)))
    assert res["spec"]["predictor"]["maxReplicas"] == 5 and res["spec"]["predictor"]["name"] == "v2"
    assert not webhook_problem(res)


@pytest.mark.parametrize("mode", ["serverless", "standard"])
def test_canary_since_is_recorded_with_the_canary_and_read_back(mode):
    cur = live(build_inference_service(target("v2"), ServingSettings(mode=mode), primary=target("v1"),
                                       canary_percent=10, canary_since="2026-12-01T08:00:00Z"))
    assert read_state(cur).canary_since == "2026-12-01T08:00:00Z"
    if mode == "standard":
        # not on the InferenceService: KServe would copy it into the primary's pods too
        assert "kubeloop.dev/canary-since" not in cur["metadata"]["annotations"]
    promoted = apply_merge_patch(cur, promote_patch(cur))
    assert read_state(promoted).canary_since is None
