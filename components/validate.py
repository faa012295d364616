"""Validate stage: describe the dataset, check it, and stop bad data before training.

Three things happen here, all pure functions of a DataFrame and the validation
tolerances:

1. ``infer_task`` and ``infer_schema`` describe the data in the schema dict of
   ``kubeloop.schema`` (kinds, roles, ranges, categories, labels). That schema is
   stored with the model and is the contract every later stage reads.
2. ``check_dataset`` looks for problems and returns them as ``Anomaly`` records,
   each either *blocking* (the pipeline stops, nothing is trained or registered)
   or a *warning* (reported, the run goes on). With ``reference`` (the schema
   stored with the production model) it also compares today's data with the data
   the production model was trained on.
3. ``report_markdown`` / ``report_json`` render the result for the KFP UI and for
   machines; ``ValidationFailed`` carries the blocking anomalies to the user.

``validate`` runs all of it once and is what the pipeline step calls.

Column kinds (the first rule that matches wins):

- ``boolean``: bool / pandas "boolean" dtype, or object columns holding only booleans
  (what pandas makes of a bool column with missing values);
- ``datetime``: datetime64 (naive or tz-aware), object columns of date/datetime
  objects, and the time column when all its values parse as dates;
- ``numeric``: any other numeric dtype;
- ``categorical`` / ``text``: strings (object, string or category dtype). A column
  with more than ``max_categories`` distinct values *and* more than
  ``max_category_fraction`` of the rows distinct is free text or an identifier
  (``text``), never a feature;
- other dtypes (timedelta, complex, ...) are ``text`` and ignored, with the reason.

Roles: the target, time and id columns get their own role; then all-null,
constant (one value and no missing ones) and text columns are ``ignored`` with a
``reason``; everything else is a ``feature``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from kubeloop.config import Config, ValidationConfig
from kubeloop.errors import UserError
from kubeloop.schema import Schema

SCHEMA_VERSION = 1
BLOCKING = "blocking"
WARNING = "warning"
TASKS = ("classification", "regression")

# infer_task: an integer-valued numeric target is a class label when it has at most this
# many distinct values and they are at most this fraction of the rows (or just two).
MAX_CLASSES = 20
MAX_CLASS_FRACTION = 0.05

# Leakage probe: rows sampled, the smallest held-out half worth scoring (on fewer rows
# an honest 90 % feature gets every row right too often), and the tree depth (256
# leaves: enough to reproduce a copy of a target with many classes or a monotone
# transform of a numeric one, too shallow to memorise noise on tens of thousands of rows).
LEAKAGE_MAX_ROWS = 50_000
LEAKAGE_MIN_HALF = 100
LEAKAGE_TREE_DEPTH = 8
# A categorical column with more distinct values than this fraction of the sampled rows
# cannot be mapped from one half to the other: most held-out values are unseen.
LEAKAGE_MAX_UNIQUE_FRACTION = 0.5
_SEED = 0
_EXAMPLES = 10

# Anomaly codes.
BAD_COLUMN_NAMES = "bad_column_names"
EMPTY_DATASET = "empty_dataset"
TOO_FEW_ROWS = "too_few_rows"
TARGET_COLUMN_MISSING = "target_column_missing"
TIME_COLUMN_MISSING = "time_column_missing"
ID_COLUMN_MISSING = "id_column_missing"
TIME_COLUMN_UNPARSEABLE = "time_column_unparseable"
TIME_VALUES_MISSING = "time_values_missing"
TARGET_CHANGED = "target_changed"
TASK_CHANGED = "task_changed"
TARGET_VALUES_MISSING = "target_values_missing"
SINGLE_CLASS = "single_class"
RARE_CLASS = "rare_class"
UNSEEN_LABEL = "unseen_label"
LABEL_ABSENT = "label_absent"
UNKNOWN_POSITIVE_LABEL = "unknown_positive_label"
POSITIVE_LABEL_CHANGED = "positive_label_changed"
TARGET_NOT_NUMERIC = "target_not_numeric"
TARGET_INFINITE = "target_infinite"
TARGET_CONSTANT = "target_constant"
ALL_NULL_COLUMN = "all_null_column"
CONSTANT_COLUMN = "constant_column"
INFINITE_VALUES = "infinite_values"
MISSING_COLUMN = "missing_column"
EXTRA_COLUMN = "extra_column"
KIND_CHANGED = "kind_changed"
UNSEEN_CATEGORIES = "unseen_categories"
MISSING_RATE_INCREASE = "missing_rate_increase"
OUT_OF_RANGE = "out_of_range"
DUPLICATE_ROWS = "duplicate_rows"
LEAKAGE = "leakage"
TARGET_NAME_TWIN = "target_name_twin"


@dataclass(frozen=True)
class Anomaly:
    """One problem found in the data; ``column`` is None for dataset-wide ones."""

    code: str
    column: str | None
    severity: str  # "blocking" | "warning"
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.severity == BLOCKING

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def line(self) -> str:
        where = f" {self.column}:" if self.column is not None else ""
        return f"- [{self.code}]{where} {self.message}"


class ValidationConfigError(UserError):
    """The run's settings do not allow validation (no target column)."""


class ValidationBlocked(UserError):
    """A run stopped because its data validation blocked."""


class ValidationFailed(UserError):
    """The data has blocking anomalies; ``str()`` lists each one on its own line."""

    def __init__(self, anomalies: list[Anomaly]):
        self.anomalies = list(anomalies)
        blocking = [a for a in self.anomalies if a.blocking]
        head = f"data validation failed with {len(blocking)} blocking problem(s):"
        super().__init__("\n".join([head] + [a.line() for a in blocking]))


@dataclass
class ValidationResult:
    """What the validate step produces. ``schema`` is None when the data cannot be
    described at all (no target column, no rows, unusable column names)."""

    schema: Schema | None
    anomalies: list[Anomaly]
    task: str | None

    @property
    def blocking(self) -> bool:
        return is_blocking(self.anomalies)

    def raise_if_blocking(self) -> None:
        if self.blocking:
            raise ValidationFailed(self.anomalies)


def is_blocking(anomalies: list[Anomaly]) -> bool:
    """True when any anomaly must stop the pipeline."""
    return any(a.blocking for a in anomalies)


# --- column profiles ---------------------------------------------------------------


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
    # float64 values with NaN for missing (numeric columns).
    values: np.ndarray | None = None
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
        if self.values is not None:
            finite = self.values[~np.isnan(self.values)]
            return _native(finite[0]) if len(finite) else None
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


def _profile_column(s: pd.Series, name: str, cfg: ValidationConfig, *, is_time: bool) -> _Profile:
    n_rows = len(s)
    n_missing = int(s.isna().sum())
    dtype = s.dtype
    base = {"name": name, "dtype": str(dtype), "n_rows": n_rows, "n_missing": n_missing}
    inferred = ptypes.infer_dtype(s, skipna=True) if ptypes.is_object_dtype(dtype) else None

    if ptypes.is_bool_dtype(dtype) or inferred == "boolean":
        counts = _value_counts(s)
        return _Profile(kind="boolean", n_unique=len(counts), counts=counts, **base)
    if ptypes.is_datetime64_any_dtype(dtype):
        present = s.dropna()
        return _Profile(
            kind="datetime",
            n_unique=int(present.nunique()),
            dt_min=present.min() if len(present) else None,
            dt_max=present.max() if len(present) else None,
            **base,
        )
    if ptypes.is_numeric_dtype(dtype) and not ptypes.is_complex_dtype(dtype):
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        return _Profile(kind="numeric", n_unique=int(s.nunique()), values=values, **base)
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


def _profile_frame(
    df: pd.DataFrame, cfg: ValidationConfig, time_column: str | None
) -> dict[str, _Profile]:
    return {c: _profile_column(df[c], c, cfg, is_time=(c == time_column)) for c in df.columns}


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


# --- task and labels ---------------------------------------------------------------


def infer_task(y: pd.Series) -> str:
    """ "classification" or "regression" for a target column.

    Rule: booleans and anything non-numeric (strings, categories) are class labels.
    A numeric target is a class label when every value is a whole number and there
    are only two distinct values, or at most ``MAX_CLASSES`` (20) that are at most
    ``MAX_CLASS_FRACTION`` (5 %) of the non-missing rows. Everything else is
    regression. Pass the task explicitly when this guess is wrong.
    """
    dtype = y.dtype
    inferred = ptypes.infer_dtype(y, skipna=True) if ptypes.is_object_dtype(dtype) else None
    if ptypes.is_bool_dtype(dtype) or inferred == "boolean":
        return "classification"
    if not ptypes.is_numeric_dtype(dtype) or ptypes.is_complex_dtype(dtype):
        return "classification"
    values = y.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError(
            f"cannot infer the task: target {y.name!r} has no finite values; "
            "fix the target column or pass the task explicitly"
        )
    if not np.all(values == np.round(values)):
        return "regression"
    n_unique = len(np.unique(values))
    few = n_unique <= MAX_CLASSES and n_unique <= MAX_CLASS_FRACTION * len(values)
    return "classification" if n_unique <= 2 or few else "regression"


def _native(v: Any) -> Any:
    """A JSON-able plain Python value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date)):
        return v.isoformat()
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def _label_sort_key(v: Any) -> tuple[int, Any]:
    # Mixed label types cannot be compared directly: numbers first, then text.
    if isinstance(v, (bool, int, float)):
        return (0, v)
    return (1, str(v))


def _label_key(v: Any) -> tuple[str, Any]:
    # 1 and 1.0 are the same class, True and 1 are not.
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", float(v))
    return ("s", str(v))


def _class_counts(y: pd.Series) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for value, n in _value_counts(y).items():
        label = _native(value)
        counts[label] = counts.get(label, 0) + int(n)
    return dict(sorted(counts.items(), key=lambda kv: _label_sort_key(kv[0])))


def _match_label(given: Any, labels: list[Any]) -> Any | None:
    """The label ``given`` names (configs carry labels as text: "1", "true", "yes")."""
    if given is None:
        return None
    given = _native(given)
    for label in labels:
        if _label_key(label) == _label_key(given):
            return label
    text = str(given).strip()
    for label in labels:
        if str(label) == text or (isinstance(label, bool) and str(label).lower() == text.lower()):
            return label
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            try:
                if float(text) == float(label):
                    return label
            except ValueError:
                pass
    return None


def _minority(counts: dict[Any, int]) -> Any:
    # Ties go to the later label in sorted order (1 over 0, True over False, "yes" over "no").
    labels = list(counts)
    return min(reversed(labels), key=lambda label: counts[label])


# The words that name the positive class of a binary target, as scikit-learn (pos_label=1)
# and most users read them; compared case-insensitively.
POSITIVE_WORDS = ("1", "true", "yes", "y", "positive", "pos")


def _names_positive(label: Any, other: Any) -> bool:
    if isinstance(label, bool):
        return label
    if isinstance(label, (int, float)):
        # 1 is positive beside 0 or -1; among other codes (1 and 2) 1 names no class.
        return float(label) == 1.0 and isinstance(other, (int, float)) and float(other) in (0.0, -1.0)
    return str(label).strip().lower() in POSITIVE_WORDS


def conventional_positive(labels: list[Any]) -> Any | None:
    """The label of a binary target that names the positive class (``POSITIVE_WORDS``),
    or None when neither or both do."""
    if len(labels) != 2:
        return None
    a, b = labels
    named = [x for x, other in ((a, b), (b, a)) if _names_positive(x, other)]
    return named[0] if len(named) == 1 else None


def choose_positive(counts: dict[Any, int], given: Any = None) -> tuple[Any, str]:
    """The positive label of a binary target and why: ``given`` (the config's
    ``positive_label``) when it is a label, else the conventional one, else the minority."""
    labels = list(counts)
    chosen = _match_label(given, labels)
    if chosen is not None:
        return chosen, "set by positive_label in the configuration"
    conventional = conventional_positive(labels)
    if conventional is not None:
        return conventional, (
            f"{conventional!s} names the positive class ({', '.join(POSITIVE_WORDS)}, any case); "
            "set positive_label to choose the other"
        )
    minority = _minority(counts)
    total = sum(counts.values())
    return minority, (
        f"the minority class ({counts[minority]} of {total} rows): neither label is one of "
        f"{', '.join(POSITIVE_WORDS)}; set positive_label to choose the other"
    )


# --- schema ------------------------------------------------------------------------


def infer_schema(
    df: pd.DataFrame,
    *,
    target: str,
    task: str | None = None,
    time_column: str | None = None,
    id_column: str | None = None,
    positive_label: Any = None,
    cfg: ValidationConfig,
) -> Schema:
    """The schema dict of ``kubeloop.schema`` for ``df`` (see the module docstring for
    the kind and role rules). Raises ValueError naming the problem when the frame
    cannot be described (no target column, unknown positive label, ...)."""
    problems = _check_frame(df)
    if problems:
        raise ValueError("; ".join(a.message for a in problems))
    for what, col in (("target", target), ("time column", time_column), ("id column", id_column)):
        if col is not None and col not in df.columns:
            raise ValueError(
                f"{what} {col!r} is not in the data; columns: {_show(list(df.columns))}"
            )
    task = _check_task(task) or infer_task(df[target])
    profiles = _profile_frame(df, cfg, time_column)
    if task == "classification" and positive_label is not None:
        labels = list(_class_counts(df[target]))
        if _match_label(positive_label, labels) is None:
            raise ValueError(
                f"positive_label {positive_label!r} is not a label of target {target!r}; "
                f"labels: {_show(labels)}"
            )
    return _build_schema(df, profiles, target, task, time_column, id_column, positive_label)


def _check_task(task: str | None) -> str | None:
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return task


def _build_schema(
    df: pd.DataFrame,
    profiles: dict[str, _Profile],
    target: str,
    task: str,
    time_column: str | None,
    id_column: str | None,
    positive_label: Any,
    positive_reason: str | None = None,
) -> Schema:
    columns: dict[str, Any] = {}
    for name, p in profiles.items():
        role, reason = _role(p, target, time_column, id_column)
        columns[name] = _column_entry(p, role, reason)
    labels: list[Any] | None = None
    positive: Any = None
    reason: str | None = None
    if task == "classification":
        counts = _class_counts(df[target])
        labels = list(counts)
        if len(labels) == 2:
            positive, reason = choose_positive(counts, positive_label)
            if positive_reason is not None:
                reason = positive_reason
    return {
        "schema_version": SCHEMA_VERSION,
        "target": target,
        "task": task,
        "labels": labels,
        "positive_label": positive,
        "positive_label_reason": reason,
        "time_column": time_column,
        "id_column": id_column,
        "n_rows": len(df),
        "columns": columns,
    }


def _column_entry(p: _Profile, role: str, reason: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": p.kind,
        "role": role,
        "dtype": p.dtype,
        "missing_rate": p.n_missing / p.n_rows if p.n_rows else 0.0,
        "n_unique": p.n_unique,
    }
    if p.kind == "numeric" and p.values is not None:
        finite = p.values[np.isfinite(p.values)]
        has = len(finite) > 0
        entry["min"] = float(finite.min()) if has else None
        entry["max"] = float(finite.max()) if has else None
        entry["mean"] = float(finite.mean()) if has else None
        entry["std"] = float(finite.std(ddof=1)) if len(finite) > 1 else (0.0 if has else None)
    elif p.kind in ("categorical", "boolean"):
        entry["categories"] = list(p.str_counts().index)
    elif p.kind == "datetime":
        entry["min"] = p.dt_min.isoformat() if p.dt_min is not None else None
        entry["max"] = p.dt_max.isoformat() if p.dt_max is not None else None
    if reason is not None:
        entry["reason"] = reason
    return entry


# --- checks ------------------------------------------------------------------------


def _block(code: str, column: str | None, message: str, **details: Any) -> Anomaly:
    return Anomaly(code, column, BLOCKING, message, _jsonable(details))


def _warn(code: str, column: str | None, message: str, **details: Any) -> Anomaly:
    return Anomaly(code, column, WARNING, message, _jsonable(details))


def _show(values: list[Any], limit: int = _EXAMPLES) -> str:
    shown = ", ".join(repr(_native(v)) for v in values[:limit])
    more = len(values) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def check_dataset(
    df: pd.DataFrame,
    *,
    target: str,
    task: str | None,
    cfg: ValidationConfig,
    reference: Schema | None = None,
    time_column: str | None = None,
    id_column: str | None = None,
) -> list[Anomaly]:
    """Every problem found in ``df``; ``reference`` is the production model's schema
    (None on the first run). ``task`` None means: the reference's task, else inferred."""
    found = _check_frame(df)
    if found:
        return found
    profiles = _profile_frame(df, cfg, time_column)
    resolved = _resolve_task(df, target, task, reference)
    return _check(df, profiles, target, resolved, cfg, reference, time_column, id_column)


def _resolve_task(
    df: pd.DataFrame, target: str, task: str | None, reference: Schema | None
) -> str | None:
    if _check_task(task) is not None:
        return task
    if reference and reference.get("task") in TASKS:
        # The production model's task, so a small batch never flips it by guesswork.
        return reference["task"]
    if target in df.columns:
        try:
            return infer_task(df[target])
        except ValueError:
            return None
    return None


def _check_reference_shape(reference: Schema) -> None:
    if not isinstance(reference, dict) or not isinstance(reference.get("columns"), dict):
        raise ValueError(
            "reference schema must be a schema dict with a 'columns' mapping "
            "(the schema.json stored with the production model)"
        )


def _check(
    df: pd.DataFrame,
    profiles: dict[str, _Profile],
    target: str,
    task: str | None,
    cfg: ValidationConfig,
    reference: Schema | None,
    time_column: str | None,
    id_column: str | None,
) -> list[Anomaly]:
    if reference is not None:
        _check_reference_shape(reference)
    n_rows = len(df)
    if n_rows == 0 or len(df.columns) == 0:
        what = "no rows" if n_rows == 0 else "no columns"
        return [
            _block(
                EMPTY_DATASET,
                None,
                f"the dataset has {what}; check the data URI and any filters in the ingest step",
                n_rows=n_rows,
                n_columns=len(df.columns),
            )
        ]
    found: list[Anomaly] = []
    if n_rows < cfg.min_rows:
        found.append(
            _block(
                TOO_FEW_ROWS,
                None,
                f"the dataset has {n_rows} rows, fewer than validation.min_rows={cfg.min_rows}; "
                "provide more data or lower validation.min_rows",
                n_rows=n_rows,
                min_rows=cfg.min_rows,
            )
        )
    columns = list(df.columns)
    for code, what, col, flag in (
        (TARGET_COLUMN_MISSING, "target column", target, "--target"),
        (TIME_COLUMN_MISSING, "time column", time_column, "--time-column / time_column"),
        (ID_COLUMN_MISSING, "id column", id_column, "id_column"),
    ):
        if col is not None and col not in df.columns:
            found.append(
                _block(
                    code,
                    col,
                    f"{what} {col!r} is not in the data (columns: {_show(columns)}); "
                    f"check {flag} against the column names",
                    columns=columns[:100],
                )
            )
    if reference is not None:
        found += _check_reference_identity(target, task, reference)
    if target in df.columns and task is not None:
        found += _check_target(df[target], profiles[target], task, cfg, reference)
    if time_column is not None and time_column in profiles:
        found += _check_time_column(profiles[time_column])

    found += _check_columns(profiles, target, time_column, id_column, reference)
    if reference is not None:
        found += _check_against_reference(profiles, target, cfg, reference)
    found += _check_duplicates(df, cfg)
    found += _check_name_twins(columns, target)
    if target in df.columns and task is not None:
        found += _check_leakage(df, profiles, target, task, cfg, time_column, id_column)
    return found


def _check_reference_identity(target: str, task: str | None, reference: Schema) -> list[Anomaly]:
    found = []
    ref_target, ref_task = reference.get("target"), reference.get("task")
    if ref_target is not None and ref_target != target:
        found.append(
            _block(
                TARGET_CHANGED,
                target,
                f"the production model predicts {ref_target!r} but this run's target is {target!r}; "
                "use a new model name for a different target",
                reference_target=ref_target,
            )
        )
    if ref_task is not None and task is not None and ref_task != task:
        found.append(
            _block(
                TASK_CHANGED,
                target,
                f"the production model does {ref_task} of {target!r} but this run is {task}; its metrics "
                "cannot be compared: fix --task or use a new model name",
                reference_task=ref_task,
                task=task,
            )
        )
    return found


def _check_target(
    y: pd.Series, p: _Profile, task: str, cfg: ValidationConfig, reference: Schema | None
) -> list[Anomaly]:
    name = p.name
    found: list[Anomaly] = []
    frac = p.n_missing / p.n_rows
    if p.n_missing:
        details = {"n_missing": p.n_missing, "fraction": frac}
        if frac > cfg.max_target_missing_fraction:
            found.append(
                _block(
                    TARGET_VALUES_MISSING,
                    name,
                    f"target {name!r} is missing in {p.n_missing} rows ({frac:.1%}), above "
                    f"validation.max_target_missing_fraction={cfg.max_target_missing_fraction:g}; "
                    "fill or drop those rows, or raise the tolerance",
                    **details,
                )
            )
        else:
            found.append(
                _warn(
                    TARGET_VALUES_MISSING,
                    name,
                    f"target {name!r} is missing in {p.n_missing} rows ({frac:.1%}); those rows "
                    "are not used for training",
                    **details,
                )
            )
    if p.all_null:
        return found
    if task == "classification":
        found += _check_classes(name, _class_counts(y), cfg, reference)
        return found
    if p.kind != "numeric":
        found.append(
            _block(
                TARGET_NOT_NUMERIC,
                name,
                f"target {name!r} is {p.kind} ({p.dtype}) but the task is regression; convert it "
                "to numbers in the data or use --task classification",
                kind=p.kind,
                dtype=p.dtype,
            )
        )
        return found
    assert p.values is not None
    n_inf = int(np.isinf(p.values).sum())
    if n_inf:
        found.append(
            _block(
                TARGET_INFINITE,
                name,
                f"target {name!r} is infinite in {n_inf} rows; drop or fix those rows",
                n_infinite=n_inf,
            )
        )
    finite = p.values[np.isfinite(p.values)]
    if len(finite) and finite.min() == finite.max():
        found.append(
            _block(
                TARGET_CONSTANT,
                name,
                f"target {name!r} is {_native(finite[0])!r} in every row; there is nothing to "
                "learn: check the data and the target column",
                value=finite[0],
            )
        )
    return found


def _check_classes(
    name: str, counts: dict[Any, int], cfg: ValidationConfig, reference: Schema | None
) -> list[Anomaly]:
    found: list[Anomaly] = []
    labels = list(counts)
    if len(labels) == 1:
        found.append(
            _block(
                SINGLE_CLASS,
                name,
                f"target {name!r} has a single class ({labels[0]!r}); a classifier needs at least "
                "two: check the data filters or the target column",
                counts=counts,
            )
        )
    rare = {k: n for k, n in counts.items() if n < cfg.min_rows_per_class}
    if rare and len(labels) > 1:
        shown = ", ".join(f"{k!r}: {n}" for k, n in list(rare.items())[:_EXAMPLES])
        found.append(
            _block(
                RARE_CLASS,
                name,
                f"target {name!r} has classes with fewer than validation.min_rows_per_class="
                f"{cfg.min_rows_per_class} rows ({shown}); a stratified split needs that many: "
                "add rows, or merge or drop those classes",
                rare_counts={str(k): n for k, n in rare.items()},
            )
        )
    ref_labels = (reference or {}).get("labels")
    if reference is not None and reference.get("task") == "classification" and ref_labels:
        known = {_label_key(v) for v in ref_labels}
        unseen = [v for v in labels if _label_key(v) not in known]
        if unseen:
            found.append(
                _block(
                    UNSEEN_LABEL,
                    name,
                    f"target {name!r} has labels the production model never saw: {_show(unseen)} "
                    f"(it knows {_show(ref_labels)}); fix the feed, or use a new model name if "
                    "the classes changed on purpose",
                    unseen=unseen,
                    reference_labels=ref_labels,
                )
            )
        current = {_label_key(v) for v in labels}
        absent = [v for v in ref_labels if _label_key(v) not in current]
        if absent:
            found.append(
                _warn(
                    LABEL_ABSENT,
                    name,
                    f"target {name!r} has no rows of the production model's classes "
                    f"{_show(absent)}; the new model will never predict them",
                    absent=absent,
                )
            )
    return found


def _check_time_column(p: _Profile) -> list[Anomaly]:
    name = p.name
    if p.all_null:
        return []  # reported as an all-null column
    numeric_time = False
    if p.kind == "numeric" and p.values is not None:
        # Many public datasets have only a year, or an epoch timestamp: both order
        # rows in time as well as a date does (split and features read them).
        from kubeloop.components.features import numeric_time_unit

        numeric_time = numeric_time_unit(pd.Series(p.values)) is not None
    if p.kind != "datetime" and not numeric_time:
        if p.kind == "numeric":
            msg = (
                f"time column {name!r} holds numbers that are neither years (1000-2999) nor "
                "epoch timestamps (seconds, milliseconds, ...); give dates, years or epochs, "
                "or unset time_column"
            )
        elif p.bad_times:
            msg = (
                f"time column {name!r} has {p.n_bad_time_rows} rows that are not dates or times "
                f"(e.g. {_show(p.bad_times, 5)}); fix them or write ISO 8601 timestamps"
            )
        else:
            msg = (
                f"time column {name!r} is {p.kind} ({p.dtype}), not dates or times; write it as "
                "ISO 8601 timestamps in the data or unset time_column"
            )
        return [
            _block(
                TIME_COLUMN_UNPARSEABLE,
                name,
                msg,
                dtype=p.dtype,
                examples=p.bad_times,
                n_rows=p.n_bad_time_rows,
            )
        ]
    if p.n_missing:
        return [
            _block(
                TIME_VALUES_MISSING,
                name,
                f"time column {name!r} is missing in {p.n_missing} rows; a time split cannot "
                "place them: fill or drop those rows",
                n_missing=p.n_missing,
            )
        ]
    return []


def _check_columns(
    profiles: dict[str, _Profile],
    target: str,
    time_column: str | None,
    id_column: str | None,
    reference: Schema | None,
) -> list[Anomaly]:
    found: list[Anomaly] = []
    ref_cols = (reference or {}).get("columns", {})
    for name, p in profiles.items():
        if name == target:
            continue
        if p.all_null:
            found.append(
                _block(
                    ALL_NULL_COLUMN,
                    name,
                    f"column {name!r} is missing in every row; drop it from the data or fix the "
                    "feed that fills it",
                )
            )
            continue
        if p.constant:
            found.append(_constant_anomaly(p, time_column, id_column, ref_cols.get(name)))
        if p.kind == "numeric" and p.values is not None:
            n_inf = int(np.isinf(p.values).sum())
            if n_inf:
                found.append(
                    _block(
                        INFINITE_VALUES,
                        name,
                        f"column {name!r} is infinite in {n_inf} rows; replace those values "
                        "(e.g. with missing ones) in the feed",
                        n_infinite=n_inf,
                    )
                )
    return found


def _constant_anomaly(
    p: _Profile, time_column: str | None, id_column: str | None, ref: dict[str, Any] | None
) -> Anomaly:
    name, value = p.name, p.first_value()
    if name in (time_column, id_column):
        what = "time" if name == time_column else "id"
        return _block(
            CONSTANT_COLUMN,
            name,
            f"{what} column {name!r} has the same value ({value!r}) in every row, so it cannot "
            f"split the data: fix the column or unset {what}_column",
            value=value,
        )
    if ref is not None:
        ref_distinct = int(ref.get("n_unique") or 0) + (
            1 if (ref.get("missing_rate") or 0) > 0 else 0
        )
        if ref_distinct > 1:
            return _block(
                CONSTANT_COLUMN,
                name,
                f"column {name!r} has the same value ({value!r}) in every row but varied in the "
                f"production data ({ref.get('n_unique')} distinct values); the feed is likely "
                "broken: fix it before retraining",
                value=value,
                reference_n_unique=ref.get("n_unique"),
            )
    return _warn(
        CONSTANT_COLUMN,
        name,
        f"column {name!r} has the same value ({value!r}) in every row; it is ignored as a feature",
        value=value,
    )


def _check_against_reference(
    profiles: dict[str, _Profile], target: str, cfg: ValidationConfig, reference: Schema
) -> list[Anomaly]:
    found: list[Anomaly] = []
    ref_cols: dict[str, dict[str, Any]] = reference["columns"]
    for name, ref in ref_cols.items():
        if name in profiles or name == target:
            continue  # the target's absence is reported on its own
        role = ref.get("role")
        if role == "ignored":
            found.append(
                _warn(
                    MISSING_COLUMN,
                    name,
                    f"column {name!r} of the production data is gone; the production model "
                    "ignored it, so training goes on",
                    reference_role=role,
                )
            )
        else:
            found.append(
                _block(
                    MISSING_COLUMN,
                    name,
                    f"column {name!r} ({role} of the production model) is not in the data; "
                    "restore it in the feed",
                    reference_role=role,
                )
            )
    for name in profiles:
        if name in ref_cols or name == target:
            continue
        if cfg.allow_extra_columns:
            found.append(
                _warn(
                    EXTRA_COLUMN,
                    name,
                    f"column {name!r} is not in the production schema; "
                    "validation.allow_extra_columns is true, so the new model may use it",
                )
            )
        else:
            found.append(
                _block(
                    EXTRA_COLUMN,
                    name,
                    f"column {name!r} is not in the production schema; drop it or set "
                    "validation.allow_extra_columns: true",
                )
            )
    for name, p in profiles.items():
        ref = ref_cols.get(name)
        if ref is None or p.all_null:
            continue
        found += _compare_column(p, ref, name == target, cfg)
    return found


def _compare_column(
    p: _Profile, ref: dict[str, Any], is_target: bool, cfg: ValidationConfig
) -> list[Anomaly]:
    name, ref_kind, role = p.name, ref.get("kind"), ref.get("role")
    if ref_kind is not None and _family(ref_kind) != _family(p.kind):
        return [
            _block(
                KIND_CHANGED,
                name,
                f"column {name!r} was {ref_kind} in the production data and is {p.kind} "
                f"({p.dtype}) now; fix the feed or the types the ingest step reads",
                reference_kind=ref_kind,
                kind=p.kind,
                dtype=p.dtype,
            )
        ]
    found: list[Anomaly] = []
    if role not in ("feature", "time", "id") or is_target:
        return found
    ref_missing = float(ref.get("missing_rate") or 0.0)
    missing = p.n_missing / p.n_rows
    if missing - ref_missing > cfg.max_missing_rate_increase:
        found.append(
            _warn(
                MISSING_RATE_INCREASE,
                name,
                f"column {name!r} is missing in {missing:.1%} of rows, up from {ref_missing:.1%} "
                f"in the production data (more than validation.max_missing_rate_increase="
                f"{cfg.max_missing_rate_increase:g}); check the feed",
                missing_rate=missing,
                reference_missing_rate=ref_missing,
            )
        )
    if role != "feature":
        return found
    if ref_kind in ("categorical", "boolean") and ref.get("categories") is not None:
        found += _unseen_categories(p, ref["categories"], cfg)
    if ref_kind == "numeric" and p.values is not None:
        found += _out_of_range(p, ref, cfg)
    return found


def _unseen_categories(p: _Profile, known: list[str], cfg: ValidationConfig) -> list[Anomaly]:
    counts = p.str_counts()
    unseen = counts[~counts.index.isin(known)].sort_values(ascending=False, kind="stable")
    if unseen.empty:
        return []
    frac = float(unseen.sum()) / p.n_rows
    values = list(unseen.index)
    details = {"unseen": values[:100], "n_unseen": len(values), "fraction": frac}
    if frac > cfg.max_unseen_category_fraction:
        return [
            _block(
                UNSEEN_CATEGORIES,
                p.name,
                f"column {p.name!r} has values the production model never saw in {frac:.1%} of "
                f"rows ({_show(values)}), above validation.max_unseen_category_fraction="
                f"{cfg.max_unseen_category_fraction:g}; fix the feed or raise the tolerance",
                **details,
            )
        ]
    return [
        _warn(
            UNSEEN_CATEGORIES,
            p.name,
            f"column {p.name!r} has values the production model never saw in {frac:.1%} of "
            f"rows: {_show(values)}",
            **details,
        )
    ]


def _out_of_range(p: _Profile, ref: dict[str, Any], cfg: ValidationConfig) -> list[Anomaly]:
    lo, hi = ref.get("min"), ref.get("max")
    assert p.values is not None
    finite = p.values[np.isfinite(p.values)]
    if lo is None or hi is None or len(finite) == 0:
        return []
    outside = int(((finite < lo) | (finite > hi)).sum())
    frac = outside / len(finite)
    if frac <= cfg.max_out_of_range_fraction:
        return []
    return [
        _warn(
            OUT_OF_RANGE,
            p.name,
            f"column {p.name!r} has {frac:.1%} of values outside the production range "
            f"[{lo:.6g}, {hi:.6g}] (now [{finite.min():.6g}, {finite.max():.6g}]), above "
            f"validation.max_out_of_range_fraction={cfg.max_out_of_range_fraction:g}; "
            "check units and the feed",
            fraction=frac,
            reference_min=lo,
            reference_max=hi,
            min=finite.min(),
            max=finite.max(),
        )
    ]


def _check_duplicates(df: pd.DataFrame, cfg: ValidationConfig) -> list[Anomaly]:
    # One 64-bit hash per row, then duplicates of the hashes: far cheaper than comparing
    # rows column by column; a collision among a million rows has odds near 1e-8.
    try:
        hashes = pd.util.hash_pandas_object(df, index=False)
    except TypeError:  # unhashable objects in a column
        hashes = pd.util.hash_pandas_object(df.astype(str), index=False)
    n_dup = int(hashes.duplicated().sum())
    if n_dup == 0:
        return []
    frac = n_dup / len(df)
    details = {"n_duplicates": n_dup, "fraction": frac}
    if frac > cfg.max_duplicate_fraction:
        return [
            _block(
                DUPLICATE_ROWS,
                None,
                f"{n_dup} rows ({frac:.1%}) repeat another row exactly, above "
                f"validation.max_duplicate_fraction={cfg.max_duplicate_fraction:g}; "
                "deduplicate the data or raise the tolerance",
                **details,
            )
        ]
    return [
        _warn(
            DUPLICATE_ROWS,
            None,
            f"{n_dup} rows ({frac:.1%}) repeat another row exactly; they are dropped before the split",
            **details,
        )
    ]


def _normalized_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _check_name_twins(columns: list[str], target: str) -> list[Anomaly]:
    key = _normalized_name(target)
    return [
        _warn(
            TARGET_NAME_TWIN,
            c,
            f"column {c!r} has the target's name {target!r} up to case and punctuation; "
            "if it is a copy or an outcome of the target, drop it",
        )
        for c in columns
        if c != target and key and _normalized_name(c) == key
    ]


def _check_leakage(
    df: pd.DataFrame,
    profiles: dict[str, _Profile],
    target: str,
    task: str,
    cfg: ValidationConfig,
    time_column: str | None,
    id_column: str | None,
) -> list[Anomaly]:
    """Each feature alone, fitted on one half of a sample and scored on the other.

    A column that reproduces the target on held-out rows (balanced accuracy or R^2 at
    least ``leakage_threshold``) was most likely computed from it. The one-feature
    models are deliberately tiny, so a merely strong feature stays well below.
    """
    tp = profiles[target]
    if task == "classification":
        valid = df[target].notna().to_numpy()
    else:
        if tp.kind != "numeric" or tp.values is None:
            return []
        valid = np.isfinite(tp.values)
    idx = np.flatnonzero(valid)
    if len(idx) < 2 * LEAKAGE_MIN_HALF:
        return []
    rng = np.random.default_rng(_SEED)
    if len(idx) > LEAKAGE_MAX_ROWS:
        idx = rng.choice(idx, LEAKAGE_MAX_ROWS, replace=False)
    idx = rng.permutation(idx)
    half = len(idx) // 2
    if task == "classification":
        y = pd.factorize(df[target].iloc[idx])[0]
        if len(np.unique(y[half:])) < 2 or len(np.unique(y[:half])) < 2:
            return []
        metric = "balanced accuracy"
    else:
        assert tp.values is not None
        y = tp.values[idx]
        if np.std(y[half:]) == 0:
            return []
        metric = "R^2"

    found = []
    for name, p in profiles.items():
        role, _ = _role(p, target, time_column, id_column)
        if role != "feature":
            continue
        score = _one_feature_score(df[name].iloc[idx], p, y, half, task)
        if score is not None and score >= cfg.leakage_threshold:
            found.append(
                _block(
                    LEAKAGE,
                    name,
                    f"column {name!r} alone predicts target {target!r} with {metric} {score:.3f} "
                    f"on held-out rows (validation.leakage_threshold={cfg.leakage_threshold:g}); "
                    "it most likely leaks the target: drop it from the data",
                    score=score,
                    metric=metric,
                )
            )
    return found


def _one_feature_score(
    x: pd.Series, p: _Profile, y: np.ndarray, half: int, task: str
) -> float | None:
    classify = task == "classification"
    if p.kind in ("numeric", "datetime"):
        if p.kind == "numeric":
            values = x.to_numpy(dtype="float64", na_value=np.nan)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stamps = pd.to_datetime(x, errors="coerce", utc=True)
            epoch = pd.Timestamp(0, tz="UTC")
            values = (stamps - epoch).dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan)
        values[np.isinf(values)] = np.nan  # trees take NaN as its own branch, not inf
        train = values[:half]
        if np.isnan(train).all():
            return None
        model = (
            DecisionTreeClassifier(
                max_depth=LEAKAGE_TREE_DEPTH, min_samples_leaf=5, random_state=_SEED
            )
            if classify
            else DecisionTreeRegressor(
                max_depth=LEAKAGE_TREE_DEPTH, min_samples_leaf=5, random_state=_SEED
            )
        )
        model.fit(train.reshape(-1, 1), y[:half])
        pred = model.predict(values[half:].reshape(-1, 1))
    else:
        # Value -> majority class (or mean target) learned on half A; missing is a value
        # of its own and values unseen in half A get the overall answer.
        codes = pd.factorize(x, use_na_sentinel=False)[0]
        n_codes = int(codes.max()) + 1 if len(codes) else 0
        if n_codes > LEAKAGE_MAX_UNIQUE_FRACTION * len(codes):
            return None
        ca, cb = codes[:half], codes[half:]
        if classify:
            n_classes = int(y.max()) + 1
            table = np.zeros((n_codes, n_classes), dtype=np.int64)
            np.add.at(table, (ca, y[:half]), 1)
            fallback = int(np.bincount(y[:half], minlength=n_classes).argmax())
            mapping = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), fallback)
        else:
            sums = np.bincount(ca, weights=y[:half], minlength=n_codes)
            seen = np.bincount(ca, minlength=n_codes)
            mapping = np.where(seen > 0, sums / np.maximum(seen, 1), y[:half].mean())
        pred = mapping[cb]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        if classify:
            return float(balanced_accuracy_score(y[half:], pred))
        return float(r2_score(y[half:], pred))


# --- the whole stage ---------------------------------------------------------------


def validate(
    df: pd.DataFrame,
    *,
    target: str,
    task: str | None = None,
    cfg: ValidationConfig,
    reference: Schema | None = None,
    time_column: str | None = None,
    id_column: str | None = None,
    positive_label: Any = None,
) -> ValidationResult:
    """Describe and check ``df`` in one pass; the caller writes the reports and then
    calls ``raise_if_blocking()``. With a reference and no ``positive_label`` the
    production model's positive label is kept, so class balance shifts never flip it."""
    found = _check_frame(df)
    if found:
        return ValidationResult(None, found, _check_task(task))
    if reference is not None:
        _check_reference_shape(reference)
    profiles = _profile_frame(df, cfg, time_column)
    resolved = _resolve_task(df, target, task, reference)
    found = _check(df, profiles, target, resolved, cfg, reference, time_column, id_column)
    describable = (
        len(df) > 0
        and target in df.columns
        and resolved is not None
        and not profiles[target].all_null
    )
    if not describable:
        return ValidationResult(None, found, resolved)

    positive = None
    if resolved == "classification":
        labels = list(_class_counts(df[target]))
        positive, label_problems = _resolve_positive(target, labels, positive_label, reference)
        found += label_problems
    kept = None
    if positive is not None and positive_label is None and reference is not None:
        kept = _kept_positive_reason(positive, list(_class_counts(df[target])))
    clean_time = time_column if time_column in df.columns else None
    clean_id = id_column if id_column in df.columns else None
    schema = _build_schema(df, profiles, target, resolved, clean_time, clean_id, positive, kept)
    return ValidationResult(schema, found, resolved)


def _kept_positive_reason(positive: Any, labels: list[Any]) -> str:
    # Metrics compare with the production model's only for the same class, so its label
    # stays, even one chosen under the earlier minority rule.
    reason = "kept from the production model, whose metrics are for this class"
    conventional = conventional_positive(labels)
    if conventional is not None and _label_key(conventional) != _label_key(positive):
        reason += (
            f" (the conventional choice would be {conventional!s}: set positive_label to it "
            "with a new model name to change)"
        )
    return reason


def _resolve_positive(
    target: str, labels: list[Any], given: Any, reference: Schema | None
) -> tuple[Any, list[Anomaly]]:
    if len(labels) != 2:
        return None, []
    found = []
    ref_positive = (reference or {}).get("positive_label")
    positive = _match_label(given, labels)
    if given is not None and positive is None:
        found.append(
            _block(
                UNKNOWN_POSITIVE_LABEL,
                target,
                f"positive_label {given!r} is not a label of target {target!r} "
                f"(labels: {_show(labels)}); set it to one of them",
                positive_label=str(given),
                labels=labels,
            )
        )
    if given is None and ref_positive is not None:
        positive = _match_label(ref_positive, labels)
    if positive is not None and ref_positive is not None:
        if _label_key(positive) != _label_key(ref_positive) and (
            _match_label(ref_positive, labels) is not None
        ):
            found.append(
                _block(
                    POSITIVE_LABEL_CHANGED,
                    target,
                    f"positive_label of target {target!r} is {positive!r} but the production model's is "
                    f"{ref_positive!r}; their metrics cannot be compared: keep "
                    f"{ref_positive!r} or use a new model name",
                    positive_label=positive,
                    reference_positive_label=ref_positive,
                )
            )
    return positive, found


# --- reports -----------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    value = _native(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def report_json(anomalies: list[Anomaly], schema: Schema | None) -> dict[str, Any]:
    """The validation outcome as one JSON-able dict (strict JSON: no NaN or Infinity)."""
    out = {
        "passed": not is_blocking(anomalies),
        "n_blocking": sum(a.blocking for a in anomalies),
        "n_warnings": sum(not a.blocking for a in anomalies),
        "anomalies": [a.to_dict() for a in _ordered(anomalies)],
        "schema": schema,
    }
    return json.loads(json.dumps(_jsonable(out), allow_nan=False))


def _ordered(anomalies: list[Anomaly]) -> list[Anomaly]:
    return sorted(anomalies, key=lambda a: 0 if a.blocking else 1)


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: Any) -> str:
    text = str(text)
    return _cell(text) if "`" in text else f"`{_cell(text)}`"


def _values_summary(col: dict[str, Any]) -> str:
    kind = col.get("kind")
    if kind == "numeric" and col.get("min") is not None:
        return f"{col['min']:.4g} … {col['max']:.4g} (mean {col['mean']:.4g})"
    if kind == "datetime" and col.get("min") is not None:
        return f"{col['min']} … {col['max']}"
    cats = col.get("categories")
    if cats:
        shown = ", ".join(cats[:5])
        return shown + (f" … (+{len(cats) - 5})" if len(cats) > 5 else "")
    return ""


def report_markdown(anomalies: list[Anomaly], schema: Schema | None, *, dataset_name: str) -> str:
    """Markdown for the KFP UI: verdict, anomalies (blocking first), schema overview."""
    n_block = sum(a.blocking for a in anomalies)
    n_warn = len(anomalies) - n_block
    verdict = "BLOCKED" if n_block else "PASSED"
    lines = [f"# Data validation: {_cell(dataset_name)}", ""]
    summary = f"**{verdict}**: {n_block} blocking problem(s), {n_warn} warning(s)."
    if schema is not None:
        summary += (
            f" {schema['n_rows']} rows, {len(schema['columns'])} columns; "
            f"{schema['task']} of {_code(schema['target'])}."
        )
        if schema.get("labels") is not None:
            summary += f" Labels: {_cell(', '.join(map(str, schema['labels'][:20])))}."
        if schema.get("positive_label") is not None:
            summary += f" Positive label: {_cell(schema['positive_label'])}"
            reason = schema.get("positive_label_reason")
            summary += f" ({_cell(reason)})." if reason else "."
    lines += [summary, "", "## Anomalies", ""]
    if anomalies:
        lines += ["| severity | check | column | problem |", "|---|---|---|---|"]
        for a in _ordered(anomalies):
            column = _code(a.column) if a.column is not None else "(dataset)"
            lines.append(f"| {a.severity} | `{a.code}` | {column} | {_cell(a.message)} |")
    else:
        lines.append("No anomalies found.")
    lines += ["", "## Schema", ""]
    if schema is None:
        lines.append("The dataset could not be described; fix the blocking problems above.")
    else:
        lines += [
            "| column | kind | role | missing | distinct | values |",
            "|---|---|---|---|---|---|",
        ]
        for name, col in schema["columns"].items():
            role = col["role"] + (f" ({col['reason']})" if col.get("reason") else "")
            lines.append(
                f"| {_code(name)} | {col['kind']} | {_cell(role)} | {col['missing_rate']:.1%} | "
                f"{col['n_unique']} | {_cell(_values_summary(col))} |"
            )
    return "\n".join(lines) + "\n"



# --- the step: registry lookup, checks, reports ---------------------------------------

PASS, BLOCKED_VERDICT = "pass", "blocked"


@dataclass
class ValidateOutcome:
    """What the validate step hands on: the verdict, and the reports it writes."""

    result: ValidationResult
    champion: str | None

    @property
    def verdict(self) -> str:
        return BLOCKED_VERDICT if self.result.blocking else PASS

    def summary(self) -> str:
        if self.result.blocking:
            n = sum(a.blocking for a in self.result.anomalies)
            return f"BLOCKED: {n} blocking problem(s); nothing will be trained or registered"
        against = f"against production {self.champion}" if self.champion else "first run: schema inferred"
        task = self.result.schema["task"] if self.result.schema else "?"
        return f"{len(self.result.anomalies)} warning(s), none blocking; {task}; {against}"

    def write(self, *, schema_path: str, anomalies_path: str, report_path: str, name: str) -> None:
        # Written whatever the verdict: a blocked run's report is what the user reads.
        with open(anomalies_path, "w") as f:
            json.dump(report_json(self.result.anomalies, self.result.schema), f, indent=2)
        with open(report_path, "w") as f:
            f.write(report_markdown(self.result.anomalies, self.result.schema, dataset_name=name))
        with open(schema_path, "w") as f:
            json.dump(self.result.schema, f, indent=2, default=str)


ROW_NUMBER_DROPPED = "row_number_dropped"


def validate_step(
    df: pd.DataFrame, cfg: Config, *, registry: Any, ingest_profile: dict[str, Any] | None = None
) -> ValidateOutcome:
    """Check ``df`` against the schema of the production model in ``registry`` (a
    ``kubeloop.registry.Registry``), or infer the schema on a first run.

    Blocking anomalies make the verdict ``blocked``; nothing raises for them, so the
    report is stored by a step that succeeds and the pipeline stops on the verdict.
    A gate metric that does not fit the inferred task is a configuration error.
    """
    if not cfg.target:
        raise ValidationConfigError("no target column: set the pipeline parameter 'target'")
    champion = registry.get_alias(cfg.model_name, "production")
    reference = registry.read_json(cfg.model_name, champion, "schema.json") if champion else None
    result = validate(
        df, target=cfg.target, task=cfg.task, cfg=cfg.validation, reference=reference,
        time_column=cfg.time_column, id_column=cfg.id_column, positive_label=cfg.positive_label,
    )
    for d in (ingest_profile or {}).get("dropped_columns", []):
        # Ingest dropped it before anything could learn from it; the report says so.
        result.anomalies.append(Anomaly(ROW_NUMBER_DROPPED, d["column"] or None, WARNING,
                                        f"column dropped at ingest: {d['reason']}"))
    if result.schema is not None:
        result.anomalies += absolute_time_notes(result.schema, absolute_time=cfg.features.absolute_time)
    if not result.blocking:
        cfg.check_gate_metrics(result.schema["task"])
    return ValidateOutcome(result, champion)


ABSOLUTE_TIME_DROPPED = "absolute_time_dropped"
_PART_NAMES = {"year": "year", "days_since_epoch": "days since 1970"}


def absolute_time_notes(schema: Schema, *, absolute_time: bool) -> list[Anomaly]:
    """A warning for each datetime column whose absolute parts (year, days since 1970)
    are not features without ``features.absolute_time``: earlier releases used them."""
    from kubeloop.components.features import dropped_absolute_parts

    return [
        Anomaly(
            ABSOLUTE_TIME_DROPPED, column, WARNING,
            f"datetime column {column!r} gives only its recurring parts (month, day, day of "
            f"week, hour): its {' and '.join(_PART_NAMES.get(p, p) for p in parts)} are not "
            "features, since rows scored later lie beyond every training value; set "
            "features.absolute_time: true to use them",
        )
        for column, parts in dropped_absolute_parts(schema, absolute_time=absolute_time).items()
    ]


def blocked_message(report: dict[str, Any]) -> str:
    """The plain-words message a blocked run ends with, from ``report_json``'s output."""
    blocking = [a for a in report.get("anomalies", []) if a.get("severity") == BLOCKING]
    lines = [f"data validation failed with {len(blocking)} blocking problem(s):"]
    for a in blocking:
        where = f" {a['column']}:" if a.get("column") is not None else ""
        lines.append(f"- [{a['code']}]{where} {a['message']}")
    lines.append("The validation report has every anomaly; nothing was trained or registered.")
    return "\n".join(lines)


# --- KFP adapters ----------------------------------------------------------------------

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def validate_op(
    dataset: Input[Dataset],
    profile: Input[Artifact],
    config: dict,
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    report: Output[Markdown],
) -> str:
    """Check the data against production's schema; returns "pass" or "blocked"."""
    import json

    from kubeloop.components.ingest import read_parquet
    from kubeloop.components.validate import validate_step
    from kubeloop.config import Config
    from kubeloop.progress import stage
    from kubeloop.registry import Registry

    with stage("validate") as st:
        cfg = Config.from_dict(config)
        registry = Registry(cfg.registry, cfg.storage)
        with open(profile.path) as f:
            ingest_profile = json.load(f)
        outcome = validate_step(read_parquet(dataset.path), cfg, registry=registry,
                                ingest_profile=ingest_profile)
        outcome.write(schema_path=schema.path, anomalies_path=anomalies.path,
                      report_path=report.path, name=cfg.model_name)
        st.result, st.details = outcome.summary(), {"verdict": outcome.verdict}
    return outcome.verdict


@component
def blocked_op(anomalies: Input[Artifact]) -> str:
    """Stop a run whose data validation blocked, saying why in plain words.

    Declared to return a string only so the pipeline can name either branch's
    result (``dsl.OneOf``); it always raises."""
    import json

    from kubeloop.components.validate import ValidationBlocked, blocked_message
    from kubeloop.progress import stage

    with stage("validate"), open(anomalies.path) as f:
        raise ValidationBlocked(blocked_message(json.load(f)))
