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
    ANN_DEPLOYMENT_MODE,
    ANN_PRIMARY,
    LABEL_VERSION,
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


@dataclass(frozen=True)
class RolloutState:
    """What an InferenceService serves, read from its spec and kubeloop's annotations."""

    name: str
    namespace: str
    mode: str  # serverless | standard
    primary_version: str | None
    canary_version: str | None
    # Share of traffic the canary gets (None: no canary in progress).
    canary_percent: int | None
    resource_version: str | None

    @property
    def in_progress(self) -> bool:
        return self.canary_version is not None and self.canary_percent is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "namespace": self.namespace, "mode": self.mode,
            "primary_version": self.primary_version, "canary_version": self.canary_version,
            "canary_percent": self.canary_percent,
            "primary_percent": None if self.canary_percent is None else 100 - self.canary_percent,
        }


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _mode(obj: dict[str, Any]) -> str:
    value = _annotations(obj).get(ANN_DEPLOYMENT_MODE, "")
    if value in ("Standard", "RawDeployment") or (obj.get("spec") or {}).get("canary"):
        return "standard"
    return "serverless"


def read_state(obj: dict[str, Any]) -> RolloutState:
    """The rollout state of an InferenceService as the cluster returned it."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ann = _annotations(obj)
    mode = _mode(obj)
    pred = spec.get("predictor") or {}
    spec_version = version_of_uri(((pred.get("model") or {}).get("storageUri")) or "")
    primary = ann.get(ANN_PRIMARY)
    canary = ann.get(ANN_CANARY)
    percent: int | None = None
    if mode == "serverless":
        if pred.get("canaryTrafficPercent") is not None and not canary and spec_version != primary:
            # A canary started by hand (kubectl) without kubeloop's annotations:
            # the spec's version is the one the share goes to.
            canary = spec_version
        if pred.get("canaryTrafficPercent") is not None and canary:
            percent = int(pred["canaryTrafficPercent"])
        else:
            # No canary field: the spec's version takes every request.
            primary, canary = spec_version or primary, None
    else:
        entries = spec.get("canary") or []
        if entries and canary:
            percent = int(entries[0].get("trafficPercent", 0))
        else:
            canary = None
        primary = primary or spec_version
    return RolloutState(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""), mode=mode,
        primary_version=primary, canary_version=canary, canary_percent=percent,
        resource_version=meta.get("resourceVersion"),
    )


def _finish(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` with the object's resourceVersion, or ``{}`` when it changes nothing."""
    if not changes(current, patch):
        return {}
    meta = patch.setdefault("metadata", {})
    rv = (current.get("metadata") or {}).get("resourceVersion")
    if rv:
        meta["resourceVersion"] = rv
    return patch


def _require_canary(state: RolloutState, action: str) -> None:
    if state.canary_version is None:
        raise UserError(
            f"{state.namespace}/{state.name}: no canary in progress ({state.primary_version} "
            f"serves all traffic); nothing to {action}. Deploy a new version with "
            f"`kubeloop deploy {state.name}@VERSION --canary-percent N` first"
        )


# --------------------------------------------------------------------------- patches


def set_percent_patch(current: dict[str, Any], percent: Any) -> dict[str, Any]:
    """Give the canary ``percent`` of the traffic (the primary keeps the rest)."""
    percent = check_percent(percent)
    state = read_state(current)
    _require_canary(state, "set a share for")
    ann = {ANN_PRIMARY: state.primary_version, ANN_CANARY: state.canary_version}
    if state.mode == "serverless":
        patch = {"metadata": {"annotations": ann},
                 "spec": {"predictor": {"canaryTrafficPercent": percent}}}
    else:
        # A merge patch replaces a list whole, so the entry is sent in full.
        entries = copy.deepcopy(current["spec"]["canary"])
        entries[0]["trafficPercent"] = percent
        patch = {"metadata": {"annotations": ann}, "spec": {"canary": entries}}
    return _finish(current, patch)


def promote_patch(current: dict[str, Any]) -> dict[str, Any]:
    """Send every request to the canary and make it the primary.

    Serverless: remove ``canaryTrafficPercent`` (KServe then rolls the latest
    revision out to 100 % and it becomes the revision a later rollback returns
    to). Standard: the canary's named predictor becomes ``spec.predictor`` and
    the ``spec.canary`` entry goes, so its Deployment keeps serving unchanged.
    ``{}`` when there is no canary (already promoted).
    """
    state = read_state(current)
    if state.canary_version is None:
        return {}
    ann = {ANN_PRIMARY: state.canary_version, ANN_CANARY: None}
    labels = {LABEL_VERSION: state.canary_version}
    if state.mode == "serverless":
        patch = {"metadata": {"annotations": ann, "labels": labels},
                 "spec": {"predictor": {"canaryTrafficPercent": None}}}
    else:
        entry = current["spec"]["canary"][0]
        promoted = copy.deepcopy(entry["predictor"])
        # The canary-only setting does not follow it into the primary.
        env = [e for e in (promoted.get("model") or {}).get("env") or [] if e.get("name") != "KUBELOOP_ROLE"]
        if "model" in promoted:
            if env:
                promoted["model"]["env"] = env
            else:
                promoted["model"].pop("env", None)
        # spec.predictor is replaced field by field: fields only the old primary
        # had are removed so the result is exactly the canary's predictor.
        old = current["spec"].get("predictor") or {}
        pred = {k: None for k in old if k not in promoted}
        pred.update(promoted)
        if isinstance(old.get("model"), dict) and isinstance(promoted.get("model"), dict):
            model = {k: None for k in old["model"] if k not in promoted["model"]}
            model.update(promoted["model"])
            pred["model"] = model
        patch = {"metadata": {"annotations": ann, "labels": labels},
                 "spec": {"predictor": pred, "canary": None}}
    return _finish(current, patch)


def rollback_patch(current: dict[str, Any]) -> dict[str, Any]:
    """Send every request back to the primary.

    Serverless: ``canaryTrafficPercent: 0`` pins all traffic to the previous
    rolled-out revision; the canary revision stays deployed (at 0 %) and the
    annotations keep their values, so no new revision is rolled. Standard:
    the ``spec.canary`` entry is removed, and with it the canary's Deployment.
    """
    state = read_state(current)
    _require_canary(state, "roll back")
    if state.mode == "serverless":
        # The annotations keep their values (re-stated so the patch says which
        # versions it is about): a changed annotation would roll a new revision.
        ann = {ANN_PRIMARY: state.primary_version, ANN_CANARY: state.canary_version}
        patch = {"metadata": {"annotations": ann}, "spec": {"predictor": {"canaryTrafficPercent": 0}}}
    else:
        patch = {"metadata": {"annotations": {ANN_CANARY: None}}, "spec": {"canary": None}}
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
    if ANN_CANARY not in desired["metadata"]["annotations"] and ANN_CANARY in _annotations(current):
        patch.setdefault("metadata", {}).setdefault("annotations", {})[ANN_CANARY] = None
    return _finish(current, patch)
