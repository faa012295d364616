"""The drift verdict's stated false-alarm rate, by simulation.

Columns of several shapes (normal, skewed, whole numbers with ties, prices in
cents, a few categories, 300 categories with a long tail, missing values) are
profiled as a registration does (a 200,000-row training sample, 2,000 quantile
points, counts of the levels), then windows drawn from the same distributions
are compared with the profile, as a monitoring run does, with ``compare``.

With no drift, at most ``monitoring.false_alarm_rate`` (1 %) of runs may report
any drifted column, at every window size from 100 to 100,000 rows and for 5 to
50 columns. Each case's count is checked against a binomial bound at that rate,
and all cases together against a tighter one. A shift of the size the demo
injects (``make_churn(drift=1.5)``) is still caught at every window size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import binom

from kubeloop.config import Config
from kubeloop.monitoring.columns import category_counts, to_arrow
from kubeloop.monitoring.profile import column_entry
from kubeloop.monitoring.stats import CategoricalAccumulator, NumericAccumulator, compare

CFG = Config().monitoring
RATE = CFG.false_alarm_rate
REFERENCE_ROWS = 200_000
LONG_TAIL = np.array([f"city_{i:03d}" for i in range(300)])
LONG_TAIL_P = 1.0 / np.arange(1, 301) ** 0.8
LONG_TAIL_P /= LONG_TAIL_P.sum()


def _draw(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(50, 10, n)
    if kind == "skewed":
        return rng.lognormal(2.2, 0.7, n)
    if kind == "counts":  # whole numbers, heavy ties
        return rng.poisson(1.3, n).astype(float)
    if kind == "cents":
        return np.round(rng.gamma(2.0, 30.0, n), 2)
    if kind == "missing":  # 5 % missing
        x = rng.exponential(6.0, n)
        x[rng.random(n) < 0.05] = np.nan
        return x
    # categories as a dictionary-encoded Arrow array, as Parquet gives them
    if kind == "few":
        codes, names = rng.choice(3, n, p=[0.5, 0.3, 0.2]), ["basic", "plus", "pro"]
    elif kind == "many":
        codes, names = rng.choice(len(LONG_TAIL), n, p=LONG_TAIL_P), LONG_TAIL.tolist()
    else:
        raise AssertionError(kind)
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names))


KINDS = ["normal", "skewed", "counts", "cents", "missing", "few", "many"]
CATEGORICAL = {"few", "many"}


@pytest.fixture(scope="module")
def profiles():
    rng = np.random.default_rng(20261203)
    out = {}
    for kind in KINDS:
        values = _draw(kind, rng, REFERENCE_ROWS)
        values = values.dictionary_decode() if kind in CATEGORICAL else pd.Series(values)
        out[kind] = column_entry(values, "categorical" if kind in CATEGORICAL else "numeric",
                                 points=CFG.profile_points, bins=CFG.psi_bins, max_categories=CFG.max_categories)
    return out


def _run(profiles, n_columns: int, rows: int, rng: np.random.Generator) -> list[str]:
    """One monitoring run with no drift: the columns it reports as drifted."""
    kinds = [KINDS[i % len(KINDS)] for i in range(n_columns)]
    columns, accs = {}, {}
    for i, kind in enumerate(kinds):
        name = f"{kind}_{i}"
        columns[name] = profiles[kind]
        values = _draw(kind, rng, rows)
        if kind in CATEGORICAL:
            acc = CategoricalAccumulator()
            acc.add_counts(*category_counts(values))
        else:
            acc = NumericAccumulator(profiles[kind]["points"])
            acc.add(values)
        accs[name] = acc
    report = compare({"columns": columns, "n_rows": REFERENCE_ROWS}, accs, CFG, n_current=rows)
    return report["drifted_columns"]


# (window rows, columns, runs): most runs at the small windows, where the tests
# (not the effect sizes) are what holds alarms back; fewer at 100,000 rows.
CASES = [
    (100, 5, 200), (100, 20, 80), (100, 50, 40),
    (200, 5, 100), (200, 50, 30),
    (1_000, 5, 100), (1_000, 50, 20),
    (10_000, 5, 30), (10_000, 50, 8),
    (100_000, 5, 6), (100_000, 50, 2),
]


def test_no_drift_alarms_at_most_the_stated_rate(profiles):
    assert RATE == 0.01
    total_runs = total_alarms = 0
    failures = []
    for rows, n_columns, runs in CASES:
        rng = np.random.default_rng(rows * 100 + n_columns)
        alarms = [cols for cols in (_run(profiles, n_columns, rows, rng) for _ in range(runs)) if cols]
        total_runs += runs
        total_alarms += len(alarms)
        # P(more than this | true rate = RATE) < 0.1 %: a rate at or under 1 % passes on any seed
        if len(alarms) > binom.ppf(0.999, runs, RATE):
            failures.append((rows, n_columns, f"{len(alarms)}/{runs}", alarms[:3]))
    assert failures == []
    assert total_alarms <= binom.ppf(0.999, total_runs, RATE), (total_alarms, total_runs)


@pytest.mark.parametrize("rows", [100, 1_000, 100_000])
def test_the_demo_shift_is_caught(rows):
    # The demo's drifted traffic (make_churn drift=1.5) against a profile of its
    # training data: caught in every run at every window size.
    from kubeloop.datagen import make_churn
    from kubeloop.monitoring.profile import build_profile

    numeric = ["tenure_months", "age", "monthly_charges", "total_charges", "num_products", "data_usage_gb",
               "support_calls", "last_login_days"]
    cats = ["region", "plan", "contract", "payment_method", "device", "paperless_billing"]
    schema = {"task": "classification", "target": "churned", "columns": {
        **{c: {"kind": "numeric", "role": "feature"} for c in numeric},
        **{c: {"kind": "categorical", "role": "feature"} for c in cats},
        "churned": {"kind": "categorical", "role": "target"}}}
    reference = build_profile(make_churn(20_000, seed=1), schema)
    for seed in range(5 if rows < 100_000 else 1):
        cur = make_churn(rows, seed=100 + seed, drift=1.5)
        accs = {}
        for c in numeric:
            accs[c] = NumericAccumulator(reference["columns"][c]["points"])
            accs[c].add(cur[c].astype(float).to_numpy())
        for c in cats:
            accs[c] = CategoricalAccumulator()
            accs[c].add_counts(*category_counts(to_arrow(cur[c])))
        report = compare(reference, accs, CFG, n_current=rows)
        assert report["drifted_columns"], (rows, seed)
