"""The validation report, as JSON for machines and Markdown for the KFP UI."""

from __future__ import annotations

import json
from typing import Any

from kubeloop.components.validate.codes import Anomaly, _jsonable, is_blocking
from kubeloop.schema import Schema


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
