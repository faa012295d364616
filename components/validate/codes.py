"""Anomaly codes and records, the stage's errors, and the small helpers every check uses."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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


def _native(v: Any) -> Any:
    """A JSON-able plain Python value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date)):
        return v.isoformat()
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def _block(code: str, column: str | None, message: str, **details: Any) -> Anomaly:
    return Anomaly(code, column, BLOCKING, message, _jsonable(details))


def _warn(code: str, column: str | None, message: str, **details: Any) -> Anomaly:
    return Anomaly(code, column, WARNING, message, _jsonable(details))


def _show(values: list[Any], limit: int = _EXAMPLES) -> str:
    shown = ", ".join(repr(_native(v)) for v in values[:limit])
    more = len(values) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    value = _native(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
