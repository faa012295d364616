"""The retraining policy: a pure function of the evidence.

Retrain when there is a reason (drift on a feature that matters to the model,
or the live metric fell beyond the tolerance below the training metric) and
nothing holds it back (enough new labelled rows to learn from, data to train
on, and the cool-down since the last retrain has passed). Drift on a feature
the model hardly uses is reported but does not retrain on its own.
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
    # New labelled rows available to retrain on (joined labels, fresh training data).
    n_new_labeled: int = 0
    last_retrain_at: datetime | None = None
    now: datetime | None = None
    retrain_data: bool = True


def important_features(importance: dict[str, float] | None, top: int) -> set[str] | None:
    """The ``top`` features by importance (name order breaks ties); None = all count."""
    if not importance:
        return None
    ranked = sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))
    return {name for name, value in ranked[:top] if value > 0} or {ranked[0][0]}


def decide_retrain(ev: Evidence, cfg: Any) -> dict[str, Any]:
    """``{"retrain", "reasons", "blocked_by", "important_drifted", "metric_drop"}``;
    ``cfg`` is a ``MonitoringConfig``."""
    reasons: list[str] = []
    blocked: list[str] = []
    top = important_features(ev.importance, cfg.important_features)
    drifted = list(ev.drifted_columns)
    important = [c for c in drifted if top is None or c in top]
    if important:
        reasons.append(f"drift on {'important ' if top is not None else ''}features: {', '.join(important)}")
    drop = None
    if ev.metric and ev.metric_value is not None and ev.metric_training is not None:
        drop = -improvement(ev.metric, ev.metric_value, ev.metric_training)
        if drop > cfg.metric_tolerance + 1e-12:  # "beyond": not the float noise of an exact tie
            reasons.append(
                f"{ev.metric} {ev.metric_value:.4f} vs {ev.metric_training:.4f} at training "
                f"(worse by {drop:.4f} > tolerance {cfg.metric_tolerance:g})"
            )
    if ev.n_new_labeled < cfg.min_labeled_rows:
        blocked.append(f"{ev.n_new_labeled} new labelled rows < monitoring.min_labeled_rows {cfg.min_labeled_rows}")
    if not ev.retrain_data:
        blocked.append("no fresh training data given")
    if ev.last_retrain_at is not None and ev.now is not None and cfg.cooldown_hours > 0:
        since = ev.now - ev.last_retrain_at
        if since < timedelta(hours=cfg.cooldown_hours):
            hours = since.total_seconds() / 3600
            blocked.append(f"cool-down: last retrain {hours:.1f} h ago < {cfg.cooldown_hours:g} h")
    return {
        "retrain": bool(reasons) and not blocked,
        "reasons": reasons,
        "blocked_by": blocked if reasons else [],
        "important_drifted": important,
        "unimportant_drifted": [c for c in drifted if c not in important],
        "prediction_drifted": ev.prediction_drifted,
        "metric_drop": drop,
    }
