"""Performance decay: ground-truth labels that arrive later, joined to the
prediction logs, give the model's metric per time window against its metric at
training time.

Logs follow the prediction-log contract (``request_id``, ``row``, ``time``,
``version``, ``role``, ``prediction``, ``proba_<label>``, ``status``, ...);
labels are Parquet or CSV with ``request_id``, ``row``, ``label``,
``labeled_at``. Only the few columns the join needs are read, batch by batch,
and only rows the primary model answered (``status`` ok, not ``shadow``).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from kubeloop.metric_names import improvement
from kubeloop.monitoring.stream import DataError, iter_batches, served_rows  # noqa: F401 (re-exported)

LOG_KEYS = ("request_id", "row", "time", "version", "role", "status", "prediction")
LABEL_COLUMNS = ("request_id", "row", "label", "labeled_at")


def read_logged_predictions(logs_uri: str, *, storage: Any = None, version: str | None = None,
                            since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    keep = served_rows(version, since, until)
    parts = []
    for batch in iter_batches(logs_uri, None, storage=storage, since=since, until=until):
        names = batch.schema.names
        wanted = [c for c in names if c in LOG_KEYS or c.startswith("proba_")]
        missing = [c for c in ("request_id", "row", "prediction") if c not in names]
        if missing:
            raise DataError(f"{logs_uri}: prediction logs lack columns {missing}")
        batch = keep(batch.select(wanted))
        if batch.num_rows:
            parts.append(batch)
    if not parts:
        return pd.DataFrame(columns=list(LOG_KEYS))
    return pa.Table.from_batches(parts).to_pandas()


def read_labels(labels_uri: str, *, storage: Any = None) -> pd.DataFrame:
    parts = []
    for batch in iter_batches(labels_uri, list(LABEL_COLUMNS), storage=storage,
                              csv_types={"request_id": pa.string(), "row": pa.int64(), "label": pa.string()}):
        missing = [c for c in ("request_id", "row", "label") if c not in batch.schema.names]
        if missing:
            raise DataError(f"{labels_uri}: labels lack columns {missing} (expected {list(LABEL_COLUMNS)})")
        parts.append(batch)
    if not parts:
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    df = pa.Table.from_batches(parts).to_pandas()
    df["request_id"] = df["request_id"].astype(str)
    df["row"] = pd.to_numeric(df["row"], errors="raise").astype("int64")
    if "labeled_at" in df.columns:
        # The latest label of a row wins (a correction arrives after the first label).
        df = df.sort_values("labeled_at", kind="stable")
    return df.drop_duplicates(["request_id", "row"], keep="last")


def join_labels(logs: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Logged predictions with their labels (and ``labeled_at`` when the labels have it)."""
    logs = logs.assign(request_id=logs["request_id"].astype(str), row=logs["row"].astype("int64"))
    keep = [c for c in ("request_id", "row", "label", "labeled_at") if c in labels.columns]
    return logs.merge(labels[keep], on=["request_id", "row"], how="inner")


def newly_labeled(joined: pd.DataFrame, after: datetime | None) -> int:
    """Joined rows whose label arrived after ``after`` (the last retrain or attempt):
    the evidence a retrain would learn from that the current model never saw. With
    no ``labeled_at`` the labels cannot be dated and every joined row counts."""
    if after is None or "labeled_at" not in joined.columns:
        return int(len(joined))
    at = pd.to_datetime(joined["labeled_at"], utc=True, errors="coerce")
    cut = pd.Timestamp(after).tz_convert("UTC") if pd.Timestamp(after).tzinfo else pd.Timestamp(after, tz="UTC")
    return int((at > cut).sum())


def metric_interval(df: pd.DataFrame, metric: str, task: str | None, positive_label: str | None = None,
                    confidence: float = 0.95, resamples: int = 400, seed: int = 0) -> tuple[float | None, float | None]:
    """A ``confidence`` interval of ``metric`` over the joined rows: Wilson's score
    interval for accuracy, the normal interval of the mean (squared) error for mae
    and rmse, a percentile bootstrap over rows for the others."""
    from scipy import stats

    n = len(df)
    if n < 2:
        return None, None
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    if task != "regression" and metric == "accuracy":
        k = float(np.sum(df["label"].astype(str).to_numpy() == df["prediction"].astype(str).to_numpy()))
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    if task == "regression" and metric in ("mae", "rmse"):
        y = pd.to_numeric(df["label"], errors="coerce").to_numpy(float)
        p = pd.to_numeric(df["prediction"], errors="coerce").to_numpy(float)
        ok = np.isfinite(y) & np.isfinite(p)
        e = np.abs(p[ok] - y[ok]) if metric == "mae" else (p[ok] - y[ok]) ** 2
        if e.size < 2:
            return None, None
        half = z * float(np.std(e, ddof=1)) / math.sqrt(e.size)
        lo, hi = max(float(e.mean()) - half, 0.0), float(e.mean()) + half
        return (lo, hi) if metric == "mae" else (math.sqrt(lo), math.sqrt(hi))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        v = score(df.iloc[rng.integers(0, n, n)], metric, task, positive_label)
        if v is not None and math.isfinite(v):
            values.append(v)
    if len(values) < resamples // 2:
        return None, None
    tail = (1 - confidence) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def default_metric(task: str | None) -> str:
    return "rmse" if task == "regression" else "accuracy"


def score(df: pd.DataFrame, metric: str, task: str | None, positive_label: str | None = None) -> float | None:
    """``metric`` of the joined rows (prediction vs label); None when undefined."""
    if df.empty:
        return None
    if task == "regression":
        y = pd.to_numeric(df["label"], errors="coerce").to_numpy(float)
        p = pd.to_numeric(df["prediction"], errors="coerce").to_numpy(float)
        ok = np.isfinite(y) & np.isfinite(p)
        if not ok.any():
            return None
        err = p[ok] - y[ok]
        if metric == "rmse":
            return float(np.sqrt(np.mean(err**2)))
        if metric == "mae":
            return float(np.mean(np.abs(err)))
        if metric == "r2":
            var = np.var(y[ok])
            return float(1 - np.mean(err**2) / var) if var > 0 else None
        raise DataError(f"monitoring.metric {metric!r} cannot score a regression model; use rmse, mae or r2")
    y = df["label"].astype(str).to_numpy()
    p = df["prediction"].astype(str).to_numpy()
    if metric == "accuracy":
        return float(np.mean(y == p))
    if metric in ("precision", "recall", "f1", "roc_auc"):
        from sklearn import metrics as skm

        pos = positive_label
        if pos is None:
            raise DataError(f"monitoring.metric {metric!r} needs a binary model with a positive label")
        if metric == "roc_auc":
            col = f"proba_{pos}"
            if col not in df.columns or len(set(y)) < 2:
                return None
            return float(skm.roc_auc_score(y == pos, df[col].to_numpy(float)))
        fn = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[metric]
        return float(fn(y == pos, p == pos, zero_division=0))
    raise DataError(f"monitoring.metric {metric!r} is not scored from prediction logs; use accuracy, precision, "
                    "recall, f1 or roc_auc (classification), rmse, mae or r2 (regression)")


def decay_report(joined: pd.DataFrame, *, metric: str, task: str | None, training_value: float | None,
                 window_hours: float, positive_label: str | None = None, n_logged: int | None = None,
                 confidence: float = 0.95) -> dict[str, Any]:
    """The metric over all labelled rows (with its ``confidence`` interval) and per
    window of ``window_hours``."""
    out: dict[str, Any] = {"metric": metric, "training_value": training_value, "n_labeled": int(len(joined)),
                           "n_logged": n_logged, "windows": [], "low": None, "high": None,
                           "confidence": confidence}
    if joined.empty:
        out.update(value=None, drop=None, note="no labelled predictions")
        return out
    value = score(joined, metric, task, positive_label)
    out["value"] = value
    out["low"], out["high"] = metric_interval(joined, metric, task, positive_label, confidence)
    out["drop"] = (-improvement(metric, value, training_value)
                   if value is not None and training_value is not None else None)
    if "time" in joined.columns:
        t = pd.to_datetime(joined["time"], utc=True)
        start = t.dt.floor(f"{int(round(window_hours * 3600))}s")
        for w, part in joined.groupby(start, sort=True):
            v = score(part, metric, task, positive_label)
            end = w + pd.Timedelta(hours=window_hours)
            out["windows"].append({"start": w.isoformat(), "end": end.isoformat(), "n": int(len(part)),
                                   "value": v if v is None or math.isfinite(v) else None})
    return out
