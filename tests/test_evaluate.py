"""The evaluate stage: every metric against sklearn.metrics or a hand computation,
slices, disparity, stability and the whole stage on small fitted pipelines."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, label_binarize

from kubeloop.components.evaluate import (
    MISSING,
    Evaluation,
    EvaluationError,
    _subsample,
    check_sensitive_columns,
    classification_metrics,
    curves,
    disparity,
    evaluate,
    predict,
    regression_metrics,
    report_markdown,
    slice_metrics,
    stability,
)
from kubeloop.config import EvaluationConfig
from kubeloop.metric_names import CLASSIFICATION_METRICS, REGRESSION_METRICS, improvement

RNG_SEED = 7


def _probabilities(rng, n, k):
    p = rng.dirichlet(np.ones(k), size=n)
    # coarse rounding creates ties in the scores, which ranking metrics must handle
    return np.round(p, 2) / np.round(p, 2).sum(axis=1, keepdims=True)


def _sk_ece(conf, outcome, bins):
    """ECE from sklearn's calibration_curve (which drops empty bins) and bin counts."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="right")
    total = 0.0
    for b in np.unique(which):
        m = which == b
        total += m.sum() / conf.size * abs(outcome[m].mean() - conf[m].mean())
    return total


# ---------------------------------------------------------------------------
# Metrics on arrays


@pytest.mark.parametrize(
    "classes,positive",
    [
        (["no", "yes"], "yes"),
        # the positive label is not the last sorted class: sklearn's default would be wrong
        (["no", "yes"], "no"),
        ([0, 1], "1"),  # schema labels are strings; the model's classes are ints
    ],
    ids=["yes-last", "no-first", "int-classes-string-label"],
)
def test_binary_metrics_match_sklearn(classes, positive):
    rng = np.random.default_rng(RNG_SEED)
    n = 400
    proba = _probabilities(rng, n, 2)
    y = np.asarray(classes)[(rng.random(n) < proba[:, 1] * 0.8 + 0.1).astype(int)]
    got = classification_metrics(y, proba, classes, positive_label=positive, bins=10)

    pos = [str(c) for c in classes].index(str(positive))
    truth = np.array([str(v) for v in y]) == str(positive)
    pred = proba.argmax(axis=1) == pos
    score = proba[:, pos]
    expected = {
        "accuracy": skm.accuracy_score(y, np.asarray(classes)[proba.argmax(axis=1)]),
        "precision": skm.precision_score(truth, pred),
        "recall": skm.recall_score(truth, pred),
        "f1": skm.f1_score(truth, pred),
        "roc_auc": skm.roc_auc_score(truth, score),
        "pr_auc": skm.average_precision_score(truth, score),
        "log_loss": skm.log_loss(y, proba, labels=classes),
        "brier_score": skm.brier_score_loss(truth, score),
        "calibration_error": _sk_ece(score, truth.astype(float), 10),
    }
    assert list(got) == list(CLASSIFICATION_METRICS)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize(
    "k,never_predicted",
    [(3, False), (5, False), (4, True)],
    ids=["3-classes", "5-classes", "a-class-never-predicted"],
)
def test_multiclass_metrics_match_sklearn(k, never_predicted):
    rng = np.random.default_rng(k)
    n = 600
    classes = [f"c{i}" for i in range(k)]
    proba = _probabilities(rng, n, k)
    if never_predicted:
        # the last class is never the argmax: its precision is 0/0 and leaves the average
        proba[:, -1] *= 0.01
        proba /= proba.sum(axis=1, keepdims=True)
        assert (proba.argmax(axis=1) != k - 1).all()
    # labels correlated with the probabilities, every class present
    y_idx = np.array([rng.choice(k, p=row) for row in proba])
    y_idx[:k] = np.arange(k)
    y = np.array(classes)[y_idx]
    pred = np.array(classes)[proba.argmax(axis=1)]
    got = classification_metrics(y, proba, classes, bins=7)

    onehot = label_binarize(y, classes=classes)
    conf = proba.max(axis=1)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(
            y, pred, labels=classes, average="macro", zero_division=np.nan
        ),
        "recall": skm.recall_score(y, pred, labels=classes, average="macro", zero_division=np.nan),
        "f1": skm.f1_score(y, pred, labels=classes, average="macro", zero_division=np.nan),
        "roc_auc": skm.roc_auc_score(
            y, proba, multi_class="ovr", average="weighted", labels=classes
        ),
        "pr_auc": skm.average_precision_score(onehot, proba, average="macro"),
        "log_loss": skm.log_loss(y, proba, labels=classes),
        "brier_score": skm.brier_score_loss(y, proba, labels=classes),
        "calibration_error": _sk_ece(conf, (pred == y).astype(float), 7),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_multiclass_auc_with_an_absent_class_weights_present_classes():
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    proba = _probabilities(rng, 200, 3)
    y = np.array(["a", "b"])[rng.integers(0, 2, 200)]  # "c" never occurs
    got = classification_metrics(y, proba, classes)
    per_class = [skm.roc_auc_score(y == c, proba[:, i]) for i, c in enumerate(classes[:2])]
    weights = [np.mean(y == c) for c in classes[:2]]
    assert got["roc_auc"] == pytest.approx(np.dot(per_class, weights), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(
        np.mean(
            [skm.average_precision_score(y == c, proba[:, i]) for i, c in enumerate(classes[:2])]
        )
    )


# y_pos and p_pos of 6 rows; with 2 bins: [0.1, 0.2, 0.35] and [0.6, 0.8, 0.9].
ECE_P = [0.1, 0.2, 0.35, 0.6, 0.8, 0.9]
ECE_Y = [0, 0, 1, 1, 0, 1]


@pytest.mark.parametrize(
    "bins,expected",
    [
        (
            2,
            3 / 6 * abs(1 / 3 - (0.1 + 0.2 + 0.35) / 3)
            + 3 / 6 * abs(2 / 3 - (0.6 + 0.8 + 0.9) / 3),
        ),
        # one row per bin: the mean of |y - p|
        (10, (0.1 + 0.2 + 0.65 + 0.4 + 0.8 + 0.1) / 6),
        # one bin: |mean y - mean p|
        (100, (0.1 + 0.2 + 0.65 + 0.4 + 0.8 + 0.1) / 6),
    ],
)
def test_binary_ece_by_hand(bins, expected):
    p = np.array(ECE_P)
    proba = np.c_[1 - p, p]
    y = np.where(np.array(ECE_Y) == 1, "yes", "no")
    got = classification_metrics(y, proba, ["no", "yes"], positive_label="yes", bins=bins)
    assert got["calibration_error"] == pytest.approx(expected, abs=1e-12)


def test_multiclass_ece_uses_top_label_confidence():
    proba = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.2, 0.6],
            [0.45, 0.1, 0.45],
            [0.3, 0.3, 0.4],
        ]
    )
    y = ["a", "b", "b", "a", "a", "c"]
    # top labels a, a, b, c, a (tie -> first), c; correct: 1, 0, 1, 0, 1, 1
    # 2 bins: conf < 0.5: rows 4, 5 (0.45, 0.4) both correct -> |1 - 0.425| * 2/6
    #         conf >= 0.5: rows 0-3 (0.7, 0.6, 0.8, 0.6), 2 of 4 correct -> |0.5 - 0.675| * 4/6
    expected = 2 / 6 * abs(1 - 0.425) + 4 / 6 * abs(0.5 - 0.675)
    got = classification_metrics(y, proba, ["a", "b", "c"], bins=2)
    assert got["calibration_error"] == pytest.approx(expected, abs=1e-12)
    assert got["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    "y,p_yes,undefined",
    [
        # one class in y_true, all negative: no ROC, no PR, no recall; nothing predicted
        # positive either, so no precision; F1 is 0/0
        (["no"] * 5, [0.1, 0.2, 0.3, 0.4, 0.2], {"roc_auc", "pr_auc", "precision", "recall", "f1"}),
        # all positive: ROC undefined, PR defined
        (["yes"] * 4, [0.9, 0.8, 0.6, 0.7], {"roc_auc"}),
        # both classes but the model never predicts positive: precision undefined only
        (["no", "yes", "no", "yes"], [0.1, 0.4, 0.2, 0.3], {"precision"}),
    ],
    ids=["all-negative", "all-positive", "never-predicts-positive"],
)
def test_undefined_metrics_are_none(y, p_yes, undefined):
    p = np.array(p_yes)
    got = classification_metrics(y, np.c_[1 - p, p], ["no", "yes"], positive_label="yes")
    assert {k for k, v in got.items() if v is None} == undefined
    json.dumps(got, allow_nan=False)
    assert all(isinstance(v, float) for v in got.values() if v is not None)


def test_default_positive_label_is_the_last_class():
    rng = np.random.default_rng(2)
    proba = _probabilities(rng, 100, 2)
    y = np.where(rng.random(100) < proba[:, 0], "no", "yes")
    got = classification_metrics(y, proba, ["no", "yes"])
    assert got == classification_metrics(y, proba, ["no", "yes"], positive_label="yes")
    assert got != classification_metrics(y, proba, ["no", "yes"], positive_label="no")


def test_log_loss_of_certain_wrong_predictions_is_clipped_like_sklearn():
    proba = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    y = ["yes", "yes", "no"]
    got = classification_metrics(y, proba, ["no", "yes"], positive_label="yes")
    assert math.isfinite(got["log_loss"])
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=["no", "yes"]), rel=1e-12)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 300)
    yhat = y + rng.normal(0, 1, 300)
    got = regression_metrics(y, yhat)
    assert list(got) == list(REGRESSION_METRICS)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat), abs=1e-12)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, yhat), abs=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, yhat), abs=1e-12)


def test_regression_r2_of_constant_target_is_none():
    got = regression_metrics([3.0, 3.0, 3.0], [2.0, 3.0, 4.0])
    assert got["r2"] is None
    assert got["mae"] == pytest.approx(2 / 3)
    assert got["rmse"] == pytest.approx(math.sqrt(2 / 3))


@pytest.mark.parametrize(
    "call,words",
    [
        (
            lambda: classification_metrics(["no", "maybe"], [[0.5, 0.5]] * 2, ["no", "yes"]),
            "['maybe']",
        ),
        (
            lambda: classification_metrics(["no", None], [[0.5, 0.5]] * 2, ["no", "yes"]),
            "1 missing labels",
        ),
        (lambda: classification_metrics(["no"], [[0.5, 0.5, 0.0]], ["no", "yes"]), "shape (1, 3)"),
        (lambda: classification_metrics(["no"], [[np.nan, 1.0]], ["no", "yes"]), "NaN"),
        (
            lambda: classification_metrics(["no"], [[0.5, 0.5]], ["no", "yes"], positive_label="y"),
            "'y'",
        ),
        (lambda: regression_metrics(["1", "x"], [1.0, 2.0]), "['x']"),
        (lambda: regression_metrics([1.0, 2.0], [1.0]), "2 values but y_pred has 1"),
    ],
    ids=[
        "unknown-label",
        "missing-label",
        "proba-shape",
        "nan-proba",
        "bad-positive",
        "text-target",
        "lengths",
    ],
)
def test_bad_inputs_raise_clear_errors(call, words):
    with pytest.raises(EvaluationError, match=None) as info:
        call()
    assert words in str(info.value)


# ---------------------------------------------------------------------------
# Curves


def test_curves_binary_match_sklearn_and_fit_kfp():
    rng = np.random.default_rng(5)
    n = 3000
    p = rng.random(n)
    y = np.where(rng.random(n) < p, "yes", "no")
    proba = np.c_[1 - p, p]
    c = curves(y, proba, ["no", "yes"], "yes")
    pred = np.where(p >= 0.5, "yes", "no")
    assert c["confusion_matrix"]["categories"] == ["no", "yes"]
    assert (
        c["confusion_matrix"]["matrix"]
        == skm.confusion_matrix(y, pred, labels=["no", "yes"]).tolist()
    )
    roc = c["roc"]
    assert 2 <= len(roc["fpr"]) <= 200
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert all(math.isfinite(t) for t in roc["thresholds"])
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0)
    assert (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    # the downsampled curve keeps the area (within the resolution of 200 points)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(
        skm.roc_auc_score(y == "yes", p), abs=0.01
    )
    json.dumps(c, allow_nan=False)


def test_curves_first_threshold_is_above_a_score_of_one():
    y = ["no", "yes", "yes"]
    p = np.array([0.2, 1.0, 0.7])
    roc = curves(y, np.c_[1 - p, p], ["no", "yes"], "yes")["roc"]
    assert roc["thresholds"][0] > 1.0 and math.isfinite(roc["thresholds"][0])


@pytest.mark.parametrize(
    "y,classes,proba",
    [
        (["a", "b", "c"], ["a", "b", "c"], np.eye(3)),
        (["no", "no"], ["no", "yes"], np.array([[0.9, 0.1], [0.4, 0.6]])),
    ],
    ids=["multiclass", "one-class"],
)
def test_curves_without_roc(y, classes, proba):
    c = curves(y, proba, classes, None)
    assert c["roc"] is None
    assert (
        c["confusion_matrix"]["matrix"]
        == skm.confusion_matrix(y, np.array(classes)[proba.argmax(axis=1)], labels=classes).tolist()
    )


# ---------------------------------------------------------------------------
# Fitted models on synthetic data


def _churn_frame(n, seed):
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(
        object
    )
    region[rng.random(n) < 0.08] = None
    member = rng.random(n) < 0.5
    tenure = rng.gamma(2.0, 10.0, n)
    spend = rng.normal(50, 15, n)
    logit = -1.0 + 0.04 * tenure - 0.02 * (spend - 50) + 1.2 * member + (region == "south") * 0.8
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    gender = rng.choice(["f", "m"], size=n)
    return pd.DataFrame(
        {
            "region": region,
            "member": member,
            "tenure": tenure,
            "spend": spend,
            "gender": gender,
            "churned": churned,
        }
    )


def _schema(task="classification", target="churned"):
    cols = {
        "region": {"kind": "categorical", "role": "feature"},
        "member": {"kind": "boolean", "role": "feature"},
        "tenure": {"kind": "numeric", "role": "feature"},
        "spend": {"kind": "numeric", "role": "feature"},
        # sensitive attribute kept out of the model
        "gender": {"kind": "categorical", "role": "ignored"},
        target: {
            "kind": "categorical" if task == "classification" else "numeric",
            "role": "target",
        },
    }
    schema = {
        "schema_version": 1,
        "target": target,
        "task": task,
        "columns": cols,
        "time_column": None,
        "id_column": None,
    }
    if task == "classification":
        schema.update(labels=["no", "yes"], positive_label="yes")
    return schema


def _pipeline(head, numeric=("tenure", "spend")):
    features = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region", "member"]),
            ("num", StandardScaler(), list(numeric)),
        ]
    )
    return Pipeline([("features", features), ("model", head)])


@pytest.fixture(scope="module")
def churn():
    train, test = _churn_frame(2000, 1), _churn_frame(1500, 2)
    X = train.drop(columns=["churned", "gender"])
    model = _pipeline(LogisticRegression(max_iter=500)).fit(X, train["churned"])
    baseline = DummyClassifier(strategy="prior").fit(X, train["churned"])
    return train, test, model, baseline


def _eval_cfg(**over):
    return EvaluationConfig(**{"stability_seeds": 0, **over})


def test_predict_scores_only_labelled_rows(churn):
    _, test, model, _ = churn
    test = test.copy()
    test.loc[test.index[:10], "churned"] = None
    preds = predict(model, test, _schema())
    assert len(preds) == len(test) - 10 and preds.n_missing_target == 10
    assert preds.classes[preds.positive] == "yes"


def test_slices_respect_min_rows_missing_and_cap(churn):
    _, test, model, _ = churn
    schema = _schema()
    cfg = _eval_cfg(min_slice_rows=160, max_slices_per_column=2, sensitive_columns=["gender"])
    slices = slice_metrics(model, test, schema, cfg)
    counts = test["region"].fillna(MISSING).value_counts()
    assert sum(counts >= 160) == 3 and sum(counts < 160) == 2  # the cap and the floor both bite
    expected_regions = [v for v, n in counts.items() if n >= 160][:2]
    got_regions = [s["value"] for s in slices if s["column"] == "region"]
    assert got_regions == expected_regions
    assert {s["column"] for s in slices} == {"region", "member", "gender"}

    # each slice's metrics are the metrics of its rows
    proba = model.predict_proba(test.drop(columns=["churned", "gender"]))
    for s in slices:
        key = test[s["column"]].astype(object).where(test[s["column"]].notna(), MISSING).astype(str)
        mask = (key == s["value"]).to_numpy()
        assert s["n"] == mask.sum() >= 160
        direct = classification_metrics(
            test["churned"][mask], proba[mask], model.classes_, positive_label="yes"
        )
        assert s["metrics"] == pytest.approx(direct, abs=1e-12)
        assert s["positive_rate"] == pytest.approx(np.mean(proba[mask, 1] > 0.5))


def test_missing_values_are_their_own_slice(churn):
    _, test, model, _ = churn
    slices = slice_metrics(model, test, _schema(), _eval_cfg(min_slice_rows=30))
    missing = [s for s in slices if s["column"] == "region" and s["value"] == MISSING]
    assert len(missing) == 1 and missing[0]["n"] == int(test["region"].isna().sum())


def test_slices_from_predictions_equal_slices_from_model(churn):
    _, test, model, _ = churn
    cfg = _eval_cfg(min_slice_rows=30)
    assert slice_metrics(predict(model, test, _schema()), test, _schema(), cfg) == slice_metrics(
        model, test, _schema(), cfg
    )


def test_numeric_sensitive_column_is_binned(churn):
    _, test, model, _ = churn
    slices = slice_metrics(model, test, _schema(), _eval_cfg(sensitive_columns=["spend"]))
    spend = [s for s in slices if s["column"] == "spend"]
    assert len(spend) == 5 and sum(s["n"] for s in spend) == len(test)


def _slice(column, value, n, metric_value, rate, metric="roc_auc"):
    return {
        "column": column,
        "value": value,
        "n": n,
        "metrics": {metric: metric_value},
        "positive_rate": rate,
    }


@pytest.mark.parametrize(
    "metric,slices,gap,worst,best,rate_gap,rate_ratio",
    [
        (
            "roc_auc",
            [
                _slice("g", "a", 100, 0.80, 0.30),
                _slice("g", "b", 50, 0.65, 0.10),
                _slice("g", "c", 40, 0.72, 0.20),
                _slice("other", "x", 99, 0.10, 0.90),
            ],
            0.80 - 0.65,
            "b",
            "a",
            0.30 - 0.10,
            0.10 / 0.30,
        ),
        # lower is better: the worst slice has the highest value
        (
            "log_loss",
            [
                _slice("g", "a", 100, 0.40, 0.5, "log_loss"),
                _slice("g", "b", 50, 0.70, 0.5, "log_loss"),
            ],
            0.30,
            "b",
            "a",
            0.0,
            1.0,
        ),
        # an undefined metric in one slice leaves the others to compare
        (
            "roc_auc",
            [
                _slice("g", "a", 100, 0.9, 0.0),
                _slice("g", "b", 50, None, 0.0),
                _slice("g", "c", 50, 0.7, 0.0),
            ],
            0.2,
            "c",
            "a",
            0.0,
            None,
        ),
    ],
    ids=["higher-better", "lower-better", "undefined-slice-and-zero-rates"],
)
def test_disparity_table(metric, slices, gap, worst, best, rate_gap, rate_ratio):
    d = disparity(slices, ["g"], metric)["g"]
    assert d["gap"] == pytest.approx(gap)
    assert (d["worst"]["value"], d["best"]["value"]) == (worst, best)
    assert d["positive_rate_gap"] == pytest.approx(rate_gap)
    assert d["positive_rate_ratio"] == (None if rate_ratio is None else pytest.approx(rate_ratio))
    assert d["n_slices"] == sum(s["column"] == "g" for s in slices)


def test_disparity_with_one_slice_notes_it():
    d = disparity([_slice("g", "a", 100, 0.8, 0.3)], ["g"], "roc_auc")["g"]
    assert d["gap"] is None and "fewer than two slices" in d["note"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: disparity([], ["gender", "ethnicity"], "roc_auc", data_columns=["gender", "age"]),
        lambda: check_sensitive_columns(["gender", "age"], ["gender", "ethnicity"]),
    ],
    ids=["disparity", "early-check"],
)
def test_unknown_sensitive_column_is_named(call):
    with pytest.raises(EvaluationError) as info:
        call()
    assert "['ethnicity']" in str(info.value) and "sensitive" in str(info.value)


def test_disparity_on_a_metric_not_in_slices():
    with pytest.raises(EvaluationError, match="'rmse' is not computed per slice"):
        disparity([_slice("g", "a", 100, 0.8, 0.3)], ["g"], "rmse")


# ---------------------------------------------------------------------------
# Stability


@pytest.fixture(scope="module")
def forest():
    train, test = _churn_frame(600, 11), _churn_frame(400, 12)
    X = train.drop(columns=["churned", "gender"])
    head = RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0, n_jobs=1)
    return train, test, _pipeline(head).fit(X, train["churned"])


def test_stability_of_a_random_model_is_reproducible_and_spread(forest):
    train, test, model = forest
    kw = dict(metric="roc_auc", seeds=3, max_rows=400)
    first = stability(model, train, test, _schema(), **kw)
    again = stability(model, train, test, _schema(), **kw)
    assert first == again
    assert first["std"] > 0 and first["seeds"] == [0, 1, 2] and first["n_train_rows"] == 400
    assert first["mean"] == pytest.approx(np.mean(first["values"]))
    assert first["std"] == pytest.approx(np.std(first["values"], ddof=1))
    assert "model__random_state" in first["random_state_params"]
    assert not first["deterministic"]
    json.dumps(first, allow_nan=False)


def test_stability_subsample_is_stratified(forest):
    train, test, model = forest
    # a stratified subsample keeps the class balance of the training rows
    part = _subsample(train, "churned", 300, True)
    assert len(part) == 300
    assert (part["churned"] == "yes").mean() == pytest.approx(
        (train["churned"] == "yes").mean(), abs=0.005
    )


@pytest.mark.parametrize(
    "seeds,head,expected",
    [
        (0, Ridge(), None),
        (3, LinearRegression(), "deterministic"),
    ],
    ids=["off", "no-random-state"],
)
def test_stability_off_or_deterministic(seeds, head, expected):
    frame = _churn_frame(300, 3).assign(churned=lambda d: d["tenure"] * 2.0)
    schema = _schema("regression")
    model = _pipeline(head).fit(frame.drop(columns=["churned", "gender"]), frame["churned"])
    got = stability(model, frame, frame, schema, metric="rmse", seeds=seeds, max_rows=200)
    if expected is None:
        assert got is None
    else:
        assert got["deterministic"] and got["std"] == 0.0 and got["values"] == []


# ---------------------------------------------------------------------------
# The whole stage


def test_evaluate_binary_with_champion_that_raises(churn):
    train, test, model, baseline = churn
    # an older production model that needs a column today's data no longer has
    legacy = train.drop(columns=["gender"]).assign(legacy=1.0)
    champion = _pipeline(LogisticRegression(), numeric=("tenure", "spend", "legacy")).fit(
        legacy.drop(columns=["churned"]), legacy["churned"]
    )
    cfg = _eval_cfg(sensitive_columns=["gender"], min_slice_rows=50)
    ev = evaluate(
        model, test, _schema(), cfg, primary_metric="roc_auc", baseline=baseline, champion=champion
    )

    assert ev.champion_metrics is None and "legacy" in ev.champion_error
    X = test.drop(columns=["churned", "gender"])
    direct = classification_metrics(
        test["churned"], model.predict_proba(X), model.classes_, positive_label="yes"
    )
    assert ev.metrics == pytest.approx(direct, abs=1e-12)
    base = classification_metrics(
        test["churned"], baseline.predict_proba(X), baseline.classes_, positive_label="yes"
    )
    assert ev.baseline_metrics == pytest.approx(base, abs=1e-12)
    for name, value in ev.lift.items():
        if direct[name] is None or base[name] is None:
            assert value is None
        else:
            assert value == pytest.approx(improvement(name, direct[name], base[name]))
    assert (
        ev.lift["roc_auc"] > 0.1 and ev.lift["log_loss"] > 0
    )  # better on both, whatever the direction
    assert ev.baseline_metrics["roc_auc"] == 0.5  # constant scores: one tie, AUC one half

    assert ev.n_test == len(test) and ev.positive_label == "yes" and ev.task == "classification"
    assert set(ev.disparity) == {"gender"} and ev.disparity["gender"]["n_slices"] == 2
    assert ev.curves["confusion_matrix"]["categories"] == ["no", "yes"]
    assert ev.stability is None
    json.dumps(ev.to_dict(), allow_nan=False)


def test_evaluate_with_working_champion_and_stability(forest, churn):
    train, test, model = forest
    _, _, champion, baseline = churn
    cfg = _eval_cfg(stability_seeds=2, stability_max_rows=300)
    ev = evaluate(
        model,
        test,
        _schema(),
        cfg,
        primary_metric="f1",
        baseline=baseline,
        champion=champion,
        train_df=train,
    )
    X = test.drop(columns=["churned", "gender"])
    expected = classification_metrics(
        test["churned"], champion.predict_proba(X), champion.classes_, positive_label="yes"
    )
    assert ev.champion_error is None and ev.champion_metrics == pytest.approx(expected, abs=1e-12)
    assert ev.stability["metric"] == "f1" and len(ev.stability["values"]) == 2
    json.dumps(ev.to_dict(), allow_nan=False)


def test_evaluate_multiclass():
    frame = _churn_frame(900, 4)
    frame["churned"] = np.select(
        [frame["tenure"] < 10, frame["tenure"] < 25], ["short", "mid"], "long"
    )
    schema = _schema()
    schema.update(labels=["long", "mid", "short"], positive_label=None)
    X = frame.drop(columns=["churned", "gender"])
    model = _pipeline(LogisticRegression(max_iter=500)).fit(X, frame["churned"])
    ev = evaluate(model, frame, schema, _eval_cfg(), primary_metric="roc_auc")
    direct = classification_metrics(frame["churned"], model.predict_proba(X), model.classes_)
    assert ev.metrics == pytest.approx(direct, abs=1e-12)
    assert ev.curves["roc"] is None and len(ev.curves["confusion_matrix"]["matrix"]) == 3
    assert ev.positive_label is None and ev.lift is None
    assert all(s["positive_rate"] is None for s in ev.slices)
    json.dumps(ev.to_dict(), allow_nan=False)


def test_evaluate_regression():
    train, test = _churn_frame(800, 5), _churn_frame(500, 6)
    for f in (train, test):
        f["churned"] = (
            3.0 * f["tenure"] - f["spend"] + np.random.default_rng(0).normal(0, 5, len(f))
        )
    X = train.drop(columns=["churned", "gender"])
    model = _pipeline(Ridge()).fit(X, train["churned"])
    baseline = DummyRegressor().fit(X, train["churned"])
    ev = evaluate(
        model,
        test,
        _schema("regression"),
        _eval_cfg(sensitive_columns=["gender"]),
        primary_metric="rmse",
        baseline=baseline,
    )
    yhat = model.predict(test.drop(columns=["churned", "gender"]))
    assert ev.metrics["rmse"] == pytest.approx(skm.root_mean_squared_error(test["churned"], yhat))
    # rmse is lower-is-better: a lower rmse than the mean predictor is a positive lift
    assert (
        ev.lift["rmse"] == pytest.approx(ev.baseline_metrics["rmse"] - ev.metrics["rmse"])
        and ev.lift["rmse"] > 0
    )
    assert ev.curves is None and ev.disparity["gender"]["positive_rate_gap"] is None
    assert ev.disparity["gender"]["gap"] is not None
    json.dumps(ev.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    "mutate,kwargs,words",
    [
        (lambda d: d.drop(columns=["churned"]), {}, "no target column 'churned'"),
        (lambda d: d.drop(columns=["tenure"]), {}, "lacks feature columns ['tenure']"),
        (lambda d: d.assign(churned="maybe"), {}, "['maybe']"),
        (lambda d: d.assign(churned=None), {}, "no rows with a value in the target"),
        (lambda d: d, {"primary_metric": "rmse"}, "'rmse' is not a classification metric"),
        (lambda d: d, {"cfg": EvaluationConfig(sensitive_columns=["ethnicity"])}, "['ethnicity']"),
    ],
    ids=[
        "no-target",
        "no-feature",
        "unknown-label",
        "all-unlabelled",
        "wrong-metric",
        "sensitive-missing",
    ],
)
def test_evaluate_bad_input(churn, mutate, kwargs, words):
    _, test, model, _ = churn
    args = {"cfg": _eval_cfg(), "primary_metric": "roc_auc", **kwargs}
    with pytest.raises(EvaluationError) as info:
        evaluate(model, mutate(test.copy()), _schema(), args.pop("cfg"), **args)
    assert words in str(info.value)


def test_report_markdown(churn):
    train, test, model, baseline = churn
    cfg = _eval_cfg(sensitive_columns=["gender"], min_slice_rows=50)
    ev = evaluate(model, test, _schema(), cfg, primary_metric="roc_auc", baseline=baseline)
    stab = {
        "metric": "roc_auc",
        "seeds": [0, 1],
        "values": [0.71, 0.73],
        "mean": 0.72,
        "std": 0.0141,
        "n_train_rows": 500,
        "deterministic": False,
        "note": None,
    }
    ev.stability = stab
    md = report_markdown(ev, model_name="churn")
    assert md == report_markdown(ev.to_dict(), model_name="churn")
    assert md.startswith("# Evaluation: `churn`")
    m, b, lift = ev.metrics["roc_auc"], ev.baseline_metrics["roc_auc"], ev.lift["roc_auc"]
    assert f"| **roc_auc** | {m:.4f} | n/a | {b:.4f} | {lift:+.4f} |" in md
    assert "No production model yet." in md
    worst = min((s for s in ev.slices), key=lambda s: s["metrics"]["roc_auc"])
    assert f"| {worst['column']} | {worst['value']} | {worst['n']:,} |" in md
    table = md.split("## Slices")[1].split("##")[0]
    assert table.count("\n| ") - 1 == min(10, len(ev.slices))  # rows after the header
    assert "| gender | 2 |" in md
    assert "mean 0.7200, std 0.0141" in md


def test_evaluation_is_json_without_nan_for_degenerate_test(churn):
    _, test, model, baseline = churn
    only_no = test[test["churned"] == "no"]
    ev = evaluate(
        model,
        only_no,
        _schema(),
        _eval_cfg(sensitive_columns=["gender"]),
        primary_metric="roc_auc",
        baseline=baseline,
    )
    assert ev.metrics["roc_auc"] is None and ev.curves["roc"] is None
    assert ev.disparity["gender"]["gap"] is None
    text = json.dumps(ev.to_dict(), allow_nan=False)
    assert isinstance(Evaluation(**json.loads(text)), Evaluation)
    assert "roc_auc" in report_markdown(ev, model_name="m")


# ---------------------------------------------------------------------------
# Champion and challenger on the same unseen rows


def _rows_of(frames, schema):
    from kubeloop.fingerprints import FingerprintSet, fingerprint_columns

    return FingerprintSet.from_frames(frames, fingerprint_columns(schema))


def _forest(train, seed=0, drop=(), leaf=10):
    cols = [c for c in ("region", "member", "tenure", "spend") if c not in drop]
    cat = [c for c in ("region", "member") if c in cols]
    num = [c for c in ("tenure", "spend") if c in cols]
    features = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), cat), ("num", "passthrough", num)]
    )
    model = Pipeline(
        [
            ("features", features),
            (
                "model",
                RandomForestClassifier(
                    n_estimators=60, min_samples_leaf=leaf, random_state=seed, n_jobs=1
                ),
            ),
        ]
    )
    return model.fit(train[cols], train["churned"])


def test_rows_the_champion_saw_are_left_out_and_its_metrics_are_on_the_rest(churn):
    train, test, model, baseline = churn
    schema = _schema()
    champion = _forest(train, leaf=1)  # grown out: near perfect on its own rows
    # Today's test set holds 400 rows the champion was trained on and 1500 new ones.
    mixed = pd.concat([train.iloc[:400], test], ignore_index=True)
    ev = evaluate(
        model,
        mixed,
        schema,
        _eval_cfg(),
        primary_metric="roc_auc",
        baseline=baseline,
        champion=champion,
        champion_rows=_rows_of([train], schema),
        champion_version="v1",
    )
    comp = ev.champion_comparison
    assert (comp["n_test_rows"], comp["n_excluded"], comp["n_rows"]) == (1900, 400, 1500)
    assert "400" in comp["exclusion"]["reason"] and comp["exclusion"]["method"] == "exact"
    X = test.drop(columns=["churned", "gender"])
    on_new = classification_metrics(
        test["churned"],
        champion.predict_proba(X[["region", "member", "tenure", "spend"]]),
        champion.classes_,
        positive_label="yes",
    )
    assert ev.champion_metrics == pytest.approx(on_new, abs=1e-12)
    assert comp["challenger_metrics"]["roc_auc"] == pytest.approx(
        classification_metrics(
            test["churned"], model.predict_proba(X), model.classes_, positive_label="yes"
        )["roc_auc"]
    )
    p = comp["paired"]["roc_auc"]
    assert set(comp["paired"]) == {"roc_auc", "log_loss", "f1"}
    assert p["n_rows"] == 1500 and p["reference"] == pytest.approx(on_new["roc_auc"])
    assert p["low"] <= p["estimate"] <= p["high"]
    # Without the fingerprints the forest is scored on its own training rows as well.
    blind = evaluate(model, mixed, schema, _eval_cfg(), primary_metric="roc_auc", champion=champion)
    assert blind.champion_comparison["n_excluded"] == 0
    assert "no stored row fingerprints" in blind.champion_comparison["note"]
    assert blind.champion_metrics["roc_auc"] > ev.champion_metrics["roc_auc"] + 0.03
    # The baseline is paired with the challenger on every labelled test row.
    assert ev.baseline_comparison["n_rows"] == 1900
    assert ev.baseline_comparison["paired"]["roc_auc"]["reference"] == pytest.approx(0.5)
    json.dumps(ev.to_dict(), allow_nan=False)
    md = report_markdown(ev, model_name="churn")
    assert "1,500" in md and "400" in md and "95% interval" in md


def test_champion_score_at_the_gate_matches_its_own_held_out_score():
    """Retraining on a superset: with a random split about a third of today's test
    rows were in the champion's training set; left out, the champion's score at the
    gate agrees with the score it had on its own held-out rows."""
    from kubeloop.components.split import split_dataset
    from kubeloop.config import SplitConfig

    schema = _schema()
    old = _churn_frame(3000, 11)
    new = pd.concat([old, _churn_frame(1500, 12)], ignore_index=True)
    first = split_dataset(old, schema, SplitConfig(train=0.6, valid=0.2, test=0.2))
    champion = _forest(first.train, leaf=1)
    X_cols = ["region", "member", "tenure", "spend"]
    held_out = classification_metrics(
        first.test["churned"],
        champion.predict_proba(first.test[X_cols]),
        champion.classes_,
        positive_label="yes",
    )["roc_auc"]
    second = split_dataset(new, schema, SplitConfig(seed=5))
    challenger = _forest(second.train, seed=1)
    rows = _rows_of([first.train, first.valid], schema)
    ev = evaluate(
        challenger,
        second.test,
        schema,
        _eval_cfg(),
        primary_metric="roc_auc",
        champion=champion,
        champion_rows=rows,
    )
    blind = evaluate(
        challenger, second.test, schema, _eval_cfg(), primary_metric="roc_auc", champion=champion
    )
    comp = ev.champion_comparison
    assert comp["n_excluded"] > 0.3 * comp["n_test_rows"]
    gate_score, inflated = ev.champion_metrics["roc_auc"], blind.champion_metrics["roc_auc"]
    assert abs(gate_score - held_out) < 0.04, (gate_score, held_out)
    assert inflated > held_out + 0.04, (inflated, held_out)


def _decide(challenger, champion, rows, test, baseline, **gate):
    from kubeloop.components.gate import decide_from_evaluation
    from kubeloop.config import Config

    cfg = Config.from_dict({"evaluation": {"stability_seeds": 0}, "gate": gate})
    from kubeloop.components.evaluate import Champion, evaluate_step

    doc = evaluate_step(
        challenger, baseline, test, None, _schema(), cfg, Champion("v1", model=champion, rows=rows)
    )
    return decide_from_evaluation(doc, cfg.gate), doc


@pytest.mark.parametrize(
    "challenger_drops,champion_drops,expected,words",
    [
        (
            (),
            ("member", "region"),
            "promote",
            "beats the champion v1",
        ),  # sees what the champion did not
        (("member", "region"), (), "reject", "does not beat"),  # worse
        ((), (), "reject", "does not beat"),  # the same model: a tie never promotes
    ],
    ids=["better", "worse", "equal"],
)
def test_gate_on_paired_estimates_end_to_end(
    churn, challenger_drops, champion_drops, expected, words
):
    train, test, _, baseline = churn
    champion = _forest(train, seed=0, drop=champion_drops)
    challenger = _forest(train, seed=0, drop=challenger_drops)
    d, doc = _decide(challenger, champion, _rows_of([train], _schema()), test, baseline)
    assert d.decision == expected, d.reason
    assert words in d.reason and f"{len(test):,} rows" in d.reason
    assert doc["champion_metrics"] == doc["champion_comparison"]["reference_metrics"]


def test_predict_like_moves_other_classes_into_the_challengers_order(churn):
    train, test, _, _ = churn
    schema = _schema()
    schema["labels"], schema["positive_label"] = ["a", "b", "c"], None

    def three(f):
        return f.assign(churned=np.select([f["tenure"] < 10, f["tenure"] < 25], ["a", "b"], "c"))

    train3, test3 = three(train), three(test)
    X = train3.drop(columns=["churned", "gender"])
    model = _pipeline(LogisticRegression(max_iter=500)).fit(X, train3["churned"])
    # An older champion that never saw class "a".
    older = train3[train3["churned"] != "a"]
    champion = _pipeline(LogisticRegression(max_iter=500)).fit(
        older.drop(columns=["churned", "gender"]), older["churned"]
    )
    from kubeloop.components.evaluate import predict_like

    ref = predict(model, test3, schema)
    got = predict_like(champion, test3, schema, ref, who="the production model")
    assert got.classes == ref.classes == ["a", "b", "c"] and (got.y == ref.y).all()
    own = champion.predict_proba(test3.drop(columns=["churned", "gender"]))
    assert (got.proba[:, 0] == 0).all()
    assert np.allclose(got.proba[:, 1:], own)


# ---------------------------------------------------------------------------
# The production model from the registry


@pytest.fixture
def registry(tmp_path):
    from kubeloop.registry import Registry

    return Registry(str(tmp_path / "registry"))


def _register(registry, model, *, rows: bytes | None = None, raw: bytes | None = None,
              schema: dict | None = None):
    import io
    import json

    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    files = {"model/model.joblib": raw if raw is not None else buf.getvalue()}
    if schema is not None:
        files["schema.json"] = json.dumps(schema).encode()
    if rows is not None:
        from kubeloop.fingerprints import REGISTRY_FILE

        files[REGISTRY_FILE] = rows
    info = registry.register("churn", files)
    registry.set_alias("churn", "production", info.version)
    return info.version


def test_load_champion_without_production_is_empty(registry):
    from kubeloop.components.evaluate import Champion, load_champion

    assert load_champion(registry, "churn") == Champion()


def test_load_champion_with_fingerprints(registry, churn):
    from kubeloop.components.evaluate import load_champion
    from kubeloop.fingerprints import rows_file

    train, test, model, _ = churn
    version = _register(registry, model, rows=rows_file([train], _schema()))
    got = load_champion(registry, "churn")
    assert got.version == version and got.error is None and got.note is None
    assert got.rows.n_rows == len(train) and got.rows.contains_rows(train).all()
    assert np.allclose(
        got.model.predict_proba(test.drop(columns=["churned", "gender"])),
        model.predict_proba(test.drop(columns=["churned", "gender"])),
    )


def test_load_champion_reads_its_registered_positive_label(registry, churn):
    from kubeloop.components.evaluate import load_champion

    _, _, model, _ = churn
    _register(registry, model, schema={**_schema(), "positive_label": "no"})
    assert load_champion(registry, "churn").positive_label == "no"
    _register(registry, model)  # a version without a schema: nothing recorded
    assert load_champion(registry, "churn").positive_label is None


def test_load_champion_registered_without_fingerprints_says_so(registry, churn):
    from kubeloop.components.evaluate import load_champion

    _register(registry, churn[2])
    got = load_champion(registry, "churn")
    assert got.model is not None and got.rows is None and "without row fingerprints" in got.note


@pytest.mark.parametrize(
    "raw,words",
    [
        # a pickle naming a module that no longer exists (a library upgrade or removal)
        (
            b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x0egone_module_xy\x94\x8c\x01C\x94\x93\x94.",
            "gone_module_xy",
        ),
        (b"not a pickle at all", "Error"),
    ],
    ids=["missing-module", "garbage"],
)
def test_load_champion_that_cannot_be_loaded_records_why(registry, raw, words):
    from kubeloop.components.evaluate import load_champion

    version = _register(registry, None, raw=raw)
    got = load_champion(registry, "churn")
    assert got.version == version and got.model is None and words in got.error


def test_evaluate_step_with_a_broken_champion_gives_an_outcome_not_a_crash(registry, churn):
    from kubeloop.components.evaluate import evaluate_step, load_champion
    from kubeloop.components.gate import decide_from_evaluation
    from kubeloop.config import Config

    train, test, model, baseline = churn
    _register(registry, None, raw=b"garbage")
    for mode, expected in (("compare_to_baseline", "promote"), ("block", "reject")):
        cfg = Config.from_dict(
            {"evaluation": {"stability_seeds": 0}, "gate": {"on_champion_error": mode}}
        )
        doc = evaluate_step(
            model, baseline, test, None, _schema(), cfg, load_champion(registry, "churn")
        )
        assert doc["champion_error"] and doc["champion_metrics"] is None
        assert doc["champion_version"] == "v1"
        json.dumps(doc, allow_nan=False)
        d = decide_from_evaluation(doc, cfg.gate)
        assert d.decision == expected and "v1" in (d.reason + " ".join(d.notes))
        assert "could not be loaded or scored" in report_markdown(doc, model_name="churn")


def test_a_test_set_the_champion_saw_entirely_is_too_few_rows(churn):
    from kubeloop.components.gate import decide_from_evaluation
    from kubeloop.config import GateConfig

    train, test, model, baseline = churn
    champion = _forest(train)
    ev = evaluate(
        model,
        train.iloc[:300],
        _schema(),
        _eval_cfg(),
        primary_metric="roc_auc",
        baseline=baseline,
        champion=champion,
        champion_rows=_rows_of([train], _schema()),
        champion_version="v4",
    )
    doc = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    assert doc["champion_comparison"]["n_rows"] == 0
    assert doc["champion_comparison"]["n_excluded"] == 300
    assert all(v is None for v in doc["champion_metrics"].values())
    d = decide_from_evaluation(doc, GateConfig())
    assert d.decision == "reject" and "too few rows" in d.reason and "300" in d.reason


def test_with_an_id_column_the_gate_resamples_ids_and_leaves_out_seen_ids(churn):
    # Customers with 5 rows each; the champion trained on the first 100 customers'
    # rows, 50 of whom come back in the test set with other values.
    from kubeloop.components.evaluate import Champion, evaluate_step
    from kubeloop.components.gate import decide_from_evaluation
    from kubeloop.config import Config
    from kubeloop.fingerprints import FingerprintSet, rows_file

    train, test, _, baseline = churn
    schema = {**_schema(), "id_column": "customer"}
    schema["columns"] = {**schema["columns"], "customer": {"kind": "categorical", "role": "id"}}
    train = train.assign(customer=[f"c{i // 5}" for i in range(len(train))])
    test = test.assign(customer=[f"c{50 + i // 5}" for i in range(len(test))])
    champion = _forest(train, seed=0, drop=("member", "region"))
    challenger = _forest(train, seed=0)
    rows = FingerprintSet.from_bytes(rows_file([train.iloc[:500]], schema))
    cfg = Config.from_dict({"evaluation": {"stability_seeds": 0}})
    doc = evaluate_step(challenger, baseline, test, None, schema, cfg, Champion("v1", model=champion, rows=rows))
    comp = doc["champion_comparison"]
    assert comp["exclusion"]["matched_by"] == "id"
    assert comp["n_excluded"] == 250  # customers c50..c99, 5 rows each, whatever their values
    assert comp["paired"]["roc_auc"]["n_groups"] == len(test) // 5 - 50
    assert doc["baseline_comparison"]["paired"]["roc_auc"]["n_groups"] == len(test) // 5
    d = decide_from_evaluation(doc, cfg.gate)
    assert "resampled by id" in d.reason


@pytest.mark.parametrize("seeds,cap,expected", [(0, 300, None), (2, 5000, 2000), (2, 300, 300)])
def test_stability_rows_read_no_more_of_the_split_than_the_refits_use(tmp_path, monkeypatch, seeds, cap, expected):
    from kubeloop import tables
    from kubeloop.components.evaluate import stability_rows

    train = _churn_frame(2000, 1)
    tables.write_parquet(train, tmp_path / "train.parquet")
    whole_reads = []
    real = tables.read_parquet
    monkeypatch.setattr(tables, "read_parquet", lambda *a, **k: whole_reads.append(a) or real(*a, **k))
    rows = stability_rows(str(tmp_path / "train.parquet"), _schema(), _eval_cfg(stability_seeds=seeds,
                                                                                stability_max_rows=cap))
    if expected is None:
        assert rows is None and not whole_reads
        return
    assert len(rows) == expected
    # A split longer than the cap is sampled from the file, stratified, not read whole.
    assert bool(whole_reads) == (expected == 2000)
    assert (rows["churned"] == "yes").mean() == pytest.approx((train["churned"] == "yes").mean(), abs=0.01)
    assert set(rows.columns) == set(train.columns)
