"""The checks on a head's inputs, and the features step's output a head trains on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kubeloop.components.features import categorical_output_columns
from kubeloop.components.train.base import (
    TRANSFORM_BLOCK_ROWS,
    TrainError,
)


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
