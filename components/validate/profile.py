"""Column profiles: what one pass over each column learns, shared by the schema and the checks;
and the column roles that follow from them."""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kubeloop.components.validate.codes import (
    _EXAMPLES,
    BAD_COLUMN_NAMES,
    Anomaly,
    _block,
    _native,
    _show,
)
from kubeloop.config import ValidationConfig


@dataclass
class _Profile:
    """What one pass over a column learns; shared by the schema and the checks."""

    name: str
    kind: str
    dtype: str
    n_rows: int
    n_missing: int
    n_unique: int
    # Non-null values and their counts (string-family and boolean columns).
    counts: pd.Series | None = None
    # Numeric columns: a summary of the values, never the values themselves, so a
    # profile's size does not grow with the rows. Finite values only, as the schema
    # and the checks see them; ``n_outside`` counts those outside ``ref_range`` (the
    # production data's [min, max], when there is one).
    n_inf: int = 0
    n_finite: int = 0
    finite_min: float | None = None
    finite_max: float | None = None
    finite_mean: float | None = None
    finite_std: float | None = None
    first_present: Any = None
    n_outside: int = 0
    # Time column only, numeric: whether it holds years or epoch timestamps.
    numeric_time: bool = False
    dt_min: pd.Timestamp | None = None
    dt_max: pd.Timestamp | None = None
    # Time column only: values that are not dates, and how many rows hold them.
    bad_times: list[str] = field(default_factory=list)
    n_bad_time_rows: int = 0
    unsupported: str | None = None

    @property
    def all_null(self) -> bool:
        return self.n_rows > 0 and self.n_missing == self.n_rows

    @property
    def constant(self) -> bool:
        # A column that is one value or missing still says something (missingness),
        # so only a single value in every row counts as constant.
        return self.n_unique == 1 and self.n_missing == 0

    def str_counts(self) -> pd.Series:
        """Counts keyed by the value as a string (how the schema stores categories)."""
        if self.counts is None:
            return pd.Series(dtype="int64")
        keyed = self.counts.copy()
        keyed.index = [str(v) for v in keyed.index]
        return keyed.groupby(level=0, sort=True).sum()

    def first_value(self) -> Any:
        if self.counts is not None and len(self.counts):
            return _native(self.counts.index[0])
        if self.kind == "numeric":
            return self.first_present
        if self.dt_min is not None:
            return self.dt_min.isoformat()
        return None


def _family(kind: str) -> str:
    return "string" if kind in ("categorical", "text") else kind


def _value_counts(s: pd.Series) -> pd.Series:
    try:
        vc = s.value_counts(dropna=True, sort=True)
    except TypeError:  # unhashable objects (lists, dicts) in an object column
        vc = s.dropna().astype(str).value_counts(sort=True)
    return vc[vc > 0]  # category dtype lists unobserved categories with count 0


def _sorted_present(s: pd.Series) -> np.ndarray | None:
    """The non-missing values of a numpy-typed numeric or datetime column, sorted (a
    copy), or None for other dtypes. Datetimes come as int64 nanoseconds."""
    dtype = s.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iufmMb":
        return None
    values = s.to_numpy()
    if dtype.kind in "mM":
        values = values.view("int64")
        values = values[values != np.iinfo(np.int64).min]  # NaT
    elif dtype.kind == "f":
        values = values[~np.isnan(values)]
    else:
        values = values.copy()
    values.sort()
    return values


def _n_distinct(s: pd.Series, ordered: np.ndarray | None = None) -> int:
    """Distinct non-missing values (``Series.nunique``). A numpy-typed column is counted
    on a sorted copy, nine bytes a row: pandas' hash table takes several times that
    on a column of mostly distinct values (a timestamp, an id, a measurement), and
    was the validate step's peak."""
    if ordered is None:
        ordered = _sorted_present(s)
        if ordered is None:
            return int(s.nunique())
    if not len(ordered):
        return 0
    return 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))


def _numeric_profile(
    s: pd.Series, base: dict[str, Any], *, is_time: bool, ref_range: tuple[float, float] | None
) -> _Profile:
    # Counted first, in the column's own dtype (exact for int64), before the float64 copy.
    n_unique = _n_distinct(s)
    values = s.to_numpy(dtype="float64", na_value=np.nan)
    present = ~np.isnan(values)
    first = int(np.argmax(present)) if len(values) else 0
    finite = values[np.isfinite(values)]
    n_present = int(np.count_nonzero(present))
    summary: dict[str, Any] = {
        "n_inf": n_present - len(finite),
        "n_finite": int(len(finite)),
        "first_present": _native(values[first]) if n_present else None,
    }
    del present, values
    if len(finite):
        summary.update(
            finite_min=float(finite.min()),
            finite_max=float(finite.max()),
            finite_mean=float(finite.mean()),
            finite_std=float(finite.std(ddof=1)) if len(finite) > 1 else 0.0,
        )
        if ref_range is not None:
            lo, hi = ref_range
            summary["n_outside"] = int(((finite < lo) | (finite > hi)).sum())
    if is_time:
        # Many public datasets have only a year, or an epoch timestamp: both order
        # rows in time as well as a date does (split and features read them).
        from kubeloop.components.features import numeric_time_unit

        summary["numeric_time"] = numeric_time_unit(pd.Series(finite)) is not None
    return _Profile(kind="numeric", n_unique=n_unique, **summary, **base)


def _profile_column(
    s: pd.Series,
    name: str,
    cfg: ValidationConfig,
    *,
    is_time: bool,
    ref_range: tuple[float, float] | None = None,
) -> _Profile:
    n_rows = len(s)
    n_missing = int(s.isna().sum())
    dtype = s.dtype
    base = {"name": name, "dtype": str(dtype), "n_rows": n_rows, "n_missing": n_missing}
    inferred = ptypes.infer_dtype(s, skipna=True) if ptypes.is_object_dtype(dtype) else None

    if ptypes.is_bool_dtype(dtype) or inferred == "boolean":
        counts = _value_counts(s)
        return _Profile(kind="boolean", n_unique=len(counts), counts=counts, **base)
    if ptypes.is_datetime64_any_dtype(dtype):
        ordered = _sorted_present(s)
        if ordered is not None:  # naive datetime64: one sorted copy gives all three
            unit = np.datetime_data(dtype)[0]
            edges = [pd.Timestamp(np.datetime64(int(ordered[i]), unit)) if len(ordered) else None
                     for i in (0, -1)]
            return _Profile(kind="datetime", n_unique=_n_distinct(s, ordered),
                            dt_min=edges[0], dt_max=edges[1], **base)
        present = s.dropna()
        return _Profile(
            kind="datetime",
            n_unique=int(present.nunique()),
            dt_min=present.min() if len(present) else None,
            dt_max=present.max() if len(present) else None,
            **base,
        )
    if ptypes.is_numeric_dtype(dtype) and not ptypes.is_complex_dtype(dtype):
        return _numeric_profile(s, base, is_time=is_time, ref_range=ref_range)
    if not (
        ptypes.is_object_dtype(dtype)
        or ptypes.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return _Profile(
            kind="text", n_unique=int(s.nunique()), unsupported=f"unsupported dtype {dtype}", **base
        )

    counts = _value_counts(s)
    n_unique = len(counts)
    if is_time or inferred in ("datetime", "datetime64", "date"):
        parsed, bad = _parse_datetimes(counts.index)
        if not bad.any() and n_unique:
            return _Profile(
                kind="datetime",
                n_unique=n_unique,
                dt_min=parsed.min(),
                dt_max=parsed.max(),
                **base,
            )
        if is_time:
            bad_values = counts.index[bad]
            extra = {
                "bad_times": [str(v) for v in bad_values[:_EXAMPLES]],
                "n_bad_time_rows": int(counts[bad].sum()),
            }
        else:
            extra = {}
    else:
        extra = {}
    too_many = n_unique > cfg.max_categories and n_unique > cfg.max_category_fraction * n_rows
    kind = "text" if too_many else "categorical"
    return _Profile(kind=kind, n_unique=n_unique, counts=counts, **base, **extra)


def _to_datetime(values: pd.Series, **kwargs: Any) -> pd.Series:
    try:
        out = pd.to_datetime(values, errors="coerce", **kwargs)
    except (ValueError, TypeError, OverflowError):
        out = None
    if out is None or not ptypes.is_datetime64_any_dtype(out.dtype):
        # Mixed UTC offsets cannot share one naive dtype; UTC is the common ground.
        try:
            out = pd.to_datetime(values, errors="coerce", utc=True, **kwargs)
        except (ValueError, TypeError, OverflowError):
            return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    return out


def _parse_datetimes(uniques: pd.Index) -> tuple[pd.Series, np.ndarray]:
    """Parse distinct values as dates; returns the parsed values and a mask of failures.

    Only strings and date objects count: pandas would read an integer as nanoseconds
    since 1970, which is never what a time column means. Values that fail the format
    pandas infers from the first one are retried as ISO 8601 and then one by one, so
    a column mixing ``2024-01-01`` and ``2024-01-01 10:00`` is still dates.
    """
    values = pd.Series(list(uniques), dtype=object)
    usable = values.map(lambda v: isinstance(v, (str, _dt.date, np.datetime64))).to_numpy(bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = _to_datetime(values.where(usable, None))
        for fmt in ("ISO8601", "mixed"):
            bad = parsed.isna().to_numpy() & usable
            if not bad.any():
                break
            retry = _to_datetime(values[bad], format=fmt)
            if retry.dtype == parsed.dtype:
                parsed[bad] = retry
    return parsed, parsed.isna().to_numpy() | ~usable


def _check_frame(df: Any) -> list[Anomaly]:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validation needs a pandas DataFrame, got {type(df).__name__}")
    found = []
    not_text = [c for c in df.columns if not isinstance(c, str)]
    if not_text:
        found.append(
            _block(
                BAD_COLUMN_NAMES,
                None,
                f"column names must be text, got {_show(not_text)}; "
                "give the data a header row of column names",
                names=[str(c) for c in not_text],
            )
        )
    dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dupes:
        found.append(
            _block(
                BAD_COLUMN_NAMES,
                None,
                f"column names appear more than once: {_show(dupes)}; rename them so each is unique",
                names=dupes,
            )
        )
    return found


def _role(
    p: _Profile, target: str, time_column: str | None, id_column: str | None
) -> tuple[str, str | None]:
    if p.name == target:
        return "target", None
    if p.name == time_column:
        return "time", None
    if p.name == id_column:
        return "id", None
    if p.all_null:
        return "ignored", "all values missing"
    if p.unsupported:
        return "ignored", p.unsupported
    if p.constant:
        return "ignored", "constant"
    if p.kind == "text":
        return "ignored", "free text or identifier"
    return "feature", None
