"""The retraining policy, case by case; and performance decay from labels joined
to prediction logs written in the contract layout."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from monitor_support import drift_frame, write_log

from kubeloop.config import Config
from kubeloop.monitoring.decay import (
    decay_report,
    join_labels,
    read_labels,
    read_logged_predictions,
    score,
)
from kubeloop.monitoring.policy import Evidence, decide_retrain, important_features
from kubeloop.monitoring.stream import DataError

CFG = Config.from_dict({"monitoring": {"min_labeled_rows": 100, "cooldown_hours": 24, "metric_tolerance": 0.02,
                                       "important_features": 2}}).monitoring
NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
IMP = {"age": 0.5, "plan": 0.3, "region": 0.15, "noise": 0.05}


def ev(half: float | None = 0.01, **kw) -> Evidence:
    """Evidence with an interval of +-``half`` around the metric (None: no interval)."""
    base = dict(importance=IMP, metric="accuracy", metric_training=0.90, metric_value=0.90,
                n_new_labeled=500, n_metric=500, last_retrain_at=NOW - timedelta(days=3), now=NOW)
    base.update(kw)
    value = base["metric_value"]
    if value is not None and half is not None:
        base.setdefault("metric_low", value - half)
        base.setdefault("metric_high", value + half)
    return Evidence(**base)


@pytest.mark.parametrize(
    "case,evidence,retrain,reason_has,blocked_has",
    [
        ("nothing happened", ev(), False, None, None),
        ("drift on the most important feature", ev(drifted_columns=["age"]), True, "age", None),
        ("drift only on an unimportant feature", ev(drifted_columns=["noise", "region"]), False, None, None),
        ("importance unknown: any drift counts", ev(drifted_columns=["noise"], importance=None), True, "noise", None),
        ("metric dropped beyond tolerance", ev(metric_value=0.85), True, "accuracy", None),
        ("the interval's best end dropped exactly the tolerance: not beyond", ev(metric_value=0.87), False, None, None),
        ("point estimate beyond the tolerance, interval not", ev(metric_value=0.87, half=0.03), False, None, None),
        ("interval reaching above training", ev(metric_value=0.86, half=0.05), False, None, None),
        ("no interval: decay reported, never retrains", ev(metric_value=0.5, half=None), False, None, None),
        ("too few labelled rows behind the metric", ev(metric_value=0.5, n_metric=99), False, None, None),
        ("just enough labelled rows behind the metric", ev(metric_value=0.5, n_metric=100), True, "accuracy", None),
        ("metric improved", ev(metric_value=0.95), False, None, None),
        ("lower-is-better metric rose", ev(metric="rmse", metric_training=1.0, metric_value=1.5), True, "rmse", None),
        ("lower-is-better metric fell", ev(metric="rmse", metric_training=1.0, metric_value=0.5), False, None, None),
        ("no labels yet: metric unknown, drift decides",
         ev(drifted_columns=["plan"], metric_value=None, n_new_labeled=150), True, "plan", None),
        ("too few new labelled rows", ev(drifted_columns=["age"], n_new_labeled=99), False, "age", "labels arrived"),
        ("cool-down holds", ev(metric_value=0.5, last_retrain_at=NOW - timedelta(hours=23)), False, "accuracy", "cool-down"),
        ("cool-down from a failed attempt", ev(drifted_columns=["age"], last_attempt_at=NOW - timedelta(hours=2)),
         False, "age", "last retrain attempt 2.0 h ago"),
        ("an old attempt, an older registration", ev(drifted_columns=["age"], last_attempt_at=NOW - timedelta(hours=30),
                                                     last_retrain_at=NOW - timedelta(days=9)), True, "age", None),
        ("the newest of attempt and registration counts",
         ev(drifted_columns=["age"], last_attempt_at=NOW - timedelta(days=5), last_retrain_at=NOW - timedelta(hours=3)),
         False, "age", "last retrain 3.0 h ago"),
        ("retrain data already trained on", ev(drifted_columns=["age"], same_data_as="v3"), False, "age", "v3 was trained on"),
        ("cool-down just over", ev(metric_value=0.5, last_retrain_at=NOW - timedelta(hours=24)), True, "accuracy", None),
        ("never retrained", ev(metric_value=0.5, last_retrain_at=None), True, "accuracy", None),
        ("no data to train on", ev(drifted_columns=["age"], retrain_data=False), False, "age", "training data"),
        ("prediction drift alone is only reported", ev(prediction_drifted=True), False, None, None),
    ],
)
def test_policy_table(case, evidence, retrain, reason_has, blocked_has):
    out = decide_retrain(evidence, CFG)
    assert out["retrain"] is retrain, case
    if reason_has:
        assert any(reason_has in r for r in out["reasons"]), out
    else:
        assert out["reasons"] == [], out
    if blocked_has:
        assert any(blocked_has in b for b in out["blocked_by"]), out
    elif retrain:
        assert out["blocked_by"] == []


def test_important_features_ties_and_zeros():
    assert important_features({"b": 0.4, "a": 0.4, "c": 0.2}, 2) == {"a", "b"}
    assert important_features({"a": 0.0, "b": 0.0}, 1) == {"a"}
    assert important_features({"a": 0.7, "b": 0.0}, 2) == {"a"}
    assert important_features(None, 3) is None


# --------------------------------------------------------------------------- decay


def _logs_and_labels(tmp_path, n=600, wrong_after=300):
    df = drift_frame(n, 1, False)[["n0", "c0"]]
    truth = np.where(np.arange(n) % 3 == 0, "yes", "no")
    preds = truth.copy()
    # the model is right on every row until `wrong_after`, then wrong on half
    flip = (np.arange(n) >= wrong_after) & (np.arange(n) % 2 == 0)
    preds[flip] = np.where(truth[flip] == "yes", "no", "yes")
    status = ["ok"] * n
    status[4] = "invalid_input"
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    path, rows = write_log(tmp_path / "logs", "churn", df, predictions=preds, start=start, status=status,
                           probas={"yes": (preds == "yes").astype(float), "no": (preds == "no").astype(float)})
    # a shadow answer for the same requests must not count
    write_log(tmp_path / "logs", "churn", df, predictions=["yes"] * n, start=start, role="shadow")
    labels = pd.DataFrame({"request_id": rows["request_id"], "row": rows["row"], "label": truth,
                           "labeled_at": pd.Timestamp("2026-11-20", tz="UTC")})
    labels = labels.iloc[::2]  # only half the rows got a label
    return rows, labels, truth, preds


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_decay_per_window_from_labels(tmp_path, fmt):
    rows, labels, truth, preds = _logs_and_labels(tmp_path)
    # a corrected label arriving later replaces the first one
    fix = labels.iloc[[0]].assign(label="no" if labels.iloc[0]["label"] == "yes" else "yes",
                                  labeled_at=pd.Timestamp("2026-11-25", tz="UTC"))
    all_labels = pd.concat([labels, fix])
    path = tmp_path / f"labels.{fmt}"
    if fmt == "csv":
        all_labels.to_csv(path, index=False)
    else:
        all_labels.to_parquet(path, index=False)
    logs = read_logged_predictions(str(tmp_path / "logs"), version="v1")
    assert len(logs) == 599  # the rejected row and the shadow answers are out
    joined = join_labels(logs, read_labels(str(path)))
    assert len(joined) == 300 - 1  # labelled rows minus the rejected one
    rep = decay_report(joined, metric="accuracy", task="classification", training_value=0.95, window_hours=24)
    # by hand: the same join in pandas
    want = joined.assign(ok=joined["label"].astype(str) == joined["prediction"])
    assert rep["value"] == pytest.approx(want["ok"].mean())
    assert rep["n_labeled"] == 299
    assert rep["drop"] == pytest.approx(0.95 - rep["value"])
    # 600 rows, 10 minutes apart: 144 a day -> 5 daily windows, the later ones worse
    assert len(rep["windows"]) == 5
    assert sum(w["n"] for w in rep["windows"]) == 299
    assert rep["windows"][0]["value"] > rep["windows"][-1]["value"]
    assert rep["windows"][0]["start"].startswith("2026-11-01")


def test_decay_other_metrics_and_regression():
    df = pd.DataFrame({"label": ["yes", "no", "yes", "no"], "prediction": ["yes", "no", "no", "no"],
                       "proba_yes": [0.9, 0.5, 0.4, 0.3]})
    assert score(df, "recall", "classification", "yes") == pytest.approx(0.5)
    assert score(df, "roc_auc", "classification", "yes") == pytest.approx(0.75)
    reg = pd.DataFrame({"label": [1.0, 2.0, 3.0], "prediction": [1.5, 2.0, 2.0]})
    assert score(reg, "mae", "regression") == pytest.approx(0.5)
    assert score(reg, "rmse", "regression") == pytest.approx(np.sqrt((0.25 + 1) / 3))
    with pytest.raises(DataError, match="roc_auc"):
        score(reg, "roc_auc", "regression")


def test_labels_without_required_columns_are_refused(tmp_path):
    pd.DataFrame({"id": ["a"], "label": ["x"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DataError, match="request_id"):
        read_labels(str(tmp_path / "l.csv"))


def test_no_labels_means_no_metric():
    rep = decay_report(pd.DataFrame(columns=["request_id", "row", "label", "prediction"]), metric="accuracy",
                       task="classification", training_value=0.9, window_hours=24)
    assert rep["value"] is None and rep["windows"] == [] and rep["n_labeled"] == 0


def test_window_filter_on_naive_and_utc_times():
    import pyarrow as pa

    from kubeloop.monitoring.stream import served_rows

    base = datetime(2026, 11, 30, 12)
    times = [base - timedelta(hours=h) for h in (30, 20, 10, 1)]
    since, until = datetime(2026, 11, 30, tzinfo=timezone.utc), datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    for tz in (None, "UTC"):
        batch = pa.record_batch({"time": pa.array(times, pa.timestamp("us", tz=tz)),
                                 "status": ["ok", "ok", "ok", "invalid_input"], "role": ["primary"] * 4})
        kept = served_rows(None, since, until)(batch)
        assert kept.num_rows == 1  # 10 h ago is in the window; 1 h ago was rejected
    bad = pa.record_batch({"time": ["yesterday"]})
    with pytest.raises(DataError, match="time"):
        served_rows(None, since, None)(bad)


def _decay_trigger_rate(true_accuracy: float, n_labels: int, runs: int, *, training: float = 0.85) -> tuple[float, float]:
    """(share of runs the policy retrains on decay, share the old point rule would):
    ``runs`` windows of ``n_labels`` labels each, the model right with probability
    ``true_accuracy``, scored and judged by the real functions."""
    from kubeloop.monitoring.decay import metric_interval

    cfg = Config.from_dict({"monitoring": {"min_labeled_rows": 0, "cooldown_hours": 0}}).monitoring
    rng = np.random.default_rng(12345)
    new = old = 0
    for _ in range(runs):
        right = rng.random(n_labels) < true_accuracy
        label = np.where(rng.random(n_labels) < 0.5, "yes", "no")
        pred = np.where(right, label, np.where(label == "yes", "no", "yes"))
        df = pd.DataFrame({"label": label, "prediction": pred})
        value = score(df, "accuracy", "classification")
        low, high = metric_interval(df, "accuracy", "classification", confidence=cfg.decay_confidence)
        out = decide_retrain(Evidence(metric="accuracy", metric_value=value, metric_training=training,
                                      metric_low=low, metric_high=high, n_metric=n_labels,
                                      n_new_labeled=n_labels, now=NOW), cfg)
        new += out["retrain"]
        old += value < training - cfg.metric_tolerance
    return new / runs, old / runs


def test_decay_with_the_accuracy_unchanged_rarely_retrains():
    # Simulated, 2000 windows of 200 labels at the training accuracy: the point rule
    # (any estimate more than 0.02 below) fires in 17 % of them, the interval in 0.3 %.
    rate, point_rule = _decay_trigger_rate(0.85, 200, 2000)
    assert point_rule > 0.15
    assert rate <= 0.01, rate


def test_decay_of_a_real_drop_is_still_caught():
    # 10 points of accuracy lost (8 beyond the tolerance): caught in most windows of
    # 200 labels (about 84 % here), nearly all of 500 and every one of 1000. The
    # price of the interval is a little power at few labels.
    rate, _ = _decay_trigger_rate(0.75, 200, 500)
    assert rate >= 0.75, rate
    rate, _ = _decay_trigger_rate(0.75, 500, 300)
    assert rate >= 0.95, rate
    rate, _ = _decay_trigger_rate(0.75, 1000, 200)
    assert rate == 1.0, rate


def test_metric_interval_covers_the_estimate_and_narrows_with_rows():
    from kubeloop.monitoring.decay import metric_interval

    rng = np.random.default_rng(3)
    for n in (50, 500, 5000):
        y = rng.normal(0, 1, n)
        df = pd.DataFrame({"label": y, "prediction": y + rng.normal(0, 0.5, n)})
        for metric in ("rmse", "mae", "r2"):
            low, high = metric_interval(df, metric, "regression")
            value = score(df, metric, "regression")
            assert low <= value <= high, (metric, n)
    small = metric_interval(pd.DataFrame({"label": ["a"] * 40 + ["b"] * 60, "prediction": ["a"] * 100}),
                            "accuracy", "classification")
    big = metric_interval(pd.DataFrame({"label": ["a"] * 400 + ["b"] * 600, "prediction": ["a"] * 1000}),
                          "accuracy", "classification")
    assert small[0] < 0.4 < small[1] and big[0] < 0.4 < big[1]
    assert big[1] - big[0] < small[1] - small[0]
    assert metric_interval(pd.DataFrame({"label": ["a"], "prediction": ["a"]}), "accuracy", "classification") == (None, None)


def test_newly_labeled_counts_labels_after_the_last_retrain():
    from kubeloop.monitoring.decay import newly_labeled

    joined = pd.DataFrame({"label": ["a"] * 4, "labeled_at": pd.to_datetime(
        ["2026-11-01", "2026-11-10", "2026-11-20", "2026-11-29"], utc=True)})
    assert newly_labeled(joined, datetime(2026, 11, 15, tzinfo=timezone.utc)) == 2
    assert newly_labeled(joined, None) == 4
    assert newly_labeled(joined.drop(columns="labeled_at"), datetime(2026, 11, 15, tzinfo=timezone.utc)) == 4


@pytest.mark.parametrize(
    "case,evidence,retrain,rule_has",
    [
        ("label feed, too few new labels: drift waits",
         ev(drifted_columns=["age"], n_new_labeled=0, label_feed=True), False, "needs monitoring.min_labeled_rows"),
        ("label feed, enough new labels: drift retrains",
         ev(drifted_columns=["age"], n_new_labeled=CFG.min_labeled_rows, label_feed=True), True, "label feed"),
        ("no label feed: drift alone retrains",
         ev(drifted_columns=["age"], n_new_labeled=0, metric_value=None, n_metric=0, label_feed=False), True,
         "drift alone can retrain"),
        ("no label feed, no drift: nothing to do",
         ev(n_new_labeled=0, metric_value=None, n_metric=0, label_feed=False), False, "does not apply"),
        ("no label feed, drift on an unimportant feature only",
         ev(drifted_columns=["noise"], n_new_labeled=0, metric_value=None, label_feed=False), False, "no label feed"),
        ("no label feed: the cool-down still holds",
         ev(drifted_columns=["age"], n_new_labeled=0, metric_value=None, label_feed=False,
            last_retrain_at=NOW - timedelta(hours=2)), False, "no label feed"),
        ("no label feed: the same data still holds",
         ev(drifted_columns=["age"], n_new_labeled=0, metric_value=None, label_feed=False, same_data_as="v2"),
         False, "no label feed"),
    ],
)
def test_labels_required_only_with_a_label_feed(case, evidence, retrain, rule_has):
    assert CFG.min_labeled_rows > 0  # the rule is only visible with a positive minimum
    out = decide_retrain(evidence, CFG)
    assert out["retrain"] is retrain, case
    assert rule_has in out["label_rule"], case
    assert not any("labels arrived" in b for b in out["blocked_by"]) or evidence.label_feed, case
