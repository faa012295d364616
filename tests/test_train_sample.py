"""Training on a sample: which rows, read how, the learning-curve rule and the
memory limit the sample is sized to, on real files and real fits."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubeloop.components.features import fit_features
from kubeloop.components.ingest import read_parquet, write_parquet
from kubeloop.components.train import (
    LARGE_ENOUGH,
    MORE_DATA,
    MORE_ROWS,
    UNDEFINED,
    TrainError,
    candidate_notes,
    curve_verdict,
    group_sample_rows,
    leaderboard_markdown,
    read_training_sample,
    sample_rows,
    sample_size,
    train_candidate,
    train_step,
)
from kubeloop.components.validate import infer_schema
from kubeloop.config import Config, TrainConfig, ValidationConfig
from kubeloop.datagen import make_churn
from kubeloop.memory import (
    MemoryLimitError,
    cgroup_memory_limit,
    limit_files,
    parse_limit,
    size_to_limit,
)

GiB = 2**30


# ---------------------------------------------------------------------------
# Which rows


def test_stratified_sample_keeps_class_shares_and_is_seeded():
    y = np.array(["a"] * 9000 + ["b"] * 1000)
    rows = sample_rows(y, 2000, classification=True, seed=1)
    assert len(rows) == 2000 and np.all(np.diff(rows) > 0)
    assert (y[rows] == "b").sum() == 200
    assert np.array_equal(rows, sample_rows(y, 2000, classification=True, seed=1))
    assert not np.array_equal(rows, sample_rows(y, 2000, classification=True, seed=2))
    assert sample_rows(y, 10_000, classification=True, seed=1) is None


@pytest.mark.parametrize("max_rows", [1, 7, 50, 333, 999])
def test_group_sample_takes_whole_groups_within_the_cap(max_rows):
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 120, size=1000).astype(str)
    groups[::97] = None  # missing ids form one group of their own
    rows = group_sample_rows(groups, max_rows, seed=3)
    sizes = pd.Series(groups).value_counts(dropna=False)
    picked = pd.Series(groups[rows]).value_counts(dropna=False)
    # Every sampled group is whole.
    assert all(picked[g] == sizes[g] for g in picked.index)
    # Within the cap, except that one group is always taken.
    assert len(rows) <= max_rows or len(picked) == 1
    assert np.array_equal(rows, group_sample_rows(groups, max_rows, seed=3))


def test_group_sample_is_none_when_every_row_fits():
    assert group_sample_rows(["a", "b", "a"], 3, seed=0) is None


# ---------------------------------------------------------------------------
# Reading the sample from the split's file


@pytest.fixture(scope="module")
def churn_file(tmp_path_factory):
    df = make_churn(6000, seed=5)
    df.loc[df.index[::50], "churned"] = None  # unlabelled rows are never sampled
    schema = infer_schema(df.dropna(subset=["churned"]), target="churned", positive_label="yes",
                          cfg=ValidationConfig())
    path = tmp_path_factory.mktemp("split") / "train.parquet"
    write_parquet(df, path)
    # Several row groups, so the reader has to find rows across them.
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=1000)
    return path, schema


def test_reader_takes_the_same_rows_as_sampling_the_whole_frame(churn_file):
    path, schema = churn_file
    whole = read_parquet(path)
    labelled = whole[whole["churned"].notna()].reset_index(drop=True)
    sample, n_labelled = read_training_sample(path, schema, 1500, seed=7)
    assert n_labelled == len(labelled)
    assert len(sample) == 1500
    expected = labelled.iloc[sample_rows(labelled["churned"].to_numpy(), 1500,
                                          classification=True, seed=7)].reset_index(drop=True)
    pd.testing.assert_frame_equal(sample.reset_index(drop=True), expected, check_dtype=False,
                                  check_categorical=False)
    # Missing strings are NaN, as the features step expects.
    for column in sample.select_dtypes(include="object").columns:
        assert not any(v is None for v in sample[column])


def test_reader_reads_every_labelled_row_below_the_cap(churn_file):
    path, schema = churn_file
    sample, n_labelled = read_training_sample(path, schema, 100_000, seed=7)
    assert len(sample) == n_labelled and sample["churned"].notna().all()


def test_reader_names_a_missing_target(churn_file, tmp_path):
    path, schema = churn_file
    with pytest.raises(TrainError, match="no column"):
        read_training_sample(path, {**schema, "target": "nope"}, 100, seed=0)
    with pytest.raises(TrainError, match="not found"):
        read_training_sample(tmp_path / "missing.parquet", schema, 100, seed=0)


def test_grouped_reader_keeps_ids_whole(tmp_path):
    df = make_churn(3000, seed=2)
    df["customer_id"] = [f"c{i // 5}" for i in range(len(df))]  # five rows per id
    schema = infer_schema(df, target="churned", id_column="customer_id", positive_label="yes",
                          cfg=ValidationConfig())
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=700)
    sample, _ = read_training_sample(path, schema, 1003, seed=4)
    counts = sample["customer_id"].value_counts()
    assert (counts == 5).all() and len(sample) == 1000


# ---------------------------------------------------------------------------
# The learning-curve rule


@pytest.mark.parametrize(
    ("low", "improvement", "half", "capped", "verdict"),
    [
        (0.004, 0.01, 0.80, True, MORE_ROWS),  # beyond noise, and worth having
        (0.004, 0.01, 0.80, False, MORE_DATA),  # ... but every row was used
        (0.001, 0.004, 0.80, True, MORE_ROWS),  # exactly half a percent of 0.80
        (0.001, 0.0039, 0.80, True, LARGE_ENOUGH),  # beyond noise, but too small to matter
        (0.0, 0.02, 0.80, True, LARGE_ENOUGH),  # an interval touching 0 is noise
        (-0.01, 0.01, 0.80, True, LARGE_ENOUGH),
        (-0.01, -0.02, 0.80, False, LARGE_ENOUGH),  # the half did better
        (0.5, 1.0, -150.0, True, MORE_ROWS),  # a lower-is-better metric, gain in its direction
        (0.5, 0.6, -150.0, True, LARGE_ENOUGH),  # below 0.75 = half a percent of 150
        (None, 0.01, 0.80, True, UNDEFINED),  # an undefined interval says nothing
        (0.004, 0.01, None, True, UNDEFINED),  # no score for the half
    ],
)
def test_curve_verdict(low, improvement, half, capped, verdict):
    assert curve_verdict(low, improvement, half, capped=capped) == verdict


def _frames(n: int, seed: int = 3):
    df = make_churn(n, seed=seed)
    schema = infer_schema(df, target="churned", positive_label="yes", cfg=ValidationConfig())
    cut = int(n * 0.75)
    train, valid = df.iloc[:cut], df.iloc[cut:]
    return train, valid, schema, fit_features(train, schema)


def test_candidates_train_on_the_sample_and_report_the_curve():
    train, valid, schema, transformer = _frames(4000)
    cfg = TrainConfig(search_iterations=1, search_max_rows=500, max_rows=1200, seed=0)
    _, record = train_candidate("hist_gradient_boosting", train, valid, transformer, schema, cfg,
                                metric="roc_auc")
    assert record["n_train_rows"] == 1200 and record["n_split_rows"] == len(train)
    curve = record["learning_curve"]
    assert curve["n_rows"] == 1200 and curve["n_half_rows"] == 600 and curve["capped"]
    assert curve["full_score"] == pytest.approx(record["valid_score"])
    assert curve["low"] <= curve["improvement"] <= curve["high"]
    assert curve["verdict"] == curve_verdict(curve["low"], curve["improvement"],
                                             curve["half_score"], capped=True)
    board = leaderboard_markdown([record], "roc_auc", chosen="hist_gradient_boosting")
    assert "sample of 1,200 of 3,000" in board and curve["verdict"] in board


def test_a_model_starved_of_rows_is_told_more_rows_help():
    # 300 of 9,000 rows of a table whose signal needs thousands: on 3,000 validation
    # rows the full sample beats its half by about 0.01 ROC-AUC, its interval's lower
    # end above 0 (measured: 0.0025 to 0.017).
    train, valid, schema, transformer = _frames(12_000, seed=11)
    cfg = TrainConfig(search_iterations=1, search_max_rows=300, max_rows=300, seed=0)
    _, record = train_candidate("linear", train, valid, transformer, schema, cfg, metric="roc_auc")
    assert record["learning_curve"]["verdict"] == MORE_ROWS
    # It is a warning on the candidate, so the model card and the run summary carry it.
    assert any(MORE_ROWS in note for note in candidate_notes(record))


# ---------------------------------------------------------------------------
# The memory limit


@pytest.mark.parametrize(
    ("text", "limit"),
    [("max\n", None), ("4294967296\n", 4 * GiB), ("9223372036854771712\n", None), ("", None),
     ("0", None), ("garbage", None), ("536870912", 512 * 2**20)],
)
def test_parse_limit(text, limit):
    assert parse_limit(text) == limit


def test_cgroup_limit_v2_then_v1_then_none(tmp_path):
    # As inside a container: the process's cgroup is the root.
    inside = "0::/\n4:memory:/\n3:cpu:/"
    assert cgroup_memory_limit(str(tmp_path), inside) is None
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(3 * GiB))
    assert cgroup_memory_limit(str(tmp_path), inside) == 3 * GiB
    (tmp_path / "memory.max").write_text(str(2 * GiB))
    assert cgroup_memory_limit(str(tmp_path), inside) == 2 * GiB
    (tmp_path / "memory.max").write_text("max")
    assert cgroup_memory_limit(str(tmp_path), inside) == 3 * GiB


def test_cgroup_limit_of_a_nested_cgroup_and_its_parents(tmp_path):
    nested = tmp_path / "memory" / "pods" / "step"
    nested.mkdir(parents=True)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    (nested / "memory.limit_in_bytes").write_text(str(4 * GiB))
    proc = "4:memory:/pods/step\n0::/"
    assert cgroup_memory_limit(str(tmp_path), proc) == 4 * GiB
    # A parent's tighter limit binds the child.
    (tmp_path / "memory" / "pods" / "memory.limit_in_bytes").write_text(str(GiB))
    assert cgroup_memory_limit(str(tmp_path), proc) == GiB


@pytest.mark.parametrize(
    ("proc", "files"),
    [
        ("0::/", ["R/memory.max"]),
        ("0::/a/b", ["R/a/b/memory.max", "R/a/memory.max", "R/memory.max"]),
        ("4:memory:/x\n3:cpu,cpuacct:/y", ["R/memory/x/memory.limit_in_bytes",
                                            "R/memory/memory.limit_in_bytes"]),
        ("5:cpu,memory:/", ["R/memory/memory.limit_in_bytes"]),
        ("garbage", []),
    ],
)
def test_limit_files(proc, files):
    assert limit_files(proc, "R") == files


@pytest.mark.parametrize(
    ("wanted", "limit", "expected"),
    [
        (2_000_000, None, 2_000_000),  # no limit: the configured cap
        (2_000_000, 4 * GiB, 2_000_000),  # it fits
        (2_000_000, 2 * GiB, (2 * GiB - GiB // 2) // 1000),  # shrunk to the limit
        (1_000, 2 * GiB, 1_000),
    ],
)
def test_size_to_limit(wanted, limit, expected):
    kwargs = dict(bytes_per_row=1000, reserved=GiB // 2, minimum=1000, what="the sample",
                  limit_key="resources.train.memory_limit", rows_key="train.max_rows")
    assert size_to_limit(wanted, limit, **kwargs) == expected


def test_size_to_limit_fails_naming_the_limit_and_the_keys():
    with pytest.raises(MemoryLimitError, match=r"512 MiB.*raise resources\.train\.memory_limit "
                                               r"\(or lower train\.max_rows\)"):
        size_to_limit(2_000_000, 512 * 2**20, bytes_per_row=1000, reserved=512 * 2**20 - 100_000,
                      minimum=1000, what="the sample", limit_key="resources.train.memory_limit",
                      rows_key="train.max_rows")


def test_default_sample_fits_a_4gib_pod_at_20_columns():
    schema = {"columns": {f"x{i}": {"role": "feature", "kind": "numeric"} for i in range(20)},
              "target": "y", "task": "regression"}
    cfg = TrainConfig()
    assert sample_size(cfg, schema, 300_000, 4 * GiB) == cfg.max_rows == 2_000_000
    assert sample_size(cfg, schema, 300_000, 2 * GiB) < cfg.max_rows


def _step_files(tmp_path):
    train, valid, schema, transformer = _frames(3000)
    paths = {"train": tmp_path / "train.parquet", "valid": tmp_path / "valid.parquet",
             "transformer": tmp_path / "t.joblib", "schema": tmp_path / "schema.json"}
    write_parquet(train, paths["train"])
    write_parquet(valid, paths["valid"])
    joblib.dump(transformer, paths["transformer"])
    paths["schema"].write_text(json.dumps(schema))
    return {k: str(v) for k, v in paths.items()}


def test_train_step_sizes_its_sample_to_the_memory_limit(tmp_path):
    p = _step_files(tmp_path)
    config = Config.from_dict({"target": "churned", "train": {"search_iterations": 1}}).to_dict()
    args = (p["train"], p["valid"], p["transformer"], p["schema"], config)
    # Room for a little over 1,000 rows of this table (about 20 feature columns).
    schema = json.loads(open(p["schema"]).read())
    from kubeloop.components.train import BYTES_PER_CELL, RESERVED_BYTES, VALID_BYTES_PER_CELL
    from kubeloop.schema import feature_columns

    n_cols = len(feature_columns(schema))
    reserved = RESERVED_BYTES + 750 * n_cols * VALID_BYTES_PER_CELL
    limit = reserved + 1500 * n_cols * BYTES_PER_CELL
    record = train_step("linear", *args, str(tmp_path / "m"), memory_limit=limit)
    assert record["max_rows"] == 1500 and record["n_train_rows"] == 1500
    assert record["n_split_rows"] == 2250 and record["memory_limit_bytes"] == limit
    with pytest.raises(MemoryLimitError, match="resources.train.memory_limit"):
        train_step("linear", *args, str(tmp_path / "m2"), memory_limit=reserved)
    assert not (tmp_path / "m2").exists()


@pytest.mark.parametrize("max_rows,fitted", [(1000, 1000), (5000, 2250)])
def test_features_step_fits_on_the_candidates_sample_of_a_long_split(tmp_path, max_rows, fitted):
    from types import SimpleNamespace

    from kubeloop.components.features import features_op

    p = _step_files(tmp_path)
    config = Config.from_dict({"target": "churned", "train": {"max_rows": max_rows}}).to_dict()
    out = SimpleNamespace(path=str(tmp_path / "fitted.joblib"), metadata={})
    summary = SimpleNamespace(path=str(tmp_path / "features.json"), metadata={})
    features_op.python_func(train=SimpleNamespace(path=p["train"]), schema=SimpleNamespace(path=p["schema"]),
                            transformer=out, summary=summary, config=config)
    info = json.loads(open(summary.path).read())
    assert (info["fitted_rows"], info["split_rows"]) == (fitted, 2250)
    # The transformer was fitted on exactly the rows the candidates draw.
    schema = json.loads(open(p["schema"]).read())
    sample, _ = read_training_sample(p["train"], schema, max_rows, seed=Config.from_dict(config).train.seed)
    expected = fit_features(sample, schema).transform(sample.head(50))
    pd.testing.assert_frame_equal(joblib.load(out.path).transform(sample.head(50)), expected)


# ---------------------------------------------------------------------------
# Float32 while fitting


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("early_stopping", ["auto", True, False])
def test_float32_holdout_boosting_fits_the_stock_model(task, early_stopping):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from kubeloop.components.train import make_head

    rng = np.random.default_rng(0)
    n = 12_000  # above 10,000 rows: "auto" stops early on a holdout
    X = pd.DataFrame(rng.standard_normal((n, 5), dtype=np.float32), columns=[f"num__x{i}" for i in range(5)])
    X["cat__c"] = rng.integers(0, 4, n).astype(np.float32)
    X.loc[X.index[::31], "cat__c"] = np.nan
    signal = X["num__x0"].to_numpy() + (X["cat__c"].to_numpy() == 1) + rng.standard_normal(n)
    y = np.where(signal > 0.3, "yes", "no") if task == "classification" else signal
    params = {"early_stopping": early_stopping, "max_iter": 60}
    head = make_head("hist_gradient_boosting", task, ["cat__c"], params, seed=5)
    stock_cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    stock = stock_cls(random_state=5, categorical_features=["cat__c"], **params)
    head.fit(X, y)
    stock.fit(X, y)
    # The same holdout rows, bins and trees: the same model, down to the iteration.
    assert head.n_iter_ == stock.n_iter_
    out = (lambda m: m.predict_proba(X)) if task == "classification" else (lambda m: m.predict(X))
    np.testing.assert_allclose(out(head), out(stock), rtol=1e-6, atol=1e-9)
    assert head.get_params()["early_stopping"] == early_stopping


def test_a_ulimit_on_the_process_is_a_limit_too():
    import subprocess
    import sys

    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30)); "
            "from kubeloop.memory import cgroup_memory_limit; print(cgroup_memory_limit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 0 < int(out.stdout) <= 3 * GiB


@pytest.mark.parametrize(
    ("task", "labels"),
    [("classification", np.array([0, 1, 1, 2] * 500)), ("classification", np.array([True, False] * 1000)),
     ("classification", pd.Categorical(["b", "a", "c", "a"] * 500)), ("regression", np.linspace(0, 1, 2000))],
)
def test_reader_samples_any_target_type_as_the_frame_sampler_does(tmp_path, task, labels):
    from kubeloop.components.train import _sample_frame

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.standard_normal(2000), "y": labels,
                       "id": rng.integers(0, 400, 2000).astype(str)})
    if task == "regression":
        df.loc[::9, "y"] = np.nan
    df.loc[::13, "id"] = None
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=300)
    for schema in ({"target": "y", "task": task}, {"target": "y", "task": task, "id_column": "id"}):
        sample, n = read_training_sample(path, schema, 700, seed=2)
        expected, n_frame = _sample_frame(read_parquet(path), schema, 700, seed=2)
        assert n == n_frame == int(df["y"].notna().sum())
        assert sample["x"].tolist() == expected["x"].tolist()


@pytest.mark.parametrize(
    ("counts", "max_rows"),
    [([9000, 1000], 2000), ([9990, 9, 1], 100), ([5, 5, 5], 4), ([1, 1, 1, 1000], 3), ([333, 333, 334], 999)],
)
def test_stratified_sample_sizes_every_class_by_its_share(counts, max_rows):
    y = np.repeat(np.arange(len(counts)), counts)
    rows = sample_rows(y, max_rows, classification=True, seed=0)
    assert len(rows) == max_rows and len(np.unique(rows)) == max_rows
    got = np.bincount(y[rows], minlength=len(counts))
    share = np.array(counts) * max_rows / sum(counts)
    # Every class is in the sample when there is room for one row each, and each
    # is within one row of its share, but for the one-row floor.
    if max_rows >= len(counts):
        assert (got >= 1).all()
    assert (np.abs(got - share) <= np.maximum(1, 1 + len(counts))).all()
