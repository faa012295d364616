"""The task, the labels and the positive class, and the schema every later stage reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kubeloop.components.validate.codes import (
    MAX_CLASS_FRACTION,
    MAX_CLASSES,
    SCHEMA_VERSION,
    TASKS,
    _native,
    _show,
)
from kubeloop.components.validate.profile import (
    _check_frame,
    _Profile,
    _role,
    _value_counts,
)
from kubeloop.config import ValidationConfig
from kubeloop.schema import Schema


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
    # Imported here: the scan resolves the task with this module's infer_task.
    from kubeloop.components.validate.table import scan_frame

    task = _check_task(task) or infer_task(df[target])
    scan = scan_frame(df, cfg, target=target, task=task, reference=None,
                      time_column=time_column, id_column=id_column)
    if task == "classification" and positive_label is not None:
        labels = list(_class_counts(df[target]))
        if _match_label(positive_label, labels) is None:
            raise ValueError(
                f"positive_label {positive_label!r} is not a label of target {target!r}; "
                f"labels: {_show(labels)}"
            )
    return _build_schema(scan.n_rows, scan.y, scan.profiles, target, task, time_column, id_column,
                         positive_label)


def _check_task(task: str | None) -> str | None:
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return task


def _build_schema(
    n_rows: int,
    y: pd.Series,
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
        counts = _class_counts(y)
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
        "n_rows": n_rows,
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
    if p.kind == "numeric":
        entry.update(min=p.finite_min, max=p.finite_max, mean=p.finite_mean, std=p.finite_std)
    elif p.kind in ("categorical", "boolean"):
        entry["categories"] = list(p.str_counts().index)
    elif p.kind == "datetime":
        entry["min"] = p.dt_min.isoformat() if p.dt_min is not None else None
        entry["max"] = p.dt_max.isoformat() if p.dt_max is not None else None
    if reason is not None:
        entry["reason"] = reason
    return entry
