"""The profile a register step stores, from a fitted model and its splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from monitor_support import CATEGORICAL, NUMERIC, drift_frame

from kubeloop.config import Config
from kubeloop.monitoring.profile import check_profile, dumps, registration_profile


def _schema() -> dict:
    cols = {c: {"kind": "numeric", "role": "feature"} for c in NUMERIC}
    cols.update({c: {"kind": "categorical", "role": "feature"} for c in CATEGORICAL})
    cols["y"] = {"kind": "categorical", "role": "target"}
    return {"task": "classification", "target": "y", "labels": ["0", "1"], "positive_label": "1", "columns": cols}


def test_registration_profile_has_predictions_importance_and_metrics():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = drift_frame(4000, 3, False)
    # the target depends on n1 strongly, on c1 a little, on nothing else
    df["y"] = np.where(df["n1"] + (df["c1"] == "a") * 0.5 > 10.2, "1", "0")
    train, test = df.iloc[:3000], df.iloc[3000:]
    model = make_pipeline(
        ColumnTransformer([("n", SimpleImputer(), NUMERIC), ("c", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)]),
        LogisticRegression(max_iter=500),
    ).fit(train[NUMERIC + CATEGORICAL], train["y"])
    prof = registration_profile(train, _schema(), model=model, test_df=test, metrics={"accuracy": 0.97},
                                cfg=Config().monitoring, max_rows=2000)
    check_profile(json.loads(dumps(prof)), "profile")
    assert prof["n_rows"] == 2000  # sampled
    assert prof["positive_label"] == "1"
    assert prof["prediction"]["n"] == len(test)
    assert set(prof["prediction"]["counts"]) <= {"0", "1"}
    imp = prof["importance"]
    assert max(imp, key=imp.get) == "n1"
    assert abs(sum(imp.values()) - 1) < 1e-9
    assert prof["metrics"] == {"accuracy": 0.97}


def test_registration_profile_without_a_model():
    df = pd.DataFrame({"n0": [1.0, 2.0, None], "c0": ["a", "b", "a"]})
    schema = {"task": "regression", "target": "y", "columns": {"n0": {"kind": "numeric", "role": "feature"},
                                                               "c0": {"kind": "categorical", "role": "feature"}}}
    prof = registration_profile(df, schema)
    assert prof["prediction"] is None and prof["importance"] is None
    assert prof["columns"]["n0"]["missing"] == 1 and prof["columns"]["c0"]["counts"] == {"a": 2, "b": 1}


def test_registration_profile_keeps_every_row_in_its_counts_and_moments():
    """Sampled points, but moments and category counts of all the training rows."""
    df = drift_frame(5000, 3, False)
    prof = registration_profile(df, {**_schema(), "task": "regression"}, max_rows=1000, category_cap=2)
    n1 = prof["columns"]["n1"]
    x = df["n1"].dropna().to_numpy()
    assert n1["n"] == x.size and n1["sample"] == 1000 and n1["rank_error"] > 0
    assert abs(n1["mean"] - x.mean()) < 1e-9 * max(1.0, abs(x.mean()))
    assert prof["rows_total"] == 5000 and prof["n_rows"] == 1000
    c1 = prof["columns"]["c1"]
    truth = df["c1"].value_counts()
    # five levels over a cap of two: Misra-Gries counts, the level count still exact (under the KMV's k)
    assert c1["n"] == int(truth.sum()) and c1["levels"] == len(truth) == 5 and c1["count_error"] > 0
    assert c1["other"] == c1["n"] - sum(c1["counts"].values())
    for level, true in truth.items():
        assert true - c1["count_error"] <= c1["counts"].get(level, 0) <= true
