"""The features stage: a fitted transformer that serving runs unchanged."""

from __future__ import annotations

import datetime as dt
import io

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from kubeloop.components.features import (
    FeatureError,
    build_feature_transformer,
    categorical_output_columns,
    feature_summary,
    fit_features,
)
from kubeloop.schema import feature_columns

SCHEMA = {
    "target": "churned",
    "task": "classification",
    "labels": ["no", "yes"],
    "time_column": "signup_at",
    "id_column": "customer_id",
    "columns": {
        "customer_id": {"kind": "numeric", "role": "id"},
        "age": {"kind": "numeric", "role": "feature"},
        "spend": {"kind": "numeric", "role": "feature"},
        "plan": {"kind": "categorical", "role": "feature"},
        "region": {"kind": "categorical", "role": "feature"},
        "is_member": {"kind": "boolean", "role": "feature"},
        "signup_at": {"kind": "datetime", "role": "time"},
        "last_login": {"kind": "datetime", "role": "feature"},
        "notes": {"kind": "text", "role": "ignored"},
        "churned": {"kind": "categorical", "role": "target"},
    },
}


def make_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 50.0, n)
    spend[rng.random(n) < 0.1] = np.nan  # spend has gaps, age has none
    plan = rng.choice(["basic", "plus", "pro"], n).astype(object)
    plan[rng.random(n) < 0.05] = None
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "age": rng.integers(18, 80, n).astype("int64"),
            "spend": spend,
            "plan": plan,
            "region": pd.Categorical(rng.choice(["north", "south", "east", "west"], n)),
            "is_member": pd.array(rng.random(n) < 0.4, dtype="boolean"),
            "signup_at": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 365, n), "D"),
            "last_login": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 90 * 24 * 60, n), "min"),
            "notes": [f"note {i}" for i in range(n)],
        }
    )
    signal = (frame["plan"] == "pro").astype(float) + frame["is_member"].astype(float)
    frame.loc[rng.random(n) < 0.05, "last_login"] = pd.NaT
    frame["churned"] = np.where(signal + rng.normal(0, 0.3, n) > 0.8, "yes", "no")
    return frame


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return make_frame(seed=0)


@pytest.fixture(scope="module")
def fitted(train):
    return fit_features(train, SCHEMA)


def test_output_is_float32_with_names_by_prefix(fitted, train):
    out = fitted.transform(train)
    assert isinstance(out, pd.DataFrame)
    assert set(out.dtypes) == {np.dtype("float32")}
    assert out.index.equals(train.index)
    assert list(out.columns) == [str(c) for c in fitted.get_feature_names_out()]
    by_prefix = {
        p: sorted(c for c in out.columns if c.startswith(p)) for p in ("num__", "cat__", "dt__")
    }
    assert by_prefix["num__"] == ["num__age", "num__missingindicator_spend", "num__spend"]
    assert by_prefix["cat__"] == ["cat__is_member", "cat__plan", "cat__region"]
    assert by_prefix["dt__"] == sorted(
        # Every datetime column, the time column too: only the parts that recur.
        [f"dt__signup_at_{p}" for p in ("month", "day", "dayofweek")]
        + [f"dt__last_login_{p}" for p in ("month", "day", "dayofweek", "hour")]
    )
    assert sum(map(len, by_prefix.values())) == out.shape[1]
    # Text, id and target are not features; numeric missing values are all imputed.
    assert not any(word in c for c in out.columns for word in ("notes", "customer_id", "churned"))
    assert not out.filter(like="num__").isna().any().any()
    assert not out.filter(like="dt__").isna().any().any()


def test_fitted_on_train_only(train):
    test = make_frame(seed=1)
    test.loc[:9, "plan"] = "enterprise"  # a level that exists only outside train
    fitted = fit_features(train, SCHEMA)
    scaler = fitted.named_steps["columns"].named_transformers_["num"].named_steps["scale"]
    assert scaler.mean_[0] == pytest.approx(train["age"].mean())
    assert scaler.mean_[1] == pytest.approx(train["spend"].mean())  # observed values only
    out = fitted.transform(test)
    assert out.loc[:9, "cat__plan"].isna().all()
    expected_age = (test["age"] - train["age"].mean()) / train["age"].std(ddof=0)
    np.testing.assert_allclose(out["num__age"], expected_age, rtol=1e-5, atol=1e-5)


def test_codes_follow_categories_and_unknown_or_missing_is_nan(fitted):
    rows = pd.DataFrame(
        {
            **{c: make_frame(n=5)[c] for c in feature_columns(SCHEMA)},
            "plan": ["basic", "pro", "platinum", None, np.nan],
            "region": ["east", "west", "north", "south", "mars"],
        }
    )
    out = fitted.transform(rows)
    assert out["cat__plan"].tolist()[:2] == [0.0, 2.0]  # sorted: basic, plus, pro
    assert out["cat__plan"].iloc[2:].isna().all()
    assert out["cat__region"].tolist()[:4] == [0.0, 3.0, 1.0, 2.0]
    assert np.isnan(out["cat__region"].iloc[4])


@pytest.mark.parametrize(
    "column,train_values,serve_values",
    [
        # The same level reached through different Python types gets the same code.
        ("plan", [1, 2, 3] * 10, ["1", 2.0, np.int64(3)]),
        ("plan", ["a", 7, 7.0] * 10, ["a", "7", 7]),
        ("is_member", [True, False, True] * 10, ["true", "FALSE", 1]),
        ("is_member", [True, False, None] * 10, ["yes", 0, None]),
    ],
)
def test_mixed_types_in_categorical_columns(column, train_values, serve_values):
    train = make_frame(n=30).assign(**{column: train_values})
    fitted = fit_features(train, SCHEMA)
    serve = make_frame(n=3).assign(**{column: serve_values})
    codes = fitted.transform(serve)[f"cat__{column}"]
    reference = fitted.transform(train.iloc[:3])[f"cat__{column}"]
    np.testing.assert_array_equal(codes.to_numpy(), reference.to_numpy())


def test_missing_indicator_only_for_columns_with_gaps_in_training(train):
    no_gaps = train.assign(spend=train["spend"].fillna(1.0))
    assert (
        "num__missingindicator_spend" not in fit_features(no_gaps, SCHEMA).get_feature_names_out()
    )
    fitted = fit_features(train, SCHEMA)
    out = fitted.transform(train)
    np.testing.assert_array_equal(out["num__missingindicator_spend"], train["spend"].isna())
    # Missing spend is imputed with the training median (on the standardized scale).
    scaled = (train["spend"] - train["spend"].mean()) / train["spend"].std(ddof=0)
    assert out.loc[train["spend"].isna(), "num__spend"].iloc[0] == pytest.approx(
        scaled.median(), abs=1e-5
    )


@pytest.mark.parametrize("drop", [["age"], ["plan", "signup_at"], ["is_member"]])
def test_missing_feature_column_is_named(fitted, train, drop):
    with pytest.raises(FeatureError) as err:
        fitted.transform(train.drop(columns=drop))
    assert f"missing feature column(s) {drop}" in str(err.value)


@pytest.mark.parametrize(
    "column,value,words",
    [
        ("age", "forty", ["'age' must be numeric", "'forty'"]),
        ("spend", np.inf, ["'spend' holds infinite values"]),
        ("last_login", "yesterday-ish", ["'last_login' must hold dates"]),
        ("last_login", 1_700_000_000, ["'last_login' must hold dates", "got numbers"]),
    ],
)
def test_bad_values_are_named_not_guessed(fitted, train, column, value, words):
    bad = train.head(5).astype({column: object})
    if isinstance(value, int):
        bad[column] = value  # the whole column, as a client sending epoch numbers would
    else:
        bad.loc[bad.index[2], column] = value
    with pytest.raises(FeatureError) as err:
        fitted.transform(bad)
    for word in words:
        assert word in str(err.value)


def test_numbers_and_dates_sent_as_strings_are_accepted(fitted, train):
    rows = train.head(5)
    as_text = rows.assign(
        age=rows["age"].astype(str),
        last_login=rows["last_login"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        signup_at=rows["signup_at"].dt.strftime("%Y-%m-%d"),
    )
    pd.testing.assert_frame_equal(fitted.transform(as_text), fitted.transform(rows))


def test_not_a_dataframe_is_refused(fitted, train):
    with pytest.raises(FeatureError, match="pandas DataFrame"):
        fitted.transform(train[feature_columns(SCHEMA)].to_numpy())


def test_extra_columns_are_ignored_and_order_does_not_matter(fitted, train):
    expected = fitted.transform(train)
    with_extra = train.assign(unexpected=1.0, another="x")
    pd.testing.assert_frame_equal(fitted.transform(with_extra), expected)
    shuffled = train[list(np.random.default_rng(3).permutation(train.columns))]
    pd.testing.assert_frame_equal(fitted.transform(shuffled), expected)
    # Serving sends exactly the feature columns.
    pd.testing.assert_frame_equal(fitted.transform(train[feature_columns(SCHEMA)]), expected)


DATES = [
    # timestamp, year, month, day, weekday (Monday = 0), hour
    ("1970-01-01 00:00", 1970, 1, 1, 3, 0),
    ("2000-02-29 23:59", 2000, 2, 29, 1, 23),
    ("2024-12-31 12:30", 2024, 12, 31, 1, 12),
    ("2021-07-04 06:00", 2021, 7, 4, 6, 6),
]


def test_date_parts_are_right_for_known_dates():
    stamps = pd.to_datetime([d[0] for d in DATES])
    schema = {
        "target": "y",
        "task": "regression",
        "time_column": None,
        "columns": {"when": {"kind": "datetime", "role": "feature"}},
    }
    fitted = fit_features(pd.DataFrame({"when": stamps}), schema, absolute_time=True)
    # The parts themselves; the pipeline's output is them standardized.
    step = fitted.named_steps["columns"].named_transformers_["dt"]
    out = step.named_steps["parts"].transform(fitted.named_steps["check"].transform(
        pd.DataFrame({"when": stamps})
    )[["when"]])
    for row, (text, year, month, day, weekday, hour) in zip(
        np.asarray(out).tolist(), DATES, strict=True
    ):
        parsed = dt.datetime.fromisoformat(text)
        epoch_days = (parsed - dt.datetime(1970, 1, 1)).total_seconds() / 86_400
        assert row == pytest.approx(
            (year, month, day, weekday, hour, epoch_days), rel=1e-6, abs=1e-3
        )


def test_time_column_gets_no_absolute_time_and_no_hour_without_time_of_day(fitted):
    names = [str(c) for c in fitted.get_feature_names_out()]
    assert "dt__signup_at_days_since_epoch" not in names and "dt__signup_at_year" not in names
    assert "dt__signup_at_hour" not in names  # signup_at holds dates only
    assert "dt__last_login_hour" in names


def test_absolute_time_of_every_datetime_column_only_when_asked(train, fitted):
    absolute = fit_features(train, SCHEMA, absolute_time=True)
    names = [str(c) for c in absolute.get_feature_names_out()]
    for column in ("signup_at", "last_login"):
        assert {f"dt__{column}_year", f"dt__{column}_days_since_epoch"} <= set(names)
    out = absolute.transform(train)
    # Standardized like a numeric column: days since 1970 keep their order and spread.
    days = (train["signup_at"] - pd.Timestamp("1970-01-01")).dt.days
    assert np.corrcoef(out["dt__signup_at_days_since_epoch"], days)[0, 1] > 0.999
    assert abs(float(out["dt__signup_at_days_since_epoch"].mean())) < 0.01
    # Not asked for: the summary says which columns lost which parts (the time column
    # never had them).
    assert feature_summary(fitted, SCHEMA)["dropped_absolute_parts"] == {
        "last_login": ["year", "days_since_epoch"]
    }
    assert feature_summary(absolute, SCHEMA)["dropped_absolute_parts"] == {}


def test_datetime_parts_reach_the_model_standardized(fitted, train):
    out = fitted.transform(train).filter(like="dt__")
    assert (out.abs().mean() < 1.5).all()
    assert np.allclose(out.mean(), 0.0, atol=0.1)
    # Constant parts (signup_at holds no time of day, so no hour) are not added at all.
    assert not out.isna().any().any()


def raw_date_parts(fitted, out: pd.DataFrame) -> pd.DataFrame:
    """The ``dt__`` output columns before standardization (the parts themselves)."""
    step = fitted.named_steps["columns"].named_transformers_["dt"]
    names = [c for c in out.columns if c.startswith("dt__")]
    raw = step.named_steps["scale"].inverse_transform(out[names].to_numpy(dtype="float64"))
    return pd.DataFrame(np.round(raw, 6), columns=names)


def _time_schema(kind: str = "numeric") -> dict:
    return {
        "target": "y",
        "task": "regression",
        "time_column": "t",
        "columns": {
            "t": {"kind": kind, "role": "time"},
            "x": {"kind": "numeric", "role": "feature"},
            "y": {"kind": "numeric", "role": "target"},
        },
    }


def test_a_numeric_year_time_column_is_not_a_feature_by_default():
    frame = pd.DataFrame({"t": np.arange(1987, 2021), "x": np.arange(34.0), "y": np.arange(34.0)})
    fitted = fit_features(frame, _time_schema())
    assert [str(c) for c in fitted.get_feature_names_out()] == ["num__x"]
    summary = feature_summary(fitted, _time_schema())
    assert summary["time_column"] == {"column": "t", "features": [], "epoch_unit": None}
    assert summary["unused_input_columns"] == ["t"]
    # Asked for, the year is a plain number.
    absolute = fit_features(frame, _time_schema(), absolute_time=True)
    assert "num__t" in [str(c) for c in absolute.get_feature_names_out()]


@pytest.mark.parametrize("unit,scale", [("s", 1), ("ms", 1000)])
def test_an_epoch_time_column_gives_its_recurring_parts(unit, scale):
    stamps = pd.to_datetime(["2024-02-29 13:00", "2023-07-04 06:30", "2021-01-01 00:00"])
    epoch = (stamps.astype("int64") // 10**9 * scale).to_numpy()
    frame = pd.DataFrame({"t": epoch, "x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]})
    fitted = fit_features(frame, _time_schema())
    names = [str(c) for c in fitted.get_feature_names_out()]
    assert names == ["num__x"] + [f"dt__t_{p}" for p in ("month", "day", "dayofweek", "hour")]
    out = fitted.transform(frame)
    parts = raw_date_parts(fitted, out)
    assert parts["dt__t_month"].tolist() == [2, 7, 1] and parts["dt__t_hour"].tolist() == [13, 6, 0]
    assert feature_summary(fitted, _time_schema())["time_column"]["epoch_unit"] == unit
    # Serving sends the same numbers, also as text.
    again = fitted.transform(frame.assign(t=[str(v) for v in epoch]))
    pd.testing.assert_frame_equal(again, out)


@pytest.mark.parametrize(
    "values,unit",
    [
        ([1987, 2020, 2001], "year"),
        ([1.6e9, 1.7e9], "s"),
        ([1.6e12, 1.7e12], "ms"),
        ([1.6e15], "us"),
        ([1.6e18], "ns"),
        ([1, 2, 3], None),
        ([1987.5, 2020.0], None),
        ([], None),
    ],
)
def test_numeric_time_unit(values, unit):
    from kubeloop.components.features import numeric_time_unit

    assert numeric_time_unit(pd.Series(values, dtype="float64")) == unit


def _with_row_number(name: str, start: int, n: int = 200, order=None) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(0)
    rows = np.arange(start, start + n)
    frame = pd.DataFrame({name: rows if order is None else rows[order], "x": rng.normal(size=n)})
    frame["y"] = frame["x"] + rng.normal(size=n)
    profile = {"min": start, "max": start + n - 1, "n_unique": n}
    schema = {
        "target": "y",
        "task": "regression",
        "time_column": None,
        "n_rows": n,
        "columns": {
            name: {"kind": "numeric", "role": "feature", **profile},
            "x": {"kind": "numeric", "role": "feature"},
            "y": {"kind": "numeric", "role": "target"},
        },
    }
    return frame, schema


@pytest.mark.parametrize(
    "name,start", [("Unnamed: 0", 0), ("", 1), ("index", 0), ("row_id", 1), ("...1", 1)]
)
def test_a_row_number_is_never_a_feature(name, start):
    frame, schema = _with_row_number(name, start)
    fitted = fit_features(frame, schema)
    assert [str(c) for c in fitted.get_feature_names_out()] == ["num__x"]
    assert feature_summary(fitted, schema)["row_number_columns"] == [name]
    # Not asked for at serving either.
    assert fitted.transform(frame.drop(columns=[name])).shape == (200, 1)
    # Shuffled, without the schema's profile: the unnamed one is still a row number.
    order = np.random.default_rng(1).permutation(200)
    shuffled, bare = _with_row_number(name, start, order=order)
    del bare["n_rows"]
    names = [str(c) for c in fit_features(shuffled, bare).get_feature_names_out()]
    assert (names == ["num__x"]) == (name in ("Unnamed: 0", ""))


@pytest.mark.parametrize("name,start", [("age", 0), ("index", 5)])
def test_a_counting_column_with_a_real_name_or_other_values_stays_a_feature(name, start):
    frame, schema = _with_row_number(name, start)
    names = [str(c) for c in fit_features(frame, schema).get_feature_names_out()]
    assert f"num__{name}" in names


def test_a_transformer_pickled_before_the_time_settings_still_transforms(fitted, train):
    buf = io.BytesIO()
    joblib.dump(fitted, buf)
    old = joblib.load(io.BytesIO(buf.getvalue()))
    del old.named_steps["check"].epoch_units
    parts = old.named_steps["columns"].named_transformers_["dt"].named_steps["parts"]
    del parts.recurring_only
    # Without the attribute every datetime column has its year, as before: the output
    # grows by one column the old fitted imputer does not know, so compare the parts only.
    assert parts._parts("signup_at")[0] == "year"
    assert old.named_steps["check"].transform(train).shape == (
        len(train),
        len(old.named_steps["check"].columns),
    )


def test_rare_levels_pool_into_one_infrequent_code():
    rng = np.random.default_rng(5)
    levels = [f"L{i:03d}" for i in range(100)]
    weights = np.linspace(1, 50, 100)
    frame = make_frame(n=3_000).assign(plan=rng.choice(levels, 3_000, p=weights / weights.sum()))
    fitted = fit_features(frame, SCHEMA, max_categories=10)
    codes = fitted.transform(frame)["cat__plan"]
    assert set(codes.dropna().unique()) == set(range(10))
    summary = feature_summary(fitted, SCHEMA)
    assert len(summary["categories"]["plan"]) == 9
    assert len(summary["infrequent_categories"]["plan"]) == 91
    most_common = frame["plan"].value_counts().index[:9]
    assert set(summary["categories"]["plan"]) == set(most_common)


def test_feature_summary_describes_the_fitted_transformer(fitted, train):
    summary = feature_summary(fitted, SCHEMA)
    out = fitted.transform(train)
    assert summary["input_columns"] == feature_columns(SCHEMA)
    assert summary["n_output_columns"] == out.shape[1]
    assert summary["output_columns"]["categorical"] == categorical_output_columns(out.columns)
    assert summary["missing_indicators"] == ["spend"]
    assert summary["categories"]["plan"] == sorted(train["plan"].dropna().unique())
    assert summary["categories"]["is_member"] == ["False", "True"]
    assert summary["unused_input_columns"] == []


@pytest.mark.parametrize(
    "columns,expected",
    [
        (["num__a", "cat__b", "dt__c_year", "cat__d"], ["cat__b", "cat__d"]),
        (pd.Index(["num__cat__x", "cat__y"]), ["cat__y"]),
        ([], []),
    ],
)
def test_categorical_output_columns(columns, expected):
    assert categorical_output_columns(columns) == expected


def test_schema_without_usable_features_is_refused():
    schema = {
        "target": "y",
        "task": "regression",
        "time_column": None,
        "columns": {
            "notes": {"kind": "text", "role": "ignored"},
            "y": {"kind": "numeric", "role": "target"},
        },
    }
    with pytest.raises(FeatureError, match="no usable feature columns"):
        build_feature_transformer(schema)


def test_joblib_round_trip_gives_identical_output(fitted, train):
    buffer = io.BytesIO()
    joblib.dump(fitted, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    pd.testing.assert_frame_equal(loaded.transform(train), fitted.transform(train))


def test_full_pipeline_with_native_categoricals_fits_and_predicts_on_raw_frames(train):
    test = make_frame(n=300, seed=2)
    test["region"] = test["region"].astype(object)
    test.loc[:4, "region"] = "unheard-of"
    cat_columns = categorical_output_columns(fit_features(train, SCHEMA).get_feature_names_out())
    model = Pipeline(
        [
            ("features", build_feature_transformer(SCHEMA)),
            (
                "model",
                HistGradientBoostingClassifier(categorical_features=cat_columns, random_state=0),
            ),
        ]
    )
    model.fit(train.drop(columns="churned"), train["churned"])
    predicted = model.predict(test.drop(columns="churned"))
    assert set(predicted) <= {"no", "yes"}
    majority = (test["churned"] == train["churned"].mode()[0]).mean()
    assert (predicted == test["churned"]).mean() > majority + 0.05
    assert model.predict_proba(test.head(1)[feature_columns(SCHEMA)]).shape == (1, 2)
