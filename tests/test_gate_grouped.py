"""The gate on rows that come in groups (an id column the split keeps together):
the paired bootstrap resamples ids, seen rows are matched by id, and
``min_improvement`` can be relative.

The simulation is the issue's case: 100 ids x 20 rows, two equally good models
whose errors are shared by the rows of an id. Resampling rows there promotes in
about a quarter of test sets; resampling ids keeps promotions at the nominal
share (the interval's lower end clears 0 in at most (1 - confidence) / 2 of test
sets), as row resampling does on rows with no groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from kubeloop.components.gate import decide
from kubeloop.config import GateConfig
from kubeloop.fingerprints import FingerprintSet, rows_file
from kubeloop.paired import paired_bootstrap

IDS, ROWS_PER_ID = 100, 20
# The primary metric's interval is what the simulation is about: no guardrails.
POLICY = GateConfig(bootstrap_samples=300, guardrails=[])
NOMINAL = (1 - POLICY.confidence) / 2


def _test_set(task: str, rng: np.random.Generator, grouped: bool):
    """Labels, two equally good models' outputs and the ids of one test set."""
    n = IDS * ROWS_PER_ID
    ids = np.repeat(np.arange(IDS), ROWS_PER_ID)
    # grouped: each model errs alike on all rows of an id; else every row on its own
    unit = ids if grouped else np.arange(n)
    k = unit.max() + 1
    truth = rng.normal(0, 1, k)[unit] + rng.normal(0, 0.5, n)
    err_a = rng.normal(0, 0.6, k)[unit] + rng.normal(0, 0.3, n)
    err_b = rng.normal(0, 0.6, k)[unit] + rng.normal(0, 0.3, n)
    if task == "regression":
        return truth, truth + err_a, truth + err_b, ids
    y = (truth > 0.3).astype(int)

    def proba(err):
        p = 1 / (1 + np.exp(-2.0 * (truth - 0.3 + err)))
        return np.column_stack([1 - p, p])

    return y, proba(err_a), proba(err_b), ids


def _promoted(task: str, y, a, b, groups) -> bool:
    metric = "rmse" if task == "regression" else "roc_auc"
    paired = paired_bootstrap(task, y, a, b, [metric], positive=1 if task == "classification" else None,
                              n_bootstrap=POLICY.bootstrap_samples, seed=7, groups=groups)
    champion = {"n_rows": len(y), "paired": {m: e.to_dict() for m, e in paired.items()}}
    d = decide(task=task, policy=POLICY, champion=champion, baseline=None, champion_version="v1")
    if groups is not None:
        assert "resampled by id" in d.reason
    return d.promote


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_equally_good_models_are_promoted_at_most_at_the_nominal_share(task):
    sets = 100
    bound = binom.ppf(0.999, sets, NOMINAL)  # exceeded with < 0.1 % chance at the nominal share
    rng = np.random.default_rng(11 if task == "regression" else 12)
    by_id = by_row = iid = 0
    for _ in range(sets):
        y, a, b, ids = _test_set(task, rng, grouped=True)
        by_id += _promoted(task, y, a, b, ids)
        by_row += _promoted(task, y, a, b, None)
        y, a, b, ids = _test_set(task, rng, grouped=False)
        iid += _promoted(task, y, a, b, None)
    assert by_id <= bound, (by_id, sets)
    assert iid <= bound, (iid, sets)
    # the unit matters: resampling rows of grouped data promotes far too often
    assert by_row > 0.1 * sets, (by_row, sets)


def test_one_row_per_group_is_the_row_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 300)
    a, b = y + rng.normal(0, 1, 300), y + rng.normal(0, 1.1, 300)
    rows = paired_bootstrap("regression", y, a, b, ["rmse"], seed=3)["rmse"]
    groups = paired_bootstrap("regression", y, a, b, ["rmse"], seed=3, groups=[f"id{i}" for i in range(300)])["rmse"]
    assert rows.n_groups is None and groups.n_groups == 300
    assert groups.low == pytest.approx(rows.low, rel=1e-12)
    assert groups.high == pytest.approx(rows.high, rel=1e-12)


def test_grouped_interval_is_wider_and_a_sample_of_ids_keeps_it():
    rng = np.random.default_rng(5)
    y, a, b, ids = _test_set("regression", rng, grouped=True)
    rows = paired_bootstrap("regression", y, a, b, ["rmse"], seed=1)["rmse"]
    full = paired_bootstrap("regression", y, a, b, ["rmse"], seed=1, groups=ids)["rmse"]
    sampled = paired_bootstrap("regression", y, a, b, ["rmse"], seed=1, groups=ids, max_rows=1000)["rmse"]
    assert full.high - full.low > 2 * (rows.high - rows.low)
    assert full.estimate == sampled.estimate
    # half the ids, spread scaled back: the same width within sampling error
    assert sampled.high - sampled.low == pytest.approx(full.high - full.low, rel=0.35)


def test_a_single_group_gives_no_interval_and_never_promotes():
    y = np.arange(60.0)
    paired = paired_bootstrap("regression", y, y + 0.1, y + 1.0, ["rmse", "mae"], groups=["a"] * 60)
    assert paired["rmse"].estimate > 0 and paired["rmse"].low is None
    champion = {"n_rows": 60, "paired": {m: e.to_dict() for m, e in paired.items()}}
    assert not decide(task="regression", policy=GateConfig(), champion=champion, baseline=None).promote


def _champion(low: float, reference: float = 100.0):
    est = {"metric": "rmse", "estimate": low + 0.5, "low": low, "high": low + 1.0, "confidence": 0.95,
           "n_rows": 500, "challenger": reference - low - 0.5, "reference": reference, "higher_is_better": False,
           "n_bootstrap": 1000}
    mae = {**est, "metric": "mae", "estimate": 0.0, "low": -0.1, "high": 0.1, "challenger": 5.0, "reference": 5.0}
    return {"n_rows": 500, "paired": {"rmse": est, "mae": mae}}


@pytest.mark.parametrize(
    "policy,low,reference,promote,words",
    [
        (GateConfig(), 0.5, 100.0, True, "beats"),  # absolute 0.001: cleared
        (GateConfig(min_improvement=0.01, min_improvement_relative=True), 0.5, 100.0, False,
         "1.0% of the champion's"),  # needs 1.0 (1 % of 100)
        (GateConfig(min_improvement=0.01, min_improvement_relative=True), 1.5, 100.0, True, "beats"),
        # the same relative rule on a target 100x smaller: scale-free
        (GateConfig(min_improvement=0.01, min_improvement_relative=True), 0.015, 1.0, True, "beats"),
        (GateConfig(min_improvement=0.01, min_improvement_relative=True), 0.005, 1.0, False, "within noise"),
    ],
)
def test_relative_min_improvement(policy, low, reference, promote, words):
    d = decide(task="regression", policy=policy, champion=_champion(low, reference), baseline=None)
    assert d.promote is promote
    assert words in d.reason


# --------------------------------------------------------------------------- seen rows by id


def _frame(ids, x, y):
    return pd.DataFrame({"customer": ids, "x": x, "y": y})


SCHEMA = {"target": "y", "id_column": "customer", "task": "regression",
          "columns": {"customer": {"kind": "categorical", "role": "id"}, "x": {"kind": "numeric", "role": "feature"},
                      "y": {"kind": "numeric", "role": "target"}}}


def test_seen_rows_are_matched_by_id_whatever_their_values():
    train = _frame(["a", "a", "b"], [1, 2, 1], [0, 1, 0])
    s = FingerprintSet.from_bytes(rows_file([train], SCHEMA))
    assert s.id_column == "customer"
    test = _frame(["a", "c", "d", None, None], [9, 1, 2, 1, 7], [5, 0, 1, 0, 3])
    # a: seen id with changed values; c, d: new ids with the same values as seen rows;
    # no id: matched by value (the first is a training row's values)
    assert s.contains_rows(test).tolist() == [True, False, False, True, False]


def test_without_an_id_column_rows_are_matched_by_value():
    train = _frame(["a", "b"], [1, 2], [0, 1])
    schema = {**SCHEMA, "id_column": None}
    s = FingerprintSet.from_bytes(rows_file([train], schema))
    assert s.id_column is None
    assert s.contains_rows(_frame(["z", "a"], [1, 5], [0, 1])).tolist() == [True, False]
