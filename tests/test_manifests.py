"""The cluster manifests, checked without a cluster.

Every overlay renders (with `kubectl kustomize` where kubectl exists); core
objects validate against the Kubernetes OpenAPI schemas in strict mode; KServe
objects carry no field the KServe SDK's models do not know; no committed object
carries a secret; every workload has limits and a non-root, read-only security
context; RBAC grants nothing cluster-wide; the image the manifests and compiled
pipelines name is the one `make image` builds.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster_support import (
    KSERVE_KINDS,
    KSERVE_MODELS,
    MANIFESTS,
    OVERLAY_IMAGES,
    OVERLAYS,
    REPO,
    S3_IDENTITIES,
    SENTINELS,
    WORKLOAD_KINDS,
    UnsupportedKustomization,
    can_i,
    copy_manifests,
    env_file,
    key,
    kubectl,
    render,
    render_kubectl,
    render_python,
    service_account_user,
    unknown_fields,
)

K8S_VERSION = "1.32"  # the oldest Kubernetes KServe's current release supports
VERSION = package_version("kubeloop")
PIPELINE_SA = service_account_user("kubeflow", "kubeloop-pipeline")
PREDICTOR_SA = service_account_user("kubeloop", "kubeloop-predictor")
no_kubectl = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed; the overlays are rendered by the test renderer instead")


@pytest.fixture(scope="module")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_manifests(tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="module")
def rendered(manifests_copy: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(manifests_copy / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def example(manifests_copy: Path) -> list[dict[str, Any]]:
    return render(manifests_copy / "examples")


def _all(rendered: dict[str, list[dict[str, Any]]], example: list[dict[str, Any]]):
    for name, objs in rendered.items():
        for obj in objs:
            yield name, obj
    for obj in example:
        yield "examples", obj


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


# --- rendering ----------------------------------------------------------------------


@no_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_kubectl(manifests_copy: Path, overlay: str) -> None:
    objs = render_kubectl(manifests_copy / "overlays" / overlay)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "PersistentVolumeClaim", "Job", "Secret",
            "ServiceAccount", "Role", "RoleBinding", "ServingRuntime"} <= kinds


@no_kubectl
@pytest.mark.parametrize("directory", [*(f"overlays/{o}" for o in OVERLAYS), "base", "examples"])
def test_test_renderer_agrees_with_kubectl(manifests_copy: Path, directory: str) -> None:
    by_kubectl = {key(o): o for o in render_kubectl(manifests_copy / directory)}
    by_python = {key(o): o for o in render_python(manifests_copy / directory)}
    assert by_python == by_kubectl


def test_test_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(UnsupportedKustomization, match="namePrefix"):
        render_python(tmp_path)


@pytest.mark.parametrize("who", S3_IDENTITIES)
def test_missing_env_file_is_an_error_not_an_empty_secret(tmp_path: Path, who: str) -> None:
    target = copy_manifests(tmp_path)
    (target / "base" / env_file(who)).unlink()
    with pytest.raises((FileNotFoundError, AssertionError)):
        render(target / "overlays" / "kind")


def test_every_object_names_its_namespace(rendered: dict[str, list[dict[str, Any]]], example) -> None:
    for where, obj in _all(rendered, example):
        if obj["kind"] == "Namespace":
            continue
        assert obj["metadata"].get("namespace") in {"kubeloop", "kubeloop-storage", "kubeflow"}, (where, key(obj))


def test_objects_per_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objs in rendered.values():
        in_kubeflow = sorted(key(o)[::2] for o in objs if o["metadata"].get("namespace") == "kubeflow")
        # Only what pipeline pods need where KFP runs them; KFP itself is not copied.
        assert in_kubeflow == [("RoleBinding", "kubeloop-pipeline-runner"), ("Secret", "kubeloop-s3-pipeline"),
                               ("ServiceAccount", "kubeloop-pipeline")]
        assert [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"] == ["kubeloop", "kubeloop-storage"]
        # MinIO and everything that holds its root keys, apart from where pipelines create objects.
        in_storage = sorted(key(o)[::2] for o in objs if o["metadata"].get("namespace") == "kubeloop-storage")
        assert in_storage == [("ConfigMap", "kubeloop-s3-policies"), ("Deployment", "minio"), ("Job", "kubeloop-buckets"),
                              ("NetworkPolicy", "minio"), ("PersistentVolumeClaim", "minio-data"),
                              ("Secret", "kubeloop-s3-pipeline"), ("Secret", "kubeloop-s3-predictor"),
                              ("Secret", "kubeloop-s3-root"), ("Service", "minio")]
        storage_ns = _one(objs, "Namespace", "kubeloop-storage")
        assert storage_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- schemas ------------------------------------------------------------------------


def test_core_objects_validate_against_kubernetes_openapi(rendered, example) -> None:
    import kubernetes_validate

    checked = 0
    for _where, obj in _all(rendered, example):
        if obj["kind"] in KSERVE_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 2 * 13


def test_openapi_validation_catches_a_misspelt_field(rendered) -> None:
    import kubernetes_validate

    deployment = copy.deepcopy(_one(rendered["kind"], "Deployment", "minio"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kserve_objects_have_only_fields_the_sdk_models_know(rendered, example) -> None:
    seen = set()
    for where, obj in _all(rendered, example):
        if obj["kind"] not in KSERVE_KINDS:
            continue
        model = KSERVE_MODELS[(obj["apiVersion"], obj["kind"])]
        assert unknown_fields(obj, model) == [], (where, key(obj))
        seen.add(obj["kind"])
    assert seen == {"ServingRuntime", "InferenceService"}


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("spec", "supportedModelFormat"), [], "spec.supportedModelFormat: unknown field"),
        (("spec", "containers", 0, "imagePullPolicyy"), "Never", "imagePullPolicyy: unknown field"),
        (("spec", "protocolVersions"), "v1", "expected a list"),
        (("spec", "supportedModelFormats", 0, "autoSelect"), "yes", "expected bool"),
    ],
)
def test_sdk_model_check_catches_mistakes(rendered, path, value, expected) -> None:
    runtime = copy.deepcopy(_one(rendered["kind"], "ServingRuntime", "kubeloop"))
    node: Any = runtime
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    errors = unknown_fields(runtime, "V1alpha1ServingRuntime")
    assert any(expected in e for e in errors), errors


# --- the contracts: names, runtime, InferenceService ----------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_runtime_runs_the_project_predictor(rendered, overlay: str) -> None:
    runtime = _one(rendered[overlay], "ServingRuntime", "kubeloop")
    assert runtime["metadata"]["namespace"] == "kubeloop"
    spec = runtime["spec"]
    assert spec["supportedModelFormats"] == [{"name": "kubeloop", "version": "1", "autoSelect": True}]
    assert sorted(spec["protocolVersions"]) == ["v1", "v2"]
    (container,) = spec["containers"]
    assert container["image"] == f"{OVERLAY_IMAGES[overlay]}:{VERSION}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python", "-m", "kubeloop.serving"]
    assert {"--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"} <= set(container["args"])
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.kubeloop-storage.svc:9000"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "kubeloop-s3-predictor", "key": name}


def test_example_inference_service_follows_the_contract(example) -> None:
    isvc = _one(example, "InferenceService", "churn")
    meta = isvc["metadata"]
    assert meta["namespace"] == "kubeloop"
    assert meta["labels"]["app.kubernetes.io/part-of"] == "kubeloop"
    assert meta["labels"]["kubeloop.dev/model"] == meta["name"]
    # the version labels the predictor's pods, not the InferenceService (whose
    # labels KServe copies into every revision)
    assert "kubeloop.dev/version" not in meta["labels"]
    version = isvc["spec"]["predictor"]["labels"]["kubeloop.dev/version"]
    assert meta["annotations"]["kubeloop.dev/primary-version"] == version
    assert "kubeloop.dev/canary-version" in meta["annotations"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "kubeloop-predictor"
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "kubeloop"} and model["runtime"] == "kubeloop"
    # The registry layout, with the trailing slash KServe's prefix fetch needs.
    assert model["storageUri"] == f"s3://models/registry/{meta['name']}/versions/{version}/model/"
    assert "canaryTrafficPercent" not in predictor


def test_service_accounts_and_s3_annotations(rendered) -> None:
    annotations = {
        "serving.kserve.io/s3-endpoint": "minio.kubeloop-storage.svc:9000",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-verifyssl": "0",
        "serving.kserve.io/s3-region": "us-east-1",
    }
    for objs in rendered.values():
        predictor = _one(objs, "ServiceAccount", "kubeloop-predictor")
        assert predictor["metadata"]["namespace"] == "kubeloop"
        assert predictor["metadata"]["annotations"] == annotations
        assert predictor["secrets"] == [{"name": "kubeloop-s3-predictor"}]
        assert predictor["automountServiceAccountToken"] is False
        # KServe's storage initializer reads the endpoint from the Secret's annotations.
        secret = next(o for o in objs if key(o) == ("Secret", "kubeloop", "kubeloop-s3-predictor"))
        assert secret["metadata"]["annotations"] == annotations
        # Only the predictor's Secret is for KServe: no other carries its annotations.
        for other in (o for o in objs if o["kind"] == "Secret" and o is not secret):
            assert not other["metadata"].get("annotations"), key(other)
        assert _one(objs, "ServiceAccount", "kubeloop-pipeline")["metadata"]["namespace"] == "kubeflow"


def test_minio_service_and_bucket_job(rendered) -> None:
    for objs in rendered.values():
        service = _one(objs, "Service", "minio")
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["s3"] == 9000
        deployment = _one(objs, "Deployment", "minio")
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        claim = deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert _one(objs, "PersistentVolumeClaim", claim)["spec"]["storageClassName"] == "standard"
        policy = _one(objs, "NetworkPolicy", "minio")
        assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        (rule,) = policy["spec"]["ingress"]
        (source,) = rule["from"]
        (expr,) = source["namespaceSelector"]["matchExpressions"]
        assert expr["key"] == "kubernetes.io/metadata.name"
        assert sorted(expr["values"]) == ["kubeflow", "kubeloop", "kubeloop-storage"]
        job = _one(objs, "Job", "kubeloop-buckets")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["S3_ENDPOINT"] == "http://minio.kubeloop-storage.svc:9000"
        assert env["BUCKETS"].split() == ["models", "logs", "data"]
        script = container["args"][0]
        assert 'mc mb --ignore-existing "kubeloop/$bucket"' in script
        assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0


# --- secrets ------------------------------------------------------------------------


def _committed_manifest_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "manifests"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [REPO / line for line in out.stdout.splitlines()]
    # Also files not yet committed, so the test guards a change before it lands.
    return sorted({*files, *MANIFESTS.rglob("*.yaml"), *MANIFESTS.rglob("*.yml")})


def test_no_committed_object_carries_a_secret() -> None:
    files = _committed_manifest_files()
    assert files
    for path in files:
        if path.suffix not in (".yaml", ".yml"):
            continue
        for obj in yaml.safe_load_all(path.read_text()):
            if not isinstance(obj, dict):
                continue
            if obj.get("kind") == "Secret":
                assert not obj.get("data") and not obj.get("stringData"), path
            for gen in obj.get("secretGenerator", []) if obj.get("kind") == "Kustomization" else []:
                assert not gen.get("literals"), f"{path}: a literal in a secretGenerator is a committed secret"
    tracked = subprocess.run(["git", "ls-files", "manifests"], cwd=REPO, capture_output=True, text=True, check=True)
    for who in S3_IDENTITIES:
        assert f"manifests/base/{env_file(who)}\n" not in tracked.stdout + "\n"


@pytest.mark.parametrize("who", S3_IDENTITIES)
def test_env_files_are_git_ignored_and_the_example_holds_placeholders(who: str) -> None:
    path = f"manifests/base/{env_file(who)}"
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{path} must be git-ignored"
    from tests.cluster_support import parse_env_file

    example = parse_env_file(MANIFESTS / "base" / "s3.env.example")
    assert set(example) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all("replace" in v for v in example.values())


# Who holds which Secret: (namespace, Secret) -> the consumers allowed to reference it.
SECRET_NAMESPACES = {
    ("kubeloop-storage", "kubeloop-s3-root"): "root",
    # The bucket Job's copies, to create the users.
    ("kubeloop-storage", "kubeloop-s3-pipeline"): "pipeline",
    ("kubeloop-storage", "kubeloop-s3-predictor"): "predictor",
    ("kubeloop", "kubeloop-s3-predictor"): "predictor",
    ("kubeflow", "kubeloop-s3-pipeline"): "pipeline",
}
CONSUMERS = {
    ("Deployment", "kubeloop-storage", "minio"): {"kubeloop-s3-root"},
    ("Job", "kubeloop-storage", "kubeloop-buckets"): {"kubeloop-s3-root", "kubeloop-s3-pipeline",
                                                      "kubeloop-s3-predictor"},
    ("ServingRuntime", "kubeloop", "kubeloop"): {"kubeloop-s3-predictor"},
    ("ServiceAccount", "kubeloop", "kubeloop-predictor"): {"kubeloop-s3-predictor"},
}


def _secret_refs(node: Any) -> set[str]:
    """Every Secret an object names: env secretKeyRef, envFrom, volumes, a ServiceAccount's secrets."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "secretKeyRef" or k == "secretRef":
                found.add(v["name"])
            elif k == "secret" and isinstance(v, dict) and "secretName" in v:
                found.add(v["secretName"])
            else:
                found |= _secret_refs(v)
    elif isinstance(node, list):
        for item in node:
            found |= _secret_refs(item)
    return found


def test_keys_reach_only_the_generated_secrets(manifests_copy: Path, rendered) -> None:
    for objs in rendered.values():
        secrets = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Secret"}
        assert set(secrets) == set(SECRET_NAMESPACES)
        for where, s in secrets.items():
            decoded = {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
            key_id, secret = SENTINELS[SECRET_NAMESPACES[where]]
            assert decoded == {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}, where
        others = yaml.safe_dump_all([o for o in objs if o["kind"] != "Secret"])
        for key_id, secret in SENTINELS.values():
            for value in (key_id, secret):
                assert value not in others
                assert base64.b64encode(value.encode()).decode() not in others


def test_each_consumer_references_only_its_own_secret(rendered, example) -> None:
    for where, obj in _all(rendered, example):
        refs = _secret_refs(obj) | {s["name"] for s in obj.get("secrets", [])}
        if obj["kind"] == "Secret":
            continue
        assert refs == CONSUMERS.get(key(obj), set()), (where, key(obj), refs)
        # A reference resolves in the object's own namespace: each must exist there.
        for name in refs:
            assert (obj["metadata"]["namespace"], name) in SECRET_NAMESPACES, (where, key(obj), name)


def test_secret_reference_check_sees_a_shared_key(rendered) -> None:
    # The check above must fail where the predictor is handed the root keys.
    runtime = copy.deepcopy(_one(rendered["kind"], "ServingRuntime", "kubeloop"))
    runtime["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "kubeloop-s3-root", "key": "AWS_ACCESS_KEY_ID"}}})
    assert _secret_refs(runtime) != CONSUMERS[key(runtime)]


def test_minio_root_keys_serve_only_minio_and_the_job(rendered) -> None:
    for objs in rendered.values():
        minio = _one(objs, "Deployment", "minio")
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in minio["spec"]["template"]["spec"]["containers"][0]["env"]
               if "valueFrom" in e}
        assert env == {"MINIO_ROOT_USER": {"name": "kubeloop-s3-root", "key": "AWS_ACCESS_KEY_ID"},
                       "MINIO_ROOT_PASSWORD": {"name": "kubeloop-s3-root", "key": "AWS_SECRET_ACCESS_KEY"}}
        holders = {key(o) for o in objs if "kubeloop-s3-root" in _secret_refs(o)}
        assert holders == {("Deployment", "kubeloop-storage", "minio"), ("Job", "kubeloop-storage", "kubeloop-buckets")}
        # Pipelines may create InferenceServices in `kubeloop`, whose pods could be given
        # any Secret there: only the predictor's may be there.
        assert {key(o)[2] for o in objs if o["kind"] == "Secret" and key(o)[1] == "kubeloop"} == {
            "kubeloop-s3-predictor"}


def test_compiled_pipelines_reference_only_the_pipeline_secret(tmp_path: Path, monkeypatch) -> None:
    import json

    from kubeloop.cli import main
    from kubeloop.config import Config, load_config
    from kubeloop.deploy.inferenceservice import settings_from_config
    from kubeloop.pipelines.monitoring import compile_monitoring

    # Keys of this environment must never reach the YAML.
    key_id, secret = SENTINELS["pipeline"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    config = MANIFESTS / "examples" / "churn-config.yaml"
    training = tmp_path / "training.yaml"
    assert main(["compile", "--config", str(config), "--output", str(training)]) == 0
    monitoring = Path(compile_monitoring(load_config(config), str(tmp_path / "monitoring.yaml")))
    for path in (training, monitoring):
        text = path.read_text()
        docs = list(yaml.safe_load_all(text))
        platform = json.dumps(docs[1])
        names = set(re.findall(r'"secretName": "([^"]+)"', platform))
        assert names == {"kubeloop-s3-pipeline"}, (path.name, names)
        for value in (key_id, secret):
            assert value not in text and base64.b64encode(value.encode()).decode() not in text
    # What the pipeline's deploy step gives a predictor: the predictor's Secret, not its own.
    for cfg in (Config(), load_config(config)):
        assert settings_from_config(cfg).credentials_secret == "kubeloop-s3-predictor"


# --- workloads: limits, non-root, read-only root --------------------------------------


def _pod_specs(obj: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(pod-level securityContext, containers) of a workload or KServe object."""
    kind = obj["kind"]
    if kind in WORKLOAD_KINDS:
        spec = obj["spec"]
        if kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec["template"]["spec"] if kind != "Pod" else spec
        return [(pod, pod["containers"] + pod.get("initContainers", []))]
    if kind in ("ServingRuntime", "ClusterServingRuntime"):
        return [({}, obj["spec"]["containers"])]
    return []


def _effective(pod: dict[str, Any], container: dict[str, Any], field: str) -> Any:
    sc = container.get("securityContext") or {}
    return sc[field] if field in sc else (pod.get("securityContext") or {}).get(field)


def test_every_workload_has_requests_limits_and_a_locked_down_context(rendered, example) -> None:
    checked = 0
    for where, obj in _all(rendered, example):
        for pod, containers in _pod_specs(obj):
            for c in containers:
                ident = (where, key(obj), c["name"])
                res = c.get("resources") or {}
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res.get(kind, {})), (ident, kind)
                assert _effective(pod, c, "runAsNonRoot") is True, ident
                user = _effective(pod, c, "runAsUser")
                assert user is not None and user != 0, ident
                sc = c.get("securityContext") or {}
                assert sc.get("allowPrivilegeEscalation") is False, ident
                assert sc.get("readOnlyRootFilesystem") is True, ident
                assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), ident
                assert _effective(pod, c, "seccompProfile") == {"type": "RuntimeDefault"}, ident
                # A read-only root needs somewhere to write: every such container mounts /tmp.
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, ident
                checked += 1
            if obj["kind"] in WORKLOAD_KINDS:
                # None of these talks to the Kubernetes API.
                assert pod.get("automountServiceAccountToken") is False, (where, key(obj))
        if obj["kind"] == "InferenceService":
            res = obj["spec"]["predictor"]["model"].get("resources") or {}
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and {"cpu", "memory"} <= set(res.get("limits", {}))
    assert checked >= 2 * 3


def test_limits_are_not_below_requests(rendered) -> None:
    from kubernetes.utils.quantity import parse_quantity

    for objs in rendered.values():
        for obj in objs:
            for _, containers in _pod_specs(obj):
                for c in containers:
                    res = c["resources"]
                    for k in ("cpu", "memory"):
                        assert parse_quantity(res["limits"][k]) >= parse_quantity(res["requests"][k]), (key(obj), k)


# --- RBAC ---------------------------------------------------------------------------

# What KFP's own `pipeline-runner` Role (namespace kubeflow) grants, in short; the
# manifests bind to it but do not define it.
KFP_RUNNER = {("kubeflow", "pipeline-runner"): [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "watch", "list"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log", "services"], "verbs": ["*"]},
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
]}


def test_rbac_grants_nothing_cluster_wide(rendered) -> None:
    for objs in rendered.values():
        kinds = {o["kind"] for o in objs}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
        for role in (o for o in objs if o["kind"] == "Role"):
            for rule in role["rules"]:
                assert "*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), key(role)
                assert "*" not in rule.get("apiGroups", []), key(role)
        for binding in (o for o in objs if o["kind"] == "RoleBinding"):
            assert binding["roleRef"]["kind"] == "Role", key(binding)
            subjects = {service_account_user(s["namespace"], s["name"]) for s in binding["subjects"]}
            assert subjects == {PIPELINE_SA}, key(binding)


@pytest.mark.parametrize(
    "user, verb, resource, group, namespace, allowed",
    [
        (PIPELINE_SA, "create", "inferenceservices", "serving.kserve.io", "kubeloop", True),
        (PIPELINE_SA, "patch", "inferenceservices", "serving.kserve.io", "kubeloop", True),
        (PIPELINE_SA, "get", "inferenceservices", "serving.kserve.io", "kubeloop", True),
        (PIPELINE_SA, "list", "inferenceservices", "serving.kserve.io", "kubeloop", True),
        (PIPELINE_SA, "watch", "inferenceservices", "serving.kserve.io", "kubeloop", True),
        (PIPELINE_SA, "delete", "inferenceservices", "serving.kserve.io", "kubeloop", False),
        (PIPELINE_SA, "update", "inferenceservices", "serving.kserve.io", "kubeloop", False),
        (PIPELINE_SA, "create", "inferenceservices", "serving.kserve.io", "default", False),
        (PIPELINE_SA, "create", "inferenceservices", "serving.kserve.io", None, False),
        (PIPELINE_SA, "patch", "servingruntimes", "serving.kserve.io", "kubeloop", False),
        (PIPELINE_SA, "get", "secrets", "", "kubeloop", False),
        (PIPELINE_SA, "list", "pods", "", "kubeloop", False),
        (PIPELINE_SA, "get", "secrets", "", "default", False),
        (PIPELINE_SA, "get", "secrets", "", "kubeloop-storage", False),
        (PIPELINE_SA, "create", "pods", "", "kubeloop-storage", False),
        (PIPELINE_SA, "create", "jobs", "batch", "kubeloop-storage", False),
        (PIPELINE_SA, "create", "inferenceservices", "serving.kserve.io", "kubeloop-storage", False),
        (PIPELINE_SA, "list", "namespaces", "", None, False),
        (PIPELINE_SA, "create", "clusterrolebindings", "rbac.authorization.k8s.io", None, False),
        # In its own namespace it has what every KFP run has, from KFP's Role.
        (PIPELINE_SA, "get", "secrets", "", "kubeflow", True),
        (PIPELINE_SA, "create", "workflowtaskresults", "argoproj.io", "kubeflow", True),
        (PREDICTOR_SA, "get", "secrets", "", "kubeloop", False),
        (PREDICTOR_SA, "get", "inferenceservices", "serving.kserve.io", "kubeloop", False),
        (PREDICTOR_SA, "get", "configmaps", "", "kubeloop", False),
        (PREDICTOR_SA, "get", "secrets", "", "kubeloop-storage", False),
    ],
)
def test_can_i(rendered, user, verb, resource, group, namespace, allowed) -> None:
    for objs in rendered.values():
        assert can_i(objs, user, verb, resource, namespace, group, external_roles=KFP_RUNNER) is allowed


def test_can_i_sees_a_cluster_wide_grant() -> None:
    # The evaluator itself must be able to say yes to a cluster-wide grant, or the
    # table above proves nothing.
    objs = [
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "r"},
         "subjects": [{"kind": "ServiceAccount", "name": "kubeloop-pipeline", "namespace": "kubeflow"}]},
    ]
    assert can_i(objs, PIPELINE_SA, "get", "secrets", "kubeloop")
    assert can_i(objs, PIPELINE_SA, "get", "secrets", None)
    assert not can_i(objs, PIPELINE_SA, "list", "secrets", "kubeloop")


# --- the image ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_image_tag_is_the_package_version(overlay: str) -> None:
    k = yaml.safe_load((MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text())
    (image,) = k["images"]
    assert image["name"] == "ghcr.io/kubeloop/kubeloop"
    assert f"{image['newName']}:{image['newTag']}" == f"{OVERLAY_IMAGES[overlay]}:{VERSION}"


def test_default_image_is_the_package_version() -> None:
    from kubeloop.config import DEFAULT_IMAGE

    assert DEFAULT_IMAGE.rsplit(":", 1)[1] == VERSION
    base_runtime = yaml.safe_load((MANIFESTS / "base" / "servingruntime.yaml").read_text())
    assert base_runtime["spec"]["containers"][0]["image"] == DEFAULT_IMAGE


def test_compiled_pipeline_references_the_configured_image(tmp_path: Path) -> None:
    from kubeloop.cli import main

    image = f"kind.local/kubeloop:{VERSION}"
    out = tmp_path / "training.yaml"
    assert main(["compile", "--image", image, "--output", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {image}
    assert len(spec["deploymentSpec"]["executors"]) >= 10


# --- Dockerfile (read statically: no Docker engine is needed) -------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr in _dockerfile():
        if instr[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


def _base_image(from_args: str) -> str:
    """The image a FROM names, with the global ARG defaults (before the first FROM) filled in."""
    defaults = {}
    for instr, args in _dockerfile():
        if instr == "FROM":
            break
        if instr == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults[name] = value
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], from_args.split()[0])


def test_dockerfile_is_multi_stage_with_pinned_bases() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        base = _base_image(stage[0][1])
        assert ":" in base and not base.endswith(":latest"), base
    assert "slim" in _base_image(stages[-1][0][1])
    # Both stages share one base, so the venv's interpreter path holds in the final one.
    assert _base_image(stages[0][0][1]) == _base_image(stages[-1][0][1])


def test_dockerfile_installs_from_the_lock_with_hashes_then_the_package_without_deps() -> None:
    runs = " ".join(args for instr, args in _stages()[0] if instr == "RUN")
    assert re.search(r"pip install [^;&]*--require-hashes[^;&]*-r requirements/lock\.txt", runs) or re.search(
        r"pip install [^;&]*-r requirements/lock\.txt[^;&]*--require-hashes", runs)
    lock_install = re.search(r"pip install ([^;&]*requirements/lock\.txt[^;&]*)", runs).group(1)
    assert "--no-deps" in lock_install
    assert re.search(r"pip install [^;&]*--no-deps[^;&]* \.(\s|$)", runs), "the package itself, with --no-deps"


def test_dockerfile_final_stage_runs_as_a_numeric_non_root_user_without_build_tools() -> None:
    final = _stages()[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    # The user in the image is the one the ServingRuntime asks for.
    runtime = yaml.safe_load((MANIFESTS / "base" / "servingruntime.yaml").read_text())
    assert int(users[-1].split(":")[0]) == runtime["spec"]["containers"][0]["securityContext"]["runAsUser"]
    final_text = " ".join(args for _, args in final)
    for tool in ("build-essential", "gcc", "apt-get install", "pip install"):
        assert tool not in final_text, tool
    copies = [args for instr, args in final if instr == "COPY"]
    assert any("--from=" in c for c in copies), "the venv comes from the builder stage"


def test_dockerfile_bakes_in_the_code_version() -> None:
    final = _stages()[-1]
    assert ("ARG", "KUBELOOP_CODE_VERSION") in final or any(
        i == "ARG" and a.startswith("KUBELOOP_CODE_VERSION") for i, a in final)
    assert any(i == "ENV" and "KUBELOOP_CODE_VERSION=${KUBELOOP_CODE_VERSION}" in a for i, a in final)


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    lines = set((REPO / ".dockerignore").read_text().split())
    for entry in (".git", ".venv", "manifests/base/s3.env", "dist"):
        assert entry in lines or f"/{entry}" in lines or f"**/{entry}" in lines, entry


def test_makefile_image_targets_have_help_and_use_the_package_version() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("image", "kind-up", "kind-load", "minikube-up", "minikube-load", "manifests", "s3-env"):
        assert re.search(rf"^{target}:.*## \S", makefile, re.M), target
    assert "git describe --always --dirty" in makefile
    assert "--build-arg KUBELOOP_CODE_VERSION=" in makefile


def test_example_config_trains_the_example_inference_service(example) -> None:
    from kubeloop.config import load_config

    cfg = load_config(MANIFESTS / "examples" / "churn-config.yaml")
    isvc = _one(example, "InferenceService", cfg.model_name)
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith(f"{cfg.registry}/{cfg.model_name}/versions/")
    assert cfg.storage.endpoint_url == "http://minio.kubeloop-storage.svc:9000"
    # The Secret the steps read exists where KFP runs them.
    assert cfg.storage.credentials_secret == "kubeloop-s3-pipeline"
    # Logs by default: what the pipeline's deploy and `kubeloop deploy` build from
    # this config writes prediction logs where the example InferenceService does.
    from kubeloop.deploy.inferenceservice import (
        Target,
        build_inference_service,
        settings_from_config,
    )

    example_env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert cfg.prediction_log_root() == example_env["KUBELOOP_LOG_URI"] == "s3://logs/predictions"
    built = build_inference_service(Target(cfg.model_name, "v2", f"{cfg.registry}/churn/versions/v2/model/"),
                                    settings_from_config(cfg))
    env = {e["name"]: e for e in built["spec"]["predictor"]["model"]["env"]}
    assert env["KUBELOOP_LOG_URI"]["value"] == cfg.prediction_log_root()
    assert env["AWS_ENDPOINT_URL"]["value"] == cfg.storage.endpoint_url
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == cfg.canary.credentials_secret


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


def test_runbook_patches_keep_the_inference_service_valid(example) -> None:
    import json

    readme = (REPO / "README.md").read_text()
    # The canary's start time is the shell's: `'$(date -u +%FT%TZ)'` splices it into the JSON.
    found = re.findall(r"patch inferenceservice churn --type merge -p '(\{.*?\})'\n", readme, re.S)
    patches = [json.loads(m.replace("'$(date -u +%FT%TZ)'", "2026-12-01T08:00:00Z")) for m in found]
    assert len(patches) == 3  # canary, promote, roll back
    isvc = _one(example, "InferenceService", "churn")
    traffic = []
    for patch in patches:
        patched = _merge_patch(isvc, patch)
        assert unknown_fields(patched, "V1beta1InferenceService") == []
        traffic.append(patched["spec"]["predictor"].get("canaryTrafficPercent"))
        isvc = patched if len(traffic) == 1 else isvc  # promote and rollback both start from the canary
        if "model" in patch["spec"]["predictor"]:
            uri = patched["spec"]["predictor"]["model"]["storageUri"]
            assert re.fullmatch(r"s3://models/registry/churn/versions/v\d+/model/", uri), uri
    assert traffic == [10, None, 0]
    # promote and rollback move traffic only: KServe copies annotations and labels into revisions
    assert all(set(p) == {"spec"} and set(p["spec"]["predictor"]) == {"canaryTrafficPercent"} for p in patches[1:])
    from kubeloop.deploy.patches import read_state

    assert read_state(_merge_patch(isvc, patches[0])).canary_since == "2026-12-01T08:00:00Z"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_documented_target() -> None:
    makefile = (REPO / "Makefile").read_text()
    documented = re.findall(r"^([A-Za-z0-9_-]+):.*## \S", makefile, re.M)
    shown = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True, check=True,
                           timeout=60).stdout
    assert "s3-env" in documented
    for target in documented:
        assert f"make {target} " in shown, f"make help does not list {target}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_s3_env_writes_random_keys_once(tmp_path: Path) -> None:
    from tests.cluster_support import parse_env_file

    base = tmp_path / "manifests" / "base"
    base.mkdir(parents=True)
    targets = {who: base / env_file(who) for who in S3_IDENTITIES}

    def make() -> None:
        subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(tmp_path), "s3-env"],
                       check=True, capture_output=True, timeout=60)

    make()
    first = {who: t.read_text() for who, t in targets.items()}
    keys = {who: parse_env_file(t) for who, t in targets.items()}
    for who, pair in keys.items():
        assert set(pair) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        # MinIO's minimums for a user (and the root user) and its secret.
        assert len(pair["AWS_ACCESS_KEY_ID"]) >= 3 and len(pair["AWS_SECRET_ACCESS_KEY"]) >= 20
        assert targets[who].stat().st_mode & 0o077 == 0, "readable by its owner only"
    # Three identities, three users: no key id or secret is shared.
    for field in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert len({pair[field] for pair in keys.values()}) == len(S3_IDENTITIES)
    make()
    assert {who: t.read_text() for who, t in targets.items()} == first, "an existing key file is never overwritten"
    targets["predictor"].unlink()
    make()
    assert parse_env_file(targets["predictor"])["AWS_SECRET_ACCESS_KEY"] != keys["predictor"]["AWS_SECRET_ACCESS_KEY"]
    assert targets["root"].read_text() == first["root"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_s3_env_keeps_an_earlier_single_key_file_as_the_root_keys(tmp_path: Path) -> None:
    from tests.cluster_support import parse_env_file

    base = tmp_path / "manifests" / "base"
    base.mkdir(parents=True)
    (base / "s3.env").write_text("AWS_ACCESS_KEY_ID=old-root\nAWS_SECRET_ACCESS_KEY=old-root-secret-123456789\n")
    subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(tmp_path), "s3-env"],
                   check=True, capture_output=True, timeout=60)
    # MinIO keeps the root user it was started with; the two new users get new keys.
    assert parse_env_file(base / env_file("root"))["AWS_ACCESS_KEY_ID"] == "old-root"
    assert (base / env_file("root")).stat().st_mode & 0o077 == 0
    for who in ("pipeline", "predictor"):
        assert parse_env_file(base / env_file(who))["AWS_ACCESS_KEY_ID"].startswith(f"kubeloop-{who}-")


def test_runbook_installs_the_kserve_release_of_the_pinned_sdk_and_uses_real_targets() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## On a cluster"):readme.index("## Benchmarks")]
    (kserve_install,) = re.findall(r"install/(v[\d.]+)/kserve-knative-mode-full-install", section)
    assert kserve_install == f"v{package_version('kserve')}"
    makefile = (REPO / "Makefile").read_text()
    commands = re.findall(r"^make ([^#\n]+)", section, re.M) + re.findall(r"`make ([^`]+)`", section)
    targets = {word for cmd in commands for word in cmd.split() if "=" not in word and not word.startswith("-")}
    assert {"kind-up", "kind-load", "image", "minikube-up", "minikube-load", "s3-env"} <= targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), f"the runbook runs `make {target}`, which does not exist"
    for overlay in OVERLAYS:
        assert f"manifests/overlays/{overlay}" in section
        assert f"{OVERLAY_IMAGES[overlay]}:{VERSION}" in section


def test_runbook_request_sends_exactly_the_features_the_example_model_takes() -> None:
    import json

    from kubeloop.components.validate import infer_schema
    from kubeloop.config import load_config
    from kubeloop.datagen import make_churn
    from kubeloop.schema import feature_columns

    readme = (REPO / "README.md").read_text()
    body = re.search(r"cat > request.json <<'JSON'\n(.*?)\nJSON", readme, re.S).group(1)
    (row,) = json.loads(body)["instances"]
    cfg = load_config(MANIFESTS / "examples" / "churn-config.yaml")
    # The data `make cluster-data` uploads, described as the validate step does.
    schema = infer_schema(make_churn(2000, seed=7, start="2024-07-01"), target=cfg.target,
                          time_column=cfg.time_column, cfg=cfg.validation)
    assert list(row) == feature_columns(schema)
