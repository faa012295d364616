"""Ingest stage: read a CSV or Parquet table and give every column one clear type.

Reading and typing are separate steps. ``read_table`` parses the file (local path
or ``s3://``) with the pyarrow CSV engine, falling back to pandas' C engine for
files pyarrow rejects, and lets the reader recognise only what is unambiguous
(whole-column numbers, ISO timestamps, the missing-value markers). ``coerce_types``
then decides each column's *kind* with the rules below, so the same table gives the
same types whether it came from CSV, Parquet or a DataFrame built in memory.

Kinds and the dtypes they get (chosen so scikit-learn takes them as they are):

- ``numeric``: integer columns stay integer (numpy ``int64``) when nothing is
  missing, otherwise ``float64``; strings that are numbers (at least 99 % of the
  non-missing values) become ``float64`` and the rest become NaN, counted in
  ``n_unparsed``.
- ``boolean``: two-valued true/false, yes/no, t/f, y/n columns (any case) and
  native booleans. They become pandas ``category`` of strings, not pandas'
  nullable ``boolean``: encoders and HistGradientBoosting take a category column
  with NaN for missing values, while scikit-learn rejects ``pd.NA``. String values
  keep their spelling ("yes"/"no", so a "yes"/"no" target keeps its labels) and are
  lower-cased only when the column mixes spellings; native booleans become
  "False"/"True", as pandas writes them to CSV.
- ``datetime``: ISO 8601 strings (at least 99 % parse) and native timestamps,
  as ``datetime64[ns]`` in UTC without a time zone.
- ``categorical``: other strings, as pandas ``category`` with sorted categories,
  unless they are ``text``.
- ``text``: strings with more than ``max_categories`` distinct values *and* more
  distinct values than ``max_category_fraction`` of the rows (free text,
  identifiers), as ``object``; later stages do not use them as features. This is
  the rule of ``ValidationConfig``, so ingest and validation agree on every column.

The markers "", "NA", "N/A", "null", "None", "?", "nan" and "-" (any case,
surrounding spaces ignored) are missing values in every column; surrounding spaces
are stripped from every string value.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import os
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as ptypes

# The profile's data hash is the registry's hash: one implementation, streaming.
from kubeloop.storage import sha256_file

# Parquet I/O and the error for unusable tables live in the one I/O layer; the
# names stay importable from here for the steps that read through ingest.
from kubeloop.tables import ROW_GROUP_ROWS, DataError, read_parquet, write_parquet  # noqa: F401

if TYPE_CHECKING:
    from kubeloop.config import StorageConfig

MISSING_MARKERS = ("", "NA", "N/A", "null", "None", "?", "nan", "-")
BOOLEAN_PAIRS = (("true", "false"), ("yes", "no"), ("t", "f"), ("y", "n"))
# Share of the non-missing values that must parse for a string column to become
# numeric or datetime; the rest are counted as unparsed and become missing.
PARSE_THRESHOLD = 0.99
# Values looked at to decide a column's kind before converting the whole column.
SAMPLE_SIZE = 10_000

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
# Formats people hand over that are not tables kubeloop reads; named so the
# message can say what to do instead of failing to parse them as CSV.
UNSUPPORTED_SUFFIXES = (
    ".xlsx", ".xls", ".xlsm", ".ods", ".json", ".jsonl", ".ndjson", ".xml", ".feather",
    ".arrow", ".ipc", ".orc", ".avro", ".pkl", ".pickle", ".h5", ".hdf5", ".sav", ".dta",
    ".sas7bdat", ".zip", ".tar", ".bz2", ".xz", ".zst", ".7z", ".db", ".sqlite",
)  # fmt: skip

_MISSING_LOWER = frozenset(m.lower() for m in MISSING_MARKERS)
# The CSV readers match markers exactly; these spellings cover the usual cases and
# coerce_types catches the rest (other cases, surrounding spaces).
_READER_NULLS = sorted({v for m in MISSING_MARKERS for v in (m, m.lower(), m.upper(), m.title())})
_MARKER_SET = pa.array(sorted(_MISSING_LOWER), pa.large_string())
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"



# --------------------------------------------------------------------------- reading


@contextmanager
def _local_file(uri: str | os.PathLike[str], storage: StorageConfig | None) -> Iterator[Path]:
    """A local path for ``uri``, downloading ``s3://`` objects to a temporary file."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        from kubeloop.storage import local_copy

        with local_copy(text, storage) as path:
            yield Path(path)
        return
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise DataError(
            f"{text}: unsupported location scheme {scheme}://; use a local path or s3://"
        )
    path = Path(text)
    if not path.exists():
        raise DataError(f"{text}: file not found")
    if path.is_dir():
        raise DataError(f"{text}: is a directory; give the path of one CSV or Parquet file")
    yield path


def _detect_format(path: Path, name: str) -> tuple[str, str | None]:
    """(``"csv"`` or ``"parquet"``, compression) by the name's suffix, else by content."""
    lower = name.lower()
    compression = "gzip" if lower.endswith(".gz") else None
    base = lower[: -len(".gz")] if compression else lower
    suffix = Path(base).suffix
    if suffix in PARQUET_SUFFIXES and not compression:
        return "parquet", None
    if suffix in CSV_SUFFIXES:
        return "csv", compression
    if suffix in UNSUPPORTED_SUFFIXES or (compression and suffix in PARQUET_SUFFIXES):
        raise DataError(
            f"{name}: unsupported format {suffix + ('.gz' if compression else '')}; "
            "kubeloop reads CSV (.csv, .tsv, optionally .gz) and Parquet (.parquet, .pq); "
            "export the table to one of those"
        )
    # Unknown or no suffix (common for object-store keys): look at the bytes.
    # A gzip file with an unknown inner suffix ("export.txt.gz") is taken as CSV.
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet", None
    if head.startswith(_GZIP_MAGIC):
        return "csv", "gzip"
    if head and b"\x00" not in head and _decodes_as_text(head):
        return "csv", None
    raise DataError(
        f"{name}: unsupported format: the file is neither Parquet nor CSV text; "
        "kubeloop reads CSV (.csv, .tsv, optionally .gz) and Parquet (.parquet, .pq)"
    )


def _decodes_as_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3
    return True


# What an unnamed first column (the row names pandas' to_csv and R's write.csv
# write by default) is called until ingest decides whether it is a row number.
UNNAMED_FIRST = "(unnamed first column)"


def _check_names(raw: list[Any], name: str) -> list[str]:
    """Column names stripped of surrounding spaces; empty or repeated names are errors,
    except an unnamed first column, which ``drop_row_numbers`` looks at."""
    names = [str(n).strip() for n in raw]
    if len(names) > 1 and not names[0]:
        names[0] = UNNAMED_FIRST
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        hint = (
            " (a first column with no name is usually a pandas index: write with index=False)"
            if empty == [1]
            else ""
        )
        raise DataError(
            f"{name}: column(s) at position {', '.join(map(str, empty))} have an empty name; "
            f"give every column a name in the header{hint}"
        )
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise DataError(
            f"{name}: duplicate column name(s) {', '.join(map(repr, dupes))} "
            "(after stripping spaces); rename them so each column has its own name"
        )
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _open_text(path: Path, compression: str | None) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if compression == "gzip" else open(path, "rb")  # noqa: SIM115
    # utf-8-sig drops the byte-order mark spreadsheet programs put in front.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _read_header(path: Path, compression: str | None, name: str) -> tuple[list[str], str]:
    """The header's column names and the delimiter, checked before the data is parsed."""
    try:
        with _open_text(path, compression) as fh:
            first = fh.readline(1 << 20)
            fh.seek(0)
            delimiter = _delimiter(first, name)
            # Blank lines before the header are skipped, as the parsers do.
            header = next((row for row in csv.reader(fh, delimiter=delimiter) if row), None)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name}: cannot parse as CSV: not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}); save the file as UTF-8 CSV"
        ) from None
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        raise DataError(f"{name}: cannot parse as CSV: {exc}") from None
    if header is None:
        raise DataError(f"{name}: the file is empty (no header row and no data)")
    if any("\x00" in cell for cell in header):
        raise DataError(f"{name}: cannot parse as CSV: the file holds binary data")
    if all(_is_number(cell) for cell in header):
        raise DataError(
            f"{name}: the first line ({', '.join(header[:5])}{', ...' if len(header) > 5 else ''}) "
            "looks like data, not a header; add a first row naming the columns"
        )
    return _check_names(header, name), delimiter


def _delimiter(first_line: str, name: str) -> str:
    suffix = Path(name.lower().removesuffix(".gz")).suffix
    if suffix in CSV_SUFFIXES and CSV_SUFFIXES[suffix] in first_line:
        return CSV_SUFFIXES[suffix]
    # A ".csv" with no comma in its header is usually a semicolon- or tab-separated
    # export; reading it as one column would hide the mistake until training.
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else CSV_SUFFIXES.get(suffix, ",")


_CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): .*CSV conversion error to ([^:]+): invalid value '(.*)'", re.S
)


def _read_csv(path: Path, compression: str | None, name: str) -> pd.DataFrame:
    names, delimiter = _read_header(path, compression, name)
    overrides: dict[str, pa.DataType] = {}
    # Each retry fixes one column's type; past this many something else is wrong.
    for _ in range(2 * len(names) + 1):
        try:
            table = _stream_csv(path, compression, delimiter, overrides)
        except pa.ArrowInvalid as exc:
            match = _CONVERSION_ERROR.search(str(exc))
            if match is None or int(match.group(1)) >= len(names):
                break
            column = names[int(match.group(1))]
            overrides[column] = _widen(match.group(2), match.group(3), overrides.get(column))
            continue
        except (pa.ArrowNotImplementedError, OSError):
            break  # not for Arrow's reader: pandas' C parser below takes over
        if table.num_columns != len(names):
            break
        if table.num_rows == 0:
            raise DataError(f"{name}: the file has a header but no rows")
        # Handed over in a list so no frame here keeps the Arrow table alive while
        # its columns are converted and released one by one.
        holder = [table.rename_columns(names)]
        del table
        return _columns_to_pandas(holder)
    # pyarrow refuses some files pandas' C parser takes (newlines inside quoted
    # values, some quoting quirks); that parser also reports bad lines by number.
    return _read_csv_c_engine(path, compression, name, names, delimiter)


def _widen(failed_type: str, value: str, current: pa.DataType | None) -> pa.DataType:
    """The type to read a column as after ``value`` did not convert to ``failed_type``."""
    if failed_type in ("int64", "null") and current is None and _is_number(value):
        return pa.float64()
    return pa.string()


def _decimal_mark(path: Path, compression: str | None, delimiter: str) -> str:
    """"," for a ';'-separated file whose numbers are written "5,1" (R's write.csv2,
    Excel in most of Europe), else ".": judged on the first 64 KiB, where digits
    around a comma must outnumber digits around a point."""
    if delimiter != ";":
        return "."
    with _open_text(path, compression) as fh:
        head = fh.read(1 << 16)
    comma = len(re.findall(r"\d,\d", head))
    point = len(re.findall(r"\d\.\d", head))
    return "," if comma > point else "."


def _stream_csv(
    path: Path, compression: str | None, delimiter: str, overrides: dict[str, pa.DataType]
) -> pa.Table:
    """The whole file as one Arrow table, parsed block by block.

    The streaming reader decides each column's type on the first block and keeps
    only one block of raw text at a time; pyarrow's one-shot ``read_csv`` infers
    over the whole file but holds all of its raw text until the end (peak memory
    of file size + table). A later block that does not fit the inferred type fails
    with a message naming the column, and ``_read_csv`` reads again with that
    column widened.
    """
    import pyarrow.csv as pa_csv

    with pa.input_stream(str(path), compression=compression) as stream:
        reader = pa_csv.open_csv(
            stream,
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            convert_options=pa_csv.ConvertOptions(
                decimal_point=_decimal_mark(path, compression, delimiter),
                column_types=overrides,
                null_values=_READER_NULLS,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                # Booleans are decided by coerce_types, which keeps their spelling.
                true_values=[],
                false_values=[],
            ),
        )
        return reader.read_all()


def _read_csv_c_engine(
    path: Path, compression: str | None, name: str, names: list[str], delimiter: str
) -> pd.DataFrame:
    try:
        df = pd.read_csv(
            path,
            sep=delimiter,
            decimal=_decimal_mark(path, compression, delimiter),
            engine="c",
            compression=compression,
            encoding="utf-8-sig",
            na_values=_READER_NULLS,
            keep_default_na=False,
            low_memory=False,
        )
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name}: cannot parse as CSV: not UTF-8 text at byte offset {exc.start}; "
            "save the file as UTF-8 CSV"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: cannot parse as CSV: {detail}") from None
    if len(df.columns) != len(names):
        raise DataError(
            f"{name}: cannot parse as CSV: the header has {len(names)} columns "
            f"but the rows have {len(df.columns)}"
        )
    df.columns = names
    if len(df) == 0:
        raise DataError(f"{name}: the file has a header but no rows")
    return df


def _string_mapper(dtype: pa.DataType) -> Any:
    # Strings stay in Arrow memory until coerce_types decides what they are: a
    # million Python str objects would take several times the space.
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return pd.StringDtype("pyarrow")
    return None


def _arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    for i, column in enumerate(table.columns):
        if pa.types.is_date(column.type):
            # Dates would arrive as Python date objects; as timestamps they are typed.
            table = table.set_column(i, table.field(i).name, column.cast(pa.timestamp("ms")))
    return table.to_pandas(
        types_mapper=_string_mapper,
        split_blocks=True,
        self_destruct=True,
        coerce_temporal_nanoseconds=True,
    )


def _columns_to_pandas(holder: list[pa.Table]) -> pd.DataFrame:
    """Convert one column at a time, dropping each from the table once converted.

    The streaming reader leaves every column in many small chunks, which must be
    copied into one array; doing it column by column keeps only one column in
    both forms at once instead of the whole table.
    """
    table = holder.pop()
    names = table.column_names
    data: dict[str, pd.Series] = {}
    for name in names:
        frame = _arrow_to_pandas(table.select([0]))
        table = table.remove_column(0)
        data[name] = frame.iloc[:, 0]
        del frame
        # Give the freed Arrow pages back so the next numpy column can use them.
        pa.default_memory_pool().release_unused()
    # copy=False keeps the columns as they are instead of stacking them into blocks.
    return pd.DataFrame(data, copy=False)


def _read_parquet_file(path: Path, name: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise DataError(f"{name}: cannot parse as Parquet: {exc}") from None
    names = _check_names(table.column_names, name)
    if not names:
        raise DataError(f"{name}: the Parquet file has no columns")
    if table.num_rows == 0:
        raise DataError(f"{name}: the Parquet file has no rows")
    df = _arrow_to_pandas(table)
    if not isinstance(df.index, pd.RangeIndex):
        # A named index written by pandas is data (often the id); an unnamed one is not.
        df = df.reset_index(drop=all(n is None for n in df.index.names))
    df.columns = _check_names(list(df.columns), name)
    return df


def _read_local(path: Path, name: str) -> tuple[pd.DataFrame, str]:
    if path.stat().st_size == 0:
        raise DataError(f"{name}: the file is empty (0 bytes)")
    fmt, compression = _detect_format(path, name)
    if fmt == "parquet":
        return _read_parquet_file(path, name), fmt
    return _read_csv(path, compression, name), fmt


def read_table(
    uri: str | os.PathLike[str], *, storage: StorageConfig | None = None
) -> pd.DataFrame:
    """The raw table at ``uri`` (local path or ``s3://bucket/key``), CSV or Parquet.

    Column names are stripped; numbers and ISO timestamps that fill a whole column
    are parsed, everything else stays a string for ``coerce_types`` to decide.
    Raises ``DataError`` naming the file for anything that makes it unusable.
    """
    name = os.fspath(uri)
    with _local_file(uri, storage) as path:
        df, _ = _read_local(path, name)
    return df


# --------------------------------------------------------------------------- typing


def _as_arrow(series: pd.Series) -> pa.ChunkedArray:
    """The column as Arrow data (zero-copy for Arrow-backed strings)."""
    try:
        arr = pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed Python types (say ints and strings): read every value as its text.
        texts = series.astype(object).where(series.isna(), series.astype(str))
        arr = pa.array(texts, type=pa.string(), from_pandas=True)
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def _sample(arr: pa.ChunkedArray) -> pa.Array:
    """Up to SAMPLE_SIZE non-missing values spread evenly over the column."""
    n = len(arr)
    if n > SAMPLE_SIZE:
        taken = arr.take(pa.array(np.linspace(0, n - 1, SAMPLE_SIZE).astype(np.int64)))
        taken = taken.drop_null()
        # A mostly-empty column leaves too few values to judge by; take them all.
        if len(taken) >= SAMPLE_SIZE // 10 or arr.null_count == 0:
            return taken.combine_chunks()
    return arr.drop_null().combine_chunks()


def _to_float(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Float values with NaN where a value is missing or is not a number."""
    try:
        # Arrow's parser is the fast path; it refuses the whole column on one bad value.
        return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = arr.to_numpy(zero_copy_only=False) if hasattr(arr, "to_numpy") else arr
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)


def _to_datetime(arr: pa.ChunkedArray | pa.Array) -> pd.Series:
    values = arr.to_numpy(zero_copy_only=False)
    parsed = pd.to_datetime(
        pd.Series(values, dtype=object), format="ISO8601", utc=True, errors="coerce"
    )
    return parsed.dt.tz_convert(None).astype("datetime64[ns]")


def _boolean_labels(uniques: list[str]) -> bool | None:
    """None if the values are not one true/false pair; else whether to lower-case them."""
    lowered = {u.lower() for u in uniques}
    if not lowered or not any(lowered <= set(pair) for pair in BOOLEAN_PAIRS):
        return None
    return len(set(uniques)) > len(lowered)


def _category(arr: pa.ChunkedArray, index: pd.Index) -> pd.Series:
    cat = pd.Series(arr.dictionary_encode().to_pandas(), index=index)
    if not isinstance(cat.dtype, pd.CategoricalDtype):
        cat = cat.astype("category")
    return cat.cat.reorder_categories(sorted(cat.cat.categories))


def _text(arr: pa.ChunkedArray, index: pd.Index) -> pd.Series:
    values = arr.to_numpy(zero_copy_only=False)
    if arr.null_count:
        # NaN, not None, is pandas' missing value in object columns.
        values[pd.isna(values)] = np.nan
    return pd.Series(values, index=index, dtype=object, copy=False)


def _is_text(n_unique: int, n_rows: int, max_categories: int, max_fraction: float) -> bool:
    return n_unique > max_categories and n_unique > max_fraction * n_rows


def _null_where_marker(arr: pa.ChunkedArray | pa.Array) -> tuple[Any, pa.Array]:
    """(values with missing markers as nulls, the boolean marker mask)."""
    is_marker = pc.fill_null(pc.is_in(pc.utf8_lower(arr), value_set=_MARKER_SET), False)
    if not pc.any(is_marker).as_py():
        return arr, is_marker
    return pc.if_else(is_marker, pa.scalar(None, arr.type), arr), is_marker


def _coerce_strings(
    arr: pa.ChunkedArray, index: pd.Index, max_categories: int, max_fraction: float
) -> tuple[pd.Series | Callable[[], pd.Series], str, int]:
    """(column, kind, n_unparsed) for a column of strings; a text column is returned
    as a function that builds it, so it is built after the other columns shrank."""
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    # Trimming (one pass in Arrow) is cheaper than searching for values that need it.
    arr = pc.utf8_trim_whitespace(arr)

    sample, sample_markers = _null_where_marker(_sample(arr))
    sample = sample.filter(pc.invert(sample_markers))
    # More distinct values in the sample than max_categories means more in the column:
    # it cannot be boolean, and the distinct values themselves are not needed (for a
    # million ids they would cost more memory than the column).
    many_values = len(pc.unique(sample)) > max_categories
    if many_values:
        arr, _ = _null_where_marker(arr)
        uniques = None
    else:
        uniques = pc.unique(arr).drop_null()
        is_marker = pc.is_in(pc.utf8_lower(uniques), value_set=_MARKER_SET)
        if pc.any(is_marker).as_py():
            markers = pc.filter(uniques, is_marker)
            arr = pc.if_else(pc.is_in(arr, value_set=markers), pa.scalar(None, arr.type), arr)
            uniques = pc.filter(uniques, pc.invert(is_marker))
    n_present = len(arr) - arr.null_count
    if n_present == 0:
        return pd.Series(np.full(len(arr), np.nan), index=index), "numeric", 0

    # Markers are gone, so NaN here means "not a number" ("inf" parses as a number).
    if len(sample) and (~np.isnan(_to_float(sample))).mean() >= PARSE_THRESHOLD:
        values = _to_float(arr)
        n_ok = int((~np.isnan(values)).sum())
        if n_ok >= PARSE_THRESHOLD * n_present:
            return pd.Series(values, index=index), "numeric", n_present - n_ok

    if uniques is not None and len(uniques) <= 2 * len(BOOLEAN_PAIRS[0]):
        lower = _boolean_labels(uniques.to_pylist())
        if lower is not None:
            return _category(pc.utf8_lower(arr) if lower else arr, index), "boolean", 0

    # The regex is a cheap filter so ordinary strings never reach the date parser.
    iso_like = pc.match_substring_regex(sample, r"^\d{4}-\d\d")
    if (
        len(sample)
        and pc.mean(iso_like.cast(pa.float64())).as_py() >= PARSE_THRESHOLD
        and _to_datetime(sample).notna().mean() >= PARSE_THRESHOLD
    ):
        parsed = _to_datetime(arr)
        n_ok = int(parsed.notna().sum())
        if n_ok >= PARSE_THRESHOLD * n_present:
            parsed.index = index
            return parsed, "datetime", n_present - n_ok

    n_unique = len(uniques) if uniques is not None else pc.count_distinct(arr).as_py()
    if _is_text(n_unique, len(arr), max_categories, max_fraction):
        return functools.partial(_text, arr, index), "text", 0
    return _category(arr, index), "categorical", 0


def _coerce_column(
    series: pd.Series, max_categories: int, max_fraction: float
) -> tuple[pd.Series | Callable[[], pd.Series], str, int]:
    """(column, kind, n_unparsed); the column is ``series`` itself when nothing changes."""
    dtype = series.dtype
    index = series.index
    if isinstance(dtype, pd.CategoricalDtype):
        return _coerce_categorical(series, max_categories, max_fraction)
    if pd.api.types.is_bool_dtype(dtype):
        return _coerce_bool(series), "boolean", 0
    if pd.api.types.is_integer_dtype(dtype):
        if isinstance(dtype, np.dtype):
            return series, "numeric", 0
        # Nullable integers: scikit-learn wants NaN, not pd.NA.
        if series.isna().any():
            values = series.to_numpy(np.float64, na_value=np.nan)
        else:
            values = series.to_numpy(np.int64)
        return pd.Series(values, index=index), "numeric", 0
    if pd.api.types.is_float_dtype(dtype):
        if isinstance(dtype, np.dtype):
            return series, "numeric", 0
        return pd.Series(series.to_numpy(np.float64, na_value=np.nan), index=index), "numeric", 0
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return _normalize_datetime(series), "datetime", 0
    if pd.api.types.is_timedelta64_dtype(dtype):
        return series.dt.total_seconds(), "numeric", 0

    arr = _as_arrow(series)
    t = arr.type
    if pa.types.is_null(t):
        return pd.Series(np.full(len(series), np.nan), index=index), "numeric", 0
    if pa.types.is_boolean(t):
        return _coerce_bool(pd.Series(arr.to_pandas(), index=index)), "boolean", 0
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        if pa.types.is_decimal(t):
            arr = arr.cast(pa.float64())
        values = arr.to_numpy() if arr.null_count == 0 else arr.cast(pa.float64()).to_numpy()
        return pd.Series(values, index=index), "numeric", 0
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        values = pd.Series(arr.cast(pa.timestamp("ns", getattr(t, "tz", None))).to_pandas())
        values.index = index
        return _normalize_datetime(values), "datetime", 0
    if pa.types.is_dictionary(t):
        return _coerce_categorical(series.astype("category"), max_categories, max_fraction)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _coerce_strings(arr, index, max_categories, max_fraction)
    raise DataError(
        f"column {series.name!r} has values of type {t} (dtype {dtype}), which kubeloop "
        "cannot use; convert it to numbers, strings, booleans or timestamps"
    )


def _coerce_bool(series: pd.Series) -> pd.Series:
    labels = series.map({True: "True", False: "False"}, na_action="ignore")
    return labels.astype(pd.CategoricalDtype(["False", "True"]))


def _normalize_datetime(series: pd.Series) -> pd.Series:
    if getattr(series.dtype, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if series.dtype != np.dtype("datetime64[ns]"):
        series = series.astype("datetime64[ns]")
    return series


def _coerce_categorical(
    series: pd.Series, max_categories: int, max_fraction: float
) -> tuple[pd.Series, str, int]:
    """A column that already is a category: its categories, not its rows, are typed."""
    cats = series.cat.categories
    if not (pd.api.types.is_object_dtype(cats.dtype) or pd.api.types.is_string_dtype(cats.dtype)):
        return series, "categorical", 0
    labels = [str(c) for c in cats]
    stripped = [s.strip() for s in labels]
    missing = [c for c, s in zip(cats, stripped, strict=True) if s.lower() in _MISSING_LOWER]
    if missing or stripped != labels or any(not isinstance(c, str) for c in cats):
        # Rare: fix up the labels through the string path.
        return _coerce_strings(
            _as_arrow(series.astype(object)), series.index, max_categories, max_fraction
        )
    used = series.cat.remove_unused_categories()
    used_labels = list(used.cat.categories)
    n_present = int(used.notna().sum())
    if n_present == 0:
        return pd.Series(np.full(len(series), np.nan), index=series.index), "numeric", 0
    if len(used_labels) <= 2 * len(BOOLEAN_PAIRS[0]):
        lower = _boolean_labels(used_labels)
        if lower is not None:
            if lower:
                out = used.astype(object).str.lower().astype("category")
            elif _boolean_labels(labels) is False:
                # Declared but unseen labels of the same pair are kept ("True" only
                # in this batch still has the category "False").
                out = series
            else:
                out = used
            return _sorted_categories(out), "boolean", 0
    if _is_text(len(used_labels), len(series), max_categories, max_fraction):
        text = series.astype(object)
        return text.where(text.notna(), np.nan), "text", 0
    return _sorted_categories(series), "categorical", 0


def _sorted_categories(series: pd.Series) -> pd.Series:
    cats = list(series.cat.categories)
    if cats == sorted(cats):
        return series
    return series.cat.reorder_categories(sorted(cats))


def _profile_entry(before: Any, after: str, kind: str, n_unparsed: int) -> dict[str, Any]:
    changed = str(before) != after
    return {
        "dtype": after,
        "kind": kind,
        "coerced_from": str(before) if changed else None,
        "n_unparsed": int(n_unparsed),
    }


def _coerce_in_place(df: pd.DataFrame, max_categories: int, max_category_fraction: float) -> dict:
    if not isinstance(max_categories, int) or max_categories < 1:
        raise ValueError(f"max_categories must be a positive integer, got {max_categories!r}")
    if not 0 < max_category_fraction <= 1:
        raise ValueError(f"max_category_fraction must be in (0, 1], got {max_category_fraction!r}")
    df.columns = _check_names(list(df.columns), "the table")
    columns: dict[str, dict[str, Any]] = {}
    deferred: list[tuple[str, Callable[[], pd.Series]]] = []
    series = None
    for i, name in enumerate(df.columns):
        series = df.iloc[:, i]
        try:
            new, kind, n_unparsed = _coerce_column(series, max_categories, max_category_fraction)
        except DataError:
            raise
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise DataError(
                f"column {name!r} (dtype {series.dtype}): cannot convert its values "
                f"({type(exc).__name__}: {exc}); clean the column or drop it"
            ) from exc
        if callable(new):
            deferred.append((name, new))
            columns[name] = _profile_entry(series.dtype, "object", kind, n_unparsed)
            continue
        columns[name] = _profile_entry(series.dtype, str(new.dtype), kind, n_unparsed)
        if new is not series:
            # Replacing the column (not writing into it) releases the raw values
            # as soon as nothing else holds them, which keeps peak memory low.
            df[name] = new
    del series
    # Text columns become Python strings, the largest form any column takes, so
    # they are built last, once the raw strings of the other columns are gone and
    # Arrow's allocator has handed their pages back for Python to reuse.
    if deferred:
        pa.default_memory_pool().release_unused()
    while deferred:
        name, build = deferred.pop(0)
        df[name] = build()
        del build
    return {
        "n_rows": int(len(df)),
        "n_columns": int(df.shape[1]),
        "columns": columns,
        "memory_bytes": int(df.memory_usage(index=False, deep=True).sum()),
    }


def coerce_types(
    df: pd.DataFrame, *, max_categories: int = 100, max_category_fraction: float = 0.5
) -> tuple[pd.DataFrame, dict]:
    """The table with every column typed by the module's rules, and its profile.

    The profile is ``{"n_rows", "n_columns", "memory_bytes", "columns": {name:
    {"dtype", "kind", "coerced_from", "n_unparsed"}}}``; ``coerced_from`` is the
    original dtype when it changed, else None. ``df`` itself is not modified.
    """
    out = df.copy(deep=False)
    profile = _coerce_in_place(out, max_categories, max_category_fraction)
    return out, profile


# --------------------------------------------------------------------------- stage


# Names that exports give a row number (pandas' reset_index, R, readr, a re-read
# pandas index); compared case-insensitively.
_ROW_NUMBER_NAMES = {"index", "unnamed: 0", "rownames", "row.names", "...1", "x", "row",
                     "row_number", "rownum", "row_id", UNNAMED_FIRST.lower()}


def _is_row_sequence(series: pd.Series) -> bool:
    """0..n-1 or 1..n in file order: what a row number is, and never a real feature."""
    if not ptypes.is_integer_dtype(series) or series.isna().any() or len(series) < 2:
        return False
    values = series.to_numpy()
    return values[0] in (0, 1) and bool(np.all(np.diff(values) == 1))


def drop_row_numbers(df: pd.DataFrame, name: str, keep: set[str] = frozenset()) -> list[dict[str, str]]:
    """Drop, in place, the columns that are row numbers or row names; what was dropped.

    An unnamed first column is the row names an export wrote (pandas' ``to_csv``, R's
    ``write.csv``): dropped when its values are unique, an error otherwise (then it is
    data whose header is missing). A column named like an index (``index``,
    ``Unnamed: 0``, ``X``, ...) that counts 0..n-1 or 1..n is dropped too: a sorted
    export makes a row number a leak of the target. ``keep`` (the target, id and time
    columns) is never dropped.
    """
    dropped = []
    if UNNAMED_FIRST in df.columns:
        if not df[UNNAMED_FIRST].is_unique:
            raise DataError(
                f"{name}: the first column has an empty name and repeated values, so it is "
                "not row numbers; give it a name in the header"
            )
        df.drop(columns=[UNNAMED_FIRST], inplace=True)
        dropped.append({"column": "", "reason": "the unnamed first column holds row names or numbers "
                        "(an export's index), not data"})
    for col in list(df.columns):
        if col in keep or str(col).strip().lower() not in _ROW_NUMBER_NAMES:
            continue
        if _is_row_sequence(df[col]):
            df.drop(columns=[col], inplace=True)
            dropped.append({"column": col, "reason": f"'{col}' counts the rows (0..n-1 or 1..n): a row "
                            "number, which a sorted export turns into a leak of the target"})
    return dropped


def ingest(
    uri: str | os.PathLike[str],
    *,
    storage: StorageConfig | None = None,
    max_categories: int = 100,
    max_category_fraction: float = 0.5,
    keep: set[str] = frozenset(),
) -> tuple[pd.DataFrame, dict]:
    """Read and type the table at ``uri``; the profile also names its source.

    Adds to ``coerce_types``' profile: ``source_uri``, ``format`` ("csv" or
    "parquet"), ``size_bytes`` and ``sha256`` of the file's bytes (the file as
    stored, before decompression), so a run can say exactly which data it saw.
    """
    name = os.fspath(uri)
    with _local_file(uri, storage) as path:
        size = path.stat().st_size
        df, fmt = _read_local(path, name)
        digest = sha256_file(path)
    dropped = drop_row_numbers(df, name, keep)
    profile = _coerce_in_place(df, max_categories, max_category_fraction)
    profile.update({"source_uri": name, "format": fmt, "size_bytes": size, "sha256": digest,
                    "dropped_columns": dropped})
    return df, profile


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import Artifact, Dataset, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def ingest_op(data_uri: str, config: dict, dataset: Output[Dataset], profile: Output[Artifact]):
    """Read the table at ``data_uri`` (local or s3://), type it, write Parquet, in bounded batches."""
    import json

    from kubeloop.components.ingest_stream import ingest_to_parquet
    from kubeloop.config import Config
    from kubeloop.progress import stage

    with stage("ingest") as st:
        cfg = Config.from_dict(config)
        prof = ingest_to_parquet(
            data_uri,
            dataset.path,
            storage=cfg.storage,
            max_categories=cfg.validation.max_categories,
            max_category_fraction=cfg.validation.max_category_fraction,
            keep={c for c in (cfg.target, cfg.id_column, cfg.time_column) if c},
        )
        with open(profile.path, "w") as f:
            json.dump(prof, f, indent=2, default=str)
        rows, columns = prof["n_rows"], prof["n_columns"]
        dataset.metadata.update({"rows": rows, "columns": columns, "sha256": prof["sha256"]})
        st.result = f"{rows:,} rows x {columns} columns ({prof['format']})"
        if prof["dropped_columns"]:
            st.result += f"; dropped {len(prof['dropped_columns'])} row-number column(s)"
        if not prof["streamed"]:
            st.result += "; read whole (the batch readers do not take this input)"
        st.details = {"rows": rows, "columns": columns}
