"""Names and directions of the metrics every stage agrees on.

Keys are snake case and are what ``kubeloop run --json`` prints under ``metrics``.
"""

from __future__ import annotations

from kubeloop.errors import UserError

CLASSIFICATION_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier_score",
    "calibration_error",
)
REGRESSION_METRICS = ("mae", "rmse", "r2")

# Everything else is higher-is-better.
LOWER_IS_BETTER = frozenset(
    {"log_loss", "brier_score", "calibration_error", "mae", "rmse", "mse", "mape", "median_ae"}
)

DEFAULT_PRIMARY = {"classification": "roc_auc", "regression": "rmse"}


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def improvement(metric: str, challenger: float, reference: float) -> float:
    """How much better ``challenger`` is than ``reference``: positive means better,
    whatever the metric's direction."""
    delta = challenger - reference
    return delta if higher_is_better(metric) else -delta


METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


class MetricError(UserError, ValueError):
    """A configured metric that the task cannot be scored with."""


def check_metric(metric: str, task: str | None = None, *, role: str = "metric") -> str:
    """``metric`` if it scores ``task`` (any task when None); else a MetricError
    that lists what would."""
    known = METRICS[task] if task else CLASSIFICATION_METRICS + REGRESSION_METRICS
    if metric not in known:
        what = f"a {task} model" if task else "any model"
        raise MetricError(f"{role} {metric!r} cannot score {what}; choose one of {list(known)}")
    return metric


def primary_metric(task: str, configured: str | None = None) -> str:
    return check_metric(configured or DEFAULT_PRIMARY[task], task, role="gate.primary_metric")


def check_gate_metrics(task: str | None, primary: str | None, guardrails: list[str]) -> None:
    """Refuse a gate that names metrics the task does not have, before anything trains."""
    if primary:
        check_metric(primary, task, role="gate.primary_metric")
    for name in guardrails:
        check_metric(name, task, role="gate.guardrails metric")
