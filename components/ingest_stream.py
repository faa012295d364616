"""Streaming ingest: a CSV or Parquet input becomes the typed Parquet table in bounded batches.

Two passes over the input, neither holding more than a batch:

1. every batch adds to each column's ``Evidence`` (missing values, how many
   values parse as numbers or ISO datetimes, the distinct levels up to a cap, the
   row-number sequence across batch boundaries); ``ingest_kinds.decide`` turns the
   whole column's evidence into its kind and, for categories, the fixed level list;
2. every batch is converted with those kinds and levels and written through
   ``tables.ParquetSink``.

The result is the table ``ingest`` builds in memory, written as ``write_parquet``
writes it (the tests compare the two on every kind of input). Inputs the batch
readers do not take -- CSV files only pandas' C parser reads (newlines in quoted
values), Parquet columns of other types (durations, nested, non-string
categories) or categories whose labels need cleaning -- go through the in-memory
``ingest`` instead; the profile says which (``"streamed"``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kubeloop.components import ingest as whole
from kubeloop.components.ingest_kinds import Evidence, Kind, decide, is_unique
from kubeloop.storage import sha256_file
from kubeloop.tables import BATCH_BYTES, BATCH_ROWS, DataError, ParquetSink, to_pandas

if TYPE_CHECKING:
    from kubeloop.config import StorageConfig

_ISO_PREFIX = r"^\d{4}-\d\d"
_INDEX_LEVEL = re.compile(r"^__index_level_\d+__$")
_CATEGORY = pa.dictionary(pa.int32(), pa.string())


class _WholeFrame(Exception):  # noqa: N818 (a signal, not an error)
    """The input needs the in-memory reader."""


def _family(t: pa.DataType) -> str | None:
    """The evidence's name for a non-string Arrow type; None for strings."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return None
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return "dict"
    raise _WholeFrame(f"type {t}")


# pyarrow's CSV parse block: the CSV reader's batch, bounded in bytes of text.
CSV_BLOCK_BYTES = 16 * 2**20

# --------------------------------------------------------------------------- sources


class _CsvSource:
    """A local CSV file read block by block with pyarrow's streaming reader. The
    first pass settles each column's Arrow type (widening a column and starting
    again when a later block does not fit, as ``ingest`` does); the second pass
    reads with those types fixed."""

    def __init__(self, path: Path, compression: str | None, name: str, block_bytes: int = CSV_BLOCK_BYTES):
        self.path, self.compression, self.name = path, compression, name
        self.block_bytes = block_bytes
        self.names, self.delimiter = whole._read_header(path, compression, name)
        self.decimal = whole._decimal_mark(path, compression, self.delimiter)
        self.overrides: dict[str, pa.DataType] = {}
        self.fixed: pa.Schema | None = None
        self.n_rows: int | None = None

    def _reader(self, types: dict[str, pa.DataType]) -> Any:
        import pyarrow.csv as pa_csv

        stream = pa.input_stream(str(self.path), compression=self.compression)
        return stream, pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=self.block_bytes),
            parse_options=pa_csv.ParseOptions(delimiter=self.delimiter),
            convert_options=pa_csv.ConvertOptions(
                decimal_point=self.decimal, column_types=types, null_values=whole._READER_NULLS,
                strings_can_be_null=True, quoted_strings_can_be_null=True,
                true_values=[], false_values=[]),
        )

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        types = dict(zip(self.fixed.names, self.fixed.types, strict=True)) if self.fixed else self.overrides
        try:
            stream, reader = self._reader(types)
        except pa.ArrowInvalid as exc:
            self._widen_or_give_up(exc)
            raise _Restart from None
        except (pa.ArrowNotImplementedError, OSError) as exc:
            raise _WholeFrame(str(exc)) from None
        with stream:
            if len(reader.schema) != len(self.names):
                raise _WholeFrame("column count")
            schema = reader.schema
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as exc:
                    if self.fixed is not None:
                        raise _WholeFrame(str(exc)) from None
                    self._widen_or_give_up(exc)
                    raise _Restart from None
                except (pa.ArrowNotImplementedError, OSError) as exc:
                    raise _WholeFrame(str(exc)) from None
                batch = pa.RecordBatch.from_arrays(batch.columns, names=self.names)
                yield batch.select(columns) if columns is not None else batch
            if self.fixed is None:
                self.fixed = schema

    def _widen_or_give_up(self, exc: Exception) -> None:
        match = whole._CONVERSION_ERROR.search(str(exc))
        if match is None or int(match.group(1)) >= len(self.names) or len(self.overrides) > 2 * len(self.names):
            raise _WholeFrame(str(exc)) from None
        # The reader's types are keyed by the header's own spelling.
        raw = self._raw_names()[int(match.group(1))]
        self.overrides[raw] = whole._widen(match.group(2), match.group(3), self.overrides.get(raw))

    def _raw_names(self) -> list[str]:
        import csv

        with whole._open_text(self.path, self.compression) as fh:
            return next(row for row in csv.reader(fh, delimiter=self.delimiter) if row)


class _Restart(Exception):  # noqa: N818
    """A column's type was widened: the first pass starts again."""


class _ParquetSource:
    """A Parquet file, folder or hive-partitioned dataset (local or s3://), through tables."""

    def __init__(self, uri: str, name: str, storage: StorageConfig | None,
                 max_rows: int = BATCH_ROWS, max_bytes: int = BATCH_BYTES):
        from kubeloop import tables

        self.uri, self.name, self.storage = uri, name, storage
        self.max_rows, self.max_bytes = max_rows, max_bytes
        schema = tables.read_schema(uri, storage)
        meta = schema.pandas_metadata or {}
        stored_index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
        self.skip = [c for c in stored_index if _INDEX_LEVEL.match(c)]
        if self.skip and len(self.skip) != len(stored_index):
            raise _WholeFrame("a mixed index")
        # A named pandas index is data (often the id) and comes first, as reset_index puts it.
        front = [c for c in stored_index if c not in self.skip]
        raw = front + [n for n in schema.names if n not in stored_index]
        self.raw = raw
        self.names = whole._check_names(raw, name)
        if not self.names:
            raise DataError(f"{name}: the Parquet file has no columns")
        self.n_rows = tables.count_rows(uri, storage)
        if self.n_rows == 0:
            raise DataError(f"{name}: the Parquet file has no rows")

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        from kubeloop import tables

        for batch in tables.iter_batches(self.uri, columns=self.raw, storage=self.storage,
                                          max_rows=self.max_rows, max_bytes=self.max_bytes):
            batch = pa.RecordBatch.from_arrays(batch.columns, names=self.names)
            yield batch.select(columns) if columns is not None else batch


# --------------------------------------------------------------------------- pass 1


def _strings(col: pa.Array) -> pa.Array:
    """Trimmed strings with the missing-value markers as nulls."""
    arr = pc.utf8_trim_whitespace(col.cast(pa.large_string()))
    return whole._null_where_marker(arr)[0]


def _observe(ev: Evidence, col: pa.Array, *, levels: bool, sequence: bool) -> None:
    family = _family(col.type)
    ev.native = family
    ev.n_rows += len(col)
    ev.n_null += col.null_count
    if sequence:
        ev.add_sequence(col)
    if family == "dict":
        _observe_labels(ev, col)
        return
    if family is not None:
        ev.n_missing += col.null_count
        if levels:
            ev.add_levels(pc.unique(col.drop_null()))
        return
    arr = _strings(col)
    ev.n_missing += arr.null_count
    present = arr.drop_null()
    if not len(present):
        return
    ev.n_number += int((~np.isnan(whole._to_float(present))).sum())
    iso = present.filter(pc.match_substring_regex(present, _ISO_PREFIX))
    if len(iso):
        ev.n_datetime += int(whole._to_datetime(iso).notna().sum())
    ev.add_levels(pc.unique(present))


def _observe_labels(ev: Evidence, col: pa.Array) -> None:
    """A category column: its labels, not its rows, are typed (as ``ingest`` does)."""
    labels = col.dictionary.to_pylist()
    if any(not isinstance(s, str) or s != s.strip() or s.lower() in whole._MISSING_LOWER for s in labels):
        raise _WholeFrame("category labels to clean")
    ev.declared.update(labels)
    ev.n_missing += col.null_count
    used = pc.unique(col.indices.drop_null())
    ev.add_levels(col.dictionary.take(used))


def _gather(source: Any, candidates: set[str], unnamed: bool) -> dict[str, Evidence]:
    for _ in range(100):
        evidence = {n: Evidence() for n in source.names}
        try:
            for batch in source.batches():
                for name, col in zip(source.names, batch.columns, strict=True):
                    first = unnamed and name == whole.UNNAMED_FIRST
                    _observe(evidence[name], col, levels=first, sequence=first or name in candidates)
            return evidence
        except _Restart:
            continue
    raise _WholeFrame("too many restarts")


# --------------------------------------------------------------------------- pass 2


def _category(values: pa.Array, levels: tuple[str, ...]) -> pa.Array:
    dictionary = pa.array(levels, pa.string())
    indices = pc.index_in(values, value_set=dictionary.cast(values.type)).cast(pa.int32())
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _out_type(kind: Kind, ev: Evidence, raw: pa.DataType) -> pa.DataType:
    if kind.kind in ("boolean", "categorical"):
        return _CATEGORY
    if kind.kind == "datetime":
        return pa.timestamp("ns")
    if kind.kind == "text":
        return pa.string()
    if ev.native in ("int", "float") and (kind.integer or ev.native == "float"):
        return raw
    return pa.float64()


def _convert(col: pa.Array, kind: Kind, ev: Evidence, out: pa.DataType) -> tuple[pa.Array, int]:
    """(the column in its decided form, values that did not parse and became missing)."""
    family = ev.native
    if family == "dict":
        col = col.dictionary_decode().cast(pa.large_string())
    elif family is not None:
        if family == "bool":
            return pa.DictionaryArray.from_arrays(col.cast(pa.int32()), pa.array(["False", "True"])), 0
        if family == "null":
            return pa.nulls(len(col), pa.float64()), 0
        if family == "datetime" and pa.types.is_date(col.type):
            col = col.cast(pa.timestamp("ms"))
        return col.cast(out), 0
    else:
        col = _strings(col)
    n_present = len(col) - col.null_count
    if kind.kind == "numeric":
        values = whole._to_float(col) if n_present else np.full(len(col), np.nan)
        return pa.array(values, pa.float64(), from_pandas=True), n_present - int((~np.isnan(values)).sum())
    if kind.kind == "datetime":
        parsed = whole._to_datetime(col)
        return pa.array(parsed, pa.timestamp("ns"), from_pandas=True), n_present - int(parsed.notna().sum())
    if kind.kind in ("boolean", "categorical"):
        return _category(pc.utf8_lower(col) if kind.lower else col, kind.levels), 0
    return col.cast(pa.string()), 0


def _memory(arr: pa.Array, out: pa.DataType, n_levels: int) -> int:
    """About what the column takes as the pandas column ``read_parquet`` gives
    (``memory_usage(deep=True)``): exact for fixed-width columns, estimated for text."""
    n = len(arr)
    if out == _CATEGORY:
        return n * (1 if n_levels < 128 else 2 if n_levels < 32768 else 4)
    if pa.types.is_string(out):
        # A pointer and a str object (49 bytes + its UTF-8 length when ASCII) per
        # value, a float NaN (24 bytes) per missing one.
        lengths = pc.sum(pc.binary_length(arr)).as_py() or 0
        return 8 * n + 49 * (n - arr.null_count) + lengths + 24 * arr.null_count
    return n * out.bit_width // 8


def _levels_memory(levels: tuple[str, ...]) -> int:
    import sys

    return sum(8 + sys.getsizeof(s) for s in levels)


# --------------------------------------------------------------------------- the step


def _raw_dtype(t: pa.DataType, has_null: bool) -> str:
    """The pandas dtype ``ingest`` reads this Arrow type as (before typing)."""
    empty = pa.array([None] if has_null else [], t)
    return str(whole._arrow_to_pandas(pa.table({"c": empty})).dtypes.iloc[0])


def _out_dtype(t: pa.DataType) -> str:
    return str(to_pandas(pa.table({"c": pa.array([], t)})).dtypes.iloc[0])


def _stream(source: Any, out: str, *, storage: StorageConfig | None, max_categories: int,
            max_fraction: float, keep: set[str], name: str) -> dict[str, Any]:
    unnamed = whole.UNNAMED_FIRST in source.names
    candidates = {c for c in source.names
                  if c not in keep and c.strip().lower() in whole._ROW_NUMBER_NAMES}
    evidence = _gather(source, candidates, unnamed)
    first = next(iter(evidence.values()))
    if first.n_rows == 0:
        raise DataError(f"{name}: the file has a header but no rows")
    raw_types = _raw_schema(source)
    dropped: list[dict[str, str]] = []
    if unnamed:
        if not is_unique(evidence[whole.UNNAMED_FIRST]):
            raise DataError(
                f"{name}: the first column has an empty name and repeated values, so it is "
                "not row numbers; give it a name in the header")
        dropped.append({"column": "", "reason": "the unnamed first column holds row names or numbers "
                        "(an export's index), not data"})
    for col in source.names:
        ev = evidence[col]
        if (col in candidates and col != whole.UNNAMED_FIRST and ev.native == "int" and ev.sequence
                and ev.n_rows >= 2 and ev.first is not None):
            dropped.append({"column": col, "reason": f"'{col}' counts the rows (0..n-1 or 1..n): a row "
                            "number, which a sorted export turns into a leak of the target"})
    gone = {d["column"] or whole.UNNAMED_FIRST for d in dropped}
    names = [c for c in source.names if c not in gone]
    kinds = {c: decide(evidence[c], max_categories, max_fraction) for c in names}
    out_types = {c: _out_type(kinds[c], evidence[c], raw_types[c]) for c in names}
    schema = pa.schema([(c, out_types[c]) for c in names])
    unparsed = dict.fromkeys(names, 0)
    memory = {c: _levels_memory(kinds[c].levels) for c in names}
    with ParquetSink(out, schema=schema, storage=storage) as sink:
        for batch in source.batches(names):
            arrays = []
            for c, col in zip(names, batch.columns, strict=True):
                arr, bad = _convert(col, kinds[c], evidence[c], out_types[c])
                unparsed[c] += bad
                memory[c] += _memory(arr, out_types[c], len(kinds[c].levels))
                arrays.append(arr)
            sink.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
    columns = {}
    for c in names:
        before = _raw_dtype(raw_types[c], evidence[c].n_null > 0)
        columns[c] = whole._profile_entry(before, _out_dtype(out_types[c]), kinds[c].kind, unparsed[c])
    return {"n_rows": int(sink.rows), "n_columns": len(names), "columns": columns,
            "memory_bytes": int(sum(memory.values())), "dropped_columns": dropped}


def _raw_schema(source: Any) -> dict[str, pa.DataType]:
    for batch in source.batches():
        return dict(zip(source.names, batch.schema.types, strict=True))
    raise DataError(f"{source.name}: the file has a header but no rows")


def _is_folder(uri: str, storage: StorageConfig | None) -> bool:
    from pyarrow import fs

    from kubeloop.tables import filesystem, read_error

    text = uri.removeprefix("file://")
    if not text.lower().startswith("s3://"):
        return Path(text).is_dir()
    filesys, path = filesystem(text, storage)
    try:
        return filesys.get_file_info(path).type == fs.FileType.Directory
    except OSError as exc:
        raise read_error(text, exc, "cannot read") from None


def _folder_hash(uri: str, storage: StorageConfig | None) -> tuple[str, int]:
    """(data_sha256 of the folder, its data files' total size); a folder must hold Parquet only."""
    from kubeloop.monitoring.stream import data_sha256, list_files

    filesys, files = list_files(uri, storage)
    others = [f for f in files if not f.lower().endswith(whole.PARQUET_SUFFIXES)]
    if others:
        raise DataError(f"{uri}: is a directory; give the path of one CSV or Parquet file, or a "
                        f"folder of Parquet files only (it holds {others[0].rsplit('/', 1)[-1]})")
    size = sum(i.size for i in filesys.get_file_info(files))
    return data_sha256(uri, storage), int(size)


def ingest_to_parquet(
    uri: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    storage: StorageConfig | None = None,
    max_categories: int = 100,
    max_category_fraction: float = 0.5,
    keep: set[str] = frozenset(),
    batch_rows: int = BATCH_ROWS,
    batch_bytes: int = BATCH_BYTES,
) -> dict[str, Any]:
    """Read, type and write the table at ``uri`` to Parquet at ``out``; its profile.

    ``uri`` is a CSV or Parquet file, or a folder of Parquet files (hive partitions
    become columns), local or ``s3://``. The profile is ``ingest``'s, plus
    ``streamed`` (False when the input needed the in-memory reader); a folder's
    ``sha256`` is ``data_sha256``'s hash of its listing, which monitoring's
    same-data check compares. Batches hold at most ``batch_rows`` rows and about
    ``batch_bytes`` bytes of Parquet data, or ``batch_bytes`` of CSV text (pyarrow's
    parse block, at most ``CSV_BLOCK_BYTES``).
    """
    if not isinstance(max_categories, int) or max_categories < 1:
        raise ValueError(f"max_categories must be a positive integer, got {max_categories!r}")
    if not 0 < max_category_fraction <= 1:
        raise ValueError(f"max_category_fraction must be in (0, 1], got {max_category_fraction!r}")
    name = os.fspath(uri)
    opts = {"storage": storage, "max_categories": max_categories,
            "max_fraction": max_category_fraction, "keep": set(keep), "name": name}
    out = os.fspath(out)
    if _is_folder(name, storage):
        digest, size = _folder_hash(name, storage)
        profile = _run(lambda: _ParquetSource(name, name, storage, batch_rows, batch_bytes), out, opts, None)
        profile.update({"source_uri": name, "format": "parquet", "size_bytes": size, "sha256": digest})
        return profile
    with whole._local_file(uri, storage) as path:
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"{name}: the file is empty (0 bytes)")
        fmt, compression = whole._detect_format(path, name)

        def source() -> Any:
            if fmt == "parquet":
                return _ParquetSource(str(path), name, None, batch_rows, batch_bytes)
            return _CsvSource(path, compression, name, min(batch_bytes, CSV_BLOCK_BYTES))

        profile = _run(source, out, {**opts, "storage": storage}, path)
        profile.update({"source_uri": name, "format": fmt, "size_bytes": size,
                        "sha256": sha256_file(path)})
    return profile


def _run(make_source: Callable[[], Any], out: str, opts: dict[str, Any], local: Path | None) -> dict[str, Any]:
    try:
        profile = _stream(make_source(), out, **opts)
        profile["streamed"] = True
        return profile
    except _WholeFrame as exc:
        if local is None:
            raise DataError(f"{opts['name']}: cannot be read in batches ({exc}); convert the "
                            "folder's columns to numbers, strings, booleans or timestamps") from None
    df, profile = whole.ingest(local if local is not None else opts["name"], storage=opts["storage"],
                               max_categories=opts["max_categories"],
                               max_category_fraction=opts["max_fraction"], keep=opts["keep"])
    for key in ("source_uri", "format", "size_bytes", "sha256"):
        profile.pop(key, None)
    from kubeloop.tables import write_parquet

    write_parquet(df, out, opts["storage"])
    profile["streamed"] = False
    return profile
