"""Features stage: the preprocessing that becomes the first step of the saved model.

It is one scikit-learn ``Pipeline`` fitted on the training split only and saved
with the model, so serving runs exactly the code training ran. Steps:

``check``
    ``InputCheck``: the input contract. It needs every ``feature_columns(schema)``
    column (extra columns are ignored, order does not matter) and raises
    ``FeatureError`` naming the column for a missing column, text in a numeric
    column, an infinite number or an unparseable date. Serving turns that into a
    400; scikit-learn's own errors for the same inputs do not name the column.
    It also brings categorical and boolean values to strings, so 1, 1.0 and "1"
    are the same level in training and at serving.
``columns``
    A ``ColumnTransformer`` whose output names are a contract with training:

    - ``num__<col>``: numeric, standardized (on the observed values) then
      median-imputed; ``num__missingindicator_<col>`` (0/1) for the columns that had
      missing values in training.
    - ``cat__<col>``: categorical and boolean as ordinal codes (``OrdinalEncoder``,
      rare levels pooled into one "infrequent" code beyond ``max_categories``),
      NaN for missing or unseen values. Training treats every ``cat__`` column as
      categorical.
    - ``dt__<col>_<part>``: datetime parts (``DateParts``), standardized then
      median-imputed like the numeric columns.

    Text, id and ignored columns are not used, nor is a row number (``row_number_columns``:
    the unnamed first column pandas and R write, or an index-like name holding
    0..n-1 / 1..n), which in a sorted export would leak the order of the rows.

    Every datetime column gives only its recurring parts (month, day, day of week,
    hour) by default: its year or days since 1970 lie, for rows scored later (and
    under a time split for the test rows), beyond every training value, so a model
    could only extrapolate from them. With ``features.absolute_time`` they are added
    (``dropped_absolute_parts`` names what each column loses without it). A numeric
    time column holding epoch seconds/milliseconds is read as times the same way; one holding a year (or
    numbers of no known unit) is used, as a number, only with ``absolute_time``.
``float32``
    Casts the output to float32 (half the memory of float64 for the models).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from kubeloop.dates import parse_datetimes
from kubeloop.errors import UserError
from kubeloop.schema import Schema, columns_of_kind, feature_columns

NUMERIC_PREFIX = "num__"
CATEGORICAL_PREFIX = "cat__"
DATETIME_PREFIX = "dt__"
# HistGradientBoosting handles at most 255 bins per categorical feature; 64 levels keep
# linear models' one-hot encoding small while covering most real category columns.
DEFAULT_MAX_CATEGORIES = 64

_TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})


class FeatureError(UserError, ValueError):
    """The input frame breaks the feature contract; the message names the column."""


# --- input contract ---------------------------------------------------------------------


def _level(value: Any) -> str:
    # Integral floats print as integers so a code read as 3.0 from a CSV with gaps matches
    # the 3 a client sends at serving time.
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _boolean_level(value: Any) -> str:
    text = _level(value)
    lowered = text.strip().lower()
    if lowered in _TRUE_WORDS:
        return "True"
    if lowered in _FALSE_WORDS:
        return "False"
    return text


def _as_levels(values: pd.Series, boolean: bool) -> np.ndarray:
    """Object array of level strings, NaN where missing."""
    # Convert each distinct value once rather than every row: factorize is a hash pass.
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    to_str = _boolean_level if boolean else _level
    levels = np.array([to_str(v) for v in uniques] + [np.nan], dtype=object)
    return levels[codes]  # code -1 (missing) picks the trailing NaN


def _as_numbers(values: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isnan(numbers) & values.notna().to_numpy()
        if bad.any():
            examples = pd.unique(values[bad])[:3].tolist()
            raise FeatureError(
                f"column {name!r} must be numeric but holds {int(bad.sum())} non-numeric "
                f"value(s), e.g. {examples}; send numbers (null for missing)"
            )
    if np.isinf(numbers).any():
        raise FeatureError(
            f"column {name!r} holds infinite values; send finite numbers (null for missing)"
        )
    return numbers


# Epoch units by magnitude: a time between 1973 and 2286 is 1e8..1e10 seconds, 1e11..1e13
# milliseconds, and so on; the gaps between the ranges make the unit unambiguous.
_EPOCH_UNITS = (("s", 1e8, 1e10), ("ms", 1e11, 1e13), ("us", 1e14, 1e16), ("ns", 1e17, 1e19))
_YEARS = (1000, 2999)


def numeric_time_unit(values: pd.Series) -> str | None:
    """What a numeric time column holds: ``"year"`` (integers 1000..2999), an epoch unit
    (``"s"``, ``"ms"``, ``"us"``, ``"ns"``) judged by magnitude, or None (unknown)."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    numbers = numbers[np.isfinite(numbers)]
    if not numbers.size:
        return None
    low, high = float(numbers.min()), float(numbers.max())
    if _YEARS[0] <= low and high <= _YEARS[1] and np.all(numbers == np.round(numbers)):
        return "year"
    for unit, lo, hi in _EPOCH_UNITS:
        if lo <= low and high < hi:
            return unit
    return None


def _as_datetimes(values: pd.Series, name: str, unit: str | None = None) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values):
        return values
    if unit is not None:
        # An epoch time column: the unit was fixed when the transformer was fitted.
        numbers = pd.Series(_as_numbers(values, name), index=values.index)
        return pd.to_datetime(numbers, unit=unit, utc=True).dt.tz_localize(None)
    if pd.api.types.is_numeric_dtype(values):
        # A bare number has no agreed unit (seconds? days?), so it is refused, not guessed.
        raise FeatureError(
            f"column {name!r} must hold dates as ISO 8601 strings "
            f"(e.g. 2024-05-31T12:00:00Z), got numbers ({values.dtype})"
        )
    try:
        parsed = parse_datetimes(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise FeatureError(
            f"column {name!r} must hold dates (ISO 8601, e.g. 2024-05-31T12:00:00Z) "
            f"but a value could not be parsed: {str(exc).splitlines()[0]}"
        ) from None
    return parsed.dt.tz_localize(None)


class InputCheck(TransformerMixin, BaseEstimator):
    """Checks the raw frame against the feature contract and gives each kind its type.

    Output: the required columns in contract order; numeric as float64, categorical
    and boolean as level strings (NaN for missing), datetime as naive UTC datetime64.
    """

    def __init__(
        self,
        columns: Sequence[str] = (),
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        boolean: Sequence[str] = (),
        datetime: Sequence[str] = (),
        epoch_units: dict[str, str] | None = None,
    ) -> None:
        self.columns = columns
        self.numeric = numeric
        self.categorical = categorical
        self.boolean = boolean
        self.datetime = datetime
        # Datetime columns that arrive as epoch numbers, and their unit.
        self.epoch_units = epoch_units

    def fit(self, X: pd.DataFrame, y: Any = None) -> InputCheck:
        self.fit_transform(X)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        return self._check(X)

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **fit_params: Any) -> pd.DataFrame:
        # One pass: the checks and conversions are the whole of the work.
        checked = self._check(X)
        self.feature_names_in_ = np.asarray(list(self.columns), dtype=object)
        self.n_features_in_ = len(self.columns)
        return checked

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(list(self.columns), dtype=object)

    def _check(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise FeatureError(
                f"features must be a table with named columns (a pandas DataFrame), got "
                f"{type(X).__name__}; required columns: {list(self.columns)}"
            )
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise FeatureError(
                f"missing feature column(s) {missing}; every request must carry all of "
                f"{list(self.columns)}"
            )
        numeric, boolean = set(self.numeric), set(self.boolean)
        categorical, datetime = set(self.categorical), set(self.datetime)
        # getattr: a transformer pickled before epoch units existed has no such attribute.
        units = getattr(self, "epoch_units", None) or {}
        out: dict[str, Any] = {}
        for name in self.columns:
            values = X[name]
            if isinstance(values, pd.DataFrame):
                raise FeatureError(f"column {name!r} appears more than once in the input")
            if name in numeric:
                out[name] = _as_numbers(values, name)
            elif name in categorical or name in boolean:
                out[name] = _as_levels(values, boolean=name in boolean)
            elif name in datetime:
                out[name] = _as_datetimes(values, name, units.get(name)).to_numpy()
            else:
                # Required by the contract but not used by any transformer.
                out[name] = values.to_numpy()
        return pd.DataFrame(out, index=X.index, copy=False)


# --- datetime parts -----------------------------------------------------------------------


class DateParts(TransformerMixin, BaseEstimator):
    """Datetime columns -> year, month, day, dayofweek (Monday=0), hour when training saw
    a time of day, and days since 1970-01-01 for the columns in ``days_since_epoch``.
    Columns in ``recurring_only`` get no year: only the parts that recur.

    scikit-learn has no datetime encoder. Datetime columns get only the recurring
    parts unless absolute time is asked for: rows scored later (under a temporal split,
    the test rows) lie beyond anything the model saw, and only calendar parts generalise.
    """

    _NS_PER_DAY = 86_400 * 10**9

    def __init__(
        self, days_since_epoch: Sequence[str] = (), recurring_only: Sequence[str] = ()
    ) -> None:
        self.days_since_epoch = days_since_epoch
        self.recurring_only = recurring_only

    def fit(self, X: pd.DataFrame, y: Any = None) -> DateParts:
        frame = self._frame(X)
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.has_time_of_day_ = {}
        for name in frame.columns:
            ns = _as_datetimes(frame[name], name).to_numpy("datetime64[ns]").view("i8")
            present = ns != np.iinfo(np.int64).min
            self.has_time_of_day_[name] = bool((ns[present] % self._NS_PER_DAY).any())
        return self

    def _parts(self, name: str) -> list[str]:
        # getattr: a transformer pickled before recurring_only existed has no such attribute.
        absolute = name not in (getattr(self, "recurring_only", ()) or ())
        parts = (["year"] if absolute else []) + ["month", "day", "dayofweek"]
        if self.has_time_of_day_[name]:
            parts.append("hour")
        if name in self.days_since_epoch:
            parts.append("days_since_epoch")
        return parts

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray(
            [f"{name}_{part}" for name in self.feature_names_in_ for part in self._parts(name)],
            dtype=object,
        )

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        frame = self._frame(X)
        columns = []
        for name in self.feature_names_in_:
            if name not in frame.columns:
                raise FeatureError(f"missing datetime column {name!r}")
            ns = _as_datetimes(frame[name], name).to_numpy("datetime64[ns]")
            # A DatetimeIndex hands out its fields as arrays; the Series .dt accessor builds
            # a Series per field, which dominates the cost of a one-row request.
            dates = pd.DatetimeIndex(ns)
            for part in self._parts(name):
                if part == "days_since_epoch":
                    i8 = ns.view("i8")
                    days = np.where(i8 == np.iinfo(np.int64).min, np.nan, i8 / self._NS_PER_DAY)
                    columns.append(days.astype(np.float32))
                else:
                    # Fields of NaT come out as NaN.
                    columns.append(np.asarray(getattr(dates, part), dtype=np.float32))
        if not columns:
            return np.empty((len(frame), 0), dtype=np.float32)
        return np.column_stack(columns)

    @staticmethod
    def _frame(X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise FeatureError(f"DateParts needs a DataFrame of datetime columns, got {type(X)}")
        return X


def _median(observed: np.ndarray) -> float:
    # SimpleImputer(strategy="median") goes through numpy masked arrays, about 5x slower
    # than numpy's median over the observed values it hands a callable strategy. A column
    # with no observed value in training is imputed with 0 (its standardized mean).
    return float(np.median(observed)) if observed.size else 0.0


def _to_float32(X: pd.DataFrame) -> pd.DataFrame:
    return X.astype(np.float32, copy=False)


# --- the transformer --------------------------------------------------------------------


# Names exports give a row-number column (pandas' index, R's row names read back by
# readr as "...1"); short generic names like "x" or "n" are left alone: too often real.
_ROW_NUMBER_NAMES = frozenset(
    {
        "",
        "index",
        "idx",
        "row",
        "rows",
        "rownum",
        "row_num",
        "row_number",
        "rownumber",
        "row_id",
        "rowid",
        "row_index",
        "level_0",
        "...1",
        "#",
        "id",
    }
)
_UNNAMED = re.compile(r"^unnamed:\s*\d+(_level_\d+)?$")


def _looks_like_row_number(name: str, col: dict[str, Any], n_rows: int | None, values: Any) -> bool:
    if col.get("kind") != "numeric":
        return False
    key = str(name).strip().lower()
    if _UNNAMED.match(key) or key == "":
        return True  # the header pandas (to_csv) and R (write.csv) leave for the row names
    if key not in _ROW_NUMBER_NAMES:
        return False
    # The whole dataset's profile: n distinct integers from 0 or 1 up to n-1 or n.
    low, high, distinct = col.get("min"), col.get("max"), col.get("n_unique")
    if n_rows and low in (0, 1) and distinct == n_rows and high == low + n_rows - 1:
        return True
    if values is None:
        return False
    # The training rows themselves: distinct integers from 0 or 1, strictly increasing.
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )
    if numbers.size < 2 or not np.isfinite(numbers).all() or (numbers != np.round(numbers)).any():
        return False
    return numbers[0] in (0.0, 1.0) and bool(np.all(np.diff(numbers) > 0))


def row_number_columns(schema: Schema, frame: pd.DataFrame | None = None) -> list[str]:
    """Feature columns that hold a row number, which is never a feature (see the module
    docstring); judged from the schema's profile and, when given, the training rows."""
    n_rows = schema.get("n_rows")
    found = []
    for name in feature_columns(schema):
        if name == schema.get("time_column"):
            continue
        values = frame[name] if frame is not None and name in frame.columns else None
        if _looks_like_row_number(name, schema["columns"][name], n_rows, values):
            found.append(name)
    return found


def _used_columns(
    schema: Schema,
    *,
    absolute_time: bool = False,
    time_unit: str | None = None,
    row_numbers: Sequence[str] = (),
) -> dict[str, list[str]]:
    time_col = schema.get("time_column")
    time_kind = schema["columns"].get(time_col, {}).get("kind") if time_col else None
    skip = set(row_numbers)
    if time_col:
        skip.add(time_col)
    datetimes = [c for c in columns_of_kind(schema, "datetime") if c not in skip]
    numeric = [c for c in columns_of_kind(schema, "numeric") if c not in skip]
    if time_kind == "datetime":
        datetimes.append(time_col)
    elif time_kind == "numeric":
        if time_unit in ("s", "ms", "us", "ns"):
            datetimes.append(time_col)  # epoch times: read as times
        elif absolute_time:
            numeric.append(time_col)  # a year, or numbers of no known unit
    return {
        "numeric": numeric,
        "categorical": [c for c in columns_of_kind(schema, "categorical") if c not in skip],
        "boolean": [c for c in columns_of_kind(schema, "boolean") if c not in skip],
        "datetime": datetimes,
    }


ABSOLUTE_PARTS = ("year", "days_since_epoch")


def dropped_absolute_parts(schema: Schema, *, absolute_time: bool = False) -> dict[str, list[str]]:
    """Datetime feature columns other than the time column, each with the absolute parts
    (year, days since 1970) it does not give without ``features.absolute_time``; the
    time column never gave them, so only these changed when the rule became general."""
    if absolute_time:
        return {}
    time_col = schema.get("time_column")
    return {
        c: list(ABSOLUTE_PARTS) for c in columns_of_kind(schema, "datetime") if c != time_col
    }


def build_feature_transformer(
    schema: Schema,
    *,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    absolute_time: bool = False,
    time_unit: str | None = None,
    row_numbers: Sequence[str] = (),
) -> Pipeline:
    """The unfitted preprocessing pipeline for ``schema`` (pandas float32 output).

    ``absolute_time`` adds every datetime column's year and days since 1970 (and a
    numeric time column itself); ``time_unit`` is what a numeric time column holds
    (``numeric_time_unit``); ``row_numbers`` are columns left out as row numbers
    (``row_number_columns`` finds them; the schema's own profile is always checked).
    """
    row_numbers = list(dict.fromkeys([*row_numbers, *row_number_columns(schema)]))
    used = _used_columns(
        schema, absolute_time=absolute_time, time_unit=time_unit, row_numbers=row_numbers
    )
    numeric, datetimes = used["numeric"], used["datetime"]
    categorical = used["categorical"] + used["boolean"]
    if not (numeric or categorical or datetimes):
        raise FeatureError(
            "the schema has no usable feature columns (numeric, categorical, boolean or "
            f"datetime with role 'feature'); columns: {feature_columns(schema)}"
        )
    time_col = schema.get("time_column")
    transformers = []
    if numeric:
        transformers.append(
            (
                "num",
                Pipeline(
                    [
                        # Scaling first: the scaler learns from the observed values only
                        # (it ignores NaN), and the indicators the imputer adds stay 0/1.
                        ("scale", StandardScaler()),
                        # keep_empty_features: a column empty in training still yields its
                        # output column, so the output layout depends on the schema only.
                        (
                            "impute",
                            SimpleImputer(
                                strategy=_median, add_indicator=True, keep_empty_features=True
                            ),
                        ),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            max_categories=max_categories,
            dtype=np.float32,
        )
        transformers.append(("cat", encoder, categorical))
    if datetimes:
        absolute = list(datetimes) if absolute_time else []
        parts = DateParts(
            days_since_epoch=tuple(absolute),
            recurring_only=tuple(c for c in datetimes if c not in absolute),
        )
        # Scaled like the numeric columns: a linear model fitted by lbfgs on raw parts
        # (days since 1970 near 20,000 beside standardized numbers) stops with every
        # coefficient at zero. Trees split the same on scaled values.
        impute = SimpleImputer(strategy=_median, keep_empty_features=True)
        steps = [("parts", parts), ("scale", StandardScaler()), ("impute", impute)]
        transformers.append(("dt", Pipeline(steps), datetimes))

    epoch = time_col in datetimes and schema["columns"][time_col].get("kind") == "numeric"
    check = InputCheck(
        # A row number is not asked for: the model does not use it.
        columns=tuple(c for c in feature_columns(schema) if c not in row_numbers),
        numeric=tuple(numeric),
        categorical=tuple(used["categorical"]),
        boolean=tuple(used["boolean"]),
        datetime=tuple(datetimes),
        epoch_units={time_col: time_unit} if epoch else None,
    )
    pipeline = Pipeline(
        [
            ("check", check),
            ("columns", ColumnTransformer(transformers, remainder="drop", sparse_threshold=0)),
            ("float32", FunctionTransformer(_to_float32, feature_names_out="one-to-one")),
        ]
    )
    return pipeline.set_output(transform="pandas")


def fit_features(
    train_df: pd.DataFrame, schema: Schema, *, absolute_time: bool = False, **kwargs: Any
) -> Pipeline:
    """Build and fit the preprocessing on the training split (and nothing else)."""
    time_col = schema.get("time_column")
    time_unit = None
    if time_col and schema["columns"].get(time_col, {}).get("kind") == "numeric":
        if time_col in train_df.columns:
            time_unit = numeric_time_unit(train_df[time_col])
    return build_feature_transformer(
        schema,
        absolute_time=absolute_time,
        time_unit=time_unit,
        row_numbers=row_number_columns(schema, train_df),
        **kwargs,
    ).fit(train_df)


def categorical_output_columns(columns: Iterable[str]) -> list[str]:
    """The output columns that hold category codes (the ``cat__`` ones)."""
    return [str(c) for c in columns if str(c).startswith(CATEGORICAL_PREFIX)]


def feature_summary(fitted: Pipeline, schema: Schema) -> dict[str, Any]:
    """What the fitted preprocessing does, for the run report (JSON-able)."""
    outputs = [str(c) for c in fitted.get_feature_names_out()]
    columns: ColumnTransformer = fitted.named_steps["columns"]
    check: InputCheck = fitted.named_steps["check"]
    used = {
        "numeric": list(check.numeric),
        "categorical": list(check.categorical),
        "boolean": list(check.boolean),
        "datetime": list(check.datetime),
    }
    used_all = [c for kind in used.values() for c in kind]
    summary: dict[str, Any] = {
        "input_columns": feature_columns(schema),
        "unused_input_columns": [c for c in feature_columns(schema) if c not in used_all],
        "input_columns_by_kind": used,
        "output_columns": {
            "numeric": [c for c in outputs if c.startswith(NUMERIC_PREFIX)],
            "categorical": categorical_output_columns(outputs),
            "datetime": [c for c in outputs if c.startswith(DATETIME_PREFIX)],
        },
        "n_output_columns": len(outputs),
        "row_number_columns": [c for c in feature_columns(schema) if c not in check.columns],
        "time_column": _time_summary(fitted, schema),
        "dropped_absolute_parts": _dropped_parts(fitted, schema),
        "missing_indicators": [],
        "categories": {},
        "infrequent_categories": {},
    }
    if "num" in columns.named_transformers_:
        imputer = columns.named_transformers_["num"].named_steps["impute"]
        if imputer.indicator_ is not None:
            names = imputer.feature_names_in_
            summary["missing_indicators"] = [str(names[i]) for i in imputer.indicator_.features_]
    if "cat" in columns.named_transformers_:
        encoder: OrdinalEncoder = columns.named_transformers_["cat"]
        infrequent = encoder.infrequent_categories_
        for i, name in enumerate(encoder.feature_names_in_):
            rare = [] if infrequent[i] is None else [str(v) for v in infrequent[i]]
            pooled = frozenset(rare)
            kept = [str(v) for v in encoder.categories_[i] if not _is_missing(v)]
            summary["categories"][str(name)] = [v for v in kept if v not in pooled]
            summary["infrequent_categories"][str(name)] = rare
    return summary


def _dropped_parts(fitted: Pipeline, schema: Schema) -> dict[str, list[str]]:
    columns: ColumnTransformer = fitted.named_steps["columns"]
    if "dt" not in columns.named_transformers_:
        return {}
    parts: DateParts = columns.named_transformers_["dt"].named_steps["parts"]
    absolute = set(parts.days_since_epoch)
    return {c: parts_ for c, parts_ in dropped_absolute_parts(schema).items() if c not in absolute}


def _time_summary(fitted: Pipeline, schema: Schema) -> dict[str, Any] | None:
    time_col = schema.get("time_column")
    if not time_col:
        return None
    outputs = [str(c) for c in fitted.get_feature_names_out()]
    mine = [
        c
        for c in outputs
        if c == f"{NUMERIC_PREFIX}{time_col}" or c.startswith(f"{DATETIME_PREFIX}{time_col}_")
    ]
    units = getattr(fitted.named_steps["check"], "epoch_units", None) or {}
    return {"column": time_col, "features": mine, "epoch_unit": units.get(time_col)}


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import Artifact, Dataset, Input, Model, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def features_op(
    train: Input[Dataset],
    schema: Input[Artifact],
    transformer: Output[Model],
    summary: Output[Artifact],
    config: dict = {},  # noqa: B006 (KFP reads the default; it is never mutated)
):
    """Fit the preprocessing on the training split only; it becomes part of the model.

    A split longer than ``train.max_rows`` is fitted on the sample the candidates
    draw with the same seed (``read_training_sample``), never read whole.
    """
    import json

    import joblib

    from kubeloop.components.features import feature_summary, fit_features
    from kubeloop.components.train.sample import read_training_sample
    from kubeloop.config import Config
    from kubeloop.progress import stage
    from kubeloop.tables import count_rows, read_parquet

    with stage("features") as st:
        sch = json.loads(open(schema.path).read())
        cfg = Config.from_dict(config)
        n_rows = count_rows(train.path)
        if n_rows > cfg.train.max_rows:
            rows, _ = read_training_sample(train.path, sch, cfg.train.max_rows, seed=cfg.train.seed)
        else:
            rows = read_parquet(train.path)
        fitted = fit_features(rows, sch, absolute_time=cfg.features.absolute_time)
        joblib.dump(fitted, transformer.path)
        info = feature_summary(fitted, sch)
        info["fitted_rows"], info["split_rows"] = len(rows), n_rows
        del rows
        with open(summary.path, "w") as f:
            json.dump(info, f, indent=2, default=str)
        st.result = (
            f"{len(info['input_columns'])} input -> {info['n_output_columns']} model columns"
            + (f"; fitted on a sample of {info['fitted_rows']:,} of {n_rows:,} rows"
               if info["fitted_rows"] < n_rows else "")
        )
