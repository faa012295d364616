"""The canary verdict, as a table of cases."""

from __future__ import annotations

import functools
import math

import numpy as np
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
    # A rate at the bound cannot be told from one beyond it: hold, never promote.
    ("error rate exactly at the bound holds", P, summary("v2", errors=10), {}, HOLD, "still spans the bound"),
    ("error rate just over the bound holds", P, summary("v2", errors=11), {}, HOLD, "error rate"),
    ("error rate clearly over the bound rolls back", P, summary("v2", errors=40), {}, ROLLBACK, "error rate 4.00%"),
    ("no failure in 200 rows is no proof of a rate under 1%", P, summary("v2", rows=200), {}, HOLD,
     "error rate 0.00%"),
    ("a request-resampled error rate wider than the counts say holds", P,
     summary("v2", errors=2, error_rate_se=0.006), {}, HOLD, "error rate"),
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
    # Latency on its interval: a point beyond the limit is not enough.
    ("p95 over the limit within its noise holds", summary("v1", latency_p95_se_ms=2.0),
     summary("v2", latency_p95_ms=24.0, latency_p95_se_ms=2.0), {}, HOLD, "latency p95 24.0 ms"),
    ("p95 over the limit beyond its noise rolls back", summary("v1", latency_p95_se_ms=0.5),
     summary("v2", latency_p95_ms=30.0, latency_p95_se_ms=0.5), {}, ROLLBACK, "latency p95 30.0 ms"),
    ("a percentile is not judged on too few requests", P, summary("v2", requests=150, latency_p95_ms=40.0,
                                                                 latency_p99_ms=90.0), {}, PROMOTE,
     "not judged below 200 requests"),
    # The metric with its noise: the two versions score different rows.
    ("worse by more than the bound but within noise holds", summary("v1", **LABELED, metric_se=0.02),
     summary("v2", **{**LABELED, "metric": 0.82}, metric_se=0.02), {}, HOLD, "interval still spans"),
    ("clearly worse beyond the noise rolls back", summary("v1", **LABELED, metric_se=0.005),
     summary("v2", **{**LABELED, "metric": 0.78}, metric_se=0.005), {}, ROLLBACK, "interval"),
    ("as good within noise, interval inside the bound, promotes", summary("v1", **LABELED, metric_se=0.004),
     summary("v2", **LABELED, metric_se=0.004), {}, PROMOTE, "labelled rows 0.8500"),
    ("Brier score: lower is better", summary("v1", labeled_rows=300, metric=0.12, metric_name="brier_score",
                                             metric_se=0.005),
     summary("v2", labeled_rows=300, metric=0.17, metric_name="brier_score", metric_se=0.005), {}, ROLLBACK,
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
    # Tolerances relative to the primary's value.
    ("relative tolerance: MAE 8% worse within 10% promotes",
     summary("v1", labeled_rows=300, metric=3.0, metric_name="mae"),
     summary("v2", labeled_rows=300, metric=3.25, metric_name="mae"), {"max_metric_degradation_ratio": 0.1},
     PROMOTE, "10% of the primary's"),
    ("relative tolerance: MAE 12% worse beyond 10% rolls back",
     summary("v1", labeled_rows=300, metric=3.0, metric_name="mae"),
     summary("v2", labeled_rows=300, metric=3.4, metric_name="mae"), {"max_metric_degradation_ratio": 0.1},
     ROLLBACK, "mae on labelled rows"),
    ("relative tolerance, higher is better: accuracy 4% lower within 5% promotes", summary("v1", **LABELED),
     summary("v2", **{**LABELED, "metric": 0.82}),
     {"max_metric_degradation_ratio": 0.05, "max_metric_degradation": 0.0}, PROMOTE, "within every bound"),
    ("logs alone: the reasons say so", P, summary("v2"), {}, PROMOTE, "prediction logs alone"),
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


def test_metrics_from_prometheus_are_not_called_logs_alone():
    p, c = summary("v1", source="prometheus"), summary("v2", source="prometheus")
    v = decide(p, c, CFG)
    assert v.decision == PROMOTE and "logs alone" not in v.reason


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


# --------------------------------------------------------------------------- repeated looks

LOOKS = 10
REPLICATES = 2000


def _promote_rate(looks_summaries) -> float:
    """Share of replicates promoted at some look; a replicate stops at its first
    promote or rollback, as a stepped rollout does."""
    promoted = 0
    for looks in looks_summaries:
        for primary, canary in looks:
            d = decide(primary, canary, CFG).decision
            if d != HOLD:
                promoted += d == PROMOTE
                break
    return promoted / len(looks_summaries)


def _metric_at_tolerance(rng, *, z: float | None = None):
    """Accuracy streams: primary 0.85, canary 0.83 (worse by exactly the 0.02 bound),
    100 more labelled rows per version at each of 10 looks, judged on cumulative rows."""
    n = np.arange(1, LOOKS + 1) * 100
    for _ in range(REPLICATES):
        p_hits = np.cumsum(rng.random(n[-1]) < 0.85)[n - 1]
        c_hits = np.cumsum(rng.random(n[-1]) < 0.83)[n - 1]
        looks = []
        for k, m in enumerate(n):
            pm, cm = p_hits[k] / m, c_hits[k] / m
            looks.append((summary("v1", labeled_rows=int(m), metric=pm, metric_se=math.sqrt(pm * (1 - pm) / m)),
                          summary("v2", labeled_rows=int(m), metric=cm, metric_se=math.sqrt(cm * (1 - cm) / m))))
        yield looks


@functools.cache
def _sequential_metric_rate() -> float:
    return _promote_rate(list(_metric_at_tolerance(np.random.default_rng(11))))


def test_a_canary_exactly_at_the_metric_bound_is_promoted_at_most_alpha_over_ten_looks():
    rate = _sequential_metric_rate()
    # Nominal: alpha (0.05) over all looks together; 2000 replicates put ~0.5% of noise on it.
    assert rate <= CFG.alpha, rate


def test_a_fresh_fixed_interval_at_every_look_would_promote_it_more_often():
    """What the confidence sequence replaces: a 95% interval re-computed per look
    promotes the same at-the-bound canary far above its one-look 2.5%."""
    rng = np.random.default_rng(11)
    promoted = 0
    for looks in _metric_at_tolerance(rng):
        for primary, canary in looks:
            se = math.hypot(primary.metric_se, canary.metric_se)
            if canary.metric - primary.metric - 1.96 * se >= -CFG.max_metric_degradation:
                promoted += 1
                break
    fixed = promoted / REPLICATES
    sequential = _sequential_metric_rate()
    assert fixed > 0.05 > sequential, (fixed, sequential)


def test_a_canary_exactly_at_the_error_bound_is_promoted_at_most_alpha_over_ten_looks():
    """Primary failing 0.5% of its rows, canary 1.5% (higher by exactly the 1% bound);
    300 more rows per version per look."""
    rng = np.random.default_rng(12)
    n = np.arange(1, LOOKS + 1) * 300
    replicates = []
    for _ in range(REPLICATES // 2):
        p_err = np.cumsum(rng.random(n[-1]) < 0.005)[n - 1]
        c_err = np.cumsum(rng.random(n[-1]) < 0.015)[n - 1]
        replicates.append([(summary("v1", rows=int(m), errors=int(p_err[k])),
                            summary("v2", rows=int(m), errors=int(c_err[k]))) for k, m in enumerate(n)])
    assert _promote_rate(replicates) <= CFG.alpha
