"""Batch scoring: a CSV or Parquet dataset through a registered version, in streaming batches.

The same contract as the online predictor: every row is checked against the
version's ``kubeloop.json`` (``kubeloop.serving.schema``) and scored by the same
compiled model (``kubeloop.serving.fastpath``). A row that fails validation does
not stop the job: it goes to the rejects file with its reasons. Columns of the
dataset that are not features (an id, the target) are ignored, except those named
in ``keep_columns``, which are copied to the output.

Memory is bounded by ``batch_rows``: the input is read a batch at a time
(``pyarrow``'s streaming CSV reader, Parquet row groups in batches), and the
predictions and rejects are appended to their Parquet files a batch at a time.
``s3://`` inputs are first copied to a temporary local file (streamed, so memory
stays flat whatever the size) and outputs uploaded at the end.

Output (Parquet): ``row`` (the input's row number, from 0), the kept columns,
``prediction``, ``proba_<label>`` per class (classification), ``model``,
``version``. Rejects: ``row``, ``reason`` (the first problem's code),
``problems`` (every problem, field by field), ``input`` (the row as JSON).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kubeloop.serving.loader import LoadedVersion
from kubeloop.serving.schema import RequestRejected, validate

DEFAULT_BATCH_ROWS = 10_000


class PredictError(ValueError):
    """The dataset cannot be scored at all (missing feature columns, unreadable file)."""


def _batches(path: Path, name: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    from kubeloop.components.ingest import _detect_format, _read_header

    fmt, compression = _detect_format(path, name)
    if fmt == "parquet":
        yield from pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_rows)
        return
    import pyarrow.csv as pcsv

    names, delimiter = _read_header(path, compression, name)
    stream = pa.input_stream(str(path), compression=compression)
    # Every column as text: a stray word in a numeric column must reject one row,
    # not fail the reader; numbers are read from the text below.
    reader = pcsv.open_csv(
        stream,
        read_options=pcsv.ReadOptions(block_size=1 << 22, encoding="utf8"),
        parse_options=pcsv.ParseOptions(delimiter=delimiter),
        convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                            strings_can_be_null=True),
    )
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _plain(value: Any, kind: str) -> Any:
    """A value read from a file, as a JSON client would have sent it."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, str) and kind == "numeric":
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return value  # rejected as wrong_type, naming the value
        return int(text) if text.lstrip("+-").isdigit() else number
    if isinstance(value, str) and kind == "boolean":
        return value
    return value


class _Writer:
    """Appends record batches to a local Parquet file; uploads it at the end for s3://."""

    def __init__(self, uri: str, schema: pa.Schema, tmp: str, storage_cfg: Any):
        self.uri = uri
        self.remote = uri.startswith("s3://")
        self.path = Path(tmp) / Path(uri).name if self.remote else Path(uri.removeprefix("file://"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        self.schema = schema
        self.storage_cfg = storage_cfg
        self.rows = 0

    def write(self, columns: dict[str, list[Any]]) -> None:
        if columns and len(next(iter(columns.values()))):
            table = pa.Table.from_pydict(columns, schema=self.schema)
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        if self.remote:
            from kubeloop.storage import put_file

            put_file(self.path, self.uri, self.storage_cfg)


def rejects_uri_for(out: str) -> str:
    base = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return base + ".rejects.parquet"


def predict_step(
    version: LoadedVersion,
    data_uri: str,
    out_uri: str,
    *,
    rejects_uri: str | None = None,
    keep_columns: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    storage_cfg: Any = None,
) -> dict[str, Any]:
    """Score every row of ``data_uri`` into ``out_uri``; invalid rows into ``rejects_uri``."""
    from kubeloop.components.ingest import DataError, _local_file

    if batch_rows < 1:
        raise PredictError(f"batch_rows must be at least 1, got {batch_rows}")
    keep = list(keep_columns or [])
    rejects_uri = rejects_uri or rejects_uri_for(out_uri)
    if os.fspath(out_uri) == os.fspath(rejects_uri) or out_uri == data_uri:
        raise PredictError("the output, the rejects file and the input must be three different files")
    schema = version.schema
    names = list(schema.names)
    kinds = {f.name: f.kind for f in schema.features}
    classification = version.task == "classification"
    labels = [str(c) for c in version.labels]
    fields = [pa.field("row", pa.int64())] + [pa.field(c, pa.string()) for c in keep]
    fields.append(pa.field("prediction", pa.string() if classification else pa.float64()))
    fields += [pa.field(f"proba_{label}", pa.float64()) for label in labels] if classification else []
    fields += [pa.field("model", pa.string()), pa.field("version", pa.string())]
    out_schema = pa.schema(fields)
    rejects_schema = pa.schema([pa.field("row", pa.int64()), pa.field("reason", pa.string()),
                                pa.field("problems", pa.string()), pa.field("input", pa.string())])
    t0 = time.perf_counter()
    total = 0
    with tempfile.TemporaryDirectory(prefix="kubeloop-predict-") as tmp:
        try:
            with _local_file(data_uri, storage_cfg) as path:
                out = _Writer(out_uri, out_schema, tmp, storage_cfg)
                rejects = _Writer(rejects_uri, rejects_schema, tmp + "/r", storage_cfg)
                for batch in _batches(path, os.fspath(data_uri), batch_rows):
                    if total == 0:
                        missing = [c for c in names + keep if c not in batch.schema.names]
                        if missing:
                            raise PredictError(
                                f"{data_uri} lacks column(s) {missing}; the model needs {names}"
                                + (f" and --keep-columns {keep}" if keep else "")
                            )
                    _score_batch(version, batch, total, names, kinds, keep, out, rejects, classification)
                    total += batch.num_rows
                out.close()
                rejects.close()
        except DataError as exc:
            raise PredictError(str(exc)) from None
    return {
        "model": version.name, "version": version.version, "rows": total, "scored": out.rows,
        "rejected": rejects.rows, "out": out_uri, "rejects": rejects_uri,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _score_batch(version: LoadedVersion, batch: pa.RecordBatch, offset: int, names: list[str],
                 kinds: dict[str, str], keep: list[str], out: _Writer, rejects: _Writer,
                 classification: bool) -> None:
    raw = {c: batch.column(c).to_pylist() for c in names}
    n = batch.num_rows
    rows = [{c: _plain(raw[c][i], kinds[c]) for c in names} for i in range(n)]
    good = list(range(n))
    try:
        checked = validate(rows, version.schema)
    except RequestRejected as exc:
        by_row: dict[int, list[str]] = {}
        first: dict[int, str] = {}
        for p in exc.problems:
            if p.row is not None:
                by_row.setdefault(p.row, []).append(p.message if p.field is None else f"{p.field}: {p.message}")
                first.setdefault(p.row, p.reason)
        bad = sorted(by_row)
        rejects.write({
            "row": [offset + i for i in bad], "reason": [first[i] for i in bad],
            "problems": ["; ".join(by_row[i]) for i in bad],
            "input": [json.dumps(rows[i], default=str) for i in bad],
        })
        good = [i for i in range(n) if i not in by_row]
        if not good:
            return
        checked = validate([rows[i] for i in good], version.schema)
    index, proba = version.compiled.predict(checked.rows)
    columns: dict[str, list[Any]] = {"row": [offset + i for i in good]}
    for c in keep:
        values = batch.column(c).to_pylist()
        columns[c] = [None if values[i] is None else str(values[i]) for i in good]
    if classification:
        classes = version.compiled.classes
        columns["prediction"] = [str(classes[i]) for i in index]
        for k, label in enumerate(version.labels):
            columns[f"proba_{label}"] = proba[:, k].tolist()
    else:
        columns["prediction"] = [float(x) for x in index]
    columns["model"] = [version.name] * len(good)
    columns["version"] = [version.version] * len(good)
    out.write(columns)


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import Artifact, Dataset, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def predict_op(
    model_uri: str,
    data_uri: str,
    config: dict,
    predictions: Output[Dataset],
    rejects: Output[Dataset],
    summary: Output[Artifact],
):
    """Score a dataset with a registered version's model/ folder; invalid rows to rejects."""
    import json

    from kubeloop.components.predict import predict_step
    from kubeloop.config import Config
    from kubeloop.progress import stage
    from kubeloop.serving.loader import load_version

    with stage("predict") as st:
        cfg = Config.from_dict(config)
        version = load_version(model_uri, storage_cfg=cfg.storage)
        result = predict_step(version, data_uri, predictions.path, rejects_uri=rejects.path,
                              storage_cfg=cfg.storage)
        with open(summary.path, "w") as f:
            json.dump(result, f, indent=2)
        st.result = f"{result['scored']:,} rows scored, {result['rejected']:,} rejected ({version.version})"
