"""What Knative's queue-proxy saw of each revision, read from Prometheus.

The predictor logs every request it handles, but some never reach it: the
queue-proxy in front of it answers 502/503 when the container is down or
overloaded and 504 on a timeout. The queue-proxy counts every request it routes,
by response code class, and times it (knative/serving
``pkg/queue/metrics/request_metric.go``: measures ``request_count`` and
``request_latencies`` in milliseconds, exported with the ``revision_`` prefix
and the labels ``namespace_name``, ``revision_name``, ``response_code_class``;
the same as ``app_request_*`` for what reached the user container; listed in
knative/docs ``docs/serving/metrics.md``). As Flagger and Argo Rollouts do, the
analysis asks Prometheus's HTTP API (``GET /api/v1/query``) for them over the
canary's window:

- requests per revision and response class: ``revision_request_count``;
- the latency histogram per revision: ``revision_request_latencies_bucket``,
  from which percentiles and their bootstrap standard errors are taken
  (requests drawn from the histogram's buckets, as ``histogram_quantile``
  interpolates inside a bucket).

Those are the OpenCensus-era names (Knative up to 1.18). From Knative 1.19 the
queue-proxy is instrumented with OpenTelemetry (knative/serving
``pkg/queue/sharedmain/handlers.go``: ``otelhttp.NewHandler`` around every
request it routes, probes filtered out; ``pkg/queue/sharedmain/otel.go``: the
revision and namespace are *resource* attributes, ``kn.revision.name`` and
``k8s.namespace.name``), exported by the OpenTelemetry Prometheus exporter with
underscore escaping and unit suffixes (knative.dev/pkg
``observability/metrics/prometheus_enabled.go``). So every request the
queue-proxy answered is in the ``http_server_request_duration_seconds``
histogram (labels ``http_response_status_code``, ``le`` in seconds), and the
revision is a label of ``target_info`` only, joined on the scrape target
(``job``, ``instance``), the way OpenTelemetry resource attributes are queried
in Prometheus. The old names are asked first; when Prometheus has none of them
for these revisions, the new ones are.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeloop.errors import UserError

REQUEST_COUNT = "revision_request_count"
LATENCY_BUCKET = "revision_request_latencies_bucket"
# OpenTelemetry-era queue-proxy (Knative >= 1.19), see the module doc.
OTEL_DURATION = "http_server_request_duration_seconds"
OTEL_REVISION, OTEL_NAMESPACE, OTEL_STATUS = "kn_revision_name", "k8s_namespace_name", "http_response_status_code"
TIMEOUT_SECONDS = 10.0


class PrometheusError(UserError):
    """Prometheus could not be asked, or answered an error; the message says which."""


@dataclass(frozen=True)
class RevisionTraffic:
    """One revision's requests over the window, as the queue-proxy counted them."""

    revision: str
    requests: int
    by_class: dict[str, int]
    # (upper bound in ms, cumulative count) per bucket, +Inf last.
    buckets: list[tuple[float, float]]
    # The metric the counts came from (REQUEST_COUNT or OTEL_DURATION).
    metric: str = REQUEST_COUNT

    @property
    def failures(self) -> int:
        """5xx answers: the predictor's own 500s and the queue-proxy's 502/503/504."""
        return self.by_class.get("5xx", 0)


def query(url: str, promql: str, *, at: float | None = None, timeout: float = TIMEOUT_SECONDS) -> list[dict[str, Any]]:
    """The result vector of an instant query (``/api/v1/query``)."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        if not raw:
            raise PrometheusError(f"Prometheus at {url} answered {exc.code} to {promql!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusError(f"Prometheus at {url} cannot be reached: {exc}") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise PrometheusError(f"Prometheus at {url} answered something that is not JSON to {promql!r}") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        kind = doc.get("errorType", "error") if isinstance(doc, dict) else "error"
        message = doc.get("error", "no message") if isinstance(doc, dict) else "no message"
        raise PrometheusError(f"Prometheus at {url} refused {promql!r}: {kind}: {message}")
    data = doc.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"Prometheus at {url}: expected a vector for {promql!r}, got {data.get('resultType')}")
    return list(data.get("result") or [])


def _selector(namespace: str, revisions: list[str]) -> str:
    names = "|".join(sorted(set(revisions)))
    return f'namespace_name="{namespace}",revision_name=~"{names}"'


def _value(sample: dict[str, Any]) -> float:
    value = float(sample["value"][1])
    return value if math.isfinite(value) else 0.0


def revision_traffic(url: str, namespace: str, revisions: list[str], *, window_seconds: float,
                     at: float | None = None) -> dict[str, RevisionTraffic]:
    """Requests by class and the latency histogram of each revision over the last
    ``window_seconds`` (before ``at``, default now), by the OpenCensus-era names,
    else the OpenTelemetry-era ones (module doc). Revisions Prometheus has no
    series for are left out."""
    window = f"[{max(int(math.ceil(window_seconds)), 1)}s]"
    sel = _selector(namespace, revisions)
    counts = query(url, f"sum by (revision_name, response_code_class) "
                        f"(increase({REQUEST_COUNT}{{{sel}}}{window}))", at=at)
    if not any(s.get("metric", {}).get("revision_name") for s in counts):
        return _otel_traffic(url, namespace, revisions, window, at)
    buckets = query(url, f"sum by (revision_name, le) (increase({LATENCY_BUCKET}{{{sel}}}{window}))", at=at)
    return _traffic(counts, buckets, "revision_name", REQUEST_COUNT,
                    code_class=lambda labels: labels.get("response_code_class", "unknown"), le_ms=1.0)


def _otel_traffic(url: str, namespace: str, revisions: list[str], window: str,
                  at: float | None) -> dict[str, RevisionTraffic]:
    names = "|".join(sorted(set(revisions)))
    # The revision is a resource attribute: a label of target_info, joined per scrape target.
    join = (f"* on (job, instance) group_left ({OTEL_REVISION}) "
            f'target_info{{{OTEL_NAMESPACE}="{namespace}",{OTEL_REVISION}=~"{names}"}}')
    counts = query(url, f"sum by ({OTEL_REVISION}, {OTEL_STATUS}) "
                        f"(increase({OTEL_DURATION}_count{window}) {join})", at=at)
    buckets = query(url, f"sum by ({OTEL_REVISION}, le) (increase({OTEL_DURATION}_bucket{window}) {join})", at=at)

    def code_class(labels: dict[str, str]) -> str:
        code = labels.get(OTEL_STATUS, "")
        return f"{code[0]}xx" if len(code) == 3 and code.isdigit() else "unknown"

    return _traffic(counts, buckets, OTEL_REVISION, OTEL_DURATION, code_class=code_class, le_ms=1000.0)


def _traffic(counts: list[dict[str, Any]], buckets: list[dict[str, Any]], revision_label: str, metric: str, *,
             code_class: Any, le_ms: float) -> dict[str, RevisionTraffic]:
    """RevisionTraffic per revision from the two query results; bucket bounds
    times ``le_ms`` are milliseconds."""
    by_rev: dict[str, dict[str, int]] = {}
    for s in counts:
        labels = s.get("metric", {})
        rev, cls = labels.get(revision_label), code_class(labels)
        if rev:
            by_rev.setdefault(rev, {})
            by_rev[rev][cls] = by_rev[rev].get(cls, 0) + int(round(_value(s)))
    hist: dict[str, list[tuple[float, float]]] = {}
    for s in buckets:
        labels = s.get("metric", {})
        rev, le = labels.get(revision_label), labels.get("le")
        if rev and le is not None:
            hist.setdefault(rev, []).append((float(le) * le_ms, _value(s)))
    out = {}
    for rev, classes in by_rev.items():
        out[rev] = RevisionTraffic(rev, sum(classes.values()), classes, sorted(hist.get(rev, [])), metric)
    return out


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus's ``histogram_quantile``: linear inside the bucket holding rank
    ``q * total``, the lowest bucket starting at 0, and the highest finite bound
    for ranks in the +Inf bucket."""
    if not buckets:
        return None
    value = _quantiles(buckets, q, None)[0]
    return float(value) if np.isfinite(value) else None


def _quantiles(buckets: list[tuple[float, float]], q: float, counts: np.ndarray | None) -> np.ndarray:
    """The quantile for each row of per-bucket ``counts`` (the histogram's own when None)."""
    bounds = np.array([b for b, _ in buckets], dtype=float)
    cumulative = np.maximum.accumulate(np.array([c for _, c in buckets], dtype=float))
    per_bucket = np.diff(np.concatenate([[0.0], cumulative]))
    if counts is None:
        counts = per_bucket[None, :]
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    rank = q * total
    idx = np.minimum((cum < rank[:, None]).sum(axis=1), len(bounds) - 1)
    finite = bounds[np.isfinite(bounds)]
    top = finite[-1] if finite.size else 0.0
    lower = np.where(idx > 0, bounds[np.maximum(idx - 1, 0)], 0.0)
    upper = bounds[idx]
    below = np.where(idx > 0, cum[np.arange(len(idx)), np.maximum(idx - 1, 0)], 0.0)
    inside = counts[np.arange(len(idx)), idx]
    frac = np.divide(rank - below, inside, out=np.zeros_like(rank), where=inside > 0)
    value = np.where(np.isfinite(upper), lower + (upper - lower) * frac, top)
    return np.where(total > 0, value, np.nan)


def quantile_with_se(buckets: list[tuple[float, float]], q: float, *, replicates: int = 200,
                     seed: int = 20261203) -> tuple[float | None, float | None]:
    """The ``q`` quantile of the histogram and its bootstrap standard error: each
    replicate draws as many requests as the histogram holds from its buckets."""
    point = histogram_quantile(buckets, q)
    if point is None or not buckets:
        return None, None
    cumulative = np.maximum.accumulate(np.array([c for _, c in buckets], dtype=float))
    per_bucket = np.diff(np.concatenate([[0.0], cumulative]))
    total = int(round(per_bucket.sum()))
    if total < 2:
        return point, None
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(total, per_bucket / per_bucket.sum(), size=replicates).astype(float)
    values = _quantiles(buckets, q, draws)
    values = values[np.isfinite(values)]
    return point, (float(values.std(ddof=1)) if values.size > 1 else None)
