"""Split stage: cut the validated dataset into train, valid and test.

Exact duplicate rows are dropped first (the first copy is kept), so an identical
row can never be trained on and then scored as "unseen". Where repeated rows are
real observations (survey answers on small scales, repeated measurements),
``split.duplicates: keep`` assigns every row on its own, copies included: dropping
them would remove the frequencies a model learns from. The strategy follows from
the schema, in this order of precedence:

1. ``time_column`` set -> **temporal**: rows are ordered by time; the oldest go
   to train, then valid, the newest to test. The cuts are at the configured row
   fractions, moved to the nearest boundary between distinct timestamps so equal
   times never straddle a cut. Rows with a missing time go to train.
2. ``time_column`` and ``id_column`` set -> **temporal_group**: time still wins,
   but each id is placed whole in the split of its first appearance (its earliest
   time), so no id is in two splits. An id that entered early may have later rows
   inside or after the test period; those rows are dropped from train and valid
   (moving them to test would put the id in two splits), so no training or
   validation row is as new as the test period. The summary counts them.
3. ``id_column`` set -> **group**: ids are shuffled into the splits with
   scikit-learn's ``GroupShuffleSplit`` (twice); the fractions apply to ids, so
   the row counts follow the ids' sizes. Rows with a missing id count as their own
   group each.
4. Otherwise **stratified** for classification (each class's share of test, then
   of valid, drawn by largest remainder: ``kubeloop.sampling``) and **random** for
   regression.

The time column may hold dates and times, or numbers (a year such as 1987, or
epoch seconds or milliseconds): only their order matters here.

Everything is deterministic for a given ``SplitConfig.seed``. The stage decides on
row positions from the key columns alone (``plan_split``) and copies the data
once, when the three splits are cut out, each in the input's row order: in memory
(``split_dataset``) or batch by batch from Parquet (``split_stream``). Before
returning, it checks its own result (``assert_disjoint``): a row, an identical
row, an id or a time range in two splits raises ``SplitError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from kubeloop.config import SplitConfig
from kubeloop.dates import parse_datetimes
from kubeloop.errors import UserError
from kubeloop.sampling import stratified_positions
from kubeloop.schema import Schema

SPLIT_NAMES = ("train", "valid", "test")
TEMPORAL_STRATEGIES = ("temporal", "temporal_group")
# Row shares further than this from the configured fractions are reported in the summary.
_FRACTION_WARNING = 0.10


class SplitError(UserError, ValueError):
    """The data cannot be split as configured; the message says what to change."""


@dataclass
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    summary: dict[str, Any]
    # Positions (0-based) of each split's rows in the frame given to split_dataset: the
    # frames' indexes are reset, and these keep the link to the input rows.
    source_rows: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def split_strategy(schema: Schema) -> str:
    """The strategy the schema calls for (see the module docstring for the precedence)."""
    time_col, id_col = schema.get("time_column"), schema.get("id_column")
    if time_col and id_col:
        return "temporal_group"
    if time_col:
        return "temporal"
    if id_col:
        return "group"
    return "stratified" if schema["task"] == "classification" else "random"


def key_columns(schema: Schema) -> list[str]:
    """The columns a split is decided on: the target, the time and the id column."""
    names = [schema["target"], schema.get("time_column"), schema.get("id_column")]
    return list(dict.fromkeys(c for c in names if c))


def split_dataset(df: pd.DataFrame, schema: Schema, cfg: SplitConfig) -> Splits:
    """Drop exact duplicates, then split ``df`` into train/valid/test as the schema says."""
    _require_columns(list(df.columns), schema)
    plan = plan_split(df[key_columns(schema)], _row_hashes(df), schema, cfg)
    frames = {name: _rows(df, p) for name, p in plan.source_rows.items()}
    return Splits(**frames, summary=plan.summary, source_rows=plan.source_rows)


def _require_columns(columns: list[str], schema: Schema) -> None:
    absent = [c for c in key_columns(schema) if c not in columns]
    if absent:
        raise SplitError(
            f"cannot split: column(s) {absent} named in the schema are not in the data "
            f"(columns: {columns[:20]})"
        )


def plan_split(keys: pd.DataFrame, hashes: np.ndarray, schema: Schema, cfg: SplitConfig) -> Splits:
    """Which input rows go to which split, decided on the key columns alone.

    ``keys`` holds the input's ``key_columns`` (every row, in input order) and
    ``hashes`` one hash per input row over all its columns (``_row_hashes``, or the
    same computed batch by batch). The result's frames hold the key columns only,
    its ``source_rows`` the positions of each split's rows, ascending: cutting the
    input at those positions gives ``split_dataset``'s frames, in memory or batch
    by batch (``split_stream``).
    """
    strategy = split_strategy(schema)
    target = schema["target"]
    df = keys
    keep = cfg.duplicates == "keep"
    if keep:
        # Repeated rows are observations (survey answers, repeated measurements): every
        # row is assigned on its own, so copies may sit in different splits.
        n_duplicates, pos = 0, np.arange(len(df))
    else:
        duplicated = _duplicated(hashes)
        n_duplicates = int(duplicated.sum())
        pos = np.flatnonzero(~duplicated)
    n_newer = 0
    if strategy in TEMPORAL_STRATEGIES:
        parts, stratified = _temporal(df, pos, schema, cfg, n_duplicates), False
        if strategy == "temporal_group":
            parts, n_newer = _drop_rows_newer_than_test(df, parts, schema["time_column"])
    elif strategy == "group":
        parts, stratified = _grouped(df, pos, schema["id_column"], cfg, n_duplicates), False
    else:
        parts, stratified = _shuffled(df, pos, target, strategy == "stratified", cfg, n_duplicates)
    # Every split keeps the input's row order (not the shuffle's or the time order):
    # the cut reads the input once, front to back, whether in memory or in batches,
    # and a reader can line the splits up with the source.
    parts = {name: np.sort(p) for name, p in parts.items()}

    frames = {name: _rows(df, p) for name, p in parts.items()}
    if schema["task"] == "classification":
        _require_classes_in_train(frames, target, len(pos), cfg)
    summary = _summary(frames, schema, strategy, stratified, cfg, len(df), n_duplicates)
    summary["rows"]["newer_than_test_dropped"] = n_newer
    if n_newer:
        summary["warnings"].append(
            f"{n_newer} train/valid row(s) of ids that entered before the test period are from "
            f"the test period or later ({schema['time_column']!r}); they were dropped so that no "
            "training row is newer than the test period"
        )
    summary["duplicates"] = cfg.duplicates
    if keep:
        summary["rows"]["duplicates_kept"] = int(_duplicated(hashes).sum())
    plan = Splits(**frames, summary=summary, source_rows=parts)
    # The split checks itself: the row hashes are the ones duplicates were found with;
    # with duplicates kept, identical rows may be shared, and only positions are checked.
    _check_disjoint(
        plan, schema, {name: hashes[p] for name, p in parts.items()}, identical_rows=not keep
    )
    return plan


def _rows(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    frame = df.take(positions)
    # Set in place: reset_index would copy the whole frame once more.
    frame.index = pd.RangeIndex(len(frame))
    return frame


def _row_hashes(df: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row (within this process: equal rows, equal hashes).

    ``DataFrame.duplicated`` factorizes every column into an int64 array at once
    (on 1M rows x 20 columns, 160 MB beside the data); hashing folds the columns
    into one array a column at a time. Two different rows share a hash with
    probability about n^2 / 2^65 (3e-8 for a million rows).
    """
    if df.shape[1] == 0 or len(df) == 0:
        return np.zeros(len(df), dtype=np.uint64)
    return pd.util.hash_pandas_object(df, index=False).to_numpy()


def _duplicated(hashes: np.ndarray) -> np.ndarray:
    """Rows equal to an earlier row. By one stable sort (17 bytes a row) rather than
    pandas' hash table (about twice that on distinct hashes): equal hashes end up
    side by side, the earliest row first."""
    if hashes.size == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeat = np.empty(hashes.size, dtype=bool)
    repeat[0] = False
    np.equal(ordered[1:], ordered[:-1], out=repeat[1:])
    del ordered
    duplicated = np.empty(hashes.size, dtype=bool)
    duplicated[order] = repeat
    return duplicated


def _duplicated_rows(df: pd.DataFrame) -> np.ndarray:
    return _duplicated(_row_hashes(df))


def assert_disjoint(splits: Splits, schema: Schema) -> None:
    """Raise ``SplitError`` if a row, an identical row, an id or (temporal) a time range
    is shared by two splits, or (with an id and a time column) a train or valid row
    is as new as the test period. Identical rows may be shared when the split kept
    duplicates (``split.duplicates: keep``)."""
    keep = splits.summary.get("duplicates") == "keep"
    _check_disjoint(splits, schema, None, identical_rows=not keep)


def _shared_values(parts: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """For each pair of the splits (train, valid, test) that share values, the distinct
    shared values, ascending: ``np.intersect1d`` of every pair, from one sort of all
    values instead of three pairs of deduplicating sorts."""
    names = [n for n in SPLIT_NAMES if n in parts]
    values = np.concatenate([np.asarray(parts[n]) for n in names])
    if values.size == 0:
        return {}
    owner = np.repeat(np.arange(len(names), dtype=np.uint8), [len(parts[n]) for n in names])
    order = np.argsort(values, kind="stable")
    values, owner = values[order], owner[order]
    del order
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    # One bit per split that holds the value.
    held = np.bitwise_or.reduceat(np.left_shift(np.uint8(1), owner), starts)
    shared = {}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            both = (held >> i) & (held >> j) & 1
            if both.any():
                shared[(a, names[j])] = values[starts[both.astype(bool)]]
    return shared


def _check_disjoint(
    splits: Splits,
    schema: Schema,
    hashes: dict[str, np.ndarray] | None,
    *,
    identical_rows: bool = True,
) -> None:
    frames = splits.frames()
    problems: list[str] = []
    pairs = [("train", "valid"), ("train", "test"), ("valid", "test")]

    if splits.source_rows:
        for (a, b), shared in _shared_values(splits.source_rows).items():
            problems.append(
                f"{shared.size} input row(s) are in both {a} and {b} "
                f"(positions {shared[:5].tolist()})"
            )

    if identical_rows:
        if hashes is None:
            hashes = {n: _row_hashes(f) for n, f in frames.items()}
        for (a, b), shared in _shared_values(hashes).items():
            problems.append(f"{shared.size} identical row(s) are in both {a} and {b}")

    id_col = schema.get("id_column")
    if id_col:
        # pd.Index rather than numpy: ids may mix types that numpy cannot sort together.
        ids = {n: pd.Index(f[id_col].dropna().unique()) for n, f in frames.items()}
        for a, b in pairs:
            shared = ids[a].intersection(ids[b])
            if shared.size:
                problems.append(
                    f"{shared.size} value(s) of id column {id_col!r} are in both {a} and {b} "
                    f"(e.g. {shared[:5].tolist()})"
                )

    time_col = schema.get("time_column")
    if time_col:
        ranges = {}
        for name, frame in frames.items():
            key, missing = _time_key(frame[time_col], time_col)
            if id_col:
                key = _entry_key(key, missing, _group_codes(frame[id_col]))
                missing = key == _low(key)
            present = key[~missing]
            ranges[name] = (present.min(), present.max()) if present.size else None
        for a, b in pairs:
            if ranges[a] and ranges[b] and ranges[a][1] >= ranges[b][0]:
                what = "entry times of ids" if id_col else "times"
                problems.append(f"the {what} in {a} reach into those of {b} ({time_col!r})")
        if id_col:
            own = {}
            for name, frame in frames.items():
                key, missing = _time_key(frame[time_col], time_col)
                present = key[~missing]
                own[name] = (present.min(), present.max()) if present.size else None
            for a in ("train", "valid"):
                if own[a] and own["test"] and own[a][1] >= own["test"][0]:
                    problems.append(
                        f"{a} holds rows as new as the test period ({time_col!r} up to "
                        f"{_jsonable(frames[a][time_col].max())}, the test period starts at "
                        f"{_jsonable(frames['test'][time_col].min())})"
                    )

    if problems:
        raise SplitError("splits overlap: " + "; ".join(problems))


# --- sizes and errors ---------------------------------------------------------------


def _sizes(n: int, cfg: SplitConfig) -> tuple[int, int, int]:
    # Rounded half up; train takes the remainder so the three always add up to n.
    n_valid = int(n * cfg.valid + 0.5)
    n_test = int(n * cfg.test + 0.5)
    return n - n_valid - n_test, n_valid, n_test


def _fractions(cfg: SplitConfig) -> str:
    return f"train/valid/test = {cfg.train:.2f}/{cfg.valid:.2f}/{cfg.test:.2f}"


def _require_non_empty(
    sizes: tuple[int, ...], n: int, unit: str, cfg: SplitConfig, n_duplicates: int, hint: str = ""
) -> None:
    empty = [name for name, size in zip(SPLIT_NAMES, sizes, strict=True) if size <= 0]
    if not empty:
        return
    counts = ", ".join(f"{name} {size}" for name, size in zip(SPLIT_NAMES, sizes, strict=True))
    raise SplitError(
        f"cannot split {n} {unit} (after dropping {n_duplicates} duplicate rows) into "
        f"{_fractions(cfg)}: the {' and '.join(empty)} split would be empty ({counts}). "
        f"{hint}Provide more data or raise the fraction of the {' and '.join(empty)} split "
        f"(split.{empty[0]} in the config)."
    )


def _require_classes_in_train(
    frames: dict[str, pd.DataFrame], target: str, n_rows: int, cfg: SplitConfig
) -> None:
    in_train = set(frames["train"][target].dropna().unique().tolist())
    counts: dict[Any, int] = {}
    for frame in frames.values():
        for label, count in frame[target].value_counts().items():
            if count:  # a category dtype lists its unused categories with count 0
                counts[label] = counts.get(label, 0) + int(count)
    missing = {label: n for label, n in counts.items() if label not in in_train}
    if missing:
        listed = ", ".join(f"{label!r} ({n} rows)" for label, n in sorted(missing.items(), key=str))
        raise SplitError(
            f"class(es) {listed} of target {target!r} have no rows in the train split "
            f"({len(frames['train'])} of {n_rows} rows, {_fractions(cfg)}); the model could "
            "never predict them. Add rows of these classes, raise split.train, or drop the "
            "classes from the data."
        )


# --- strategies -----------------------------------------------------------------------


def _strata(labels: pd.Series, n_train: int, n_test: int) -> np.ndarray | None:
    """Stratification labels scikit-learn accepts, or None when stratifying is impossible."""
    codes, _ = pd.factorize(labels, use_na_sentinel=False)
    counts = np.bincount(codes)
    rare = counts < 2
    if rare.any():
        # A class with a single row cannot be on both sides of a cut; pooling such
        # classes keeps the others stratified instead of giving up on stratification.
        pooled = len(counts)
        codes = np.where(rare[codes], pooled, codes)
        if np.count_nonzero(codes == pooled) == 1 and (~rare).any():
            codes[codes == pooled] = int(np.argmax(np.where(rare, -1, counts)))
    n_strata = np.unique(codes).size
    if n_strata < 2 or n_train < n_strata or n_test < n_strata:
        return None
    return codes


def _shuffled(
    df: pd.DataFrame, pos: np.ndarray, target: str, stratify: bool, cfg: SplitConfig, n_dup: int
) -> tuple[dict[str, np.ndarray], bool]:
    n_train, n_valid, n_test = _sizes(len(pos), cfg)
    _require_non_empty((n_train, n_valid, n_test), len(pos), "rows", cfg, n_dup)
    y = df[target].iloc[pos] if stratify else None

    strata = _strata(y, n_train, n_valid + n_test) if stratify else None
    train, rest, y_rest = _train_test_split(pos, y, n_valid + n_test, strata, cfg.seed)
    strata_rest = _strata(y_rest, n_valid, n_test) if stratify else None
    valid, test, _ = _train_test_split(rest, y_rest, n_test, strata_rest, cfg.seed)
    parts = {"train": train, "valid": valid, "test": test}
    return parts, strata is not None and strata_rest is not None


def _train_test_split(
    pos: np.ndarray, y: pd.Series | None, n_test: int, strata: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray, pd.Series | None]:
    # Split positions into positions (not the frame), so nothing is copied here. The
    # second side is drawn (each stratum's share by largest remainder) and the first
    # is the rest: scikit-learn's train_test_split builds shuffled index lists of
    # both sides and of every class, about 100 bytes a row, the split step's peak.
    rng = np.random.default_rng(seed)
    if strata is None:
        second = np.sort(rng.choice(len(pos), n_test, replace=False))
    else:
        second = stratified_positions(strata, n_test, rng)
    in_second = np.zeros(len(pos), dtype=bool)
    in_second[second] = True
    first = np.flatnonzero(~in_second)
    del in_second
    y_second = None if y is None else y.iloc[second]
    return pos[first], pos[second], y_second


def _group_codes(ids: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(ids, use_na_sentinel=True)
    missing = codes < 0
    if missing.any():
        # A row without an id belongs to no known entity, so it is a group of its own.
        codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes


def _grouped(
    df: pd.DataFrame, pos: np.ndarray, id_col: str, cfg: SplitConfig, n_dup: int
) -> dict[str, np.ndarray]:
    codes = _group_codes(df[id_col].iloc[pos])
    n_groups = int(codes.max()) + 1 if codes.size else 0
    n_train, n_valid, n_test = _sizes(n_groups, cfg)
    _require_non_empty(
        (n_train, n_valid, n_test), n_groups, f"distinct values of id column {id_col!r}", cfg, n_dup
    )
    first = GroupShuffleSplit(n_splits=1, test_size=n_valid + n_test, random_state=cfg.seed)
    train, rest = next(first.split(pos, groups=codes))
    second = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=cfg.seed)
    valid, test = next(second.split(rest, groups=codes[rest]))
    return {"train": pos[train], "valid": pos[rest[valid]], "test": pos[rest[test]]}


def _time_key(times: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A sortable array for the time column (missing -> the lowest value) and its missing mask."""
    if pd.api.types.is_numeric_dtype(times) and not pd.api.types.is_bool_dtype(times):
        key = times.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(key)
        key[missing] = -np.inf
        return key, missing
    if not isinstance(times.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(
        times
    ):
        numbers = pd.to_numeric(times, errors="coerce")
        if numbers.notna().sum() == times.notna().sum() and times.notna().any():
            # A year or an epoch time read as text (e.g. from a CSV with stray quotes).
            return _time_key(numbers, name)
        try:
            times = parse_datetimes(times)
        except (ValueError, TypeError, OverflowError) as exc:
            raise SplitError(
                f"time column {name!r} holds values that are not dates or numbers "
                f"({str(exc).splitlines()[0]}); fix the data or set time_column to a "
                "datetime column"
            ) from None
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    # NaT is the smallest int64, which is exactly where missing times must sort.
    key = times.to_numpy().view("i8")
    return key, key == np.iinfo(np.int64).min


def _low(key: np.ndarray) -> int | float:
    return -np.inf if key.dtype.kind == "f" else np.iinfo(np.int64).min


def _entry_key(key: np.ndarray, missing: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each row's key replaced by the earliest key of its id (missing when all are)."""
    high = np.inf if key.dtype.kind == "f" else np.iinfo(np.int64).max
    masked = pd.Series(np.where(missing, high, key))
    entry = masked.groupby(codes, sort=False).transform("min").to_numpy()
    entry[entry == high] = _low(key)
    return entry


def _move_cut(keys: np.ndarray, cut: int, lowest: int, highest: int) -> int:
    """Move ``cut`` to the nearest boundary between distinct keys inside [lowest, highest]."""
    highest = max(highest, lowest)
    cut = min(max(cut, lowest), highest)
    if cut <= 0 or cut >= len(keys) or keys[cut - 1] != keys[cut]:
        return cut
    start = int(np.searchsorted(keys, keys[cut], side="left"))
    end = int(np.searchsorted(keys, keys[cut], side="right"))
    candidates = sorted((start, end), key=lambda c: (abs(c - cut), -c))
    inside = [c for c in candidates if lowest <= c <= highest]
    return (inside or candidates)[0]


def _temporal(
    df: pd.DataFrame, pos: np.ndarray, schema: Schema, cfg: SplitConfig, n_dup: int
) -> dict[str, np.ndarray]:
    time_col, id_col = schema["time_column"], schema.get("id_column")
    key, missing = _time_key(df[time_col].iloc[pos], time_col)
    if id_col:
        key = _entry_key(key, missing, _group_codes(df[id_col].iloc[pos]))
        missing = key == _low(key)
    order = np.argsort(key, kind="stable")
    keys = key[order]
    n = len(keys)
    n_train, n_valid, n_test = _sizes(n, cfg)
    _require_non_empty((n_train, n_valid, n_test), n, "rows", cfg, n_dup)

    n_missing = int(missing.sum())
    # Rows without a time sort first and must all stay in train.
    cut1 = _move_cut(keys, n_train, max(1, n_missing), n - 2)
    cut2 = _move_cut(keys, n_train + n_valid, cut1 + 1, n - 1)
    sizes = (cut1, cut2 - cut1, n - cut2)
    n_distinct = np.unique(keys[n_missing:]).size
    what = "entry times of ids" if id_col else "times"
    hint = (
        f"Rows with equal times stay in one split, and {time_col!r} has {n_distinct} distinct "
        f"{what} among {n} rows ({n_missing} without a time, all kept in train). "
    )
    _require_non_empty(sizes, n, "rows", cfg, n_dup, hint)
    ordered = pos[order]
    return {"train": ordered[:cut1], "valid": ordered[cut1:cut2], "test": ordered[cut2:]}


def _drop_rows_newer_than_test(
    df: pd.DataFrame, parts: dict[str, np.ndarray], time_col: str
) -> tuple[dict[str, np.ndarray], int]:
    """Train and valid rows whose own time is at or after the first test time, removed."""
    test_key, test_missing = _time_key(df[time_col].iloc[parts["test"]], time_col)
    present = test_key[~test_missing]
    if not present.size:
        return parts, 0
    start = present.min()
    dropped = 0
    out = dict(parts)
    for name in ("train", "valid"):
        key, missing = _time_key(df[time_col].iloc[parts[name]], time_col)
        newer = ~missing & (key >= start)
        dropped += int(newer.sum())
        out[name] = parts[name][~newer]
    return out, dropped


# --- summary --------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _summary(
    frames: dict[str, pd.DataFrame],
    schema: Schema,
    strategy: str,
    stratified: bool,
    cfg: SplitConfig,
    n_input: int,
    n_duplicates: int,
) -> dict[str, Any]:
    target, time_col, id_col = schema["target"], schema.get("time_column"), schema.get("id_column")
    rows = {name: len(f) for name, f in frames.items()}
    kept = sum(rows.values())
    summary: dict[str, Any] = {
        "strategy": strategy,
        "stratified": stratified,
        "seed": cfg.seed,
        "fractions": {"train": cfg.train, "valid": cfg.valid, "test": cfg.test},
        "rows": {"input": n_input, "duplicates_dropped": n_duplicates, **rows},
        "duplicates_dropped": n_duplicates,
        "row_fractions": {name: (n / kept if kept else 0.0) for name, n in rows.items()},
        "class_balance": None,
        "target_mean": None,
        "time_range": None,
        "ids": None,
        "warnings": [],
    }
    for name, share in summary["row_fractions"].items():
        wanted = summary["fractions"][name]
        if abs(share - wanted) > _FRACTION_WARNING:
            why = "a few ids hold many rows" if id_col else "many rows share a timestamp"
            summary["warnings"].append(
                f"the {name} split holds {share:.0%} of the rows, not the configured "
                f"{wanted:.0%} ({why})"
            )
    if schema["task"] == "classification":
        balance = {}
        for name, frame in frames.items():
            shares = frame[target].value_counts(normalize=True, sort=False)
            balance[name] = {
                str(label): float(share)
                for label, share in sorted(shares.items(), key=str)
                if share > 0  # a category dtype lists its unused categories too
            }
        summary["class_balance"] = balance
        labels = set().union(*balance.values())
        for name in ("valid", "test"):
            absent = sorted(labels - set(balance[name]))
            if absent:
                summary["warnings"].append(
                    f"class(es) {absent} have no rows in the {name} split; metrics on it "
                    "cannot score them"
                )
    elif pd.api.types.is_numeric_dtype(frames["train"][target]):
        summary["target_mean"] = {
            name: _jsonable(frame[target].mean()) for name, frame in frames.items()
        }
    if time_col:
        summary["time_range"] = {
            name: {
                "min": _jsonable(frame[time_col].min()),
                "max": _jsonable(frame[time_col].max()),
                "missing": int(frame[time_col].isna().sum()),
            }
            for name, frame in frames.items()
        }
    if id_col:
        summary["ids"] = {name: int(frame[id_col].nunique()) for name, frame in frames.items()}
    return summary


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import Artifact, Dataset, Input, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def split_op(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    config: dict,
    train: Output[Dataset],
    valid: Output[Dataset],
    test: Output[Dataset],
    summary: Output[Artifact],
):
    """Split into train/valid/test (stratified, temporal or by group); no row in two."""
    import json

    from kubeloop.components.split_stream import split_parquet
    from kubeloop.config import Config
    from kubeloop.progress import stage

    with stage("split") as st:
        cfg = Config.from_dict(config)
        sch = json.loads(open(schema.path).read())
        outs = {"train": train, "valid": valid, "test": test}
        splits = split_parquet(dataset.path, {n: o.path for n, o in outs.items()}, sch, cfg.split)
        for name, out in outs.items():
            out.metadata["rows"] = len(splits.source_rows[name])
        with open(summary.path, "w") as f:
            json.dump(splits.summary, f, indent=2, default=str)
        newer = splits.summary["rows"].get("newer_than_test_dropped", 0)
        st.result = (
            f"{splits.summary.get('strategy', '?')}: train {len(splits.source_rows['train']):,}, "
            f"valid {len(splits.source_rows['valid']):,}, test {len(splits.source_rows['test']):,}"
            + (f"; {newer:,} train/valid rows from the test period dropped" if newer else "")
        )
