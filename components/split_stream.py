"""The split, batch by batch: Parquet in, three Parquet files out, never the whole table.

``split.plan_split`` decides on the key columns alone (target, time, id) and one
64-bit hash per row, so only those are held: at 100 million rows, the hashes are
800 MB and the keys what their types take, against the whole table for
``split_dataset``. The cut then reads the input once, front to back, and sends
each batch's rows to the split the plan gave them. The splits come out exactly
as ``split_dataset`` cuts them in memory (the tests compare the two), with the
input's column types: the batches are filtered in Arrow, never rebuilt.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from kubeloop.components.split import (
    SPLIT_NAMES,
    Splits,
    _require_columns,
    _row_hashes,
    key_columns,
    plan_split,
)
from kubeloop.tables import (
    BATCH_BYTES,
    BATCH_ROWS,
    ParquetSink,
    iter_batches,
    read_schema,
    to_pandas,
)

if TYPE_CHECKING:
    from kubeloop.config import SplitConfig, StorageConfig
    from kubeloop.schema import Schema

_DROPPED = -1  # a duplicate, or a train/valid row from the test period


def _keys_and_hashes(src: str, keys: list[str], storage: StorageConfig | None,
                     batch_rows: int, batch_bytes: int) -> tuple[Any, np.ndarray]:
    """The key columns of every row (one frame) and every row's hash, read in batches."""
    import pandas as pd

    key_parts, hashes = [], []
    for batch in iter_batches(src, max_rows=batch_rows, max_bytes=batch_bytes, storage=storage):
        frame = to_pandas(batch)
        # The row hash is a function of the row's values only, so per-batch hashes
        # are the hashes of the whole frame (``_row_hashes``).
        hashes.append(_row_hashes(frame))
        key_parts.append(frame[keys])
    if not key_parts:
        empty = to_pandas(pa.Table.from_batches([], schema=read_schema(src, storage)))
        return empty[keys], np.zeros(0, dtype=np.uint64)
    # Categories may differ between batches; concat unions them as one read would.
    frame = pd.concat(key_parts, ignore_index=True)
    for name in keys:
        if any(isinstance(p[name].dtype, pd.CategoricalDtype) for p in key_parts):
            frame[name] = frame[name].astype("category")
    return frame, np.concatenate(hashes)


def split_parquet(
    src: str | os.PathLike[str],
    outs: dict[str, str | os.PathLike[str]],
    schema: Schema,
    cfg: SplitConfig,
    *,
    storage: StorageConfig | None = None,
    batch_rows: int = BATCH_ROWS,
    batch_bytes: int = BATCH_BYTES,
) -> Splits:
    """Split the Parquet table at ``src`` into ``outs["train"|"valid"|"test"]``.

    Returns the plan (``plan_split``): key-column frames, the summary, and each
    split's source rows. Each output appears only once complete (``ParquetSink``).
    """
    src = os.fspath(src)
    table_schema = read_schema(src, storage)
    _require_columns(list(table_schema.names), schema)
    keys, hashes = _keys_and_hashes(src, key_columns(schema), storage, batch_rows, batch_bytes)
    plan = plan_split(keys, hashes, schema, cfg)
    del keys, hashes
    where = np.full(plan.summary["rows"]["input"], _DROPPED, dtype=np.int8)
    for i, name in enumerate(SPLIT_NAMES):
        where[plan.source_rows[name]] = i
    # An error while cutting reaches every sink's exit, so none of the three commits.
    with ExitStack() as stack:
        sinks = [stack.enter_context(ParquetSink(outs[name], schema=table_schema, storage=storage))
                 for name in SPLIT_NAMES]
        offset = 0
        for batch in iter_batches(src, max_rows=batch_rows, max_bytes=batch_bytes, storage=storage):
            mine = where[offset:offset + batch.num_rows]
            offset += batch.num_rows
            for i, sink in enumerate(sinks):
                mask = mine == i
                if mask.any():
                    sink.write(batch.filter(pa.array(mask)))
    return plan
