"""Errors and latency from Knative's queue-proxy metrics, asked of a real HTTP server
on loopback that answers as Prometheus's HTTP API does.

The answers follow the shapes in Prometheus's documentation
(https://prometheus.io/docs/prometheus/latest/querying/api/): an instant query
``GET /api/v1/query`` answers ``{"status": "success", "data": {"resultType":
"vector", "result": [{"metric": {...}, "value": [<unix time>, "<value>"]}]}}``, and
an error ``{"status": "error", "errorType": "bad_data", "error": "..."}`` with a
400. Each series is labelled as the queue-proxy labels it (``revision_name``,
``response_code_class``, ``le`` for histogram buckets).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from deploy_support import log_rows, write_log_part

from kubeloop.config import CanaryConfig
from kubeloop.deploy.analysis import analyze, revision_names
from kubeloop.deploy.prometheus import PrometheusError, histogram_quantile, quantile_with_se, query

PRIMARY_REV, CANARY_REV = "churn-predictor-00001", "churn-predictor-00002"
SINCE = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.timezone.utc)
NOW = SINCE + dt.timedelta(minutes=30)
BOUNDS = ["5", "10", "20", "40", "60", "80", "100", "150", "200", "+Inf"]
CFG = dict(min_rows=200, min_labeled_rows=100, namespace="kubeloop")


def _histogram(per_bucket: list[int]) -> list[int]:
    out, total = [], 0
    for n in per_bucket:
        total += n
        out.append(total)
    return out


class FakePrometheus:
    """Answers instant queries from tables of series; records every query.

    ``otel``: the queue-proxy of Knative >= 1.19 (OpenTelemetry): no
    ``revision_request_*`` series; ``http_server_request_duration_seconds``
    with ``http_response_status_code`` and buckets in seconds, the revision
    joined from ``target_info`` (``kn_revision_name``). Counts are then keyed by
    status code ("200", "503") instead of class."""

    def __init__(self, counts: dict[tuple[str, str], int], buckets: dict[str, list[int]], *, otel: bool = False):
        self.counts, self.buckets, self.queries, self.otel = counts, buckets, [], otel
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                params = urllib.parse.parse_qs(url.query)
                if url.path != "/api/v1/query" or "query" not in params:
                    return self._send(404, {"status": "error", "errorType": "not_found", "error": "no such path"})
                q = params["query"][0]
                outer.queries.append((q, params.get("time", [None])[0]))
                status, body = outer.answer(q)
                self._send(status, body)

            def _send(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, q: str):
        if "(((" in q:
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error: unexpected '('"}
        at = 1764489600.0
        if self.otel:
            joined = "* on (job, instance) group_left (kn_revision_name) target_info{" in q
            if joined and "http_server_request_duration_seconds_count" in q:
                result = [{"metric": {"kn_revision_name": rev, "http_response_status_code": code},
                           "value": [at, f"{n}.0"]} for (rev, code), n in self.counts.items()]
            elif joined and "http_server_request_duration_seconds_bucket" in q:
                result = [{"metric": {"kn_revision_name": rev, "le": le if le == "+Inf" else str(float(le) / 1000)},
                           "value": [at, str(float(c))]}
                          for rev, cum in self.buckets.items() for le, c in zip(BOUNDS, cum, strict=True)]
            else:
                result = []
        elif "revision_request_count" in q:
            result = [{"metric": {"revision_name": rev, "response_code_class": cls}, "value": [at, f"{n}.0"]}
                      for (rev, cls), n in self.counts.items()]
        elif "revision_request_latencies_bucket" in q:
            result = [{"metric": {"revision_name": rev, "le": le}, "value": [at, str(float(c))]}
                      for rev, cum in self.buckets.items() for le, c in zip(BOUNDS, cum, strict=True)]
        else:
            result = []
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def logs(tmp_path):
    write_log_part(tmp_path, log_rows("v1", 600, seed=1, start=SINCE), part=0)
    write_log_part(tmp_path, log_rows("v2", 200, seed=2, start=SINCE), part=1)
    return tmp_path


FAST = _histogram([100, 400, 300, 150, 40, 10, 0, 0, 0, 0])


@pytest.fixture
def prom(request):
    servers = []

    def make(counts, buckets, **kw):
        p = FakePrometheus(counts, buckets, **kw)
        servers.append(p)
        return p

    yield make
    for p in servers:
        p.close()


REVISIONS = {"v1": PRIMARY_REV, "v2": CANARY_REV}


def test_queue_proxy_failures_the_logs_never_saw_roll_the_canary_back(logs, prom):
    # The logs are clean: the canary's 503s came from the queue-proxy, not the predictor.
    p = prom({(PRIMARY_REV, "2xx"): 3000, (CANARY_REV, "2xx"): 700, (CANARY_REV, "5xx"): 300},
             {PRIMARY_REV: FAST, CANARY_REV: _histogram([60, 300, 200, 100, 30, 10, 0, 0, 0, 0])})
    cfg = CanaryConfig(**CFG, prometheus_url=p.url)
    logs_only = analyze(str(logs), "churn", "v1", "v2", CanaryConfig(**CFG), since=SINCE)
    assert logs_only.verdict.decision == "promote"
    assert any("prediction logs alone" in n for n in logs_only.notes)

    a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, now=NOW, revisions=REVISIONS)
    assert a.verdict.decision == "rollback", a.verdict.reasons
    assert a.canary.source == "prometheus" and a.canary.errors == 300 and a.canary.requests == 1000
    assert a.canary.error_rate == pytest.approx(0.3)
    assert any(r.startswith("error rate 30.00%") for r in a.verdict.reasons)
    assert any("queue-proxy metrics" in n for n in a.notes)
    # The window is the canary's own: 30 minutes, at the analysis time; both revisions selected.
    assert all("[1800s]" in q and 'revision_name=~"churn-predictor-00001|churn-predictor-00002"' in q
               and 'namespace_name="kubeloop"' in q for q, _ in p.queries)
    assert {float(t) for _, t in p.queries} == {NOW.timestamp()}


def test_the_opentelemetry_names_of_knative_1_19_are_read_too(logs, prom):
    """No revision_request_* series (Knative >= 1.19): the same verdicts from
    http_server_request_duration_seconds, the revision joined from target_info."""
    slow = _histogram([0, 0, 50, 150, 300, 300, 150, 40, 10, 0])
    p = prom({(PRIMARY_REV, "200"): 3000, (CANARY_REV, "200"): 600, (CANARY_REV, "503"): 250,
              (CANARY_REV, "504"): 50, (CANARY_REV, "400"): 100},
             {PRIMARY_REV: FAST, CANARY_REV: FAST}, otel=True)
    cfg = CanaryConfig(**CFG, prometheus_url=p.url)
    a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, now=NOW, revisions=REVISIONS)
    assert a.verdict.decision == "rollback", a.verdict.reasons
    assert a.canary.source == "prometheus" and a.canary.errors == 300 and a.canary.requests == 1000
    assert any("http_server_request_duration_seconds" in n for n in a.notes)
    otel = [q for q, _ in p.queries if "http_server_request_duration_seconds" in q]
    assert otel and all('k8s_namespace_name="kubeloop"' in q
                        and 'kn_revision_name=~"churn-predictor-00001|churn-predictor-00002"' in q
                        and "[1800s]" in q for q in otel)
    # Latency from buckets in seconds: the slow canary rolls back, a like one promotes.
    counts = {(PRIMARY_REV, "200"): 1000, (CANARY_REV, "200"): 1000}
    for histogram, decision in ((slow, "rollback"), (FAST, "promote")):
        cfg = CanaryConfig(**CFG, prometheus_url=prom(counts, {PRIMARY_REV: FAST, CANARY_REV: histogram},
                                                      otel=True).url)
        a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, now=NOW, revisions=REVISIONS)
        assert a.verdict.decision == decision, a.verdict.reasons
        assert a.primary.latency_p50_ms == pytest.approx(
            histogram_quantile([(float(b), c) for b, c in zip(BOUNDS, FAST, strict=True)], 0.5))


def test_a_slow_canary_by_its_histogram_rolls_back_and_a_like_one_promotes(logs, prom):
    slow = _histogram([0, 0, 50, 150, 300, 300, 150, 40, 10, 0])
    counts = {(PRIMARY_REV, "2xx"): 1000, (CANARY_REV, "2xx"): 1000}
    cfg = CanaryConfig(**CFG, prometheus_url=prom(counts, {PRIMARY_REV: FAST, CANARY_REV: slow}).url)
    a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, now=NOW, revisions=REVISIONS)
    assert a.verdict.decision == "rollback" and any("latency p95" in r for r in a.verdict.reasons)
    assert a.canary.latency_p95_se_ms is not None and a.canary.latency_p95_se_ms > 0

    cfg = CanaryConfig(**CFG, prometheus_url=prom(counts, {PRIMARY_REV: FAST, CANARY_REV: FAST}).url)
    a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, now=NOW, revisions=REVISIONS)
    assert a.verdict.decision == "promote", a.verdict.reasons
    assert not any("logs alone" in r for r in a.verdict.reasons)


def test_without_revisions_or_series_it_says_it_judged_from_the_logs(logs, prom):
    p = prom({(PRIMARY_REV, "2xx"): 100}, {PRIMARY_REV: FAST})
    cfg = CanaryConfig(**CFG, prometheus_url=p.url)
    a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, revisions=None)
    assert a.canary.source == "logs" and any("revisions of v1 and v2 are unknown" in n for n in a.notes)
    a = analyze(str(logs), "churn", "v1", "v2", cfg, since=SINCE, now=NOW, revisions=REVISIONS)
    assert a.canary.source == "logs"
    assert any("no queue-proxy requests for v2" in n for n in a.notes)
    assert any("logs alone" in n for n in a.notes)


def test_prometheus_errors_are_named(prom):
    p = prom({}, {})
    with pytest.raises(PrometheusError, match="bad_data: parse error"):
        query(p.url, "sum(((")
    with pytest.raises(PrometheusError, match="cannot be reached"):
        query("http://127.0.0.1:9", "up")


def test_histogram_quantile_interpolates_as_prometheus_does():
    buckets = [(10.0, 50.0), (20.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(10.0)
    assert histogram_quantile(buckets, 0.75) == pytest.approx(15.0)
    assert histogram_quantile(buckets, 0.25) == pytest.approx(5.0)
    # Ranks in the +Inf bucket: the highest finite bound.
    assert histogram_quantile([(10.0, 10.0), (float("inf"), 20.0)], 0.9) == pytest.approx(10.0)
    assert histogram_quantile([], 0.5) is None
    point, se = quantile_with_se(buckets, 0.5)
    assert point == pytest.approx(10.0) and se is not None and 0 < se < 10


def test_revision_names_from_kserve_status():
    status = {"status": {"components": {"predictor": {
        "latestCreatedRevision": CANARY_REV, "latestRolledoutRevision": PRIMARY_REV,
        "previousRolledoutRevision": "churn-predictor-00000",
        "traffic": [{"revisionName": CANARY_REV, "percent": 10, "latestRevision": True, "tag": "latest"},
                    {"revisionName": PRIMARY_REV, "percent": 90, "latestRevision": False, "tag": "prev"}]}}}}
    assert revision_names(status, "v1", "v2") == REVISIONS
    del status["status"]["components"]["predictor"]["traffic"]
    assert revision_names(status, "v1", "v2") == REVISIONS
    # Promoted: one revision at 100 %, no canary to tell apart.
    status["status"]["components"]["predictor"]["latestRolledoutRevision"] = CANARY_REV
    assert revision_names(status, "v1", "v2") is None
    assert revision_names({"status": {}}, "v1", "v2") is None
    assert revision_names(None, "v1", "v2") is None
