"""Leakage: columns that predict the target too well to be honest, and columns named like it."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from kubeloop.components.validate.codes import LEAKAGE, TARGET_NAME_TWIN, Anomaly, _block, _warn
from kubeloop.components.validate.profile import _Profile, _role
from kubeloop.config import ValidationConfig

# Leakage probe: rows sampled, the smallest held-out half worth scoring (on fewer rows
# an honest 90 % feature gets every row right too often), and the tree depth (256
# leaves: enough to reproduce a copy of a target with many classes or a monotone
# transform of a numeric one, too shallow to memorise noise on tens of thousands of rows).
LEAKAGE_MAX_ROWS = 50_000
LEAKAGE_MIN_HALF = 100
LEAKAGE_TREE_DEPTH = 8
# A categorical column with more distinct values than this fraction of the sampled rows
# cannot be mapped from one half to the other: most held-out values are unseen.
LEAKAGE_MAX_UNIQUE_FRACTION = 0.5
_SEED = 0


def _normalized_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _check_name_twins(columns: list[str], target: str) -> list[Anomaly]:
    key = _normalized_name(target)
    return [
        _warn(
            TARGET_NAME_TWIN,
            c,
            f"column {c!r} has the target's name {target!r} up to case and punctuation; "
            "if it is a copy or an outcome of the target, drop it",
        )
        for c in columns
        if c != target and key and _normalized_name(c) == key
    ]


def _check_leakage(
    df: pd.DataFrame,
    profiles: dict[str, _Profile],
    target: str,
    task: str,
    cfg: ValidationConfig,
    time_column: str | None,
    id_column: str | None,
) -> list[Anomaly]:
    """Each feature alone, fitted on one half of a sample and scored on the other.

    A column that reproduces the target on held-out rows (balanced accuracy or R^2 at
    least ``leakage_threshold``) was most likely computed from it. The one-feature
    models are deliberately tiny, so a merely strong feature stays well below.
    """
    tp = profiles[target]
    if task == "classification":
        valid = df[target].notna().to_numpy()
    else:
        if tp.kind != "numeric" or tp.values is None:
            return []
        valid = np.isfinite(tp.values)
    idx = np.flatnonzero(valid)
    if len(idx) < 2 * LEAKAGE_MIN_HALF:
        return []
    rng = np.random.default_rng(_SEED)
    if len(idx) > LEAKAGE_MAX_ROWS:
        idx = rng.choice(idx, LEAKAGE_MAX_ROWS, replace=False)
    idx = rng.permutation(idx)
    half = len(idx) // 2
    if task == "classification":
        y = pd.factorize(df[target].iloc[idx])[0]
        if len(np.unique(y[half:])) < 2 or len(np.unique(y[:half])) < 2:
            return []
        metric = "balanced accuracy"
    else:
        assert tp.values is not None
        y = tp.values[idx]
        if np.std(y[half:]) == 0:
            return []
        metric = "R^2"

    found = []
    for name, p in profiles.items():
        role, _ = _role(p, target, time_column, id_column)
        if role != "feature":
            continue
        score = _one_feature_score(df[name].iloc[idx], p, y, half, task)
        if score is not None and score >= cfg.leakage_threshold:
            found.append(
                _block(
                    LEAKAGE,
                    name,
                    f"column {name!r} alone predicts target {target!r} with {metric} {score:.3f} "
                    f"on held-out rows (validation.leakage_threshold={cfg.leakage_threshold:g}); "
                    "it most likely leaks the target: drop it from the data",
                    score=score,
                    metric=metric,
                )
            )
    return found


def _one_feature_score(
    x: pd.Series, p: _Profile, y: np.ndarray, half: int, task: str
) -> float | None:
    classify = task == "classification"
    if p.kind in ("numeric", "datetime"):
        if p.kind == "numeric":
            values = x.to_numpy(dtype="float64", na_value=np.nan)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stamps = pd.to_datetime(x, errors="coerce", utc=True)
            epoch = pd.Timestamp(0, tz="UTC")
            values = (stamps - epoch).dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan)
        values[np.isinf(values)] = np.nan  # trees take NaN as its own branch, not inf
        train = values[:half]
        if np.isnan(train).all():
            return None
        model = (
            DecisionTreeClassifier(
                max_depth=LEAKAGE_TREE_DEPTH, min_samples_leaf=5, random_state=_SEED
            )
            if classify
            else DecisionTreeRegressor(
                max_depth=LEAKAGE_TREE_DEPTH, min_samples_leaf=5, random_state=_SEED
            )
        )
        model.fit(train.reshape(-1, 1), y[:half])
        pred = model.predict(values[half:].reshape(-1, 1))
    else:
        # Value -> majority class (or mean target) learned on half A; missing is a value
        # of its own and values unseen in half A get the overall answer.
        codes = pd.factorize(x, use_na_sentinel=False)[0]
        n_codes = int(codes.max()) + 1 if len(codes) else 0
        if n_codes > LEAKAGE_MAX_UNIQUE_FRACTION * len(codes):
            return None
        ca, cb = codes[:half], codes[half:]
        if classify:
            n_classes = int(y.max()) + 1
            table = np.zeros((n_codes, n_classes), dtype=np.int64)
            np.add.at(table, (ca, y[:half]), 1)
            fallback = int(np.bincount(y[:half], minlength=n_classes).argmax())
            mapping = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), fallback)
        else:
            sums = np.bincount(ca, weights=y[:half], minlength=n_codes)
            seen = np.bincount(ca, minlength=n_codes)
            mapping = np.where(seen > 0, sums / np.maximum(seen, 1), y[:half].mean())
        pred = mapping[cb]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        if classify:
            return float(balanced_accuracy_score(y[half:], pred))
        return float(r2_score(y[half:], pred))
