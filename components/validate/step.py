"""The whole stage (``validate``) and the pipeline step around it (``validate_step``):
the registry lookup, the checks, the notes from ingest, the reports."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kubeloop.components.validate.checks import _check, _check_reference_shape
from kubeloop.components.validate.codes import (
    BLOCKING,
    POSITIVE_LABEL_CHANGED,
    UNKNOWN_POSITIVE_LABEL,
    WARNING,
    Anomaly,
    ValidationConfigError,
    ValidationResult,
    _block,
    _show,
)
from kubeloop.components.validate.profile import _check_frame
from kubeloop.components.validate.report import report_json, report_markdown
from kubeloop.components.validate.schema import (
    _build_schema,
    _check_task,
    _class_counts,
    _label_key,
    _match_label,
    conventional_positive,
)
from kubeloop.components.validate.table import TableScan, scan_frame, scan_parquet
from kubeloop.config import Config, StorageConfig, ValidationConfig
from kubeloop.schema import Schema


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
    scan = scan_frame(df, cfg, target=target, task=task, reference=reference,
                      time_column=time_column, id_column=id_column)
    return _judge(scan, target, cfg, reference, time_column, id_column, positive_label)


def validate_parquet(
    uri: str | os.PathLike[str],
    *,
    target: str,
    task: str | None = None,
    cfg: ValidationConfig,
    reference: Schema | None = None,
    time_column: str | None = None,
    id_column: str | None = None,
    positive_label: Any = None,
    storage: StorageConfig | None = None,
) -> ValidationResult:
    """``validate`` of a Parquet file or folder (local or ``s3://``) read one column at
    a time: the same result as ``validate(read_parquet(uri), ...)``, in the memory of
    one column and the row hashes."""
    if reference is not None:
        _check_reference_shape(reference)
    scan = scan_parquet(uri, cfg, storage=storage, target=target, task=task,
                        reference=reference, time_column=time_column, id_column=id_column)
    return _judge(scan, target, cfg, reference, time_column, id_column, positive_label)


def _judge(
    scan: TableScan,
    target: str,
    cfg: ValidationConfig,
    reference: Schema | None,
    time_column: str | None,
    id_column: str | None,
    positive_label: Any,
) -> ValidationResult:
    profiles, resolved = scan.profiles, scan.task
    found = _check(scan, target, cfg, reference, time_column, id_column)
    describable = (
        scan.n_rows > 0
        and scan.y is not None
        and resolved is not None
        and not profiles[target].all_null
    )
    if not describable:
        return ValidationResult(None, found, resolved)

    positive = None
    if resolved == "classification":
        labels = list(_class_counts(scan.y))
        positive, label_problems = _resolve_positive(target, labels, positive_label, reference)
        found += label_problems
    kept = None
    if positive is not None and positive_label is None and reference is not None:
        kept = _kept_positive_reason(positive, list(_class_counts(scan.y)))
    clean_time = time_column if time_column in profiles else None
    clean_id = id_column if id_column in profiles else None
    schema = _build_schema(scan.n_rows, scan.y, profiles, target, resolved, clean_time, clean_id,
                           positive, kept)
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
    data: pd.DataFrame | str | os.PathLike[str],
    cfg: Config,
    *,
    registry: Any,
    ingest_profile: dict[str, Any] | None = None,
) -> ValidateOutcome:
    """Check ``data`` (a DataFrame, or the path of a Parquet file that is read one
    column at a time) against the schema of the production model in ``registry`` (a
    ``kubeloop.registry.Registry``), or infer the schema on a first run.

    Blocking anomalies make the verdict ``blocked``; nothing raises for them, so the
    report is stored by a step that succeeds and the pipeline stops on the verdict.
    A gate metric that does not fit the inferred task is a configuration error.
    """
    if not cfg.target:
        raise ValidationConfigError("no target column: set the pipeline parameter 'target'")
    champion = registry.get_alias(cfg.model_name, "production")
    reference = registry.read_json(cfg.model_name, champion, "schema.json") if champion else None
    common: dict[str, Any] = dict(
        target=cfg.target, task=cfg.task, cfg=cfg.validation, reference=reference,
        time_column=cfg.time_column, id_column=cfg.id_column, positive_label=cfg.positive_label,
    )
    if isinstance(data, pd.DataFrame):
        result = validate(data, **common)
    else:
        result = validate_parquet(data, storage=cfg.storage, **common)
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
