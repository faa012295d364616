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

``validate`` runs all of it once; ``validate_parquet`` does the same for a Parquet
file read one column at a time (``table``), and is what the pipeline step calls.

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

The stage is a package, one concern per module, behind this one import path:
``codes`` (anomaly codes and records), ``profile`` (one pass over each column),
``table`` (the scan of a table, a column at a time),
``schema`` (task, labels, schema), ``checks``, ``leakage``, ``report``, ``step``
(the whole stage and the pipeline step) and ``ops`` (the KFP adapters).
"""

from __future__ import annotations

from kubeloop.components.validate.checks import (
    check_dataset,
)
from kubeloop.components.validate.codes import (
    ALL_NULL_COLUMN,
    BAD_COLUMN_NAMES,
    BLOCKING,
    CONSTANT_COLUMN,
    DUPLICATE_ROWS,
    EMPTY_DATASET,
    EXTRA_COLUMN,
    ID_COLUMN_MISSING,
    INFINITE_VALUES,
    KIND_CHANGED,
    LABEL_ABSENT,
    LEAKAGE,
    MAX_CLASS_FRACTION,
    MAX_CLASSES,
    MISSING_COLUMN,
    MISSING_RATE_INCREASE,
    OUT_OF_RANGE,
    POSITIVE_LABEL_CHANGED,
    RARE_CLASS,
    SCHEMA_VERSION,
    SINGLE_CLASS,
    TARGET_CHANGED,
    TARGET_COLUMN_MISSING,
    TARGET_CONSTANT,
    TARGET_INFINITE,
    TARGET_NAME_TWIN,
    TARGET_NOT_NUMERIC,
    TARGET_VALUES_MISSING,
    TASK_CHANGED,
    TASKS,
    TIME_COLUMN_MISSING,
    TIME_COLUMN_UNPARSEABLE,
    TIME_VALUES_MISSING,
    TOO_FEW_ROWS,
    UNKNOWN_POSITIVE_LABEL,
    UNSEEN_CATEGORIES,
    UNSEEN_LABEL,
    WARNING,
    Anomaly,
    ValidationBlocked,
    ValidationConfigError,
    ValidationFailed,
    ValidationResult,
    is_blocking,
)
from kubeloop.components.validate.leakage import (
    LEAKAGE_MAX_ROWS,
    LEAKAGE_MAX_UNIQUE_FRACTION,
    LEAKAGE_MIN_HALF,
    LEAKAGE_TREE_DEPTH,
)
from kubeloop.components.validate.ops import (
    blocked_op,
    validate_op,
)
from kubeloop.components.validate.report import (
    report_json,
    report_markdown,
)
from kubeloop.components.validate.schema import (
    POSITIVE_WORDS,
    choose_positive,
    conventional_positive,
    infer_schema,
    infer_task,
)
from kubeloop.components.validate.step import (
    ABSOLUTE_TIME_DROPPED,
    BLOCKED_VERDICT,
    PASS,
    ROW_NUMBER_DROPPED,
    ValidateOutcome,
    absolute_time_notes,
    blocked_message,
    validate,
    validate_parquet,
    validate_step,
)

__all__ = [
    "ABSOLUTE_TIME_DROPPED",
    "ALL_NULL_COLUMN",
    "Anomaly",
    "BAD_COLUMN_NAMES",
    "BLOCKED_VERDICT",
    "BLOCKING",
    "CONSTANT_COLUMN",
    "DUPLICATE_ROWS",
    "EMPTY_DATASET",
    "EXTRA_COLUMN",
    "ID_COLUMN_MISSING",
    "INFINITE_VALUES",
    "KIND_CHANGED",
    "LABEL_ABSENT",
    "LEAKAGE",
    "LEAKAGE_MAX_ROWS",
    "LEAKAGE_MAX_UNIQUE_FRACTION",
    "LEAKAGE_MIN_HALF",
    "LEAKAGE_TREE_DEPTH",
    "MAX_CLASSES",
    "MAX_CLASS_FRACTION",
    "MISSING_COLUMN",
    "MISSING_RATE_INCREASE",
    "OUT_OF_RANGE",
    "PASS",
    "POSITIVE_LABEL_CHANGED",
    "POSITIVE_WORDS",
    "RARE_CLASS",
    "ROW_NUMBER_DROPPED",
    "SCHEMA_VERSION",
    "SINGLE_CLASS",
    "TARGET_CHANGED",
    "TARGET_COLUMN_MISSING",
    "TARGET_CONSTANT",
    "TARGET_INFINITE",
    "TARGET_NAME_TWIN",
    "TARGET_NOT_NUMERIC",
    "TARGET_VALUES_MISSING",
    "TASKS",
    "TASK_CHANGED",
    "TIME_COLUMN_MISSING",
    "TIME_COLUMN_UNPARSEABLE",
    "TIME_VALUES_MISSING",
    "TOO_FEW_ROWS",
    "UNKNOWN_POSITIVE_LABEL",
    "UNSEEN_CATEGORIES",
    "UNSEEN_LABEL",
    "ValidateOutcome",
    "ValidationBlocked",
    "ValidationConfigError",
    "ValidationFailed",
    "ValidationResult",
    "WARNING",
    "absolute_time_notes",
    "blocked_message",
    "blocked_op",
    "check_dataset",
    "choose_positive",
    "conventional_positive",
    "infer_schema",
    "infer_task",
    "is_blocking",
    "report_json",
    "report_markdown",
    "validate",
    "validate_op",
    "validate_parquet",
    "validate_step",
]
