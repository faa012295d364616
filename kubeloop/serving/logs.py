"""Prediction logs: every scored (or rejected) row as Parquet, written off the request path.

Layout and columns are a contract with canary analysis and monitoring::

    <root>/<model>/date=YYYY-MM-DD/part-<UTC yyyymmddTHHMMSS>-<8 hex>.parquet

    request_id, row, time, model, version, role, <one column per feature>,
    prediction, proba_<label>..., latency_ms, status

A request hands its rows to ``PredictionLog.record``, which only appends to a
bounded in-memory queue (counted in rows, and in an estimate of the bytes the
entries hold: long text values make few rows heavy). One background thread turns the queue
into a Parquet file when it holds ``max_file_rows`` rows or its oldest row is
``flush_seconds`` old, and on ``close`` (the predictor's shutdown). When the queue
is full the request is not logged but counted (``kubeloop_log_rows_dropped
{reason="queue_full"}``); when storage fails, the batch is dropped, counted and
named in a warning: the prediction log never fails or slows a request.
"""

from __future__ import annotations

import io
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kubeloop.serving import metrics
from kubeloop.serving.schema import DateValue, Feature, check_value
from kubeloop.storage import open_store

log = logging.getLogger("kubeloop.serving")

DEFAULT_FILE_ROWS = 5_000
DEFAULT_FLUSH_SECONDS = 5.0
DEFAULT_QUEUE_ROWS = 50_000
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
# Estimated cost of one logged row besides its values (ids, time, outputs, list slots).
_ROW_OVERHEAD_BYTES = 200
BASE_COLUMNS = ("request_id", "row", "time", "model", "version", "role")
_ARROW_KIND = {
    "numeric": pa.float64(),
    "categorical": pa.string(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "text": pa.string(),
}


@dataclass
class Entry:
    """One request's answer (or rejection) by one version.

    ``rows`` are the request's rows as sent (None when the request could not be read
    as rows: it is logged as one row with index -1). ``statuses`` has one code per
    row ("ok" or a rejection reason); ``predictions``/``proba`` are None when nothing
    was scored.
    """

    request_id: str
    time: datetime
    version: str
    role: str
    rows: list[Any] | None
    statuses: list[str]
    latency_ms: float
    predictions: list[Any] | None = None
    proba: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return 1 if self.rows is None else len(self.rows)

    def size_bytes(self) -> int:
        """An estimate of the memory the entry holds while queued: text by its length,
        anything else 16 bytes, plus a fixed cost per row."""
        total = _ROW_OVERHEAD_BYTES * self.n_rows
        for row in self.rows or ():
            if isinstance(row, dict):
                total += sum(len(v) if isinstance(v, str) else 16 for v in row.values())
                total += sum(len(k) for k in row if isinstance(k, str))
        return total


def log_schema(features: list[Feature], task: str, labels: list[str]) -> pa.Schema:
    fields = [
        pa.field("request_id", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("time", pa.timestamp("us", tz="UTC")),
        pa.field("model", pa.string()),
        pa.field("version", pa.string()),
        pa.field("role", pa.string()),
    ]
    fields += [pa.field(f.name, _ARROW_KIND[f.kind]) for f in features]
    fields.append(pa.field("prediction", pa.string() if task == "classification" else pa.float64()))
    if task == "classification":
        fields += [pa.field(f"proba_{label}", pa.float64()) for label in labels]
    fields += [pa.field("latency_ms", pa.float64()), pa.field("status", pa.string())]
    return pa.schema(fields)


def _cell(feature: Feature, value: Any) -> Any:
    """A sent value as its log column holds it; null when absent or not valid."""
    normalized, reason, _ = check_value(feature, value)
    if reason is not None or normalized is None:
        return None
    if feature.kind == "numeric":
        return None if math.isnan(normalized) else normalized
    if feature.kind == "boolean":
        return normalized == "True"
    if isinstance(normalized, DateValue):
        return normalized.when.replace(tzinfo=timezone.utc)
    return normalized


def entries_to_table(entries: list[Entry], *, model: str, features: list[Feature], task: str,
                     labels: list[str], schema: pa.Schema) -> pa.Table:
    """The log rows of ``entries`` as one Arrow table in the contract's column order."""
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    classification = task == "classification"
    for e in entries:
        n = e.n_rows
        indices = [-1] if e.rows is None else list(range(n))
        cols["request_id"] += [e.request_id] * n
        cols["row"] += indices
        cols["time"] += [e.time] * n
        cols["model"] += [model] * n
        cols["version"] += [e.version] * n
        cols["role"] += [e.role] * n
        for f in features:
            if e.rows is None:
                cols[f.name] += [None] * n
            else:
                cols[f.name] += [_cell(f, r.get(f.name)) if isinstance(r, dict) else None for r in e.rows]
        if e.predictions is None:
            cols["prediction"] += [None] * n
        elif classification:
            cols["prediction"] += [str(p) for p in e.predictions]
        else:
            cols["prediction"] += [float(p) for p in e.predictions]
        if classification:
            for k, label in enumerate(labels):
                cols[f"proba_{label}"] += [None] * n if e.proba is None else [float(p) for p in e.proba[:, k]]
        cols["latency_ms"] += [e.latency_ms] * n
        cols["status"] += e.statuses
    return pa.Table.from_pydict(cols, schema=schema)


def part_key(model: str, day: date, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{model}/date={day.isoformat()}/part-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.parquet"


class PredictionLog:
    """A bounded queue of log entries and the thread that writes them as Parquet."""

    def __init__(
        self,
        root: str,
        model: str,
        features: list[Feature],
        task: str,
        labels: list[str],
        *,
        storage_cfg: Any = None,
        max_file_rows: int = DEFAULT_FILE_ROWS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_queue_rows: int = DEFAULT_QUEUE_ROWS,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ):
        self.root = root
        self.model = model
        self.features = list(features)
        self.task = task
        self.labels = [str(label) for label in labels]
        self.schema = log_schema(self.features, task, self.labels)
        self.store = open_store(root, storage_cfg)
        self.max_file_rows = max_file_rows
        self.flush_seconds = flush_seconds
        self.max_queue_rows = max_queue_rows
        self.max_queue_bytes = max_queue_bytes
        self._cond = threading.Condition()
        self._pending: list[Entry] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._oldest = 0.0
        self._closing = False
        self._written = metrics.LOG_ROWS_WRITTEN.labels(model)
        self._queue_gauge = metrics.LOG_QUEUE_ROWS.labels(model)
        self._thread = threading.Thread(target=self._run, name="kubeloop-prediction-log", daemon=True)
        self._thread.start()

    # -- request side (cheap, never blocks on storage) -------------------------------------

    def record(self, entry: Entry) -> bool:
        n = entry.n_rows
        size = entry.size_bytes()
        with self._cond:
            if self._closing:
                reason = "shutdown"
            elif self._pending_rows + n > self.max_queue_rows or self._pending_bytes + size > self.max_queue_bytes:
                reason = "queue_full"
            else:
                first = not self._pending
                if first:
                    self._oldest = time.monotonic()
                self._pending.append(entry)
                self._pending_rows += n
                self._pending_bytes += size
                # Wake the writer to start the flush clock, or to write a full file.
                if first or self._pending_rows >= self.max_file_rows:
                    self._cond.notify()
                return True
        metrics.LOG_ROWS_DROPPED.labels(self.model, reason).inc(n)
        log.warning("prediction log: dropped %d row(s) of request %s (%s)", n, entry.request_id, reason)
        return False

    # -- writer thread ---------------------------------------------------------------------

    def _take(self) -> tuple[list[Entry], bool]:
        with self._cond:
            while True:
                if self._closing:
                    break
                if self._pending_rows >= self.max_file_rows:
                    break
                if self._pending:
                    wait = self._oldest + self.flush_seconds - time.monotonic()
                    if wait <= 0:
                        break
                else:
                    wait = None
                self._cond.wait(wait)
            batch, self._pending, self._pending_rows, self._pending_bytes = self._pending, [], 0, 0
            self._queue_gauge.set(0)
            return batch, self._closing

    def _run(self) -> None:
        while True:
            batch, closing = self._take()
            if batch:
                self._write(batch)
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _write(self, batch: list[Entry]) -> None:
        n = sum(e.n_rows for e in batch)
        try:
            table = entries_to_table(batch, model=self.model, features=self.features, task=self.task,
                                     labels=self.labels, schema=self.schema)
            days = pc_days(table)
            for day in sorted(set(days)):
                part = table.filter(pa.array([d == day for d in days])) if len(set(days)) > 1 else table
                buf = io.BytesIO()
                pq.write_table(part, buf, compression="zstd")
                self.store.write_bytes(part_key(self.model, day), buf.getvalue())
        except Exception as exc:  # noqa: BLE001 - storage outages must not reach requests
            metrics.LOG_ROWS_DROPPED.labels(self.model, "storage_error").inc(n)
            log.warning(
                "prediction log: could not write %d row(s) of %d request(s) (%s ... %s) to %s: %s; "
                "they are dropped", n, len(batch), batch[0].request_id, batch[-1].request_id, self.root, exc,
            )
            return
        self._written.inc(n)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop; rows still unwritten after ``timeout``
        (storage hanging) are counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                stuck = self._pending_rows
            log.warning("prediction log: storage did not finish within %.0fs at shutdown; %d queued "
                        "row(s) dropped", timeout, stuck)
            metrics.LOG_ROWS_DROPPED.labels(self.model, "shutdown").inc(stuck)

    @property
    def pending_rows(self) -> int:
        return self._pending_rows


def pc_days(table: pa.Table) -> list[date]:
    return [t.date() for t in table.column("time").to_pylist()]


# --- reading ------------------------------------------------------------------------------


def _as_utc(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_logs(
    root: str | os.PathLike[str],
    model: str,
    since: Any = None,
    until: Any = None,
    storage: Any = None,
) -> pd.DataFrame:
    """Every logged row of ``model`` with ``since <= time < until`` (UTC; naive means
    UTC), oldest first. Reads only the date partitions in range; ``storage`` is a
    ``StorageConfig`` for s3:// roots. No files: an empty frame with the base columns."""
    store = open_store(os.fspath(root), storage)
    start, end = _as_utc(since), _as_utc(until)
    frames = []
    for key in sorted(store.list(f"{model}/")):
        parts = key.split("/")
        if len(parts) != 3 or not parts[1].startswith("date=") or not parts[2].endswith(".parquet"):
            continue
        try:
            day = date.fromisoformat(parts[1][len("date="):])
        except ValueError:
            continue
        if start is not None and day < start.date():
            continue
        if end is not None and day > end.date():
            continue
        frames.append(pq.read_table(io.BytesIO(store.read_bytes(key))).to_pandas())
    if not frames:
        return pd.DataFrame(columns=list(BASE_COLUMNS))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if start is not None:
        df = df[df["time"] >= start]
    if end is not None:
        df = df[df["time"] < end]
    return df.sort_values(["time", "request_id", "row"], kind="stable").reset_index(drop=True)
