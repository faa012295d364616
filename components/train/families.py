"""The model families: each one's estimator (the head after the features step) and
where its random search samples settings from."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ParameterGrid, ParameterSampler, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils import check_random_state

from kubeloop.components.train.base import (
    FOREST_ROWS_PER_TREE,
    FOREST_TREES,
    MISSING_CODE,
    TrainError,
    _check_family,
    _check_task,
    _plain,
)


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


class _Float32Holdout:
    """HistGradientBoosting whose early-stopping holdout is cut before the float64 cast.

    scikit-learn casts the whole input to float64 (its binning reads float64), then
    splits off ``validation_fraction`` for early stopping: two float64 copies of the
    split, four times the features step's float32 output. Cutting the same rows here
    (the split scikit-learn would draw: same seed, same stratification) and passing
    the holdout as ``X_val`` leaves one float64 copy. The model is the one the stock
    estimator fits; only the peak memory differs (bench/bench_train_memory.py).
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None, **kwargs: Any) -> Any:
        n_rows = len(X)
        auto = self.early_stopping == "auto"  # type: ignore[attr-defined]
        stopping = n_rows > 10_000 if auto else bool(self.early_stopping)  # type: ignore[attr-defined]
        if (not stopping or self.validation_fraction is None or kwargs  # type: ignore[attr-defined]
                or sample_weight is not None or self.warm_start):  # type: ignore[attr-defined]
            return super().fit(X, y, sample_weight=sample_weight, **kwargs)  # type: ignore[misc]
        # The seed scikit-learn's fit draws first from random_state for this split.
        seed = check_random_state(self.random_state).randint(  # type: ignore[attr-defined]
            np.iinfo(np.uint32).max, dtype="u8")
        y = np.asarray(y)
        stratify = y if is_classifier(self) else None
        train, val = train_test_split(np.arange(n_rows), test_size=self.validation_fraction,  # type: ignore[attr-defined]
                                      stratify=stratify, random_state=seed)
        take = (lambda rows: X.iloc[rows]) if isinstance(X, pd.DataFrame) else (lambda rows: X[rows])
        # On the holdout the stock estimator would have left early_stopping "auto"
        # deciding on all rows; with X_val given it decides on the training part.
        self.early_stopping = True
        try:
            return super().fit(take(train), y[train], X_val=take(val), y_val=y[val])  # type: ignore[misc]
        finally:
            self.early_stopping = "auto" if auto else stopping


class Float32HoldoutHGBClassifier(_Float32Holdout, HistGradientBoostingClassifier):
    """HistGradientBoostingClassifier cutting its early-stopping holdout in float32."""


class Float32HoldoutHGBRegressor(_Float32Holdout, HistGradientBoostingRegressor):
    """HistGradientBoostingRegressor cutting its early-stopping holdout in float32."""


_FORESTS = {
    ("random_forest", "classification"): CappedRandomForestClassifier,
    ("random_forest", "regression"): CappedRandomForestRegressor,
    ("extra_trees", "classification"): CappedExtraTreesClassifier,
    ("extra_trees", "regression"): CappedExtraTreesRegressor,
}


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
        cls = Float32HoldoutHGBClassifier if classification else Float32HoldoutHGBRegressor
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
