"""Partitioned statistics: a table too big for one pod is cut into row ranges of
``scale.partition_rows``; one step per range sketches its rows, and a merge step
combines the sketches (``kubeloop.monitoring.sketch``) into the profile.

The same functions make both shapes: a table of at most ``partition_rows`` rows
is one partition (one pod), and its profile is the one a fan-out over four
partitions gives, within the sketches' stated error (their row samples are even
identical: row priorities come from the global row number).

    plan (rows, kinds) -> ParallelFor(partitions): sketch -> merge (Collected) -> profile
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, List  # noqa: UP035 (KFP documents typing.List for artifact lists)

from kfp.dsl import Artifact, Input, Output

from kubeloop.component import component
from kubeloop.errors import UserError

SKETCH_FILE = "sketch.json"
PROFILE_FILE = "profile.json"


class PartitionError(UserError, ValueError):
    """A partition plan or its sketches do not fit together; the message says how."""


# --------------------------------------------------------------------------- pure steps


def plan_partitions(n_rows: int, partition_rows: int) -> list[dict[str, int]]:
    """Consecutive row ranges of at most ``partition_rows`` covering ``n_rows`` rows
    (one empty partition for an empty table, so the merge always has an input)."""
    if partition_rows < 1:
        raise PartitionError(f"scale.partition_rows must be at least 1, got {partition_rows}")
    if n_rows < 0:
        raise PartitionError(f"a table cannot have {n_rows} rows")
    if n_rows == 0:
        return [{"index": 0, "first_row": 0, "rows": 0}]
    return [{"index": i, "first_row": start, "rows": min(partition_rows, n_rows - start)}
            for i, start in enumerate(range(0, n_rows, partition_rows))]


def data_kinds(uri: str, storage: Any = None, schema: dict[str, Any] | None = None) -> dict[str, str]:
    """Columns to sketch and their kind: a kubeloop schema's features, else every
    numeric and categorical column of the data."""
    if schema is not None:
        from kubeloop.monitoring.profile import schema_kinds

        return schema_kinds(schema)
    from kubeloop.monitoring.stream import infer_kinds

    return {c: k for c, k in infer_kinds(uri, storage).items() if k is not None}


def partition_batches(uri: str, first_row: int, rows: int, columns: list[str], *, storage: Any = None,
                      batch_rows: int = 131_072) -> Iterator[Any]:
    """Arrow batches of rows ``[first_row, first_row + rows)`` of ``uri`` (its files in
    name order), read in bounded batches. Parquet files and row groups wholly outside
    the range are skipped from their footers, unread; CSV is read up to the range's end."""
    if rows <= 0:
        return
    from kubeloop.monitoring.columns import CATEGORICAL
    from kubeloop.monitoring.stream import PARQUET_SUFFIXES, csv_types_for, iter_batches, list_files

    filesystem, files = list_files(uri, storage)
    end, pos = first_row + rows, 0
    for path in files:
        if pos >= end:
            return
        if path.lower().endswith(PARQUET_SUFFIXES):
            pos = yield from _parquet_range(filesystem, path, pos, first_row, end, columns, batch_rows)
            continue
        shown = f"s3://{path}" if uri.startswith("s3://") else path
        # every CSV column read as text, as drift and the profiles read it (numbers parsed per batch)
        types = csv_types_for(dict.fromkeys(columns, CATEGORICAL))
        for batch in iter_batches(shown, columns, storage=storage, batch_rows=batch_rows, csv_types=types):
            yield from _clip(batch, pos, first_row, end)
            pos += batch.num_rows
            if pos >= end:
                return


def _clip(batch: Any, lo: int, first_row: int, end: int) -> Iterator[Any]:
    """The part of ``batch`` (global rows from ``lo``) inside ``[first_row, end)``."""
    hi = lo + batch.num_rows
    if hi > first_row and lo < end:
        start = max(first_row, lo)
        yield batch.slice(start - lo, min(hi, end) - start)


def _parquet_range(filesystem: Any, path: str, pos: int, first_row: int, end: int, columns: list[str],
                   batch_rows: int) -> Iterator[Any]:
    """Batches of one Parquet file's rows inside ``[first_row, end)``, the file's first
    row being global row ``pos``; returns the global row after the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kubeloop.monitoring.stream import DataError

    try:
        f = filesystem.open_input_file(path)
        pf = pq.ParquetFile(f, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot be read as Parquet ({exc})") from None
    with f:
        meta = pf.metadata
        if pos + meta.num_rows <= first_row:
            return pos + meta.num_rows
        have = set(pf.schema_arrow.names)
        cols = [c for c in columns if c in have]
        groups, starts, at = [], [], pos
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if at + n > first_row and at < end:
                groups.append(g)
                starts.append(at)
            at += n
        if groups:
            cur = starts[0]
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=cols, use_threads=True):
                yield from _clip(batch, cur, first_row, end)
                cur += batch.num_rows
                if cur >= end:
                    break
        return pos + meta.num_rows


def sketch_partition(uri: str, kinds: dict[str, str], partition: dict[str, int], cfg: Any,
                     storage: Any = None) -> Any:
    """The sketch of one partition's rows (``cfg``: a ``Config``)."""
    from kubeloop.monitoring.sketch import TableSketch

    sketch = TableSketch(kinds, sample=cfg.scale.sample_rows, category_cap=cfg.scale.category_cap)
    # KFP hands a dict's numbers over as floats
    index, first, rows = (int(partition[k]) for k in ("index", "first_row", "rows"))
    pos = first
    for batch in partition_batches(uri, first, rows, list(kinds), storage=storage,
                                   batch_rows=cfg.monitoring.batch_rows):
        sketch.add_batch(batch, pos)
        pos += batch.num_rows
    if pos - first != rows:
        raise PartitionError(
            f"{uri}: partition {index} should hold rows {first}..{first + rows - 1}, the data has "
            f"{pos} rows (did it change since the plan?)")
    return sketch


def merge_partitions(sketches: Iterable[Any], plan_rows: int | None = None) -> Any:
    """The merge of the partitions' sketches, folded one at a time (two in memory at
    once, however many partitions); ``plan_rows`` checks none is missing."""
    from kubeloop.monitoring.sketch import SketchError

    merged = None
    for sketch in sketches:
        merged = sketch if merged is None else merged.merge(sketch)
    if merged is None:
        raise SketchError("no sketches to merge")
    if plan_rows is not None and merged.n_rows != plan_rows:
        raise PartitionError(f"the partitions' sketches hold {merged.n_rows} rows, the plan {plan_rows}")
    return merged


def profile_data(uri: str, cfg: Any, *, storage: Any = None, schema: dict[str, Any] | None = None,
                 partition_rows: int | None = None) -> tuple[dict[str, Any], Any]:
    """(profile, merged sketch) of a table, partition after partition in this process:
    the shape a fan-out takes, run in one place (``partition_rows`` defaults to the
    config's)."""
    from kubeloop.monitoring.profile import sketch_profile
    from kubeloop.monitoring.stream import count_rows

    kinds = data_kinds(uri, storage, schema)
    n = count_rows(uri, storage)
    parts = plan_partitions(n, partition_rows or cfg.scale.partition_rows)
    merged = merge_partitions((sketch_partition(uri, kinds, p, cfg, storage) for p in parts), n)
    return sketch_profile(merged, schema or {}, cfg=cfg.monitoring), merged


def drift_partition(uri: str, reference: dict[str, Any], partition: dict[str, int], cfg: Any,
                    storage: Any = None) -> dict[str, Any]:
    """Drift accumulators of one partition of the current data against ``reference``
    (a profile): {"accumulators", "rows", "seen"}, the state a merge step combines."""
    from kubeloop.monitoring.stream import add_batch, new_accumulators

    accs = new_accumulators(reference)
    seen: set[str] = set()
    rows = 0
    for batch in partition_batches(uri, int(partition["first_row"]), int(partition["rows"]),
                                   list(reference["columns"]), storage=storage,
                                   batch_rows=cfg.monitoring.batch_rows):
        seen.update(batch.schema.names)
        add_batch(accs, batch, uri)
        rows += batch.num_rows
    return {"accumulators": accs, "rows": rows, "seen": seen}


def merge_drift(parts: list[dict[str, Any]], reference: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The drift report of the partitions together: their accumulators merged, then
    the one comparison (and its multiple-testing correction) of the whole data."""
    from kubeloop.monitoring.stats import compare, merge_accumulators

    if not parts:
        raise PartitionError("no partitions to merge")
    merged = merge_accumulators([p["accumulators"] for p in parts])
    rows = sum(int(p["rows"]) for p in parts)
    if rows == 0:
        raise PartitionError("the current data has no rows")
    seen = set().union(*(set(p["seen"]) for p in parts))
    report = compare(reference, merged, cfg.monitoring, columns_seen=seen, n_current=rows)
    report["partitions"] = len(parts)
    return report


def drift_data(reference: dict[str, Any], uri: str, cfg: Any, *, storage: Any = None,
               partition_rows: int | None = None) -> dict[str, Any]:
    """Drift of the data at ``uri`` against a profile, partition after partition in
    this process (the fan-out's shape, run in one place)."""
    from kubeloop.monitoring.stream import count_rows

    parts = plan_partitions(count_rows(uri, storage), partition_rows or cfg.scale.partition_rows)
    return merge_drift([drift_partition(uri, reference, p, cfg, storage) for p in parts], reference, cfg)


def dump_drift_part(part: dict[str, Any]) -> bytes:
    import json

    from kubeloop.monitoring.stats import accumulators_to_dict

    return json.dumps({"accumulators": accumulators_to_dict(part["accumulators"]), "rows": part["rows"],
                       "seen": sorted(part["seen"])}, allow_nan=False).encode()


def load_drift_part(data: bytes) -> dict[str, Any]:
    import json

    from kubeloop.monitoring.stats import accumulators_from_dict

    d = json.loads(data)
    return {"accumulators": accumulators_from_dict(d["accumulators"]), "rows": int(d["rows"]), "seen": set(d["seen"])}


# --------------------------------------------------------------------------- KFP adapters


@component
def plan_op(data_uri: str, config: dict) -> list:
    """Count the rows and cut them into partitions of ``scale.partition_rows``.

    One output (``Output``): the local runner resolves a ParallelFor's items at
    the pipeline's top level only from a task's single output."""
    from kubeloop.components.partitions import plan_partitions
    from kubeloop.config import Config
    from kubeloop.monitoring.stream import count_rows
    from kubeloop.progress import stage

    cfg = Config.from_dict(config)
    with stage("plan") as st:
        n = count_rows(data_uri, cfg.storage)
        parts = plan_partitions(n, cfg.scale.partition_rows)
        st.result = f"{n} rows in {len(parts)} partition(s) of at most {cfg.scale.partition_rows}"
    return parts


@component
def sketch_op(data_uri: str, partition: dict, config: dict, sketch: Output[Artifact]):
    """Sketch one partition's rows (every numeric and categorical column)."""
    import os

    from kubeloop.components.partitions import SKETCH_FILE, data_kinds, sketch_partition
    from kubeloop.config import Config
    from kubeloop.monitoring.sketch import dumps
    from kubeloop.progress import stage

    cfg = Config.from_dict(config)
    with stage("sketch") as st:
        result = sketch_partition(data_uri, data_kinds(data_uri, cfg.storage), partition, cfg, cfg.storage)
        os.makedirs(sketch.path, exist_ok=True)
        with open(os.path.join(sketch.path, SKETCH_FILE), "wb") as f:
            f.write(dumps(result))
        st.result = f"partition {int(partition['index'])}: {result.n_rows} rows"


@component
def merge_op(
    sketches: Input[List[Artifact]],  # noqa: UP006 (KFP documents typing.List here)
    partitions: list,
    config: dict,
    profile: Output[Artifact],
):
    """Merge the partitions' sketches: ``profile`` holds the profile they give
    (profile.json) and the merged sketch (sketch.json)."""
    import os

    from kubeloop.components.partitions import (
        PROFILE_FILE,
        SKETCH_FILE,
        PartitionError,
        merge_partitions,
    )
    from kubeloop.config import Config
    from kubeloop.monitoring.profile import dumps as profile_dumps
    from kubeloop.monitoring.profile import sketch_profile
    from kubeloop.monitoring.sketch import dumps, loads
    from kubeloop.progress import stage

    cfg = Config.from_dict(config)
    with stage("merge") as st:
        if len(sketches) != len(partitions):
            raise PartitionError(f"{len(sketches)} sketches for {len(partitions)} partitions")

        def read(path):
            with open(path, "rb") as f:
                return loads(f.read(), path)

        # read one at a time as the merge folds them in
        paths = [os.path.join(art.path, SKETCH_FILE) for art in sketches]
        result = merge_partitions(map(read, paths), sum(int(p["rows"]) for p in partitions))
        os.makedirs(profile.path, exist_ok=True)
        for name, data in ((SKETCH_FILE, dumps(result)),
                           (PROFILE_FILE, profile_dumps(sketch_profile(result, {}, cfg=cfg.monitoring)))):
            with open(os.path.join(profile.path, name), "wb") as f:
                f.write(data)
        st.result = f"{len(paths)} partition(s), {result.n_rows} rows"


@component
def drift_part_op(data_uri: str, reference_uri: str, partition: dict, config: dict, part: Output[Artifact]):
    """Accumulate one partition of the current data against the reference profile."""
    from kubeloop.components.partitions import drift_partition, dump_drift_part
    from kubeloop.config import Config
    from kubeloop.monitoring.drift import load_source_profile
    from kubeloop.progress import stage

    cfg = Config.from_dict(config)
    with stage("drift-part") as st:
        reference = load_source_profile(reference_uri, cfg, registry=cfg.registry)
        result = drift_partition(data_uri, reference, partition, cfg, cfg.storage)
        with open(part.path, "wb") as f:
            f.write(dump_drift_part(result))
        st.result = f"partition {int(partition['index'])}: {result['rows']} rows"


@component
def drift_merge_op(
    parts: Input[List[Artifact]],  # noqa: UP006 (KFP documents typing.List here)
    reference_uri: str,
    config: dict,
    report: Output[Artifact],
) -> bool:
    """Merge the partitions' accumulators and compare once; outputs whether anything drifted."""
    import json

    from kubeloop.components.partitions import load_drift_part, merge_drift
    from kubeloop.config import Config
    from kubeloop.monitoring.drift import load_source_profile
    from kubeloop.progress import stage

    cfg = Config.from_dict(config)
    with stage("drift-merge") as st:
        reference = load_source_profile(reference_uri, cfg, registry=cfg.registry)
        loaded = []
        for art in parts:
            with open(art.path, "rb") as f:
                loaded.append(load_drift_part(f.read()))
        result = merge_drift(loaded, reference, cfg)
        with open(report.path, "w") as f:
            json.dump(result, f, allow_nan=False)
        st.result = f"{len(loaded)} partition(s): {len(result['drifted_columns'])} column(s) drifted"
    return bool(result["drifted_columns"])
