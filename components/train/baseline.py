"""The trivial baseline, and whether a candidate beats it beyond validation noise."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor

from kubeloop.components.train.base import (
    BASELINE,
    TrainError,
    _check_metric,
    _check_task,
    _plain,
    _short,
)
from kubeloop.components.train.inputs import _as_labels, _check_frame, _check_inputs
from kubeloop.components.train.scoring import _proba_over, _threads, score
from kubeloop.components.train.search import CandidateResult


def fit_baseline(X_train: pd.DataFrame, y_train: Any, *, task: str) -> BaseEstimator:
    """The trivial model every candidate must beat: class priors or the mean."""
    _check_task(task)
    X_train = _check_frame(X_train, "X_train")
    y = _as_labels(y_train, "y_train", len(X_train), task)
    if task == "classification":
        return DummyClassifier(strategy="prior").fit(X_train, y)
    return DummyRegressor(strategy="mean").fit(X_train, y)


def baseline_candidate(
    X_train: pd.DataFrame,
    y_train: Any,
    X_valid: pd.DataFrame,
    y_valid: Any,
    *,
    task: str,
    metric: str,
    positive_label: Any = None,
) -> CandidateResult:
    """The baseline fitted on all training rows and scored like a candidate."""
    _check_task(task)
    _check_metric(metric, task)
    X_train, y_tr, X_valid, y_va = _check_inputs(X_train, y_train, X_valid, y_valid, task)
    start = time.perf_counter()
    model = fit_baseline(X_train, y_tr, task=task)
    seconds = time.perf_counter() - start
    value = score(metric, model, X_valid, y_va, task=task, positive_label=positive_label)
    return CandidateResult(
        family=BASELINE,
        params={"strategy": model.strategy},
        estimator=model,
        valid_score=value,
        metric=metric,
        search=[],
        fit_seconds=seconds,
        n_train_rows=len(X_train),
        task=task,
        n_valid_rows=len(X_valid),
    )


# The validation bootstrap that says whether a candidate beat the baseline: a few
# hundred paired replicates on at most 20,000 rows cost well under a second.
NOISE_REPLICATES = 300
NOISE_CONFIDENCE = 0.95


def _outputs(model: Any, X: pd.DataFrame, task: str, labels: Sequence[Any]) -> np.ndarray:
    with _threads(X):
        if task == "classification":
            proba = np.asarray(model.predict_proba(X), dtype=np.float64)
            return _proba_over(proba, list(model.classes_), labels)
        return np.asarray(model.predict(X), dtype=np.float64)


def paired_improvement(
    model: Any,
    reference: Any,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    labels: Sequence[Any],
    *,
    task: str,
    metric: str,
    positive_label: Any = None,
    seed: int = 0,
) -> Any:
    """``model``'s improvement over ``reference`` on ``metric`` on the validation rows,
    paired and bootstrapped (``kubeloop.paired``); ``labels`` are the training labels."""
    from kubeloop.components.evaluate import _resolve_positive
    from kubeloop.paired import paired_bootstrap

    labels = list(labels)
    positive = None
    if task == "classification":
        y = pd.Index(labels).get_indexer(y_valid)
        if (y < 0).any():
            raise TrainError("y_valid has labels that are not in y_train")
        positive = _resolve_positive(positive_label, labels)
    else:
        y = np.asarray(y_valid, dtype=np.float64)
    return paired_bootstrap(
        task, y, _outputs(model, X_valid, task, labels), _outputs(reference, X_valid, task, labels),
        [metric], positive=positive, confidence=NOISE_CONFIDENCE, n_bootstrap=NOISE_REPLICATES,
        seed=seed,
    )[metric]


def compare_with_baseline(
    head: Any,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    *,
    task: str,
    metric: str,
    positive_label: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """How much ``head`` beats the trivial baseline on the validation rows, paired and
    bootstrapped (``kubeloop.paired``): ``within_noise`` when the lower end of the
    improvement's interval is not above 0, i.e. the candidate did not show it learnt
    anything the class priors (or the mean) do not already give."""
    baseline = fit_baseline(X_train, y_train, task=task)
    labels = list(np.unique(y_train)) if task == "classification" else []
    estimate = paired_improvement(
        head, baseline, X_valid, y_valid, labels, task=task, metric=metric,
        positive_label=positive_label, seed=seed,
    )
    low = estimate.low
    return _plain(
        {
            "metric": metric,
            "baseline_score": estimate.reference,
            "estimate": estimate.estimate,
            "low": low,
            "high": estimate.high,
            "confidence": NOISE_CONFIDENCE,
            "n_rows": estimate.n_rows,
            # An undefined interval (one class in validation) cannot show learning.
            "within_noise": low is None or low <= 0.0,
        }
    )


def _try_compare_with_baseline(result: CandidateResult, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return compare_with_baseline(result.estimator, *args, **kwargs)
    except Exception as exc:  # the candidate stands; only the judgement is missing
        return {"metric": result.metric, "within_noise": None, "error": _short(exc)}
