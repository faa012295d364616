"""Drift statistics against scipy on the same data, the streaming accumulators'
error bounds, the profile, and the decision rule."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from kubeloop.config import Config, ConfigError
from kubeloop.monitoring.columns import category_counts, to_arrow
from kubeloop.monitoring.profile import build_profile, column_entry, numeric_entry
from kubeloop.monitoring.stats import (
    CategoricalAccumulator,
    NumericAccumulator,
    categorical_stats,
    chi2_homogeneity,
    decide,
    ks_from_counts,
    numeric_stats,
    psi,
    wasserstein_from_counts,
)

CFG = Config().monitoring


def _acc(entry, values, batches=1):
    acc = NumericAccumulator(entry["points"])
    for part in np.array_split(np.asarray(values, float), batches):
        acc.add(part)
    return acc


def _entry(values, points=10**9):
    return column_entry(pd.Series(values), "numeric", points=points)


# --------------------------------------------------------------------------- KS


@pytest.mark.parametrize("n_ref,n_cur,shift", [(300, 500, 0.0), (2000, 1500, 0.3), (5000, 8000, 0.05)])
def test_ks_small_samples_equals_scipy(n_ref, n_cur, shift):
    rng = np.random.default_rng(n_ref)
    ref, cur = rng.normal(0, 1, n_ref), rng.normal(shift, 1, n_cur)
    out = numeric_stats(_entry(ref), _acc(_entry(ref), cur, batches=3))
    want = sps.ks_2samp(ref, cur)
    assert out["ks_statistic"] == pytest.approx(want.statistic, rel=1e-12)
    assert out["ks_pvalue"] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("integers", [False, True])
def test_ks_streamed_large_current_equals_scipy(integers):
    # 60k current rows in 7 batches: the accumulator never holds them, and
    # the statistic still equals scipy's on the full data (asymptotic p-value).
    rng = np.random.default_rng(7)
    if integers:  # many ties, on both sides of the reference points
        ref, cur = rng.integers(0, 30, 20_000).astype(float), rng.integers(2, 33, 60_000).astype(float)
    else:
        ref, cur = rng.normal(0, 1, 20_000), rng.standard_t(5, 60_000) * 0.9
    entry = _entry(ref)
    acc = _acc(entry, cur, batches=7)
    assert acc.values is None  # too many to keep
    out = numeric_stats(entry, acc)
    want = sps.ks_2samp(ref, cur)
    assert out["ks_statistic"] == pytest.approx(want.statistic, rel=1e-12, abs=1e-15)
    assert out["ks_pvalue"] == pytest.approx(want.pvalue, rel=1e-6, abs=1e-300)
    assert out["ks_error_bound"] == 0.0


def test_ks_against_quantile_points_within_stated_bound():
    rng = np.random.default_rng(3)
    ref, cur = rng.gamma(2.0, 1.0, 100_000), rng.gamma(2.2, 1.0, 50_000)
    entry = _entry(ref, points=200)
    assert not entry["exact"] and len(entry["points"]) <= 200
    out = numeric_stats(entry, _acc(entry, cur, batches=4))
    want = sps.ks_2samp(ref, cur).statistic
    assert out["ks_error_bound"] == pytest.approx(1 / len(entry["points"]))
    assert abs(out["ks_statistic"] - want) <= out["ks_error_bound"]
    # and the bound is not vacuous: the sketch is coarse enough to differ at all
    assert out["ks_statistic"] != want


def test_ks_values_outside_reference_range():
    ref = np.arange(100, dtype=float)
    cur = np.concatenate([np.full(50, -5.0), np.full(50, 500.0)])
    entry = _entry(ref)
    acc = _acc(entry, cur)
    assert ks_from_counts(np.asarray(entry["weights"], float), acc) == pytest.approx(sps.ks_2samp(ref, cur).statistic)


# --------------------------------------------------------------------------- Wasserstein


def test_wasserstein_small_equals_scipy_and_streamed_within_bound():
    rng = np.random.default_rng(11)
    ref, cur = rng.normal(0, 2, 4000), rng.normal(0.5, 2.5, 3000)
    entry = _entry(ref)
    small = numeric_stats(entry, _acc(entry, cur))
    want = sps.wasserstein_distance(ref, cur)
    assert small["wasserstein"] == pytest.approx(want, rel=1e-9)
    assert small["wasserstein_norm"] == pytest.approx(want / ref.std(), rel=1e-9)

    big_cur = rng.normal(0.5, 2.5, 80_000)
    acc = _acc(entry, big_cur, batches=5)
    w, bound = wasserstein_from_counts(np.asarray(entry["points"]), np.asarray(entry["weights"], float), acc)
    want = sps.wasserstein_distance(ref, big_cur)
    assert abs(w - want) <= bound + 1e-9 * want
    assert bound < 0.01 * want


# --------------------------------------------------------------------------- categorical


def test_chi2_equals_scipy_and_other_scores():
    ref = {"a": 500, "b": 300, "c": 200}
    entry = column_entry(pd.Series([k for k, v in ref.items() for _ in range(v)]), "categorical")
    acc = CategoricalAccumulator()
    acc.add_counts({"a": 200, "b": 300}, missing=0)
    acc.add_counts({"a": 180, "c": 250, "z": 70}, missing=0)
    out = categorical_stats(entry, acc)
    table = np.array([[500, 300, 200, 0], [380, 300, 250, 70]])
    want = sps.chi2_contingency(table, correction=False)
    assert out["chi2_statistic"] == pytest.approx(want.statistic, rel=1e-12)
    assert out["chi2_pvalue"] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert out["unseen_rate"] == pytest.approx(70 / 1000)
    assert out["unseen_categories"] == ["z"]
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert out["jensen_shannon"] == pytest.approx(jensenshannon(p, q, base=2))
    assert out["psi"] == pytest.approx(psi(table[0], table[1]))


def test_chi2_homogeneity_two_categories_is_pearson_without_correction():
    stat, p = chi2_homogeneity([90, 10], [80, 20])
    want = sps.chi2_contingency(np.array([[90, 10], [80, 20]]), correction=False)
    assert stat == pytest.approx(want.statistic) and p == pytest.approx(want.pvalue)
    # the same as the goodness-of-fit chi-square with expected counts from the pooled table
    expected = want.expected_freq
    assert stat == pytest.approx(sps.chisquare(np.array([90, 10, 80, 20]), expected.ravel(), ddof=2).statistic)


def test_psi_known_value():
    # two bins: 50/50 -> 25/75
    want = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(want)
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0


# --------------------------------------------------------------------------- profile


def test_profile_numeric_quantile_points_are_exact_cdf_at_points():
    rng = np.random.default_rng(5)
    x = rng.normal(size=20_000)
    entry = numeric_entry(np.sort(x), missing=0, points=100, bins=10)
    pts = np.asarray(entry["points"])
    cdf = np.cumsum(entry["weights"]) / len(x)
    assert np.allclose(cdf, np.searchsorted(np.sort(x), pts, side="right") / len(x))
    assert sum(entry["bins"]["counts"]) == len(x)
    assert len(entry["bins"]["counts"]) == 10
    assert all(abs(c - 2000) <= 1 for c in entry["bins"]["counts"])  # deciles
    assert set(entry["bins"]["edges"]) <= set(entry["points"])


def test_build_profile_is_small_json_with_everything():
    rng = np.random.default_rng(0)
    n = 50_000
    df = pd.DataFrame({"age": rng.normal(40, 10, n), "plan": rng.choice(["a", "b", None], n),
                       "vip": rng.random(n) < 0.1, "y": rng.choice(["no", "yes"], n)})
    df.loc[:99, "age"] = np.nan
    schema = {"task": "classification", "target": "y", "columns": {
        "age": {"kind": "numeric", "role": "feature"}, "plan": {"kind": "categorical", "role": "feature"},
        "vip": {"kind": "boolean", "role": "feature"}, "y": {"kind": "categorical", "role": "target"}}}
    prof = build_profile(df, schema, predictions=df["y"], metrics={"accuracy": 0.9, "roc_auc": float("nan")})
    text = json.dumps(prof, allow_nan=False)
    assert len(text) < 150_000
    assert set(prof["columns"]) == {"age", "plan", "vip"}
    assert prof["columns"]["age"]["missing"] == 100
    assert prof["columns"]["vip"]["counts"].keys() == {"true", "false"}
    assert prof["columns"]["plan"]["missing_rate"] == pytest.approx(df["plan"].isna().mean())
    assert prof["prediction"]["kind"] == "categorical"
    assert prof["metrics"] == {"accuracy": 0.9, "roc_auc": None}


# --------------------------------------------------------------------------- decision


def _num(**kw):
    base = dict(kind="numeric", psi=0.0, wasserstein_norm=0.0, ks_statistic=0.0, ks_pvalue=0.5,
                missing_rate_change=0.0, missing_pvalue=0.5, missing_rate_reference=0.0, missing_rate_current=0.0)
    base.update(kw)
    return base


def _cat(**kw):
    base = dict(kind="categorical", psi=0.0, jensen_shannon=0.0, unseen_rate=0.0, chi2_pvalue=0.5,
                missing_rate_change=0.0, missing_pvalue=0.5, missing_rate_reference=0.0, missing_rate_current=0.0)
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "stats,drifted",
    [
        (_num(), False),
        # a million rows: tiny p-value, negligible effect -> no alarm
        (_num(ks_statistic=0.004, psi=0.001, wasserstein_norm=0.01, ks_pvalue=1e-12), False),
        # a real effect, significant
        (_num(wasserstein_norm=0.3, ks_statistic=0.12, ks_pvalue=1e-30), True),
        # effect at exactly the threshold counts
        (_num(ks_statistic=0.1, ks_pvalue=0.001), True),
        # a large effect on a handful of rows that the test cannot confirm -> no alarm
        (_num(psi=0.5, wasserstein_norm=0.4, ks_statistic=0.3, ks_pvalue=0.2), False),
        # missing p-value (no data): no alarm
        (_num(psi=0.5, ks_pvalue=None), False),
        (_num(missing_rate_change=0.25, missing_pvalue=1e-9, missing_rate_current=0.25), True),
        (_num(missing_rate_change=-0.25, missing_pvalue=1e-9, missing_rate_reference=0.25), True),
        (_num(missing_rate_change=0.05, missing_pvalue=1e-9), False),
        (_cat(), False),
        (_cat(jensen_shannon=0.15, chi2_pvalue=1e-8), True),
        (_cat(unseen_rate=0.06, chi2_pvalue=1e-3), True),
        (_cat(unseen_rate=0.06, chi2_pvalue=0.3), False),
        (_cat(jensen_shannon=0.02, psi=0.01, chi2_pvalue=1e-40), False),
        (_cat(psi=float("nan"), chi2_pvalue=1e-3), False),
        # ~1,000 rows of a skewed column: sampling alone reaches these effect sizes
        (_num(wasserstein_norm=0.118, ks_statistic=0.055, psi=0.015, ks_pvalue=0.01,
              n_reference=1400, n_current=1000), False),
        # the same sizes on a million rows each are a real (if small) shift
        (_num(wasserstein_norm=0.118, ks_statistic=0.055, psi=0.015, ks_pvalue=1e-30,
              n_reference=10**6, n_current=10**6), True),
        # a genuine shift on ~1,000 rows clears the noise
        (_num(wasserstein_norm=0.5, ks_statistic=0.2, psi=0.3, ks_pvalue=1e-12,
              n_reference=1400, n_current=1000), True),
        (_cat(jensen_shannon=0.11, chi2_pvalue=0.01, n_reference=300, n_current=200,
              categories={"names": list("abcdefgh")}), False),
        (_cat(jensen_shannon=0.3, chi2_pvalue=1e-9, n_reference=300, n_current=200,
              categories={"names": list("abcdefgh")}), True),
    ],
)
def test_decision_table(stats, drifted):
    got, reasons = decide(stats, CFG)
    assert got is drifted
    assert bool(reasons) is drifted


def test_thresholds_come_from_config():
    stats = _num(ks_statistic=0.15, ks_pvalue=1e-6)
    assert decide(stats, CFG)[0]
    strict = Config.from_dict({"monitoring": {"ks_threshold": 0.2}}).monitoring
    assert not decide(stats, strict)[0]
    loose_guard = SimpleNamespace(**{**CFG.model_dump(), "p_value": 1e-9})
    assert not decide(stats, loose_guard)[0]


def test_monitoring_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="monitoring.ks_threshold"):
        Config.from_dict({"monitoring": {"ks_threshold": 1.5}})
    with pytest.raises(ConfigError, match="monitoring.psi_treshold: unknown key"):
        Config.from_dict({"monitoring": {"psi_treshold": 0.1}})


def test_ks_pvalue_beyond_kstwo_range_close_to_scipy():
    # en = n*m/(n+m) > 100 000: the corrected limiting distribution, within 0.1 %
    # of scipy's for p-values above 1e-9 (and 1 % far into the tail)
    from kubeloop.monitoring.stats import KSTWO_MAX_EN, ks_pvalue

    n, m = 400_000, 300_000
    en = np.round(n * m / (n + m))
    assert en > KSTWO_MAX_EN
    for nx2 in (0.3, 1, 3, 10, 20, 50):
        d = np.sqrt(nx2 / en)
        want = sps.kstwo.sf(d, en)
        assert ks_pvalue(d, n, m) == pytest.approx(want, rel=1e-3 if want > 1e-9 else 1e-2)


def test_stable_skewed_columns_on_small_samples_do_not_cry_wolf():
    # Twenty pairs of churn samples from one generator, 1,400 vs 1,000 rows, on its
    # skewed columns: sampling alone once took total_charges' normalised Wasserstein
    # distance past 0.1 here, which the noise margin absorbs. A shift of half a
    # standard deviation on the same sizes is still caught.
    from kubeloop.datagen import make_churn

    columns = ["tenure_months", "total_charges", "monthly_charges", "num_products",
               "support_calls", "data_usage_gb"]
    alarms = []
    for seed in range(20):
        ref, cur = make_churn(1400, seed=1000 + seed), make_churn(1000, seed=2000 + seed)
        for col in columns:
            r, c = ref[col].dropna().astype(float), cur[col].dropna().astype(float)
            entry = _entry(r)
            drifted, reasons = decide(numeric_stats(entry, _acc(entry, c)), CFG)
            if drifted:
                alarms.append((seed, col, reasons))
    assert alarms == []
    ref, cur = make_churn(1400, seed=1), make_churn(1000, seed=2)
    r = ref["total_charges"].dropna().astype(float)
    shifted = cur["total_charges"].dropna().astype(float) + 0.5 * r.std()
    entry = _entry(r)
    assert decide(numeric_stats(entry, _acc(entry, shifted)), CFG)[0]


# --------------------------------------------------------------------------- run-level correction


@pytest.mark.parametrize(
    "pvalues,rate,rejected",
    [
        ([], 0.01, []),
        ([None, None], 0.01, [False, False]),
        ([0.004, 0.5], 0.01, [True, False]),  # 0.004 <= 1/2 * 0.01
        ([0.006, 0.5], 0.01, [False, False]),  # alone it would pass 0.01; two tests ask for 0.005
        ([0.006, 0.009], 0.01, [True, True]),  # the second at rank 2 carries the first
        ([0.006, None, 0.009], 0.01, [True, False, True]),  # no test is not a test
        ([1e-12] + [0.9] * 49, 0.01, [True] + [False] * 49),
        ([0.0005] * 3 + [0.9] * 47, 0.01, [True] * 3 + [False] * 47),
    ],
)
def test_benjamini_hochberg_table(pvalues, rate, rejected):
    from kubeloop.monitoring.stats import benjamini_hochberg

    assert benjamini_hochberg(pvalues, rate) == rejected


def test_pvalue_of_a_sampled_reference_counts_its_sample():
    rng = np.random.default_rng(4)
    sample = np.sort(rng.normal(0, 1, 5000))
    entry = numeric_entry(sample, missing=0, n_total=1_000_000, points=500)
    entry["sample"] = len(sample)
    cur = rng.normal(0, 1, 20_000)
    out = numeric_stats(entry, _acc(entry, cur, batches=2))
    assert out["n_reference"] == 1_000_000 and out["n_reference_compared"] == 5000
    from kubeloop.monitoring.stats import ks_pvalue

    assert out["ks_pvalue"] == pytest.approx(ks_pvalue(out["ks_statistic"], 5000, 20_000), rel=1e-12)
    assert out["ks_pvalue"] > ks_pvalue(out["ks_statistic"], 1_000_000, 20_000)


def test_many_levels_are_tested_on_their_true_count_with_rare_ones_pooled():
    from kubeloop.monitoring.stats import OTHER, pooled_table, reference_levels

    rng = np.random.default_rng(2)
    names = np.array([f"c{i}" for i in range(300)])
    p = 1 / np.arange(1, 301)
    p /= p.sum()
    ref = pd.Series(rng.choice(names, 100_000, p=p))
    entry = column_entry(ref, "categorical", max_categories=1000)
    assert entry["levels"] == 300 == reference_levels(entry)
    cur = pd.Series(rng.choice(names, 200, p=p))
    acc = CategoricalAccumulator()
    acc.add_counts(*category_counts(to_arrow(cur)))
    out = categorical_stats(entry, acc)
    cells, r, c = pooled_table({k: float(v) for k, v in entry["counts"].items()}, 0.0, acc.counts)
    # every level tested alone is expected at least 5 times in 200 rows; the rest share one cell
    assert cells[-1] == OTHER and out["cells"] == len(cells) < 300
    assert all(rv / r.sum() * c.sum() >= 5 for rv in r[:-1])
    assert r.sum() == 100_000 and c.sum() == 200
    # stored top levels only (an old profile: no "levels"): the pooled rest counts as one
    old = {k: v for k, v in entry.items() if k != "levels"}
    old["counts"] = dict(list(entry["counts"].items())[:50])
    old["other"] = 100_000 - sum(old["counts"].values())
    assert reference_levels(old) == 51
    assert categorical_stats(old, acc)["n_reference"] == 100_000


@pytest.mark.parametrize("keep", [50_000, 120_000])  # overflowing midway, or all kept (counted at the end)
def test_accumulator_keeping_values_counts_as_the_streaming_one(keep):
    rng = np.random.default_rng(8)
    points = np.sort(rng.normal(0, 1, 3000))
    batches = [rng.normal(0.1, 1, 20_000) for _ in range(5)]
    batches[2][:100] = np.nan
    streaming, keeping = NumericAccumulator(points), NumericAccumulator(points, keep_values=keep)
    for b in batches:
        streaming.add(b)
        keeping.add(b)
    assert np.array_equal(streaming.counts, keeping.counts)
    assert np.allclose(streaming.sums, keeping.sums, rtol=1e-12, atol=1e-9)
    assert keeping.n == streaming.n and keeping.missing == streaming.missing == 100
    values = keeping.values
    if keep < 99_900:
        assert values is None
    else:
        want = np.sort(np.concatenate(batches))
        assert np.array_equal(np.sort(values), want[np.isfinite(want)])


def test_benjamini_hochberg_adjusts_as_scipy():
    from kubeloop.monitoring.stats import benjamini_hochberg

    rng = np.random.default_rng(6)
    for size in (1, 3, 20, 100):
        p = np.concatenate([rng.random(size), rng.random(size) * 1e-3])
        adjusted = sps.false_discovery_control(p, method="bh")
        for rate in (0.001, 0.01, 0.05, 0.2):
            assert benjamini_hochberg(list(p), rate) == list(adjusted <= rate)


@pytest.mark.parametrize(
    "values",
    [
        ["a", None, "b", "a", "c"],
        [None, None],
        ["True", "true", "False", None, "x"],
        [],
    ],
)
def test_dictionary_counts_equal_plain_counts(values, tmp_path):
    """Categorical Parquet columns are read as dictionaries; their counts must be the plain ones,
    also across row groups whose dictionaries differ, and with codes that no row uses."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = pa.array(values, pa.string())
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"c": plain}), path, row_group_size=2)
    table = pq.read_table(path, read_dictionary=["c"])
    assert pa.types.is_dictionary(table.column("c").type)
    assert category_counts(table.column("c")) == category_counts(plain)
    unused = pa.DictionaryArray.from_arrays(pa.array([0, None, 0], pa.int32()), pa.array(["a", "zz"]))
    assert category_counts(unused) == ({"a": 2}, 1)
