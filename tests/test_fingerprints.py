"""Row fingerprints: stable across dtypes, processes and re-reads; the set's error rates."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kubeloop.fingerprints import (
    FingerprintError,
    FingerprintSet,
    bloom_parameters,
    fingerprint_columns,
    row_fingerprints,
    rows_file,
)


def frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "spend": np.round(rng.gamma(2.0, 50.0, n), 3),
            "plan": rng.choice(["basic", "plus", "pro"], n).astype(object),
            "member": rng.random(n) < 0.4,
            "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, n), "s"),
            "y": rng.choice(["no", "yes"], n),
        }
    )
    f.loc[rng.random(n) < 0.1, "spend"] = np.nan
    f.loc[rng.random(n) < 0.05, "plan"] = None
    return f


COLS = ["age", "spend", "plan", "member", "signup", "y"]


def test_equal_values_in_other_dtypes_give_equal_fingerprints():
    a = pd.DataFrame({"x": [3, 4, -0], "c": ["a", "b", "c"]})
    b = pd.DataFrame({"x": [3.0, 4.0, -0.0], "c": pd.Categorical(["a", "b", "c"])})
    c = pd.DataFrame(
        {"x": pd.array([3, 4, 0], dtype="Int64"), "c": pd.array(["a", "b", "c"], dtype="string")}
    )
    d = pd.DataFrame({"x": ["3", " 4.0", "0"], "c": ["a", "b", "c"]})
    expected = row_fingerprints(a, ["x", "c"])
    for other in (b, c, d):
        assert (row_fingerprints(other, ["x", "c"]) == expected).all()


def test_missing_is_one_value_whatever_the_dtype():
    a = pd.DataFrame({"x": [np.nan, 1.0]})
    b = pd.DataFrame({"x": pd.array([None, 1], dtype="Int64")})
    c = pd.DataFrame({"x": [None, "1"]})
    fa = row_fingerprints(a, ["x"])
    assert (row_fingerprints(b, ["x"]) == fa).all() and (row_fingerprints(c, ["x"]) == fa).all()
    assert fa[0] != fa[1]


def test_booleans_as_numbers_or_words():
    a = pd.DataFrame({"m": [True, False]})
    b = pd.DataFrame({"m": [1, 0]})
    c = pd.DataFrame({"m": ["TRUE", "false"]})
    fa = row_fingerprints(a, ["m"])
    assert (row_fingerprints(b, ["m"]) == fa).all() and (row_fingerprints(c, ["m"]) == fa).all()


def test_times_naive_utc_and_aware_agree():
    naive = pd.DataFrame({"t": pd.to_datetime(["2024-05-01 10:00", None])})
    aware = pd.DataFrame({"t": pd.to_datetime(["2024-05-01 12:00+02:00", None], utc=True)})
    assert (row_fingerprints(naive, ["t"]) == row_fingerprints(aware, ["t"])).all()


def test_column_order_does_not_matter_but_values_and_names_do():
    f = frame()
    base = row_fingerprints(f, COLS)
    assert (row_fingerprints(f[COLS[::-1]], COLS[::-1]) == base).all()
    changed = f.copy()
    changed.loc[7, "age"] += 1
    diff = row_fingerprints(changed, COLS) != base
    assert diff.sum() == 1 and diff[7]
    renamed = f.rename(columns={"age": "age2"})
    assert (row_fingerprints(renamed, ["age2", *COLS[1:]]) != base).all()
    # Distinct rows get distinct fingerprints.
    assert np.unique(base).size == len(f.drop_duplicates())


def test_csv_and_parquet_round_trips_keep_fingerprints(tmp_path):
    f = frame()
    base = row_fingerprints(f, COLS)
    f.to_csv(tmp_path / "a.csv", index=False)
    back = pd.read_csv(tmp_path / "a.csv", parse_dates=["signup"])
    assert (row_fingerprints(back, COLS) == base).all()
    f.to_parquet(tmp_path / "a.parquet")
    assert (row_fingerprints(pd.read_parquet(tmp_path / "a.parquet"), COLS) == base).all()


def test_stable_across_processes():
    f = frame(50)
    buf = io.StringIO()
    f.to_json(buf, orient="split", date_unit="ns")
    code = (
        "import io,sys,pandas as pd;from kubeloop.fingerprints import row_fingerprints;"
        "f=pd.read_json(io.StringIO(sys.stdin.read()),orient='split',convert_dates=['signup']);"
        f"print(','.join(str(v) for v in row_fingerprints(f,{COLS!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=buf.getvalue(),
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        check=True,
    ).stdout.strip()
    assert [int(v) for v in out.split(",")] == row_fingerprints(f, COLS).tolist()


def test_known_values_pin_the_canonical_form():
    # A change here breaks every stored set: bump CANONICAL_VERSION instead.
    f = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    first = row_fingerprints(f, ["a", "b"])
    again = row_fingerprints(pd.DataFrame({"b": ["x", np.nan], "a": [1.0, 2.0]}), ["b", "a"])
    assert first.tolist() == again.tolist()
    assert first.dtype == np.uint64 and first[0] != first[1]


def test_missing_column_is_named():
    with pytest.raises(FingerprintError, match="'nope'"):
        row_fingerprints(frame(5), ["age", "nope"])


@pytest.mark.parametrize("exact_limit", [10**6, 10])
def test_set_contains_its_rows_and_round_trips_through_bytes(exact_limit):
    f = frame(400)
    seen, unseen = f.iloc[:300], f.iloc[300:]
    s = FingerprintSet.from_frames(
        [seen.iloc[:200], seen.iloc[200:]], COLS, exact_limit=exact_limit
    )
    assert s.kind == ("exact" if exact_limit > 300 else "bloom")
    back = FingerprintSet.from_bytes(s.to_bytes())
    assert back.kind == s.kind and back.columns == sorted(COLS) and back.n_rows == s.n_rows
    for one in (s, back):
        assert one.contains_rows(seen).all()
        assert one.contains_rows(unseen).sum() <= (0 if one.kind == "exact" else 3)


@pytest.mark.parametrize("rate", [0.01, 0.001])
def test_bloom_false_positive_rate_is_within_its_bound(rate):
    rng = np.random.default_rng(1)
    members = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    others = rng.integers(0, 2**63, 400_000, dtype=np.uint64)
    s = FingerprintSet.from_hashes(members, ["x"], exact_limit=1000, false_positive_rate=rate)
    assert s.kind == "bloom" and s.contains(members).all()
    measured = s.contains(others).mean()
    # The sampling error of 400k draws at 0.1 % is 5e-5; 1.3x leaves room for it.
    assert measured <= rate * 1.3, measured
    assert measured > 0  # a filter this size at these rates does err sometimes
    size = len(s.to_bytes())
    assert size < 200_000 * 8 / 3  # far smaller than the exact set


def test_bloom_parameters_follow_the_formula():
    m, k = bloom_parameters(1000, 0.01)
    assert 9500 <= m <= 9700 and k == 7


def test_bad_bytes_are_refused():
    with pytest.raises(FingerprintError):
        FingerprintSet.from_bytes(b"not a file")


def test_fingerprint_columns_are_features_and_target():
    schema = {
        "target": "y",
        "columns": {
            "a": {"role": "feature"},
            "t": {"role": "time"},
            "i": {"role": "id"},
            "y": {"role": "target"},
        },
    }
    assert fingerprint_columns(schema) == ["a", "t", "y"]


def test_rows_file_is_what_the_registry_stores():
    f = frame(100)
    schema = {
        "target": "y",
        "columns": {c: {"role": "target" if c == "y" else "feature"} for c in COLS},
    }
    s = FingerprintSet.from_bytes(rows_file([f.iloc[:60], f.iloc[60:80]], schema))
    assert s.n_rows == 80 and s.columns == sorted(COLS)
    assert s.contains_rows(f).tolist() == [True] * 80 + [False] * 20


def test_the_same_row_exported_by_r_and_by_pandas_hashes_alike(tmp_path):
    # R's write.csv and Excel keep 15 significant digits, pandas and Parquet 17.
    import io

    values = np.random.default_rng(3).normal(size=200) * 1e3
    full = pd.DataFrame({"x": values, "y": np.arange(200) % 2})
    r_text = "x,y\n" + "\n".join(f"{v:.15g},{y}" for v, y in zip(values, full["y"], strict=True))
    from_r = pd.read_csv(io.StringIO(r_text))
    assert not np.array_equal(from_r["x"].to_numpy(), values)  # the bits do differ
    schema = {"target": "y", "columns": {"x": {"role": "feature", "kind": "numeric"},
                                          "y": {"role": "target", "kind": "numeric"}}}
    from kubeloop.fingerprints import fingerprint_columns, row_fingerprints

    cols = fingerprint_columns(schema)
    assert np.array_equal(row_fingerprints(full, cols), row_fingerprints(from_r, cols))
    # ... while a real difference in the 15th digit still tells rows apart.
    nudged = full.assign(x=full["x"] * (1 + 1e-13))
    assert not np.array_equal(row_fingerprints(full, cols), row_fingerprints(nudged, cols))


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e-5, 1e-12, 1e12, 1e20, 1e-30, 1e300])
def test_rounding_to_15_digits_is_what_a_csv_writer_does(scale):
    from kubeloop.fingerprints import _round_significant

    values = np.random.default_rng(7).normal(size=20_000) * scale
    written = np.array([float(f"{v:.15g}") for v in values])  # R, Excel: 15 digits
    assert np.array_equal(_round_significant(values), written)
    assert np.array_equal(_round_significant(written), written)
