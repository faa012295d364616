"""Shared pieces of the monitoring tests: tables with a known drift, prediction
logs in the contract layout, labels."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

NUMERIC = [f"n{i}" for i in range(4)]
CATEGORICAL = [f"c{i}" for i in range(4)]
# The columns drift_frame(drift=True) changes, and how.
DRIFTED = {"n1", "n3", "c1", "c2"}
LEVELS = ["a", "b", "c", "d", "e"]
BASE_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def drift_frame(n: int, seed: int, drift: bool) -> pd.DataFrame:
    """Numeric n0..n3 and categorical c0..c3. With ``drift``: n1 shifts its mean by
    0.5 sd, n3 doubles its spread, c1 swaps its two commonest levels' shares,
    c2 gains an unseen level on 15 % of rows; n0, n2, c0, c3 keep their law."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "n0": rng.normal(0, 1, n),
            "n1": rng.normal(10, 2, n) + (1.0 if drift else 0.0),
            "n2": rng.integers(0, 20, n).astype(float),  # ties
            "n3": rng.lognormal(0, 0.5 * (2.0 if drift else 1.0), n),
        }
    )
    df.loc[rng.random(n) < 0.05, "n0"] = np.nan
    p1 = BASE_P[[1, 0, 2, 3, 4]] if drift else BASE_P
    df["c0"] = rng.choice(LEVELS, n, p=BASE_P)
    df["c1"] = rng.choice(LEVELS, n, p=p1)
    c2 = rng.choice(LEVELS, n, p=BASE_P).astype(object)
    if drift:
        c2[rng.random(n) < 0.15] = "new"
    df["c2"] = c2
    df["c3"] = rng.choice(["x", "y"], n)
    return df


def write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv" or path.name.endswith(".csv.gz"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def write_log(root: Path, model: str, df: pd.DataFrame, *, predictions, version: str = "v1",
              start: datetime | None = None, role: str = "primary", status=None, probas=None,
              rows_per_request: int = 10) -> tuple[Path, pd.DataFrame]:
    """``df``'s rows as prediction-log rows in the contract layout, spread over
    days from ``start``; returns (the log file, the rows written)."""
    start = start or datetime(2026, 11, 1, tzinfo=timezone.utc)
    n = len(df)
    request_ids = [f"req-{i // rows_per_request:06d}" for i in range(n)]
    times = [start + timedelta(minutes=10 * i) for i in range(n)]
    cols: dict[str, pa.Array] = {
        "request_id": pa.array(request_ids, pa.string()),
        "row": pa.array([i % rows_per_request for i in range(n)], pa.int64()),
        "time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "model": pa.array([model] * n, pa.string()),
        "version": pa.array([version] * n, pa.string()),
        "role": pa.array([role] * n, pa.string()),
    }
    for c in df.columns:
        cols[c] = pa.array(df[c].astype(object).where(df[c].notna(), None).tolist())
    cols["prediction"] = pa.array(list(predictions))
    for label, values in (probas or {}).items():
        cols[f"proba_{label}"] = pa.array(values, pa.float64())
    cols["latency_ms"] = pa.array(np.full(n, 3.0))
    cols["status"] = pa.array(list(status) if status is not None else ["ok"] * n, pa.string())
    table = pa.table(cols)
    # One file per UTC day of the rows, under its date= partition, as the predictor writes them.
    days = np.array([t.strftime("%Y-%m-%d") for t in times])
    first = None
    for day in sorted(set(days)):
        path = root / model / f"date={day}" / f"part-{start.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(days == day)), path)
        first = first or path
    return first, table.to_pandas()
