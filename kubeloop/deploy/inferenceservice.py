"""Pure builders of the KServe ``InferenceService`` (serving.kserve.io/v1beta1) of a model.

Nothing here talks to a cluster: every function takes plain values and returns
plain dicts (the JSON the API server receives), so the exact object can be
printed by ``--dry-run``, compared in tests against the KServe SDK's own models,
and applied by the thin layer in ``kube.py``.

The object follows the project's contracts: the InferenceService is named after
the registry model, the predictor runs the ``kubeloop`` ServingRuntime with the
``kubeloop`` model format, ``storageUri`` is a registry version's ``model/``
folder, and the predictor's settings (prediction-log root, shadow version, S3
endpoint) travel as environment variables.

Two rollout mechanisms, one per KServe deployment mode:

- ``serverless`` (Knative): one predictor; a new ``storageUri`` makes a new
  revision and ``spec.predictor.canaryTrafficPercent`` sends that share to it,
  the rest to the last revision rolled out at 100 %. Promote: remove the field;
  roll back: 0 (traffic pinned to the previous revision).
- ``standard`` (plain Deployments): the primary stays in ``spec.predictor`` and
  the new version is an entry of the ``spec.canary`` list (KServe >= 0.20) with
  its own ``trafficPercent`` and a named predictor. Promote: the canary's
  predictor (with its name) becomes ``spec.predictor`` and the entry goes; roll
  back: the entry goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kubeloop.errors import UserError

if TYPE_CHECKING:
    from kubeloop.config import Config

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"

RUNTIME = "kubeloop"
MODEL_FORMAT = "kubeloop"

# Labels and annotations (contract "Cluster names").
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MODEL = "kubeloop.dev/model"
LABEL_VERSION = "kubeloop.dev/version"
ANN_PRIMARY = "kubeloop.dev/primary-version"
ANN_CANARY = "kubeloop.dev/canary-version"
# When the deploy put the canary in place (UTC, ISO 8601): the start of the
# canary's own analysis window. Written only together with the canary's new
# storageUri, which makes a new revision (or Deployment) anyway, so recording it
# never rolls pods of its own.
ANN_CANARY_SINCE = "kubeloop.dev/canary-since"
ANN_TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
ANN_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
# KServe >= 0.15 names the modes Knative and Standard (Serverless and
# RawDeployment are accepted as deprecated aliases). The annotation is always
# set: the cluster-wide default mode is Standard in recent releases.
DEPLOYMENT_MODES = {"serverless": "Knative", "standard": "Standard"}

Mode = Literal["serverless", "standard"]

# RFC 1035 label: what KServe requires of an InferenceService name (it becomes
# part of Service and host names).
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_VERSION_IN_URI = re.compile(r"/versions/(v[1-9][0-9]*)/")
_VERSION = re.compile(r"v[1-9][0-9]*")


def check_name(name: str) -> str:
    """The model name as an InferenceService name: a DNS-1035 label."""
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035.fullmatch(name):
        raise UserError(
            f"model name {name!r} cannot name an InferenceService: it must be a DNS-1035 label "
            "(lowercase letters, digits and '-', starting with a letter, ending with a letter "
            "or digit, at most 63 characters)"
        )
    return name


def check_percent(value: Any, what: str = "canary traffic percent") -> int:
    """A traffic share: a whole number from 0 to 100.

    The CRD types it as an integer without bounds; KServe's webhook bounds it
    only on admission. Refusing it here means nothing half-valid reaches the cluster.
    """
    if isinstance(value, bool):
        raise UserError(f"{what} must be a whole number from 0 to 100, got {value!r}")
    if isinstance(value, str):
        text = value.strip().rstrip("%")
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise UserError(f"{what} must be a whole number from 0 to 100, got {value!r}")
        value = int(text)
    if isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"{what} must be a whole number from 0 to 100, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise UserError(f"{what} must be a whole number from 0 to 100, got {value!r}")
    if not 0 <= value <= 100:
        raise UserError(f"{what} must be between 0 and 100, got {value}")
    return value


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise UserError(f"version {version!r} must look like v1, v2, ...")
    return version


def version_of_uri(uri: str) -> str | None:
    """The registry version a storage URI points at (``.../versions/vN/model/``)."""
    m = _VERSION_IN_URI.search(uri if uri.endswith("/") else uri + "/")
    return m.group(1) if m else None


@dataclass(frozen=True)
class Target:
    """One registry version to serve."""

    model: str
    version: str
    storage_uri: str

    def __post_init__(self) -> None:
        check_name(self.model)
        check_version(self.version)
        if not self.storage_uri or "://" not in self.storage_uri:
            raise UserError(
                f"{self.model} {self.version}: storage URI {self.storage_uri!r} is a local path the "
                "cluster cannot fetch; deploy from a registry in S3/MinIO (--registry s3://bucket/prefix)"
            )
        if not self.storage_uri.endswith("/"):
            # KServe's storage initializer copies by prefix: without the slash
            # .../model would also fetch .../model_card.md.
            raise UserError(
                f"{self.model} {self.version}: storage URI {self.storage_uri!r} must end with '/' "
                "(KServe fetches by prefix)"
            )


@dataclass(frozen=True)
class ServingSettings:
    """Everything about the InferenceService that is not the model version."""

    namespace: str = "kubeloop"
    service_account: str = "kubeloop-predictor"
    mode: Mode = "serverless"
    tag_routing: bool = False
    min_replicas: int | None = 1
    max_replicas: int | None = None
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})
    limits: dict[str, str] = field(default_factory=lambda: {"memory": "2Gi"})
    log_uri: str | None = None
    shadow_uri: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # The Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY the predictor
    # needs to write logs to (or read a shadow model from) S3: the predictor's
    # own keys (canary.credentials_secret), never the pipeline's.
    credentials_secret: str | None = "kubeloop-s3-predictor"

    def __post_init__(self) -> None:
        if self.mode not in DEPLOYMENT_MODES:
            raise UserError(f"deployment mode {self.mode!r} must be one of {sorted(DEPLOYMENT_MODES)}")
        if not _DNS1123_LABEL.fullmatch(self.namespace or ""):
            raise UserError(f"namespace {self.namespace!r} is not a valid Kubernetes namespace name")
        if self.tag_routing and self.mode != "serverless":
            raise UserError(
                "tag routing (serving.kserve.io/enable-tag-routing) needs Knative revisions: "
                "it works only in serverless mode"
            )
        lo, hi = self.min_replicas, self.max_replicas
        if lo is not None and lo < 0 or hi is not None and hi < 1:
            raise UserError(f"replicas: min {lo} must be >= 0 and max {hi} >= 1")
        if lo is not None and hi is not None and lo > hi:
            raise UserError(f"replicas: min {lo} is greater than max {hi}")


_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def settings_from_config(cfg: Config, **overrides: Any) -> ServingSettings:
    """ServingSettings from the ``canary:`` and ``storage:`` sections; ``overrides``
    (non-None) win, e.g. ``namespace`` from ``-n``.

    The prediction-log root is ``Config.prediction_log_root``: a ``log_uri``
    override, else ``canary.log_uri``, else the storage's logs bucket; "off" is
    none. The S3 endpoint is ``storage.endpoint_url`` as the configuration gives
    it, the one pods use: the caller passes the cluster's endpoint, never the one
    this machine reaches storage through (``--s3-endpoint``, ``AWS_ENDPOINT_URL``).
    """
    c = cfg.canary
    log_uri = cfg.prediction_log_root(overrides.pop("log_uri", None))
    requests = {k: v for k, v in (("cpu", c.cpu_request), ("memory", c.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", c.cpu_limit), ("memory", c.memory_limit)) if v}
    values: dict[str, Any] = dict(
        namespace=c.namespace,
        service_account=c.service_account,
        mode=c.mode,
        tag_routing=c.tag_routing,
        min_replicas=c.min_replicas,
        max_replicas=c.max_replicas,
        requests=requests,
        limits=limits,
        log_uri=log_uri,
        s3_endpoint=cfg.storage.endpoint_url,
        s3_region=cfg.storage.region,
        credentials_secret=c.credentials_secret,
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServingSettings(**values)


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1, 0.0.0.0): a
    port-forward's address. In a pod it would mean the pod itself, never storage, so
    no such endpoint goes into an object sent to the cluster; the ServingRuntime's
    own ``AWS_ENDPOINT_URL`` (manifests/base/servingruntime.yaml) applies instead."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url if "://" in url else f"//{url}").hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


# --------------------------------------------------------------------------- pieces


def _env(settings: ServingSettings, role: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if settings.log_uri:
        env.append({"name": "KUBELOOP_LOG_URI", "value": settings.log_uri})
    if settings.shadow_uri:
        env.append({"name": "KUBELOOP_SHADOW_URI", "value": settings.shadow_uri})
    if role:
        env.append({"name": "KUBELOOP_ROLE", "value": role})
    uses_s3 = any(u and u.lower().startswith("s3://") for u in (settings.log_uri, settings.shadow_uri))
    if uses_s3:
        if settings.s3_endpoint and not is_loopback(settings.s3_endpoint):
            env.append({"name": "AWS_ENDPOINT_URL", "value": settings.s3_endpoint})
        if settings.s3_region:
            env.append({"name": "AWS_REGION", "value": settings.s3_region})
        if settings.credentials_secret:
            # The keys come from the Secret at run time; they never appear in the object.
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                env.append({
                    "name": key,
                    "valueFrom": {"secretKeyRef": {"name": settings.credentials_secret, "key": key}},
                })
    return env


def _model(target: Target, settings: ServingSettings, role: str | None) -> dict[str, Any]:
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": RUNTIME,
        "storageUri": target.storage_uri,
    }
    env = _env(settings, role)
    if env:
        model["env"] = env
    resources = {k: dict(v) for k, v in (("requests", settings.requests), ("limits", settings.limits)) if v}
    if resources:
        model["resources"] = resources
    return model


def predictor(target: Target, settings: ServingSettings, *, role: str | None = None,
              name: str | None = None, canary: bool = False,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``PredictorSpec`` serving ``target`` on the project's runtime.

    ``canary``: an entry of Standard mode's ``spec.canary``. KServe's webhook
    refuses maxReplicas, scaleTarget, scaleMetric and autoScaling there, and a
    minReplicas above the stable predictor's (validateCanarySpecs in
    kserve/kserve pkg/apis/serving/v1beta1/inference_service_validation.go):
    the canary runs a fixed replica count derived from its share.
    """
    spec: dict[str, Any] = {}
    if name:
        spec["name"] = name
    spec["serviceAccountName"] = settings.service_account
    if settings.min_replicas is not None:
        spec["minReplicas"] = settings.min_replicas
    if settings.max_replicas is not None and not canary:
        spec["maxReplicas"] = settings.max_replicas
    if annotations:
        spec["annotations"] = dict(annotations)
    # Pod labels: each revision's pods say which registry version they serve.
    spec["labels"] = {LABEL_MODEL: target.model, LABEL_VERSION: target.version}
    spec["model"] = _model(target, settings, role)
    return spec


def labels(model: str) -> dict[str, str]:
    """The InferenceService's own labels: the same for every version, since
    KServe copies them into every revision and pod (the version is a label of
    each predictor's pods instead)."""
    return {LABEL_PART_OF: "kubeloop", LABEL_MODEL: model}


# --------------------------------------------------------------------------- object


def build_inference_service(
    target: Target,
    settings: ServingSettings,
    *,
    primary: Target | None = None,
    canary_percent: int | None = None,
    canary_since: str | None = None,
) -> dict[str, Any]:
    """The whole InferenceService that serves ``target``.

    With no ``primary`` (first deployment), or a primary of the same version, or
    ``canary_percent`` 100, ``target`` takes all traffic and there is no canary.
    Otherwise ``target`` is a canary beside ``primary`` with ``canary_percent``
    of the traffic (0 is a blue-green launch: deployed, reachable by its tag URL
    with tag routing, and taking no traffic until promoted). ``canary_since``
    (UTC ISO 8601) records when the canary went in, next to the canary's own
    fields.

    Serverless mode records the versions in annotations (a Knative spec names
    only the latest one); Standard mode's spec names both, and it sets no
    annotation that changes between versions, because KServe copies the
    InferenceService's annotations into the primary's pods as well.
    """
    if primary is not None and primary.model != target.model:
        raise UserError(f"primary {primary.model} and canary {target.model} are different models")
    percent = None if canary_percent is None else check_percent(canary_percent)
    is_canary = primary is not None and primary.version != target.version and percent != 100
    if is_canary and percent is None:
        raise UserError(
            f"{target.model}: {primary.version} is serving; give the share of traffic for "
            f"{target.version} as a canary (--canary-percent 0..100)"
        )

    annotations = {ANN_DEPLOYMENT_MODE: DEPLOYMENT_MODES[settings.mode]}
    if settings.tag_routing:
        annotations[ANN_TAG_ROUTING] = "true"
    if settings.mode == "serverless":
        if is_canary:
            annotations[ANN_PRIMARY] = primary.version
            annotations[ANN_CANARY] = target.version
            if canary_since:
                annotations[ANN_CANARY_SINCE] = canary_since
        else:
            annotations[ANN_PRIMARY] = target.version

    spec: dict[str, Any]
    if settings.mode == "serverless":
        pred = predictor(target, settings)
        if is_canary:
            pred = {"canaryTrafficPercent": percent, **pred}
        spec = {"predictor": pred}
    else:
        # Standard mode names every predictor after its version, so a promotion
        # (the canary's named predictor becoming spec.predictor) reuses the
        # canary's Deployment ({isvc}-{name}-predictor) without restarting it.
        if is_canary:
            spec = {
                "predictor": predictor(primary, settings, name=primary.version),
                "canary": [{
                    "trafficPercent": percent,
                    # No role variable: the logs tell versions apart by their
                    # version column, and a promotion moves this predictor into
                    # spec.predictor as it is, so its pods keep running.
                    "predictor": predictor(target, settings, name=target.version, canary=True,
                                           annotations={ANN_CANARY_SINCE: canary_since} if canary_since else None),
                }],
            }
        else:
            spec = {"predictor": predictor(target, settings, name=target.version)}

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": target.model,
            "namespace": settings.namespace,
            "labels": labels(target.model),
            "annotations": annotations,
        },
        "spec": spec,
    }
