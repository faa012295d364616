"""What the register step derives from the splits, read from their files in batches.

The registry keeps no training data, only what later runs read instead of it:
the fingerprints of every train and valid row (the gate's leak check), the
training split's sketch and a reference sample (monitoring's baseline), and the
model's predictions on the test split (the profile's prediction distribution).
Each comes from the split files here without reading any split whole: the
fingerprints batch by batch (8 bytes per row are kept), the sketch in one pass
(mergeable, as a fan-out's partitions are sketched), the samples as
``DataFrame.sample`` draws them from the whole frame (``tables.read_sample``).
For a split that fits in one frame, the results are the in-memory ones; the
tests compare the two.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import pandas as pd

from kubeloop.schema import Schema, feature_columns
from kubeloop.tables import count_rows, iter_batches, iter_frames, read_sample, read_schema

if TYPE_CHECKING:
    from kubeloop.config import Config


def split_fingerprints(paths: list[str], schema: Schema, cfg: Config) -> bytes:
    """``fingerprints.rows_file`` of the splits at ``paths``, read batch by batch."""
    from kubeloop.fingerprints import fingerprint_columns, rows_file

    wanted = fingerprint_columns(schema) + ([schema["id_column"]] if schema.get("id_column") else [])

    def frames() -> Any:
        for path in paths:
            names = set(read_schema(path).names)
            # Columns the file lacks are left for rows_file to name in its error.
            columns = [c for c in dict.fromkeys(wanted) if c in names]
            yield from iter_frames(path, columns=columns, max_rows=cfg.monitoring.batch_rows)

    return rows_file(frames(), schema, exact_limit=cfg.gate.fingerprint_exact_rows,
                     false_positive_rate=cfg.gate.fingerprint_false_positive_rate)


def training_sketch(path: str, schema: Schema, cfg: Config) -> Any:
    """The training split's ``TableSketch`` over the schema's features, in one pass
    (as ``partitions.sketch_partition`` sketches a partition; the split file is
    Parquet whatever its name, which KFP chooses)."""
    import pyarrow as pa

    from kubeloop.monitoring.profile import ProfileError, schema_kinds
    from kubeloop.monitoring.sketch import TableSketch

    kinds = schema_kinds(schema)
    missing = [c for c in kinds if c not in read_schema(path).names]
    if missing:
        raise ProfileError(f"reference data lacks feature columns {missing}")
    sketch = TableSketch(kinds, sample=cfg.scale.sample_rows, category_cap=cfg.scale.category_cap)
    first = 0
    for batch in iter_batches(path, columns=list(kinds), max_rows=cfg.monitoring.batch_rows):
        sketch.add_batch(pa.Table.from_batches([batch]), first)
        first += batch.num_rows
    return sketch


def reference_rows(path: str, schema: Schema, *, rows: int, seed: int = 0) -> pd.DataFrame:
    """The reference sample's rows (features and target), as ``register.reference_sample``
    draws them from the whole training frame."""
    names = read_schema(path).names
    columns = [c for c in feature_columns(schema) + [schema["target"]] if c in names]
    return read_sample(path, rows, seed=seed, columns=columns)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


def scored_rows(test_path: str | None, train_path: str, *, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """The rows the profile's predictions and importance are computed on: the test
    split (a sample of ``max_rows`` when longer), else a training sample."""
    if test_path and count_rows(test_path) > 0:
        return read_sample(test_path, max_rows, seed=seed)
    return read_sample(train_path, max_rows, seed=seed)
