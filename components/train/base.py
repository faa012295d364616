"""Names, checks and helpers every part of the train stage shares."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kubeloop.errors import UserError
from kubeloop.metric_names import CLASSIFICATION_METRICS, REGRESSION_METRICS

# Also the tie-break order of select_best: on equal scores the simpler, cheaper
# family wins.
FAMILIES = ("linear", "hist_gradient_boosting", "random_forest", "extra_trees")
BASELINE = "baseline"
TASKS = ("classification", "regression")

# Forest cost grows with rows per tree times trees. 100 trees (scikit-learn's default)
# on at most 20,000 bootstrap rows each keep a search on 100,000 rows plus a refit
# on 1M rows x 20 columns near a minute on 2 cores.
FOREST_TREES = 100
FOREST_ROWS_PER_TREE = 20_000
# Rows the features step transforms at a time when preparing a model's inputs.
TRANSFORM_BLOCK_ROWS = 100_000
# Stands for a missing category code where a model cannot take NaN.
MISSING_CODE = -1.0

# Below this many input cells (rows x columns) a fit runs on one thread. OpenMP
# (HistGradientBoosting) and BLAS (lbfgs) threads cost more than they save on small
# inputs, and many times more when the cores are shared with other work: spinning
# threads made a search on 3,000 rows ten times slower than one thread (the upstream
# report is scikit-learn issue #30662). Forests parallelize over trees with joblib and
# are not affected.
SINGLE_THREAD_CELLS = 500_000

_MAX_WARNINGS = 3
_MAX_MESSAGE_CHARS = 300


class TrainError(UserError, ValueError):
    """Training cannot proceed; the message names the family, column or value to fix."""


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise TrainError(f"unknown model family {family!r}; known: {list(FAMILIES)}")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise TrainError(f"task must be one of {list(TASKS)}, got {task!r}")


def _check_metric(metric: str, task: str) -> None:
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in known:
        raise TrainError(f"metric {metric!r} cannot score {task}; choose one of {list(known)}")


def _plain(value: Any) -> Any:
    """A JSON-able copy: numpy scalars to Python numbers, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + " ..."


def _usable_score(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any) -> str:
    number = _usable_score(value)
    return "n/a" if number is None else f"{number:.4f}"
