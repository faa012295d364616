"""Validate stage: schema inference, data checks against tables of bad datasets, reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kubeloop.components.validate import (
    BLOCKING,
    WARNING,
    Anomaly,
    ValidationFailed,
    check_dataset,
    infer_schema,
    infer_task,
    is_blocking,
    report_json,
    report_markdown,
    validate,
)
from kubeloop.config import ValidationConfig
from kubeloop.schema import categorical_features, feature_columns, is_binary

CFG = ValidationConfig()
TARGET = "churned"
KW = {"target": TARGET, "time_column": "signup_at", "id_column": "customer_id"}


def base(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A clean customer table with every kind of column the ingest stage produces."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"c{seed}-{i:05d}" for i in range(n)],
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50_000, 10_000, n).round(2),
            "plan": pd.Categorical(rng.choice(["basic", "pro", "team"], n)),
            "region": rng.choice(["n", "s", "e", "w"], n).astype(object),
            "active": pd.array(rng.random(n) < 0.5, dtype="boolean"),
            "signup_at": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 24 * 60, n), unit="min"),
            TARGET: np.where(rng.random(n) < 0.3, "yes", "no"),
        }
    )


def ref_of(df: pd.DataFrame, **kw) -> dict:
    args = {**KW, **kw}
    return infer_schema(df, cfg=CFG, **args)


# --- mutations used by the table ------------------------------------------------------


def setcol(col, fn):
    def mutate(df):
        df = df.copy()
        df[col] = fn(df)
        return df

    return mutate


def set_rows(col, rows, value):
    def mutate(df):
        df = df.copy()
        if isinstance(df[col].dtype, pd.CategoricalDtype) or df[col].dtype == bool:
            df[col] = df[col].astype(object)
        df.loc[df.index[rows], col] = value
        return df

    return mutate


def with_extra_class(label, k):
    return set_rows(TARGET, slice(0, k), label)


def unparseable_times(df):
    df = df.copy()
    s = df["signup_at"].dt.strftime("%Y-%m-%d %H:%M:%S").astype(object)
    s.iloc[:3] = "not a date"
    df["signup_at"] = s
    return df


def duplicate_first(k):
    return lambda df: pd.concat([df, df.iloc[:k]], ignore_index=True)


def add_const(col, value):
    return setcol(col, lambda df: value)


def same(df):
    return df


# id, mutate(current), reference (None: first run; else mutate(base) it is inferred from),
# extra keyword args, expected code, column, severity
CASES = [
    ("no-target-column", lambda d: d.drop(columns=TARGET), None, {}, "target_column_missing", TARGET, BLOCKING),
    ("no-rows", lambda d: d.iloc[:0], None, {}, "empty_dataset", None, BLOCKING),
    ("too-few-rows", lambda d: d.head(20), None, {}, "too_few_rows", None, BLOCKING),
    ("no-time-column", same, None, {"time_column": "signed_up"}, "time_column_missing", "signed_up", BLOCKING),
    ("no-id-column", same, None, {"id_column": "cust"}, "id_column_missing", "cust", BLOCKING),
    ("time-not-dates", unparseable_times, None, {}, "time_column_unparseable", "signup_at", BLOCKING),
    # Numbers that are neither a year nor an epoch (those are accepted as times).
    ("time-numeric", setcol("signup_at", lambda d: (d["signup_at"].astype("int64") // 10**9) % 997 + 0.5), None, {},
     "time_column_unparseable", "signup_at", BLOCKING),
    ("time-missing-values", set_rows("signup_at", slice(0, 4), pd.NaT), None, {}, "time_values_missing", "signup_at", BLOCKING),
    ("time-constant", add_const("signup_at", pd.Timestamp("2024-05-01")), None, {}, "constant_column", "signup_at", BLOCKING),
    ("id-constant", add_const("customer_id", "c1"), None, {}, "constant_column", "customer_id", BLOCKING),
    ("target-nan", set_rows(TARGET, slice(0, 3), None), None, {}, "target_values_missing", TARGET, BLOCKING),
    ("target-nan-tolerated", set_rows(TARGET, slice(0, 3), None), None,
     {"cfg": ValidationConfig(max_target_missing_fraction=0.05)}, "target_values_missing", TARGET, WARNING),
    ("single-class", add_const(TARGET, "no"), None, {}, "single_class", TARGET, BLOCKING),
    ("rare-class", with_extra_class("maybe", 1), None, {}, "rare_class", TARGET, BLOCKING),
    ("unseen-label", with_extra_class("maybe", 3), same, {}, "unseen_label", TARGET, BLOCKING),
    ("label-absent", same, with_extra_class("maybe", 3), {}, "label_absent", TARGET, WARNING),
    ("unknown-positive-label", same, None, {"positive_label": "si"}, "unknown_positive_label", TARGET, BLOCKING),
    ("positive-label-changed", same, same, {"positive_label": "no"}, "positive_label_changed", TARGET, BLOCKING),
    ("target-changed", lambda d: d.rename(columns={TARGET: "left"}), same, {"target": "left"}, "target_changed", "left", BLOCKING),
    ("task-changed", same, same, {"task": "regression"}, "task_changed", TARGET, BLOCKING),
    ("regression-text-target", same, None, {"task": "regression"}, "target_not_numeric", TARGET, BLOCKING),
    ("regression-infinite-target", set_rows("income", [0, 5], np.inf), None, {"target": "income", "task": "regression"},
     "target_infinite", "income", BLOCKING),
    ("regression-constant-target", add_const("income", 5.0), None, {"target": "income", "task": "regression"},
     "target_constant", "income", BLOCKING),
    ("all-null-column", add_const("region", None), None, {}, "all_null_column", "region", BLOCKING),
    ("constant-first-run", add_const("region", "n"), None, {}, "constant_column", "region", WARNING),
    ("constant-broken-feed", add_const("region", "n"), same, {}, "constant_column", "region", BLOCKING),
    ("infinite-feature", set_rows("income", [3, 7], -np.inf), None, {}, "infinite_values", "income", BLOCKING),
    ("missing-feature", lambda d: d.drop(columns="plan"), same, {}, "missing_column", "plan", BLOCKING),
    ("missing-ignored-column", same, add_const("source", "web"), {}, "missing_column", "source", WARNING),
    ("extra-column", add_const("coupon", 1.5), same, {}, "extra_column", "coupon", BLOCKING),
    ("extra-column-allowed", add_const("coupon", 1.5), same, {"cfg": ValidationConfig(allow_extra_columns=True)},
     "extra_column", "coupon", WARNING),
    ("numeric-became-text", setcol("age", lambda d: np.where(d["age"] > 50, "old", "young")), same, {},
     "kind_changed", "age", BLOCKING),
    ("boolean-became-numeric", setcol("active", lambda d: d["active"].astype(int)), same, {},
     "kind_changed", "active", BLOCKING),
    ("unseen-categories", set_rows("region", slice(0, 30), "north-east"), same, {}, "unseen_categories", "region", BLOCKING),
    ("unseen-categories-few", set_rows("region", slice(0, 2), "north-east"), same, {}, "unseen_categories", "region", WARNING),
    ("unseen-category-in-categorical-dtype", set_rows("plan", slice(0, 30), "enterprise"), same, {},
     "unseen_categories", "plan", BLOCKING),
    ("missing-rate-up", set_rows("income", slice(0, 90), np.nan), same, {}, "missing_rate_increase", "income", WARNING),
    ("out-of-range", setcol("age", lambda d: d["age"] + np.where(np.arange(len(d)) < 30, 200, 0)), same, {},
     "out_of_range", "age", WARNING),
    ("many-duplicates", duplicate_first(30), None, {}, "duplicate_rows", None, BLOCKING),
    ("few-duplicates", duplicate_first(3), None, {}, "duplicate_rows", None, WARNING),
    ("leaky-feature", setcol("churn_flag", lambda d: (d[TARGET] == "yes").astype(int)), None, {}, "leakage", "churn_flag", BLOCKING),
    ("target-name-twin", setcol("Churned ", lambda d: np.arange(len(d)) % 3), None, {}, "target_name_twin", "Churned ", WARNING),
    ("duplicate-column-names", lambda d: pd.concat([d, d[["age"]]], axis=1), None, {}, "bad_column_names", None, BLOCKING),
    ("non-text-column-name", setcol(0, lambda d: 1.0), None, {}, "bad_column_names", None, BLOCKING),
]


# Other anomalies a case legitimately raises besides the one it is about; anything else
# is a false alarm.
ALSO = {
    "target-changed": {"missing_column"},  # the old target column is gone too
    "task-changed": {"target_not_numeric"},
    "extra-column": {"constant_column"},
    "extra-column-allowed": {"constant_column"},
}


def run_case(mutate, reference_from, kwargs):
    args = {**KW, "cfg": CFG, **kwargs}
    reference = None
    if reference_from is not None:
        reference = ref_of(reference_from(base()))
    return validate(mutate(base()), reference=reference, **args)


@pytest.mark.parametrize(
    "case,mutate,reference_from,kwargs,code,column,severity", CASES, ids=[c[0] for c in CASES]
)
def test_bad_dataset_table(case, mutate, reference_from, kwargs, code, column, severity):
    result = run_case(mutate, reference_from, kwargs)
    hits = [a for a in result.anomalies if a.code == code and a.column == column]
    assert hits, f"expected {code} on {column}, got {[(a.code, a.column) for a in result.anomalies]}"
    others = {a.code for a in result.anomalies if a not in hits}
    assert others <= ALSO.get(case, set()), f"unexpected anomalies: {others}"
    assert {a.severity for a in hits} == {severity}
    assert result.blocking == any(a.blocking for a in result.anomalies)
    for a in hits:
        if column is not None:
            assert repr(column) in a.message  # the message names the column
        json.dumps(a.to_dict(), allow_nan=False)


def test_table_covers_every_code():
    from kubeloop.components import validate as mod

    codes = {v for k, v in vars(mod).items() if k.isupper() and isinstance(v, str) and v.islower() and "_" in v}
    codes -= {BLOCKING, WARNING}
    # Added by validate_step from ingest's profile, not by validate(): tested below.
    codes -= {mod.ROW_NUMBER_DROPPED, mod.ABSOLUTE_TIME_DROPPED}
    assert codes <= {c[4] for c in CASES}


@pytest.mark.parametrize("mutate,reference_from", [(same, None), (same, same)], ids=["first-run", "vs-itself"])
def test_clean_dataset_has_no_anomaly(mutate, reference_from):
    result = run_case(mutate, reference_from, {})
    assert result.anomalies == []
    assert not result.blocking
    result.raise_if_blocking()  # does not raise


def test_fresh_sample_of_same_data_passes_reference_checks():
    reference = json.loads(json.dumps(ref_of(base(seed=0))))  # as stored with the model
    result = validate(base(n=500, seed=1), reference=reference, cfg=CFG, **KW)
    assert not is_blocking(result.anomalies), result.anomalies


def test_labels_compare_by_value_across_dtypes():
    # The stored schema has int labels; today one missing target made the column float.
    df = pd.DataFrame({"y": [0, 1] * 150, "x": np.random.default_rng(2).normal(size=300)})
    reference = json.loads(json.dumps(infer_schema(df, target="y", cfg=CFG)))
    assert reference["labels"] == [0, 1]
    today = df.astype({"y": "float64"})
    today.loc[3, "y"] = 2.0
    cfg = ValidationConfig(min_rows_per_class=1)
    found = check_dataset(today, target="y", task=None, cfg=cfg, reference=reference)
    assert [(a.code, a.details.get("unseen")) for a in found] == [("unseen_label", [2.0])]


def test_regression_clean_dataset_has_no_anomaly():
    result = validate(base(), cfg=CFG, target="income", task=None, time_column="signup_at", id_column="customer_id")
    assert result.task == "regression"
    assert result.anomalies == []
    assert result.schema["labels"] is None and result.schema["positive_label"] is None


def test_check_dataset_equals_validate_anomalies():
    df = set_rows("region", slice(0, 2), "north-east")(base())
    reference = ref_of(base())
    direct = check_dataset(df, task=None, cfg=CFG, reference=reference, **KW)
    assert direct == validate(df, cfg=CFG, reference=reference, **KW).anomalies
    assert [a.code for a in direct] == ["unseen_categories"]
    assert direct[0].details["unseen"] == ["north-east"]
    assert direct[0].details["fraction"] == pytest.approx(2 / 300)


def test_unusable_frame_gives_no_schema():
    result = validate(base().drop(columns=TARGET), cfg=CFG, **KW)
    assert result.schema is None and result.blocking


def test_malformed_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="'columns' mapping"):
        validate(base(), cfg=CFG, reference={"target": TARGET}, **KW)


def test_not_a_dataframe_is_a_clear_error():
    with pytest.raises(TypeError, match="pandas DataFrame, got list"):
        check_dataset([[1, 2]], target="a", task=None, cfg=CFG)


def test_reference_positive_label_survives_a_class_balance_flip():
    reference = ref_of(base())
    assert reference["positive_label"] == "yes"  # the minority there
    flipped = base()
    flipped[TARGET] = np.where(flipped[TARGET] == "yes", "no", "yes")  # "yes" is now the majority
    result = validate(flipped, cfg=CFG, reference=reference, **KW)
    assert result.schema["positive_label"] == "yes"
    assert not result.blocking


# --- leakage ---------------------------------------------------------------------------


def _leak_frame(kind: str, n: int = 2000) -> tuple[pd.DataFrame, str, str]:
    rng = np.random.default_rng(7)
    noise = rng.normal(size=n)
    if kind.startswith("cls"):
        y = np.where(rng.random(n) < 0.3, "yes", "no")
        flip = rng.random(n) < 0.1
        columns = {
            "cls-copy": y.copy(),
            "cls-mapped-strings": np.where(y == "yes", "Y", "N"),
            "cls-numeric-codes": (y == "yes").astype(int),
            # Filled only for churners (a cancellation reason): missing is a value of its own.
            "cls-filled-only-for-positives": np.where(
                y == "yes", rng.choice(["price", "moved", "service"], n), None
            ),
            "cls-honest-90pct": np.where(flip, np.where(y == "yes", "no", "yes"), y),
            "cls-honest-numeric": (y == "yes") * 1.3 + noise * 0.5,
        }
        return pd.DataFrame({"y": y, "x": columns[kind], "other": noise}), "y", "classification"
    y = rng.normal(size=n) * 10
    columns = {
        "reg-linear": y * 2 + 1,
        "reg-monotone": np.exp(y / 10),
        "reg-honest-r2-0.9": y + noise * 10 / 3,
    }
    return pd.DataFrame({"y": y, "x": columns[kind], "other": rng.normal(size=n)}), "y", "regression"


@pytest.mark.parametrize(
    "kind,leaks",
    [
        ("cls-copy", True),
        ("cls-mapped-strings", True),
        ("cls-numeric-codes", True),
        ("cls-filled-only-for-positives", True),
        ("reg-linear", True),
        ("reg-monotone", True),
        ("cls-honest-90pct", False),
        ("cls-honest-numeric", False),
        ("reg-honest-r2-0.9", False),
    ],
)
def test_leakage(kind, leaks):
    df, target, task = _leak_frame(kind)
    found = [a for a in check_dataset(df, target=target, task=task, cfg=CFG) if a.code == "leakage"]
    assert [a.column for a in found] == (["x"] if leaks else [])
    if leaks:
        assert found[0].severity == BLOCKING
        assert found[0].details["score"] >= CFG.leakage_threshold
        assert "'x'" in found[0].message and "drop it" in found[0].message


def test_leakage_samples_large_frames_and_skips_id_and_time():
    n = 60_000
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {
            "y": y,
            "copy": y * 10.0,
            "key": y.astype(str),  # the id column: a copy, but never a feature
            "noise": rng.normal(size=n),
        }
    )
    found = [a for a in check_dataset(df, target="y", task="classification", cfg=CFG, id_column="key") if a.code == "leakage"]
    assert [a.column for a in found] == ["copy"]


# --- infer_task ------------------------------------------------------------------------

rng0 = np.random.default_rng(0)


@pytest.mark.parametrize(
    "y,expected",
    [
        (pd.Series(["a", "b", "a"] * 20), "classification"),
        (pd.Series([True, False] * 30), "classification"),
        (pd.Series(pd.array([True, None, False] * 20, dtype="boolean")), "classification"),
        (pd.Series([True, None, False] * 20, dtype=object), "classification"),
        (pd.Series(pd.Categorical(["x", "y", "z"] * 20)), "classification"),
        (pd.Series([0, 1] * 15), "classification"),  # two values are classes even in 30 rows
        (pd.Series(rng0.integers(0, 5, 1000)), "classification"),
        (pd.Series([0.0, 1.0, np.nan] * 100), "classification"),  # whole floats (NaN made them float)
        (pd.Series(np.arange(10).repeat(10)), "regression"),  # 10 values > 5 % of 100 rows
        (pd.Series(rng0.integers(0, 25, 10_000)), "regression"),  # more than 20 values
        (pd.Series(rng0.normal(size=500)), "regression"),
        (pd.Series([0.5, 1.0] * 50), "regression"),
    ],
)
def test_infer_task(y, expected):
    assert infer_task(y) == expected


def test_infer_task_without_values_is_a_clear_error():
    with pytest.raises(ValueError, match="no finite values"):
        infer_task(pd.Series([np.nan, np.nan], name="price"))


# --- infer_schema ----------------------------------------------------------------------


def mixed_frame(n: int = 300) -> pd.DataFrame:
    df = base(n)
    rng = np.random.default_rng(5)
    df["comment"] = [f"free text number {i}" for i in range(n)]
    df["source"] = "web"
    df["empty"] = np.nan
    df["paid"] = pd.Series(rng.random(n) < 0.5, dtype=object).where(rng.random(n) > 0.1, None)
    df["tier"] = pd.Series(rng.choice(["a", "b"], n), dtype="string")
    df["visits"] = pd.array(rng.integers(0, 9, n), dtype="Int64")
    df["size"] = pd.Categorical(rng.choice([1, 2, 3], n))
    df["tenure"] = pd.to_timedelta(rng.integers(0, 100, n), unit="D")
    df["signup_at"] = df["signup_at"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return df


@pytest.mark.parametrize(
    "column,kind,role,reason",
    [
        ("customer_id", "text", "id", None),
        ("age", "numeric", "feature", None),
        ("plan", "categorical", "feature", None),
        ("active", "boolean", "feature", None),
        ("signup_at", "datetime", "time", None),  # ISO strings still parse
        (TARGET, "categorical", "target", None),
        ("comment", "text", "ignored", "free text or identifier"),
        ("source", "categorical", "ignored", "constant"),
        ("empty", "numeric", "ignored", "all values missing"),
        ("paid", "boolean", "feature", None),  # object bools with missing values
        ("tier", "categorical", "feature", None),
        ("visits", "numeric", "feature", None),
        ("size", "categorical", "feature", None),
        ("tenure", "text", "ignored", "unsupported dtype timedelta64[ns]"),
    ],
)
def test_schema_kinds_and_roles(column, kind, role, reason):
    schema = infer_schema(mixed_frame(), cfg=CFG, **KW)
    col = schema["columns"][column]
    assert (col["kind"], col["role"], col.get("reason")) == (kind, role, reason)


def test_schema_contents():
    df = mixed_frame()
    schema = infer_schema(df, cfg=CFG, **KW)
    json.dumps(schema, allow_nan=False)  # strict JSON
    assert list(schema["columns"]) == list(df.columns)
    assert schema["task"] == "classification" and schema["n_rows"] == 300
    assert schema["labels"] == ["no", "yes"] and is_binary(schema)
    assert schema["positive_label"] == "yes"  # the minority
    age = schema["columns"]["age"]
    assert (age["min"], age["max"]) == (float(df["age"].min()), float(df["age"].max()))
    assert age["mean"] == pytest.approx(df["age"].mean())
    assert age["std"] == pytest.approx(df["age"].std())
    assert schema["columns"]["size"]["categories"] == ["1", "2", "3"]
    assert schema["columns"]["active"]["categories"] == ["False", "True"]
    paid = schema["columns"]["paid"]
    assert paid["missing_rate"] == pytest.approx(df["paid"].isna().mean())
    assert schema["columns"]["signup_at"]["min"] == pd.to_datetime(df["signup_at"]).min().isoformat()
    assert schema["columns"]["plan"]["n_unique"] == 3
    assert "signup_at" in feature_columns(schema) and "comment" not in feature_columns(schema)
    assert set(categorical_features(schema)) == {"plan", "region", "active", "paid", "tier", "size"}


@pytest.mark.parametrize(
    "y,given,labels,positive",
    [
        (["a"] * 10 + ["b"] * 30, None, ["a", "b"], "a"),
        (["a"] * 10 + ["b"] * 30, "b", ["a", "b"], "b"),
        ([1] * 30 + [0] * 10, None, [0, 1], 1),  # 1 is the conventional positive
        ([1] * 10 + [0] * 30, None, [0, 1], 1),
        ([1] * 30 + [2] * 10, None, [1, 2], 2),  # 1 beside 2 names nothing: the minority
        ([-1] * 30 + [1] * 10, None, [-1, 1], 1),
        (["yes"] * 30 + ["no"] * 10, None, ["no", "yes"], "yes"),  # the majority, still
        (["No"] * 30 + ["Yes"] * 10, None, ["No", "Yes"], "Yes"),
        (["N"] * 5 + ["Y"] * 35, None, ["N", "Y"], "Y"),
        (["TRUE"] * 30 + ["FALSE"] * 10, None, ["FALSE", "TRUE"], "TRUE"),
        (["pos"] * 30 + ["neg"] * 10, None, ["neg", "pos"], "pos"),
        (["Positive"] * 30 + ["Negative"] * 10, None, ["Negative", "Positive"], "Positive"),
        (["yes"] * 30 + ["y"] * 10, None, ["y", "yes"], "y"),  # both name it: the minority
        (["yes"] * 30 + ["no"] * 10, "no", ["no", "yes"], "no"),  # the config overrides
        ([True] * 30 + [False] * 10, None, [False, True], True),
        ([1] * 30 + [0] * 10, "1", [0, 1], 1),  # configs carry labels as text
        ([1.0] * 30 + [0.0] * 10, "1", [0.0, 1.0], 1.0),
        ([True] * 20 + [False] * 20, None, [False, True], True),  # a tie goes to the later label
        ([True] * 20 + [False] * 20, "false", [False, True], False),
        ([2, 0, 1] * 20, None, [0, 1, 2], None),  # multiclass has no positive label
    ],
)
def test_labels_and_positive_label(y, given, labels, positive):
    df = pd.DataFrame({"y": y, "x": range(len(y))})
    schema = infer_schema(df, target="y", task="classification", positive_label=given, cfg=CFG)
    assert schema["labels"] == labels
    assert schema["positive_label"] == positive
    assert type(schema["positive_label"]) is type(positive)
    assert all(type(v) in (str, int, float, bool) for v in schema["labels"])


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"target": "nope"}, "target 'nope' is not in the data"),
        ({"target": TARGET, "time_column": "when"}, "time column 'when'"),
        ({"target": TARGET, "positive_label": "si"}, "positive_label 'si' is not a label"),
        ({"target": TARGET, "task": "ranking"}, "task must be one of"),
    ],
)
def test_infer_schema_bad_input(kwargs, words):
    with pytest.raises(ValueError, match=words):
        infer_schema(base(), cfg=CFG, **kwargs)


def test_text_rule_needs_both_thresholds():
    n = 1000
    df = pd.DataFrame({"y": [0, 1] * (n // 2), "city": [f"city{i % 150}" for i in range(n)]})
    # 150 values: above max_categories=100 but only 15 % of rows -> still categorical.
    assert infer_schema(df, target="y", cfg=CFG)["columns"]["city"]["kind"] == "categorical"
    tight = ValidationConfig(max_category_fraction=0.1)
    assert infer_schema(df, target="y", cfg=tight)["columns"]["city"]["kind"] == "text"


# --- reports ---------------------------------------------------------------------------


def _reported():
    df = base()
    df["a|b"] = 1.0
    df = set_rows("region", slice(0, 2), "north-east")(df)
    result = validate(df, cfg=CFG, reference=ref_of(base()), **KW)
    return result


def test_report_markdown_lists_every_anomaly_and_column():
    result = _reported()
    assert {(a.code, a.severity) for a in result.anomalies} == {
        ("extra_column", BLOCKING),
        ("constant_column", WARNING),
        ("unseen_categories", WARNING),
    }
    md = report_markdown(result.anomalies, result.schema, dataset_name="customers.csv")
    assert md.splitlines()[0] == "# Data validation: customers.csv"
    assert "**BLOCKED**: 1 blocking problem(s), 2 warning(s)." in md
    rows = [line for line in md.splitlines() if line.startswith("| blocking") or line.startswith("| warning")]
    assert len(rows) == 3 and rows[0].startswith("| blocking")  # blocking first
    for a in result.anomalies:
        assert f"`{a.code}`" in md
    assert "`a\\|b`" in md  # a pipe in a name does not break the table
    for name in result.schema["columns"]:
        assert name.replace("|", "\\|") in md
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.replace("\\|", "").count("|") in (5, 7)


def test_report_markdown_without_schema():
    result = validate(base().iloc[:0], cfg=CFG, **KW)
    md = report_markdown(result.anomalies, result.schema, dataset_name="empty.csv")
    assert "`empty_dataset`" in md and "could not be described" in md


def test_report_json():
    result = _reported()
    out = report_json(result.anomalies, result.schema)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert (out["passed"], out["n_blocking"], out["n_warnings"]) == (False, 1, 2)
    assert out["anomalies"][0]["severity"] == BLOCKING
    assert {a["code"] for a in out["anomalies"]} == {a.code for a in result.anomalies}
    assert out["schema"] == result.schema


def test_validation_failed_lists_blocking_anomalies_one_per_line():
    anomalies = [
        Anomaly("leakage", "x", BLOCKING, "column 'x' leaks"),
        Anomaly("constant_column", "c", WARNING, "column 'c' is constant"),
        Anomaly("too_few_rows", None, BLOCKING, "only 3 rows"),
    ]
    err = ValidationFailed(anomalies)
    lines = str(err).splitlines()
    assert lines[1:] == ["- [leakage] x: column 'x' leaks", "- [too_few_rows] only 3 rows"]
    assert err.anomalies == anomalies
    with pytest.raises(ValidationFailed, match=r"- \[too_few_rows\] the dataset has 20 rows"):
        validate(base().head(20), cfg=CFG, **KW).raise_if_blocking()


@pytest.mark.parametrize(
    "y,given,words",
    [
        (["yes"] * 30 + ["no"] * 10, None, "yes names the positive class"),
        (["a"] * 30 + ["b"] * 10, None, "the minority class (10 of 40 rows)"),
        (["yes"] * 30 + ["no"] * 10, "no", "set by positive_label"),
    ],
)
def test_the_report_says_which_positive_label_and_why(y, given, words):
    df = pd.DataFrame({"y": y, "x": range(len(y))})
    result = validate(df, target="y", task="classification", cfg=CFG, positive_label=given)
    assert words in result.schema["positive_label_reason"]
    report = report_markdown(result.anomalies, result.schema, dataset_name="d")
    assert f"Positive label: {result.schema['positive_label']} (" in report and words in report


def test_a_champion_under_the_minority_rule_keeps_its_positive_label_and_says_so():
    # Registered when the minority was the positive class: "no" for a mostly-yes target.
    df = pd.DataFrame({"y": ["yes"] * 75 + ["no"] * 25, "x": range(100)})
    reference = infer_schema(df, target="y", task="classification", cfg=CFG)
    reference["positive_label"] = "no"
    result = validate(df, target="y", task="classification", cfg=CFG, reference=reference)
    assert result.schema["positive_label"] == "no" and not result.blocking
    reason = result.schema["positive_label_reason"]
    assert "kept from the production model" in reason and "conventional choice would be yes" in reason
    # Asking for the conventional one with the same model name is refused, clearly.
    changed = validate(df, target="y", task="classification", cfg=CFG, reference=reference,
                       positive_label="yes")
    assert changed.blocking
    assert any("cannot be compared" in a.message for a in changed.anomalies)


# ----------------------------------------------------------------- the step


def test_validate_step_says_which_datetime_columns_lost_absolute_time(tmp_path):
    from kubeloop.components.validate import ABSOLUTE_TIME_DROPPED, validate_step
    from kubeloop.config import Config
    from kubeloop.registry import Registry

    df = _churn_frame()
    dates = [c for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])]
    assert dates  # the demo table has a sign-up date
    cfg = Config(target="churned", model_name="churn", registry=str(tmp_path / "reg"))
    outcome = validate_step(df, cfg, registry=Registry(cfg.registry))
    notes = {a.column: a for a in outcome.result.anomalies if a.code == ABSOLUTE_TIME_DROPPED}
    assert set(notes) == set(dates)
    note = notes[dates[0]]
    assert not note.blocking and "year and days since 1970" in note.message
    assert "features.absolute_time" in note.message
    asked = cfg.with_overrides(features={"absolute_time": True})
    outcome = validate_step(df, asked, registry=Registry(cfg.registry))
    assert not [a for a in outcome.result.anomalies if a.code == ABSOLUTE_TIME_DROPPED]
    # The time column never had them: nothing changed for it.
    timed = cfg.with_overrides(time_column=dates[0])
    outcome = validate_step(df, timed, registry=Registry(cfg.registry))
    assert dates[0] not in {a.column for a in outcome.result.anomalies if a.code == ABSOLUTE_TIME_DROPPED}


def _churn_frame(n: int = 200) -> pd.DataFrame:
    from kubeloop.datagen import make_churn

    return make_churn(n, seed=3)


def test_validate_step_infers_on_a_first_run_and_reports_dropped_columns(tmp_path):
    from kubeloop.components.validate import ROW_NUMBER_DROPPED, validate_step
    from kubeloop.config import Config
    from kubeloop.registry import Registry

    cfg = Config(target="churned", model_name="churn", registry=str(tmp_path / "reg"))
    profile = {"dropped_columns": [{"column": "", "reason": "row names"}]}
    outcome = validate_step(_churn_frame(), cfg, registry=Registry(cfg.registry), ingest_profile=profile)
    assert outcome.verdict == "pass" and outcome.champion is None
    assert "first run" in outcome.summary()
    dropped = [a for a in outcome.result.anomalies if a.code == ROW_NUMBER_DROPPED]
    assert len(dropped) == 1 and not dropped[0].blocking and "row names" in dropped[0].message


def test_validate_step_blocks_without_raising_and_writes_the_reports(tmp_path):
    from kubeloop.components.validate import blocked_message, report_json, validate_step
    from kubeloop.config import Config
    from kubeloop.registry import Registry

    df = _churn_frame()
    df["churned"] = "yes"  # a single class: nothing to learn
    cfg = Config(target="churned", model_name="churn", registry=str(tmp_path / "reg"))
    outcome = validate_step(df, cfg, registry=Registry(cfg.registry))
    assert outcome.verdict == "blocked" and outcome.summary().startswith("BLOCKED")
    paths = {k: str(tmp_path / f"{k}.out") for k in ("schema", "anomalies", "report")}
    outcome.write(schema_path=paths["schema"], anomalies_path=paths["anomalies"],
                  report_path=paths["report"], name="churn")
    report = json.loads(open(paths["anomalies"]).read())
    assert report == report_json(outcome.result.anomalies, outcome.result.schema)
    assert not report["passed"]
    message = blocked_message(report)
    assert message.startswith(f"data validation failed with {report['n_blocking']} blocking")
    assert "churned" in message and "nothing was trained or registered" in message
    assert "churned" in open(paths["report"]).read()


def test_validate_step_without_a_target_is_a_user_error(tmp_path):
    from kubeloop.components.validate import validate_step
    from kubeloop.config import Config
    from kubeloop.errors import UserError
    from kubeloop.registry import Registry

    cfg = Config(registry=str(tmp_path))
    with pytest.raises(UserError, match="target"):
        validate_step(_churn_frame(), cfg, registry=Registry(cfg.registry))


@pytest.mark.parametrize(
    "values,blocking",
    [
        (lambda rng, n: rng.integers(1990, 2020, n), False),  # a year
        (lambda rng, n: rng.integers(1_500_000_000, 1_700_000_000, n), False),  # epoch seconds
        (lambda rng, n: rng.integers(1_500_000_000_000, 1_700_000_000_000, n), False),  # epoch ms
        (lambda rng, n: rng.normal(size=n), True),  # a measurement, not a time
    ],
    ids=["year", "epoch-s", "epoch-ms", "not-a-time"],
)
def test_a_numeric_time_column_is_accepted_when_it_is_a_year_or_an_epoch(values, blocking):
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"t": values(rng, n), "x": rng.normal(size=n), "y": rng.choice(["a", "b"], n)})
    result = validate(df, target="y", task=None, cfg=ValidationConfig(), reference=None, time_column="t")
    assert result.blocking is blocking
    if blocking:
        (a,) = [a for a in result.anomalies if a.blocking]
        assert a.column == "t" and "years" in a.message and "epoch" in a.message
    else:
        assert result.schema["columns"]["t"]["role"] == "time"
