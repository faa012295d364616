"""The InferenceService builders, checked against the KServe SDK's own models."""

from __future__ import annotations

import pytest
from deploy_support import check_isvc, roundtrip, unknown_fields

from kubeloop.config import Config
from kubeloop.deploy.inferenceservice import (
    ANN_CANARY,
    ANN_DEPLOYMENT_MODE,
    ANN_PRIMARY,
    ANN_TAG_ROUTING,
    LABEL_MODEL,
    LABEL_VERSION,
    ServingSettings,
    Target,
    build_inference_service,
    check_name,
    check_percent,
    settings_from_config,
    version_of_uri,
)
from kubeloop.errors import UserError

REG = "s3://models/registry"


def target(version: str, model: str = "churn") -> Target:
    return Target(model, version, f"{REG}/{model}/versions/{version}/model/")


def env_of(model_spec):
    return {e["name"]: e for e in model_spec.get("env", [])}


def test_first_deployment_has_no_canary_and_matches_the_contract():
    obj = build_inference_service(target("v1"), ServingSettings(log_uri="s3://logs/predictions",
                                                                 s3_endpoint="http://minio.kubeloop-storage.svc:9000"))
    check_isvc(obj)
    assert obj["apiVersion"] == "serving.kserve.io/v1beta1" and obj["kind"] == "InferenceService"
    meta = obj["metadata"]
    assert meta["name"] == "churn" and meta["namespace"] == "kubeloop"
    # the same for every version: KServe copies these into every revision and pod
    assert meta["labels"] == {"app.kubernetes.io/part-of": "kubeloop", LABEL_MODEL: "churn"}
    assert meta["annotations"][ANN_PRIMARY] == "v1" and ANN_CANARY not in meta["annotations"]
    assert meta["annotations"][ANN_DEPLOYMENT_MODE] == "Knative"
    pred = obj["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred and "canary" not in obj["spec"]
    assert pred["serviceAccountName"] == "kubeloop-predictor"
    assert pred["model"]["modelFormat"] == {"name": "kubeloop"} and pred["model"]["runtime"] == "kubeloop"
    assert pred["model"]["storageUri"] == f"{REG}/churn/versions/v1/model/"
    env = env_of(pred["model"])
    assert env["KUBELOOP_LOG_URI"]["value"] == "s3://logs/predictions"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.kubeloop-storage.svc:9000"
    # keys by reference to the Secret, never by value
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "kubeloop-s3-predictor", "key": "AWS_SECRET_ACCESS_KEY"}}}
    assert "KUBELOOP_ROLE" not in env  # both revisions of a canary share one env


def test_no_logs_means_no_env_and_no_secret_reference():
    obj = build_inference_service(target("v1"), ServingSettings())
    check_isvc(obj)
    assert "env" not in obj["spec"]["predictor"]["model"]


def test_shadow_and_resources_and_replicas():
    s = ServingSettings(shadow_uri=f"{REG}/churn/versions/v2/model/", min_replicas=2, max_replicas=5,
                        requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "4Gi"})
    obj = build_inference_service(target("v1"), s)
    check_isvc(obj)
    pred = obj["spec"]["predictor"]
    assert pred["minReplicas"] == 2 and pred["maxReplicas"] == 5
    assert pred["model"]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    assert env_of(pred["model"])["KUBELOOP_SHADOW_URI"]["value"].endswith("/v2/model/")


def test_serverless_canary_sets_the_new_uri_and_the_share():
    obj = build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=10)
    check_isvc(obj)
    pred = obj["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10
    assert pred["model"]["storageUri"].endswith("/versions/v2/model/")
    assert obj["metadata"]["annotations"][ANN_PRIMARY] == "v1"
    assert obj["metadata"]["annotations"][ANN_CANARY] == "v2"
    assert obj["spec"]["predictor"]["labels"][LABEL_VERSION] == "v2"  # on the new revision's pods


@pytest.mark.parametrize("percent", [100, "100"])
def test_a_canary_at_100_is_a_full_rollout(percent):
    obj = build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=percent)
    check_isvc(obj)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert obj["metadata"]["annotations"][ANN_PRIMARY] == "v2"


def test_same_version_as_primary_is_no_canary():
    obj = build_inference_service(target("v1"), ServingSettings(), primary=target("v1"), canary_percent=10)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]


def test_canary_needs_a_share():
    with pytest.raises(UserError, match="--canary-percent"):
        build_inference_service(target("v2"), ServingSettings(), primary=target("v1"))


def test_blue_green_zero_percent_with_tag_routing():
    obj = build_inference_service(target("v2"), ServingSettings(tag_routing=True), primary=target("v1"),
                                  canary_percent=0)
    check_isvc(obj)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert obj["metadata"]["annotations"][ANN_TAG_ROUTING] == "true"


def test_standard_mode_uses_the_canary_list():
    s = ServingSettings(mode="standard", log_uri="/var/log/kubeloop")
    obj = build_inference_service(target("v2"), s, primary=target("v1"), canary_percent=25)
    check_isvc(obj)
    assert obj["metadata"]["annotations"][ANN_DEPLOYMENT_MODE] == "Standard"
    spec = obj["spec"]
    assert "canaryTrafficPercent" not in spec["predictor"]
    assert spec["predictor"]["name"] == "v1"
    assert spec["predictor"]["model"]["storageUri"].endswith("/v1/model/")
    [entry] = spec["canary"]
    assert entry["trafficPercent"] == 25
    assert entry["predictor"]["name"] == "v2"  # required by KServe for a canary entry
    assert entry["predictor"]["model"]["storageUri"].endswith("/v2/model/")
    # no role variable: promotion moves this predictor as it is, so its pods keep running
    assert "KUBELOOP_ROLE" not in env_of(entry["predictor"]["model"])


def test_standard_mode_first_deployment():
    obj = build_inference_service(target("v1"), ServingSettings(mode="standard"))
    check_isvc(obj)
    assert "canary" not in obj["spec"] and obj["spec"]["predictor"]["name"] == "v1"


def test_tag_routing_is_refused_in_standard_mode():
    with pytest.raises(UserError, match="serverless"):
        ServingSettings(mode="standard", tag_routing=True)


@pytest.mark.parametrize("bad", [-1, 101, 12.5, "12.5", "ten", True, None, [10]])
def test_percent_refused_outside_0_100_or_not_whole(bad):
    with pytest.raises(UserError, match="canary traffic percent"):
        check_percent(bad)
    if bad is not None:
        with pytest.raises(UserError):
            build_inference_service(target("v2"), ServingSettings(), primary=target("v1"), canary_percent=bad)


@pytest.mark.parametrize("good,value", [(0, 0), (100, 100), ("35", 35), (50.0, 50), ("20%", 20)])
def test_percent_accepted(good, value):
    assert check_percent(good) == value


@pytest.mark.parametrize("name", ["1churn", "Churn", "churn-", "-churn", "a" * 64, "churn_v2", ""])
def test_name_must_be_a_dns1035_label(name):
    with pytest.raises(UserError, match="DNS-1035"):
        check_name(name)


def test_target_refuses_a_uri_without_trailing_slash_or_scheme():
    with pytest.raises(UserError, match="end with '/'"):
        Target("churn", "v1", f"{REG}/churn/versions/v1/model")
    with pytest.raises(UserError, match="local path the cluster cannot fetch"):
        Target("churn", "v1", "churn/versions/v1/model/")
    with pytest.raises(UserError, match="v1, v2"):
        Target("churn", "1", f"{REG}/churn/versions/v1/model/")


def test_version_of_uri():
    assert version_of_uri(f"{REG}/churn/versions/v12/model/") == "v12"
    assert version_of_uri(f"{REG}/churn/versions/v3/model") == "v3"
    assert version_of_uri("s3://x/model/") is None


def test_settings_from_config_and_overrides():
    cfg = Config.from_dict({"canary": {"namespace": "ml", "mode": "standard", "log_uri": "s3://logs/p",
                                       "cpu_limit": "2"},
                            "storage": {"endpoint_url": "http://minio:9000", "region": "eu-west-1"}})
    s = settings_from_config(cfg, namespace="other")
    assert s.namespace == "other" and s.mode == "standard" and s.limits == {"cpu": "2", "memory": "2Gi"}
    obj = build_inference_service(target("v1"), s)
    check_isvc(obj)
    assert env_of(obj["spec"]["predictor"]["model"])["AWS_REGION"]["value"] == "eu-west-1"


def test_config_rejects_bad_canary_section():
    from kubeloop.config import ConfigError
    with pytest.raises(ConfigError, match="canary.steps"):
        Config.from_dict({"canary": {"steps": [50, 10]}})
    with pytest.raises(ConfigError, match="canary.initial_percent"):
        Config.from_dict({"canary": {"initial_percent": 150}})
    with pytest.raises(ConfigError, match="unknown key"):
        Config.from_dict({"canary": {"max_error_rate": 0.1}})


def test_the_checker_catches_unknown_and_mistyped_fields():
    # The checks used above must be able to fail.
    obj = build_inference_service(target("v1"), ServingSettings())
    obj["spec"]["predictor"]["canaryTrafficPercentage"] = 10
    obj["spec"]["predictor"]["model"]["storageURI"] = "x"
    problems = unknown_fields(obj, "V1beta1InferenceService")
    assert any("canaryTrafficPercentage" in p for p in problems)
    assert any("storageURI" in p for p in problems)
    obj2 = build_inference_service(target("v1"), ServingSettings())
    obj2["spec"]["predictor"]["minReplicas"] = "1"
    assert unknown_fields(obj2, "V1beta1InferenceService")
    obj3 = build_inference_service(target("v1"), ServingSettings())
    obj3["spec"]["predictor"]["model"]["envs"] = []
    assert roundtrip(obj3) != obj3


@pytest.mark.parametrize("config,override,expected", [
    ({}, None, "s3://logs/predictions"),                                    # the manifests' logs bucket
    ({"storage": {"logs_bucket": "team-logs"}}, None, "s3://team-logs/predictions"),
    ({"canary": {"log_uri": "s3://elsewhere/p"}}, None, "s3://elsewhere/p"),  # explicit config wins
    ({"canary": {"log_uri": "s3://elsewhere/p"}}, "s3://flag/p", "s3://flag/p"),  # and a flag over it
    ({"canary": {"log_uri": "off"}}, None, None),
    ({"canary": {"log_uri": ""}}, None, None),
    ({}, "off", None),                                                      # --log-uri off
    ({"canary": {"log_uri": "off"}}, "s3://flag/p", "s3://flag/p"),
])
def test_the_log_root_defaults_to_the_storage_logs_bucket(config, override, expected):
    cfg = Config.from_dict(config)
    assert cfg.prediction_log_root(override) == expected
    s = settings_from_config(cfg, log_uri=override)
    assert s.log_uri == expected
    env = env_of(build_inference_service(target("v1"), s)["spec"]["predictor"]["model"])
    assert env.get("KUBELOOP_LOG_URI", {}).get("value") == expected


def test_log_uri_off_in_yaml_turns_logs_off():
    import yaml

    # YAML reads a bare `off` as False: it means off, not an error.
    cfg = Config.from_dict(yaml.safe_load("canary:\n  log_uri: off\n"))
    assert cfg.canary.log_uri == "off" and cfg.prediction_log_root() is None
    # and it survives the trip into a pipeline step (None values are dropped there)
    assert Config.from_dict(cfg.to_params()).prediction_log_root() is None
    assert Config.from_dict(Config().to_params()).prediction_log_root() == "s3://logs/predictions"


@pytest.mark.parametrize("endpoint", [
    "http://localhost:9000", "http://127.0.0.1:9000", "https://127.0.0.2", "http://[::1]:9000",
    "http://0.0.0.0:9000", "localhost:9000", "http://minio.localhost:9000",
])
def test_a_laptop_endpoint_never_reaches_the_cluster_objects(endpoint):
    import json

    from kubeloop.deploy.inferenceservice import is_loopback

    assert is_loopback(endpoint)
    for mode in ("serverless", "standard"):
        s = ServingSettings(mode=mode, log_uri="s3://logs/predictions", s3_endpoint=endpoint,
                            shadow_uri=f"{REG}/churn/versions/v1/model/")
        for obj in (build_inference_service(target("v1"), s),
                    build_inference_service(target("v2"), s, primary=target("v1"), canary_percent=10)):
            check_isvc(obj)
            text = json.dumps(obj)
            assert endpoint not in text and "AWS_ENDPOINT_URL" not in text
            # the rest of the storage settings still go in
            assert "KUBELOOP_LOG_URI" in text and "AWS_SECRET_ACCESS_KEY" in text


@pytest.mark.parametrize("endpoint", [
    "http://minio.kubeloop-storage.svc:9000", "https://s3.eu-west-1.amazonaws.com", "http://10.0.0.7:9000",
    "http://127x.example.com",
])
def test_a_cluster_endpoint_goes_into_the_predictor_env(endpoint):
    from kubeloop.deploy.inferenceservice import is_loopback

    assert not is_loopback(endpoint)
    obj = build_inference_service(target("v1"), ServingSettings(log_uri="s3://logs/p", s3_endpoint=endpoint))
    assert env_of(obj["spec"]["predictor"]["model"])["AWS_ENDPOINT_URL"]["value"] == endpoint
