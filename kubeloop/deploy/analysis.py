"""Prediction logs and labels in, the canary verdict's inputs out.

Reads the predictor's Parquet logs (contract layout
``<root>/<model>/date=YYYY-MM-DD/part-<UTC time>-<hex>.parquet``, local or
``s3://`` through ``kubeloop.storage``), keeps the rows of the two versions
being compared (shadow answers excluded: they share request ids with the
primary's and served nobody), summarises each, and calls ``verdict.decide``.

In a KServe canary both revisions run with the same environment, so versions
are told apart by the ``version`` column, never by ``role``.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubeloop.deploy.verdict import Verdict, VersionSummary, decide
from kubeloop.errors import UserError
from kubeloop.serving.schema import FAILED, OK

if TYPE_CHECKING:
    import pandas as pd

    from kubeloop.config import CanaryConfig, StorageConfig
    from kubeloop.deploy.prometheus import RevisionTraffic

BASE_COLUMNS = ["request_id", "row", "time", "model", "version", "role", "prediction", "latency_ms", "status"]
# The status the predictor writes for a row it failed on (answered 500), as
# opposed to refusing bad input (every other non-"ok" status is a rejection
# reason code). Failures it never sees come from Prometheus (``prometheus.py``).
ERROR_STATUSES = {FAILED}
REGRESSION_BINS = 10
_PART = re.compile(r"date=(\d{4}-\d{2}-\d{2})/part-(\d{8}T\d{6})-[^/]+\.parquet")


@dataclass
class Analysis:
    verdict: Verdict
    primary: VersionSummary
    canary: VersionSummary
    files: int
    rows: int
    task: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"verdict": self.verdict.to_dict(), "primary": asdict(self.primary),
                "canary": asdict(self.canary), "files": self.files, "rows": self.rows,
                "task": self.task, "notes": self.notes}


def _is_error(status: Any) -> bool:
    return str(status) in ERROR_STATUSES


# --------------------------------------------------------------------------- reading


def _utc(when: dt.datetime) -> dt.datetime:
    """A naive time is taken as UTC (the logs' clock)."""
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def log_files(log_root: str, model: str, *, since: dt.datetime | None = None,
              storage_cfg: StorageConfig | None = None,
              endpoint_url: str | None = None) -> tuple[Any, list[str]]:
    """The store and the keys of ``model``'s log parts, oldest first. With ``since``,
    parts that cannot hold a row at or after it are skipped unread: days before it
    (the ``date=`` partition), and parts written before it (a part is named for the
    second it was written, after every row in it)."""
    from kubeloop.storage import open_store

    store = open_store(log_root, storage_cfg, endpoint_url=endpoint_url)
    start = _utc(since) if since is not None else None
    keys = []
    for key in store.list(f"{model}/"):
        m = _PART.fullmatch(key[len(model) + 1:])
        if not m:
            continue
        if start is not None:
            if m.group(1) < start.date().isoformat():
                continue
            written = dt.datetime.strptime(m.group(2), "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
            if written + dt.timedelta(seconds=1) <= start:
                continue
        keys.append(key)
    return store, sorted(keys)


def _read_part(store: Any, key: str, since: dt.datetime | None) -> Any:
    """One part's contract columns (and ``proba_*``), rows at or after ``since``, as Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data = store.read_bytes(key)
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any unreadable part is the same problem
        raise UserError(f"prediction log {store.uri_of(key)} is not a readable Parquet file: {exc}") from None
    names = pf.schema_arrow.names
    missing = [c for c in BASE_COLUMNS if c not in names]
    if missing:
        raise UserError(f"prediction log {store.uri_of(key)} lacks the columns {missing}")
    table = pf.read(columns=BASE_COLUMNS + [c for c in names if c.startswith("proba_")])
    if since is not None:
        table = table.filter(pc.greater_equal(table["time"], pa.scalar(_utc(since), table.schema.field("time").type)))
    return table


# Parts fetched at once: the bytes in flight stay a few parts' worth, whatever the window.
READ_THREADS = 4


def read_prediction_logs(log_root: str, model: str, *, since: dt.datetime | None = None,
                         storage_cfg: StorageConfig | None = None,
                         endpoint_url: str | None = None) -> tuple[pd.DataFrame, int]:
    """Every logged row of ``model`` at or after ``since`` (all when None): the
    contract's fixed columns plus ``proba_*``; feature columns are not read. Parts
    are fetched ``READ_THREADS`` at a time and cut to the window as they arrive.
    Returns the frame and the number of files read."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    import pyarrow as pa

    store, keys = log_files(log_root, model, since=since, storage_cfg=storage_cfg, endpoint_url=endpoint_url)
    if not keys:
        return pd.DataFrame(columns=BASE_COLUMNS), 0
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(keys))) as pool:
        tables = list(pool.map(lambda key: _read_part(store, key, since), keys))
    df = pa.concat_tables(tables, promote_options="default").to_pandas()
    return df, len(keys)


def read_labels(uri: str, storage_cfg: StorageConfig | None = None, *,
                endpoint_url: str | None = None) -> pd.DataFrame:
    """Ground-truth labels (``request_id``, ``row``, ``label``, ``labeled_at``) from a
    Parquet or CSV file, or from every such file under a directory or prefix.
    A row labelled twice keeps its latest label."""
    import pandas as pd

    from kubeloop.storage import local_copy, open_store

    def one(path_uri: str) -> pd.DataFrame:
        with local_copy(path_uri, storage_cfg, endpoint_url=endpoint_url) as path:
            name = path.name.lower()
            if name.endswith(".parquet"):
                return pd.read_parquet(path)
            if name.endswith((".csv", ".csv.gz")):
                return pd.read_csv(path, dtype={"request_id": str, "label": str})
            raise UserError(f"labels {path_uri}: expected a .parquet or .csv file")

    if uri.lower().endswith((".parquet", ".csv", ".csv.gz")):
        frames = [one(uri)]
    else:
        store = open_store(uri, storage_cfg, endpoint_url=endpoint_url)
        keys = [k for k in store.list() if k.lower().endswith((".parquet", ".csv", ".csv.gz"))]
        if not keys:
            raise UserError(f"labels {uri}: no .parquet or .csv files there")
        frames = [one(store.uri_of(k)) for k in sorted(keys)]
    labels = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("request_id", "row", "label") if c not in labels.columns]
    if missing:
        raise UserError(f"labels {uri}: missing columns {missing} (need request_id, row, label, labeled_at)")
    labels["request_id"] = labels["request_id"].astype(str)
    labels["row"] = labels["row"].astype("int64")
    if "labeled_at" in labels.columns:
        labels = labels.sort_values("labeled_at", kind="stable")
    return labels.drop_duplicates(["request_id", "row"], keep="last")[["request_id", "row", "label"]]


# --------------------------------------------------------------------------- summaries


def _task(df: pd.DataFrame) -> str | None:
    import pandas as pd

    preds = df["prediction"].dropna()
    if preds.empty:
        return None
    return "regression" if pd.api.types.is_numeric_dtype(preds) else "classification"


def regression_edges(predictions: Any, bins: int = REGRESSION_BINS) -> list[float]:
    """Inner bin edges: quantiles of the primary's predictions, duplicates dropped."""
    import numpy as np

    values = np.asarray(predictions, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    return sorted(set(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]).tolist()))


def _per_request(frame: pd.DataFrame, value: Any) -> tuple[Any, Any]:
    """(numerator, rows) per request: the request is the unit the bootstrap draws."""
    import numpy as np

    grouped = frame.assign(_v=np.asarray(value, dtype=float)).groupby("request_id", sort=False)["_v"]
    return grouped.sum().to_numpy(), grouped.size().to_numpy(dtype=float)


def summarise(df: pd.DataFrame, version: str, *, task: str | None, edges: list[float] | None = None,
              labels: pd.DataFrame | None = None) -> VersionSummary:
    """One version's VersionSummary from its logged rows; standard errors from
    resampling requests (``sequential.py``)."""
    import numpy as np

    from kubeloop.deploy.sequential import quantile_se, ratio_se

    rows = df[df["version"] == version]
    status = rows["status"].astype(str)
    errors = status.map(_is_error).to_numpy(dtype=bool)
    rejections = (status != OK).to_numpy() & ~errors
    ok = rows[(status == OK).to_numpy()]
    error_num, per_rows = _per_request(rows, errors)
    reject_num, _ = _per_request(rows, rejections)
    # Latency is per request: every row of a request shares it.
    per_request = rows.groupby("request_id")["latency_ms"].max().dropna().to_numpy(dtype=float)
    quantiles: dict[str, tuple[float | None, float | None]] = {}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        if per_request.size:
            quantiles[name] = (float(np.quantile(per_request, q)),
                               quantile_se(per_request, q))
        else:
            quantiles[name] = (None, None)

    preds = ok["prediction"].dropna()
    if task == "regression":
        idx = np.digitize(preds.to_numpy(dtype=float), edges or [])
        counts = {f"bin{i:02d}": int(n) for i, n in zip(*np.unique(idx, return_counts=True), strict=True)}
    else:
        counts = {str(k): int(v) for k, v in preds.astype(str).value_counts().items()}

    labeled_rows, metric, metric_name, metric_se = 0, None, None, None
    if labels is not None and not ok.empty:
        proba = [c for c in ok.columns if str(c).startswith("proba_")]
        joined = ok[["request_id", "row", "prediction", *proba]].assign(
            request_id=ok["request_id"].astype(str)).merge(labels, on=["request_id", "row"], how="inner")
        joined = joined[joined["prediction"].notna() & joined["label"].notna()]
        labeled_rows = len(joined)
        if labeled_rows:
            metric_name, losses = row_losses(joined, task, proba)
            metric = float(np.mean(losses))
            metric_se = ratio_se(*_per_request(joined, losses))
    return VersionSummary(
        version=version, rows=len(rows), errors=int(errors.sum()), rejections=int(rejections.sum()),
        latency_p50_ms=quantiles["p50"][0], latency_p95_ms=quantiles["p95"][0],
        latency_p99_ms=quantiles["p99"][0], prediction_counts=counts,
        labeled_rows=labeled_rows, metric=metric, metric_se=metric_se,
        metric_name=metric_name or ("mae" if task == "regression" else "brier_score"),
        requests=int(per_rows.size), error_rate_se=ratio_se(error_num, per_rows),
        rejection_rate_se=ratio_se(reject_num, per_rows), latency_p50_se_ms=quantiles["p50"][1],
        latency_p95_se_ms=quantiles["p95"][1], latency_p99_se_ms=quantiles["p99"][1],
    )


def row_losses(joined: pd.DataFrame, task: str | None, proba: list[str]) -> tuple[str, Any]:
    """The metric's name and its value per labelled row (the metric is their mean).

    Classification is judged by the Brier score of the logged probabilities, as
    ``components.evaluate`` defines it: for two classes the squared error of the
    positive class's probability (half the sum over both classes), for more the
    sum over classes. Accuracy cannot tell a model that always answers the
    majority class from a useful one when one class is most of the traffic.
    Without probabilities in the log, accuracy is what is left.
    """
    import numpy as np
    import pandas as pd

    if task == "regression":
        truth = pd.to_numeric(joined["label"], errors="coerce").to_numpy(dtype=float)
        return "mae", np.abs(truth - joined["prediction"].to_numpy(dtype=float))
    labels = joined["label"].astype(str).to_numpy()
    if proba:
        probs = joined[proba].to_numpy(dtype=float)
        classes = np.array([str(c)[len("proba_"):] for c in proba])
        onehot = (labels[:, None] == classes[None, :]).astype(float)
        squared = np.nansum((probs - onehot) ** 2, axis=1)
        # Binary: (p_pos - y)^2 equals (p_neg - (1 - y))^2, so either class gives it.
        return "brier_score", squared / 2 if len(proba) == 2 else squared
    return "accuracy", (labels == joined["prediction"].astype(str).to_numpy()).astype(float)


def with_queue_proxy(summary: VersionSummary, traffic: RevisionTraffic) -> VersionSummary:
    """``summary`` with errors and latency as Knative's queue-proxy counted them: every
    request routed to the revision, the ones the predictor never saw included."""
    from dataclasses import replace

    from kubeloop.deploy.prometheus import quantile_with_se

    q = {name: quantile_with_se(traffic.buckets, share) for name, share in (("p50", 0.5), ("p95", 0.95),
                                                                          ("p99", 0.99))}
    return replace(summary, errors=traffic.failures, requests=traffic.requests, error_rate_se=None,
                   latency_p50_ms=q["p50"][0], latency_p50_se_ms=q["p50"][1],
                   latency_p95_ms=q["p95"][0], latency_p95_se_ms=q["p95"][1],
                   latency_p99_ms=q["p99"][0], latency_p99_se_ms=q["p99"][1], source="prometheus")


def revision_names(isvc: dict[str, Any] | None, primary: str, canary: str) -> dict[str, str] | None:
    """Version -> Knative revision of a Serverless canary, from the InferenceService's
    ``status.components.predictor`` (KServe's ComponentStatusSpec,
    pkg/apis/serving/v1beta1/inference_service_status.go): the ``traffic`` entries
    (the canary's marked ``latestRevision``), else ``latestCreatedRevision`` (the
    canary) beside ``latestRolledoutRevision`` (the last revision at 100 %)."""
    predictor = (((isvc or {}).get("status") or {}).get("components") or {}).get("predictor") or {}
    traffic = [t for t in predictor.get("traffic") or [] if t.get("revisionName")]
    new = [t["revisionName"] for t in traffic if t.get("latestRevision")]
    old = [t["revisionName"] for t in traffic if not t.get("latestRevision")]
    if len(new) == 1 and len(old) == 1:
        return {canary: new[0], primary: old[0]}
    latest, rolled_out = predictor.get("latestCreatedRevision"), predictor.get("latestRolledoutRevision")
    if latest and rolled_out and latest != rolled_out:
        return {canary: latest, primary: rolled_out}
    return None


def analyze_frame(df: pd.DataFrame, primary_version: str, canary_version: str, cfg: CanaryConfig,
                  *, labels: pd.DataFrame | None = None, files: int = 0,
                  queue_proxy: dict[str, RevisionTraffic] | None = None) -> Analysis:
    """The verdict for logs already in a DataFrame; ``queue_proxy`` (version ->
    its revision's traffic from Prometheus) replaces errors and latency."""
    if primary_version == canary_version:
        raise UserError(f"primary and canary are the same version {primary_version}: nothing to compare")
    notes = []
    served = df[df["role"].astype(str) != "shadow"] if len(df) else df
    if len(df) and len(served) < len(df):
        notes.append(f"{len(df) - len(served)} shadow rows left out")
    both = served[served["version"].isin([primary_version, canary_version])] if len(served) else served
    others = sorted(set(served["version"].astype(str)) - {primary_version, canary_version}) if len(served) else []
    if others:
        notes.append(f"rows of other versions left out: {', '.join(others)}")
    task = _task(both) if len(both) else None
    edges = None
    if task == "regression":
        primary_preds = both[(both["version"] == primary_version) & (both["status"] == OK)]["prediction"]
        edges = regression_edges(primary_preds.dropna())
    p = summarise(both, primary_version, task=task, edges=edges, labels=labels)
    c = summarise(both, canary_version, task=task, edges=edges, labels=labels)
    if queue_proxy and primary_version in queue_proxy and canary_version in queue_proxy:
        p = with_queue_proxy(p, queue_proxy[primary_version])
        c = with_queue_proxy(c, queue_proxy[canary_version])
        notes.append(f"errors and latency from Knative's queue-proxy metrics in Prometheus "
                     f"({queue_proxy[canary_version].metric}: {p.requests} and {c.requests} requests); "
                     "rejections and the model metric from the logs")
    else:
        notes.append("errors and latency judged from the prediction logs alone: failures the predictor "
                     "never saw (queue-proxy 502/503, timeouts) are not counted")
    return Analysis(decide(p, c, cfg), p, c, files, len(both), task, notes)


def analyze(log_root: str, model: str, primary_version: str, canary_version: str, cfg: CanaryConfig, *,
            labels_uri: str | None = None, since: dt.datetime | None = None,
            storage_cfg: StorageConfig | None = None, endpoint_url: str | None = None,
            revisions: dict[str, str] | None = None, now: dt.datetime | None = None) -> Analysis:
    """Read ``model``'s prediction logs (and labels) and judge the canary
    (``endpoint_url``: the S3 endpoint this process reads through, over the
    environment's and ``storage_cfg``'s). With
    ``cfg.prometheus_url`` and the versions' Knative ``revisions``, errors and latency
    come from the queue-proxy's metrics over ``since`` .. ``now``."""
    df, files = read_prediction_logs(log_root, model, since=since, storage_cfg=storage_cfg,
                                     endpoint_url=endpoint_url)
    labels = read_labels(labels_uri, storage_cfg, endpoint_url=endpoint_url) if labels_uri else None
    pre: list[str] = []
    queue_proxy = None
    if cfg.prometheus_url:
        queue_proxy, pre = _queue_proxy(cfg, primary_version, canary_version, since=since, now=now,
                                        revisions=revisions)
    result = analyze_frame(df, primary_version, canary_version, cfg, labels=labels, files=files,
                           queue_proxy=queue_proxy)
    result.notes[:0] = pre
    if files == 0:
        result.notes.append(f"no prediction logs under {log_root}/{model}/")
    return result


# Without a recorded canary start, Prometheus is asked about the last hour.
DEFAULT_WINDOW = dt.timedelta(hours=1)


def _queue_proxy(cfg: CanaryConfig, primary: str, canary: str, *, since: dt.datetime | None,
                 now: dt.datetime | None, revisions: dict[str, str] | None,
                 ) -> tuple[dict[str, RevisionTraffic] | None, list[str]]:
    from kubeloop.deploy.prometheus import revision_traffic

    if not revisions or primary not in revisions or canary not in revisions:
        return None, [f"canary.prometheus_url is set, but the Knative revisions of {primary} and {canary} are "
                      "unknown (no InferenceService status read)"]
    end = _utc(now or dt.datetime.now(dt.timezone.utc))
    start = _utc(since) if since is not None else end - DEFAULT_WINDOW
    notes = [] if since is not None else [f"no --since: Prometheus asked about the last {DEFAULT_WINDOW}"]
    traffic = revision_traffic(cfg.prometheus_url, cfg.namespace, [revisions[primary], revisions[canary]],
                               window_seconds=(end - start).total_seconds(), at=end.timestamp())
    missing = [f"{v} ({revisions[v]})" for v in (primary, canary) if revisions[v] not in traffic]
    if missing:
        notes.append(f"Prometheus has no queue-proxy requests for {', '.join(missing)} in the window")
        return None, notes
    return {primary: traffic[revisions[primary]], canary: traffic[revisions[canary]]}, notes
