"""The split stage: strategy per schema, disjointness, balance, duplicates, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubeloop.components.split import (
    SplitError,
    Splits,
    assert_disjoint,
    split_dataset,
    split_strategy,
)
from kubeloop.config import SplitConfig

N = 2_000


def make_frame(n: int = N, task: str = "classification", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90 * 24, n), "h"),
            "customer": rng.integers(0, n // 5, n),
        }
    )
    if task == "classification":
        # Imbalanced on purpose: stratification has something to keep.
        frame["y"] = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    else:
        frame["y"] = frame["x"] * 3 + rng.normal(size=n)
    return frame


def make_schema(task: str = "classification", time: str | None = None, ids: str | None = None):
    columns = {
        "x": {"kind": "numeric", "role": "feature"},
        "color": {"kind": "categorical", "role": "feature"},
        "when": {"kind": "datetime", "role": "time" if time else "feature"},
        "customer": {"kind": "numeric", "role": "id" if ids else "feature"},
        "y": {"kind": "categorical" if task == "classification" else "numeric", "role": "target"},
    }
    return {"target": "y", "task": task, "time_column": time, "id_column": ids, "columns": columns}


STRATEGIES = [
    # task, time column, id column, expected strategy
    ("classification", None, None, "stratified"),
    ("regression", None, None, "random"),
    ("classification", "when", None, "temporal"),
    ("regression", "when", None, "temporal"),
    ("classification", None, "customer", "group"),
    ("regression", None, "customer", "group"),
    ("classification", "when", "customer", "temporal_group"),
    ("regression", "when", "customer", "temporal_group"),
]


@pytest.mark.parametrize("task,time,ids,expected", STRATEGIES)
def test_strategy_and_disjointness(task, time, ids, expected):
    df = make_frame(task=task)
    schema = make_schema(task, time, ids)
    splits = split_dataset(df, schema, SplitConfig())

    assert split_strategy(schema) == expected
    assert splits.summary["strategy"] == expected
    assert_disjoint(splits, schema)

    sizes = {name: len(frame) for name, frame in splits.frames().items()}
    dropped = (
        splits.summary["duplicates_dropped"] + splits.summary["rows"]["newer_than_test_dropped"]
    )
    assert sum(sizes.values()) == len(df) - dropped
    assert all(size > 0 for size in sizes.values())
    rows = np.concatenate(list(splits.source_rows.values()))
    assert len(np.unique(rows)) == len(rows)
    for frame in splits.frames().values():
        assert frame.index.equals(pd.RangeIndex(len(frame)))
    # Each frame holds exactly the input rows it claims to hold.
    for name, frame in splits.frames().items():
        source = df.iloc[splits.source_rows[name]].reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, source)

    if ids:
        seen = [set(frame["customer"]) for frame in splits.frames().values()]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    if time:
        # No training or validation row is as new as the test period.
        assert splits.train["when"].max() < splits.test["when"].min()
        assert splits.valid["when"].max() < splits.test["when"].min()
    if not (time and ids):
        assert splits.summary["rows"]["newer_than_test_dropped"] == 0
    if time and not ids:
        assert splits.train["when"].max() < splits.valid["when"].min()
        assert splits.valid["when"].max() < splits.test["when"].min()
    if not ids:
        # Row-based strategies hit the configured fractions to the row.
        assert sizes == {"train": 1400, "valid": 300, "test": 300}


def test_temporal_group_puts_each_id_where_it_first_appears():
    df = make_frame()
    schema = make_schema("classification", "when", "customer")
    splits = split_dataset(df, schema, SplitConfig())
    first_seen = df.groupby("customer")["when"].min()
    entry = {
        name: first_seen.loc[frame["customer"].unique()] for name, frame in splits.frames().items()
    }
    assert entry["train"].max() < entry["valid"].min()
    assert entry["valid"].max() < entry["test"].min()


def test_stratification_keeps_class_balance_within_two_points():
    df = make_frame(n=3_000)
    splits = split_dataset(df, make_schema(), SplitConfig())
    overall = df["y"].value_counts(normalize=True)
    assert splits.summary["stratified"] is True
    for name, frame in splits.frames().items():
        share = frame["y"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.02, name
        assert splits.summary["class_balance"][name] == pytest.approx(share.to_dict())


def test_equal_timestamps_never_straddle_a_cut():
    # 100 rows on five days: 30, 25, 20, 10, 15. The 70% cut falls inside day three
    # (rows 55..75) and moves to its nearer end; the 85% cut is already a day boundary.
    days = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"])
    when = np.repeat(days, [30, 25, 20, 10, 15])
    df = pd.DataFrame({"when": when, "x": np.arange(100.0), "y": np.arange(100.0)})
    schema = {"target": "y", "task": "regression", "time_column": "when", "id_column": None}
    splits = split_dataset(df.sample(frac=1, random_state=1), schema, SplitConfig())

    assert [len(f) for f in splits.frames().values()] == [75, 10, 15]
    day_sets = [set(f["when"]) for f in splits.frames().values()]
    assert day_sets == [set(days[:3]), {days[3]}, {days[4]}]
    assert_disjoint(splits, schema)


@pytest.mark.parametrize("n_missing", [40, 380])  # 380 of 500 is more than the 70% of train
def test_rows_without_a_time_go_to_train(n_missing):
    df = make_frame(n=500, task="regression")
    df.loc[df.sample(n=n_missing, random_state=3).index, "when"] = pd.NaT
    splits = split_dataset(df, make_schema("regression", "when"), SplitConfig())
    assert splits.train["when"].isna().sum() == n_missing
    assert splits.valid["when"].notna().all() and splits.test["when"].notna().all()
    assert splits.summary["time_range"]["train"]["missing"] == n_missing
    assert len(splits.valid) > 0 and len(splits.test) > 0


def test_rows_without_an_id_are_groups_of_their_own():
    df = make_frame(n=1_000).astype({"customer": "float64"})
    df.loc[:299, "customer"] = np.nan
    schema = make_schema("classification", ids="customer")
    splits = split_dataset(df, schema, SplitConfig())
    without_id = [int(f["customer"].isna().sum()) for f in splits.frames().values()]
    assert sum(without_id) == 300
    assert all(n > 0 for n in without_id)  # spread like any other group, not lumped together
    assert_disjoint(splits, schema)


def test_duplicates_are_dropped_before_splitting():
    df = make_frame(n=1_000)
    copies = df.sample(n=150, random_state=7)
    with_dups = pd.concat([df, copies, copies.iloc[:50]], ignore_index=True)
    splits = split_dataset(with_dups, make_schema(), SplitConfig())

    assert splits.summary["duplicates_dropped"] == 200
    assert splits.summary["rows"]["input"] == 1_200
    combined = pd.concat(splits.frames().values(), ignore_index=True)
    assert len(combined) == 1_000
    assert not combined.duplicated().any()
    # The first copy is the one kept.
    assert np.isin(np.concatenate(list(splits.source_rows.values())), np.arange(1_000)).all()


def test_duplicates_kept_are_rows_assigned_on_their_own():
    df = make_frame(n=1_000)
    copies = df.sample(n=150, random_state=7)
    with_dups = pd.concat([df, copies, copies.iloc[:50]], ignore_index=True)
    splits = split_dataset(with_dups, make_schema(), SplitConfig(duplicates="keep"))

    assert splits.summary["duplicates_dropped"] == 0
    assert splits.summary["rows"]["duplicates_kept"] == 200
    assert splits.summary["duplicates"] == "keep"
    # Every input row is in exactly one split, copies included.
    positions = np.concatenate(list(splits.source_rows.values()))
    assert np.array_equal(np.sort(positions), np.arange(1_200))
    # Assigned independently: some copies land in another split than their original.
    where = {p: name for name, rows in splits.source_rows.items() for p in rows}
    apart = sum(where[1_000 + i] != where[int(j)] for i, j in enumerate(copies.index))
    assert apart > 0
    # The strategy still holds: stratified on the target.
    shares = {n: f["y"].value_counts(normalize=True) for n, f in splits.frames().items()}
    for share in shares.values():
        assert share.sub(shares["train"]).abs().max() < 0.05
    # Identical rows may be shared, rows may not: the check goes by position.
    assert_disjoint(splits, make_schema())
    assert_disjoint_positions = Splits(
        **splits.frames(), summary=splits.summary,
        source_rows={**splits.source_rows, "test": splits.source_rows["train"][:3]},
    )
    with pytest.raises(SplitError, match="input row"):
        assert_disjoint(assert_disjoint_positions, make_schema())


def test_unknown_duplicates_mode_is_a_config_error():
    with pytest.raises(ValueError, match="duplicates"):
        SplitConfig(duplicates="merge")


@pytest.mark.parametrize(
    "time,ids", [(None, None), ("when", None), (None, "customer"), ("when", "customer")]
)
def test_same_seed_same_splits_other_seed_other_splits(time, ids):
    df = make_frame()
    schema = make_schema("classification", time, ids)
    first = split_dataset(df, schema, SplitConfig(seed=5))
    again = split_dataset(df, schema, SplitConfig(seed=5))
    for name in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(first.frames()[name], again.frames()[name])
    other = split_dataset(df, schema, SplitConfig(seed=6))
    if time:  # time decides, the seed does not
        pd.testing.assert_frame_equal(first.test, other.test)
    else:
        assert not np.array_equal(first.source_rows["test"], other.source_rows["test"])


def test_a_class_too_small_to_stratify_twice_still_splits():
    df = make_frame(n=200)
    df.loc[:2, "y"] = "rare"  # three rows: enough for the first cut, not for the second
    splits = split_dataset(df, make_schema(), SplitConfig())
    assert "rare" in set(splits.train["y"])
    assert_disjoint(splits, make_schema())


def _tiny(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(float(n)), "y": np.arange(float(n))})


REGRESSION = {"target": "y", "task": "regression", "time_column": None, "id_column": None}

ERRORS = [
    # id, frame, schema, config, words the message must contain
    ("empty-valid", _tiny(3), REGRESSION, SplitConfig(), ["3 rows", "valid", "split.valid"]),
    (
        "all-duplicates",
        pd.DataFrame({"x": [1.0] * 50, "y": [2.0] * 50}),
        REGRESSION,
        SplitConfig(),
        ["1 rows", "after dropping 49 duplicate rows"],
    ),
    (
        "one-timestamp",
        _tiny(50).assign(t=pd.Timestamp("2024-01-01")),
        {**REGRESSION, "time_column": "t"},
        SplitConfig(),
        ["'t' has 1 distinct times", "valid", "empty"],
    ),
    (
        "too-few-ids",
        _tiny(50).assign(g=[1, 2] * 25),
        {**REGRESSION, "id_column": "g"},
        SplitConfig(),
        ["2 distinct values of id column 'g'", "empty"],
    ),
    (
        "class-only-in-newest-rows",
        pd.DataFrame(
            {
                "t": pd.date_range("2024-01-01", periods=100, freq="D"),
                "y": ["old"] * 90 + ["new"] * 10,
            }
        ),
        {"target": "y", "task": "classification", "time_column": "t", "id_column": None},
        SplitConfig(),
        ["'new' (10 rows)", "no rows in the train split", "split.train"],
    ),
    (
        "missing-target",
        _tiny(50).drop(columns="y"),
        REGRESSION,
        SplitConfig(),
        ["['y']", "not in the data"],
    ),
    (
        "missing-time-column",
        _tiny(50),
        {**REGRESSION, "time_column": "signup"},
        SplitConfig(),
        ["['signup']"],
    ),
    (
        "time-column-not-dates",
        _tiny(50).assign(t="soon"),
        {**REGRESSION, "time_column": "t"},
        SplitConfig(),
        ["time column 't'", "not dates"],
    ),
]


@pytest.mark.parametrize(
    "frame,schema,cfg,words", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_split_errors_say_what_to_change(frame, schema, cfg, words):
    with pytest.raises(SplitError) as err:
        split_dataset(frame, schema, cfg)
    for word in words:
        assert word in str(err.value)


def _overlapping(kind: str) -> tuple[Splits, dict]:
    df = make_frame(n=300)
    schema = make_schema(
        "classification",
        "when" if kind in ("time", "none") else None,
        "customer" if kind in ("id", "none") else None,
    )
    # Distinct ids and times, so the only overlap is the one made below.
    ordered = df.assign(
        customer=np.arange(300), when=pd.date_range("2024-01-01", periods=300, freq="h")
    )
    parts = {"train": np.arange(0, 200), "valid": np.arange(200, 250), "test": np.arange(250, 300)}
    if kind == "row":
        parts["valid"] = np.arange(190, 250)  # ten rows in train and valid
    if kind == "id":
        ordered.loc[260, "customer"] = ordered.loc[0, "customer"]
    if kind == "time":
        ordered.loc[260, "when"] = ordered.loc[0, "when"]
    if kind == "content":
        ordered.loc[299] = ordered.loc[0]
    frames = {name: ordered.iloc[p].reset_index(drop=True) for name, p in parts.items()}
    return Splits(**frames, summary={}, source_rows=parts), schema


@pytest.mark.parametrize(
    "kind,words",
    [
        ("none", None),
        ("row", "10 input row(s) are in both train and valid"),
        ("id", "id column 'customer' are in both train and test"),
        ("time", "times in train reach into those of test"),
        ("content", "1 identical row(s) are in both train and test"),
    ],
)
def test_assert_disjoint_catches_each_overlap(kind, words):
    splits, schema = _overlapping(kind)
    if words is None:
        assert_disjoint(splits, schema)
        return
    with pytest.raises(SplitError, match="splits overlap") as err:
        assert_disjoint(splits, schema)
    assert words in str(err.value)


def test_summary_is_json_ready():
    import json

    splits = split_dataset(
        make_frame(), make_schema("classification", "when", "customer"), SplitConfig()
    )
    decoded = json.loads(json.dumps(splits.summary))
    assert decoded["time_range"]["train"]["min"] == splits.train["when"].min().isoformat()
    assert decoded["ids"]["test"] == splits.test["customer"].nunique()


def test_uneven_groups_are_reported():
    df = make_frame(n=1_000)
    df.loc[:599, "customer"] = -1  # one id holds 60% of the rows
    schema = make_schema("classification", ids="customer")
    splits = split_dataset(df, schema, SplitConfig())
    assert_disjoint(splits, schema)
    assert any("a few ids hold many rows" in w for w in splits.summary["warnings"])
    even = split_dataset(make_frame(n=1_000), schema, SplitConfig())
    assert even.summary["warnings"] == []


def test_category_dtype_target_as_ingest_gives_it():
    df = make_frame(n=600)
    df["y"] = pd.Categorical(df["y"], categories=["a", "b", "c", "never-seen"])
    splits = split_dataset(df, make_schema(), SplitConfig())
    assert splits.summary["stratified"] is True
    assert set(splits.summary["class_balance"]["test"]) == {"a", "b", "c"}
    assert splits.summary["warnings"] == []


def test_temporal_group_drops_train_rows_from_the_test_period_and_says_so():
    # Customer 1 enters first and comes back in the last days; customer 2..n enter one a day.
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    df = pd.DataFrame(
        {"when": days, "customer": np.arange(40), "x": np.arange(40.0), "y": np.arange(40.0)}
    )
    late = pd.DataFrame(
        {"when": days[-3:], "customer": [0, 0, 0], "x": [1.0, 2.0, 3.0], "y": [0.0, 0, 0]}
    )
    frame = pd.concat([df, late], ignore_index=True)
    schema = {"target": "y", "task": "regression", "time_column": "when", "id_column": "customer"}
    splits = split_dataset(frame, schema, SplitConfig())
    assert splits.summary["rows"]["newer_than_test_dropped"] == 3
    assert any("newer than the test period" in w for w in splits.summary["warnings"])
    assert splits.train["when"].max() < splits.test["when"].min()
    assert set(splits.train["customer"]) & set(splits.test["customer"]) == set()
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 40


def test_assert_disjoint_catches_a_training_row_inside_the_test_period():
    splits, schema = _overlapping("none")
    train = splits.train.copy()
    train.loc[0, "when"] = splits.test["when"].max()
    # Its id entered early (another row of the id is old), so only the row's own time is new.
    extra = splits.train.iloc[[1]].assign(customer=train.loc[0, "customer"])
    bad = Splits(
        pd.concat([train, extra], ignore_index=True), splits.valid, splits.test, summary={}
    )
    with pytest.raises(SplitError, match="train holds rows as new as the test period"):
        assert_disjoint(bad, schema)


@pytest.mark.parametrize(
    "values",
    [
        np.repeat(np.arange(1987, 2021), 10),  # a year
        1_600_000_000 + np.arange(340) * 86_400,  # epoch seconds
        (1_600_000_000 + np.arange(340) * 86_400) * 1000,  # epoch milliseconds
        np.repeat(np.arange(1987, 2021), 10).astype(str),  # a year read as text
    ],
    ids=["year", "epoch-s", "epoch-ms", "year-as-text"],
)
def test_a_numeric_time_column_splits_by_time(values):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": rng.permutation(values), "x": rng.normal(size=len(values))})
    df["y"] = df["x"] * 2
    schema = {"target": "y", "task": "regression", "time_column": "t", "id_column": None}
    splits = split_dataset(df, schema, SplitConfig())
    key = {n: pd.to_numeric(f["t"]) for n, f in splits.frames().items()}
    assert key["train"].max() < key["valid"].min() and key["valid"].max() < key["test"].min()
    assert splits.summary["strategy"] == "temporal"


def test_the_split_checks_itself(monkeypatch):
    import kubeloop.components.split as split_module

    real = split_module._shuffled

    def leaky(*args, **kwargs):
        parts, stratified = real(*args, **kwargs)
        parts["test"] = np.concatenate([parts["test"], parts["train"][:3]])
        return parts, stratified

    monkeypatch.setattr(split_module, "_shuffled", leaky)
    with pytest.raises(SplitError, match="3 input row.s. are in both train and test"):
        split_dataset(make_frame(n=300), make_schema(), SplitConfig())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicated_marks_what_pandas_marks(seed):
    from kubeloop.components.split import _duplicated

    hashes = np.random.default_rng(seed).integers(0, 50, 1000).astype(np.uint64)
    expected = pd.Series(hashes).duplicated(keep="first").to_numpy()
    assert (_duplicated(hashes) == expected).all()
    assert _duplicated(np.zeros(0, dtype=np.uint64)).size == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_values_are_every_pairs_intersection(seed):
    from kubeloop.components.split import _shared_values

    rng = np.random.default_rng(seed)
    parts = {n: rng.integers(0, 400, size) for n, size in
             (("train", 300), ("valid", 60), ("test", 80))}
    shared = _shared_values(parts)
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        expected = np.intersect1d(parts[a], parts[b])
        assert shared.get((a, b), np.zeros(0, int)).tolist() == expected.tolist()
    assert _shared_values({"train": np.arange(5), "valid": np.arange(5, 9),
                           "test": np.arange(9, 12)}) == {}


@pytest.mark.parametrize("n,weights", [(10_000, [0.5, 0.5]), (9_999, [0.9, 0.07, 0.03]),
                                       (301, [0.98, 0.01, 0.01])])
def test_stratified_cut_keeps_each_class_share_within_a_row(n, weights):
    rng = np.random.default_rng(4)
    labels = rng.choice(len(weights), size=n, p=weights)
    df = pd.DataFrame({"y": labels, "x": rng.normal(size=n)})
    schema = {"target": "y", "task": "classification", "time_column": None, "id_column": None,
              "columns": {"y": {"role": "target"}, "x": {"role": "feature"}}}
    splits = split_dataset(df, schema, SplitConfig())
    sizes = {name: len(f) for name, f in splits.frames().items()}
    assert sum(sizes.values()) == n
    for name, frame in splits.frames().items():
        counts = frame["y"].value_counts()
        for k, total in pd.Series(labels).value_counts().items():
            # Two largest-remainder cuts: each class within two rows of its share.
            assert abs(counts.get(k, 0) - total * sizes[name] / n) <= 2, (name, k)
