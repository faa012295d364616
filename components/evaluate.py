"""Evaluate stage: how good is the challenger on held-out rows, and for whom?

The model is predicted once on the test set; everything else is computed from
those predictions: the headline metrics (named in ``kubeloop.metric_names``), the
same metrics for the trivial baseline and the production model (the champion),
the lift over the baseline, metrics per slice of every categorical feature and
sensitive column, the disparity of a metric across the slices of each sensitive
column, the confusion matrix and ROC curve in the shape the KFP UI renders, and
how much the score moves when the model is refitted with other seeds.

Every result is JSON-able: plain floats and ints, and ``None`` where a metric is
undefined (ROC-AUC with one class in the labels, precision with no positive
prediction, R2 of a constant target), never NaN.

Metrics are computed here with vectorized numpy instead of ``sklearn.metrics``:
they run once per slice, often hundreds of times per evaluation, and sklearn's
per-call input validation (label type detection, ``np.unique`` on the labels)
costs 1-4 ms per metric per call, seconds in all on a large test set, while the
arithmetic itself is microseconds. The tests check every metric against
``sklearn.metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import confusion_matrix, roc_curve
from sklearn.model_selection import train_test_split

from kubeloop.config import EvaluationConfig, GateConfig
from kubeloop.errors import UserError
from kubeloop.fingerprints import FingerprintError, FingerprintSet
from kubeloop.metric_names import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    higher_is_better,
    improvement,
)
from kubeloop.paired import paired_bootstrap
from kubeloop.schema import Schema, categorical_features, feature_columns

MISSING = "<missing>"
MAX_ROC_POINTS = 200
# Error messages from a champion can embed whole frames; the report needs the gist.
_MAX_ERROR_CHARS = 500
# A numeric sensitive column with more distinct values than max_slices_per_column
# is cut into this many quantile bins, so that every row lands in some slice.
_NUMERIC_SLICE_BINS = 5


class EvaluationError(UserError, ValueError):
    """The inputs cannot be evaluated; the message names the column or value to fix."""


# ---------------------------------------------------------------------------
# Predictions: the one pass of the model over the test rows.


@dataclass
class Predictions:
    """A model's output on the labelled rows of a test frame.

    ``rows`` are positions (``iloc``) in the frame; for classification ``y`` holds
    indices into ``classes`` (the model's ``classes_``, i.e. the ``proba`` columns).
    """

    task: str
    rows: np.ndarray
    y: np.ndarray
    proba: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    classes: list[Any] = field(default_factory=list)
    positive: int | None = None
    n_missing_target: int = 0

    def __len__(self) -> int:
        return int(self.rows.size)

    def subset(self, positions: np.ndarray) -> Predictions:
        """The predictions of some of the rows (positions into ``self.rows``)."""
        return Predictions(
            task=self.task,
            rows=self.rows[positions],
            y=self.y[positions],
            proba=None if self.proba is None else self.proba[positions],
            y_pred=None if self.y_pred is None else self.y_pred[positions],
            classes=self.classes,
            positive=self.positive,
        )


def _label_index(label: Any, classes: Sequence[Any]) -> int | None:
    """Where ``label`` is in ``classes``, also when one side is a string and the other
    is not (the schema keeps labels as strings; a model may have int or bool classes)."""
    for i, c in enumerate(classes):
        if c == label:
            return i
    for i, c in enumerate(classes):
        if str(c) == str(label):
            return i
    return None


def _encode_labels(y_true: Any, classes: Sequence[Any], *, what: str = "y_true") -> np.ndarray:
    values = pd.Series(np.asarray(y_true, dtype=object))
    missing = int(values.isna().sum())
    if missing:
        raise EvaluationError(
            f"{what} has {missing} missing labels; drop unlabelled rows before scoring"
        )
    index = pd.Index(list(classes), dtype=object)
    codes = index.get_indexer(values)
    if (codes < 0).any():
        # Same labels, other type (e.g. "1" from a CSV against int class 1).
        as_text = pd.Index([str(c) for c in classes], dtype=object)
        codes = as_text.get_indexer(values.astype(str))
    if (codes < 0).any():
        unknown = sorted({str(v) for v in values[codes < 0]})[:10]
        raise EvaluationError(
            f"{what} has labels the model does not know: {unknown} "
            f"(model classes: {[str(c) for c in classes]}); the model must be trained on "
            "data that contains every label of the test set"
        )
    return codes.astype(np.int64)


def _check_proba(proba: Any, n: int, k: int, *, who: str = "the model") -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape != (n, k):
        raise EvaluationError(
            f"{who} returned probabilities of shape {p.shape}; expected ({n}, {k}): "
            "one row per test row and one column per class"
        )
    if not np.isfinite(p).all():
        raise EvaluationError(f"{who} returned NaN or infinite probabilities")
    return p


def _resolve_positive(positive_label: Any, classes: Sequence[Any]) -> int | None:
    if len(classes) != 2:
        return None
    if positive_label is None:
        # scikit-learn's convention: the greater of the two sorted classes.
        return 1
    pos = _label_index(positive_label, classes)
    if pos is None:
        raise EvaluationError(
            f"positive label {positive_label!r} is not one of the model's classes "
            f"{[str(c) for c in classes]}"
        )
    return pos


def _model_inputs(model: Any, df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    # A model fitted on a DataFrame knows its input columns; an older champion may take
    # fewer or other columns than today's schema, and it should be scored on its own.
    own = getattr(model, "feature_names_in_", None)
    if own is not None and all(c in df.columns for c in own):
        return df[list(own)]
    cols = feature_columns(schema)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise EvaluationError(
            f"the test data lacks feature columns {missing}; it must have every feature "
            "column of the schema"
        )
    return df[cols]


def predict(model: Any, df: pd.DataFrame, schema: Schema) -> Predictions:
    """Predict ``model`` once on the rows of ``df`` that have a target value."""
    if not isinstance(df, pd.DataFrame):
        raise EvaluationError(f"the test data must be a pandas DataFrame, got {type(df).__name__}")
    task, target = schema.get("task"), schema.get("target")
    if task not in ("classification", "regression"):
        raise EvaluationError(f"schema task must be 'classification' or 'regression', got {task!r}")
    if target not in df.columns:
        raise EvaluationError(f"the test data has no target column {target!r}")
    labelled = df[target].notna().to_numpy()
    rows = np.flatnonzero(labelled)
    n_missing = int(labelled.size - rows.size)
    if rows.size == 0:
        raise EvaluationError(f"the test data has no rows with a value in the target {target!r}")
    X = _model_inputs(model, df.iloc[rows], schema)
    y_raw = df[target].to_numpy()[rows]

    if task == "classification":
        if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
            raise EvaluationError(
                f"a classification model needs predict_proba and classes_; "
                f"{type(model).__name__} lacks them"
            )
        classes = list(model.classes_)
        y = _encode_labels(y_raw, classes, what=f"target {target!r}")
        proba = _check_proba(model.predict_proba(X), rows.size, len(classes))
        return Predictions(
            task,
            rows,
            y,
            proba=proba,
            classes=classes,
            positive=_resolve_positive(schema.get("positive_label"), classes),
            n_missing_target=n_missing,
        )

    y = _numeric(y_raw, f"target {target!r}")
    y_pred = np.asarray(model.predict(X), dtype=np.float64).reshape(-1)
    if y_pred.size != rows.size:
        raise EvaluationError(f"the model returned {y_pred.size} predictions for {rows.size} rows")
    if not np.isfinite(y_pred).all():
        raise EvaluationError("the model returned NaN or infinite predictions")
    return Predictions(task, rows, y, y_pred=y_pred, n_missing_target=n_missing)


def _numeric(values: Any, what: str) -> np.ndarray:
    s = pd.Series(np.asarray(values).reshape(-1))
    converted = pd.to_numeric(s, errors="coerce")
    bad = s[converted.isna() & s.notna()]
    if len(bad):
        raise EvaluationError(
            f"{what} must be numeric for regression; found values like "
            f"{[str(v) for v in bad.unique()[:5]]}"
        )
    if converted.isna().any():
        raise EvaluationError(f"{what} has {int(converted.isna().sum())} missing values")
    out = converted.to_numpy(dtype=np.float64)
    if not np.isfinite(out).all():
        raise EvaluationError(f"{what} has infinite values")
    return out


# ---------------------------------------------------------------------------
# Metrics on encoded arrays (the hot path: once per slice).


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _nanmean(values: np.ndarray) -> float | None:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else None


def _ranking_scores(hit: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    """ROC-AUC and average precision of one class from a single sort of its scores.

    Both are read off the cumulative true/false positives at each distinct score
    (tied scores step together), the points sklearn's roc_curve and
    precision_recall_curve use: ROC-AUC is the trapezoid area under them and average
    precision the step-wise sum of precision times the gain in recall. None where
    undefined (no positives; for ROC-AUC also no negatives).
    """
    order = np.argsort(-score, kind="mergesort")
    ordered = score[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    tp = np.cumsum(hit[order])[last].astype(np.float64)
    fp = (last + 1) - tp
    n_pos, n_neg = tp[-1], fp[-1]
    if n_pos == 0:
        return None, None
    recall = tp / n_pos
    ap = float(np.sum(np.diff(recall, prepend=0.0) * (tp / (last + 1))))
    if n_neg == 0:
        return None, ap
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, recall]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    return auc, ap


def _calibration_error(confidence: np.ndarray, outcome: np.ndarray, bins: int) -> float:
    # Equal-width bins on [0, 1], a value on an inner edge going to the upper bin
    # (as sklearn.calibration.calibration_curve bins); sum over bins of
    # n_b / n * |mean outcome - mean confidence| = |sum outcome - sum confidence| / n.
    edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    which = np.searchsorted(edges, confidence, side="right")
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    hit_sum = np.bincount(which, weights=outcome.astype(np.float64), minlength=bins)
    return float(np.abs(hit_sum - conf_sum).sum() / confidence.size)


def _classification_scores(
    y: np.ndarray, proba: np.ndarray, positive: int | None, bins: int
) -> dict[str, float | None]:
    n, k = proba.shape
    if n == 0:
        return dict.fromkeys(CLASSIFICATION_METRICS)
    rows = np.arange(n)
    pred = proba.argmax(axis=1)
    out: dict[str, float | None] = {"accuracy": float(np.mean(pred == y))}
    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero(counts)

    if positive is not None:
        truth, said = y == positive, pred == positive
        tp = int(np.count_nonzero(truth & said))
        fp = int(np.count_nonzero(~truth & said))
        fn = int(np.count_nonzero(truth & ~said))
        score = proba[:, positive]
        out["precision"] = _ratio(tp, tp + fp)
        out["recall"] = _ratio(tp, tp + fn)
        out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
        out["roc_auc"], out["pr_auc"] = _ranking_scores(truth, score)
        out["brier_score"] = float(np.mean((score - truth) ** 2))
        confidence, outcome = score, truth
    else:
        cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
        tp_c = np.diag(cm).astype(np.float64)
        said_c, truth_c = cm.sum(axis=0), cm.sum(axis=1)
        nan = np.full(k, np.nan)
        # Macro averages skip the classes where a ratio is undefined (0/0), as
        # sklearn does with zero_division=np.nan.
        out["precision"] = _nanmean(np.divide(tp_c, said_c, out=nan.copy(), where=said_c > 0))
        out["recall"] = _nanmean(np.divide(tp_c, truth_c, out=nan.copy(), where=truth_c > 0))
        both = said_c + truth_c
        out["f1"] = _nanmean(np.divide(2 * tp_c, both, out=nan.copy(), where=both > 0))
        # one-vs-rest over the classes present in y (an absent class has no positives)
        ranking = [_ranking_scores(y == c, proba[:, c]) for c in present]
        # ROC-AUC weighted by prevalence; undefined with a single class present
        out["roc_auc"] = (
            float(np.dot([auc for auc, _ in ranking], counts[present]) / n)
            if present.size >= 2
            else None
        )
        out["pr_auc"] = float(np.mean([ap for _, ap in ranking]))
        out["brier_score"] = float(np.mean((proba**2).sum(axis=1) - 2.0 * proba[rows, y] + 1.0))
        confidence, outcome = proba[rows, pred], pred == y

    # log loss clips like sklearn.metrics.log_loss so the two agree to the last digit
    eps = np.finfo(np.float64).eps
    out["log_loss"] = float(-np.mean(np.log(np.clip(proba[rows, y], eps, 1.0 - eps))))
    out["calibration_error"] = _calibration_error(confidence, outcome, bins)
    return {name: out[name] for name in CLASSIFICATION_METRICS}


def _regression_scores(y: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    if y.size == 0:
        return dict.fromkeys(REGRESSION_METRICS)
    err = y_pred - y
    sse = float(np.dot(err, err))
    sst = float(np.sum((y - y.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": math.sqrt(sse / y.size),
        # R2 of a constant target is undefined, not 0 or 1
        "r2": 1.0 - sse / sst if sst > 0 else None,
    }


def score(predictions: Predictions, *, bins: int = 10) -> dict[str, float | None]:
    """The task's metrics (``metric_names``) of a set of predictions."""
    if predictions.task == "classification":
        return _classification_scores(predictions.y, predictions.proba, predictions.positive, bins)
    return _regression_scores(predictions.y, predictions.y_pred)


# ---------------------------------------------------------------------------
# Public metric functions on plain arrays.


def classification_metrics(
    y_true: Any,
    proba: Any,
    classes: Sequence[Any],
    *,
    positive_label: Any = None,
    bins: int = 10,
) -> dict[str, float | None]:
    """Classification metrics of class probabilities (columns in ``classes`` order).

    Binary metrics are for ``positive_label`` (default: the last class); multiclass
    precision/recall/F1 are macro, ROC-AUC one-vs-rest weighted by prevalence and
    PR-AUC the macro average precision, both over the classes present in ``y_true``.
    """
    classes = list(classes)
    if not classes:
        raise EvaluationError("classes is empty; pass the model's classes_")
    if bins < 2:
        raise EvaluationError(f"calibration bins must be at least 2, got {bins}")
    y = _encode_labels(y_true, classes)
    p = _check_proba(proba, y.size, len(classes), who="proba")
    return _classification_scores(y, p, _resolve_positive(positive_label, classes), bins)


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float | None]:
    """MAE, RMSE and R2 (None when the target is constant)."""
    y = _numeric(y_true, "y_true")
    yhat = _numeric(y_pred, "y_pred")
    if y.size != yhat.size:
        raise EvaluationError(f"y_true has {y.size} values but y_pred has {yhat.size}")
    return _regression_scores(y, yhat)


def curves(
    y_true: Any, proba: Any, classes: Sequence[Any], positive_label: Any = None
) -> dict[str, Any]:
    """Confusion matrix and (binary only) ROC curve, in the argument shapes of KFP's
    ``ClassificationMetrics.log_confusion_matrix(categories, matrix)`` and
    ``log_roc_curve(fpr, tpr, threshold)``. ``roc`` is None when undefined."""
    classes = list(classes)
    y = _encode_labels(y_true, classes)
    p = _check_proba(proba, y.size, len(classes), who="proba")
    return _curves(y, p, classes, _resolve_positive(positive_label, classes))


def _curves(
    y: np.ndarray, proba: np.ndarray, classes: list[Any], positive: int | None
) -> dict[str, Any]:
    k = len(classes)
    matrix = confusion_matrix(y, proba.argmax(axis=1), labels=list(range(k)))
    result: dict[str, Any] = {
        "confusion_matrix": {
            "categories": [str(c) for c in classes],
            "matrix": [[int(v) for v in row] for row in matrix],
        },
        "roc": None,
    }
    if positive is None:
        return result
    truth = y == positive
    if truth.all() or not truth.any():
        return result
    fpr, tpr, thresholds = roc_curve(truth, proba[:, positive])
    if not np.isfinite(thresholds[0]):
        # roc_curve starts at +inf ("nothing is positive"); KFP needs a finite number
        # that still predicts nothing positive: above every score.
        top = thresholds[1] if thresholds.size > 1 else 1.0
        thresholds[0] = 1.0 if top < 1.0 else float(np.nextafter(top, np.inf))
    if fpr.size > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, fpr.size - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    result["roc"] = {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": [float(v) for v in thresholds],
    }
    return result


# ---------------------------------------------------------------------------
# Slices and disparity.


def check_sensitive_columns(columns: Iterable[str], sensitive: Sequence[str]) -> None:
    """Raise EvaluationError naming every sensitive column the data does not have.

    Cheap enough to call before training, so a typo stops the run early.
    """
    available = list(columns)
    known = set(available)
    missing = [c for c in sensitive if c not in known]
    if missing:
        raise EvaluationError(
            f"sensitive columns {missing} are not in the data (its columns: "
            f"{available[:30]}{' ...' if len(available) > 30 else ''}); fix "
            "evaluation.sensitive_columns"
        )


def _slice_keys(values: pd.Series, max_slices: int) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 for missing) and the label of each code."""
    if (
        pd.api.types.is_numeric_dtype(values)
        and not pd.api.types.is_bool_dtype(values)
        and values.nunique() > max_slices
    ):
        values = pd.qcut(values, q=_NUMERIC_SLICE_BINS, duplicates="drop")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes, [str(u) for u in uniques]


def slice_metrics(
    model_or_predictions: Any,
    test_df: pd.DataFrame,
    schema: Schema,
    cfg: EvaluationConfig,
) -> list[dict[str, Any]]:
    """Metrics per value of each categorical/boolean feature and sensitive column.

    Missing values form their own slice ``"<missing>"``; a numeric sensitive column
    with many values is cut into quantile bins. Only slices of at least
    ``cfg.min_slice_rows`` rows are kept, the ``cfg.max_slices_per_column`` largest
    of each column. Each entry: ``{column, value, n, metrics, positive_rate}``;
    ``positive_rate`` is the share of rows predicted positive (binary only).
    """
    check_sensitive_columns(test_df.columns, cfg.sensitive_columns)
    preds = (
        model_or_predictions
        if isinstance(model_or_predictions, Predictions)
        else predict(model_or_predictions, test_df, schema)
    )
    if preds.rows.size and preds.rows.max() >= len(test_df):
        raise EvaluationError("the predictions were made on another, larger test frame")
    columns = list(dict.fromkeys(categorical_features(schema) + list(cfg.sensitive_columns)))
    entries: list[dict[str, Any]] = []
    for column in columns:
        codes, labels = _slice_keys(test_df[column].iloc[preds.rows], cfg.max_slices_per_column)
        # Grouping by sorting the codes once: each slice is a contiguous run of positions.
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes + 1, minlength=len(labels) + 1)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        chosen = [c for c in range(sizes.size) if sizes[c] >= cfg.min_slice_rows]
        chosen.sort(key=lambda c: -sizes[c])
        for c in chosen[: cfg.max_slices_per_column]:
            part = preds.subset(order[starts[c] : starts[c] + sizes[c]])
            positive_rate = None
            if part.positive is not None:
                positive_rate = float(np.mean(part.proba.argmax(axis=1) == part.positive))
            entries.append(
                {
                    "column": column,
                    "value": MISSING if c == 0 else labels[c - 1],
                    "n": int(sizes[c]),
                    "metrics": score(part, bins=cfg.calibration_bins),
                    "positive_rate": positive_rate,
                }
            )
    return entries


def disparity(
    slices: list[dict[str, Any]],
    columns: Sequence[str],
    metric: str,
    *,
    data_columns: Iterable[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """For each sensitive column: the gap (max - min) of ``metric`` across its slices,
    the worst and best slice (direction-aware), and for classification the gap and
    ratio (min / max) of the positive-prediction rate (demographic parity).

    With ``data_columns``, columns not among them raise EvaluationError.
    """
    if data_columns is not None:
        check_sensitive_columns(data_columns, columns)
    result: dict[str, dict[str, Any]] = {}
    for column in columns:
        entries = [s for s in slices if s["column"] == column]
        if entries and metric not in entries[0]["metrics"]:
            raise EvaluationError(
                f"metric {metric!r} is not computed per slice; known: "
                f"{sorted(entries[0]['metrics'])}"
            )
        scored = [s for s in entries if s["metrics"].get(metric) is not None]
        item: dict[str, Any] = {
            "metric": metric,
            "n_slices": len(entries),
            "gap": None,
            "worst": None,
            "best": None,
            "positive_rate_gap": None,
            "positive_rate_ratio": None,
            "note": None,
        }
        if len(scored) >= 2:
            ranked = sorted(scored, key=lambda s: s["metrics"][metric])
            low, high = ranked[0], ranked[-1]
            worst, best = (low, high) if higher_is_better(metric) else (high, low)
            item["gap"] = float(high["metrics"][metric] - low["metrics"][metric])
            item["worst"] = {
                "value": worst["value"],
                "n": worst["n"],
                "score": worst["metrics"][metric],
            }
            item["best"] = {
                "value": best["value"],
                "n": best["n"],
                "score": best["metrics"][metric],
            }
        else:
            item["note"] = (
                f"fewer than two slices large enough to score {metric}; "
                "lower evaluation.min_slice_rows or use more test rows"
            )
        rates = [s["positive_rate"] for s in entries if s.get("positive_rate") is not None]
        if len(rates) >= 2:
            item["positive_rate_gap"] = float(max(rates) - min(rates))
            item["positive_rate_ratio"] = float(min(rates) / max(rates)) if max(rates) > 0 else None
        result[column] = item
    return result


# ---------------------------------------------------------------------------
# Stability under refits.


def _subsample(df: pd.DataFrame, target: str, max_rows: int, stratify: bool) -> pd.DataFrame:
    if len(df) <= max_rows:
        return df
    try:
        part, _ = train_test_split(
            df,
            train_size=max_rows,
            random_state=0,
            stratify=df[target] if stratify else None,
        )
    except ValueError:
        # A class too rare to stratify (fewer than two rows): sample plainly.
        part, _ = train_test_split(df, train_size=max_rows, random_state=0)
    return part


def stability(
    model: Any,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    schema: Schema,
    *,
    metric: str,
    seeds: int,
    max_rows: int,
    bins: int = 10,
) -> dict[str, Any] | None:
    """How much ``metric`` on the test set moves when the model is refitted with
    ``seeds`` other random states (seeds 0..seeds-1, set on every parameter ending in
    ``random_state``) on one fixed subsample of at most ``max_rows`` training rows
    (stratified for classification). The subsample is the same for every seed, so
    the spread is the model's own randomness.

    None when ``seeds`` is 0 (turned off). A model with no ``random_state``
    anywhere is deterministic: it is not refitted and the result says so, with
    std 0 and ``deterministic: true``.
    """
    if seeds <= 0:
        return None
    if not hasattr(model, "get_params"):
        raise EvaluationError(
            f"stability needs a scikit-learn estimator; got {type(model).__name__}"
        )
    known = CLASSIFICATION_METRICS if schema["task"] == "classification" else REGRESSION_METRICS
    if metric not in known:
        raise EvaluationError(f"unknown {schema['task']} metric {metric!r}; known: {list(known)}")
    params = sorted(k for k in model.get_params(deep=True) if k.endswith("random_state"))
    result: dict[str, Any] = {
        "metric": metric,
        "seeds": [],
        "values": [],
        "mean": None,
        "std": 0.0,
        "n_train_rows": 0,
        "deterministic": not params,
        "note": None,
    }
    if not params:
        result["note"] = "the model has no random_state: every refit gives the same model"
        return result

    target = schema["target"]
    if target not in train_df.columns:
        raise EvaluationError(f"the training data has no target column {target!r}")
    train = _subsample(
        train_df[train_df[target].notna()], target, max_rows, schema["task"] == "classification"
    )
    X = _model_inputs(model, train, schema)
    values: list[float | None] = []
    for seed in range(seeds):
        refit = clone(model).set_params(**dict.fromkeys(params, seed))
        refit.fit(X, train[target])
        values.append(score(predict(refit, test_df, schema), bins=bins)[metric])
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    result.update(
        seeds=list(range(seeds)),
        values=values,
        n_train_rows=int(len(train)),
        mean=float(defined.mean()) if defined.size else None,
        std=float(defined.std(ddof=1)) if defined.size >= 2 else None,
        random_state_params=params,
    )
    return result


def stability_rows(train_path: str, schema: Schema, cfg: Any) -> pd.DataFrame | None:
    """The training rows the stability refits draw from (``cfg``: ``EvaluationConfig``):
    None when stability is off; a split longer than ``stability_max_rows`` is sampled
    from the file (stratified, or by id, as the candidates' sample is), never read
    whole, since the refits use no more rows than that."""
    from kubeloop.components.train.sample import read_training_sample
    from kubeloop.tables import count_rows, read_parquet

    if cfg.stability_seeds <= 0:
        return None
    if count_rows(train_path) > cfg.stability_max_rows:
        return read_training_sample(train_path, schema, cfg.stability_max_rows, seed=0)[0]
    return read_parquet(train_path)


# ---------------------------------------------------------------------------
# The stage.


@dataclass
class Champion:
    """The production model as the evaluate step found it in the registry.

    ``error`` says why it could not be loaded (the gate acts on it through
    ``gate.on_champion_error``); ``rows`` are the fingerprints of the rows it was
    trained and validated on, None when its version has none (``note`` says why).
    """

    version: str | None = None
    model: Any = None
    rows: FingerprintSet | None = None
    error: str | None = None
    note: str | None = None
    # The positive label its schema was registered with (None: not binary, or unknown).
    positive_label: Any = None


@dataclass
class Evaluation:
    task: str
    primary_metric: str
    n_test: int
    metrics: dict[str, float | None]
    baseline_metrics: dict[str, float | None] | None = None
    # The champion's metrics on exactly the rows the gate compared it on (the test rows
    # minus those it was trained or validated on); see champion_comparison.
    champion_metrics: dict[str, float | None] | None = None
    champion_error: str | None = None
    champion_version: str | None = None
    # Paired comparisons the gate decides on: {n_rows, paired: {metric: estimate}, ...}.
    champion_comparison: dict[str, Any] | None = None
    baseline_comparison: dict[str, Any] | None = None
    # challenger minus baseline, in each metric's own direction: positive is better
    lift: dict[str, float | None] | None = None
    slices: list[dict[str, Any]] = field(default_factory=list)
    disparity: dict[str, dict[str, Any]] = field(default_factory=dict)
    stability: dict[str, Any] | None = None
    curves: dict[str, Any] | None = None
    positive_label: str | None = None
    n_missing_target: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lift(mine: dict[str, float | None], ref: dict[str, float | None]) -> dict[str, float | None]:
    return {
        name: (
            None
            if value is None or ref.get(name) is None
            else float(improvement(name, value, ref[name]))
        )
        for name, value in mine.items()
    }


def predict_like(
    model: Any, df: pd.DataFrame, schema: Schema, like: Predictions, *, who: str
) -> Predictions:
    """``model``'s predictions on the rows of ``like``, in ``like``'s label space.

    Another model (the champion, the baseline) may know other classes or order them
    otherwise; its probabilities are moved into ``like.classes`` order (a class
    ``like`` does not know is dropped, one it lacks gets probability 0), so both
    can be scored and paired row by row on the same encoded labels.
    """
    X = _model_inputs(model, df.iloc[like.rows], schema)
    n = len(like)
    if like.task == "classification":
        if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
            raise EvaluationError(
                f"{who} needs predict_proba and classes_; {type(model).__name__} lacks them"
            )
        own = list(model.classes_)
        raw = _check_proba(model.predict_proba(X), n, len(own), who=who)
        proba = np.zeros((n, len(like.classes)))
        for j, label in enumerate(own):
            i = _label_index(label, like.classes)
            if i is not None:
                proba[:, i] += raw[:, j]
        return Predictions(
            like.task, like.rows, like.y, proba=proba, classes=like.classes, positive=like.positive
        )
    y_pred = np.asarray(model.predict(X), dtype=np.float64).reshape(-1)
    if y_pred.size != n:
        raise EvaluationError(f"{who} returned {y_pred.size} predictions for {n} rows")
    if not np.isfinite(y_pred).all():
        raise EvaluationError(f"{who} returned NaN or infinite predictions")
    return Predictions(like.task, like.rows, like.y, y_pred=y_pred)


def _output(p: Predictions) -> np.ndarray:
    return p.proba if p.task == "classification" else p.y_pred


def seen_rows(
    test_df: pd.DataFrame,
    rows: np.ndarray,
    fingerprints: FingerprintSet | None,
    *,
    version: str | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which of ``rows`` (positions in ``test_df``) the champion was trained or validated
    on, and how that was decided (for the report)."""
    seen = np.zeros(rows.size, dtype=bool)
    who = f"the production model {version}" if version else "the production model"
    if fingerprints is None:
        return seen, {
            "method": None,
            "n_excluded": 0,
            "note": f"{who} has no stored row fingerprints, so the test rows it was trained on "
            "cannot be left out: its score may be optimistic",
        }
    info: dict[str, Any] = {**fingerprints.describe(), "n_champion_rows": fingerprints.n_rows}
    info.pop("n_rows", None)
    info["method"] = info.pop("kind")
    try:
        seen = fingerprints.contains_rows(test_df.iloc[rows])
    except FingerprintError as exc:
        info.update(
            n_excluded=0,
            note=f"the test rows cannot be matched with the rows {who} was "
            f"trained on ({exc}): none were left out, so its score may be optimistic",
        )
        return np.zeros(rows.size, dtype=bool), info
    info["n_excluded"] = int(seen.sum())
    by_id = fingerprints.id_column is not None and fingerprints.id_column in test_df.columns
    info["matched_by"] = "id" if by_id else "values"
    info["reason"] = (
        f"{int(seen.sum()):,} test row(s) have the id ({fingerprints.id_column}) of a row {who} "
        "was trained or validated on, whatever their values, so they were left out of the comparison"
        if by_id
        else f"{int(seen.sum()):,} test row(s) have the same feature and target values as a row {who} "
        "was trained or validated on (row fingerprints), so they were left out of the comparison"
    )
    if fingerprints.kind == "bloom":
        info["reason"] += (
            f"; the set is a Bloom filter, so about {fingerprints.false_positive_rate:.2%} of the other "
            "rows were left out too, at random"
        )
    return seen, info


def _comparison(
    mine: Predictions,
    theirs: Predictions,
    metrics: list[str],
    policy: GateConfig,
    bins: int,
    groups: Any = None,
) -> dict[str, Any]:
    paired = paired_bootstrap(
        mine.task,
        mine.y,
        _output(mine),
        _output(theirs),
        metrics,
        positive=mine.positive,
        confidence=policy.confidence,
        n_bootstrap=policy.bootstrap_samples,
        seed=policy.bootstrap_seed,
        bins=bins,
        max_rows=policy.bootstrap_max_rows,
        groups=groups,
    )
    return {
        "n_rows": len(mine),
        "challenger_metrics": score(mine, bins=bins),
        "reference_metrics": score(theirs, bins=bins),
        "paired": {m: e.to_dict() for m, e in paired.items()},
    }


def evaluate(
    model: Any,
    test_df: pd.DataFrame,
    schema: Schema,
    cfg: EvaluationConfig,
    *,
    primary_metric: str,
    baseline: Any = None,
    champion: Any = None,
    train_df: pd.DataFrame | None = None,
    champion_rows: FingerprintSet | None = None,
    champion_version: str | None = None,
    gate: GateConfig | None = None,
) -> Evaluation:
    """Evaluate the challenger ``model`` on ``test_df`` against the baseline and the
    champion; the stability estimate runs only when ``train_df`` is given.

    The champion is compared on the test rows it was not trained or validated on
    (``champion_rows``), paired with the challenger on exactly those rows; the
    baseline on every labelled test row. A champion that fails to predict is not an
    error here: ``champion_error`` records why, for the gate to act on.
    """
    from kubeloop.components.gate import gate_metrics

    gate = gate or GateConfig()
    task = schema.get("task")
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if primary_metric not in known:
        raise EvaluationError(
            f"primary metric {primary_metric!r} is not a {task} metric; known: {list(known)}"
        )
    if isinstance(test_df, pd.DataFrame):
        check_sensitive_columns(test_df.columns, cfg.sensitive_columns)
    bins = cfg.calibration_bins
    preds = predict(model, test_df, schema)
    metrics = score(preds, bins=bins)
    compared = list(dict.fromkeys([primary_metric] + gate_metrics(task, gate)))

    baseline_metrics, baseline_comparison = None, None
    # The split keeps each id's rows together: the bootstrap resamples ids (kubeloop.paired).
    id_col = schema.get("id_column")
    ids = test_df[id_col].to_numpy()[preds.rows] if id_col and id_col in test_df.columns else None
    if baseline is not None:
        base = predict_like(baseline, test_df, schema, preds, who="the baseline")
        baseline_comparison = _comparison(preds, base, [primary_metric], gate, bins, ids)
        baseline_metrics = baseline_comparison.pop("reference_metrics")
        baseline_comparison.pop("challenger_metrics")  # the same as metrics

    champion_metrics, champion_error, champion_comparison = None, None, None
    if champion is not None:
        try:
            theirs = predict_like(champion, test_df, schema, preds, who="the production model")
        except Exception as exc:  # noqa: BLE001
            # Any failure of the production model on today's data (schema drift, an
            # old library) is a finding for the gate to act on, not a crash here.
            champion_error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        else:
            seen, exclusion = seen_rows(
                test_df, preds.rows, champion_rows, version=champion_version
            )
            keep = np.flatnonzero(~seen)
            champion_comparison = _comparison(
                preds.subset(keep), theirs.subset(keep), compared, gate, bins,
                None if ids is None else ids[keep],
            )
            champion_comparison.update(
                n_test_rows=len(preds),
                n_excluded=int(seen.sum()),
                exclusion=exclusion,
                note=exclusion.get("note"),
            )
            champion_metrics = champion_comparison["reference_metrics"]

    slices = slice_metrics(preds, test_df, schema, cfg)
    stab = None
    if train_df is not None:
        stab = stability(
            model,
            train_df,
            test_df,
            schema,
            metric=primary_metric,
            seeds=cfg.stability_seeds,
            max_rows=cfg.stability_max_rows,
            bins=bins,
        )
    positive = None if preds.positive is None else str(preds.classes[preds.positive])
    return Evaluation(
        task=task,
        primary_metric=primary_metric,
        n_test=len(preds),
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        champion_metrics=champion_metrics,
        champion_error=champion_error,
        champion_version=champion_version,
        champion_comparison=champion_comparison,
        baseline_comparison=baseline_comparison,
        lift=_lift(metrics, baseline_metrics) if baseline_metrics is not None else None,
        slices=slices,
        disparity=disparity(slices, cfg.sensitive_columns, primary_metric),
        stability=stab,
        curves=_curves(preds.y, preds.proba, preds.classes, preds.positive)
        if task == "classification"
        else None,
        positive_label=positive,
        n_missing_target=preds.n_missing_target,
    )


# ---------------------------------------------------------------------------
# The step: the production model from the registry, then evaluate.

# Failures of the storage itself, not of the production model: the run cannot go on
# (register would fail the same way), so they are raised, not judged by the gate.
_INFRASTRUCTURE_ERRORS = ("EndpointUnreachable", "PermissionDenied", "BucketNotFound")


def load_champion(registry: Any, model_name: str, alias: str = "production") -> Champion:
    """The version ``alias`` points at, its model and the fingerprints of its rows.

    Never raises for a production model that is broken (an unpickling error after a
    library upgrade, a missing or altered file): ``Champion.error`` says what
    failed. Storage that cannot be reached at all still raises.
    """
    from kubeloop.fingerprints import REGISTRY_FILE
    from kubeloop.storage import NotFound, StorageError

    version = registry.get_alias(model_name, alias)
    if version is None:
        return Champion()
    try:
        model, _ = registry.load_model(model_name, version)
    except StorageError as exc:
        if type(exc).__name__ in _INFRASTRUCTURE_ERRORS:
            raise
        return Champion(version, error=f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS])
    except Exception as exc:  # noqa: BLE001
        # Unpickling runs the old model's code against today's libraries: anything can fail.
        return Champion(version, error=f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS])

    rows, note = None, None
    try:
        data = registry.read_bytes(model_name, version, REGISTRY_FILE)
        expected = registry.show(model_name, version)["files"].get(REGISTRY_FILE, {}).get("sha256")
        import hashlib

        if expected and hashlib.sha256(data).hexdigest() != expected:
            note = f"{version}'s row fingerprints do not match its manifest (altered); not used"
        else:
            rows = FingerprintSet.from_bytes(data)
    except NotFound:
        note = (
            f"{version} was registered without row fingerprints, so the test rows it was "
            "trained on cannot be left out: its score may be optimistic"
        )
    except FingerprintError as exc:
        note = f"{version}'s row fingerprints cannot be read ({exc}); not used"
    return Champion(version, model=model, rows=rows, note=note,
                    positive_label=_registered_positive(registry, model_name, version))


def _registered_positive(registry: Any, model_name: str, version: str) -> Any:
    try:
        return (registry.read_json(model_name, version, "schema.json") or {}).get("positive_label")
    except Exception:  # noqa: BLE001 (the label is a note for the gate, never a reason to fail)
        return None


def evaluate_step(
    model: Any,
    baseline: Any,
    test_df: pd.DataFrame,
    train_df: pd.DataFrame | None,
    schema: Schema,
    cfg: Any,
    champion: Champion,
) -> dict[str, Any]:
    """What the evaluate step writes as ``evaluation.json`` (``cfg`` is a ``Config``)."""
    from kubeloop.metric_names import primary_metric

    metric = primary_metric(schema["task"], cfg.gate.primary_metric)
    ev = evaluate(
        model,
        test_df,
        schema,
        cfg.evaluation,
        primary_metric=metric,
        baseline=baseline,
        champion=champion.model,
        train_df=train_df,
        champion_rows=champion.rows,
        champion_version=champion.version,
        gate=cfg.gate,
    )
    doc = ev.to_dict()
    if champion.error:
        doc["champion_error"] = champion.error
    if champion.positive_label is not None:
        # Both models are scored for the challenger's positive label on the same rows;
        # the gate says so when the champion was registered under another one.
        doc["champion_positive_label"] = champion.positive_label
        doc["positive_label"] = schema.get("positive_label")
    if champion.note and doc.get("champion_comparison") is not None:
        # The registry's reason (no file, altered file) is more specific than "no set".
        doc["champion_comparison"]["note"] = champion.note
        doc["champion_comparison"]["exclusion"]["note"] = champion.note
    return doc


def summary_line(doc: dict[str, Any]) -> str:
    """One line for the progress log: the headline metric and what production was judged on."""
    metric = doc["primary_metric"]
    value = doc["metrics"].get(metric)
    line = f"test {metric} {'n/a' if value is None else f'{value:.4f}'}"
    version = doc.get("champion_version")
    comparison = doc.get("champion_comparison")
    if doc.get("champion_error"):
        return f"{line}; production {version or ''} could not be scored".replace("  ", " ")
    if comparison:
        p = (comparison.get("paired") or {}).get(metric) or {}
        change = "n/a" if p.get("estimate") is None else f"{p['estimate']:+.4f}"
        if (comparison.get("exclusion") or {}).get("method") is None:
            seen = "no row fingerprints: rows it had seen could not be left out"
        else:
            seen = f"{comparison.get('n_excluded', 0):,} it had seen left out"
        return (
            f"{line}; vs production {version} on {comparison['n_rows']:,} rows ({seen}): {change}"
        )
    return f"{line}; no production model yet"


# ---------------------------------------------------------------------------
# Report.


def _fmt(x: Any, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _cell(text: Any, limit: int = 40) -> str:
    # Slice values are user data: keep them from breaking the table.
    s = str(text).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _paired_table(comparison: dict[str, Any], who: str) -> list[str]:
    paired = comparison.get("paired") or {}
    if not paired:
        return []
    conf = next(iter(paired.values())).get("confidence") or 0.95
    lines = [
        "",
        f"| metric | challenger | {who} | change (positive is better) | {conf:.0%} interval | rows |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in paired.items():
        interval = "n/a" if p.get("low") is None else f"{p['low']:+.4f} to {p['high']:+.4f}"
        lines.append(
            f"| {name} | {_fmt(p.get('challenger'))} | {_fmt(p.get('reference'))} | "
            f"{_fmt(p.get('estimate'), signed=True)} | {interval} | {p.get('n_rows', 0):,} |"
        )
    return lines


def report_markdown(evaluation: Evaluation | dict[str, Any], *, model_name: str) -> str:
    """A compact Markdown report for the KFP UI (takes the Evaluation or its dict)."""
    ev = evaluation.to_dict() if isinstance(evaluation, Evaluation) else evaluation
    metric = ev["primary_metric"]
    champ, base, lift = ev.get("champion_metrics"), ev.get("baseline_metrics"), ev.get("lift")
    lines = [
        f"# Evaluation: `{_cell(model_name, 80)}`",
        "",
        f"{ev['task']} on {ev['n_test']:,} test rows; primary metric **{metric}**."
        + (f" Positive label `{_cell(ev['positive_label'])}`." if ev.get("positive_label") else ""),
        "",
        "| metric | challenger | champion | baseline | lift over baseline |",
        "|---|---|---|---|---|",
    ]
    for name, value in ev["metrics"].items():
        label = f"**{name}**" if name == metric else name
        lines.append(
            f"| {label} | {_fmt(value)} | {_fmt((champ or {}).get(name))} | "
            f"{_fmt((base or {}).get(name))} | {_fmt((lift or {}).get(name), signed=True)} |"
        )
    lines += ["", "Lift is in each metric's own direction: positive is better."]
    if ev.get("champion_error"):
        lines += [
            "",
            f"**The production model could not be loaded or scored:** "
            f"{_cell(ev['champion_error'], 300)}",
        ]
    elif champ is None:
        lines += ["", "No production model yet."]
    comparison = ev.get("champion_comparison")
    if comparison:
        version = ev.get("champion_version") or ""
        lines += [
            "",
            f"## Challenger vs production {_cell(version)} on the same rows",
            "",
            f"Compared on **{comparison['n_rows']:,}** of {comparison.get('n_test_rows', 0):,} "
            f"labelled test rows; {comparison.get('n_excluded', 0):,} left out. The champion column "
            "above is on exactly these rows.",
        ]
        exclusion = comparison.get("exclusion") or {}
        for text in (exclusion.get("reason"), comparison.get("note")):
            if text:
                lines += ["", _cell(text, 400)]
        lines += _paired_table(comparison, "champion")
    base_cmp = ev.get("baseline_comparison")
    if base_cmp:
        lines += ["", f"## Challenger vs baseline on all {base_cmp['n_rows']:,} labelled test rows"]
        lines += _paired_table(base_cmp, "baseline")
    if ev.get("n_missing_target"):
        lines += ["", f"{ev['n_missing_target']:,} test rows without a target were not scored."]

    scored = [s for s in ev.get("slices") or [] if s["metrics"].get(metric) is not None]
    if scored:
        scored.sort(key=lambda s: s["metrics"][metric], reverse=not higher_is_better(metric))
        lines += [
            "",
            f"## Slices (worst {min(10, len(scored))} by {metric})",
            "",
            f"| column | value | rows | {metric} | positive rate |",
            "|---|---|---|---|---|",
        ]
        for s in scored[:10]:
            lines.append(
                f"| {_cell(s['column'])} | {_cell(s['value'])} | {s['n']:,} | "
                f"{_fmt(s['metrics'][metric])} | {_fmt(s.get('positive_rate'))} |"
            )

    if ev.get("disparity"):
        lines += [
            "",
            f"## Disparity across sensitive columns ({metric})",
            "",
            "| column | slices | gap | worst | best | positive-rate gap | positive-rate ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for column, d in ev["disparity"].items():
            worst = (
                f"{_cell(d['worst']['value'])} ({_fmt(d['worst']['score'])})"
                if d["worst"]
                else "n/a"
            )
            best = (
                f"{_cell(d['best']['value'])} ({_fmt(d['best']['score'])})" if d["best"] else "n/a"
            )
            lines.append(
                f"| {_cell(column)} | {d['n_slices']} | {_fmt(d['gap'])} | {worst} | {best} | "
                f"{_fmt(d['positive_rate_gap'])} | {_fmt(d['positive_rate_ratio'])} |"
            )

    stab = ev.get("stability")
    if stab:
        lines += ["", "## Stability", ""]
        if stab.get("deterministic"):
            lines.append(f"{stab['note']} (std 0).")
        else:
            values = ", ".join(_fmt(v) for v in stab["values"])
            lines.append(
                f"{stab['metric']} over {len(stab['seeds'])} refits with other seeds on "
                f"{stab['n_train_rows']:,} training rows: mean {_fmt(stab['mean'])}, "
                f"std {_fmt(stab['std'])} ({values})."
            )
    return "\n".join(lines) + "\n"


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import (  # noqa: E402
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from kubeloop.component import component  # noqa: E402


@component
def evaluate_op(
    model: Input[Model],
    baseline: Input[Model],
    test: Input[Dataset],
    train: Input[Dataset],
    schema: Input[Artifact],
    registry: str,
    model_name: str,
    config: dict,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Score the challenger, the baseline and production on the same test rows."""
    import json
    import os

    import joblib

    from kubeloop.components.evaluate import (
        evaluate_step,
        load_champion,
        report_markdown,
        stability_rows,
        summary_line,
    )
    from kubeloop.config import Config
    from kubeloop.progress import stage
    from kubeloop.registry import Registry
    from kubeloop.tables import read_parquet

    with stage("evaluate") as st:
        cfg = Config.from_dict(config)
        sch = json.loads(open(schema.path).read())
        champion = load_champion(Registry(registry, cfg.storage), model_name)
        doc = evaluate_step(
            joblib.load(os.path.join(model.path, "model.joblib")),
            joblib.load(os.path.join(baseline.path, "model.joblib")),
            read_parquet(test.path),
            stability_rows(train.path, sch, cfg.evaluation),
            sch,
            cfg,
            champion,
        )
        with open(evaluation.path, "w") as f:
            json.dump(doc, f, indent=2, allow_nan=False, default=str)
        with open(report.path, "w") as f:
            f.write(report_markdown(doc, model_name=model_name))
        for name, value in doc["metrics"].items():
            if value is not None:
                metrics.log_metric(name, float(value))
        curves = doc.get("curves") or {}
        if curves.get("confusion_matrix"):
            cm = curves["confusion_matrix"]
            classification_metrics.log_confusion_matrix(cm["categories"], cm["matrix"])
        if curves.get("roc"):
            roc = curves["roc"]
            classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
        st.result = summary_line(doc)
        st.details = {
            "metric": doc["primary_metric"],
            "value": doc["metrics"].get(doc["primary_metric"]),
        }
