"""Data larger than memory, read in batches: Parquet or CSV, a file or a prefix
(every data file under it), on a local disk or ``s3://``.

Only one batch of the columns asked for is in memory at a time (Parquet row
groups are read a batch at a time; CSV is parsed block by block), and the
per-column accumulators of ``stats`` keep memory bounded by the reference, not
by the data. S3 objects are read through pyarrow's S3 filesystem, which streams
ranges instead of downloading whole files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kubeloop.errors import UserError
from kubeloop.monitoring.columns import (
    CATEGORICAL,
    NUMERIC,
    category_counts,
    kind_of,
    numeric_values,
)
from kubeloop.monitoring.profile import categorical_entry, finish_profile, numeric_entry
from kubeloop.monitoring.stats import (
    KEEP_CURRENT,
    SORTED_VALUES,
    CategoricalAccumulator,
    NumericAccumulator,
)

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
DEFAULT_BATCH_ROWS = 131_072
# pyarrow's missing-value markers, and "?" (common in public datasets).
CSV_NULLS = [*__import__("pyarrow.csv", fromlist=["ConvertOptions"]).ConvertOptions().null_values, "?"]
# Values kept from a data reference, over all its numeric columns, and as many from
# the current data (8 bytes each: 256 MB a side). Within it KS is exact (see
# stats.ks_exact_sorted); a column beyond it is compared against quantile points.
REFERENCE_VALUE_BUDGET = 32_000_000
# Quantile points kept from a large or sampled data reference.
SAMPLED_POINTS = 16_384
# Up to this many values a reference column's points are its values themselves.
EXACT_POINTS_MAX = 200_000
# A reference too large to keep whole is sampled uniformly to this many values.
SAMPLE_ROWS = 200_000


class DataError(UserError):
    """The data cannot be read for monitoring; the message names the file and column."""


def _is_data(name: str) -> bool:
    low = name.lower()
    base = low.rsplit("/", 1)[-1]
    return not base.startswith((".", "_")) and low.endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)


# --------------------------------------------------------------------------- files


def _filesystem(uri: str, storage: Any = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or s3:// URI."""
    from pyarrow import fs

    if uri.startswith("s3://"):
        from kubeloop.storage import resolve_settings

        s = resolve_settings(storage)
        kwargs: dict[str, Any] = {"region": s.region}
        if s.endpoint_url:
            scheme, _, host = s.endpoint_url.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if s.has_explicit_credentials:
            kwargs.update(access_key=s.access_key_id, secret_key=s.secret_access_key, session_token=s.session_token)
        if s.path_style:
            kwargs["force_virtual_addressing"] = False
        return fs.S3FileSystem(**kwargs), uri[len("s3://"):].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif "://" in uri:
        raise DataError(f"{uri}: unsupported location scheme {uri.split('://')[0]}://; use a local path or s3://")
    return fs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


_DATE_PART = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")


def in_window(path: str, since: datetime | None, until: datetime | None) -> bool:
    """Whether a file under a ``date=YYYY-MM-DD`` partition (of UTC days, as the
    predictor writes them) can hold rows with ``since <= time < until``; a file
    outside any date partition always can."""
    m = _DATE_PART.search(path.rsplit("/", 1)[0] + "/")
    if not m or (since is None and until is None):
        return True
    day = datetime.strptime(m.group(1), "%Y-%m-%d").date()

    def utc_day(t: datetime) -> Any:
        return (t.astimezone(timezone.utc) if t.tzinfo else t).date()

    if since is not None and day < utc_day(since):
        return False
    return not (until is not None and day > utc_day(until))


def list_files(uri: str, storage: Any = None, *, since: datetime | None = None,
               until: datetime | None = None) -> tuple[Any, list[str]]:
    """(filesystem, data files): ``uri`` itself if it is a file, else every Parquet
    or CSV file under it, in name order (so dated log partitions come in order).
    With ``since``/``until``, ``date=`` partitions outside the window are left out
    unread (a run reads its window, not the whole log history)."""
    from pyarrow import fs

    filesystem, path = _filesystem(uri, storage)
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return filesystem, [path]
        selector = fs.FileSelector(path, recursive=True, allow_not_found=True)
        files = sorted(i.path for i in filesystem.get_file_info(selector) if i.type == fs.FileType.File and _is_data(i.path))
    except OSError as exc:
        raise DataError(f"{uri}: cannot be read ({exc})") from None
    if not files:
        what = "no such file or directory" if info.type == fs.FileType.NotFound else "no Parquet or CSV files under it"
        raise DataError(f"{uri}: {what}")
    if since is not None or until is not None:
        files = [f for f in files if in_window(f, since, until)]
    return filesystem, files


def _csv_reader(filesystem: Any, path: str, columns: list[str] | None, types: dict[str, pa.DataType] | None,
                batch_rows: int) -> Any:
    import pyarrow.csv as pacsv

    delimiter = "\t" if ".tsv" in path.lower() else ","
    stream = filesystem.open_input_stream(path)  # decompresses .gz by the name
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 64)),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns, include_missing_columns=False, column_types=types or {},
            strings_can_be_null=True, null_values=CSV_NULLS,
        ),
    )


def file_schema(filesystem: Any, path: str) -> pa.Schema:
    if path.lower().endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq

        with filesystem.open_input_file(path) as f:
            return pq.ParquetFile(f).schema_arrow
    return _csv_reader(filesystem, path, None, None, DEFAULT_BATCH_ROWS).schema


def iter_batches(
    uri: str,
    columns: list[str] | None = None,
    *,
    storage: Any = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    csv_types: dict[str, pa.DataType] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    dictionary: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Batches of ``columns`` (those a file has) from every data file of ``uri``
    (only the ``date=`` partitions that can hold ``[since, until)``, when given).
    Parquet columns named in ``dictionary`` come as Arrow dictionaries: counting
    categories then touches small integer codes, not a Python string per row."""
    import pyarrow.parquet as pq

    filesystem, files = list_files(uri, storage, since=since, until=until)
    for path in files:
        header: list[str] = []
        shown = f"s3://{path}" if uri.startswith("s3://") else path
        try:
            if path.lower().endswith(PARQUET_SUFFIXES):
                with filesystem.open_input_file(path) as f:
                    pf = pq.ParquetFile(f, pre_buffer=False, read_dictionary=dictionary or None)
                    have = set(pf.schema_arrow.names)
                    cols = None if columns is None else [c for c in columns if c in have]
                    yield from pf.iter_batches(batch_size=batch_rows, columns=cols, use_threads=True)
            else:
                header = _csv_reader(filesystem, path, None, None, batch_rows).schema.names
                have = set(header)
                cols = None if columns is None else [c for c in columns if c in have]
                types = {k: v for k, v in (csv_types or {}).items() if k in have and (cols is None or k in cols)}
                yield from _csv_reader(filesystem, path, cols, types, batch_rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"{shown}: {_name_csv_column(str(exc), header)}") from None
        except OSError as exc:
            raise DataError(f"{shown}: cannot be read ({exc})") from None


def _name_csv_column(message: str, header: list[str]) -> str:
    # pyarrow counts CSV columns from 0 and does not name them.
    import re

    m = re.search(r"In CSV column #(\d+)", message)
    if m and int(m.group(1)) < len(header):
        name = header[int(m.group(1))]
        return message.replace(m.group(0), f"column {name!r}") + " (expected a number, as in the reference)"
    return message


def infer_kinds(uri: str, storage: Any = None) -> dict[str, str | None]:
    """Column kinds of the first file of ``uri`` (numbers numeric, text and booleans
    categorical, anything else not compared)."""
    filesystem, files = list_files(uri, storage)
    schema = file_schema(filesystem, files[0])
    return {f.name: kind_of(f.type) for f in schema}


def csv_types_for(kinds: dict[str, str]) -> dict[str, pa.DataType]:
    """CSV column types that make every block parse alike (pyarrow infers per block):
    all text, numbers parsed per batch (see ``columns.numeric_values``)."""
    return {c: pa.string() for c in kinds}


# --------------------------------------------------------------------------- reference from data


class _BottomK:
    """A uniform random sample of at most ``k`` values of a stream: each value gets a
    random key and the ``k`` smallest keys are kept (vectorised reservoir sampling)."""

    def __init__(self, k: int, seed: int):
        self.k = k
        self.values = np.empty(0)
        self.keys = np.empty(0)
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        values = np.concatenate([self.values, x])
        keys = np.concatenate([self.keys, self.rng.random(x.size)])
        if values.size > self.k:
            keep = np.argpartition(keys, self.k - 1)[: self.k]
            values, keys = values[keep], keys[keep]
        self.values, self.keys = values, keys


class _NumericProfiler:
    """One numeric column of a data reference: every value while at most ``keep``
    (the exact path), else a uniform sample of ``SAMPLE_ROWS``; exact moments always."""

    def __init__(self, keep: int, seed: int):
        self.keep = keep
        self.parts: list[np.ndarray] | None = []
        self.sample = _BottomK(min(keep, SAMPLE_ROWS), seed)
        self.n = 0
        self.missing = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = np.inf
        self.max = -np.inf
        # distinct whole numbers rising row after row: a row number or an id, not a feature
        self.rising_integers = True

    def add(self, x: np.ndarray) -> None:
        finite = x[np.isfinite(x)]
        self.missing += x.size - finite.size
        if finite.size == 0:
            return
        if self.rising_integers:
            self.rising_integers = bool(
                finite[0] > self.max and np.all(np.diff(finite) > 0) and np.all(finite == np.round(finite))
            )
        self.n += finite.size
        self.sum += float(finite.sum())
        self.sumsq += float((finite * finite).sum())
        self.min = min(self.min, float(finite.min()))
        self.max = max(self.max, float(finite.max()))
        if self.parts is not None:
            self.parts.append(finite)
            if self.n > self.keep:  # too many to keep whole: a sample from here on
                for part in self.parts:
                    self.sample.add(part)
                self.parts = None
        else:
            self.sample.add(finite)

    def entry(self, points: int, bins: int) -> dict[str, Any]:
        if self.n == 0:
            return numeric_entry(np.empty(0), missing=self.missing, points=points, bins=bins)
        mean = self.sum / self.n
        moments = {"min": self.min, "max": self.max, "mean": mean,
                   "std": float(np.sqrt(max(self.sumsq / self.n - mean * mean, 0.0)))}
        if self.parts is not None:
            values = np.concatenate(self.parts)
            values.sort()
            self.parts = None
            if len(values) <= EXACT_POINTS_MAX:
                # Few enough: the points are the values themselves (exact).
                return numeric_entry(values, missing=self.missing, moments=moments,
                                     points=max(points, len(values)), bins=bins)
            # Every value, sorted, beside quantile points of them (the accumulators'
            # cells): KS is computed exactly from both sorted columns.
            entry = numeric_entry(values, missing=self.missing, moments=moments,
                                  points=max(points, SAMPLED_POINTS), bins=bins)
            entry[SORTED_VALUES] = values
            entry[KEEP_CURRENT] = self.keep
            return entry
        values = np.sort(self.sample.values)
        # A uniform sample: quantile points of it (the hot loop's cost grows with
        # the number of points; a sample's own error is larger than 1/SAMPLED_POINTS).
        entry = numeric_entry(values, missing=self.missing, n_total=self.n, moments=moments,
                              points=max(points, SAMPLED_POINTS), bins=bins)
        entry["sample"] = len(values)
        return entry


def profile_uri(uri: str, cfg: Any, *, storage: Any = None, columns: list[str] | None = None,
                on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The profile of a data file or prefix used as a reference, in one streaming pass.

    Numeric columns keep up to ``cfg.exact_reference_rows`` values each, exactly
    (a uniform sample beyond that); columns that look like identifiers or free
    text (more than ``cfg.max_categories`` distinct values, most of them unique)
    and dates are listed under ``skipped``.
    """
    kinds_all = infer_kinds(uri, storage)
    if columns is not None:
        kinds_all = {c: k for c, k in kinds_all.items() if c in columns}
    skipped = {c: "not numbers or categories (dates, binary)" for c, k in kinds_all.items() if k is None}
    kinds = {c: k for c, k in kinds_all.items() if k is not None}
    n_numeric = sum(1 for k in kinds.values() if k == NUMERIC)
    # Wide tables share a budget of kept values, so memory stays bounded by it
    # (plus one batch) however many numeric columns there are.
    keep = max(10_000, min(cfg.exact_reference_rows, REFERENCE_VALUE_BUDGET // max(n_numeric, 1)))
    numeric = {c: _NumericProfiler(keep, seed=i) for i, (c, k) in enumerate(kinds.items()) if k == NUMERIC}
    cats = {c: CategoricalAccumulator() for c, k in kinds.items() if k == CATEGORICAL}
    too_many = max(10 * cfg.max_categories, 10_000)
    n_rows = 0
    for batch in iter_batches(uri, list(kinds), storage=storage, batch_rows=cfg.batch_rows, csv_types=csv_types_for(kinds),
                              dictionary=list(cats)):
        n_rows += batch.num_rows
        names = batch.schema.names
        for c, prof in numeric.items():
            if c in names:
                prof.add(_numbers(batch.column(names.index(c)), c, uri))
        for c, acc in list(cats.items()):
            if c in names:
                counts, missing = category_counts(batch.column(names.index(c)))
                acc.add_counts(counts, missing)
                if len(acc.counts) > too_many and len(acc.counts) > 0.5 * acc.n:
                    # An id or free text: stop counting (its counts would grow with the data).
                    skipped[c] = f"identifier or free text (over {too_many} distinct values)"
                    del cats[c]
        if on_batch:
            on_batch(batch.num_rows)
    entries: dict[str, Any] = {}
    for c, k in kinds.items():
        if k == NUMERIC:
            prof = numeric[c]
            if prof.rising_integers and prof.n >= 1000 and prof.missing == 0:
                skipped[c] = "identifier (distinct whole numbers rising row by row)"
                continue
            entries[c] = prof.entry(cfg.profile_points, cfg.psi_bins)
        elif c in cats:
            acc = cats[c]
            n_distinct = len(acc.counts)
            if n_distinct > cfg.max_categories and n_distinct > 0.5 * max(acc.n, 1):
                skipped[c] = f"identifier or free text ({n_distinct} distinct values)"
                continue
            if _looks_like_dates(list(acc.counts)[:200]):
                skipped[c] = "dates written as text"
                continue
            entries[c] = categorical_entry(acc.counts, missing=int(acc.missing), max_categories=cfg.max_categories)
    return finish_profile(entries, n_rows=n_rows, skipped=skipped)


_DATE_TEXT = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T]\d{1,2}:\d{2}.*)?$")


def _looks_like_dates(values: list[str]) -> bool:
    """Text that is mostly dates: its categories change with time by construction."""
    if len(values) < 3:
        return False
    hits = sum(1 for v in values if _DATE_TEXT.match(v.strip()))
    return hits >= 0.9 * len(values)


def _numbers(arr: Any, column: str, uri: str) -> np.ndarray:
    try:
        return numeric_values(arr)
    except ValueError as exc:
        raise DataError(f"{uri}: column {column!r}: {exc}") from None


# --------------------------------------------------------------------------- current data


def served_rows(version: str | None = None, since: datetime | None = None,
                until: datetime | None = None) -> Any:
    """A batch filter: rows answered (status ok) by ``version`` (any when None), not
    shadow answers, with ``since <= time < until``."""

    def keep(batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        mask = None

        def both(m: Any) -> None:
            nonlocal mask
            m = pc.fill_null(m, False)
            mask = m if mask is None else pc.and_(mask, m)

        if "status" in names:
            both(pc.equal(batch.column(names.index("status")), "ok"))
        if "role" in names:
            both(pc.not_equal(batch.column(names.index("role")), "shadow"))
        if version is not None and "version" in names:
            both(pc.equal(batch.column(names.index("version")), version))
        if (since or until) and "time" in names:
            t = batch.column(names.index("time"))
            if not pa.types.is_timestamp(t.type):
                raise DataError(f"prediction logs: column 'time' is {t.type}, expected a timestamp")

            def at(moment: datetime) -> pa.Scalar:
                if t.type.tz is None and moment.tzinfo is not None:  # naive times are read as UTC
                    moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
                return pa.scalar(moment, type=t.type)

            if since:
                both(pc.greater_equal(t, at(since)))
            if until:
                both(pc.less(t, at(until)))
        return batch if mask is None else batch.filter(mask)

    return keep



def new_accumulators(profile: dict[str, Any]) -> dict[str, Any]:
    accs: dict[str, Any] = {}
    for name, entry in profile["columns"].items():
        if entry["kind"] == NUMERIC:
            if not entry["points"]:
                accs[name] = CategoricalAccumulator()
            elif entry.get(SORTED_VALUES) is not None:
                # A data reference kept whole: keep as many current values, for exact KS.
                accs[name] = NumericAccumulator(entry["points"], keep_values=int(entry[KEEP_CURRENT]))
            else:
                accs[name] = NumericAccumulator(entry["points"])
        else:
            accs[name] = CategoricalAccumulator()
    return accs


def add_batch(accs: dict[str, Any], batch: pa.RecordBatch | pa.Table, where: str = "data") -> None:
    names = batch.schema.names
    for name, acc in accs.items():
        if name not in names:
            continue
        col = batch.column(names.index(name))
        if isinstance(acc, NumericAccumulator):
            acc.add(_numbers(col, name, where))
        else:
            counts, missing = category_counts(col)
            acc.add_counts(counts, missing)


def accumulate_uri(
    uri: str,
    profile: dict[str, Any],
    *,
    storage: Any = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_filter: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    extra_columns: list[str] | None = None,
    prediction_column: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[dict[str, Any], int, set[str]]:
    """Accumulators for every profiled column over the current data at ``uri``:
    (accumulators, rows read, columns the data has). ``prediction_column`` is
    accumulated under the key ``"__prediction__"`` against the profile's prediction."""
    accs = new_accumulators(profile)
    pred_acc = None
    if prediction_column and profile.get("prediction"):
        pred_acc = new_accumulators({"columns": {"p": profile["prediction"]}})["p"]
    kinds = {c: e["kind"] for c, e in profile["columns"].items()}
    wanted = list(kinds) + list(extra_columns or []) + ([prediction_column] if pred_acc else [])
    csv_types = csv_types_for(kinds)
    n_rows = 0
    seen: set[str] = set()
    for batch in iter_batches(uri, wanted, storage=storage, batch_rows=batch_rows, csv_types=csv_types,
                              since=since, until=until,
                              dictionary=[c for c, acc in accs.items() if isinstance(acc, CategoricalAccumulator)]):
        seen.update(batch.schema.names)
        if row_filter is not None:
            batch = row_filter(batch)
        n_rows += batch.num_rows
        add_batch(accs, batch, uri)
        if pred_acc is not None and prediction_column in batch.schema.names:
            add_batch({prediction_column: pred_acc}, batch, uri)
    if pred_acc is not None:
        accs["__prediction__"] = pred_acc
    return accs, n_rows, seen


def accumulators_from_profile(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Accumulators holding a current *profile* (its points and counts), for comparing
    two registered versions."""
    accs = new_accumulators(reference)
    for name, acc in accs.items():
        entry = current["columns"].get(name)
        if entry is None or entry["kind"] != reference["columns"][name]["kind"]:
            continue
        if isinstance(acc, NumericAccumulator):
            if entry["points"]:
                acc.add(entry["points"], entry["weights"])
            if entry.get("missing"):
                acc.add([np.nan], [entry["missing"]])
            acc.min, acc.max = entry.get("min", acc.min), entry.get("max", acc.max)
        else:
            counts = dict(entry.get("counts") or {})
            if entry.get("other"):
                counts["(other)"] = entry["other"]
            acc.add_counts(counts, entry.get("missing") or 0)
    return accs


def count_rows(uri: str, storage: Any = None) -> int:
    """Rows of every data file of ``uri`` (Parquet from its footer; CSV by reading
    one column)."""
    import pyarrow.parquet as pq

    filesystem, files = list_files(uri, storage)
    total = 0
    for path in files:
        if path.lower().endswith(PARQUET_SUFFIXES):
            with filesystem.open_input_file(path) as f:
                total += pq.ParquetFile(f).metadata.num_rows
        else:
            first = _csv_reader(filesystem, path, None, None, DEFAULT_BATCH_ROWS).schema.names[:1]
            total += sum(b.num_rows for b in _csv_reader(filesystem, path, first, None, DEFAULT_BATCH_ROWS))
    return total


def data_sha256(uri: str, storage: Any = None) -> str:
    """The data hash recorded in a version's lineage. A single file: the sha256 of
    its bytes as stored (what ingest records). A folder or prefix (a partitioned
    dataset, local or s3://): the sha256 of its sorted listing of data files, one
    ``relative path, size, sha256 of the bytes`` line each, so a file added,
    removed, renamed or changed changes it, and the same bytes give the same hash
    wherever they are stored (content hashes rather than ETags, which differ with
    the upload's part size)."""
    import hashlib

    from pyarrow import fs

    filesystem, root = _filesystem(uri, storage)
    _, files = list_files(uri, storage)
    try:
        if filesystem.get_file_info(root).type == fs.FileType.File:
            return _file_sha256(filesystem, files[0])
        listing = hashlib.sha256()
        for path, info in zip(files, filesystem.get_file_info(files), strict=True):
            relative = path[len(root.rstrip("/")):].lstrip("/")
            listing.update(f"{relative}\t{info.size}\t{_file_sha256(filesystem, path)}\n".encode())
    except OSError as exc:
        raise DataError(f"{uri}: cannot be read ({exc})") from None
    return listing.hexdigest()


def _file_sha256(filesystem: Any, path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with filesystem.open_input_stream(path, compression=None) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def has_data(uri: str, storage: Any = None) -> bool:
    try:
        list_files(uri, storage)
        return True
    except DataError:
        return False
