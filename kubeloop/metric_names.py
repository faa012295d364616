"""Names and directions of the metrics every stage agrees on.

Keys are snake case and are what ``kubeloop run --json`` prints under ``metrics``.
"""

from __future__ import annotations

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


def primary_metric(task: str, configured: str | None = None) -> str:
    return configured or DEFAULT_PRIMARY[task]
