"""Checks of a dataset on its own and against the production model's schema."""

from __future__ import annotations

from typing import Any

import pandas as pd

from kubeloop.components.validate.codes import (
    _EXAMPLES,
    ALL_NULL_COLUMN,
    CONSTANT_COLUMN,
    DUPLICATE_ROWS,
    EMPTY_DATASET,
    EXTRA_COLUMN,
    ID_COLUMN_MISSING,
    INFINITE_VALUES,
    KIND_CHANGED,
    LABEL_ABSENT,
    MISSING_COLUMN,
    MISSING_RATE_INCREASE,
    OUT_OF_RANGE,
    RARE_CLASS,
    SINGLE_CLASS,
    TARGET_CHANGED,
    TARGET_COLUMN_MISSING,
    TARGET_CONSTANT,
    TARGET_INFINITE,
    TARGET_NOT_NUMERIC,
    TARGET_VALUES_MISSING,
    TASK_CHANGED,
    TIME_COLUMN_MISSING,
    TIME_COLUMN_UNPARSEABLE,
    TIME_VALUES_MISSING,
    TOO_FEW_ROWS,
    UNSEEN_CATEGORIES,
    UNSEEN_LABEL,
    Anomaly,
    _block,
    _native,
    _show,
    _warn,
)
from kubeloop.components.validate.leakage import _check_leakage, _check_name_twins
from kubeloop.components.validate.profile import _check_frame, _family, _Profile
from kubeloop.components.validate.schema import _class_counts, _label_key
from kubeloop.components.validate.table import TableScan, scan_frame
from kubeloop.config import ValidationConfig
from kubeloop.schema import Schema


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
    if reference is not None:
        _check_reference_shape(reference)
    scan = scan_frame(df, cfg, target=target, task=task, reference=reference,
                      time_column=time_column, id_column=id_column)
    return _check(scan, target, cfg, reference, time_column, id_column)


def _check_reference_shape(reference: Schema) -> None:
    if not isinstance(reference, dict) or not isinstance(reference.get("columns"), dict):
        raise ValueError(
            "reference schema must be a schema dict with a 'columns' mapping "
            "(the schema.json stored with the production model)"
        )


def _check(
    scan: TableScan,
    target: str,
    cfg: ValidationConfig,
    reference: Schema | None,
    time_column: str | None,
    id_column: str | None,
) -> list[Anomaly]:
    if reference is not None:
        _check_reference_shape(reference)
    n_rows, columns, profiles, task = scan.n_rows, scan.columns, scan.profiles, scan.task
    if n_rows == 0 or len(columns) == 0:
        what = "no rows" if n_rows == 0 else "no columns"
        return [
            _block(
                EMPTY_DATASET,
                None,
                f"the dataset has {what}; check the data URI and any filters in the ingest step",
                n_rows=n_rows,
                n_columns=len(columns),
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
    for code, what, col, flag in (
        (TARGET_COLUMN_MISSING, "target column", target, "--target"),
        (TIME_COLUMN_MISSING, "time column", time_column, "--time-column / time_column"),
        (ID_COLUMN_MISSING, "id column", id_column, "id_column"),
    ):
        if col is not None and col not in profiles:
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
    if scan.y is not None and task is not None:
        found += _check_target(scan.y, profiles[target], task, cfg, reference)
    if time_column is not None and time_column in profiles:
        found += _check_time_column(profiles[time_column])

    found += _check_columns(profiles, target, time_column, id_column, reference)
    if reference is not None:
        found += _check_against_reference(profiles, target, cfg, reference)
    found += _check_duplicates(scan.n_duplicates, n_rows, cfg)
    found += _check_name_twins(columns, target)
    if scan.y is not None and task is not None:
        found += _check_leakage(scan.leakage_scores, scan.leakage_metric, target, cfg)
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
    n_inf = p.n_inf
    if n_inf:
        found.append(
            _block(
                TARGET_INFINITE,
                name,
                f"target {name!r} is infinite in {n_inf} rows; drop or fix those rows",
                n_infinite=n_inf,
            )
        )
    if p.n_finite and p.finite_min == p.finite_max:
        value = _native(p.finite_min)
        found.append(
            _block(
                TARGET_CONSTANT,
                name,
                f"target {name!r} is {value!r} in every row; there is nothing to "
                "learn: check the data and the target column",
                value=value,
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
    numeric_time = p.kind == "numeric" and p.numeric_time
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
        if p.kind == "numeric":
            n_inf = p.n_inf
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
    if ref_kind == "numeric" and p.kind == "numeric":
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
    # ``n_outside`` was counted against this range as the column was read.
    lo, hi = ref.get("min"), ref.get("max")
    if lo is None or hi is None or p.n_finite == 0:
        return []
    frac = p.n_outside / p.n_finite
    if frac <= cfg.max_out_of_range_fraction:
        return []
    return [
        _warn(
            OUT_OF_RANGE,
            p.name,
            f"column {p.name!r} has {frac:.1%} of values outside the production range "
            f"[{lo:.6g}, {hi:.6g}] (now [{p.finite_min:.6g}, {p.finite_max:.6g}]), above "
            f"validation.max_out_of_range_fraction={cfg.max_out_of_range_fraction:g}; "
            "check units and the feed",
            fraction=frac,
            reference_min=lo,
            reference_max=hi,
            min=p.finite_min,
            max=p.finite_max,
        )
    ]


def _check_duplicates(n_dup: int, n_rows: int, cfg: ValidationConfig) -> list[Anomaly]:
    # n_dup comes from the scan's row hashes (table.RowHashes).
    if n_dup == 0:
        return []
    frac = n_dup / n_rows
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
