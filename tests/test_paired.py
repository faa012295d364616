"""The paired bootstrap: improvement with its interval, for every gate metric."""

from __future__ import annotations

import numpy as np
import pytest

from kubeloop.components.evaluate import classification_metrics, regression_metrics
from kubeloop.metric_names import CLASSIFICATION_METRICS, REGRESSION_METRICS
from kubeloop.paired import PairedError, paired_bootstrap, weighted_metrics


def binary(
    n: int, skill: float, seed: int, noise_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and P(class 1) from a model whose scores separate the classes by ``skill``
    (the labels follow ``seed``, the model's errors ``noise_seed``)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    noise = (
        rng.normal(0, 1, n)
        if noise_seed is None
        else np.random.default_rng(noise_seed).normal(0, 1, n)
    )
    logit = skill * (2 * y - 1) + noise
    p1 = 1 / (1 + np.exp(-logit))
    return y, np.column_stack([1 - p1, p1])


def test_unit_weights_equal_the_evaluation_metrics_binary():
    y, proba = binary(400, 0.8, 0)
    proba[:50] = np.round(proba[:50], 1)  # ties in the scores
    mine = weighted_metrics("classification", y, proba, list(CLASSIFICATION_METRICS), positive=1)
    ref = classification_metrics(y, proba, [0, 1], positive_label=1)
    for name in CLASSIFICATION_METRICS:
        assert mine[name][0] == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("never_predicted", [False, True])
def test_unit_weights_equal_the_evaluation_metrics_multiclass(never_predicted):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3)) + 1.5 * np.eye(3)[y]
    if never_predicted:
        logits[:, 2] -= 10
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mine = weighted_metrics("classification", y, proba, list(CLASSIFICATION_METRICS))
    ref = classification_metrics(y, proba, [0, 1, 2])
    for name in CLASSIFICATION_METRICS:
        assert mine[name][0] == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name


def test_unit_weights_equal_the_evaluation_metrics_regression():
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 200)
    pred = y + rng.normal(0, 1, 200)
    mine = weighted_metrics("regression", y, pred, list(REGRESSION_METRICS))
    ref = regression_metrics(y, pred)
    for name in REGRESSION_METRICS:
        assert mine[name][0] == pytest.approx(ref[name], rel=1e-9), name


def test_integer_weights_equal_repeating_rows():
    y, proba = binary(120, 0.7, 2)
    counts = np.random.default_rng(5).integers(0, 4, 120)
    weighted = weighted_metrics(
        "classification",
        y,
        proba,
        list(CLASSIFICATION_METRICS),
        counts[None, :].astype(float),
        positive=1,
    )
    rows = np.repeat(np.arange(120), counts)
    ref = classification_metrics(y[rows], proba[rows], [0, 1], positive_label=1)
    for name in CLASSIFICATION_METRICS:
        assert weighted[name][0] == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name


GATE_METRICS_CLS = ["roc_auc", "log_loss", "f1", "accuracy", "brier_score", "pr_auc"]


def test_identical_models_show_no_improvement():
    y, proba = binary(500, 0.6, 4)
    est = paired_bootstrap("classification", y, proba, proba.copy(), GATE_METRICS_CLS, positive=1)
    for e in est.values():
        assert e.estimate == 0.0 and e.low == 0.0 and e.high == 0.0 and e.n_rows == 500


def test_equally_good_models_have_an_interval_around_zero():
    # Same skill, independent errors: neither is better.
    y, a = binary(600, 0.6, 7, noise_seed=1)
    _, b = binary(600, 0.6, 7, noise_seed=2)
    est = paired_bootstrap("classification", y, a, b, ["roc_auc", "log_loss"], positive=1)
    for e in est.values():
        assert e.low < 0 < e.high, e


def test_a_clearly_better_model_has_an_interval_above_zero():
    y, good = binary(800, 1.5, 11)
    rng = np.random.default_rng(12)
    p1 = np.clip(good[:, 1] * 0.5 + rng.random(800) * 0.5, 1e-3, 1 - 1e-3)  # diluted with noise
    worse = np.column_stack([1 - p1, p1])
    est = paired_bootstrap(
        "classification", y, good, worse, ["roc_auc", "log_loss", "brier_score"], positive=1, seed=3
    )
    for name, e in est.items():
        assert e.estimate > 0 and e.low > 0, (name, e)
        assert e.low <= e.estimate <= e.high
    # Swapped, the same evidence says the other is worse.
    back = paired_bootstrap("classification", y, worse, good, ["roc_auc"], positive=1, seed=3)
    assert back["roc_auc"].high < 0


@pytest.mark.parametrize("metric", ["rmse", "mae"])
def test_lower_is_better_metrics_point_the_right_way(metric):
    rng = np.random.default_rng(0)
    y = rng.normal(0, 5, 400)
    close = y + rng.normal(0, 1, 400)
    far = y + rng.normal(0, 3, 400)
    est = paired_bootstrap("regression", y, close, far, [metric])[metric]
    assert est.challenger < est.reference and est.estimate > 0 and est.low > 0
    assert not est.higher_is_better


def test_interval_widens_with_confidence_and_narrows_with_rows():
    y, a = binary(300, 0.8, 21)
    _, b = binary(300, 0.5, 21)
    narrow = paired_bootstrap("classification", y, a, b, ["roc_auc"], positive=1, confidence=0.5)[
        "roc_auc"
    ]
    wide = paired_bootstrap("classification", y, a, b, ["roc_auc"], positive=1, confidence=0.99)[
        "roc_auc"
    ]
    assert wide.low < narrow.low and wide.high > narrow.high
    y4, a4 = binary(4800, 0.8, 21)
    _, b4 = binary(4800, 0.5, 21)
    big = paired_bootstrap("classification", y4, a4, b4, ["roc_auc"], positive=1)["roc_auc"]
    small = paired_bootstrap("classification", y, a, b, ["roc_auc"], positive=1)["roc_auc"]
    assert big.high - big.low < (small.high - small.low) / 2


def test_seeded_and_reproducible_blocks_do_not_change_it(monkeypatch):
    y, a = binary(200, 0.8, 5)
    _, b = binary(200, 0.4, 5)
    one = paired_bootstrap("classification", y, a, b, ["roc_auc"], positive=1, seed=9)
    two = paired_bootstrap("classification", y, a, b, ["roc_auc"], positive=1, seed=9)
    assert one == two
    other = paired_bootstrap("classification", y, a, b, ["roc_auc"], positive=1, seed=10)
    assert other["roc_auc"].low != one["roc_auc"].low


def test_tiny_samples_count_undefined_replicates():
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    est = paired_bootstrap("classification", y, p, p[::-1].copy(), ["roc_auc"], positive=1)[
        "roc_auc"
    ]
    assert est.n_undefined > 0 and est.n_rows == 4


def test_multiclass_and_regression_all_metrics_run():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 150)
    pa = rng.dirichlet([1, 1, 1], 150)
    pb = rng.dirichlet([1, 1, 1], 150)
    est = paired_bootstrap(
        "classification", y, pa, pb, list(CLASSIFICATION_METRICS), n_bootstrap=50
    )
    assert set(est) == set(CLASSIFICATION_METRICS)
    assert all(e.low is not None for e in est.values())
    yr = rng.normal(size=80)
    est = paired_bootstrap(
        "regression", yr, yr + 0.1, yr - 0.3, list(REGRESSION_METRICS), n_bootstrap=50
    )
    assert est["r2"].estimate > 0


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"metrics": ["rmse"]}, "classification metrics"),
        ({"confidence": 1.0}, "confidence"),
        ({"n_bootstrap": 0}, "n_bootstrap"),
    ],
)
def test_bad_arguments_are_named(kwargs, words):
    y, p = binary(20, 1, 0)
    args = {"metrics": ["roc_auc"], **kwargs}
    with pytest.raises(PairedError, match=words):
        paired_bootstrap("classification", y, p, p, positive=1, **args)


def test_misaligned_predictions_are_refused():
    y, p = binary(20, 1, 0)
    with pytest.raises(PairedError, match="rows"):
        paired_bootstrap("classification", y, p, p[:10], ["roc_auc"], positive=1)


def test_a_sample_of_rows_gives_the_interval_of_all_rows():
    y, a = binary(40_000, 0.8, 31, noise_seed=1)
    _, b = binary(40_000, 0.75, 31, noise_seed=2)
    args = ("classification", y, a, b, ["roc_auc", "log_loss"])
    full = paired_bootstrap(*args, positive=1, n_bootstrap=300, max_rows=None)
    sampled = paired_bootstrap(*args, positive=1, n_bootstrap=300, max_rows=8_000)
    for m in ("roc_auc", "log_loss"):
        f, s = full[m], sampled[m]
        assert s.estimate == f.estimate and s.n_rows == 40_000  # the estimate uses every row
        width_f, width_s = f.high - f.low, s.high - s.low
        assert abs(width_s - width_f) < 0.25 * width_f, (m, width_f, width_s)
        assert abs((s.low + s.high) / 2 - (f.low + f.high) / 2) < 0.25 * width_f
