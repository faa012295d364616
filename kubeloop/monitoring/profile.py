"""The reference profile: what the training data looked like, small enough to
store with every registry version (``monitoring/profile.json``), so monitoring
never re-reads the training data.

Shape (JSON, no NaN)::

    {
      "format": "kubeloop/profile/v1",
      "n_rows": 7000, "task": "classification", "target": "churned",
      "columns": {
        "<numeric>": {"kind": "numeric", "n": 6950, "missing": 50, "missing_rate": 0.0071,
                      "min": .., "max": .., "mean": .., "std": ..,
                      "points": [...], "weights": [...], "exact": true,
                      "bins": {"edges": [...], "counts": [...]}},
        "<categorical>": {"kind": "categorical", "n": .., "missing": .., "missing_rate": ..,
                          "counts": {"basic": 3100, ...}, "other": 0, "levels": 4}
      },
      "prediction": {... one entry as above, or null},
      "metrics": {"roc_auc": 0.91, ...} or null,
      "importance": {"<feature>": 0.12, ...} or null
    }

A numeric column keeps sorted support ``points`` with ``weights`` (how many
reference values each stands for). With at most ``profile_points`` distinct
values these are the values themselves and their counts (``exact``: statistics
against it equal those against the full data); otherwise they are quantile
points with the exact count of values in each step, so the profile's CDF equals
the data's at every point and is within 1/points of it in between. ``bins`` are
the PSI bins: ``(-inf, e1], (e1, e2], ..., (e_last, inf)`` cut at the
reference's quantiles, with their exact counts.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from kubeloop.errors import UserError
from kubeloop.monitoring.columns import (
    CATEGORICAL,
    NUMERIC,
    category_counts,
    numeric_values,
    to_arrow,
)

FORMAT = "kubeloop/profile/v1"
PROFILE_FILE = "monitoring/profile.json"
REFERENCE_FILE = "monitoring/reference.parquet"
DEFAULT_POINTS = 2000
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 1000
# Numeric columns of a registration profile: points from a sample of this many rows.
DEFAULT_SAMPLE_ROWS = 200_000


class ProfileError(UserError, ValueError):
    """A profile cannot be built or read; the message says which column or file."""


# --------------------------------------------------------------------------- entries


def numeric_entry(
    sorted_values: np.ndarray,
    *,
    missing: int,
    n_total: int | None = None,
    moments: dict[str, float] | None = None,
    points: int = DEFAULT_POINTS,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The entry of a numeric column from its finite values, sorted.

    ``n_total`` > ``len(sorted_values)`` means the values are a uniform sample of
    that many (the counts are scaled and the entry is not exact); ``moments``
    then gives the exact min, max, mean and std of the whole column.
    """
    v = np.asarray(sorted_values, dtype=np.float64)
    n_sample = len(v)
    n = int(n_total if n_total is not None else n_sample)
    scale = n / n_sample if n_sample else 1.0
    entry: dict[str, Any] = {"kind": NUMERIC, "n": n, "missing": int(missing),
                             "missing_rate": missing / (n + missing) if n + missing else 0.0}
    if n_sample == 0:
        entry.update(min=None, max=None, mean=None, std=None, points=[], weights=[], exact=True, quantiles=False,
                     bins={"edges": [], "counts": []})
        return entry
    m = moments or {"min": float(v[0]), "max": float(v[-1]), "mean": float(v.mean()), "std": float(v.std())}
    entry.update({k: float(m[k]) for k in ("min", "max", "mean", "std")})
    # The values come sorted: their distinct values are where they change (np.unique
    # would sort them again, 50 ms a million).
    starts = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]]))
    uniq, counts = v[starts], np.diff(np.append(starts, n_sample))
    exact = scale == 1.0
    quantiles = len(uniq) > points
    if not quantiles:
        pts, cum = uniq, np.cumsum(counts)
    else:
        # Quantile points, each carrying the exact number of values since the previous one.
        ranks = np.ceil(np.arange(1, points + 1) / points * n_sample).astype(np.int64) - 1
        pts = np.unique(v[ranks])
        cum = np.searchsorted(v, pts, side="right")
        exact = False
    weights = np.diff(np.concatenate([[0], cum])).astype(np.float64)
    # PSI bins at the reference's quantiles; every edge is one of the points, and the
    # top point is never an edge (the last bin would be empty by construction).
    cdf = cum / n_sample
    idx = np.searchsorted(cdf, np.arange(1, bins) / bins, side="left")
    edges = np.unique(pts[np.minimum(idx, len(pts) - 1)])
    edges = edges[edges < pts[-1]]
    bin_cum = np.searchsorted(v, edges, side="right")
    bin_counts = np.diff(np.concatenate([[0], bin_cum, [n_sample]])) * scale
    entry.update(
        points=pts.tolist(),
        weights=_ints_if_whole(weights * scale),
        exact=bool(exact),
        quantiles=bool(quantiles),
        bins={"edges": edges.tolist(), "counts": _ints_if_whole(bin_counts)},
    )
    return entry


def categorical_entry(counts: dict[str, float], *, missing: int, max_categories: int = DEFAULT_MAX_CATEGORIES,
                      n: float | None = None, levels: int | None = None) -> dict[str, Any]:
    """``n`` and ``levels``, when given, are the column's true row and level counts
    (``counts`` then holds only some levels: the rest go to ``other``)."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ordered[:max_categories])
    if n is None:
        n = float(sum(counts.values()))
        other = float(sum(c for _, c in ordered[max_categories:]))
    else:
        other = float(n) - float(sum(c for _, c in ordered[:max_categories]))
    return {
        "kind": CATEGORICAL,
        "n": _int_if_whole(n),
        "missing": int(missing),
        "missing_rate": missing / (n + missing) if n + missing else 0.0,
        "counts": {k: _int_if_whole(c) for k, c in kept.items()},
        "other": _int_if_whole(other),
        # the true number of levels, stored ones and pooled ones
        "levels": len(counts) if levels is None else int(levels),
    }


def column_entry(values: Any, kind: str, *, points: int = DEFAULT_POINTS, bins: int = DEFAULT_BINS,
                 max_categories: int = DEFAULT_MAX_CATEGORIES, name: str = "column") -> dict[str, Any]:
    """The entry of one in-memory column (pandas Series, array or list)."""
    arr = to_arrow(values)
    if kind == NUMERIC:
        try:
            x = numeric_values(arr)
        except ValueError as exc:
            raise ProfileError(f"column {name!r}: {exc}") from None
        finite = np.sort(x[np.isfinite(x)])
        return numeric_entry(finite, missing=int(len(x) - len(finite)), points=points, bins=bins)
    counts, missing = category_counts(arr)
    return categorical_entry(counts, missing=missing, max_categories=max_categories)


def sketch_entries(sketch: Any, *, points: int = DEFAULT_POINTS, bins: int = DEFAULT_BINS,
                   max_categories: int = DEFAULT_MAX_CATEGORIES) -> dict[str, dict[str, Any]]:
    """Profile entries of the columns of a ``sketch.TableSketch`` (one pass or merged
    partitions). A numeric column whose sample holds all its values is exact, as
    ``column_entry``; else its points come from the sample (``sample``: its size,
    which p-values use) and its moments from all the values. A categorical column
    past the sketch's cap has Misra-Gries counts (``count_error``: how far below
    the truth any count may be) and an estimated number of ``levels``."""
    entries: dict[str, dict[str, Any]] = {}
    for name, col in sketch.columns.items():
        if col.kind == NUMERIC:
            values = col.sample.sorted_values()
            if col.sample.exact:
                entries[name] = numeric_entry(values, missing=col.missing, points=points, bins=bins)
                continue
            m = col.moments
            entry = numeric_entry(values, missing=col.missing, n_total=m.n, points=points, bins=bins,
                                  moments={"min": m.min, "max": m.max, "mean": m.mean, "std": m.std})
            entry["sample"] = int(values.size)
            entry["rank_error"] = col.sample.rank_error()
            entries[name] = entry
        else:
            cats = col.cats
            entry = categorical_entry(cats.counts, missing=col.missing, max_categories=max_categories,
                                      n=cats.n, levels=cats.levels())
            if not cats.exact:
                entry["count_error"] = _int_if_whole(math.ceil(cats.count_error()))
            entries[name] = entry
    return entries


def _ints_if_whole(a: np.ndarray) -> list[Any]:
    a = np.asarray(a, dtype=np.float64)
    if np.all(a == np.round(a)):
        return [int(x) for x in a]
    return [float(x) for x in a]


def _int_if_whole(x: float) -> Any:
    return int(x) if float(x).is_integer() else float(x)


# --------------------------------------------------------------------------- profiles


def schema_kinds(schema: dict[str, Any]) -> dict[str, str]:
    """Monitored feature columns of a kubeloop schema and their kind."""
    from kubeloop.schema import feature_columns

    kinds = {}
    for name in feature_columns(schema):
        kind = schema["columns"][name]["kind"]
        if kind == "numeric":
            kinds[name] = NUMERIC
        elif kind in ("categorical", "boolean"):
            kinds[name] = CATEGORICAL
    return kinds


def build_profile(
    reference_df: Any,
    schema: dict[str, Any],
    predictions: Any = None,
    metrics: dict[str, Any] | None = None,
    *,
    importance: dict[str, float] | None = None,
    points: int = DEFAULT_POINTS,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> dict[str, Any]:
    """The reference profile of ``reference_df`` (a pandas DataFrame of the training
    data) for the features of ``schema``; ``predictions`` are the model's outputs on
    the test split (labels or numbers), ``metrics`` its test metrics."""
    kinds = schema_kinds(schema)
    missing = [c for c in kinds if c not in reference_df.columns]
    if missing:
        raise ProfileError(f"reference data lacks feature columns {missing}")
    columns = {
        name: column_entry(reference_df[name], kind, points=points, bins=bins, max_categories=max_categories, name=name)
        for name, kind in kinds.items()
    }
    pred_entry = None
    if predictions is not None:
        kind = CATEGORICAL if schema.get("task") == "classification" else NUMERIC
        pred_entry = column_entry(predictions, kind, points=points, bins=bins, max_categories=max_categories,
                                  name="prediction")
    return finish_profile(
        columns, n_rows=len(reference_df), prediction=pred_entry, metrics=metrics, importance=importance,
        task=schema.get("task"), target=schema.get("target"), positive_label=schema.get("positive_label"),
    )


def finish_profile(columns: dict[str, Any], *, n_rows: int, prediction: dict[str, Any] | None = None,
                   metrics: dict[str, Any] | None = None, importance: dict[str, float] | None = None,
                   task: str | None = None, target: str | None = None, positive_label: str | None = None,
                   skipped: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "n_rows": int(n_rows),
        "task": task,
        "target": target,
        "positive_label": positive_label,
        "columns": columns,
        "prediction": prediction,
        "metrics": _clean_metrics(metrics),
        "importance": importance,
        "skipped": skipped or {},
    }


def _clean_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    out = {}
    for k, v in metrics.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v) if math.isfinite(v) else None
    return out


def dumps(profile: dict[str, Any]) -> bytes:
    return json.dumps(profile, allow_nan=False, separators=(",", ":")).encode()


def check_profile(profile: Any, where: str) -> dict[str, Any]:
    if not isinstance(profile, dict) or profile.get("format") != FORMAT or not isinstance(profile.get("columns"), dict):
        raise ProfileError(f"{where} is not a kubeloop profile (expected format {FORMAT!r})")
    return profile


# --------------------------------------------------------------------------- importance


def permutation_importance(model: Any, df: Any, schema: dict[str, Any], *, max_rows: int = 2000,
                           seed: int = 0) -> dict[str, float] | None:
    """How much the model's score drops when each feature is shuffled (sklearn's
    permutation importance on at most ``max_rows`` rows), normalised to sum to 1."""
    from kubeloop.schema import feature_columns

    target = schema.get("target")
    feats = [c for c in feature_columns(schema) if c in df.columns]
    if not target or target not in df.columns or not feats:
        return None
    from sklearn.inspection import permutation_importance as sk_perm

    data = df[feats + [target]].dropna(subset=[target])
    if len(data) > max_rows:
        data = data.sample(n=max_rows, random_state=seed)
    if len(data) < 10:
        return None
    y = data[target]
    if schema.get("task") == "classification":
        y = y.astype(str)
    from threadpoolctl import threadpool_limits

    try:
        # At most 2,000 rows: one thread each for OpenMP and BLAS, as train does for
        # small fits; a gradient-boosting model's threads cost ~8x the work here.
        with threadpool_limits(limits=1):
            res = sk_perm(model, data[feats], y, n_repeats=3, random_state=seed, n_jobs=1)
    except Exception:  # a model that cannot be scored this way has no importance, not an error
        return None
    raw = np.clip(res.importances_mean, 0, None)
    total = raw.sum()
    values = raw / total if total > 0 else np.full(len(feats), 1.0 / len(feats))
    return {f: float(v) for f, v in zip(feats, values, strict=True)}


def frame_sketch(df: Any, schema: dict[str, Any], *, sample: int = DEFAULT_SAMPLE_ROWS, seed: int = 0,
                 first_row: int = 0, category_cap: int | None = None) -> Any:
    """The mergeable sketch of the feature columns of ``df`` (rows ``first_row`` on)."""
    from kubeloop.monitoring.sketch import DEFAULT_CATEGORY_CAP, TableSketch

    kinds = schema_kinds(schema)
    missing = [c for c in kinds if c not in df.columns]
    if missing:
        raise ProfileError(f"reference data lacks feature columns {missing}")
    sketch = TableSketch(kinds, sample=sample, seed=seed, category_cap=category_cap or DEFAULT_CATEGORY_CAP)
    sketch.add_frame(df, first_row=first_row)
    return sketch


def sketch_profile(sketch: Any, schema: dict[str, Any], *, predictions: Any = None,
                   metrics: dict[str, Any] | None = None, importance: dict[str, float] | None = None,
                   cfg: Any = None) -> dict[str, Any]:
    """The reference profile from a sketch of the training data (one pass or the
    merge of partitions): the same function serves both shapes."""
    kw = {}
    if cfg is not None:
        kw = {"points": cfg.profile_points, "bins": cfg.psi_bins, "max_categories": cfg.max_categories}
    columns = sketch_entries(sketch, **kw)
    pred_entry = None
    if predictions is not None:
        kind = CATEGORICAL if schema.get("task") == "classification" else NUMERIC
        pred_entry = column_entry(predictions, kind, name="prediction", **kw)
    sampled = max((c.sample.values.size for c in sketch.columns.values() if c.sample is not None and not c.sample.exact),
                  default=0)
    prof = finish_profile(
        columns, n_rows=min(sketch.n_rows, sampled) if sampled else sketch.n_rows, prediction=pred_entry,
        metrics=metrics, importance=importance, task=schema.get("task"), target=schema.get("target"),
        positive_label=schema.get("positive_label"),
    )
    # n_rows: the rows the sampled statistics stand on; rows_total: every row sketched
    prof["rows_total"] = int(sketch.n_rows)
    return prof


def registration_profile(train_df: Any, schema: dict[str, Any], *, model: Any = None, test_df: Any = None,
                         metrics: dict[str, Any] | None = None, cfg: Any = None,
                         max_rows: int = DEFAULT_SAMPLE_ROWS, seed: int = 0, sketch: Any = None,
                         category_cap: int | None = None) -> dict[str, Any]:
    """The profile a register step stores as ``monitoring/profile.json``: the
    training split's sketch (moments and counts of every row, numeric points from a
    sample of at most ``max_rows``; or ``sketch``, already made, e.g. merged from
    partitions), the model's predictions and permutation importance on the test
    split (else on a training sample), and the test ``metrics``. ``cfg`` is a
    ``MonitoringConfig`` (points, bins)."""
    from kubeloop.schema import feature_columns

    if sketch is None:
        sketch = frame_sketch(train_df, schema, sample=max_rows, seed=seed, category_cap=category_cap)
    predictions = importance = None
    if model is not None:
        if test_df is not None and len(test_df):
            scored = test_df
        else:
            scored = train_df.sample(n=max_rows, random_state=seed) if len(train_df) > max_rows else train_df
        feats = [c for c in feature_columns(schema) if c in scored.columns]
        predictions = model.predict(scored[feats])
        if schema.get("task") == "classification":
            predictions = [str(p) for p in predictions]
        importance = permutation_importance(model, scored, schema, seed=seed)
    return sketch_profile(sketch, schema, predictions=predictions, metrics=metrics, importance=importance, cfg=cfg)


# --------------------------------------------------------------------------- registry


def load_profile(registry: Any, model: str, version_or_alias: str = "production") -> dict[str, Any]:
    """A version's profile: ``monitoring/profile.json``, or for versions registered
    before profiles existed, one built from the training sample they store
    (``monitoring/reference.parquet``), with the model's predictions on it."""
    from kubeloop.storage import NotFound

    version = registry.resolve(model, version_or_alias)
    try:
        prof = json.loads(registry.read_bytes(model, version, PROFILE_FILE))
        prof = check_profile(prof, f"{model} {version} {PROFILE_FILE}")
    except NotFound:
        prof = profile_from_reference(registry, model, version)
    prof.setdefault("model", model)
    prof["version"] = version
    return prof


def profile_from_reference(registry: Any, model: str, version: str) -> dict[str, Any]:
    import io

    import pandas as pd

    from kubeloop.storage import NotFound

    try:
        raw = registry.read_bytes(model, version, REFERENCE_FILE)
    except NotFound:
        raise ProfileError(
            f"{model} {version} has neither {PROFILE_FILE} nor {REFERENCE_FILE}; it cannot be monitored"
        ) from None
    schema = registry.read_json(model, version, "schema.json")
    try:
        metrics = registry.read_json(model, version, "metrics.json")
    except NotFound:
        metrics = None
    df = pd.read_parquet(io.BytesIO(raw))
    predictions, importance = None, None
    try:
        estimator, _ = registry.load_model(model, version)
        from kubeloop.schema import feature_columns

        feats = [c for c in feature_columns(schema) if c in df.columns]
        predictions = pd.Series(estimator.predict(df[feats]))
        if schema.get("task") == "classification":
            predictions = predictions.astype(str)
        importance = permutation_importance(estimator, df, schema)
    except NotFound:
        pass
    return build_profile(df, schema, predictions=predictions, metrics=metrics, importance=importance)
