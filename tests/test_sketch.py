"""Mergeable column statistics: four partitions merged equal one pass (exact parts
exactly, sketches within their stated error), in any merge order, through JSON."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeloop.monitoring import sketch as sk
from kubeloop.monitoring.profile import column_entry, sketch_entries

KINDS = {"x": "numeric", "c": "categorical"}


def _frame(n: int, seed: int, levels: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    c = rng.integers(0, levels, size=n).astype(str).astype(object)
    c[rng.random(n) < 0.03] = None
    return pd.DataFrame({"x": x, "c": c})


def _one_pass(df: pd.DataFrame, **kw) -> sk.TableSketch:
    t = sk.TableSketch(KINDS, **kw)
    t.add_frame(df, batch_rows=997)
    return t


def _partitions(df: pd.DataFrame, cuts: list[int], **kw) -> list[sk.TableSketch]:
    parts = []
    bounds = [0, *cuts, len(df)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        t = sk.TableSketch(KINDS, **kw)
        t.add_frame(df.iloc[lo:hi], first_row=lo, batch_rows=1009)
        # each partition goes through its serialised form, as a KFP artifact would
        parts.append(sk.loads(sk.dumps(t)))
    return parts


def test_four_partitions_equal_one_pass_exactly_while_small():
    df = _frame(20_000, 1)
    one = _one_pass(df)
    merged = sk.merge_all(_partitions(df, [3000, 9000, 15000]))
    assert merged.n_rows == one.n_rows == len(df)
    for name in KINDS:
        a, b = one.columns[name], merged.columns[name]
        assert (a.rows, a.missing) == (b.rows, b.missing)
    x = df["x"].to_numpy()
    finite = x[np.isfinite(x)]
    m = merged.columns["x"].moments
    assert m.n == finite.size and m.min == finite.min() and m.max == finite.max()
    assert m.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert m.std == pytest.approx(finite.std(), rel=1e-10)
    # the whole column is kept: the sample is the data, sorted
    assert merged.columns["x"].sample.exact
    np.testing.assert_array_equal(merged.columns["x"].sample.sorted_values(), np.sort(finite))
    counts = df["c"].value_counts().to_dict()
    assert merged.columns["c"].cats.counts == counts == one.columns["c"].cats.counts
    assert merged.columns["c"].cats.levels() == 5 and merged.columns["c"].cats.other == 0
    # and the profile entries are those of the in-memory path
    entries = sketch_entries(merged)
    assert entries["x"] == column_entry(df["x"], "numeric")
    assert entries["c"] == column_entry(df["c"], "categorical")


def test_sampled_numeric_merge_is_the_one_pass_sample_and_within_dkw():
    df = _frame(60_000, 2)
    k = 5000
    one = _one_pass(df, sample=k)
    merged = sk.merge_all(_partitions(df, [10_000, 31_000, 44_444], sample=k))
    a, b = one.columns["x"].sample, merged.columns["x"].sample
    assert not b.exact and b.values.size == k
    # bottom-k of the union is the bottom-k of the parts: the same sample
    np.testing.assert_array_equal(a.sorted_values(), b.sorted_values())
    finite = np.sort(df["x"].dropna().to_numpy())
    s = b.sorted_values()
    # the sample's CDF against the column's at every sample point (both sides of each step)
    f_col = np.searchsorted(finite, s, side="right") / finite.size
    f_s = np.arange(1, s.size + 1) / s.size
    gap = max(np.abs(f_col - f_s).max(), np.abs(np.searchsorted(finite, s, side="left") / finite.size
                                              - np.arange(s.size) / s.size).max())
    err = b.rank_error()
    assert err == pytest.approx(math.sqrt(math.log(2 / sk.RANK_ERROR_DELTA) / (2 * k)))
    assert gap <= err
    entry = sketch_entries(merged)["x"]
    assert entry["sample"] == k and entry["n"] == finite.size and not entry["exact"]
    assert entry["mean"] == pytest.approx(finite.mean(), rel=1e-12)


def test_categories_past_the_cap_keep_heavy_hitters_within_the_stated_error():
    rng = np.random.default_rng(3)
    n = 50_000
    # a few heavy levels and a long tail of 3,000 rare ones
    heavy = rng.choice(["a", "b", "c", "d"], size=n // 2, p=[0.4, 0.3, 0.2, 0.1])
    tail = rng.integers(0, 3000, size=n - n // 2).astype(str)
    c = np.concatenate([heavy, tail]).astype(object)
    rng.shuffle(c)
    df = pd.DataFrame({"x": np.arange(n, dtype=float), "c": c})
    cap = 200
    merged = sk.merge_all(_partitions(df, [5000, 20_000, 41_000], category_cap=cap))
    cats = merged.columns["c"].cats
    assert not cats.exact and len(cats.counts) <= cap
    truth = df["c"].value_counts().to_dict()
    err = cats.count_error()
    assert err > 0
    for level, true in truth.items():
        est = cats.counts.get(level, 0)
        assert true - err <= est <= true
    assert cats.n == n and cats.other == n - sum(cats.counts.values())
    true_levels = len(truth)
    assert abs(cats.levels() - true_levels) <= 4 * sk.DistinctCount().relative_error() * true_levels
    entry = sketch_entries(merged, max_categories=10)["c"]
    assert entry["n"] == n and entry["levels"] == cats.levels() and entry["count_error"] >= err
    assert set(entry["counts"]) == {"a", "b", "c", "d"} | set(list(entry["counts"])[4:])
    assert entry["other"] == n - sum(entry["counts"].values())


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 3000),
    cuts=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    order=st.permutations(range(4)),
    k=st.sampled_from([50, 500, 5000]),
    cap=st.sampled_from([3, 8, 100]),
    seed=st.integers(0, 10),
)
def test_merge_is_associative_and_commutative(n, cuts, order, k, cap, seed):
    df = _frame(n, seed, levels=12)
    bounds = sorted(int(c * n) for c in cuts)
    parts = _partitions(df, bounds, sample=k, category_cap=cap)
    shuffled = [parts[i] for i in order]
    left = shuffled[0].merge(shuffled[1]).merge(shuffled[2]).merge(shuffled[3])
    tree = sk.merge_all(parts)
    one = _one_pass(df, sample=k, category_cap=cap)
    for got in (left, tree):
        assert got.n_rows == n
        gx, ox = got.columns["x"], one.columns["x"]
        assert (gx.rows, gx.missing, gx.moments.n) == (ox.rows, ox.missing, ox.moments.n)
        if ox.moments.n:
            assert (gx.moments.min, gx.moments.max) == (ox.moments.min, ox.moments.max)
            assert gx.moments.mean == pytest.approx(ox.moments.mean, rel=1e-9)
            assert gx.moments.m2 == pytest.approx(ox.moments.m2, rel=1e-9, abs=1e-9)
        np.testing.assert_array_equal(gx.sample.sorted_values(), ox.sample.sorted_values())
        gc, oc = got.columns["c"].cats, one.columns["c"].cats
        assert gc.n == oc.n and gc.exact == (len(df["c"].dropna().unique()) <= cap)
        if gc.exact:
            assert gc.counts == oc.counts == df["c"].value_counts().to_dict()
        truth = df["c"].value_counts().to_dict()
        for level, true in truth.items():
            assert true - gc.count_error() <= gc.counts.get(level, 0) <= true


def test_moments_merge_with_chan_on_very_different_partitions():
    rng = np.random.default_rng(5)
    a = rng.normal(1e6, 1, size=10)
    b = rng.normal(-3, 1000, size=100_000)
    m = sk.Moments.of(a).merge(sk.Moments.of(b))
    both = np.concatenate([a, b])
    assert m.n == both.size
    assert m.mean == pytest.approx(both.mean(), rel=1e-12)
    assert m.std == pytest.approx(both.std(), rel=1e-10)
    assert sk.Moments().merge(sk.Moments()).n == 0


def test_bad_inputs_are_clear_errors():
    t = sk.TableSketch(KINDS)
    with pytest.raises(sk.SketchError, match="lacks columns"):
        t.add_batch(pa.table({"x": [1.0]}), 0)
    with pytest.raises(sk.SketchError, match="not a kubeloop sketch"):
        sk.loads(b'{"format": "other"}')
    with pytest.raises(sk.SketchError, match="not JSON"):
        sk.loads(b"{")
    with pytest.raises(sk.SketchError, match="different columns"):
        t.merge(sk.TableSketch({"x": "numeric"}))
    with pytest.raises(sk.SketchError, match="different sizes"):
        sk.TableSketch({"x": "numeric"}, sample=10).merge(sk.TableSketch({"x": "numeric"}, sample=20))
    with pytest.raises(sk.SketchError, match="not numbers"):
        sk.TableSketch({"x": "numeric"}).add_batch(pa.table({"x": pa.array([b"\x00"])}), 0)
    with pytest.raises(sk.SketchError, match="no sketches"):
        sk.merge_all([])
