"""Ingest: reading CSV/Parquet, the typing rules, errors on unusable files, the source hash."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import sys
import types
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from kubeloop.components.ingest import (
    MISSING_MARKERS,
    DataError,
    coerce_types,
    ingest,
    read_parquet,
    read_table,
    sha256_file,
    write_parquet,
)
from kubeloop.datagen import make_churn, make_house_prices, write_sample

# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz", "d.tsv", "d.parquet", "d.pq"])
@pytest.mark.parametrize("kind, make", [("churn", make_churn), ("house_prices", make_house_prices)])
def test_generated_table_round_trips_through_file(tmp_path, name, kind, make):
    path = write_sample(tmp_path / name, kind, n_rows=400, seed=11)
    df, profile = ingest(path)
    pd.testing.assert_frame_equal(df, make(400, 11))
    assert profile["format"] == ("parquet" if name.endswith(("parquet", "pq")) else "csv")


def test_churn_kinds_after_ingest(tmp_path):
    path = write_sample(tmp_path / "churn.csv", "churn", n_rows=1000, seed=0)
    _, profile = ingest(path)
    kinds = {name: col["kind"] for name, col in profile["columns"].items()}
    assert kinds["customer_id"] == "text"
    assert kinds["signup_date"] == "datetime"
    assert kinds["churned"] == "boolean"
    assert kinds["paperless_billing"] == "boolean"
    assert kinds["plan"] == kinds["region"] == "categorical"
    assert kinds["tenure_months"] == kinds["total_charges"] == "numeric"


@pytest.mark.parametrize("name", ["data", "data.bin", "export.dat"])
@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_unknown_extension_is_sniffed(tmp_path, name, fmt):
    source = write_sample(tmp_path / f"src.{fmt}", "churn", n_rows=300, seed=2)
    target = tmp_path / name
    target.write_bytes(source.read_bytes())
    df, profile = ingest(target)
    pd.testing.assert_frame_equal(df, make_churn(300, 2))
    assert profile["format"] == ("parquet" if fmt == "parquet" else "csv")


def test_write_read_parquet_keeps_dtypes(tmp_path):
    df = pd.DataFrame(
        {
            "cat": pd.Categorical(["b", None, "a"], categories=["a", "b", "c"]),
            "when": pd.to_datetime(
                ["2024-01-01 00:00:00.123456789", None, "2025-06-30"], format="ISO8601"
            ),
            "x": [1.5, np.nan, -2.0],
            "n": np.array([1, 2, 3], dtype=np.int64),
            "flag": [True, False, True],
            "text": ["free", np.nan, "text"],
        }
    )
    path = write_parquet(df, tmp_path / "nested" / "t.parquet")
    assert path.read_bytes()[:4] == b"PAR1"
    back = read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    assert list(back["cat"].cat.categories) == ["a", "b", "c"]


def test_coerced_frame_round_trips_through_parquet(tmp_path):
    typed, _ = ingest(write_sample(tmp_path / "c.csv", "churn", n_rows=300, seed=4))
    back = read_parquet(write_parquet(typed, tmp_path / "typed.parquet"))
    pd.testing.assert_frame_equal(back, typed)
    again, _ = coerce_types(back)
    pd.testing.assert_frame_equal(again, typed)


# ----------------------------------------------------------------- typing rules

N = 200


def rep(values: list, n: int = N) -> list:
    return (values * (n // len(values) + 1))[:n]


COERCION_CASES = [
    # id, values, expected kind, expected dtype, expected n_unparsed
    ("int-stays-int", np.arange(N), "numeric", "int64", 0),
    ("float-stays-float", np.linspace(0, 1, N), "numeric", "float64", 0),
    ("nullable-int-with-missing", pd.array(rep([1, None]), dtype="Int64"), "numeric", "float64", 0),
    ("nullable-int-complete", pd.array(rep([1, 2]), dtype="Int64"), "numeric", "int64", 0),
    ("nullable-float", pd.array(rep([1.5, None]), dtype="Float64"), "numeric", "float64", 0),
    ("decimal", rep([Decimal("1.25"), Decimal("3")]), "numeric", "float64", 0),
    ("numeric-strings", rep(["1", "2.5", "-3e2", "+4", ".5"]), "numeric", "float64", 0),
    ("numeric-strings-spaces", rep([" 1", "2 ", " 3.5 "]), "numeric", "float64", 0),
    ("numeric-one-bad-in-200", rep(["1", "2"], N - 1) + ["oops"], "numeric", "float64", 1),
    ("numeric-too-dirty", [str(i) for i in range(N - 5)] + ["x"] * 5, "text", "object", 0),
    ("numeric-with-markers", rep(["1", "NA", "2", "?", "-", "null"]), "numeric", "float64", 0),
    ("all-missing", [None] * N, "numeric", "float64", 0),
    ("all-markers", rep(["NA", "", "?"]), "numeric", "float64", 0),
    ("yes-no", rep(["yes", "no"]), "boolean", "category", 0),
    ("true-false-missing", rep(["true", "false", None]), "boolean", "category", 0),
    ("t-f", rep(["T", "F"]), "boolean", "category", 0),
    ("y-n-one-value", ["y"] * N, "boolean", "category", 0),
    ("mixed-case-yes-no", rep(["Yes", "yes", "NO"]), "boolean", "category", 0),
    ("three-values-not-boolean", rep(["yes", "no", "maybe"]), "categorical", "category", 0),
    ("mixed-pairs-not-boolean", rep(["yes", "false"]), "categorical", "category", 0),
    ("native-bool", rep([True, False]), "boolean", "category", 0),
    ("object-bool-missing", rep([True, None, False]), "boolean", "category", 0),
    ("nullable-boolean", pd.array(rep([True, None]), dtype="boolean"), "boolean", "category", 0),
    ("iso-dates", rep(["2024-01-01", "2024-02-29"]), "datetime", "datetime64[ns]", 0),
    ("iso-datetimes-tz", rep(["2024-01-01T10:00:00Z", "2024-01-01 12:00:00+02:00"]), "datetime", "datetime64[ns]", 0),
    ("iso-one-bad-in-200", rep(["2024-01-01"], N - 1) + ["2024-13-45"], "datetime", "datetime64[ns]", 1),
    ("not-iso-dates", [f"{d % 28 + 1:02d}/{d % 12 + 1:02d}/2024" for d in range(N)], "categorical", "category", 0),
    ("aware-timestamps", pd.date_range("2024-03-31", periods=N, freq="h", tz="Europe/Berlin"), "datetime", "datetime64[ns]", 0),
    ("python-dates", rep([dt.date(2024, 5, 1)]), "datetime", "datetime64[ns]", 0),
    ("low-cardinality", [f"c{i % 7}" for i in range(N)], "categorical", "category", 0),
    ("identifiers", [f"id-{i}" for i in range(N)], "text", "object", 0),
    ("category-dtype", pd.Categorical(rep(["b", "a"])), "categorical", "category", 0),
    ("category-dtype-boolean", pd.Categorical(rep(["Y", "N"])), "boolean", "category", 0),
    ("mixed-python-types", rep([1, "a"]), "categorical", "category", 0),
    ("arrow-strings", pd.array(rep(["u", "v"]), dtype="string[pyarrow]"), "categorical", "category", 0),
]  # fmt: skip


@pytest.mark.parametrize(
    "values, kind, dtype, n_unparsed",
    [c[1:] for c in COERCION_CASES],
    ids=[c[0] for c in COERCION_CASES],
)
def test_coercion_rule(values, kind, dtype, n_unparsed):
    df = pd.DataFrame({"x": values})
    out, profile = coerce_types(df)
    col = profile["columns"]["x"]
    assert (col["kind"], col["dtype"], col["n_unparsed"]) == (kind, dtype, n_unparsed)
    assert str(out["x"].dtype) == dtype
    assert col["coerced_from"] == (None if str(df["x"].dtype) == dtype else str(df["x"].dtype))
    # The kinds are stable: typing a typed table changes nothing.
    again, profile_again = coerce_types(out)
    pd.testing.assert_frame_equal(again, out)
    assert profile_again["columns"]["x"]["kind"] == kind


STRING_CASES = [c for c in COERCION_CASES if all(isinstance(v, str | type(None)) for v in c[1])]


@pytest.mark.parametrize(
    "values, kind", [c[1:3] for c in STRING_CASES], ids=[c[0] for c in STRING_CASES]
)
def test_csv_gives_the_same_kind_as_a_frame(tmp_path, values, kind):
    path = tmp_path / "x.csv"
    cells = ['""' if v is None else f'"{v}"' for v in values]
    path.write_text("x\n" + "\n".join(cells) + "\n")
    _, profile = ingest(path)
    assert profile["columns"]["x"]["kind"] == kind


@pytest.mark.parametrize("marker", [*MISSING_MARKERS, " NA ", "NULL", "none", "NaN", "n/a"])
@pytest.mark.parametrize("column", ["numbers", "labels"])
def test_missing_markers_become_nan_everywhere(marker, column):
    values = {"numbers": ["1.5", "2", "3"], "labels": ["a", "b", "c"]}[column]
    df = pd.DataFrame({"x": rep([*values, marker], 100)})
    out, profile = coerce_types(df)
    assert out["x"].isna().sum() == 25
    assert profile["columns"]["x"]["kind"] == ("numeric" if column == "numbers" else "categorical")
    assert profile["columns"]["x"]["n_unparsed"] == 0


@pytest.mark.parametrize(
    "values, expected",
    [
        (["1", "2.5", "oops", "-"], [1.0, 2.5, np.nan, np.nan]),
        ([" 7 ", "8"], [7.0, 8.0]),
    ],
)
def test_numeric_values_after_coercion(values, expected):
    # At 99 % the column needs 100 values to tolerate one bad one.
    df = pd.DataFrame({"x": values + ["0"] * 200})
    out, _ = coerce_types(df)
    np.testing.assert_array_equal(out["x"].to_numpy()[: len(values)], expected)


@pytest.mark.parametrize(
    "values, expected",
    [
        (["Yes", "yes", "NO", None], ["yes", "yes", "no", np.nan]),
        (["Y", "N", None], ["Y", "N", np.nan]),
        ([True, False, None], ["True", "False", np.nan]),
    ],
)
def test_boolean_labels(values, expected):
    out, _ = coerce_types(pd.DataFrame({"x": rep(values, 30)}))
    assert out["x"].tolist()[: len(values)] == expected
    assert list(out["x"].cat.categories) == sorted({v for v in expected if isinstance(v, str)})


def test_datetimes_are_naive_utc():
    df = pd.DataFrame(
        {
            "s": rep(["2024-06-01T12:00:00+02:00", "2024-06-01T10:00:00Z", "2024-06-01 10:00"]),
            "aware": pd.Series(
                pd.to_datetime(rep(["2024-06-01 12:00"])).tz_localize("Europe/Berlin")
            ),
        }
    )
    out, _ = coerce_types(df)
    assert (out["s"] == pd.Timestamp("2024-06-01 10:00")).all()
    assert (out["aware"] == pd.Timestamp("2024-06-01 10:00")).all()


def test_categories_are_sorted_and_trimmed():
    df = pd.DataFrame({"x": rep([" west", "east ", "north", "east"])})
    out, _ = coerce_types(df)
    assert list(out["x"].cat.categories) == ["east", "north", "west"]
    assert out["x"].tolist()[:4] == ["west", "east", "north", "east"]


@pytest.mark.parametrize(
    "n_rows, n_distinct, max_categories, max_fraction, kind",
    [
        # Text needs both: more than max_categories distinct values and more than
        # max_category_fraction of the rows distinct (the ValidationConfig rule).
        (1000, 100, 100, 0.5, "categorical"),
        (1000, 500, 100, 0.5, "categorical"),  # many values, but each seen twice
        (1000, 501, 100, 0.5, "text"),
        (1000, 1000, 100, 0.5, "text"),  # an identifier
        (1000, 150, 100, 0.1, "text"),
        (1000, 150, 200, 0.1, "categorical"),
        (40, 40, 100, 0.5, "categorical"),  # few rows: up to max_categories is a category
        (40, 40, 10, 0.5, "text"),
        (20_000, 300, 40, 0.01, "text"),
        (20_000, 200, 40, 0.01, "categorical"),
    ],
)
def test_category_or_text(n_rows, n_distinct, max_categories, max_fraction, kind):
    df = pd.DataFrame({"x": [f"v{i % n_distinct}" for i in range(n_rows)]})
    _, profile = coerce_types(df, max_categories=max_categories, max_category_fraction=max_fraction)
    assert profile["columns"]["x"]["kind"] == kind


def test_coerce_types_leaves_its_input_alone():
    df = pd.DataFrame({"x": rep(["1", "2"]), "y": rep(["yes", "no"])})
    before = df.copy()
    out, _ = coerce_types(df)
    pd.testing.assert_frame_equal(df, before)
    assert out["x"].dtype == np.float64


def test_profile_describes_the_frame(tmp_path):
    path = write_sample(tmp_path / "h.csv", "house_prices", n_rows=250, seed=9)
    df, profile = ingest(path)
    assert profile["n_rows"] == 250
    assert profile["n_columns"] == df.shape[1] == 13
    assert profile["memory_bytes"] == df.memory_usage(index=False, deep=True).sum()
    assert list(profile["columns"]) == list(df.columns)
    assert profile["source_uri"] == str(path)
    assert profile["size_bytes"] == path.stat().st_size
    for name, col in profile["columns"].items():
        assert col["dtype"] == str(df[name].dtype)


def test_columns_whose_type_changes_late_in_a_large_csv(tmp_path):
    # The CSV reader guesses types on the first block (about 1 MB); values that do
    # not fit later on must widen the column, not fail or get lost.
    n = 120_000
    rows = [f"{i},{i},,2024-01-01T00:00:00Z" for i in range(n)]
    rows[-2] = "2,3,8,2024-01-02"
    rows[-1] = "1.5,zz,7,2024-01-02 10:00:00"
    path = tmp_path / "late.csv"
    path.write_text("a,b,c,d\n" + "\n".join(rows) + "\n")
    df, profile = ingest(path)
    assert df["a"].iloc[-1] == 1.5 and df["a"].dtype == np.float64
    assert np.isnan(df["b"].iloc[-1]) and profile["columns"]["b"]["n_unparsed"] == 1
    assert df["c"].tolist()[-2:] == [8.0, 7.0] and df["c"].isna().sum() == n - 2
    assert df["d"].iloc[-1] == pd.Timestamp("2024-01-02 10:00")
    assert df["d"].dtype == "datetime64[ns]"


@pytest.mark.parametrize(
    "content, columns, first_row",
    [
        (" a , b\n1,2\n", ["a", "b"], [1, 2]),
        ("\ufeffa,b\n1,2\n", ["a", "b"], [1, 2]),
        ("a;b;c\n1;2;3\n", ["a", "b", "c"], [1, 2, 3]),
        ("\n\na,b\n1,2\n", ["a", "b"], [1, 2]),
        ('a,b\n1,"two\nlines"\n2,x\n', ["a", "b"], [1, "two\nlines"]),
        ('a,"b,c"\r\n1,2\r\n', ["a", "b,c"], [1, 2]),
    ],
    ids=[
        "names-stripped",
        "byte-order-mark",
        "semicolons",
        "blank-lines-first",
        "quoted-newline",
        "crlf-quoted-name",
    ],
)
def test_csv_dialects(tmp_path, content, columns, first_row):
    path = tmp_path / "t.csv"
    path.write_text(content)
    df = read_table(path)
    assert list(df.columns) == columns
    assert df.iloc[0].tolist() == first_row


def test_parquet_named_index_becomes_a_column(tmp_path):
    df = pd.DataFrame({"v": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="key"))
    path = tmp_path / "i.parquet"
    df.to_parquet(path)
    out, _ = ingest(path)
    assert list(out.columns) == ["key", "v"]
    assert out["key"].tolist() == ["a", "b"]


# ----------------------------------------------------------------- errors

ERROR_CASES = [
    # id, file name, content (None: no file), words the message must contain
    ("missing-file", "nope.csv", None, "file not found"),
    ("empty-file", "e.csv", b"", "empty"),
    ("blank-lines-only", "e.csv", b"\n\n  \n", "empty"),
    ("header-only", "h.csv", b"a,b,c\n", "header but no rows"),
    ("duplicate-columns", "d.csv", b"a,b,a\n1,2,3\n", "duplicate column name(s) 'a'"),
    ("duplicate-after-strip", "d.csv", b"a, a \n1,2\n", "duplicate column name(s) 'a'"),
    ("empty-column-name", "n.csv", b"a,,c\n1,2,3\n", "position 2 have an empty name"),
    ("unnamed-first-column-with-repeats", "n.csv", b",a\n0,1\n0,2\n", "repeated values"),
    ("no-header", "n.csv", b"1,2.5,3\n4,5,6\n", "looks like data, not a header"),
    ("ragged-rows", "r.csv", b"a,b\n1,2\n3,4,5\n", "cannot parse as CSV"),
    ("garbage-bytes-csv", "g.csv", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), "not UTF-8"),
    ("garbage-bytes-parquet", "g.parquet", bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), "cannot parse as Parquet"),
    ("garbage-bytes-no-extension", "g.bin", bytes(np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8)), "neither Parquet nor CSV"),
    ("not-really-gzip", "p.csv.gz", b"a,b\n1,2\n", "cannot parse as CSV"),
    ("excel", "t.xlsx", b"PK\x03\x04", "unsupported format .xlsx"),
    ("json", "t.json", b'[{"a": 1}]', "unsupported format .json"),
    ("gzipped-parquet", "t.parquet.gz", gzip.compress(b"PAR1"), "unsupported format .parquet.gz"),
]  # fmt: skip


@pytest.mark.parametrize(
    "filename, content, words", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_unusable_file_is_a_clear_error(tmp_path, filename, content, words):
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        ingest(path)
    message = str(info.value)
    assert words in message
    assert str(path) in message


def test_parquet_without_rows_is_an_error(tmp_path):
    path = tmp_path / "z.parquet"
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(path)
    with pytest.raises(DataError, match="no rows"):
        read_table(path)


@pytest.mark.parametrize(
    "uri, words",
    [("http://example.com/t.csv", "unsupported location scheme http://"), (".", "is a directory")],
)
def test_unusable_location(uri, words):
    with pytest.raises(DataError, match=words):
        read_table(uri)


@pytest.mark.parametrize(
    "frame, words",
    [
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "duplicate column name(s) 'a'"),
        (pd.DataFrame([[1, 2]], columns=["a", " "]), "empty name"),
        (pd.DataFrame({"x": [[1, 2], [3]]}), "column 'x' has values of type list"),
    ],
    ids=["duplicate-names", "blank-name", "nested-values"],
)
def test_unusable_frame_is_a_clear_error(frame, words):
    with pytest.raises(DataError) as info:
        coerce_types(frame)
    assert words in str(info.value)


# ----------------------------------------------------------------- source identity


def test_hash_is_the_files_sha256_and_stable(tmp_path):
    path = write_sample(tmp_path / "a.csv", "churn", n_rows=20_000, seed=1)
    assert path.stat().st_size > 2 * (1 << 20)  # more than one read chunk
    _, first = ingest(path)
    _, second = ingest(path)
    assert first["sha256"] == second["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == first["sha256"]


def test_hash_changes_with_content_not_with_name(tmp_path):
    a = write_sample(tmp_path / "a.csv", "churn", n_rows=100, seed=1)
    b = tmp_path / "b.csv"
    b.write_bytes(a.read_bytes())
    c = write_sample(tmp_path / "c.csv", "churn", n_rows=100, seed=2)
    assert ingest(a)[1]["sha256"] == ingest(b)[1]["sha256"] != ingest(c)[1]["sha256"]


def test_s3_uri_is_read_through_the_storage_layer(tmp_path, monkeypatch):
    # The storage layer is its own module; a stand-in records the call and hands
    # back a local file, which is all the ingest stage relies on.
    local = write_sample(tmp_path / "obj.csv", "churn", n_rows=300, seed=3)
    calls = []

    @contextlib.contextmanager
    def local_copy(uri, storage):
        calls.append((uri, storage))
        yield local

    stand_in = types.ModuleType("kubeloop.storage")
    stand_in.local_copy = local_copy
    monkeypatch.setitem(sys.modules, "kubeloop.storage", stand_in)
    df, profile = ingest("s3://bucket/data/churn", storage=None)
    assert calls == [("s3://bucket/data/churn", None)]
    assert profile["source_uri"] == "s3://bucket/data/churn"
    assert profile["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
    pd.testing.assert_frame_equal(df, make_churn(300, 3))


# ----------------------------------------------------------------- row numbers


ROW_NUMBER_EXPORTS = [
    # pandas' to_csv default: an unnamed first column counting from 0
    ("pandas-to-csv", b",age,churned\n0,31,yes\n1,45,no\n2,22,no\n", ""),
    # R's write.csv default: a quoted empty header, row names counting from 1
    ("r-write-csv", b'"","age","churned"\n"1",31,"yes"\n"2",45,"no"\n"3",22,"no"\n', ""),
    # R's write.csv after subsetting: row names kept from the original table
    ("r-subset", b'"","age","churned"\n"4",31,"yes"\n"9",45,"no"\n"17",22,"no"\n', ""),
    # a pandas index re-exported after a read_csv without index_col
    ("unnamed-0", b"Unnamed: 0,age,churned\n0,31,yes\n1,45,no\n2,22,no\n", "Unnamed: 0"),
    # R's read.csv names the empty header X, and write.csv keeps it
    ("r-x-column", b"X,age,churned\n1,31,yes\n2,45,no\n3,22,no\n", "X"),
]


@pytest.mark.parametrize("content,column", [c[1:] for c in ROW_NUMBER_EXPORTS],
                         ids=[c[0] for c in ROW_NUMBER_EXPORTS])
def test_row_number_columns_of_real_exports_are_dropped_and_reported(tmp_path, content, column):
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    df, profile = ingest(path)
    assert list(df.columns) == ["age", "churned"]
    assert df["age"].tolist() == [31, 45, 22]
    (dropped,) = profile["dropped_columns"]
    assert dropped["column"] == column and "row" in dropped["reason"]


def test_index_named_columns_that_are_not_row_numbers_are_kept(tmp_path):
    path = tmp_path / "data.csv"
    # "index" here is a real measurement (not 0..n-1 in order), and "row" is kept
    # because it is the target the user named.
    path.write_bytes(b"index,row,age\n7,1,31\n3,2,45\n9,3,22\n")
    df, profile = ingest(path, keep={"row"})
    assert list(df.columns) == ["index", "row", "age"]
    assert profile["dropped_columns"] == []


def test_row_number_check_needs_a_whole_sequence():
    from kubeloop.components.ingest import _is_row_sequence

    assert _is_row_sequence(pd.Series([0, 1, 2, 3]))
    assert _is_row_sequence(pd.Series([1, 2, 3]))
    assert not _is_row_sequence(pd.Series([1, 2, 4]))
    assert not _is_row_sequence(pd.Series([2, 3, 4]))
    assert not _is_row_sequence(pd.Series([0.0, 1.0, 2.0]))  # floats are measurements
    assert not _is_row_sequence(pd.Series([0]))


@pytest.mark.parametrize(
    "text,expected",
    [
        (b"a;b;c\n5,1;2;x\n4,9;3;y\n", [5.1, 4.9]),  # R's write.csv2: decimal comma
        (b"a;b;c\n5.1;2;x\n4.9;3;y\n", [5.1, 4.9]),  # ';' with decimal points
        (b"a,b,c\n5.1,2,x\n4.9,3,y\n", [5.1, 4.9]),  # plain CSV
    ],
    ids=["semicolon-decimal-comma", "semicolon-decimal-point", "comma"],
)
def test_decimal_marks_follow_the_export(tmp_path, text, expected):
    path = tmp_path / "export.csv"
    path.write_bytes(text)
    df, _ = ingest(path)
    assert df["a"].tolist() == expected
    assert df["c"].tolist() == ["x", "y"]
