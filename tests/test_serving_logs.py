"""The prediction-log writer and reader, in process: flush by size, by time and on
close; bounded queue; storage failures counted; the contract's layout and columns."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from kubeloop.serving.logs import Entry, PredictionLog, read_logs
from kubeloop.serving.schema import Feature

FEATURES = [Feature("age", "numeric"), Feature("plan", "categorical"), Feature("paperless", "boolean"),
            Feature("signup", "datetime")]
ROW = {"age": 41, "plan": "pro", "paperless": "yes", "signup": "2024-05-31T12:00:00Z"}


def _entry(i: int, n: int = 2, when: datetime | None = None) -> Entry:
    proba = np.tile([0.25, 0.75], (n, 1))
    return Entry(f"req-{i}", when or datetime.now(timezone.utc), "v3", "primary", [dict(ROW)] * n,
                 ["ok"] * n, 1.5, ["yes"] * n, proba)


def _log(root: Path, name: str, **kw) -> PredictionLog:
    return PredictionLog(str(root), name, FEATURES, "classification", ["no", "yes"], **kw)


def _parts(root: Path, name: str) -> list[Path]:
    return sorted((root / name).glob("date=*/part-*.parquet"))


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_layout_columns_and_types(tmp_path):
    log = _log(tmp_path, "layout")
    log.record(_entry(1))
    rejected = Entry("req-2", datetime.now(timezone.utc), "v3", "primary",
                     [dict(ROW, age="old"), dict(ROW)], ["wrong_type", "rejected_with_request"], 0.2)
    log.record(rejected)
    log.record(Entry("req-3", datetime.now(timezone.utc), "v3", "primary", None, ["malformed_json"], 0.1))
    log.close()
    parts = _parts(tmp_path, "layout")
    assert len(parts) == 1
    assert re.fullmatch(r"part-\d{8}T\d{6}-[0-9a-f]{8}\.parquet", parts[0].name)
    assert re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", parts[0].parent.name)
    df = read_logs(tmp_path, "layout")
    assert list(df.columns) == ["request_id", "row", "time", "model", "version", "role", "age", "plan",
                                "paperless", "signup", "prediction", "proba_no", "proba_yes", "latency_ms",
                                "status"]
    assert list(zip(df["request_id"], df["row"], df["status"], strict=True)) == [
        ("req-1", 0, "ok"), ("req-1", 1, "ok"), ("req-2", 0, "wrong_type"),
        ("req-2", 1, "rejected_with_request"), ("req-3", -1, "malformed_json")]
    assert df.loc[0, "paperless"] == True  # noqa: E712 - a real boolean column
    assert str(df["signup"].dtype).endswith("UTC]") and df.loc[0, "signup"].hour == 12
    assert np.isnan(df.loc[2, "age"]) and df.loc[3, "age"] == 41  # rejected value -> null
    assert df.loc[0, "proba_yes"] == 0.75 and df["prediction"].isna().sum() == 3


def test_flushes_by_size_and_by_time(tmp_path):
    log = _log(tmp_path, "flush", max_file_rows=10, flush_seconds=0.3)
    for i in range(5):
        log.record(_entry(i))  # 10 rows: one full file
    deadline = time.monotonic() + 5
    while len(_parts(tmp_path, "flush")) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_parts(tmp_path, "flush")) == 1
    log.record(_entry(99, n=1))  # a lone row, written when it is 0.3 s old
    deadline = time.monotonic() + 5
    while len(_parts(tmp_path, "flush")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_parts(tmp_path, "flush")) == 2
    log.close()
    assert len(read_logs(tmp_path, "flush")) == 11


def test_a_full_queue_drops_and_counts(tmp_path):
    before = _metric("kubeloop_log_rows_dropped_total", {"model": "full", "reason": "queue_full"})
    log = _log(tmp_path, "full", max_queue_rows=4, flush_seconds=60, max_file_rows=1000)
    accepted = [log.record(_entry(i)) for i in range(4)]
    assert accepted == [True, True, False, False]
    assert _metric("kubeloop_log_rows_dropped_total", {"model": "full", "reason": "queue_full"}) - before == 4
    log.close()
    assert set(read_logs(tmp_path, "full")["request_id"]) == {"req-0", "req-1"}


def test_the_queue_is_bounded_in_bytes_too(tmp_path):
    """Rows of long text weigh more than their count: the byte bound drops them."""
    before = _metric("kubeloop_log_rows_dropped_total", {"model": "heavy", "reason": "queue_full"})
    log = _log(tmp_path, "heavy", max_queue_rows=1000, max_queue_bytes=10_000, flush_seconds=60,
               max_file_rows=1000)
    heavy = Entry("heavy-0", datetime.now(timezone.utc), "v3", "primary", [{**ROW, "plan": "x" * 6000}], ["ok"],
                  1.0, ["yes"], np.array([[0.25, 0.75]]))
    assert log.record(heavy) and heavy.size_bytes() > 6000
    assert not log.record(Entry("heavy-1", heavy.time, "v3", "primary", heavy.rows, ["ok"], 1.0, ["yes"],
                                heavy.proba))
    assert log.record(_entry(2))  # light rows still fit
    assert _metric("kubeloop_log_rows_dropped_total", {"model": "heavy", "reason": "queue_full"}) - before == 1
    log.close()
    assert set(read_logs(tmp_path, "heavy")["request_id"]) == {"heavy-0", "req-2"}


def test_storage_failure_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the log directory should be")
    before = _metric("kubeloop_log_rows_dropped_total", {"model": "broken", "reason": "storage_error"})
    log = _log(blocker / "logs", "broken")
    assert log.record(_entry(1)) is True  # the request side never sees the failure
    log.close()
    assert _metric("kubeloop_log_rows_dropped_total", {"model": "broken", "reason": "storage_error"}) - before == 2


def test_read_logs_filters_by_time(tmp_path):
    log = _log(tmp_path, "window")
    base = datetime(2026, 3, 1, 23, 0, tzinfo=timezone.utc)
    for h in range(4):  # 23:00 on Mar 1, then 00:00, 01:00, 02:00 on Mar 2
        log.record(_entry(h, n=1, when=base + timedelta(hours=h)))
    log.close()
    assert len(list((tmp_path / "window").glob("date=*"))) == 2  # one partition per day
    assert list(read_logs(tmp_path, "window", since="2026-03-02")["request_id"]) == ["req-1", "req-2", "req-3"]
    got = read_logs(tmp_path, "window", since=base + timedelta(minutes=30), until="2026-03-02T02:00:00Z")
    assert list(got["request_id"]) == ["req-1", "req-2"]
    assert read_logs(tmp_path, "nothing-here").empty


def test_close_is_idempotent_after_writes(tmp_path):
    log = _log(tmp_path, "twice")
    log.record(_entry(1))
    log.close()
    log.close()
    assert len(read_logs(tmp_path, "twice")) == 2
