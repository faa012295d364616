"""Which training rows a candidate sees: a seeded sample of at most ``train.max_rows``
rows (stratified by class, or whole id groups when the split groups by id), read
from the training split's Parquet file without loading the rest of it.

The reader is private to training: it reads the target (and id) column first,
picks row positions, then takes them one row group and one column at a time, so
the peak is the sample plus one column chunk, not the split.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from kubeloop.components.train.base import (
    TrainError,
)
from kubeloop.sampling import stratified_positions


def subsample_rows(y: Any, max_rows: int, *, stratify: bool, seed: int) -> np.ndarray | None:
    """Sorted positions of at most ``max_rows`` rows (stratified on ``y`` when asked),
    or None when every row fits."""
    y = np.asarray(y)
    if y.size <= max_rows:
        return None
    positions = np.arange(y.size)
    try:
        kept, _ = train_test_split(
            positions, train_size=max_rows, random_state=seed, stratify=y if stratify else None
        )
    except ValueError:
        # A class with a single row cannot be stratified: sample plainly.
        kept, _ = train_test_split(positions, train_size=max_rows, random_state=seed)
    # Rows in their original order keep the copy below a sequential read.
    return np.sort(kept)


def _rows(
    X: pd.DataFrame, y: np.ndarray, positions: np.ndarray | None
) -> tuple[pd.DataFrame, np.ndarray]:
    if positions is None:
        return X, y
    return X.take(positions), y[positions]


def group_sample_rows(groups: Any, max_rows: int, *, seed: int) -> np.ndarray | None:
    """Sorted positions of whole groups, drawn in a seeded order while they fit in
    ``max_rows`` rows (at least one group), or None when every row fits. A group is
    never cut: its rows share an id the split kept on one side, and a half-seen id
    would let a model learn the id."""
    codes, _ = pd.factorize(pd.Series(np.asarray(groups)), use_na_sentinel=False)
    if codes.size <= max_rows:
        return None
    sizes = np.bincount(codes)
    order = np.random.default_rng(seed).permutation(sizes.size)
    running = np.cumsum(sizes[order])
    n_groups = max(1, int(np.searchsorted(running, max_rows, side="right")))
    chosen = np.zeros(sizes.size, dtype=bool)
    chosen[order[:n_groups]] = True
    return np.flatnonzero(chosen[codes])


def sample_rows(
    y: Any, max_rows: int, *, classification: bool, seed: int, groups: Any = None
) -> np.ndarray | None:
    """The training sample's sorted positions (None: every row): whole groups when
    ``groups`` is given, else stratified by class for classification."""
    if groups is not None:
        return group_sample_rows(groups, max_rows, seed=seed)
    y = np.asarray(y)
    if y.size <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    if not classification:
        return np.sort(rng.choice(y.size, max_rows, replace=False))
    return stratified_positions(y, max_rows, rng)


def _take_parquet(path: str, positions: np.ndarray | None, columns: list[str]) -> pd.DataFrame:
    """``positions`` (sorted; None for all) of ``columns``, read one row group and
    one column at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if positions is None:
        table = pf.read(columns=columns)
    else:
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        pieces = []
        for group in range(pf.num_row_groups):
            lo, hi = np.searchsorted(positions, [starts[group], starts[group + 1]])
            if hi > lo:
                local = pa.array(positions[lo:hi] - starts[group])
                pieces.append(pa.table({c: pf.read_row_group(group, columns=[c]).column(0).take(local)
                                        for c in columns}))
        table = pa.concat_tables(pieces)
    df = table.to_pandas(split_blocks=True, self_destruct=True)
    for column in df.select_dtypes(include="object").columns:
        # Arrow gives None for a missing string; the features step expects NaN.
        df[column] = df[column].mask(df[column].isna(), np.nan)
    return df


def _codes(column: Any, *, sort: bool, encode: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a column's values and where it holds a value (not null, not
    NaN). ``sort``: codes in the values' sorted order, as ``np.unique`` numbers them,
    so a stratified draw on the codes is the draw on the values; otherwise in order of
    first appearance (with missing as one more value), as ``pd.factorize`` numbers them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = pc.is_valid(array)
    if pa.types.is_floating(array.type):
        valid = pc.and_(valid, pc.invert(pc.is_nan(array)))
    valid_np = valid.to_numpy(zero_copy_only=False)
    if not encode:  # only where the values are (a regression target)
        return np.zeros(len(array), dtype=np.int8), valid_np
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    encoded = pc.dictionary_encode(array, null_encoding="encode" if not sort else "mask")
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    if sort:
        values = encoded.dictionary.to_numpy(zero_copy_only=False)
        # One more slot, at index -1, keeps a missing value's code -1.
        rank = np.full(len(values) + 1, -1, dtype=codes.dtype)
        rank[np.argsort(values, kind="stable")] = np.arange(len(values))
        codes = rank[codes]
    return codes, valid_np


def read_training_sample(
    path: str | os.PathLike[str],
    schema: dict[str, Any],
    max_rows: int,
    *,
    seed: int,
) -> tuple[pd.DataFrame, int]:
    """The labelled training rows a candidate trains on, at most ``max_rows`` of them,
    and how many labelled rows the split holds. Unlabelled rows are never sampled."""
    import pyarrow.parquet as pq

    name = os.fspath(path)
    if not os.path.isfile(name):
        raise TrainError(f"{name}: training split not found")
    target, id_column = schema["target"], schema.get("id_column")
    keys = [target] + ([id_column] if id_column else [])
    pf = pq.ParquetFile(name)
    columns = [str(c) for c in pf.schema_arrow.names]
    missing = [c for c in keys if c not in columns]
    if missing:
        raise TrainError(f"{name}: the training split has no column {missing}")
    # Integer codes, not Python objects: 10M string labels as pandas objects would
    # cost more than the sample.
    classification = schema["task"] == "classification"
    y, valid = _codes(pf.read(columns=[target]).column(0), sort=True, encode=classification)
    labelled = np.flatnonzero(valid)
    groups = None
    if id_column:
        groups = _codes(pf.read(columns=[id_column]).column(0), sort=False)[0][labelled]
    picked = sample_rows(
        y[labelled], max_rows, classification=classification, seed=seed,
        groups=groups,
    )
    positions = labelled if picked is None else labelled[picked]
    if positions.size == pf.metadata.num_rows:
        positions = None
    return _take_parquet(name, positions, columns), int(labelled.size)
