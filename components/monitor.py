"""Monitor stage: drift and performance decay of the production model, the
report, and the retraining decision the monitoring pipeline branches on.

``monitor_step`` does the work on plain values (URIs, a Config, a directory for
its files) and has its own tests; ``monitor_op`` is the KFP adapter around it.
The version watched is the one serving (from the InferenceService when a
cluster is reachable, else from the newest prediction logs); the registry's
``production`` is checked against it, and a disagreement is an alert. Its
primary answers that were not rejected, within the drift window, are compared
with the profile stored with that version; labels, when given, are joined to
its logs of the (longer) label window for the metric and its interval; the
policy decides with everything it knows, and a retrain it starts is recorded
in the registry so the cool-down holds even when the retrain fails.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from kubeloop.errors import UserError


class MonitorError(UserError):
    """Monitoring cannot run as asked; the message says what to fix."""


def model_log_uri(logs_uri: str, model: str, storage: Any = None) -> str:
    """The model's own log folder when ``logs_uri`` is the log root
    (``<root>/<model>/date=.../``), else ``logs_uri`` as given."""
    from kubeloop.monitoring.stream import has_data
    from kubeloop.storage import join

    own = join(logs_uri, model)
    return own if has_data(own, storage) else logs_uri


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def window_start(now: datetime, hours: float) -> datetime | None:
    """The start of a window of ``hours`` ending at ``now``; None (no start) for 0."""
    return now - timedelta(hours=hours) if hours and hours > 0 else None


def trained_on(registry: Any, model: str, sha256: str | None) -> str | None:
    """The newest version of ``model`` whose training data had this sha256."""
    if not sha256:
        return None
    for info in reversed(registry.list_versions(model)):
        if (info.metadata or {}).get("data_sha256") == sha256:
            return info.version
    return None


def last_retrain_at(registry: Any, model: str) -> datetime | None:
    """When the newest version of ``model`` was registered (a retrain registers a
    version whether or not its gate promotes it)."""
    times = [_parse_time(v.created_at) for v in registry.list_versions(model)]
    times = [t for t in times if t is not None]
    return max(times) if times else None


def monitor_step(
    *,
    model_name: str,
    registry: str,
    logs_uri: str,
    cfg: Any,
    out_dir: str,
    labels_uri: str = "",
    retrain_data_uri: str = "",
    window_hours: float = 0.0,
    version: str = "production",
    now: datetime | None = None,
    isvcs: Any = None,
) -> dict[str, Any]:
    """Drift, decay and the retraining decision; writes ``report.html``,
    ``report.md``, ``verdict.json`` and ``drift.json`` into ``out_dir``."""
    from kubeloop.monitoring.attempts import last_attempt_at, record_attempt
    from kubeloop.monitoring.decay import (
        decay_report,
        default_metric,
        join_labels,
        newly_labeled,
        read_labels,
        read_logged_predictions,
        served_rows,
    )
    from kubeloop.monitoring.policy import Evidence, decide_retrain
    from kubeloop.monitoring.profile import ProfileError, load_profile
    from kubeloop.monitoring.report import drift_html, markdown, verdict
    from kubeloop.monitoring.serving import alerts, read_cluster, serving_state, version_counts
    from kubeloop.monitoring.stats import compare
    from kubeloop.monitoring.stream import (
        accumulate_uri,
        count_rows,
        data_sha256,
        has_data,
        new_accumulators,
    )
    from kubeloop.registry import Registry

    mon = cfg.monitoring
    now = now or datetime.now(timezone.utc)
    reg = Registry(registry, cfg.storage)
    # The drift window: the run's own, else the configured one (0: everything logged).
    since = window_start(now, window_hours if window_hours and window_hours > 0 else mon.drift_window_hours)
    logs = model_log_uri(logs_uri, model_name, cfg.storage)
    # What serves, from the logs and (when reachable) the cluster; the registry's
    # production is checked against it, and the version serving is what is watched.
    counts = version_counts(logs, storage=cfg.storage, since=since, until=now) if has_data(logs, cfg.storage) else None
    cluster, cluster_note = read_cluster(model_name, cfg.canary.namespace, isvcs=isvcs)
    serving = serving_state(counts, cluster)
    production = reg.get_alias(model_name, "production")
    watched = version
    if version == "production" and serving["primary"] and serving["primary"] != production:
        watched = serving["primary"]
    alarms: list[str] = []
    try:
        profile = load_profile(reg, model_name, watched)
    except ProfileError as exc:
        raise MonitorError(str(exc)) from None
    except UserError as exc:
        if watched == version:
            raise MonitorError(str(exc)) from None
        alarms.append(f"{model_name} {watched} answers requests but cannot be read from the registry ({exc}); "
                      f"watching {version} instead")
        try:
            profile = load_profile(reg, model_name, version)
        except UserError as exc2:
            raise MonitorError(str(exc2)) from None
    served = profile["version"]
    accs, n_rows, seen = accumulate_uri(
        logs, profile, storage=cfg.storage, batch_rows=mon.batch_rows,
        row_filter=served_rows(served, since, now), prediction_column="prediction",
        extra_columns=["time", "version", "role", "status"], since=since, until=now,
    ) if counts is not None else (new_accumulators(profile), 0, set())
    drift = compare(profile, accs, mon, columns_seen=seen if n_rows else None, n_current=n_rows)
    if n_rows == 0:
        drift["note"] = f"no answered requests of {model_name} {served} in {logs}"
    alarms += alerts(production=production, canary_alias=reg.get_alias(model_name, "canary"), serving=serving,
                    n_rows=n_rows, model=model_name)
    metric = mon.metric or default_metric(profile.get("task"))
    training_value = (profile.get("metrics") or {}).get(metric)
    decay = None
    last_retrain, last_attempt = last_retrain_at(reg, model_name), last_attempt_at(reg, model_name)
    n_new = 0
    if labels_uri and has_data(labels_uri, cfg.storage):
        # Labels arrive days after the prediction: their own, longer window.
        label_since = window_start(now, mon.labels_window_hours)
        logged = read_logged_predictions(logs, storage=cfg.storage, version=served, since=label_since, until=now)
        joined = join_labels(logged, read_labels(labels_uri, storage=cfg.storage))
        decay = decay_report(joined, metric=metric, task=profile.get("task"), training_value=training_value,
                             window_hours=mon.decay_window_hours, positive_label=profile.get("positive_label"),
                             n_logged=len(logged), confidence=mon.decay_confidence)
        n_new = newly_labeled(joined, max((t for t in (last_retrain, last_attempt) if t), default=None))
        decay["n_new_labeled"] = n_new
    elif labels_uri:
        decay = {"metric": metric, "training_value": training_value, "n_labeled": 0, "value": None,
                 "windows": [], "note": f"no labels at {labels_uri} yet"}
    fresh_rows = count_rows(retrain_data_uri, cfg.storage) if retrain_data_uri else 0
    evidence = Evidence(
        drifted_columns=drift["drifted_columns"],
        importance=profile.get("importance"),
        prediction_drifted=drift["prediction_drifted"],
        metric=metric,
        metric_value=(decay or {}).get("value"),
        metric_training=training_value,
        metric_low=(decay or {}).get("low"),
        metric_high=(decay or {}).get("high"),
        n_metric=(decay or {}).get("n_labeled", 0),
        n_new_labeled=n_new,
        label_feed=bool(labels_uri),
        last_retrain_at=last_retrain,
        last_attempt_at=last_attempt,
        now=now,
        retrain_data=bool(retrain_data_uri),
    )
    decision = decide_retrain(evidence, mon)
    fresh_sha = None
    if decision["reasons"] and retrain_data_uri:
        # Only now is the data read in full: the same bytes a version already learnt
        # from would retrain to the same model and the gate would reject it.
        fresh_sha = data_sha256(retrain_data_uri, cfg.storage)
        same = trained_on(reg, model_name, fresh_sha)
        if same:
            decision = decide_retrain(replace(evidence, same_data_as=same), mon)
    decision["alerts"] = alarms
    if production and serving["primary"] and serving["primary"] != production and decision["retrain"]:
        # A retrain's gate would compare with a production model nothing serves.
        decision.update(retrain=False, blocked_by=[*decision["blocked_by"],
                                                   "the registry's production is not the version serving"])
    if decision["retrain"]:
        # Recorded before the training branch runs, so a retrain that fails still
        # starts the cool-down.
        record_attempt(reg, model_name, at=now, data_uri=retrain_data_uri, data_sha256=fresh_sha,
                       serving_version=served, reasons=decision["reasons"])
    result = verdict(drift, decay, decision)
    result.update(model=model_name, version=served, logs=logs, checked_at=now.isoformat(timespec="seconds"),
                  fresh_rows=fresh_rows, alerts=alarms, production=production,
                  serving={k: serving[k] for k in ("primary", "canary", "source", "answering")},
                  notes=[n for n in (cluster_note,) if n])
    os.makedirs(out_dir, exist_ok=True)
    title = f"kubeloop monitoring: {model_name} {served}"
    files = {
        "report.html": drift_html(drift, decay, decision, title=title),
        "report.md": markdown(drift, decay, decision),
        "verdict.json": json.dumps(result, indent=2, allow_nan=False),
        "drift.json": json.dumps({"drift": drift, "decay": decay, "decision": decision}, allow_nan=False),
    }
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return {"verdict": result, "drift": drift, "decay": decay, "decision": decision}


def publish(out_dir: str, report_uri: str, storage: Any = None) -> None:
    """Copy the report files to ``report_uri`` (a directory or s3:// prefix)."""
    from kubeloop.storage import join, put_file

    for name in ("report.html", "report.md", "verdict.json", "drift.json"):
        put_file(os.path.join(out_dir, name), join(report_uri, name), storage)


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def monitor_op(
    model_name: str,
    registry: str,
    logs_uri: str,
    labels_uri: str,
    retrain_data_uri: str,
    window_hours: float,
    report_uri: str,
    config: dict,
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    verdict: Output[Artifact],
) -> bool:
    """Drift and decay of the production model; outputs the retraining decision.

    One output parameter (``Output``), the decision: the local runner resolves a
    ``dsl.If`` condition only on a task's ``Output``; the reasons are in the
    report, the verdict artifact and the step's progress line."""
    import os
    import shutil
    import tempfile

    from kubeloop.components.monitor import monitor_step, publish
    from kubeloop.config import Config
    from kubeloop.progress import stage

    with stage("monitor") as st:
        cfg = Config.from_dict(config)
        out = tempfile.mkdtemp(prefix="kubeloop-monitor-")
        res = monitor_step(model_name=model_name, registry=registry, logs_uri=logs_uri, cfg=cfg, out_dir=out,
                           labels_uri=labels_uri, retrain_data_uri=retrain_data_uri, window_hours=window_hours)
        for art, name in ((report, "report.html"), (summary, "report.md"), (verdict, "verdict.json")):
            shutil.copyfile(os.path.join(out, name), art.path)
        if report_uri:
            publish(out, report_uri, cfg.storage)
        v = res["verdict"]
        metrics.log_metric("drifted_columns", len(v["drifted_columns"]))
        metrics.log_metric("share_drifted", res["drift"]["share_drifted"])
        metrics.log_metric("rows", v["n_current"] or 0)
        if v.get("metric_value") is not None:
            metrics.log_metric(f"live_{v['metric']}", v["metric_value"])
        reason = "; ".join(v["reasons"] + [f"held back: {b}" for b in v["blocked_by"]]) or "no trigger"
        st.result = f"{'RETRAIN' if v['retrain'] else 'no retraining'}: {reason}"
        if v["alerts"]:
            st.result += "; ALERT: " + "; ".join(v["alerts"])
        st.details = {"verdict": v, "report_uri": report_uri or None}
        shutil.rmtree(out, ignore_errors=True)
    return bool(v["retrain"])
