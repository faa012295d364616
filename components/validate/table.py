"""One pass over a table, one column at a time: what every check and the schema need.

A column is read, profiled (a summary, never its values), folded into the row hashes
that find duplicate rows, scored by the leakage probe, and let go before the next is
read. So validating a Parquet file holds one column and eight bytes a row, whatever
the number of columns; a DataFrame goes through the same pass (``scan_frame``), so
both give the same result. The target is read first and kept: the class counts, the
task and the leakage sample come from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kubeloop.components.validate.codes import TASKS
from kubeloop.components.validate.leakage import LeakageProbe, leakage_probe
from kubeloop.components.validate.profile import _Profile, _profile_column, _role
from kubeloop.components.validate.schema import _check_task, infer_task
from kubeloop.config import ValidationConfig
from kubeloop.schema import Schema

if TYPE_CHECKING:
    from kubeloop.config import StorageConfig

# Mixes a column's 64-bit hashes into the row hashes (uint64 arithmetic wraps): any
# odd multiplier keeps the map one-to-one, so a row's hash depends on every column.
_MIX = np.uint64(0x100000001B3)


class RowHashes:
    """One 64-bit hash per row, built a column at a time: duplicate rows are duplicate
    hashes. Far cheaper than comparing rows; a collision among a million rows has
    odds near 1e-8."""

    def __init__(self) -> None:
        self._hashes: np.ndarray | None = None

    def add(self, column: pd.Series) -> None:
        try:
            h = pd.util.hash_pandas_object(column, index=False).to_numpy()
        except TypeError:  # unhashable objects (lists, dicts) in an object column
            h = pd.util.hash_pandas_object(column.astype(str), index=False).to_numpy()
        if self._hashes is None:
            self._hashes = h.copy()
            return
        np.multiply(self._hashes, _MIX, out=self._hashes)
        np.bitwise_xor(self._hashes, h, out=self._hashes)

    def n_duplicates(self) -> int:
        """Rows equal to an earlier row (``DataFrame.duplicated().sum()``). Sorts the
        hashes in place: call it once, after the last column."""
        if self._hashes is None or len(self._hashes) < 2:
            return 0
        self._hashes.sort()
        return int(np.count_nonzero(self._hashes[1:] == self._hashes[:-1]))


@dataclass
class TableScan:
    """What one pass over a table learned: the checks and the schema read only this."""

    n_rows: int
    columns: list[str]
    profiles: dict[str, _Profile]
    task: str | None
    # The target column's values (None when it is not in the table).
    y: pd.Series | None
    n_duplicates: int
    # Features whose one-feature leakage score was computed, in column order.
    leakage_scores: dict[str, float] = field(default_factory=dict)
    leakage_metric: str = ""


def resolve_task(y: pd.Series | None, task: str | None, reference: Schema | None) -> str | None:
    """The task: the one given, else the production model's (so a small batch never
    flips it by guesswork), else inferred from the target ``y``."""
    if _check_task(task) is not None:
        return task
    if reference and reference.get("task") in TASKS:
        return reference["task"]
    if y is not None:
        try:
            return infer_task(y)
        except ValueError:
            return None
    return None


def _ref_range(reference: Schema | None, name: str) -> tuple[float, float] | None:
    ref = ((reference or {}).get("columns") or {}).get(name)
    if not isinstance(ref, dict) or ref.get("kind") != "numeric":
        return None
    lo, hi = ref.get("min"), ref.get("max")
    if lo is None or hi is None:
        return None
    return float(lo), float(hi)


def scan_columns(
    columns: list[str],
    n_rows: int,
    read: Callable[[str], pd.Series],
    cfg: ValidationConfig,
    *,
    target: str,
    task: str | None,
    reference: Schema | None,
    time_column: str | None,
    id_column: str | None,
) -> TableScan:
    """Read each column once with ``read(name)``, target first, and keep what the
    checks need; profiles come back in the table's column order."""
    y = read(target) if target in columns else None
    resolved = resolve_task(y, task, reference)
    hashes = RowHashes()
    profiles: dict[str, _Profile] = {}
    probe: LeakageProbe | None = None
    scores: dict[str, float] = {}
    order = ([target] if y is not None else []) + [c for c in columns if c != target]
    for name in order:
        column = y if name == target else read(name)
        assert column is not None
        p = _profile_column(column, name, cfg, is_time=(name == time_column),
                            ref_range=_ref_range(reference, name))
        profiles[name] = p
        hashes.add(column)
        if name == target:
            if resolved is not None and not p.all_null and n_rows:
                probe = leakage_probe(column, p, resolved)
        elif probe is not None and _role(p, target, time_column, id_column)[0] == "feature":
            score = probe.score(column, p)
            if score is not None:
                scores[name] = score
        del column
    return TableScan(
        n_rows=n_rows,
        columns=list(columns),
        profiles={c: profiles[c] for c in columns},
        task=resolved,
        y=y,
        n_duplicates=hashes.n_duplicates(),
        leakage_scores=scores,
        leakage_metric=probe.metric if probe is not None else "",
    )


def scan_frame(df: pd.DataFrame, cfg: ValidationConfig, **kwargs: Any) -> TableScan:
    """``scan_columns`` over a DataFrame (its column names must be unique text)."""
    return scan_columns(list(df.columns), len(df), df.__getitem__, cfg, **kwargs)


def scan_parquet(
    uri: str | os.PathLike[str],
    cfg: ValidationConfig,
    *,
    storage: StorageConfig | None = None,
    **kwargs: Any,
) -> TableScan:
    """``scan_columns`` over a Parquet file or folder (local or ``s3://``), reading one
    column at a time with ``read_parquet``'s dtypes, never the whole table."""
    from kubeloop import tables

    dataset = tables.open_dataset(uri, storage)
    columns = list(dataset.schema.names)
    n_rows = tables.count_rows(uri, storage)
    return scan_columns(columns, n_rows, lambda c: tables.read_column(dataset, c, uri), cfg,
                        **kwargs)
