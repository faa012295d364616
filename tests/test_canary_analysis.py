"""Canary analysis from prediction-log files written in the contract's layout."""

from __future__ import annotations

import datetime as dt

import pytest
from deploy_support import log_rows, write_labels, write_log_part

from kubeloop.config import CanaryConfig
from kubeloop.deploy.analysis import analyze, read_labels, read_prediction_logs
from kubeloop.errors import UserError

CFG = CanaryConfig(min_rows=200, min_labeled_rows=100)
DAY1 = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.timezone.utc)
DAY2 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.timezone.utc)


def traffic(root, canary_kw=None, *, primary_requests=600, canary_requests=200, task="classification"):
    """Primary and canary answering the same stream, 3:1, on two days, one part per version and day."""
    primary = log_rows("v1", primary_requests // 2, seed=1, start=DAY1, task=task) + []
    primary2 = log_rows("v1", primary_requests // 2, seed=2, start=DAY2, task=task)
    canary = log_rows("v2", canary_requests // 2, seed=3, start=DAY1, task=task, **(canary_kw or {}))
    canary2 = log_rows("v2", canary_requests // 2, seed=4, start=DAY2, task=task, **(canary_kw or {}))
    for i, rows in enumerate([primary, primary2, canary, canary2]):
        write_log_part(root, rows, part=i, task=task)
    return primary + primary2, canary + canary2


def test_good_canary_promotes(tmp_path):
    p, c = traffic(tmp_path)
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "promote", a.verdict.reason
    assert a.files == 4 and a.task == "classification"
    assert a.primary.rows == len(p) and a.canary.rows == len(c)
    assert a.canary.errors == 0 and a.canary.rejections == 0
    assert a.primary.latency_p95_ms > a.primary.latency_p50_ms > 0
    assert set(a.canary.prediction_counts) == {"yes", "no"}
    assert "labels not yet arrived" in a.verdict.reason


def test_canary_that_errors_rolls_back(tmp_path):
    traffic(tmp_path, {"error_every": 10})
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "rollback"
    # Whole requests fail: both rows of one request in ten (of the 100 on each day).
    assert a.canary.errors == 2 * 2 * 10
    assert "error rate" in a.verdict.reason


def test_canary_that_rejects_valid_requests_rolls_back(tmp_path):
    traffic(tmp_path, {"reject_every": 5})
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "rollback" and "rejection rate" in a.verdict.reason
    assert a.canary.rejections == 200 // 5


def test_slow_canary_rolls_back_and_slightly_slower_promotes(tmp_path):
    traffic(tmp_path / "slow", {"latency_ms": 40.0})
    assert analyze(str(tmp_path / "slow"), "churn", "v1", "v2", CFG).verdict.decision == "rollback"
    # 25 % slower against a 50 % bound: on 200 canary requests p95's interval still
    # reaches the bound (hold); on 600 it is inside it (promote).
    traffic(tmp_path / "bit", {"latency_ms": 10.0})
    a = analyze(str(tmp_path / "bit"), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "hold" and "latency p95" in a.verdict.reason
    traffic(tmp_path / "more", {"latency_ms": 10.0}, primary_requests=1800, canary_requests=600)
    a = analyze(str(tmp_path / "more"), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "promote" and "slower but within bounds" in a.verdict.reason


def test_diverging_predictions_hold_until_labels_decide(tmp_path):
    p, c = traffic(tmp_path, {"yes_share": 0.7})
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "hold" and "PSI" in a.verdict.reason
    # labels arrive: the canary is the one that is right more often
    write_labels(tmp_path / "labels-p.csv", p, wrong_every=5)
    write_labels(tmp_path / "labels-c.csv", c, wrong_every=50)
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    for f in ("labels-p.csv", "labels-c.csv"):
        (tmp_path / f).rename(labels_dir / f)
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG, labels_uri=str(labels_dir))
    assert a.verdict.decision == "promote", a.verdict.reason
    # Judged by the Brier score of the logged probabilities: lower is better.
    assert a.canary.metric_name == "brier_score"
    assert a.canary.metric < a.primary.metric and a.canary.labeled_rows == len(c)


def test_worse_on_labels_rolls_back(tmp_path):
    p, c = traffic(tmp_path)
    labels = write_labels(tmp_path / "labels.parquet", p, wrong_every=20)
    bad = write_labels(tmp_path / "labels-c.parquet", c, wrong_every=3)
    import pandas as pd
    pd.concat([pd.read_parquet(labels), pd.read_parquet(bad)]).to_parquet(tmp_path / "all.parquet")
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG, labels_uri=str(tmp_path / "all.parquet"))
    assert a.verdict.decision == "rollback" and "brier_score" in a.verdict.reason
    assert "interval" in a.verdict.reason
    assert a.canary.metric > a.primary.metric  # lower is better


def test_too_little_canary_traffic_holds(tmp_path):
    traffic(tmp_path, canary_requests=60)
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "hold" and "too few samples" in a.verdict.reason


def test_shadow_and_other_versions_are_left_out(tmp_path):
    traffic(tmp_path)
    write_log_part(tmp_path, log_rows("v3", 50, seed=9, role="shadow", start=DAY2, error_every=2), part=7)
    write_log_part(tmp_path, log_rows("v0", 50, seed=8, start=DAY2, error_every=2), part=8)
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "promote"
    assert any("shadow" in n for n in a.notes) and any("v0" in n for n in a.notes)


def test_since_skips_older_days_and_rows(tmp_path):
    traffic(tmp_path)
    df, files = read_prediction_logs(str(tmp_path), "churn", since=DAY2 + dt.timedelta(seconds=50))
    assert files == 2
    assert (df["time"] >= DAY2 + dt.timedelta(seconds=50)).all() and len(df) > 0
    naive, _ = read_prediction_logs(str(tmp_path), "churn", since=dt.datetime(2026, 11, 30))
    assert set(naive["version"]) == {"v1", "v2"}


def test_regression_logs_use_shared_bins(tmp_path):
    traffic(tmp_path, task="regression")
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.task == "regression" and a.verdict.decision == "promote", a.verdict.reason
    assert len(a.primary.prediction_counts) >= 5
    traffic(tmp_path / "shifted", {"yes_share": 2.0}, task="regression")
    assert analyze(str(tmp_path / "shifted"), "churn", "v1", "v2", CFG).verdict.decision == "hold"


def test_no_logs_holds_and_says_so(tmp_path):
    a = analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    assert a.verdict.decision == "hold" and a.files == 0 and any("no prediction logs" in n for n in a.notes)


def test_unreadable_or_incomplete_files_are_clear_errors(tmp_path):
    bad = tmp_path / "churn" / "date=2026-11-30" / "part-20261130T080000-00000000.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    import pandas as pd
    pd.DataFrame({"request_id": ["a"], "version": ["v1"]}).to_parquet(bad)
    with pytest.raises(UserError, match="lacks the columns"):
        analyze(str(tmp_path), "churn", "v1", "v2", CFG)
    with pytest.raises(UserError, match="same version"):
        analyze(str(tmp_path / "x"), "churn", "v1", "v1", CFG)


def test_labels_keep_the_latest_and_need_their_columns(tmp_path):
    import pandas as pd
    pd.DataFrame({"request_id": ["a", "a"], "row": [0, 0], "label": ["no", "yes"],
                  "labeled_at": pd.to_datetime(["2026-12-02", "2026-12-01"], utc=True)}).to_parquet(tmp_path / "l.parquet")
    assert read_labels(str(tmp_path / "l.parquet"))["label"].tolist() == ["no"]
    pd.DataFrame({"request_id": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="missing columns"):
        read_labels(str(tmp_path / "bad.csv"))


def test_logs_and_labels_on_s3(tmp_path, s3_endpoint, bucket, monkeypatch):
    from kubeloop.storage import put_file

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    p, c = traffic(tmp_path / "logs", {"error_every": 10})
    for path in (tmp_path / "logs").rglob("*.parquet"):
        put_file(path, f"s3://{bucket}/predictions/{path.relative_to(tmp_path / 'logs')}")
    write_labels(tmp_path / "labels.parquet", p + c)
    put_file(tmp_path / "labels.parquet", f"s3://{bucket}/labels/labels.parquet")
    a = analyze(f"s3://{bucket}/predictions", "churn", "v1", "v2", CFG,
                labels_uri=f"s3://{bucket}/labels/")
    assert a.files == 4 and a.verdict.decision == "rollback"
    assert a.canary.labeled_rows > 0


def test_parts_written_before_the_window_are_not_read(tmp_path):
    traffic(tmp_path)
    # Same day as the window, written a minute before it starts: it cannot hold a row
    # of the window, so it is never fetched (were it read, this one would be an error).
    early = tmp_path / "churn" / "date=2026-11-30" / "part-20261130T080000-0000dead.parquet"
    early.write_bytes(b"not parquet")
    since = DAY2 + dt.timedelta(minutes=1)
    df, files = read_prediction_logs(str(tmp_path), "churn", since=since)
    assert files == 2 and len(df) and (df["time"] >= since).all()
    with pytest.raises(UserError, match="not a readable Parquet file"):
        read_prediction_logs(str(tmp_path), "churn", since=DAY2 - dt.timedelta(seconds=1))


def test_many_parts_are_read_whole(tmp_path):
    """Parts fetched on several threads: every row of every part, none twice."""
    rows = []
    for i in range(12):
        part = log_rows("v1", 20, seed=i, start=DAY2 + dt.timedelta(minutes=i))
        rows += part
        write_log_part(tmp_path, part, part=i)
    df, files = read_prediction_logs(str(tmp_path), "churn")
    assert files == 12 and len(df) == len(rows)
    assert not df.duplicated(["request_id", "row"]).any()
