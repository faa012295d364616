"""Deploy stage: put a registered version on KServe, then let the evidence move its traffic.

Two steps, each a step function with its own tests and a KFP adapter of a few lines:

``deploy_step`` / ``deploy_op`` (after a promote decision)
    inputs: ``registry`` (URI), ``model_name``, ``version`` (``vN`` or an alias,
    default ``production``), ``config`` (the run's Config dict: its ``canary:``
    section gives namespace, mode, share, resources, log root: unset, the storage's
    logs bucket), ``namespace``
    (overrides ``canary.namespace`` when not empty), ``dry_run``.
    The first version goes straight to 100 %; a later one becomes a canary at
    ``canary.initial_percent`` beside the version serving now. Registry
    aliases follow: ``production`` for a full rollout, ``canary`` for a canary.
    Outputs: ``rollout`` - "first" (created with all traffic), "canary",
    "full" (an existing service moved to it at 100 %) or "unchanged"; and
    ``summary`` - a JSON document of what was done (state, patch, status).

``canary_analysis_step`` / ``canary_analysis_op``
    inputs: ``registry``, ``model_name``, ``config``, ``log_uri`` (default
    ``canary.log_uri``, else ``s3://<storage.logs_bucket>/predictions``, where the
    deploy step points the predictor), ``labels_uri`` (optional), ``steps`` (default
    ``canary.steps``; empty list: judge only), ``interval_seconds`` (traffic
    time per step before judging), ``since`` (ISO time: only log rows from then
    on, e.g. when the canary was deployed; default: all), ``namespace``, ``dry_run``.
    Judges the canary from the prediction logs and, with steps, moves its
    traffic through them, rolling back on the first failing step and promoting
    (``production`` follows) after the last.
    Outputs: ``decision`` - "promote", "hold" or "rollback" (a pipeline can
    branch on it with ``dsl.If``); ``summary`` - JSON with every step's verdict.

In the pipeline both run on the ``kubeloop-pipeline`` service account (RBAC in
namespace ``kubeloop``: get, list, watch, create, patch InferenceServices) and
get the S3 keys from the credentials Secret like the other steps; the
InferenceServices they write give the predictor its own Secret
(``canary.credentials_secret``), never the pipeline's. Locally, with
no cluster, they are off by default; ``dry_run`` returns what would be sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

# --- step functions ------------------------------------------------------------------


def deploy_step(
    *,
    registry: str,
    model_name: str,
    config: dict[str, Any] | None = None,
    version: str | None = None,
    namespace: str | None = None,
    dry_run: bool = False,
    wait: bool = True,
    isvcs: Any = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Deploy ``version`` of ``model_name``; returns the summary (see the module doc).

    ``isvcs``: an ``InferenceServices`` client (default: from the kubeconfig or the
    pod's service account; none with ``dry_run``).
    """
    from kubeloop.config import Config
    from kubeloop.deploy import rollout
    from kubeloop.deploy.inferenceservice import settings_from_config
    from kubeloop.deploy.kube import connect
    from kubeloop.registry import Registry

    cfg = Config.from_dict(config)
    reg = Registry(registry, cfg.storage)
    target = rollout.resolve_target(reg, model_name, version or None)
    settings = settings_from_config(cfg, namespace=namespace or None)
    if isvcs is None and not dry_run:
        isvcs = connect()
    res = rollout.deploy(
        isvcs, target, settings, default_percent=cfg.canary.initial_percent,
        registry=None if dry_run else reg, dry_run=dry_run, wait=wait,
        timeout=cfg.canary.wait_timeout_seconds, on_progress=on_progress,
    )
    out = res.to_dict()
    out["version"] = target.version
    if not res.changed:
        out["rollout"] = "unchanged"
    elif res.action == "created":
        out["rollout"] = "first"
    elif res.state.get("canary_version") == target.version:
        out["rollout"] = "canary"
    else:
        out["rollout"] = "full"
    return out


def canary_analysis_step(
    *,
    registry: str,
    model_name: str,
    config: dict[str, Any] | None = None,
    log_uri: str | None = None,
    labels_uri: str | None = None,
    steps: list[int] | None = None,
    interval_seconds: float = 300.0,
    since: str | None = None,
    namespace: str | None = None,
    dry_run: bool = False,
    isvcs: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Judge the canary and, with ``steps``, step its traffic; returns the summary
    with ``decision`` (see the module doc). ``steps=None`` takes ``canary.steps``;
    an empty list only judges."""
    from kubeloop.config import Config
    from kubeloop.deploy import rollout
    from kubeloop.deploy.kube import connect
    from kubeloop.errors import UserError
    from kubeloop.registry import Registry

    cfg = Config.from_dict(config)
    logs = cfg.prediction_log_root(log_uri or None)
    if not logs:
        raise UserError("canary analysis needs the prediction logs, but they are off (canary.log_uri: off): "
                        "give log_uri where the predictor writes them")
    try:
        when = rollout.parse_time(since) if since else None
    except UserError as exc:
        raise UserError(f"since {exc}") from None
    reg = Registry(registry, cfg.storage)
    ns = namespace or cfg.canary.namespace
    schedule = list(cfg.canary.steps) if steps is None else (list(steps) or None)
    if isvcs is None and not dry_run:
        isvcs = connect()
    return rollout.analyze_and_step(
        isvcs, model_name, ns, cfg, logs=logs, steps=schedule, labels=labels_uri or None, since=when,
        registry=reg, interval=interval_seconds, dry_run=dry_run,
        timeout=cfg.canary.wait_timeout_seconds, sleep=sleep, on_progress=on_progress,
    )


# --- KFP adapters --------------------------------------------------------------------

from kubeloop.component import component  # noqa: E402


@component
def deploy_op(registry: str, model_name: str, config: dict, version: str = "production",
              namespace: str = "",
              dry_run: bool = False) -> NamedTuple("DeployOutputs", [("rollout", str), ("summary", str)]):
    """Deploy a registered version to KServe: first straight to 100 %, later as a canary."""
    import json

    from kubeloop.components.deploy import deploy_step
    from kubeloop.progress import stage

    with stage("deploy") as st:
        out = deploy_step(registry=registry, model_name=model_name, config=config, version=version,
                          namespace=namespace, dry_run=dry_run, on_progress=print)
        st.result = f"{model_name} {out['version']}: {out['rollout']} ({out['state']})"
    # KFP takes a plain tuple in the order of the NamedTuple's fields.
    return out["rollout"], json.dumps(out, allow_nan=False, default=str)


@component
def canary_analysis_op(registry: str, model_name: str, config: dict, log_uri: str = "",
                       labels_uri: str = "", steps: list = None,  # noqa: RUF013 - KFP default
                       interval_seconds: float = 300.0, since: str = "", namespace: str = "",
                       dry_run: bool = False) -> NamedTuple("AnalysisOutputs",
                                                            [("decision", str), ("summary", str)]):
    """Judge the canary from the prediction logs, stepping its traffic through a schedule."""
    import json

    from kubeloop.components.deploy import canary_analysis_step
    from kubeloop.progress import stage

    with stage("canary-analysis") as st:
        out = canary_analysis_step(registry=registry, model_name=model_name, config=config,
                                   log_uri=log_uri, labels_uri=labels_uri,
                                   steps=None if steps is None else [int(s) for s in steps],
                                   interval_seconds=interval_seconds, since=since, namespace=namespace,
                                   dry_run=dry_run, on_progress=print)
        st.result = f"{model_name}: canary {out['canary']} vs {out['primary']}: {out['decision']}"
    return out["decision"], json.dumps(out, allow_nan=False, default=str)


__all__ = ["deploy_step", "canary_analysis_step", "deploy_op", "canary_analysis_op"]
