"""The thin layer between kubeloop and the Kubernetes API: InferenceServices only.

Everything that decides what to send lives in ``inferenceservice.py`` and
``patches.py``; this module sends it and turns the answers into kubeloop's
errors:

- configuration: the standard kubeconfig (``KUBECONFIG``, ``~/.kube/config``,
  ``--context``) or, inside a pod, the service account;
- writes: ``POST`` to create and JSON merge patches to change, always with
  ``fieldValidation=Strict`` (a field the cluster's schema does not know is an
  error, not silently dropped) and ``fieldManager=kubeloop``; every patch
  carries the resourceVersion it was computed from, so a concurrent change
  makes it fail with 409 instead of being overwritten;
- reads: the object and a summary of its status (conditions, traffic);
- ``wait_ready``: polls until the object serves what was sent, as KServe
  reports it (``pending``: revisions and traffic in Serverless mode, the
  predictor's and canaries' conditions in Standard mode), or the timeout passes.

API errors (401, 403, 404, 409, 422, admission webhook denials, strict
decoding errors) become ``UserError``/``Conflict`` with messages that say what
to fix; an unreachable API server does too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeloop.deploy.inferenceservice import GROUP, PLURAL, VERSION
from kubeloop.deploy.patches import read_state, rolls_pods
from kubeloop.errors import Conflict, UserError

FIELD_MANAGER = "kubeloop"
# (connect, read) seconds for each API call: a dead endpoint fails fast.
REQUEST_TIMEOUT = (5, 30)
# KServe reports these when a revision or model cannot come up; waiting longer
# would not help.
_FAILED_REASONS = {"RevisionFailed", "RevisionMissing", "ContainerMissing", "InvalidSpec",
                   "BlockedByFailedLoad"}


class KubeError(UserError):
    """The Kubernetes API refused or could not be reached; the message says why."""


def connect(context: str | None = None, kubeconfig: str | None = None) -> InferenceServices:
    """An ``InferenceServices`` client from the kubeconfig or the in-cluster account.

    Order: ``kubeconfig`` (a path), ``$KUBECONFIG`` (one or more paths, merged as
    kubectl does), ``~/.kube/config``; inside a pod with none of them, the
    pod's service account.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    env_paths = os.environ.get("KUBECONFIG")
    default = os.path.expanduser("~/.kube/config")
    try:
        if kubeconfig or env_paths or os.path.exists(default):
            # The client reads $KUBECONFIG once, at import; pass it explicitly
            # (several ':'-separated paths are merged as kubectl does).
            path = kubeconfig or env_paths or default
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            where = f"context {context}" if context else "the current context"
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            if context:
                raise KubeError(f"--context {context}: no kubeconfig here, only the in-cluster account")
            config.load_incluster_config(client_configuration=cfg)
            where = "the pod's service account"
        else:
            raise KubeError(
                "no Kubernetes configuration found: set KUBECONFIG, create ~/.kube/config, "
                "or run inside a cluster (or use --dry-run to only print what would be sent)"
            )
    except config.ConfigException as exc:
        raise KubeError(f"cannot load the Kubernetes configuration: {exc}") from None
    return InferenceServices(client.ApiClient(cfg), where=f"{cfg.host} ({where})")


def _status_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
        return body if isinstance(body, dict) else {}
    except (TypeError, ValueError):
        return {}


def _causes(body: dict[str, Any]) -> str:
    causes = (body.get("details") or {}).get("causes") or []
    parts = [f"{c.get('field', '')}: {c.get('message', '')}".strip(": ") for c in causes]
    return "; ".join(p for p in parts if p)


def translate(exc: Any, action: str, namespace: str, name: str | None = None) -> UserError:
    """The kubeloop error for an ``ApiException`` raised by ``action`` on an InferenceService."""
    body = _status_body(exc)
    status = getattr(exc, "status", None)
    message = body.get("message") or getattr(exc, "reason", None) or str(exc)
    reason = body.get("reason") or ""
    obj = f"InferenceService {namespace}/{name}" if name else f"InferenceServices in namespace {namespace}"
    if "admission webhook" in message:
        return KubeError(f"{action} {obj}: KServe's admission webhook refused it: {message}")
    if status == 401:
        return KubeError(
            f"{action} {obj}: the API server did not accept the credentials (401 Unauthorized); "
            "check the kubeconfig context, or the token of the service account"
        )
    if status == 403:
        return KubeError(
            f"{action} {obj}: forbidden (403): {message}. The identity needs get, list, watch, "
            f"create and patch on inferenceservices.serving.kserve.io in namespace {namespace} "
            "(the kubeloop-pipeline Role grants exactly that)"
        )
    if status == 404:
        if (body.get("details") or {}).get("name") == name and name:
            return KubeError(f"{action} {obj}: not found; deploy it first with `kubeloop deploy {name}`")
        if "namespaces" in message and "not found" in message:
            return KubeError(f"{action} {obj}: the namespace {namespace} does not exist")
        return KubeError(
            f"{action} {obj}: the cluster has no InferenceService API ({GROUP}/{VERSION}): "
            f"is KServe installed? ({message})"
        )
    if status == 409:
        if reason == "AlreadyExists":
            return Conflict(f"{action} {obj}: it was created by someone else meanwhile; run again to update it")
        return Conflict(
            f"{action} {obj}: it was changed by someone else since kubeloop read it (409 Conflict); "
            "nothing was applied. Run the command again to act on its current state"
        )
    if status == 422:
        causes = _causes(body)
        return KubeError(f"{action} {obj}: the API server rejected it as invalid (422): {causes or message}")
    if status == 400 and ("strict decoding error" in message or "unknown field" in message):
        return KubeError(
            f"{action} {obj}: the cluster's InferenceService schema does not know some fields "
            f"(strict field validation): {message}. Is the installed KServe older than the one "
            "kubeloop targets (v0.21)?"
        )
    if status == 415:
        return KubeError(f"{action} {obj}: the API server does not accept this patch type: {message}")
    return KubeError(f"{action} {obj}: the API server answered {status} {reason}: {message}")


@dataclass(frozen=True)
class Expected:
    """What an InferenceService must report before a change counts as rolled out.

    Built from the object as sent (``expect``), never from generation
    counters: KServe copies ``status.observedGeneration`` from the Knative
    Service (Serverless) or the stable Deployment (Standard), not from the
    InferenceService (PropagateStatus and PropagateRawStatus in kserve/kserve
    pkg/apis/serving/v1beta1/inference_service_status.go), so comparing it
    with the InferenceService's ``metadata.generation`` compares unrelated
    counters.
    """

    mode: str
    # Serverless: the latest revision's share (None: all of it). Standard: the
    # canary entry's trafficPercent (None: no canary).
    canary_percent: int | None = None
    # Standard: the canary's predictor name, as KServe reports it in canaryStatuses.
    canary_name: str | None = None
    # Serverless: the latest created revision before a change that makes a new
    # one; ready only once KServe reports a different one.
    replaced_revision: str | None = None


def expect(before: dict[str, Any] | None, after: dict[str, Any]) -> Expected:
    """Pure: the state to wait for after ``before`` (None: just created) became ``after``."""
    state = read_state(after)
    if state.mode == "serverless":
        pct = ((after.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
        replaced = None
        if before is not None and rolls_pods(before, after):
            replaced = _predictor_status(before).get("latestCreatedRevision")
        # KServe splits traffic only once a revision has rolled out
        # (createKnativeService in reconcilers/knative/ksvc_reconciler.go):
        # the first revision takes everything whatever the field says.
        first = before is None or not _predictor_status(before).get("latestRolledoutRevision")
        return Expected("serverless", None if first or pct is None else int(pct), replaced_revision=replaced)
    return Expected("standard", state.canary_percent, canary_name=state.canary_name)


def last_writer(obj: dict[str, Any]) -> str | None:
    """The field manager that last changed the object's spec or metadata, from
    ``metadata.managedFields`` (status writes by KServe's controller excluded)."""
    entries = [e for e in (obj.get("metadata") or {}).get("managedFields") or []
               if e.get("subresource") != "status" and e.get("manager")]
    if not entries:
        return None
    # Times have whole seconds; on a tie the later entry is the later write.
    last = max(enumerate(entries), key=lambda ie: (ie[1].get("time") or "", ie[0]))[1]
    return f"{last['manager']}" + (f" at {last['time']}" if last.get("time") else "")


def _predictor_status(obj: dict[str, Any]) -> dict[str, Any]:
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def pending(obj: dict[str, Any], expected: Expected) -> list[str]:
    """Pure: why ``obj`` does not yet serve what ``expected`` asks ([] when it does).

    Serverless (Knative): the latest created revision is the latest ready one
    (Knative's ConfigurationStatusFields, knative/serving
    pkg/apis/serving/v1/configuration_types.go), it is not the revision the
    change replaced, and the route's traffic gives it the share asked, the rest
    to the previous rolled-out revision. Standard: PredictorReady, and for a
    canary CanaryPredictorReady with its canaryStatuses entry ready at the
    share asked; with no canary, none reported (reconcileCanaryDeployments in
    pkg/controller/v1beta1/inferenceservice/components/predictor.go). Both: the
    aggregated Ready condition.
    """
    status = obj.get("status") or {}
    out: list[str] = []
    ready = _condition(status, "Ready")
    if not ready or ready.get("status") != "True":
        out.append("Ready is " + (ready.get("status", "Unknown") if ready else "not reported yet"))
    if expected.mode == "serverless":
        comp = _predictor_status(obj)
        created, latest_ready = comp.get("latestCreatedRevision"), comp.get("latestReadyRevision")
        if not created:
            out.append("no revision reported yet")
        elif expected.replaced_revision and created == expected.replaced_revision:
            out.append(f"KServe has not made the new revision yet (latest is still {created})")
        elif created != latest_ready:
            out.append(f"revision {created} is not ready yet (latest ready: {latest_ready or 'none'})")
        want = 100 if expected.canary_percent is None else expected.canary_percent
        traffic = comp.get("traffic") or []
        latest = [t for t in traffic if t.get("latestRevision")]
        got = sum(int(t.get("percent") or 0) for t in latest)
        # A 0 % target may be left out of the route's status; the rest is checked below.
        if (latest or want) and got != want:
            out.append(f"the latest revision gets {got if latest else 'no'}% of the traffic, not {want}%")
        elif want < 100:
            rest = sum(int(t.get("percent") or 0) for t in traffic if not t.get("latestRevision"))
            if rest != 100 - want:
                out.append(f"the previous revision gets {rest}% of the traffic, not {100 - want}%")
    else:
        pred = _condition(status, "PredictorReady")
        if not pred or pred.get("status") != "True":
            out.append("PredictorReady is " + (pred.get("status", "Unknown") if pred else "not reported yet"))
        canaries = status.get("canaryStatuses") or []
        if expected.canary_name is None:
            if canaries:
                out.append("KServe still reports canaries: " + ", ".join(str(c.get("name")) for c in canaries))
        else:
            mine = next((c for c in canaries if c.get("name") == expected.canary_name), None)
            cond = _condition(status, "CanaryPredictorReady")
            if mine is None:
                out.append(f"canary {expected.canary_name} not reported yet")
            elif not mine.get("ready"):
                out.append(f"canary {expected.canary_name} is not ready")
            elif int(mine.get("trafficPercent") or 0) != expected.canary_percent:
                out.append(f"canary {expected.canary_name} is at {mine.get('trafficPercent')}%, "
                           f"not {expected.canary_percent}%")
            elif not cond or cond.get("status") != "True":
                out.append("CanaryPredictorReady is " + (cond.get("status", "Unknown") if cond else "not reported"))
    return out


@dataclass
class ServiceStatus:
    """What ``status`` says about an InferenceService, flattened for people and JSON."""

    ready: bool
    up_to_date: bool
    url: str | None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    canaries: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    pending: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "up_to_date": self.up_to_date, "url": self.url,
                "conditions": self.conditions, "traffic": self.traffic, "canaries": self.canaries,
                "failure": self.failure, "pending": self.pending}


def summarize_status(obj: dict[str, Any], expected: Expected | None = None) -> ServiceStatus:
    """Pure: readiness, conditions and traffic of an InferenceService as returned by the API.

    With ``expected``, ready means serving exactly that (``pending`` says what
    is missing); without, the object's Ready condition and its own spec.
    """
    status = obj.get("status") or {}
    conditions = [
        {k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k) is not None}
        for c in status.get("conditions") or []
    ]
    # Read alone, the object is judged against its own spec.
    waiting = pending(obj, expected if expected is not None else expect(obj, obj))
    predictor = _predictor_status(obj)
    traffic = [
        {k: t.get(k) for k in ("revisionName", "percent", "tag", "latestRevision", "url") if t.get(k) is not None}
        for t in predictor.get("traffic") or []
    ]
    canaries = [
        {k: c.get(k) for k in ("name", "trafficPercent", "ready") if c.get(k) is not None}
        for c in status.get("canaryStatuses") or []
    ]
    url = status.get("url")
    failure = None
    for c in conditions:
        if c.get("status") == "False" and c.get("reason") in _FAILED_REASONS:
            failure = f"{c['type']}: {c.get('reason')}: {c.get('message', '')}".rstrip(": ")
    model_status = status.get("modelStatus") or {}
    if model_status.get("transitionStatus") in _FAILED_REASONS:
        info = model_status.get("lastFailureInfo") or {}
        failure = f"model {model_status['transitionStatus']}: {info.get('message', '')}".rstrip(": ")
    ready = not waiting
    return ServiceStatus(ready, ready, url if isinstance(url, str) else None,
                         conditions, traffic, canaries, failure, waiting)


class InferenceServices:
    """Get, create, patch and wait for InferenceServices through CustomObjectsApi."""

    def __init__(self, api_client: Any, *, where: str = ""):
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.where = where

    def _call(self, action: str, namespace: str, name: str | None, fn: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            if exc.status is None or exc.status == 0:
                raise KubeError(f"{action}: cannot reach the Kubernetes API server {self.where}: {exc.reason}") from None
            raise translate(exc, action, namespace, name) from None
        except (HTTPError, OSError) as exc:
            raise KubeError(
                f"{action}: cannot reach the Kubernetes API server {self.where}: {exc}"
            ) from None

    def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        def call() -> dict[str, Any] | None:
            try:
                return self.api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                # A missing object names itself in the Status details; a missing
                # API (no KServe) or namespace does not, and stays an error.
                if exc.status == 404 and (_status_body(exc).get("details") or {}).get("name") == name:
                    return None
                raise

        return self._call("read", namespace, name, call)

    def create(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        meta = obj["metadata"]
        return self._call("create", meta["namespace"], meta["name"], lambda: self.api.create_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, obj,
            field_manager=FIELD_MANAGER, field_validation="Strict",
            dry_run="All" if dry_run else None, _request_timeout=REQUEST_TIMEOUT))

    def patch(self, name: str, namespace: str, patch: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Send a JSON merge patch (the client sends application/merge-patch+json)."""
        return self._call("patch", namespace, name, lambda: self.api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch,
            field_manager=FIELD_MANAGER, field_validation="Strict",
            dry_run="All" if dry_run else None, _request_timeout=REQUEST_TIMEOUT))

    def wait_ready(
        self,
        name: str,
        namespace: str,
        *,
        timeout: float,
        expected: Expected | None = None,
        generation: int | None = None,
        poll: float = 2.0,
        on_poll: Callable[[ServiceStatus], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ServiceStatus:
        """Poll until the object serves ``expected`` (see ``pending``); raise
        KubeError on a failure KServe reports or when ``timeout`` seconds pass,
        and Conflict when the spec moves past ``generation`` (the one the
        write produced): someone else changed it, and it will never serve
        what was asked."""
        deadline = clock() + timeout
        while True:
            obj = self.get(name, namespace)
            if obj is None:
                raise KubeError(f"InferenceService {namespace}/{name} disappeared while waiting for it")
            now = (obj.get("metadata") or {}).get("generation")
            if generation is not None and now is not None and now != generation:
                raise Conflict(
                    f"InferenceService {namespace}/{name} was changed by someone else while kubeloop waited "
                    f"for it (generation {generation} -> {now}"
                    + (f", last written by {writer}" if (writer := last_writer(obj)) else "") + "); "
                    "the change kubeloop made was applied, and then changed. Look with `kubeloop canary status`")
            st = summarize_status(obj, expected)
            if on_poll:
                on_poll(st)
            if st.ready:
                return st
            if st.failure:
                raise KubeError(f"InferenceService {namespace}/{name} failed: {st.failure}")
            if clock() >= deadline:
                why = "; ".join(st.pending + [
                    f"{c['type']}={c.get('status')} ({c.get('reason')}: {c.get('message', '')})"
                    for c in st.conditions if c.get("status") != "True" and c.get("reason")
                ]) or "no conditions reported yet"
                raise KubeError(
                    f"InferenceService {namespace}/{name} was not Ready within {timeout:g}s: {why}. "
                    "The change was applied; check `kubeloop canary status` or "
                    f"`kubectl -n {namespace} describe isvc {name}`"
                )
            sleep(min(poll, max(0.0, deadline - clock())))
