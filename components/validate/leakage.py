"""Leakage: columns that predict the target too well to be honest, and columns named like it."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from kubeloop.components.validate.codes import LEAKAGE, TARGET_NAME_TWIN, Anomaly, _block, _warn
from kubeloop.components.validate.profile import _Profile
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


@dataclass
class LeakageProbe:
    """The rows the leakage check samples, drawn from the target alone, so each feature
    can be scored as it is read and then let go (``TableScan`` reads one column at a
    time): ``idx`` are the sampled row positions, ``y`` the target there, and the first
    ``half`` of them fit the one-feature model that the rest score."""

    idx: np.ndarray
    y: np.ndarray
    half: int
    metric: str
    task: str

    def score(self, column: pd.Series, p: _Profile) -> float | None:
        return _one_feature_score(column.iloc[self.idx], p, self.y, self.half, self.task)


def leakage_probe(y: pd.Series, tp: _Profile, task: str) -> LeakageProbe | None:
    """The sample for the leakage check of a table whose target is ``y`` (profile
    ``tp``); None when there are too few labelled rows, or one class on a side."""
    if task == "classification":
        valid = y.notna().to_numpy()
    else:
        if tp.kind != "numeric":
            return None
        target = y.to_numpy(dtype="float64", na_value=np.nan)
        valid = np.isfinite(target)
    idx = np.flatnonzero(valid)
    if len(idx) < 2 * LEAKAGE_MIN_HALF:
        return None
    rng = np.random.default_rng(_SEED)
    if len(idx) > LEAKAGE_MAX_ROWS:
        idx = rng.choice(idx, LEAKAGE_MAX_ROWS, replace=False)
    idx = rng.permutation(idx)
    half = len(idx) // 2
    if task == "classification":
        sampled = pd.factorize(y.iloc[idx])[0]
        if len(np.unique(sampled[half:])) < 2 or len(np.unique(sampled[:half])) < 2:
            return None
        return LeakageProbe(idx, sampled, half, "balanced accuracy", task)
    sampled = target[idx]
    if np.std(sampled[half:]) == 0:
        return None
    return LeakageProbe(idx, sampled, half, "R^2", task)


def _check_leakage(
    scores: dict[str, float], metric: str, target: str, cfg: ValidationConfig
) -> list[Anomaly]:
    """Each feature alone, fitted on one half of a sample and scored on the other
    (``LeakageProbe.score``, in column order).

    A column that reproduces the target on held-out rows (balanced accuracy or R^2 at
    least ``leakage_threshold``) was most likely computed from it. The one-feature
    models are deliberately tiny, so a merely strong feature stays well below.
    """
    return [
        _block(
            LEAKAGE,
            name,
            f"column {name!r} alone predicts target {target!r} with {metric} {score:.3f} "
            f"on held-out rows (validation.leakage_threshold={cfg.leakage_threshold:g}); "
            "it most likely leaks the target: drop it from the data",
            score=score,
            metric=metric,
        )
        for name, score in scores.items()
        if score >= cfg.leakage_threshold
    ]


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
