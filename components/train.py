"""Train stage: a trivial baseline and one tuned candidate per model family.

Every family fits a *head*: the model that sits after the features step, on its
float32 output, where ``cat__`` columns hold category codes (NaN for missing or
unseen) and every other column is numeric, imputed and scaled. The pipeline runs
one family per parallel task:

1. ``search_family`` tries ``search_iterations`` settings (the family's
   scikit-learn defaults first, then a seeded random search) on a subsample of at
   most ``search_max_rows`` training rows, stratified for classification, scored
   on at most ``search_valid_max_rows`` validation rows;
2. the winning settings are refitted on the whole training split and scored on
   the whole validation split;
3. ``select_best`` picks the best family on that validation score, and
   ``compose_model`` puts the fitted features step and the winning head into the
   one ``Pipeline`` that is evaluated, registered and served.

Families:

``linear``
    LogisticRegression (classification) or Ridge (regression); ``cat__`` codes are
    one-hot encoded (missing as its own level) into a sparse matrix, numerics pass
    through. Searches ``C`` / ``alpha``.
``hist_gradient_boosting``
    HistGradientBoosting with native categorical support for the ``cat__`` columns
    (NaN codes go to the missing-value bin). Searches the learning rate, tree
    size, leaf size, L2 penalty and number of iterations.
``random_forest`` / ``extra_trees``
    NaN codes become -1; every tree is grown on a bootstrap sample of at most
    ``FOREST_ROWS_PER_TREE`` rows, which bounds the cost on large training sets.
    Searches depth, leaf size and features per split.

Scores come from ``components.evaluate``'s metric functions, so the number the
search and the selection optimize is exactly the number evaluation reports and
the gate judges.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import loguniform
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ParameterGrid, ParameterSampler, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from kubeloop.components.evaluate import (
    EvaluationError,
    classification_metrics,
    regression_metrics,
)
from kubeloop.components.features import categorical_output_columns
from kubeloop.config import TrainConfig
from kubeloop.errors import UserError
from kubeloop.metric_names import CLASSIFICATION_METRICS, REGRESSION_METRICS, higher_is_better

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


# ---------------------------------------------------------------------------
# Forests whose bootstrap size is a cap, not a demand.


class _RowCappedForest:
    """``max_samples`` as an int is an upper bound on the rows each tree sees.

    scikit-learn reads an int ``max_samples`` literally: older releases refuse one
    larger than the training set, newer ones draw that many rows with replacement
    from a small set, so every tree sees nearly the same rows. Either breaks a
    refit on a small subsample (evaluation's stability estimate refits the model
    on a few thousand rows), so at or below the cap every tree gets a standard
    bootstrap of the whole set.
    """

    max_samples: Any

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        cap = self.max_samples
        if isinstance(cap, numbers.Integral) and cap >= len(X):
            self.max_samples = None
            try:
                return super().fit(X, y, sample_weight=sample_weight)  # type: ignore[misc]
            finally:
                self.max_samples = cap
        return super().fit(X, y, sample_weight=sample_weight)  # type: ignore[misc]


class CappedRandomForestClassifier(_RowCappedForest, RandomForestClassifier):
    """RandomForestClassifier whose int ``max_samples`` caps the rows per tree."""


class CappedRandomForestRegressor(_RowCappedForest, RandomForestRegressor):
    """RandomForestRegressor whose int ``max_samples`` caps the rows per tree."""


class CappedExtraTreesClassifier(_RowCappedForest, ExtraTreesClassifier):
    """ExtraTreesClassifier whose int ``max_samples`` caps the rows per tree."""


class CappedExtraTreesRegressor(_RowCappedForest, ExtraTreesRegressor):
    """ExtraTreesRegressor whose int ``max_samples`` caps the rows per tree."""


_FORESTS = {
    ("random_forest", "classification"): CappedRandomForestClassifier,
    ("random_forest", "regression"): CappedRandomForestRegressor,
    ("extra_trees", "classification"): CappedExtraTreesClassifier,
    ("extra_trees", "regression"): CappedExtraTreesRegressor,
}


# ---------------------------------------------------------------------------
# Heads.


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


def _model(family: str, task: str, seed: int) -> BaseEstimator:
    """The family's estimator: scikit-learn defaults plus our structural settings."""
    classification = task == "classification"
    if family == "linear":
        if classification:
            # lbfgs usually converges in well under 100 iterations on scaled inputs;
            # the headroom is for weakly regularized settings (large C).
            return LogisticRegression(max_iter=500)
        return Ridge()
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        # early_stopping stays "auto": on above 10,000 rows, where it saves time; on
        # fewer rows a 10% holdout costs more than it saves (and cannot be stratified
        # when a class has a single row).
        return cls(random_state=seed)
    forest = _FORESTS[(family, task)]
    return forest(
        n_estimators=FOREST_TREES,
        max_samples=FOREST_ROWS_PER_TREE,
        bootstrap=True,
        n_jobs=-1,
        random_state=seed,
    )


def _final_estimator(head: Any) -> Any:
    return head.steps[-1][1] if isinstance(head, Pipeline) else head


def _set_params(model: BaseEstimator, family: str, params: dict[str, Any]) -> None:
    known = model.get_params(deep=False)
    unknown = sorted(k for k in params if k not in known)
    if unknown:
        raise TrainError(
            f"{family}: unknown parameters {unknown} for {type(model).__name__}; "
            f"known: {sorted(known)}"
        )
    model.set_params(**params)


def make_head(
    family: str,
    task: str,
    categorical_columns: Sequence[str],
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> BaseEstimator:
    """The unfitted model for one family, taking the features step's output frame.

    ``params`` override the family's defaults (they are set on the final estimator);
    ``categorical_columns`` are the ``cat__`` columns, selected by name, so the head
    must be fitted and used on DataFrames.
    """
    _check_family(family)
    _check_task(task)
    cats = [str(c) for c in categorical_columns]
    model = _model(family, task, seed)
    if params:
        _set_params(model, family, params)

    if family == "hist_gradient_boosting":
        model.set_params(categorical_features=cats or None)
        return model
    if not cats:
        return model
    fill = SimpleImputer(strategy="constant", fill_value=MISSING_CODE)
    if family == "linear":
        # Sparse output: one-hot of a few dozen levels per column would be mostly
        # zeros, and a dense float64 copy of 1M rows would take gigabytes.
        onehot = OneHotEncoder(handle_unknown="ignore", dtype=np.float32)
        encode = ColumnTransformer(
            [("cat", Pipeline([("fill", fill), ("onehot", onehot)]), cats)],
            remainder="passthrough",
            sparse_threshold=1.0,
        )
        return Pipeline([("encode", encode), ("model", model)])
    prepare = ColumnTransformer([("cat", fill, cats)], remainder="passthrough")
    return Pipeline([("fill", prepare), ("model", model)])


def _distributions(family: str, task: str) -> dict[str, Any]:
    """Where the random search samples from (the defaults are tried separately)."""
    if family == "linear":
        if task == "classification":
            return {"C": loguniform(1e-3, 1e2)}
        return {"alpha": loguniform(1e-3, 1e3)}
    if family == "hist_gradient_boosting":
        return {
            "learning_rate": loguniform(0.02, 0.3),
            "max_leaf_nodes": [15, 31, 63, 127],
            "min_samples_leaf": [5, 10, 20, 50, 100],
            "l2_regularization": [0.0, 0.01, 0.1, 1.0, 10.0],
            "max_iter": [100, 200, 400],
        }
    return {
        "max_depth": [None, 8, 12, 16, 24],
        "min_samples_leaf": [1, 2, 5, 10, 20],
        "max_features": ["sqrt", 0.33, 0.5, 1.0],
    }


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


def search_settings(
    family: str,
    task: str,
    n_iter: int,
    seed: int,
    space: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The settings a search tries, in order: the family's defaults first, then up to
    ``n_iter - 1`` distinct random draws from ``space`` (default: the family's)."""
    _check_family(family)
    _check_task(task)
    space = _distributions(family, task) if space is None else dict(space)
    default_model = _model(family, task, seed)
    defaults = default_model.get_params(deep=False)
    unknown = sorted(k for k in space if k not in defaults)
    if unknown:
        raise TrainError(
            f"{family}: the search space names unknown parameters {unknown}; "
            f"known: {sorted(defaults)}"
        )
    settings = [{k: defaults[k] for k in space}]
    draws = max(n_iter - 1, 0)
    if draws and space:
        if all(isinstance(v, (list, tuple)) for v in space.values()):
            # All-list spaces are sampled without replacement; asking for more than
            # the grid holds only earns a warning.
            draws = min(draws, len(ParameterGrid(space)))
        for drawn in ParameterSampler(space, n_iter=draws, random_state=seed):
            candidate = _plain(drawn)
            if candidate not in settings:
                settings.append(candidate)
    return settings


# ---------------------------------------------------------------------------
# Scoring.


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


# ---------------------------------------------------------------------------
# Inputs.


def _as_labels(y: Any, name: str, n_rows: int, task: str) -> np.ndarray:
    values = y.to_numpy() if isinstance(y, pd.Series) else np.asarray(y)
    if values.ndim != 1:
        raise TrainError(f"{name} must be one column of target values, got shape {values.shape}")
    if values.size != n_rows:
        raise TrainError(f"{name} has {values.size} values but its frame has {n_rows} rows")
    missing = pd.isna(values)
    if missing.any():
        raise TrainError(
            f"{name} has {int(missing.sum())} missing target values; drop unlabelled rows "
            "before training"
        )
    if task == "regression":
        try:
            numbers_ = values.astype(np.float64)
        except (TypeError, ValueError):
            examples = [str(v) for v in pd.unique(values)[:5]]
            raise TrainError(
                f"{name} must be numeric for regression; found values like {examples}"
            ) from None
        if not np.isfinite(numbers_).all():
            raise TrainError(f"{name} has infinite values; regression needs finite targets")
        return numbers_
    return values


def _check_frame(X: Any, name: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TrainError(
            f"{name} must be a pandas DataFrame (the features step's output), "
            f"got {type(X).__name__}"
        )
    if len(X) == 0:
        raise TrainError(f"{name} has no rows")
    if X.shape[1] == 0:
        raise TrainError(f"{name} has no columns")
    not_numeric = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    if not_numeric:
        raise TrainError(
            f"{name} columns {not_numeric} are not numeric; train on the output of the "
            "features step, not on raw columns"
        )
    cats = set(categorical_output_columns(X.columns))
    bad = []
    for column in X.columns:
        values = X[column].to_numpy()
        if str(column) in cats:
            if np.isinf(values).any():
                bad.append(f"{column} (infinite category code)")
        elif not np.isfinite(values).all():
            bad.append(str(column))
    if bad:
        raise TrainError(
            f"{name} has missing or infinite values in {bad}; only cat__ columns may hold "
            "NaN (missing or unseen category): the features step imputes the others"
        )
    return X


def _check_inputs(
    X_train: Any, y_train: Any, X_valid: Any, y_valid: Any, task: str
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X_train = _check_frame(X_train, "X_train")
    X_valid = _check_frame(X_valid, "X_valid")
    train_cols, valid_cols = list(X_train.columns), list(X_valid.columns)
    if train_cols != valid_cols:
        missing = [c for c in train_cols if c not in set(valid_cols)]
        extra = [c for c in valid_cols if c not in set(train_cols)]
        if missing or extra:
            raise TrainError(
                f"X_valid must have the columns of X_train: missing {missing}, extra {extra}; "
                "transform both splits with the same fitted features step"
            )
        X_valid = X_valid[train_cols]
    y_tr = _as_labels(y_train, "y_train", len(X_train), task)
    y_va = _as_labels(y_valid, "y_valid", len(X_valid), task)
    if task == "classification":
        seen = pd.unique(y_tr)
        if seen.size < 2:
            raise TrainError(
                f"y_train holds a single class {[str(v) for v in seen]}; classification "
                "needs at least two"
            )
        unseen = sorted({str(v) for v in pd.unique(y_va)} - {str(v) for v in seen})
        if unseen:
            raise TrainError(
                f"y_valid has labels that are not in y_train: {unseen[:10]}; every label "
                "must have training rows"
            )
    return X_train, y_tr, X_valid, y_va


def subsample_rows(y: Any, max_rows: int, *, stratify: bool, seed: int) -> np.ndarray | None:
    """Sorted positions of at most ``max_rows`` rows (stratified on ``y`` when asked),
    or None when every row fits."""
    y = np.asarray(y)
    if y.size <= max_rows:
        return None
    positions = np.arange(y.size)
    try:
        kept, _ = train_test_split(
            positions, train_size=max_rows, random_state=seed, stratify=y if stratify else None
        )
    except ValueError:
        # A class with a single row cannot be stratified: sample plainly.
        kept, _ = train_test_split(positions, train_size=max_rows, random_state=seed)
    # Rows in their original order keep the copy below a sequential read.
    return np.sort(kept)


def _rows(
    X: pd.DataFrame, y: np.ndarray, positions: np.ndarray | None
) -> tuple[pd.DataFrame, np.ndarray]:
    if positions is None:
        return X, y
    return X.take(positions), y[positions]


# ---------------------------------------------------------------------------
# Search.


@dataclass
class CandidateResult:
    """One family's tuned, fitted head and how it got there.

    ``search`` lists every setting tried: ``{"params", "score", "fit_seconds"}`` plus
    ``"error"`` for a setting that failed and ``"warnings"`` when the fit warned.
    ``fit_seconds`` is the final fit on the whole training split.
    """

    family: str
    params: dict[str, Any]
    estimator: Any
    valid_score: float
    metric: str
    search: list[dict[str, Any]]
    fit_seconds: float
    n_train_rows: int
    task: str = ""
    n_valid_rows: int = 0
    n_search_rows: int = 0
    n_search_valid_rows: int = 0
    search_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + " ..."


def _fit(head: Any, X: pd.DataFrame, y: np.ndarray) -> tuple[float, list[str]]:
    """Fit ``head``; its seconds and the distinct warnings it raised (kept for the
    report rather than printed)."""
    with _threads(X), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        head.fit(X, y)
        seconds = time.perf_counter() - start
    messages: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}"
        text = text[:_MAX_MESSAGE_CHARS]
        if text not in messages:
            messages.append(text)
    return seconds, messages[:_MAX_WARNINGS]


def _improves(metric: str, new: float, old: float) -> bool:
    """Strictly better, so that on a tie the earlier setting (the defaults) stays."""
    if not math.isfinite(new):
        return False
    if not math.isfinite(old):
        return True
    return new > old if higher_is_better(metric) else new < old


def search_family(
    family: str,
    X_train: pd.DataFrame,
    y_train: Any,
    X_valid: pd.DataFrame,
    y_valid: Any,
    *,
    task: str,
    metric: str,
    cfg: TrainConfig,
    positive_label: Any = None,
    space: dict[str, Any] | None = None,
) -> CandidateResult:
    """Random search for one family, then the winner refitted on all of ``X_train``.

    The first setting is the family's defaults, and a later one wins only with a
    strictly better search score, so the search never does worse than the defaults
    on validation. ``space`` replaces the family's search distributions. A setting
    that raises is recorded with its error and skipped; ``TrainError`` when all do.
    """
    _check_family(family)
    _check_task(task)
    _check_metric(metric, task)
    X_train, y_tr, X_valid, y_va = _check_inputs(X_train, y_train, X_valid, y_valid, task)
    classification = task == "classification"
    cats = categorical_output_columns(X_train.columns)
    # Every training label, so a subsample that misses a rare class still scores
    # (and is penalized) on it.
    labels = list(np.unique(y_tr)) if classification else None

    train_rows = subsample_rows(y_tr, cfg.search_max_rows, stratify=classification, seed=cfg.seed)
    valid_rows = subsample_rows(
        y_va, cfg.search_valid_max_rows, stratify=classification, seed=cfg.seed
    )
    X_s, y_s = _rows(X_train, y_tr, train_rows)
    X_sv, y_sv = _rows(X_valid, y_va, valid_rows)

    settings = search_settings(family, task, cfg.search_iterations, cfg.seed, space)
    search: list[dict[str, Any]] = []
    best: int | None = None
    best_head: Any = None
    started = time.perf_counter()
    for index, params in enumerate(settings):
        entry: dict[str, Any] = {"params": _plain(params), "score": None, "fit_seconds": None}
        try:
            head = make_head(family, task, cats, params, cfg.seed)
            seconds, caught = _fit(head, X_s, y_s)
            entry["fit_seconds"] = seconds
            if caught:
                entry["warnings"] = caught
            entry["score"] = score(
                metric, head, X_sv, y_sv, task=task, labels=labels, positive_label=positive_label
            )
        except Exception as exc:  # any failure of one setting must not end the search
            entry["error"] = _short(exc)
            search.append(entry)
            continue
        search.append(entry)
        if best is None or _improves(metric, entry["score"], search[best]["score"]):
            best = index
            # With no subsample the search model is the final model: keep it.
            best_head = head if train_rows is None else None
    search_seconds = time.perf_counter() - started

    if best is None:
        first = next(e["error"] for e in search if "error" in e)
        raise TrainError(
            f"{family}: all {len(search)} settings failed; the first error: {first}"
        )

    params = settings[best]
    if best_head is not None:
        head, fit_seconds = best_head, search[best]["fit_seconds"]
        refit_warnings = search[best].get("warnings", [])
    else:
        head = make_head(family, task, cats, params, cfg.seed)
        try:
            fit_seconds, refit_warnings = _fit(head, X_train, y_tr)
        except Exception as exc:
            raise TrainError(
                f"{family}: refitting the best settings {_plain(params)} on all "
                f"{len(X_train)} training rows failed: {_short(exc)}"
            ) from exc
    if valid_rows is None and best_head is not None:
        valid_score = search[best]["score"]
    else:
        valid_score = score(
            metric, head, X_valid, y_va, task=task, labels=labels, positive_label=positive_label
        )
    return CandidateResult(
        family=family,
        params=_plain(params),
        estimator=head,
        valid_score=float(valid_score),
        metric=metric,
        search=search,
        fit_seconds=float(fit_seconds),
        n_train_rows=len(X_train),
        task=task,
        n_valid_rows=len(X_valid),
        n_search_rows=len(X_s),
        n_search_valid_rows=len(X_sv),
        search_seconds=search_seconds,
        warnings=list(refit_warnings),
    )


# ---------------------------------------------------------------------------
# Baseline.


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


# ---------------------------------------------------------------------------
# Selection and the served model.


def candidate_to_dict(result: CandidateResult) -> dict[str, Any]:
    """Everything about a candidate but the fitted model, JSON-able (NaN as None)."""
    return _plain(
        {
            "family": result.family,
            "task": result.task,
            "metric": result.metric,
            "valid_score": result.valid_score,
            "params": result.params,
            "fit_seconds": result.fit_seconds,
            "search_seconds": result.search_seconds,
            "n_train_rows": result.n_train_rows,
            "n_valid_rows": result.n_valid_rows,
            "n_search_rows": result.n_search_rows,
            "n_search_valid_rows": result.n_search_valid_rows,
            "search": result.search,
            "warnings": result.warnings,
        }
    )


def _usable_score(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def select_best(results: list[dict[str, Any]], metric: str) -> int:
    """Index of the best non-baseline candidate by ``valid_score`` in the metric's
    direction. Ties (equal to 12 decimals) go to the earlier family in ``FAMILIES``,
    then to the shorter fit; a missing or NaN score never wins."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    ranked: list[tuple[float, int, float, int]] = []
    skipped: list[str] = []
    for index, result in enumerate(results):
        family = result.get("family")
        if family == BASELINE:
            continue
        scored_with = result.get("metric", metric)
        if scored_with != metric:
            raise TrainError(
                f"candidate {index} ({family}) was scored with {scored_with!r}, not "
                f"{metric!r}; every candidate must be scored with the selection metric"
            )
        value = _usable_score(result.get("valid_score"))
        if value is None:
            reason = result.get("error") or f"score {result.get('valid_score')!r}"
            skipped.append(f"{family}: {reason}")
            continue
        order = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
        seconds = _usable_score(result.get("fit_seconds"))
        ranked.append(
            (-sign * round(value, 12), order, math.inf if seconds is None else seconds, index)
        )
    if not ranked:
        detail = f" (unusable: {'; '.join(skipped)})" if skipped else ""
        raise TrainError(
            f"no model family produced a usable {metric} score{detail}; check the "
            "families' errors and that the validation split holds every class"
        )
    return min(ranked)[3]


def _check_fitted(step: Any, what: str) -> None:
    # A Pipeline counts as fitted when its last step is, and a stateless last step
    # (the features step's float32 cast) always is: check every step.
    parts = [s for _, s in step.steps] if isinstance(step, Pipeline) else [step]
    try:
        for part in parts:
            if part is not None and not (isinstance(part, str) and part == "passthrough"):
                check_is_fitted(part)
    except (NotFittedError, TypeError) as exc:
        raise TrainError(f"the {what} must be fitted before composing the model: {exc}") from None


def compose_model(feature_transformer: Any, head: Any) -> Pipeline:
    """The served model: the fitted features step then the fitted head, not refitted."""
    _check_fitted(feature_transformer, "features step")
    _check_fitted(head, "model")
    expected = getattr(_final_estimator(head), "feature_names_in_", None)
    if isinstance(head, Pipeline):
        expected = getattr(head, "feature_names_in_", expected)
    if expected is not None and hasattr(feature_transformer, "get_feature_names_out"):
        produced = [str(c) for c in feature_transformer.get_feature_names_out()]
        wanted = [str(c) for c in expected]
        if produced != wanted:
            missing = [c for c in wanted if c not in set(produced)]
            raise TrainError(
                "the model was trained on other columns than the features step produces "
                f"(model needs {missing or wanted[:10]}); train on this features step's output"
            )
    return Pipeline([("features", feature_transformer), ("model", head)])


def leaderboard(results: Iterable[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Candidates (dicts) best first, for the reports; unusable scores last. Ties are
    ordered as ``select_best`` breaks them, so the chosen family ranks first."""
    items = list(results)
    sign = 1.0 if higher_is_better(metric) else -1.0

    def key(item: dict[str, Any]) -> tuple[int, float, int, float]:
        value = _usable_score(item.get("valid_score"))
        if value is None:
            return (1, 0.0, 0, 0.0)
        family = item.get("family")
        order = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
        seconds = _usable_score(item.get("fit_seconds"))
        return (0, -sign * round(value, 12), order, math.inf if seconds is None else seconds)

    return sorted(items, key=key)


# ---------------------------------------------------------------------------
# One candidate from split frames: what a pipeline task (and a plain script) runs.


def model_inputs(
    df: pd.DataFrame, transformer: Any, schema: dict[str, Any]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The features step's output and the labels, for the rows that have a label."""
    from kubeloop.schema import feature_columns

    target = schema["target"]
    labelled = df[df[target].notna()] if df[target].isna().any() else df
    inputs = labelled[feature_columns(schema)]
    columns = [str(c) for c in transformer.get_feature_names_out()]
    # Transformed a block of rows at a time into one float32 array: the
    # preprocessing's float64 intermediates then cost a block's worth of memory,
    # not the whole split's (on 700k rows x 20 columns, hundreds of MiB).
    X = np.empty((len(inputs), len(columns)), dtype=np.float32)
    for start in range(0, len(inputs), TRANSFORM_BLOCK_ROWS):
        block = transformer.transform(inputs.iloc[start : start + TRANSFORM_BLOCK_ROWS])
        X[start : start + len(block)] = np.asarray(block, dtype=np.float32)
    return pd.DataFrame(X, columns=columns, index=inputs.index, copy=False), labelled[target].to_numpy()


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
    from kubeloop.components.evaluate import _resolve_positive
    from kubeloop.paired import paired_bootstrap

    baseline = fit_baseline(X_train, y_train, task=task)
    labels = list(np.unique(y_train)) if task == "classification" else []
    positive = None
    if task == "classification":
        y = pd.Index(labels).get_indexer(y_valid)
        if (y < 0).any():
            raise TrainError("y_valid has labels that are not in y_train")
        positive = _resolve_positive(positive_label, labels)
    else:
        y = np.asarray(y_valid, dtype=np.float64)
    estimate = paired_bootstrap(
        task, y, _outputs(head, X_valid, task, labels), _outputs(baseline, X_valid, task, labels),
        [metric], positive=positive, confidence=NOISE_CONFIDENCE, n_bootstrap=NOISE_REPLICATES,
        seed=seed,
    )[metric]
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


def train_candidate(
    family: str,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    transformer: Any,
    schema: dict[str, Any],
    cfg: TrainConfig,
    *,
    metric: str,
) -> tuple[Pipeline, dict[str, Any]]:
    """Tune ``family`` (or fit the baseline) on the features step's output and
    return the served model (features + head) with its candidate record."""
    X_tr, y_tr = model_inputs(train_df, transformer, schema)
    X_va, y_va = model_inputs(valid_df, transformer, schema)
    common = dict(task=schema["task"], metric=metric, positive_label=schema.get("positive_label"))
    if family == BASELINE:
        result = baseline_candidate(X_tr, y_tr, X_va, y_va, **common)
        return compose_model(transformer, result.estimator), candidate_to_dict(result)
    result = search_family(family, X_tr, y_tr, X_va, y_va, cfg=cfg, **common)
    record = candidate_to_dict(result)
    record["vs_baseline"] = _try_compare_with_baseline(
        result, X_tr, y_tr, X_va, y_va, seed=cfg.seed, **common
    )
    return compose_model(transformer, result.estimator), record


def within_noise(record: dict[str, Any]) -> bool:
    """The candidate's validation score is within noise of the baseline's."""
    return bool((record.get("vs_baseline") or {}).get("within_noise"))


def candidate_notes(record: dict[str, Any]) -> list[str]:
    """What a user must know about a candidate that may not have learnt: a score within
    noise of the baseline, and the warnings of its final fit (convergence first)."""
    notes = []
    vs = record.get("vs_baseline") or {}
    if vs.get("within_noise"):
        notes.append(
            f"within noise of the baseline: {vs.get('metric')} {_fmt(record.get('valid_score'))} "
            f"against {_fmt(vs.get('baseline_score'))}, improvement {_fmt(vs.get('estimate'))} "
            f"({vs.get('confidence', NOISE_CONFIDENCE):.0%} interval {_fmt(vs.get('low'))} to "
            f"{_fmt(vs.get('high'))})"
        )
    notes += [f"fit warned: {w}" for w in record.get("warnings") or []]
    return notes


def _fmt(value: Any) -> str:
    number = _usable_score(value)
    return "n/a" if number is None else f"{number:.4f}"


def _advice(family: str, record: dict[str, Any]) -> str:
    warned = " ".join(record.get("warnings") or [])
    tips = []
    if "ConvergenceWarning" in warned:
        tips.append("its solver did not converge: look for unscaled or near-constant columns")
    if family == "linear":
        tips.append("a tree family (train.families: [linear, hist_gradient_boosting]) for "
                    "interactions and thresholds a linear model cannot express")
    else:
        tips.append("another family (train.families) or a larger search (train.search_iterations)")
    tips.append("check that the features carry signal about the target (the validation report "
                "lists the columns used and left out)")
    return "; ".join(tips)


def learning_note(results: Iterable[dict[str, Any]], families: Sequence[str] | None = None) -> str | None:
    """Why the run has no model that learnt anything, or None when one did: every
    candidate's validation score is within noise of the baseline. Names the families
    and what to try; with a single allowed family, that family."""
    candidates = [r for r in results if r.get("family") != BASELINE]
    if not candidates or not all(within_noise(r) for r in candidates):
        return None
    names = [str(r.get("family")) for r in candidates]
    allowed = list(families) if families else names
    head = (
        f"the only allowed family, {names[0]}, learnt nothing"
        if len(allowed) == 1
        else f"no family learnt anything ({', '.join(names)})"
    )
    detail = "; ".join(
        f"{r.get('family')}: {candidate_notes(r)[0]}" for r in candidates
    )
    tips = "; ".join(f"for {r.get('family')} try {_advice(str(r.get('family')), r)}" for r in candidates[:1])
    return f"{head}: {detail}. To try: {tips}."


def leaderboard_markdown(results: Iterable[dict[str, Any]], metric: str, *, chosen: str) -> str:
    """The candidates ranked on validation, for the KFP UI and the registry; a
    candidate within noise of the baseline or whose fit warned says so."""
    items = list(results)
    lines = [
        f"# Candidates on the validation split ({metric})",
        "",
        "| rank | family | " + metric + " | settings tried | search s | final fit s | best settings "
        "| notes |",
        "|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for rank, item in enumerate(leaderboard(items, metric), start=1):
        value = _usable_score(item.get("valid_score"))
        shown = "n/a" if value is None else f"{value:.4f}"
        mark = " **(chosen)**" if item.get("family") == chosen else ""
        if within_noise(item):
            mark += " (within noise of the baseline)"
        params = ", ".join(f"{k}={v}" for k, v in sorted((item.get("params") or {}).items()))
        notes = "; ".join(candidate_notes(item)).replace("|", "\\|") or "-"
        lines.append(
            f"| {rank} | {item.get('family')}{mark} | {shown} | {len(item.get('search') or [])} "
            f"| {float(item.get('search_seconds') or 0):.1f} | {float(item.get('fit_seconds') or 0):.1f} "
            f"| {params or '-'} | {notes} |"
        )
    note = learning_note(items)
    if note:
        lines += ["", f"**No candidate learnt anything**: {note}"]
    return "\n".join(lines) + "\n"


def train_step(
    family: str, train_path: str, valid_path: str, transformer_path: str, schema_path: str,
    config: dict[str, Any], model_dir: str,
) -> dict[str, Any]:
    """What a train (or baseline) task does, on files: fit, then write the served
    model and its candidate record into ``model_dir``; returns the record."""
    import json
    import os

    import joblib

    from kubeloop.components.ingest import read_parquet
    from kubeloop.config import Config
    from kubeloop.metric_names import primary_metric

    cfg = Config.from_dict(config)
    with open(schema_path) as f:
        schema = json.load(f)
    metric = primary_metric(schema["task"], cfg.gate.primary_metric)
    served, record = train_candidate(
        family, read_parquet(train_path), read_parquet(valid_path), joblib.load(transformer_path),
        schema, cfg.train, metric=metric,
    )
    os.makedirs(model_dir, exist_ok=True)
    joblib.dump(served, os.path.join(model_dir, "model.joblib"))
    with open(os.path.join(model_dir, "candidate.json"), "w") as f:
        json.dump(record, f, indent=2, allow_nan=False)
    return record


def _score_text(record: dict[str, Any]) -> str:
    value = _usable_score(record.get("valid_score"))
    return f"valid {record['metric']} " + ("n/a" if value is None else f"{value:.4f}")


# --- KFP adapters ------------------------------------------------------------------

from typing import List  # noqa: E402, UP035 (KFP reads typing.List in artifact lists)

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def train_op(
    family: str,
    train: Input[Dataset],
    valid: Input[Dataset],
    transformer: Input[Model],
    schema: Input[Artifact],
    config: dict,
    model: Output[Model],
):
    """Tune one model family; one task per family, in parallel on a cluster."""
    from kubeloop.components.train import _score_text, train_step
    from kubeloop.progress import stage

    with stage(f"train {family}") as st:
        record = train_step(family, train.path, valid.path, transformer.path, schema.path, config, model.path)
        model.metadata.update({"family": family, "valid_score": record["valid_score"], "metric": record["metric"]})
        st.result = _score_text(record)
        st.details = {"family": family, "valid_score": record["valid_score"]}


@component
def baseline_op(
    train: Input[Dataset],
    valid: Input[Dataset],
    transformer: Input[Model],
    schema: Input[Artifact],
    config: dict,
    model: Output[Model],
):
    """The trivial model (class priors or the mean) every candidate must beat."""
    from kubeloop.components.train import BASELINE, _score_text, train_step
    from kubeloop.progress import stage

    with stage("baseline") as st:
        record = train_step(BASELINE, train.path, valid.path, transformer.path, schema.path, config, model.path)
        st.result = _score_text(record)


@component
def select_op(
    candidates: Input[List[Model]],  # noqa: UP006 (KFP documents typing.List here)
    schema: Input[Artifact],
    config: dict,
    best: Output[Model],
    leaderboard: Output[Markdown],
):
    """Pick the best family on validation; its directory becomes the challenger."""
    import json
    import os
    import shutil

    from kubeloop.components.train import leaderboard_markdown, learning_note, select_best
    from kubeloop.config import Config
    from kubeloop.metric_names import primary_metric
    from kubeloop.progress import stage

    with stage("select") as st:
        cfg = Config.from_dict(config)
        sch = json.loads(open(schema.path).read())
        metric = primary_metric(sch["task"], cfg.gate.primary_metric)
        records = [json.loads(open(os.path.join(c.path, "candidate.json")).read()) for c in candidates]
        index = select_best(records, metric)
        chosen = records[index]
        note = learning_note(records, cfg.train.families)
        shutil.copytree(candidates[index].path, best.path, dirs_exist_ok=True)
        if note:
            # The chosen record travels to the model card and the run summary.
            chosen["learning_note"] = note
            with open(os.path.join(best.path, "candidate.json"), "w") as f:
                json.dump(chosen, f, indent=2, allow_nan=False)
        with open(leaderboard.path, "w") as f:
            f.write(leaderboard_markdown(records, metric, chosen=chosen["family"]))
        best.metadata.update({"family": chosen["family"], "valid_score": chosen["valid_score"]})
        st.result = f"{chosen['family']} (valid {metric} {chosen['valid_score']:.4f})"
        if note:
            st.result += f"; WARNING: {note}"
        st.details = {"family": chosen["family"]}
