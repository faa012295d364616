"""One candidate from split frames or files: what a pipeline task (and a plain script) runs."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from kubeloop.components.train.base import (
    BASELINE,
)
from kubeloop.components.train.baseline import (
    _try_compare_with_baseline,
    baseline_candidate,
)
from kubeloop.components.train.curve import (
    learning_curve,
)
from kubeloop.components.train.inputs import model_inputs
from kubeloop.components.train.sample import (
    read_training_sample,
    sample_rows,
)
from kubeloop.components.train.search import search_family
from kubeloop.components.train.selection import (
    candidate_to_dict,
    compose_model,
)
from kubeloop.config import TrainConfig

# Memory a train step needs besides its sample (see TrainConfig.max_rows for the
# bytes per sampled row): the imports and the fitted features step (the 256 MiB
# import floor, doubled for the model's code and buffers), then each validation
# row's raw and float32 copies.
RESERVED_BYTES = 512 * 2**20
BYTES_PER_CELL = 48
VALID_BYTES_PER_CELL = 12
# A sample smaller than this is no basis for choosing a model: fail instead.
MIN_SAMPLE_ROWS = 1_000


def _sample_frame(
    df: pd.DataFrame, schema: dict[str, Any], max_rows: int, seed: int
) -> tuple[pd.DataFrame, int]:
    """The labelled rows of ``df``, at most ``max_rows`` of them (as
    ``read_training_sample`` picks them from a file), and how many there were."""
    target, id_column = schema["target"], schema.get("id_column")
    labelled = df[df[target].notna()] if df[target].isna().any() else df
    groups = labelled[id_column].to_numpy() if id_column and id_column in labelled else None
    positions = sample_rows(labelled[target].to_numpy(), max_rows,
                            classification=schema["task"] == "classification", seed=seed,
                            groups=groups)
    return (labelled if positions is None else labelled.iloc[positions]), len(labelled)


def train_candidate(
    family: str,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    transformer: Any,
    schema: dict[str, Any],
    cfg: TrainConfig,
    *,
    metric: str,
    max_rows: int | None = None,
    n_split_rows: int | None = None,
) -> tuple[Pipeline, dict[str, Any]]:
    """Tune ``family`` (or fit the baseline) on the features step's output of a
    training sample of at most ``max_rows`` (default ``cfg.max_rows``) labelled rows,
    and return the served model (features + head) with its candidate record.
    ``n_split_rows`` is how many labelled rows the split held when ``train_df`` is
    already a sample of it."""
    max_rows = cfg.max_rows if max_rows is None else max_rows
    train_df, n_labelled = _sample_frame(train_df, schema, max_rows, cfg.seed)
    n_split_rows = n_labelled if n_split_rows is None else n_split_rows
    X_tr, y_tr = model_inputs(train_df, transformer, schema)
    X_va, y_va = model_inputs(valid_df, transformer, schema)
    common = dict(task=schema["task"], metric=metric, positive_label=schema.get("positive_label"))
    sample = {"n_split_rows": int(n_split_rows), "max_rows": int(max_rows)}
    if family == BASELINE:
        result = baseline_candidate(X_tr, y_tr, X_va, y_va, **common)
        return compose_model(transformer, result.estimator), {**candidate_to_dict(result), **sample}
    result = search_family(family, X_tr, y_tr, X_va, y_va, cfg=cfg, **common)
    record = {**candidate_to_dict(result), **sample}
    record["vs_baseline"] = _try_compare_with_baseline(
        result, X_tr, y_tr, X_va, y_va, seed=cfg.seed, **common
    )
    id_column = schema.get("id_column")
    record["learning_curve"] = learning_curve(
        result, X_tr, y_tr, X_va, y_va, positive_label=common["positive_label"], seed=cfg.seed,
        groups=train_df[id_column].to_numpy() if id_column and id_column in train_df else None,
        capped=n_split_rows > len(X_tr),
    )
    return compose_model(transformer, result.estimator), record


def sample_size(
    cfg: TrainConfig, schema: dict[str, Any], n_valid_rows: int, limit: int | None
) -> int:
    """``train.max_rows``, or fewer when the step's memory limit holds fewer sampled
    rows; ``MemoryLimitError`` when not even ``MIN_SAMPLE_ROWS`` fit."""
    from kubeloop.memory import size_to_limit
    from kubeloop.schema import feature_columns

    n_columns = max(1, len(feature_columns(schema)))
    reserved = RESERVED_BYTES + n_valid_rows * n_columns * VALID_BYTES_PER_CELL
    return size_to_limit(
        cfg.max_rows, limit, bytes_per_row=n_columns * BYTES_PER_CELL, reserved=reserved,
        minimum=min(MIN_SAMPLE_ROWS, cfg.max_rows), what="the training sample",
        limit_key="resources.train.memory_limit", rows_key="train.max_rows",
    )


def train_step(
    family: str, train_path: str, valid_path: str, transformer_path: str, schema_path: str,
    config: dict[str, Any], model_dir: str, *, memory_limit: int | None = None,
) -> dict[str, Any]:
    """What a train (or baseline) task does, on files: fit on a sample sized to
    ``train.max_rows`` and the step's memory limit (default: its cgroup's), then
    write the served model and its candidate record into ``model_dir``."""
    import json
    import os

    import joblib
    import pyarrow.parquet as pq

    from kubeloop.components.ingest import read_parquet
    from kubeloop.config import Config
    from kubeloop.memory import cgroup_memory_limit
    from kubeloop.metric_names import primary_metric

    cfg = Config.from_dict(config)
    with open(schema_path) as f:
        schema = json.load(f)
    metric = primary_metric(schema["task"], cfg.gate.primary_metric)
    limit = cgroup_memory_limit() if memory_limit is None else memory_limit
    n_valid = pq.ParquetFile(valid_path).metadata.num_rows if os.path.isfile(valid_path) else 0
    # Sized before anything is read: a sample that cannot fit fails in seconds.
    max_rows = sample_size(cfg.train, schema, n_valid, limit)
    train_df, n_split_rows = read_training_sample(train_path, schema, max_rows, seed=cfg.train.seed)
    served, record = train_candidate(
        family, train_df, read_parquet(valid_path), joblib.load(transformer_path),
        schema, cfg.train, metric=metric, max_rows=max_rows, n_split_rows=n_split_rows,
    )
    record["memory_limit_bytes"] = limit
    os.makedirs(model_dir, exist_ok=True)
    joblib.dump(served, os.path.join(model_dir, "model.joblib"))
    with open(os.path.join(model_dir, "candidate.json"), "w") as f:
        json.dump(record, f, indent=2, allow_nan=False)
    return record
