"""The register step's inputs read from the split files: the same fingerprints,
reference sample and profile as from whole frames, without reading a split whole."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from nested_support import assert_nested_close
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from kubeloop.components.features import fit_features
from kubeloop.components.register import REFERENCE_ROWS, reference_sample
from kubeloop.components.register_data import (
    reference_rows,
    scored_rows,
    split_fingerprints,
    training_sketch,
)
from kubeloop.components.validate import infer_schema
from kubeloop.config import Config, ValidationConfig
from kubeloop.datagen import make_churn
from kubeloop.fingerprints import rows_file
from kubeloop.monitoring.profile import registration_profile
from kubeloop.schema import feature_columns
from kubeloop.tables import ParquetSink, read_parquet, read_sample

ROW_GROUP_ROWS = 300  # several row groups per split, so every read crosses them


def _write(df: pd.DataFrame, path) -> str:
    with ParquetSink(path, row_group_rows=ROW_GROUP_ROWS) as sink:
        sink.write(df)
    return str(path)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("splits")
    df = make_churn(3000, seed=5)
    df.loc[df.index[::11], "tenure_months" if "tenure_months" in df else df.columns[1]] = np.nan
    df.insert(0, "customer", np.arange(len(df)) // 3)
    schema = infer_schema(df, target="churned", positive_label="yes", id_column="customer",
                          cfg=ValidationConfig())
    parts = {"train": df.iloc[:2000], "valid": df.iloc[2000:2500], "test": df.iloc[2500:]}
    # KFP's artifact files have no suffix (".../split-op/train"): neither do these.
    paths = {name: _write(frame.reset_index(drop=True), tmp / name)
             for name, frame in parts.items()}
    frames = {name: read_parquet(path) for name, path in paths.items()}
    return frames, paths, schema


def _config(**scale):
    return Config.from_dict({"target": "churned", "monitoring": {"batch_rows": 1024},
                             "scale": scale or {}})


def test_fingerprints_from_files_equal_those_of_whole_frames(splits):
    frames, paths, schema = splits
    cfg = _config()
    whole = rows_file([frames["train"], frames["valid"]], schema,
                      exact_limit=cfg.gate.fingerprint_exact_rows,
                      false_positive_rate=cfg.gate.fingerprint_false_positive_rate)
    assert split_fingerprints([paths["train"], paths["valid"]], schema, cfg) == whole
    # With the id column: the ids' set is there too (the bytes would differ without it).
    no_ids = rows_file([frames["train"], frames["valid"]], {**schema, "id_column": None})
    assert whole != no_ids


@pytest.mark.parametrize("rows", [REFERENCE_ROWS, 500])
def test_reference_rows_are_the_rows_sample_draws_from_the_frame(splits, rows):
    frames, paths, schema = splits
    expected = pd.read_parquet(io.BytesIO(reference_sample(frames["train"], schema, rows=rows, seed=2)))
    got = reference_rows(paths["train"], schema, rows=rows, seed=2)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)


@pytest.mark.parametrize("n,columns", [(10, None), (777, ["churned"]), (5000, None)])
def test_read_sample_draws_what_dataframe_sample_draws(splits, n, columns):
    frames, paths, _ = splits
    frame = frames["train"] if columns is None else frames["train"][columns]
    expected = frame.sample(n=n, random_state=7) if n < len(frame) else frame
    got = read_sample(paths["train"], n, seed=7, columns=columns)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))


def test_profile_from_files_equals_the_profile_of_whole_frames(splits):
    frames, paths, schema = splits
    cfg = _config(sample_rows=800)  # the numeric points come from a sample of the split
    transformer = fit_features(frames["train"], schema)
    model = Pipeline([("features", transformer), ("model", HistGradientBoostingClassifier(max_iter=20, random_state=0))])
    model.fit(frames["train"][feature_columns(schema)], frames["train"]["churned"])
    kw = {"model": model, "metrics": {"f1": 0.5}, "cfg": cfg.monitoring}
    whole = registration_profile(frames["train"], schema, test_df=frames["test"], max_rows=800,
                                 category_cap=cfg.scale.category_cap, **kw)
    streamed = registration_profile(None, schema, test_df=scored_rows(paths["test"], paths["train"], max_rows=800),
                                    sketch=training_sketch(paths["train"], schema, cfg), **kw)
    assert_nested_close(streamed, whole)
    assert streamed["rows_total"] == 2000


def test_scored_rows_fall_back_to_a_training_sample(splits, tmp_path):
    frames, paths, _ = splits
    empty = _write(frames["test"].iloc[:0], tmp_path / "empty.parquet")
    got = scored_rows(empty, paths["train"], max_rows=300, seed=0)
    pd.testing.assert_frame_equal(got, frames["train"].sample(n=300, random_state=0).reset_index(drop=True))
    # A test split longer than the cap is sampled, not scored whole.
    assert len(scored_rows(paths["test"], paths["train"], max_rows=100)) == 100
