"""The seeded sample-data generators: determinism, shape, realism and learnable signal."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import r2_score, roc_auc_score
from threadpoolctl import threadpool_limits

from kubeloop.datagen import make, make_churn, make_house_prices, make_wide, write_sample


@pytest.fixture(autouse=True)
def _one_thread():
    # The models here fit in a fraction of a second on one thread; OpenMP threads
    # spinning on a busy shared machine can make the same fit take half a minute.
    with threadpool_limits(limits=1):
        yield


GENERATORS = [
    ("churn", lambda seed: make_churn(800, seed)),
    ("churn-drift", lambda seed: make_churn(800, seed, drift=0.7)),
    ("house_prices", lambda seed: make_house_prices(800, seed)),
    ("wide", lambda seed: make_wide(800, seed=seed)),
]


@pytest.mark.parametrize("make_df", [g for _, g in GENERATORS], ids=[i for i, _ in GENERATORS])
def test_same_seed_same_data_other_seed_other_data(make_df):
    first, again, other = make_df(3), make_df(3), make_df(4)
    pd.testing.assert_frame_equal(first, again)
    assert list(other.columns) == list(first.columns)
    numeric = first.select_dtypes("number").columns
    assert not np.allclose(first[numeric].fillna(0), other[numeric].fillna(0))


def _churn_xy(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    y = (df["churned"] == "yes").to_numpy()
    return df.drop(columns=["churned", "customer_id", "signup_date"]), y


def test_churn_columns_and_types():
    df = make_churn(2000, seed=1)
    assert df["customer_id"].is_unique
    assert df["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert df["signup_date"].dtype == "datetime64[ns]"
    span = df["signup_date"].max() - df["signup_date"].min()
    assert pd.Timedelta(days=500) < span < pd.Timedelta(days=550)
    assert df["signup_date"].min() >= pd.Timestamp("2024-01-01")
    assert set(df["plan"].dropna()) == {"basic", "standard", "premium"}
    assert set(df["contract"].dropna()) == {"monthly", "annual", "two-year"}
    assert 6 <= df["region"].nunique() <= 8
    assert set(df["churned"]) == {"yes", "no"}
    assert set(df["paperless_billing"]) == {"Yes", "No"}
    for col in ("tenure_months", "monthly_charges", "total_charges", "support_calls", "age"):
        assert pd.api.types.is_numeric_dtype(df[col]), col
    # Category columns carry sorted categories, as ingest gives them.
    for col in df.select_dtypes("category"):
        cats = list(df[col].cat.categories)
        assert cats == sorted(cats), col


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_churn_class_balance(seed):
    rate = (make_churn(5000, seed)["churned"] == "yes").mean()
    assert 0.15 <= rate <= 0.25


@pytest.mark.parametrize(
    "column, low, high",
    [
        ("age", 0.02, 0.04),  # at random
        ("region", 0.005, 0.02),  # at random
        ("payment_method", 0.01, 0.03),  # at random
        ("total_charges", 0.01, 0.05),  # brand-new customers have no bill yet
        ("data_usage_gb", 0.03, 0.07),  # more often on mobile
        ("last_login_days", 0.02, 0.06),  # more often for inactive accounts
        ("plan", 0.0, 0.0),
    ],
)
def test_churn_missing_rates(column, low, high):
    rate = make_churn(20_000, seed=5)[column].isna().mean()
    assert low <= rate <= high


def test_churn_missingness_depends_on_other_columns():
    df = make_churn(20_000, seed=6)
    assert df.loc[df["tenure_months"] == 0, "total_charges"].isna().all()
    assert df.loc[df["tenure_months"] > 0, "total_charges"].notna().all()
    mobile = df["device"] == "mobile"
    assert (
        df.loc[mobile, "data_usage_gb"].isna().mean()
        > 2 * df.loc[~mobile, "data_usage_gb"].isna().mean()
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_churn_signal_is_learnable_but_not_perfect(seed):
    X, y = _churn_xy(make_churn(5000, seed))
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    model.fit(X[:3500], y[:3500])
    auc = roc_auc_score(y[3500:], model.predict_proba(X[3500:])[:, 1])
    assert 0.80 <= auc <= 0.90


def test_churn_drift_moves_features_and_relation():
    base, drifted = make_churn(20_000, seed=7), make_churn(20_000, seed=8, drift=1.0)
    assert drifted["monthly_charges"].mean() > base["monthly_charges"].mean() + 5
    assert (drifted["device"] == "mobile").mean() > (base["device"] == "mobile").mean() + 0.1
    assert drifted["support_calls"].mean() > 1.2 * base["support_calls"].mean()
    # A model fitted before the drift underestimates churn after it.
    X, y = _churn_xy(base)
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    model.fit(X, y)
    Xd, yd = _churn_xy(drifted)
    assert yd.mean() - model.predict_proba(Xd)[:, 1].mean() > 0.05
    assert abs(y.mean() - model.predict_proba(X)[:, 1].mean()) < 0.02


def test_churn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_rows"):
        make_churn(0)
    with pytest.raises(ValueError, match="drift"):
        make_churn(10, drift=-0.5)


def test_house_prices_regression_signal():
    df = make_house_prices(5000, seed=2)
    assert df["listed_at"].dtype == "datetime64[ns]"
    assert df["listing_id"].is_unique
    assert (df["price"] > 0).all()
    assert df[["year_built", "lot_size", "condition", "neighborhood"]].isna().any().all()
    assert df["price"].notna().all()
    y = np.log(df["price"])
    X = df.drop(columns=["price", "listing_id", "listed_at"])
    model = HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0)
    model.fit(X[:3500], y[:3500])
    r2 = r2_score(y[3500:], model.predict(X[3500:]))
    assert 0.8 < r2 < 0.99


@pytest.mark.parametrize(
    "n_columns, n_numeric, n_categorical", [(2, 1, 0), (5, 3, 1), (20, 14, 5), (40, 29, 10)]
)
def test_wide_shape(n_columns, n_numeric, n_categorical):
    df = make_wide(1000, n_columns, seed=1)
    assert df.shape == (1000, n_columns)
    assert list(df.columns)[-1] == "label"
    features = df.drop(columns="label")
    assert len(features.select_dtypes("number").columns) == n_numeric
    assert len(features.select_dtypes("category").columns) == n_categorical
    assert set(df["label"].unique()) == {0, 1}
    assert df["label"].dtype == np.int64


def test_wide_default_benchmark_layout():
    df = make_wide(5000)
    assert df.shape == (5000, 20)
    assert 0.1 < df["label"].mean() < 0.5
    assert df.isna().to_numpy().any()
    assert len(df.select_dtypes("integer").columns) == 3  # two counts and the label


def test_wide_rejects_too_few_columns():
    with pytest.raises(ValueError, match="n_columns"):
        make_wide(10, 1)


@pytest.mark.parametrize(
    "name, magic",
    [
        ("s.parquet", b"PAR1"),
        ("s.pq", b"PAR1"),
        ("s.csv.gz", b"\x1f\x8b"),
        ("s.csv", b"customer_id,"),
        ("s.tsv", b"customer_id\t"),
    ],
)
def test_write_sample_format_follows_extension(tmp_path, name, magic):
    path = write_sample(tmp_path / "sub" / name, "churn", n_rows=50, seed=3)
    head = path.read_bytes()[:16]
    assert head.replace(b'"', b"").startswith(magic)
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).replace(b'"', b"").startswith(b"customer_id,")


def test_write_sample_rejects_unknown_extension_and_kind(tmp_path):
    with pytest.raises(ValueError, match=r"\.xlsx"):
        write_sample(tmp_path / "s.xlsx")
    with pytest.raises(ValueError, match="unknown sample kind"):
        make("weather")


def test_scale_batches_keep_one_truth_across_batches_and_are_reproducible():
    from kubeloop.datagen import scale_batches

    batches = list(scale_batches(25_000, seed=5, batch_rows=10_000))
    assert [len(f) for f, _ in batches] == [10_000, 10_000, 5_000]
    again = list(scale_batches(25_000, seed=5, batch_rows=10_000))
    for (f, p), (g, q) in zip(batches, again, strict=True):
        pd.testing.assert_frame_equal(f, g)
        np.testing.assert_array_equal(p, q)
    first = batches[0][0]
    assert first.shape[1] == 20 and str(first["event_time"].dtype) == "datetime64[ns]"
    assert first.select_dtypes("number").shape[1] == 14  # 13 features and the label
    assert all(f.dtypes.equals(first.dtypes) for f, _ in batches)  # one Parquet schema
    # Every batch has the same categories (codes mean the same in every row group).
    for col in first.select_dtypes("category"):
        assert all(list(f[col].cat.categories) == list(first[col].cat.categories) for f, _ in batches)
    # Rows differ between batches, but the truth does not: a model of the first batch's
    # true probability ranks the last batch's labels as well as the last batch's own.
    assert not np.allclose(batches[0][0]["num_02"].to_numpy()[:5000], batches[2][0]["num_02"].to_numpy())
    frame, p_true = batches[2]
    best = roc_auc_score(frame["label"], p_true)
    assert 0.7 < best < 0.9
    fitted = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(
        pd.get_dummies(batches[0][0].drop(columns=["label", "event_time"]), dtype=float), batches[0][0]["label"])
    learned = roc_auc_score(frame["label"], fitted.predict_proba(
        pd.get_dummies(frame.drop(columns=["label", "event_time"]), dtype=float))[:, 1])
    assert best - 0.06 < learned <= best + 0.01
    with pytest.raises(ValueError, match="batch_rows"):
        next(scale_batches(10, batch_rows=0))
