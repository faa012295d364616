"""The dataset schema: what validation infers on the first run and every later
stage reads.

It is a plain JSON-able dict so it can be stored with the model in the registry
and passed between pipeline steps as a file. Shape::

    {
      "schema_version": 1,
      "target": "churned",
      "task": "classification" | "regression",
      "labels": ["no", "yes"],            # classification only, sorted
      "positive_label": "yes",            # binary classification only
      "time_column": "signup_at" | null,
      "id_column": "customer_id" | null,
      "n_rows": 12345,
      "columns": {
        "<name>": {
          "kind": "numeric" | "categorical" | "boolean" | "datetime" | "text",
          "role": "feature" | "target" | "time" | "id" | "ignored",
          "dtype": "<pandas dtype when inferred>",
          "missing_rate": 0.02,
          "n_unique": 17,
          # numeric: "min", "max", "mean", "std"
          # categorical / boolean: "categories": [...] (the values seen, as strings)
          # datetime: "min", "max" (ISO 8601)
          # ignored: "reason": "constant" | "free text or identifier" | ...
        },
        ...
      }
    }

The time column is both the split key (role "time") and, through its date
parts, a feature; an id column is only a grouping key.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

FEATURE_ROLES = ("feature", "time")


def feature_columns(schema: Schema) -> list[str]:
    """Columns the model takes as input, in schema order (this is the serving contract)."""
    return [name for name, col in schema["columns"].items() if col["role"] in FEATURE_ROLES]


def columns_of_kind(schema: Schema, *kinds: str) -> list[str]:
    return [c for c in feature_columns(schema) if schema["columns"][c]["kind"] in kinds]


def categorical_features(schema: Schema) -> list[str]:
    return columns_of_kind(schema, "categorical", "boolean")


def is_binary(schema: Schema) -> bool:
    return schema["task"] == "classification" and len(schema.get("labels") or []) == 2
