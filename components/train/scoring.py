"""Scoring a fitted head with the metric functions evaluation reports and the gate judges."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from kubeloop.components.evaluate import (
    EvaluationError,
    classification_metrics,
    regression_metrics,
)
from kubeloop.components.train.base import (
    SINGLE_THREAD_CELLS,
    TrainError,
    _check_metric,
    _check_task,
)


def _label_position(label: Any, labels: Sequence[Any]) -> int | None:
    # The schema keeps labels as strings while a model may hold ints or bools.
    for i, c in enumerate(labels):
        if c == label:
            return i
    for i, c in enumerate(labels):
        if str(c) == str(label):
            return i
    return None


def _proba_over(proba: np.ndarray, classes: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
    """Probability columns in ``labels`` order; a label the model never saw (its
    training rows may have missed a rare class) gets probability 0."""
    out = np.zeros((proba.shape[0], len(labels)), dtype=np.float64)
    for j, c in enumerate(classes):
        i = _label_position(c, labels)
        if i is None:
            raise TrainError(
                f"the model predicts class {c!r}, which is not among the labels "
                f"{[str(v) for v in labels]}; pass every training label as labels"
            )
        out[:, i] = proba[:, j]
    return out


def _threads(X: Any) -> contextlib.AbstractContextManager[Any]:
    """One OpenMP and BLAS thread for a small input (see ``SINGLE_THREAD_CELLS``)."""
    shape = getattr(X, "shape", ())
    if len(shape) == 2 and shape[0] * shape[1] < SINGLE_THREAD_CELLS:
        return threadpool_limits(limits=1)
    return contextlib.nullcontext()


def score(
    metric: str,
    estimator: Any,
    X: pd.DataFrame,
    y: Any,
    *,
    task: str,
    labels: Sequence[Any] | None = None,
    positive_label: Any = None,
) -> float:
    """``metric`` of a fitted model on ``(X, y)``; NaN where the metric is undefined
    (ROC-AUC with a single class in ``y``, R2 of a constant target).

    Classification metrics use ``predict_proba``, whose columns follow
    ``estimator.classes_``. ``labels`` (default: the model's classes) are the classes
    scored over; binary metrics are for ``positive_label`` (default: the greater
    label); multiclass ROC-AUC is one-vs-rest weighted by prevalence.
    """
    _check_task(task)
    _check_metric(metric, task)
    try:
        if task == "classification":
            classes = list(estimator.classes_)
            with _threads(X):
                proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
            if labels is None:
                labels = classes
            else:
                labels = list(labels)
                if labels != classes:
                    proba = _proba_over(proba, classes, labels)
            values = classification_metrics(y, proba, labels, positive_label=positive_label)
        else:
            with _threads(X):
                predicted = estimator.predict(X)
            values = regression_metrics(y, predicted)
    except EvaluationError as exc:
        raise TrainError(str(exc)) from None
    value = values[metric]
    return math.nan if value is None else float(value)
