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


def unknown_fields(data: Any, type_name: str, path: str = "") -> list[str]:
    """Paths in ``data`` that ``type_name`` (an SDK type string) does not declare,
    and values of the wrong primitive type."""
    problems: list[str] = []
    if data is None:
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
    schema (400), KServe's webhook bound on canaryTrafficPercent (403), and a
    status that turns Ready after ``ready_after`` reads of a new generation,
    with Knative-like traffic for canaries."""

    ready_after: int = 1
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
    _reads_since_write: dict[tuple[str, str], int] = field(default_factory=dict)
    _revisions: dict[tuple[str, str], list[str]] = field(default_factory=dict)

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
        key = (ns, name)
        self._reads_since_write[key] = self._reads_since_write.get(key, 0) + 1
        self._set_status(key, obj)
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
        pred = (obj.get("spec") or {}).get("predictor") or {}
        pct = pred.get("canaryTrafficPercent")
        if pct is not None and not 0 <= pct <= 100:
            return self.status(403, "Forbidden", f"{WEBHOOK}: canaryTrafficPercent must be between 0 and 100")
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
        if req.query.get("dryRun") == ["All"]:
            return 201, obj
        self.objects[(ns, name)] = obj
        self._written((ns, name), None, obj)
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
        if req.query.get("dryRun") == ["All"]:
            return 200, new
        self.objects[(ns, name)] = new
        self._written((ns, name), cur, new)
        return 200, new

    # -- a tiny KServe controller --------------------------------------------------------

    def _written(self, key: tuple[str, str], old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self._reads_since_write[key] = 0
        revs = self._revisions.setdefault(key, [])

        def template(o: dict[str, Any] | None) -> Any:
            if o is None:
                return None
            p = copy.deepcopy(o["spec"]["predictor"])
            p.pop("canaryTrafficPercent", None)
            return p

        if old is None or template(old) != template(new):
            revs.append(f"{key[1]}-predictor-{len(revs) + 1:05d}")
        new["status"] = {"observedGeneration": new["metadata"]["generation"] - 1,
                         "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Reconciling"}]}

    def _set_status(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        name = key[1]
        if self._reads_since_write.get(key, 0) < self.ready_after or name in self.never_ready:
            return
        if name in self.fail_revision:
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "conditions": [
                {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
                 "message": "Revision failed: container exited with code 1"},
                {"type": "Ready", "status": "False", "reason": "RevisionFailed"}]}
            return
        revs = self._revisions[key]
        pct = obj["spec"]["predictor"].get("canaryTrafficPercent")
        if pct is not None and len(revs) > 1:
            traffic = [{"revisionName": revs[-1], "percent": pct, "latestRevision": True, "tag": "latest"},
                       {"revisionName": revs[-2], "percent": 100 - pct, "latestRevision": False, "tag": "prev"}]
        else:
            traffic = [{"revisionName": revs[-1], "percent": 100, "latestRevision": True}]
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "url": f"http://{name}.{key[0]}.example.com",
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "components": {"predictor": {"traffic": traffic}},
        }


# --------------------------------------------------------------------------- prediction logs


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
