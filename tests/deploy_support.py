"""Test support for the deploy and canary tests.

``unknown_fields`` and ``to_model`` check an object against the KServe SDK's
own generated models (and the Kubernetes client's, for the core types they
embed): every key must be an attribute the model declares, and constructing the
models runs their client-side validation (required fields, enums).
"""

from __future__ import annotations

import re
from typing import Any

import kserve.models as kserve_models
import kubernetes.client.models as k8s_models
from kubernetes.client import ApiClient

_PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object,
               "datetime": str, "date": str}


def model_class(name: str) -> Any:
    for module in (kserve_models, k8s_models):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(f"no model class {name} in kserve or kubernetes")


# The Knative types KServe's status embeds, which its Python SDK names but does
# not define (knative/serving pkg/apis/serving/v1/route_types.go TrafficTarget;
# knative.dev/pkg apis.Condition, duck/v1 Addressable, apis.URL).
_KNATIVE = {
    "KnativeDevServingPkgApisServingV1TrafficTarget": {
        "tag": "str", "revisionName": "str", "configurationName": "str", "latestRevision": "bool",
        "percent": "int", "url": "str"},
    "KnativeCondition": {"type": "str", "status": "str", "severity": "str", "lastTransitionTime": "str",
                         "reason": "str", "message": "str"},
    "KnativeAddressable": {"name": "str", "url": "str", "CACerts": "str", "audience": "str"},
}


def unknown_fields(data: Any, type_name: str, path: str = "") -> list[str]:
    """Paths in ``data`` that ``type_name`` (an SDK type string) does not declare,
    and values of the wrong primitive type."""
    problems: list[str] = []
    if data is None:
        return problems
    if type_name == "KnativeURL":
        type_name = "str"
    if type_name in _KNATIVE:
        if not isinstance(data, dict):
            return [f"{path}: expected an object ({type_name}), got {data!r}"]
        for key, value in data.items():
            if key not in _KNATIVE[type_name]:
                problems.append(f"{path}.{key}: not a field of {type_name}")
            else:
                problems += unknown_fields(value, _KNATIVE[type_name][key], f"{path}.{key}")
        return problems
    m = re.fullmatch(r"list\[(.*)\]", type_name)
    if m:
        if not isinstance(data, list):
            return [f"{path}: expected a list, got {type(data).__name__}"]
        for i, item in enumerate(data):
            problems += unknown_fields(item, m.group(1), f"{path}[{i}]")
        return problems
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name)
    if m:
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping, got {type(data).__name__}"]
        for k, v in data.items():
            problems += unknown_fields(v, m.group(2), f"{path}.{k}")
        return problems
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        if expected is not object and (not isinstance(data, expected) or
                                       (type_name == "int" and isinstance(data, bool))):
            problems.append(f"{path}: expected {type_name}, got {data!r}")
        return problems
    cls = model_class(type_name)
    if not isinstance(data, dict):
        return [f"{path}: expected an object ({type_name}), got {data!r}"]
    json_to_attr = {v: k for k, v in cls.attribute_map.items()}
    for key, value in data.items():
        if key not in json_to_attr:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        problems += unknown_fields(value, cls.openapi_types[json_to_attr[key]], f"{path}.{key}")
    return problems


def to_model(data: Any, type_name: str) -> Any:
    """Construct the SDK model objects for ``data`` (runs their validation)."""
    if data is None:
        return None
    m = re.fullmatch(r"list\[(.*)\]", type_name)
    if m:
        return [to_model(x, m.group(1)) for x in data]
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name)
    if m:
        return {k: to_model(v, m.group(2)) for k, v in data.items()}
    if type_name in _PRIMITIVES:
        return data
    cls = model_class(type_name)
    json_to_attr = {v: k for k, v in cls.attribute_map.items()}
    # Keys the model does not declare are dropped, as a generated client drops them.
    kwargs = {json_to_attr[k]: to_model(v, cls.openapi_types[json_to_attr[k]])
              for k, v in data.items() if k in json_to_attr}
    return cls(**kwargs)


def roundtrip(data: dict[str, Any], type_name: str = "V1beta1InferenceService") -> Any:
    """``data`` through the SDK models and back to JSON: equal to ``data`` only if
    every field is known and kept."""
    back = ApiClient().sanitize_for_serialization(to_model(data, type_name))
    return _without_added_blanks(back, data)


def _without_added_blanks(back: Any, original: Any) -> Any:
    # Container-based models default ``name`` to "" when it is not given; that
    # is the generated constructor's filler, not a field the object carried.
    if isinstance(back, dict) and isinstance(original, dict):
        return {k: _without_added_blanks(v, original.get(k)) for k, v in back.items()
                if not (v == "" and k not in original)}
    if isinstance(back, list) and isinstance(original, list):
        return [_without_added_blanks(b, o) for b, o in zip(back, original, strict=False)] + back[len(original):]
    return back


def check_isvc(obj: dict[str, Any]) -> None:
    problems = unknown_fields(obj, "V1beta1InferenceService")
    assert not problems, problems
    assert roundtrip(obj) == obj


# --------------------------------------------------------------------------- fake API server

import copy  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

from kubeloop.deploy.patches import apply_merge_patch  # noqa: E402

ISVC_PATH = re.compile(
    r"/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/]+))?"
)
TOKEN = "kubeloop-test-token"
WEBHOOK = 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request'


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeKubeAPI:
    """A loopback HTTP server answering like the Kubernetes API server for the
    InferenceService paths kubeloop uses: GET, POST (create) and PATCH with
    application/merge-patch+json, bearer-token auth, resourceVersion
    preconditions (409), strict field validation against the KServe SDK's
    schema (400), KServe's webhook rules (403), managedFields naming each
    writer, and a KServe controller behind it (``KServeController``) that
    answers with KServe's status shapes: the status stays as it was until the
    controller has seen a change (``reconcile_after`` reads), new revisions or
    Deployments come up ``ready_after`` reads later, and every status write
    moves the resourceVersion, as on a real cluster."""

    ready_after: int = 1
    reconcile_after: int = 1
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # (status, Status body) answers to give to the next requests, in order.
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # Objects whose status never turns Ready, and those that report a failure.
    never_ready: set[str] = field(default_factory=set)
    fail_revision: set[str] = field(default_factory=set)
    # Called with each request before it is answered (to change state in between).
    hook: Any = None
    _rv: int = 100
    controllers: dict[tuple[str, str], Any] = field(default_factory=dict)

    def start(self) -> FakeKubeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                req = Request(self.command, url.path, urllib.parse.parse_qs(url.query),
                              {k.lower(): v for k, v in self.headers.items()}, body)
                with api._lock:
                    api.requests.append(req)
                    status, answer = api._route(req)
                self._answer(status, answer)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, path: Path, *, token: str = TOKEN) -> Path:
        """A kubeconfig with two contexts: ``fake`` (current, good token) and
        ``wrong-token``."""
        import yaml

        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "good", "user": {"token": token}},
                      {"name": "bad", "user": {"token": "not-the-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "good"}},
                         {"name": "wrong-token", "context": {"cluster": "fake", "user": "bad"}}],
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    # -- the API --------------------------------------------------------------------

    @staticmethod
    def status(code: int, reason: str, message: str, **details: Any) -> tuple[int, dict[str, Any]]:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                "reason": reason, "message": message}
        if details:
            body["details"] = details
        return code, body

    def _route(self, req: Request) -> tuple[int, dict[str, Any]]:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.status(401, "Unauthorized", "Unauthorized")
        if self.hook is not None:
            self.hook(self, req)
        if self.fail_next:
            return self.fail_next.pop(0)
        m = ISVC_PATH.fullmatch(req.path)
        if not m:
            return self.status(404, "NotFound", "the server could not find the requested resource")
        ns, name = m.group("ns"), m.group("name")
        if req.method == "GET" and name:
            return self._get(ns, name)
        if req.method == "POST" and not name:
            return self._create(ns, req)
        if req.method == "PATCH" and name:
            return self._patch(ns, name, req)
        return self.status(405, "MethodNotAllowed", f"{req.method} is not supported here")

    def _not_found(self, name: str) -> tuple[int, dict[str, Any]]:
        return self.status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found',
                           name=name, group="serving.kserve.io", kind="inferenceservices")

    def _get(self, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        obj = self.objects.get((ns, name))
        if obj is None:
            return self._not_found(name)
        ctl = self.controllers[(ns, name)]
        if ctl.tick(obj, never_ready=name in self.never_ready, failing=name in self.fail_revision):
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
        return 200, obj

    def _validate(self, obj: dict[str, Any], req: Request) -> tuple[int, dict[str, Any]] | None:
        if req.query.get("fieldValidation") == ["Strict"]:
            spec_only = {k: v for k, v in obj.items() if k != "status"}
            spec_only["metadata"] = {k: v for k, v in obj.get("metadata", {}).items()
                                     if k in ("name", "namespace", "labels", "annotations",
                                              "resourceVersion", "generation", "uid")}
            problems = unknown_fields(spec_only, "V1beta1InferenceService")
            if problems:
                return self.status(400, "BadRequest", "strict decoding error: " + ", ".join(
                    f'unknown field "{p.split(":")[0].lstrip(".")}"' for p in problems))
        problem = webhook_problem(obj)
        if problem:
            return self.status(403, "Forbidden", f"{WEBHOOK}: {problem}")
        return None

    def _create(self, ns: str, req: Request) -> tuple[int, dict[str, Any]]:
        obj = copy.deepcopy(req.body)
        name = obj["metadata"]["name"]
        if (ns, name) in self.objects:
            return self.status(409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists',
                               name=name)
        bad = self._validate(obj, req)
        if bad:
            return bad
        self._rv += 1
        obj["metadata"].update(resourceVersion=str(self._rv), generation=1, uid=f"uid-{name}")
        _manage(obj, req)
        if req.query.get("dryRun") == ["All"]:
            return 201, obj
        self.objects[(ns, name)] = obj
        self.controllers[(ns, name)] = KServeController(
            name, ns, ready_after=self.ready_after, reconcile_after=self.reconcile_after)
        self.controllers[(ns, name)].written()
        return 201, obj

    def _patch(self, ns: str, name: str, req: Request) -> tuple[int, dict[str, Any]]:
        if req.headers.get("content-type") != "application/merge-patch+json":
            return self.status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/merge-patch+json; got {req.headers.get('content-type')}")
        cur = self.objects.get((ns, name))
        if cur is None:
            return self._not_found(name)
        want_rv = ((req.body or {}).get("metadata") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != cur["metadata"]["resourceVersion"]:
            return self.status(409, "Conflict", f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io "{name}": the object has been modified; please apply your changes to the latest version and try again', name=name)
        new = apply_merge_patch(cur, req.body)
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        bad = self._validate(new, req)
        if bad:
            return bad
        if new == cur:
            return 200, cur  # nothing changed: same resourceVersion, as the API server does
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        if new.get("spec") != cur.get("spec"):
            new["metadata"]["generation"] = cur["metadata"]["generation"] + 1
        _manage(new, req)
        if req.query.get("dryRun") == ["All"]:
            return 200, new
        self.objects[(ns, name)] = new
        self.controllers[(ns, name)].written()
        return 200, new

    def edit(self, ns: str, name: str, patch: dict[str, Any], *, manager: str = "kubectl-patch") -> None:
        """Change the object as a person's ``kubectl patch --type merge`` would."""
        req = Request("PATCH", "", {"fieldManager": [manager]}, {"content-type": "application/merge-patch+json"},
                      patch)
        with self._lock:
            status, answer = self._patch(ns, name, req)
        assert status == 200, answer

def _manage(obj: dict[str, Any], req: Request) -> None:
    """Record the writer in managedFields, as the API server does for every update."""
    import datetime as dt

    manager = (req.query.get("fieldManager") or ["unknown"])[0]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = [e for e in obj["metadata"].get("managedFields") or [] if e.get("manager") != manager]
    entries.append({"manager": manager, "operation": "Update", "apiVersion": "serving.kserve.io/v1beta1",
                    "time": when, "fieldsType": "FieldsV1"})
    obj["metadata"]["managedFields"] = entries


def webhook_problem(obj: dict[str, Any]) -> str | None:
    """What KServe's validating webhook refuses, for the fields kubeloop sends
    (validateCanarySpecs and the canaryTrafficPercent bound in kserve/kserve
    pkg/apis/serving/v1beta1/inference_service_validation.go)."""
    spec = obj.get("spec") or {}
    pred = spec.get("predictor") or {}
    pct = pred.get("canaryTrafficPercent")
    if pct is not None and not 0 <= pct <= 100:
        return "canaryTrafficPercent must be between 0 and 100"
    canaries = spec.get("canary") or []
    if not canaries:
        return None
    mode = ((obj.get("metadata") or {}).get("annotations") or {}).get("serving.kserve.io/deploymentMode")
    if mode != "Standard":
        return "canary is only supported in Standard deployment mode"
    names: set[str] = set()
    total = 0
    for i, c in enumerate(canaries):
        cp = c.get("predictor") or {}
        cname = cp.get("name") or ""
        if not cname:
            return f"canary[{i}] predictor.name is required"
        if cname in names:
            return f'canary predictor.name "{cname}" is duplicated'
        names.add(cname)
        if cname == pred.get("name"):
            return f'canary predictor.name "{cname}" conflicts with stable predictor name'
        tp = int(c.get("trafficPercent") or 0)
        if not 0 <= tp <= 100:
            return f'canary "{cname}" trafficPercent must be between 0 and 100, got {tp}'
        total += tp
        for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if cp.get(key):
                return f'canary "{cname}" must not set {key} (canary uses fixed replicas)'
        if cp.get("minReplicas") is not None and cp["minReplicas"] > pred.get("minReplicas", 1):
            return (f'canary "{cname}" minReplicas ({cp["minReplicas"]}) must not exceed stable predictor '
                    f'minReplicas ({pred.get("minReplicas", 1)})')
    if total > 100:
        return f"sum of canary trafficPercent values ({total}) must be <= 100"
    return None


# KServe's own filter lists (pkg/constants/constants.go), as in kubeloop.deploy.patches.
_NOT_COPIED = {"autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
               "internal.serving.kserve.io/storage-initializer-sourceuri",
               "kubectl.kubernetes.io/last-applied-configuration", "modelFormat"}
_SCALING = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")


class KServeController:
    """KServe's InferenceService controller and what it drives, for one object.

    Serverless: a Knative Service with its own generation, whose revision
    template is the predictor (minus canaryTrafficPercent) plus the copied
    annotations and labels, and whose traffic follows createKnativeService
    (reconcilers/knative/ksvc_reconciler.go); the InferenceService's status is
    what PropagateStatus (pkg/apis/serving/v1beta1/inference_service_status.go)
    makes of the Knative status, observedGeneration included.
    Standard: one Deployment per predictor name, each with its own generation;
    PredictorReady, canaryStatuses and CanaryPredictorReady as
    reconcileCanaryDeployments (components/predictor.go) sets them, and
    observedGeneration copied from the stable Deployment (PropagateRawStatus).

    ``revisions`` lists every revision (Serverless) or Deployment pod template
    (Standard) ever rolled: a change that only moves traffic adds none.
    """

    def __init__(self, name: str, namespace: str, *, ready_after: int, reconcile_after: int) -> None:
        self.name, self.namespace = name, namespace
        self.ready_after, self.reconcile_after = ready_after, reconcile_after
        self.reads = 0
        self.dirty = False
        # Serverless
        self.ksvc_generation = 0
        self.template: Any = None
        self.route: Any = None
        self.revisions: list[str] = []
        self.latest_ready: str | None = None
        self.rolled_out: str | None = None
        self.previous_rolled_out: str | None = None
        # Standard: deployment name -> {"generation", "template", "replicas", "ready_at"}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.pod_templates: list[str] = []

    def written(self) -> None:
        self.dirty, self.reads = True, 0

    def tick(self, obj: dict[str, Any], *, never_ready: bool, failing: bool) -> bool:
        """One read: reconcile if due; True when the status was rewritten."""
        self.reads += 1
        if self.dirty and self.reads >= self.reconcile_after:
            self.dirty = False
            self._reconcile(obj)
            self._status(obj, never_ready=never_ready, failing=failing)
            return True
        if self.reads >= self.reconcile_after + self.ready_after and not never_ready and not failing:
            before = copy.deepcopy(obj.get("status"))
            self._come_up()
            self._status(obj, never_ready=False, failing=False)
            return obj.get("status") != before
        return False

    # -- desired state -------------------------------------------------------------

    @staticmethod
    def _copied_meta(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return {"annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED},
                "labels": dict(meta.get("labels") or {})}

    def _mode(self, obj: dict[str, Any]) -> str:
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        return "standard" if ann.get("serving.kserve.io/deploymentMode") in ("Standard", "RawDeployment") \
            else "serverless"

    def _reconcile(self, obj: dict[str, Any]) -> None:
        if self._mode(obj) == "serverless":
            pred = copy.deepcopy(obj["spec"]["predictor"])
            pct = pred.pop("canaryTrafficPercent", None)
            template = {"predictor": pred, **self._copied_meta(obj)}
            if pct is not None and self.rolled_out:
                route = [{"latestRevision": True, "percent": pct}]
                if pct < 100:
                    route.append({"revisionName": self.rolled_out, "latestRevision": False,
                                  "percent": 100 - pct, "tag": "prev"})
            else:
                route = [{"latestRevision": True, "percent": 100}]
            changed = False
            if template != self.template:
                self.template = template
                self.revisions.append(f"{self.name}-predictor-{len(self.revisions) + 1:05d}")
                self.ready_at = self.reads + self.ready_after
                changed = True
            if route != self.route:
                self.route, changed = route, True
            if changed:
                self.ksvc_generation += 1
            return
        spec = obj["spec"]
        stable = spec["predictor"]
        meta = self._copied_meta(obj)
        stable_min = stable.get("minReplicas", 1)
        wanted: dict[str, tuple[Any, int]] = {}
        ready_canary_replicas = 0
        for c in spec.get("canary") or []:
            cp = {**copy.deepcopy(stable), **copy.deepcopy(c["predictor"])}
            replicas = cp["minReplicas"] if "minReplicas" in c["predictor"] else \
                -(-stable_min * int(c.get("trafficPercent") or 0) // 100)
            dname = f"{self.name}-{cp['name']}-predictor"
            wanted[dname] = ({**{k: v for k, v in cp.items() if k not in _SCALING}, **meta}, replicas)
            if self.deployments.get(dname, {}).get("available"):
                ready_canary_replicas += replicas
        sname = f"{self.name}-{stable['name']}-predictor" if stable.get("name") else f"{self.name}-predictor"
        stable_replicas = max(stable_min - ready_canary_replicas, 1) if ready_canary_replicas else stable_min
        wanted[sname] = ({**{k: v for k, v in stable.items() if k not in _SCALING}, **meta}, stable_replicas)
        self.stable = sname
        self.canary_names = [f"{self.name}-{c['predictor']['name']}-predictor" for c in spec.get("canary") or []]
        for dname, (template, replicas) in wanted.items():
            d = self.deployments.get(dname)
            if d is None:
                d = self.deployments[dname] = {"generation": 0, "template": None, "replicas": None}
            if d["template"] != template:
                d.update(template=template, available=False, ready_at=self.reads + self.ready_after)
                self.pod_templates.append(dname)
                d["generation"] += 1
            elif d["replicas"] != replicas:
                d["generation"] += 1
            d["replicas"] = replicas
        for dname in list(self.deployments):
            if dname not in wanted:
                del self.deployments[dname]
        self.spec = copy.deepcopy(spec)

    def _come_up(self) -> None:
        if self.revisions:
            self.latest_ready = self.revisions[-1]
        for d in self.deployments.values():
            d["available"] = True

    # -- status ----------------------------------------------------------------------

    def _status(self, obj: dict[str, Any], *, never_ready: bool, failing: bool) -> None:
        if self._mode(obj) == "serverless":
            obj["status"] = self._serverless_status(never_ready=never_ready, failing=failing)
        else:
            obj["status"] = self._standard_status(failing=failing)

    def _serverless_status(self, *, never_ready: bool, failing: bool) -> dict[str, Any]:
        created = self.revisions[-1]
        ready = self.latest_ready
        # Knative's route sends the latestRevision share to the latest *ready* revision.
        traffic = []
        for t in self.route:
            t = dict(t)
            if t.get("latestRevision"):
                if ready is None:
                    continue
                t["revisionName"] = ready
            traffic.append(t)
        up = ready == created
        # PropagateStatus: track what rolled out at 100 %.
        for t in traffic:
            if t.get("latestRevision") and t.get("revisionName") == ready and t.get("percent") == 100 \
                    and self.rolled_out != ready:
                self.previous_rolled_out, self.rolled_out = self.rolled_out, ready
        if failing:
            cond = {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
                    "message": f'Revision "{created}" failed with message: container exited with code 1.'}
            conds = [cond, {"type": "Ready", "status": "False", "reason": "RevisionFailed"}]
        elif up and not never_ready:
            conds = [{"type": t, "status": "True"} for t in
                     ("IngressReady", "LatestDeploymentReady", "PredictorConfigurationReady",
                      "PredictorReady", "PredictorRouteReady", "Ready", "RoutesReady")]
        else:
            conds = [{"type": "PredictorConfigurationReady", "status": "Unknown", "reason": "RevisionMissing",
                      "message": f'Configuration "{self.name}-predictor" is waiting for a Revision to become ready.'},
                     {"type": "PredictorReady", "status": "Unknown", "reason": "RevisionMissing"},
                     {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"}]
        comp: dict[str, Any] = {"latestCreatedRevision": created, "traffic": traffic,
                                "url": f"http://{self.name}-predictor.{self.namespace}.example.com"}
        if ready:
            comp["latestReadyRevision"] = ready
        if self.rolled_out:
            comp["latestRolledoutRevision"] = self.rolled_out
        if self.previous_rolled_out:
            comp["previousRolledoutRevision"] = self.previous_rolled_out
        return {"observedGeneration": self.ksvc_generation, "deploymentMode": "Serverless",
                "url": f"http://{self.name}.{self.namespace}.example.com",
                "address": {"url": f"http://{self.name}.{self.namespace}.svc.cluster.local"},
                "conditions": conds, "components": {"predictor": comp},
                "modelStatus": {"transitionStatus": "UpToDate" if up else "InProgress"}}

    def _standard_status(self, *, failing: bool) -> dict[str, Any]:
        stable = self.deployments[self.stable]
        stable_up = stable.get("available") and not failing
        canaries = []
        for c, dname in zip(self.spec.get("canary") or [], self.canary_names, strict=True):
            canaries.append({"name": c["predictor"]["name"], "ready": bool(self.deployments[dname].get("available")),
                             "trafficPercent": int(c.get("trafficPercent") or 0)})
        pred = ({"type": "PredictorReady", "status": "True", "reason": "NewReplicaSetAvailable"} if stable_up else
                {"type": "PredictorReady", "status": "False" if failing else "Unknown",
                 "reason": "ProgressDeadlineExceeded" if failing else "ReplicaSetUpdated"})
        conds = [{"type": "IngressReady", "status": "True"}, pred]
        if canaries:
            all_ready = all(c["ready"] for c in canaries)
            conds.append({"type": "CanaryPredictorReady", "status": "True" if all_ready else "False",
                          "reason": "AllCanariesReady" if all_ready else "CanariesNotReady"})
        conds.append({"type": "Ready", "status": "True" if stable_up else pred["status"]})
        out: dict[str, Any] = {
            "observedGeneration": stable["generation"], "deploymentMode": "Standard",
            "url": f"http://{self.name}-{self.namespace}.example.com",
            "conditions": conds,
            "components": {"predictor": {"url": f"http://{self.stable}-{self.namespace}.example.com"}},
            "modelStatus": {"transitionStatus": "UpToDate" if stable_up else "InProgress"},
        }
        if canaries:
            out["canaryStatuses"] = canaries
        return out


# --------------------------------------------------------------------------- prediction logs


def from_now() -> Any:
    """A start time for log rows inside a canary deployed just before (its
    recorded canary-since has whole seconds)."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)


def log_rows(version: str, requests: int, *, seed: int, model: str = "churn", role: str = "primary",
             yes_share: float = 0.2, latency_ms: float = 8.0, error_every: int = 0, reject_every: int = 0,
             start: Any = None, task: str = "classification") -> list[dict[str, Any]]:
    """Rows as the predictor logs them: two rows per request, one request in
    ``reject_every`` refused whole (row -1), one in ``error_every`` failed whole
    (the predictor scores a request at once: its rows fail together, status "failed")."""
    import datetime as dt

    import numpy as np

    rng = np.random.default_rng(seed)
    start = start or dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.timezone.utc)
    out = []
    n = 0
    for r in range(requests):
        rid = f"{version}-{seed}-{r:06d}"
        t = start + dt.timedelta(seconds=r)
        lat = float(latency_ms * rng.lognormal(0, 0.25))
        if reject_every and r % reject_every == 0:
            out.append(dict(request_id=rid, row=-1, time=t, model=model, version=version, role=role,
                            tenure=None, plan=None, prediction=None, proba_no=None, proba_yes=None,
                            latency_ms=lat, status="missing_field"))
            continue
        for row in range(2):
            n += 1
            failed = bool(error_every) and r % error_every == 0
            if task == "classification":
                yes = float(rng.random() < yes_share)
                p_yes = float(np.clip(0.8 * yes + 0.1 + rng.normal(0, 0.05), 0, 1))
                pred = None if failed else ("yes" if yes else "no")
                probas = dict(proba_no=None if failed else 1 - p_yes, proba_yes=None if failed else p_yes)
            else:
                pred = None if failed else float(rng.normal(100 + 50 * yes_share, 10))
                probas = {}
            out.append(dict(request_id=rid, row=row, time=t, model=model, version=version, role=role,
                            tenure=float(rng.integers(1, 72)), plan=str(rng.choice(["basic", "pro"])),
                            prediction=pred, **probas, latency_ms=lat, status="failed" if failed else "ok"))
    return out


def write_log_part(root: Path, rows: list[dict[str, Any]], *, model: str = "churn", task: str = "classification",
                   part: int = 0) -> Path:
    """One Parquet part in the contract's layout and column order and types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [("request_id", pa.string()), ("row", pa.int64()), ("time", pa.timestamp("us", tz="UTC")),
              ("model", pa.string()), ("version", pa.string()), ("role", pa.string()),
              ("tenure", pa.float64()), ("plan", pa.string())]
    if task == "classification":
        fields += [("prediction", pa.string()), ("proba_no", pa.float64()), ("proba_yes", pa.float64())]
    else:
        fields += [("prediction", pa.float64())]
    fields += [("latency_ms", pa.float64()), ("status", pa.string())]
    schema = pa.schema(fields)
    table = pa.Table.from_pylist(rows, schema=schema)
    day = rows[0]["time"].strftime("%Y-%m-%d")
    # Named for when it was written, after its last row, as the predictor names parts.
    stamp = max(r["time"] for r in rows).strftime("%Y%m%dT%H%M%S")
    path = root / model / f"date={day}" / f"part-{stamp}-{part:08x}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_labels(path: Path, rows: list[dict[str, Any]], *, wrong_every: int = 0, flip: dict | None = None) -> Path:
    """Ground truth for ``rows``: the logged prediction (the model was right),
    except every ``wrong_every``-th row, whose label is flipped."""
    import datetime as dt

    import pandas as pd

    out = []
    for i, r in enumerate(x for x in rows if x["status"] == "ok"):
        label = r["prediction"]
        if wrong_every and i % wrong_every == 0:
            label = (flip or {"yes": "no", "no": "yes"}).get(label, label)
        out.append(dict(request_id=r["request_id"], row=r["row"], label=label,
                        labeled_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)))
    frame = pd.DataFrame(out)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
