"""Pure JSON merge patches (RFC 7386) that move traffic between a model's versions.

Why merge patches, not server-side apply:

- One writer identity, one race check. Every patch carries the
  ``metadata.resourceVersion`` it was computed from, so the API server refuses it
  (409) if anyone changed the object since it was read. Server-side apply with
  ``force`` off only detects conflicts between *different* field managers: two
  kubeloop processes share the manager ``kubeloop`` and would silently overwrite
  each other.
- ``null`` removes a field, which is exactly KServe's documented promote
  (remove ``canaryTrafficPercent``) and the standard-mode rollback (remove the
  ``spec.canary`` entry). An apply configuration that omits a field the manager
  set before also removes it, but mixing apply and update operations under one
  manager makes field ownership hard to reason about.
- Each patch is what ``kubectl patch --type merge -p '...'`` sends, so the
  README shows the same JSON for people who use kubectl.
- Re-applying is a no-op: the layer applies the patch locally first
  (``apply_merge_patch``) and sends nothing when the result equals the object.
  The API server, too, keeps the resourceVersion of an object a patch did not change.

Unknown fields are caught by sending every write with ``fieldValidation=Strict``.

Every builder reads the object as the cluster has it (``current``) and returns
a patch, or ``{}`` when the object is already in the wanted state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kubeloop.deploy.inferenceservice import (
    ANN_CANARY,
    ANN_CANARY_SINCE,
    ANN_DEPLOYMENT_MODE,
    ANN_PRIMARY,
    check_percent,
    version_of_uri,
)
from kubeloop.errors import UserError

# --------------------------------------------------------------------------- RFC 7386


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """The result of applying JSON merge patch ``patch`` to ``target`` (RFC 7386);
    neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def merge_diff(current: Any, desired: Any) -> Any:
    """The merge patch that turns ``current`` into ``desired`` for the keys
    ``desired`` names (keys only in ``current`` are left alone); ``{}`` if none differ.

    Lists are replaced whole, as in any merge patch.
    """
    if not isinstance(desired, dict) or not isinstance(current, dict):
        return copy.deepcopy(desired)
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(current[key], dict):
            sub = merge_diff(current[key], value)
            if sub:
                patch[key] = sub
        elif current[key] != value:
            patch[key] = copy.deepcopy(value)
    return patch


def changes(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether applying ``patch`` would change ``current``."""
    return bool(patch) and apply_merge_patch(current, patch) != current


# --------------------------------------------------------------------------- state


# What KServe keeps out of the pods it builds. Its predictor copies the
# InferenceService's annotations and labels into the Knative revision template
# (Serverless) or the Deployment's pod template (Standard), minus these lists
# (kserve/kserve pkg/constants/constants.go ServiceAnnotationDisallowedList and
# RevisionTemplateLabelDisallowedList, filtered in
# pkg/controller/v1beta1/inferenceservice/components/predictor.go
# buildPredictorResources and reconcilers/knative/ksvc_reconciler.go
# createKnativeService). Anything else that changes rolls a revision or
# restarts pods.
KSERVE_ANNOTATIONS_NOT_COPIED = frozenset({
    "autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration", "modelFormat",
})
KSERVE_LABELS_NOT_COPIED = frozenset({"networking.knative.dev/visibility"})
# The fields that only move traffic: changing them never makes a revision.
TRAFFIC_FIELDS = ("spec.predictor.canaryTrafficPercent", "spec.canary[].trafficPercent")


@dataclass(frozen=True)
class RolloutState:
    """What an InferenceService serves, read from its spec (and, in serverless
    mode, kubeloop's primary-version annotation: a Knative spec names only the
    latest version)."""

    name: str
    namespace: str
    mode: str  # serverless | standard
    primary_version: str | None
    canary_version: str | None
    # Share of traffic the canary gets (None: no canary in progress).
    canary_percent: int | None
    resource_version: str | None
    generation: int | None = None
    # When the deploy put the canary in place (UTC ISO 8601), if it recorded it.
    canary_since: str | None = None
    # Standard mode: the canary's predictor name (its Deployment is {isvc}-{name}-predictor).
    canary_name: str | None = None

    @property
    def in_progress(self) -> bool:
        return self.canary_version is not None and self.canary_percent is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "namespace": self.namespace, "mode": self.mode,
            "primary_version": self.primary_version, "canary_version": self.canary_version,
            "canary_percent": self.canary_percent,
            "primary_percent": None if self.canary_percent is None else 100 - self.canary_percent,
            "canary_since": self.canary_since,
        }


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _mode(obj: dict[str, Any]) -> str:
    value = _annotations(obj).get(ANN_DEPLOYMENT_MODE, "")
    if value in ("Standard", "RawDeployment") or (obj.get("spec") or {}).get("canary"):
        return "standard"
    return "serverless"


def _uri_version(pred: dict[str, Any]) -> str | None:
    return version_of_uri(((pred.get("model") or {}).get("storageUri")) or "")


def read_state(obj: dict[str, Any]) -> RolloutState:
    """The rollout state of an InferenceService as the cluster returned it.

    The spec is the truth: a canary started or moved by hand (kubectl) is read
    from the storage URIs, and annotations left from an earlier rollout (a
    promote changes only traffic fields) never override it.
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ann = _annotations(obj)
    mode = _mode(obj)
    pred = spec.get("predictor") or {}
    spec_version = _uri_version(pred)
    canary: str | None = None
    percent: int | None = None
    since: str | None = None
    canary_name: str | None = None
    if mode == "serverless":
        primary = ann.get(ANN_PRIMARY)
        pct = pred.get("canaryTrafficPercent")
        if pct is not None and spec_version and spec_version != primary:
            # The spec's version is the one the share goes to; the rest stays
            # on the last revision rolled out, the annotated primary.
            canary, percent = spec_version, int(pct)
            since = ann.get(ANN_CANARY_SINCE) if ann.get(ANN_CANARY) == spec_version else None
        else:
            # No canary field: the spec's version takes every request.
            primary = spec_version or primary
    else:
        primary = spec_version or ann.get(ANN_PRIMARY)
        entries = spec.get("canary") or []
        if entries:
            cpred = entries[0].get("predictor") or {}
            canary, percent = _uri_version(cpred), int(entries[0].get("trafficPercent", 0))
            canary_name = cpred.get("name")
            since = (cpred.get("annotations") or {}).get(ANN_CANARY_SINCE)
    return RolloutState(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""), mode=mode,
        primary_version=primary, canary_version=canary, canary_percent=percent,
        resource_version=meta.get("resourceVersion"), generation=meta.get("generation"),
        canary_since=since, canary_name=canary_name,
    )


def pod_template_inputs(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything of ``obj`` KServe turns into pod templates: the predictors
    without their traffic fields, and the annotations and labels it copies.
    Two objects with equal inputs run the same revisions and pods."""
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    pred = dict(spec.get("predictor") or {})
    pred.pop("canaryTrafficPercent", None)
    canaries = [{k: v for k, v in (c or {}).items() if k != "trafficPercent"} for c in spec.get("canary") or []]
    return {
        "predictor": pred, "canary": canaries,
        "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                        if k not in KSERVE_ANNOTATIONS_NOT_COPIED},
        "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k not in KSERVE_LABELS_NOT_COPIED},
    }


def rolls_pods(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether going from ``before`` to ``after`` makes KServe build a new
    revision (Serverless) or new pods (Standard) for a predictor that exists in
    both. A Standard promotion keeps the canary's pods: its predictor, name
    included, becomes ``spec.predictor`` unchanged."""
    a, b = pod_template_inputs(before), pod_template_inputs(after)
    if a["annotations"] != b["annotations"] or a["labels"] != b["labels"]:
        return True
    if _mode(after) == "serverless":
        return a["predictor"] != b["predictor"]
    old = {p.get("name"): p for p in [a["predictor"], *(c.get("predictor") or {} for c in a["canary"])]}
    new = [b["predictor"], *(c.get("predictor") or {} for c in b["canary"])]
    return any(p.get("name") in old and _pod_part(old[p.get("name")]) != _pod_part(p) for p in new)


# Fields of a Standard predictor that size its Deployment or HPA, not its pods
# (KServe zeroes them for canaries: buildCanaryPredictor in components/predictor.go).
_SCALING = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")


def _pod_part(pred: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pred.items() if k not in _SCALING}


def _finish(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` with the object's resourceVersion, or ``{}`` when it changes nothing."""
    if not changes(current, patch):
        return {}
    rv = (current.get("metadata") or {}).get("resourceVersion")
    if rv:
        patch.setdefault("metadata", {})["resourceVersion"] = rv
    return patch


def _require_canary(state: RolloutState, action: str) -> None:
    if state.canary_version is None:
        raise UserError(
            f"{state.namespace}/{state.name}: no canary in progress ({state.primary_version} "
            f"serves all traffic); nothing to {action}. Deploy a new version with "
            f"`kubeloop deploy {state.name}@VERSION --canary-percent N` first"
        )


# --------------------------------------------------------------------------- patches
#
# set, promote and rollback change traffic fields only: no annotation or label
# (KServe would copy it into a new revision or restart pods), so the revision
# that was analysed is the one that takes the traffic.


def set_percent_patch(current: dict[str, Any], percent: Any) -> dict[str, Any]:
    """Give the canary ``percent`` of the traffic (the primary keeps the rest)."""
    percent = check_percent(percent)
    state = read_state(current)
    _require_canary(state, "set a share for")
    if state.mode == "serverless":
        patch: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
    else:
        # A merge patch replaces a list whole, so the entry is sent in full.
        entries = copy.deepcopy(current["spec"]["canary"])
        entries[0]["trafficPercent"] = percent
        patch = {"spec": {"canary": entries}}
    return _finish(current, patch)


def promote_patch(current: dict[str, Any]) -> dict[str, Any]:
    """Send every request to the canary and make it the primary.

    Serverless: remove ``canaryTrafficPercent`` (KServe then rolls the latest
    revision out to 100 % and it becomes the revision a later rollback returns
    to). Standard: the canary's named predictor becomes ``spec.predictor`` and
    the ``spec.canary`` entry goes, so its Deployment keeps serving unchanged
    (KServe's canary_controller_test "Should not trigger a redeployment of the
    canary pods"); the primary's autoscaling bounds, which a canary may not
    carry, come with it. ``{}`` when there is no canary (already promoted).
    """
    state = read_state(current)
    if state.canary_version is None:
        return {}
    if state.mode == "serverless":
        return _finish(current, {"spec": {"predictor": {"canaryTrafficPercent": None}}})
    old = current["spec"].get("predictor") or {}
    promoted = copy.deepcopy(current["spec"]["canary"][0]["predictor"])
    for k in _SCALING:
        if k in old and k != "minReplicas":
            promoted[k] = copy.deepcopy(old[k])
    # spec.predictor is replaced field by field: fields only the old primary
    # had are removed so the result is exactly the canary's predictor.
    pred: dict[str, Any] = {k: None for k in old if k not in promoted}
    pred.update(promoted)
    for sub in ("model", "annotations", "labels"):
        if isinstance(old.get(sub), dict) and isinstance(promoted.get(sub), dict):
            merged = {k: None for k in old[sub] if k not in promoted[sub]}
            merged.update(promoted[sub])
            pred[sub] = merged
    return _finish(current, {"spec": {"predictor": pred, "canary": None}})


def rollback_patch(current: dict[str, Any]) -> dict[str, Any]:
    """Send every request back to the primary.

    Serverless: ``canaryTrafficPercent: 0`` pins all traffic to the previous
    rolled-out revision; the canary revision stays deployed (at 0 %), so no new
    revision is rolled. Standard: the ``spec.canary`` entry is removed, and
    with it the canary's Deployment.
    """
    state = read_state(current)
    _require_canary(state, "roll back")
    if state.mode == "serverless":
        patch: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    else:
        patch = {"spec": {"canary": None}}
    return _finish(current, patch)


def deploy_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The patch that makes an existing InferenceService what ``build_inference_service``
    built: every field the builder sets, plus removal of the rollout fields it did
    not set (a full rollout has no ``canaryTrafficPercent`` and no ``spec.canary``,
    and no canary annotation). ``{}`` when the object already matches."""
    patch = merge_diff(current, {"metadata": {k: v for k, v in desired["metadata"].items()
                                              if k in ("labels", "annotations")},
                                 "spec": desired["spec"]})
    spec = desired["spec"]
    cur_spec = current.get("spec") or {}
    if "canaryTrafficPercent" not in spec.get("predictor", {}) and \
            (cur_spec.get("predictor") or {}).get("canaryTrafficPercent") is not None:
        patch.setdefault("spec", {}).setdefault("predictor", {})["canaryTrafficPercent"] = None
    if "canary" not in spec and cur_spec.get("canary"):
        patch.setdefault("spec", {})["canary"] = None
    if _mode(desired) == "serverless":
        # Left from an earlier canary; removed with the change of storageUri
        # that rolls a revision anyway. (Standard mode never sets them: the
        # InferenceService's annotations go into every Deployment's pods.)
        for key in (ANN_CANARY, ANN_CANARY_SINCE):
            if key not in desired["metadata"]["annotations"] and key in _annotations(current):
                patch.setdefault("metadata", {}).setdefault("annotations", {})[key] = None
    return _finish(current, patch)
