"""The canary verdict, as a table of cases."""

from __future__ import annotations

import math

import pytest

from kubeloop.config import CanaryConfig
from kubeloop.deploy.verdict import (
    HOLD,
    PROMOTE,
    ROLLBACK,
    VersionSummary,
    decide,
    jensen_shannon,
    psi,
)

CFG = CanaryConfig(min_rows=200, min_labeled_rows=100)
CLASSES = {"no": 800, "yes": 200}


def summary(version: str, rows: int = 1000, **kw) -> VersionSummary:
    base = dict(errors=0, rejections=0, latency_p50_ms=8.0, latency_p95_ms=15.0, latency_p99_ms=20.0,
                prediction_counts=dict(CLASSES), labeled_rows=0, metric=None, metric_name="accuracy")
    base.update(kw)
    return VersionSummary(version, rows, **base)


P = summary("v1")
LABELED = dict(labeled_rows=300, metric=0.85)

CASES = [
    # name, primary, canary, config overrides, decision, phrase in the reasons
    ("identical traffic promotes (a tie is no worse)", P, summary("v2"), {}, PROMOTE, "within every bound"),
    ("too few canary rows holds", P, summary("v2", rows=120), {}, HOLD, "canary v2 has 120 scored rows"),
    ("too few primary rows holds", summary("v1", rows=50), summary("v2"), {}, HOLD, "primary v1 has 50"),
    ("errors beyond what any traffic could dilute roll back early", P, summary("v2", rows=30, errors=10), {},
     ROLLBACK, "even at 200 rows"),
    ("a few errors among few rows still holds", P, summary("v2", rows=30, errors=1), {}, HOLD, "too few samples"),
    ("canary that errors rolls back", P, summary("v2", errors=50), {}, ROLLBACK, "error rate 5.00%"),
    ("error rate exactly at the bound passes", P, summary("v2", errors=10), {}, PROMOTE, "within every bound"),
    ("error rate just over the bound fails", P, summary("v2", errors=11), {}, ROLLBACK, "error rate"),
    ("rejections roll back", P, summary("v2", rejections=100), {}, ROLLBACK, "rejection rate 10.00%"),
    ("slower but within bounds promotes and says so", P,
     summary("v2", latency_p50_ms=10.0, latency_p95_ms=20.0, latency_p99_ms=30.0), {}, PROMOTE,
     "slower but within bounds"),
    ("p95 far slower rolls back", P, summary("v2", latency_p95_ms=40.0), {}, ROLLBACK, "latency p95 40.0 ms"),
    ("tiny latencies: slack absorbs jitter", summary("v1", latency_p50_ms=0.3, latency_p95_ms=0.5, latency_p99_ms=0.6),
     summary("v2", latency_p50_ms=1.2, latency_p95_ms=2.0, latency_p99_ms=3.0), {}, PROMOTE, "slower but within"),
    ("diverging predictions without labels hold", P, summary("v2", prediction_counts={"no": 300, "yes": 700}), {},
     HOLD, "no labels yet"),
    ("diverging predictions vindicated by labels promote", summary("v1", labeled_rows=300, metric=0.80),
     summary("v2", prediction_counts={"no": 300, "yes": 700}, labeled_rows=300, metric=0.86), {}, PROMOTE,
     "labelled rows show the canary no worse"),
    ("diverging and worse on labels rolls back", summary("v1", **LABELED),
     summary("v2", prediction_counts={"no": 300, "yes": 700}, labeled_rows=300, metric=0.70), {}, ROLLBACK,
     "accuracy on labelled rows 0.7000"),
    # The metric with its noise: the two versions score different rows.
    ("worse by more than the bound but within noise holds", summary("v1", **LABELED, metric_se=0.02),
     summary("v2", **{**LABELED, "metric": 0.82}, metric_se=0.02), {}, HOLD, "interval still spans"),
    ("clearly worse beyond the noise rolls back", summary("v1", **LABELED, metric_se=0.005),
     summary("v2", **{**LABELED, "metric": 0.78}, metric_se=0.005), {}, ROLLBACK, "95% interval"),
    ("as good within noise, interval inside the bound, promotes", summary("v1", **LABELED, metric_se=0.004),
     summary("v2", **LABELED, metric_se=0.004), {}, PROMOTE, "labelled rows 0.8500"),
    ("Brier score: lower is better", summary("v1", labeled_rows=300, metric=0.12, metric_name="brier_score",
                                             metric_se=0.005),
     summary("v2", labeled_rows=300, metric=0.16, metric_name="brier_score", metric_se=0.005), {}, ROLLBACK,
     "lower is better"),
    ("labels not yet arrived: promote on operations, say so", P, summary("v2", labeled_rows=20, metric=0.5), {},
     PROMOTE, "labels not yet arrived"),
    ("labels required but not arrived holds", P, summary("v2"), {"require_labels": True}, HOLD,
     "require_labels"),
    ("labels required and arrived promotes", summary("v1", **LABELED), summary("v2", **LABELED),
     {"require_labels": True}, PROMOTE, "accuracy on labelled rows 0.8500"),
    ("metric tie promotes", summary("v1", **LABELED), summary("v2", **LABELED), {}, PROMOTE, "within every bound"),
    ("metric worse by exactly the tolerance passes", summary("v1", labeled_rows=300, metric=0.85),
     summary("v2", labeled_rows=300, metric=0.83), {}, PROMOTE, "within every bound"),
    ("metric worse beyond the tolerance rolls back", summary("v1", labeled_rows=300, metric=0.85),
     summary("v2", labeled_rows=300, metric=0.82), {}, ROLLBACK, "accuracy"),
    ("regression: MAE lower is better", summary("v1", labeled_rows=300, metric=3.0, metric_name="mae"),
     summary("v2", labeled_rows=300, metric=2.5, metric_name="mae"), {}, PROMOTE, "lower is better"),
    ("regression: MAE much higher rolls back", summary("v1", labeled_rows=300, metric=3.0, metric_name="mae"),
     summary("v2", labeled_rows=300, metric=3.5, metric_name="mae"), {}, ROLLBACK, "mae on labelled rows"),
    ("several failures are all reported", P, summary("v2", errors=80, latency_p99_ms=90.0), {}, ROLLBACK,
     "latency p99"),
    ("no latency recorded: not compared", summary("v1", latency_p50_ms=None, latency_p95_ms=None, latency_p99_ms=None),
     summary("v2", latency_p50_ms=None, latency_p95_ms=None, latency_p99_ms=None), {}, PROMOTE, "within every bound"),
]


@pytest.mark.parametrize("name,primary,canary,overrides,decision,phrase", CASES, ids=[c[0] for c in CASES])
def test_verdict_table(name, primary, canary, overrides, decision, phrase):
    cfg = CFG.model_copy(update=overrides)
    v = decide(primary, canary, cfg)
    assert v.decision == decision, v.reason
    assert phrase in v.reason, v.reason
    assert v.primary_version == primary.version and v.canary_version == canary.version
    assert v.to_dict()["reason"] == v.reason


def test_every_failed_bound_is_a_reason():
    v = decide(P, summary("v2", errors=80, rejections=90, latency_p99_ms=90.0), CFG)
    assert v.decision == ROLLBACK
    assert len(v.reasons) == 3
    assert {c.name for c in v.checks if not c.passed} == {"error rate", "rejection rate", "latency_p99"}


def test_psi_and_js():
    assert psi({"a": 50, "b": 50}, {"a": 50, "b": 50}) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon({"a": 5}, {"b": 5}) == pytest.approx(1.0)
    assert jensen_shannon({"a": 5, "b": 5}, {"a": 1, "b": 1}) == pytest.approx(0.0, abs=1e-12)
    # a class the primary never predicted still counts (floored share, finite PSI)
    value = psi({"a": 100}, {"a": 50, "b": 50})
    assert value is not None and math.isfinite(value) and value > 1
    assert psi({}, {"a": 1}) is None and jensen_shannon({"a": 1}, {}) is None
    # symmetric in the textbook form
    assert psi({"a": 80, "b": 20}, {"a": 60, "b": 40}) == pytest.approx(psi({"a": 60, "b": 40}, {"a": 80, "b": 20}))
