"""The retraining policy: a pure function of the evidence.

Retrain when there is a reason (drift on a feature that matters to the model,
or the live metric worse than at training by more than the tolerance, with the
whole interval of the live metric beyond it and enough labelled rows behind
it) and nothing holds it back: enough labels that arrived since the last retrain
to learn from (when a label source is configured; without one drift alone may
retrain), data to train on that differs from what the models were already
trained on, and the cool-down since the last retrain or attempt (a failed one
too) has passed. Drift on a feature the model hardly uses is reported but does
not retrain on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubeloop.metric_names import improvement


@dataclass(frozen=True)
class Evidence:
    drifted_columns: list[str] = field(default_factory=list)
    # Feature -> importance (any scale); None: unknown, every feature counts.
    importance: dict[str, float] | None = None
    prediction_drifted: bool = False
    metric: str | None = None
    metric_value: float | None = None
    metric_training: float | None = None
    # The live metric's interval and the labelled rows it rests on; with no
    # interval, decay is reported but never retrains.
    metric_low: float | None = None
    metric_high: float | None = None
    n_metric: int = 0
    # Labels that arrived since the last retrain (or attempt), joined to predictions.
    n_new_labeled: int = 0
    # Whether a label source is configured. Without one, no label can ever
    # arrive: waiting for min_labeled_rows would block every retrain for good, so
    # drift alone (held to monitoring.false_alarm_rate) may retrain.
    label_feed: bool = True
    last_retrain_at: datetime | None = None
    # The last retrain the monitoring started, whether or not it registered a version.
    last_attempt_at: datetime | None = None
    now: datetime | None = None
    retrain_data: bool = True
    # The version already trained on exactly this retrain data (by its hash), if any.
    same_data_as: str | None = None


def important_features(importance: dict[str, float] | None, top: int) -> set[str] | None:
    """The ``top`` features by importance (name order breaks ties); None = all count."""
    if not importance:
        return None
    ranked = sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))
    return {name for name, value in ranked[:top] if value > 0} or {ranked[0][0]}


def label_rule(ev: Evidence, cfg: Any) -> str:
    """Which labels rule applies, in words, for the report."""
    if not ev.label_feed:
        return (f"no label feed: drift alone can retrain (drift alarms held to monitoring.false_alarm_rate "
                f"{cfg.false_alarm_rate:g}); monitoring.min_labeled_rows {cfg.min_labeled_rows} does not apply")
    return f"label feed: a retrain needs monitoring.min_labeled_rows {cfg.min_labeled_rows} labels since the last one"


def decide_retrain(ev: Evidence, cfg: Any) -> dict[str, Any]:
    """``{"retrain", "reasons", "blocked_by", "important_drifted", "metric_drop", "label_rule"}``;
    ``cfg`` is a ``MonitoringConfig``."""
    reasons: list[str] = []
    blocked: list[str] = []
    top = important_features(ev.importance, cfg.important_features)
    drifted = list(ev.drifted_columns)
    important = [c for c in drifted if top is None or c in top]
    if important:
        reasons.append(f"drift on {'important ' if top is not None else ''}features: {', '.join(important)}")
    drop = bound = None
    if ev.metric and ev.metric_value is not None and ev.metric_training is not None:
        drop = -improvement(ev.metric, ev.metric_value, ev.metric_training)
        if ev.metric_low is not None and ev.metric_high is not None:
            # The end of the interval nearest to (or past) the training value: the
            # smallest drop the labels are consistent with.
            bound = min(-improvement(ev.metric, end, ev.metric_training) for end in (ev.metric_low, ev.metric_high))
        if (bound is not None and bound > cfg.metric_tolerance + 1e-12  # "beyond": not an exact tie's float noise
                and ev.n_metric >= cfg.decay_min_rows):
            reasons.append(
                f"{ev.metric} {ev.metric_value:.4f} [{ev.metric_low:.4f}, {ev.metric_high:.4f}] vs "
                f"{ev.metric_training:.4f} at training (worse by at least {bound:.4f} > tolerance "
                f"{cfg.metric_tolerance:g}, on {ev.n_metric} labelled rows)"
            )
    if ev.label_feed and ev.n_new_labeled < cfg.min_labeled_rows:
        blocked.append(f"{ev.n_new_labeled} labels arrived since the last retrain < monitoring.min_labeled_rows "
                       f"{cfg.min_labeled_rows}")
    if not ev.retrain_data:
        blocked.append("no fresh training data given")
    elif ev.same_data_as:
        blocked.append(f"the retrain data is the data {ev.same_data_as} was trained on (same sha256): "
                       "nothing new to learn from")
    last = max((t for t in (ev.last_retrain_at, ev.last_attempt_at) if t is not None), default=None)
    if last is not None and ev.now is not None and cfg.cooldown_hours > 0:
        since = ev.now - last
        if since < timedelta(hours=cfg.cooldown_hours):
            hours = since.total_seconds() / 3600
            what = "retrain attempt" if last == ev.last_attempt_at and last != ev.last_retrain_at else "retrain"
            blocked.append(f"cool-down: last {what} {hours:.1f} h ago < {cfg.cooldown_hours:g} h")
    return {
        "retrain": bool(reasons) and not blocked,
        "reasons": reasons,
        "blocked_by": blocked if reasons else [],
        "important_drifted": important,
        "unimportant_drifted": [c for c in drifted if c not in important],
        "prediction_drifted": ev.prediction_drifted,
        "metric_drop": drop,
        "metric_drop_bound": bound,
        "label_rule": label_rule(ev, cfg),
    }
