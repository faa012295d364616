"""Shared pieces of the cluster tests: rendering the kustomize overlays, checking
KServe objects against the KServe SDK's models, and a small `kubectl auth can-i`
over rendered RBAC objects.

Rendering prefers the real `kubectl kustomize`. Where kubectl is absent, a small
renderer here covers exactly the kustomize features the project's
kustomizations use, and refuses any other field by name, so it can never render
something different in silence; a test checks it against kubectl wherever both
exist.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("kind", "minikube")
OVERLAY_IMAGES = {"kind": "kind.local/kubeloop", "minikube": "dev.local/kubeloop"}

# What the key files hold while the tests render: values that must end up only
# inside the generated Secrets (base64), never anywhere else in the output. One
# pair per S3 identity, so a test can tell which Secret reached which consumer.
S3_IDENTITIES = ("root", "pipeline", "predictor")
SENTINELS = {who: (f"kl-test-{who}-key-5f0c", f"kl-test-{who}-secret-9d2e4b7a1c") for who in S3_IDENTITIES}

KSERVE_KINDS = {"ServingRuntime", "ClusterServingRuntime", "InferenceService"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}


def kubectl() -> str | None:
    return shutil.which("kubectl")


def env_file(who: str) -> str:
    return f"s3-{who}.env"


def copy_manifests(dest: Path) -> Path:
    """A copy of manifests/ with key files of sentinel values (the real ones are git-ignored)."""
    target = dest / "manifests"
    shutil.copytree(MANIFESTS, target, ignore=shutil.ignore_patterns("*.env"))
    for who, (key_id, secret) in SENTINELS.items():
        (target / "base" / env_file(who)).write_text(f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    return target


def render_kubectl(directory: Path) -> list[dict[str, Any]]:
    exe = kubectl()
    if exe is None:
        raise RuntimeError("kubectl is not on PATH")
    proc = subprocess.run(
        [exe, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


# --- the small renderer -------------------------------------------------------------

_SUPPORTED_FIELDS = {
    "apiVersion", "kind", "resources", "labels", "generatorOptions", "secretGenerator", "configMapGenerator",
    "images", "patches",
}


class UnsupportedKustomization(Exception):
    pass


def render_python(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization with the features kubeloop's manifests use, no more."""
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = sorted(set(k) - _SUPPORTED_FIELDS)
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: fields {unknown} are not supported by the test renderer")

    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            objects += render_python(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]

    options = k.get("generatorOptions") or {}
    extra_options = sorted(set(options) - {"disableNameSuffixHash"})
    if extra_options:
        raise UnsupportedKustomization(f"{kfile}: generatorOptions {extra_options} are not supported")
    for gen in k.get("secretGenerator", []):
        if not options.get("disableNameSuffixHash"):
            raise UnsupportedKustomization(f"{kfile}: name suffix hashes are not supported")
        extra = sorted(set(gen) - {"name", "namespace", "envs", "options"})
        if extra:
            raise UnsupportedKustomization(f"{kfile}: secretGenerator fields {extra} are not supported")
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(parse_env_file(directory / env))
        meta: dict[str, Any] = {"name": gen["name"]}
        if gen.get("namespace"):
            meta["namespace"] = gen["namespace"]
        annotations = (gen.get("options") or {}).get("annotations")
        if annotations:
            meta["annotations"] = dict(annotations)
        objects.append({
            "apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "data": {key: base64.b64encode(v.encode()).decode() for key, v in data.items()},
        })

    for gen in k.get("configMapGenerator", []):
        if not options.get("disableNameSuffixHash"):
            raise UnsupportedKustomization(f"{kfile}: name suffix hashes are not supported")
        extra = sorted(set(gen) - {"name", "namespace", "files"})
        if extra:
            raise UnsupportedKustomization(f"{kfile}: configMapGenerator fields {extra} are not supported")
        if any("=" in f for f in gen.get("files", [])):
            raise UnsupportedKustomization(f"{kfile}: configMapGenerator keys other than the file name are not supported")
        meta = {"name": gen["name"], **({"namespace": gen["namespace"]} if gen.get("namespace") else {})}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                        "data": {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}})

    for label in k.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise UnsupportedKustomization(f"{kfile}: labels on selectors or templates are not supported")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])

    for image in k.get("images", []):
        for obj in objects:
            _set_images(obj, image)

    for patch in k.get("patches", []):
        target = patch.get("target") or {}
        extra = sorted(set(target) - {"kind", "name"})
        if extra or "path" in patch:
            raise UnsupportedKustomization(f"{kfile}: patch targets {extra or ['path']} are not supported")
        ops = yaml.safe_load(patch["patch"])
        for obj in objects:
            if obj.get("kind") == target.get("kind") and obj["metadata"].get("name") == target.get("name"):
                for op in ops:
                    _json_patch(obj, op)
    return objects


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as kustomize reads them (blank lines and # comments skipped)."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        out[key] = value
    return out


def _image_name(ref: str) -> str:
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def _set_images(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict) and "image" in c and _image_name(c["image"]) == image["name"]:
                        c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
            _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def _json_patch(obj: dict[str, Any], op: dict[str, Any]) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = obj
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    if op["op"] in ("add", "replace"):
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[idx] = copy.deepcopy(op["value"])
        else:
            if op["op"] == "replace" and last not in parent:
                raise KeyError(f"replace of a missing field {op['path']}")
            parent[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise UnsupportedKustomization(f"JSON patch op {op['op']!r} is not supported")


def render(directory: Path) -> list[dict[str, Any]]:
    return render_kubectl(directory) if kubectl() else render_python(directory)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return obj["kind"], meta.get("namespace", ""), meta["name"]


# --- KServe objects against the KServe SDK's models ---------------------------------

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\((\w+), (.+)\)$")
_PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}


def _model_class(name: str) -> type:
    import kserve.models as kserve_models
    import kubernetes.client.models as k8s_models

    for module in (kserve_models, k8s_models):
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    raise LookupError(f"no model class {name} in kserve.models or kubernetes.client.models")


def unknown_fields(value: Any, type_name: str, path: str = "") -> list[str]:
    """Every field of ``value`` the model ``type_name`` does not know, or whose type is
    wrong, as a path (``spec.containers[0].imagePullPolicyy: unknown field``).

    Walks the models' ``attribute_map`` (JSON names) and ``openapi_types`` the
    way the SDK's own deserializer does, so anything listed is something the API
    server's strict field validation would reject too.
    """
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in unknown_fields(item, m.group(1), f"{path}[{i}]")]
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        return [e for k, item in value.items() for e in unknown_fields(item, m.group(2), f"{path}.{k}")]
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        if type_name == "int" and isinstance(value, bool) or not isinstance(value, expected):
            return [f"{path}: expected {type_name}, got {type(value).__name__} {value!r}"]
        return []
    if type_name == "IntOrString" or type_name.endswith("Quantity"):
        return [] if isinstance(value, int | str) else [f"{path}: expected int or string"]
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name}), got {type(value).__name__}"]
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    errors = []
    for k, item in value.items():
        where = f"{path}.{k}" if path else k
        if k not in by_json:
            errors.append(f"{where}: unknown field (not in {type_name})")
            continue
        errors += unknown_fields(item, cls.openapi_types[by_json[k]], where)
    return errors


KSERVE_MODELS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}


# --- `kubectl auth can-i` over rendered RBAC ------------------------------------------


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def can_i(
    objects: Iterable[dict[str, Any]],
    user: str,
    verb: str,
    resource: str,
    namespace: str | None,
    group: str = "",
    external_roles: dict[tuple[str, str], list[dict[str, Any]]] | None = None,
) -> bool:
    """Whether the RBAC objects grant ``user`` the ``verb`` on ``resource`` (in
    ``namespace``; None for a cluster-scoped question), as the API server's RBAC
    authorizer decides. ``external_roles`` supplies Roles the manifests bind to but
    do not define (KFP's own), keyed by (namespace, name)."""
    objects = list(objects)
    roles = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o.get("rules", [])
             for o in objects if o["kind"] == "Role"}
    roles.update(external_roles or {})
    cluster_roles = {o["metadata"]["name"]: o.get("rules", []) for o in objects if o["kind"] == "ClusterRole"}

    def subject_matches(binding: dict[str, Any]) -> bool:
        for s in binding.get("subjects", []):
            if s["kind"] == "ServiceAccount" and service_account_user(
                s.get("namespace", binding["metadata"].get("namespace", "")), s["name"]
            ) == user:
                return True
            if s["kind"] == "User" and s["name"] == user:
                return True
        return False

    def rules_allow(rules: list[dict[str, Any]]) -> bool:
        for r in rules:
            if not ({"*", group} & set(r.get("apiGroups", []))):
                continue
            if not ({"*", resource} & set(r.get("resources", []))):
                continue
            if {"*", verb} & set(r.get("verbs", [])):
                return True
        return False

    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding") or not subject_matches(b):
            continue
        ref = b["roleRef"]
        if b["kind"] == "ClusterRoleBinding":
            if rules_allow(cluster_roles.get(ref["name"], [])):
                return True
            continue
        if namespace is None or b["metadata"].get("namespace") != namespace:
            continue  # a RoleBinding grants only inside its own namespace
        rules = (cluster_roles.get(ref["name"], []) if ref["kind"] == "ClusterRole"
                 else roles.get((namespace, ref["name"]), []))
        if rules_allow(rules):
            return True
    return False


# --- a Kubeflow Pipelines v2 REST endpoint on loopback ---------------------------------


class FakeKfp:
    """Answers the KFP v2 REST paths kfp.Client 2.x uses, as the API server does.

    ``refuse`` makes every request answer that HTTP status (401, 403, 404, ...)
    with KFP's error body; ``refuse_path`` limits it to one path. Every request
    is recorded (method, path, parsed JSON body) for the tests to read.
    """

    PREFIX = "/apis/v2beta1"

    def __init__(self, refuse: int | None = None, refuse_path: str | None = None, message: str = "refused") -> None:
        import http.server
        import json
        import threading
        import urllib.parse

        self.requests: list[tuple[str, str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.counter = 0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append((method, url.path, body))
                if refuse and (refuse_path is None or url.path == refuse_path):
                    self._send(refuse, {"error": message, "code": 16 if refuse == 401 else 7, "message": message})
                    return
                self._send(*fake.answer(method, url.path, urllib.parse.parse_qs(url.query), body))

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        import json

        p = self.PREFIX
        if (method, path) == ("GET", f"{p}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{p}/experiments"):
            wanted = None
            if "filter" in query:
                predicates = json.loads(query["filter"][0]).get("predicates", [])
                wanted = {pr.get("stringValue", pr.get("string_value")) for pr in predicates}
            found = [e for e in self.experiments.values() if wanted is None or e["display_name"] in wanted]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if (method, path) == ("POST", f"{p}/experiments"):
            self.counter += 1
            exp = {"experiment_id": f"exp-{self.counter}", "display_name": body["display_name"]}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if (method, path) == ("POST", f"{p}/runs"):
            self.counter += 1
            return 200, {"run_id": f"run-{self.counter}", "display_name": body.get("display_name"),
                         "experiment_id": body.get("experiment_id")}
        if (method, path) == ("POST", f"{p}/recurringruns"):
            self.counter += 1
            return 200, {"recurring_run_id": f"rr-{self.counter}", "display_name": body.get("display_name"),
                         "experiment_id": body.get("experiment_id")}
        return 404, {"error": "Not Found", "code": 5, "message": f"no route for {method} {path}"}

    def posted(self, path: str) -> list[Any]:
        return [b for m, p, b in self.requests if m == "POST" and p == self.PREFIX + path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
