"""The saved scikit-learn pipeline, compiled into plain numpy for small requests.

A one-row request through the saved ``Pipeline`` pays for a pandas DataFrame, the
features step's ColumnTransformer (with pandas output), scikit-learn's input
validation in every step, and for forests a joblib fan-out over 100 trees: about
5 ms, most of a request's latency. Everything those steps do at predict time is a
few arithmetic operations on arrays they learned in ``fit``, so ``compile_model``
reads those arrays once and replays the arithmetic (this module is hand-written
because it is the hot path):

- numeric: ``(x - mean) / scale``, NaN -> the imputer's median, missing-value
  indicators (StandardScaler then SimpleImputer);
- categorical and boolean: a dict from level text to the OrdinalEncoder's code,
  built by running the fitted encoder itself over every level it knows (so
  infrequent-level pooling is whatever scikit-learn decided); unseen or missing ->
  NaN, as ``handle_unknown="use_encoded_value"`` gives;
- datetime: calendar parts and days since the epoch (DateParts), standardized, NaN -> median;
- heads: ``linear`` is the one-hot layout then ``X @ coef.T + intercept`` (expit or
  softmax); ``random_forest``/``extra_trees`` walk every tree at once with numpy
  (no joblib threads); ``hist_gradient_boosting`` calls scikit-learn's own compiled
  tree predictors with one thread, skipping the DataFrame checks around them.

Anything else (another estimator, a pipeline layout this module does not know)
keeps the compiled features step and hands the head a DataFrame, scikit-learn's
own path; a features step of another shape sends the whole pipeline a DataFrame.
``CompiledModel.head_kind`` says which path is in use and ``fallback_reason`` why. A test holds the
compiled model to the saved pipeline within 1e-6 on every row of a test split,
for every family and task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from kubeloop.serving.schema import DateValue, RequestSchema

_NS_PER_DAY = 86_400 * 10**9


class CompileError(ValueError):
    """The pipeline has a shape this module does not compile (the caller falls back)."""


# --- features -------------------------------------------------------------------------


def _category_codes(encoder: Any) -> list[dict[str, float]]:
    """Level text -> code for every input column of a fitted OrdinalEncoder, by running it."""
    names = list(encoder.feature_names_in_)
    maps: list[dict[str, float]] = []
    for j, _name in enumerate(names):
        levels = [c for c in encoder.categories_[j] if isinstance(c, str)]
        if not levels:
            maps.append({})
            continue
        frame = {
            other: [encoder.categories_[k][0]] * len(levels) if k != j else levels
            for k, other in enumerate(names)
        }
        codes = np.asarray(encoder.transform(pd.DataFrame(frame, columns=names)))[:, j]
        maps.append({level: float(code) for level, code in zip(levels, codes, strict=True)})
    return maps


@dataclass
class _FeaturePlan:
    width: int
    names: list[str]
    num_idx: list[int]
    num_mean: np.ndarray | None
    num_scale: np.ndarray | None
    num_fill: np.ndarray
    num_indicator: list[int]
    cat_idx: list[int]
    cat_maps: list[dict[str, float]]
    dt_idx: list[int]
    dt_parts: list[list[str]]
    dt_fill: np.ndarray
    # Datetime parts are standardized before imputing; models saved before that have
    # no scale step (None: the parts go in raw, as they were trained).
    dt_mean: np.ndarray | None = None
    dt_scale: np.ndarray | None = None


def _compile_features(features: Any, schema: RequestSchema) -> _FeaturePlan:
    from sklearn.pipeline import Pipeline

    if not isinstance(features, Pipeline) or [n for n, _ in features.steps] != ["check", "columns", "float32"]:
        raise CompileError("the features step is not kubeloop's check/columns/float32 pipeline")
    check = features.named_steps["check"]
    columns = features.named_steps["columns"]
    position = {name: i for i, name in enumerate(schema.names)}
    missing = [c for c in check.columns if c not in position]
    if missing:
        raise CompileError(f"kubeloop.json lacks feature(s) {missing} the pipeline needs")
    plan = _FeaturePlan(0, [str(c) for c in features.get_feature_names_out()], [], None, None,
                        np.empty(0), [], [], [], [], [], np.empty(0))
    order = []
    for name, transformer, cols in columns.transformers_:
        if name == "remainder" or transformer == "drop" or not len(cols):
            continue
        cols = [str(c) for c in cols]
        order.append(name)
        if name == "num":
            scale, impute = transformer.named_steps["scale"], transformer.named_steps["impute"]
            plan.num_idx = [position[c] for c in cols]
            plan.num_mean = None if scale.mean_ is None else np.asarray(scale.mean_, dtype=np.float64)
            plan.num_scale = None if scale.scale_ is None else np.asarray(scale.scale_, dtype=np.float64)
            plan.num_fill = np.asarray(impute.statistics_, dtype=np.float64)
            plan.num_indicator = [] if impute.indicator_ is None else [int(i) for i in impute.indicator_.features_]
        elif name == "cat":
            plan.cat_idx = [position[c] for c in cols]
            plan.cat_maps = _category_codes(transformer)
        elif name == "dt":
            parts, impute = transformer.named_steps["parts"], transformer.named_steps["impute"]
            plan.dt_idx = [position[c] for c in cols]
            plan.dt_parts = [parts._parts(c) for c in cols]
            plan.dt_fill = np.asarray(impute.statistics_, dtype=np.float32)
            scale = transformer.named_steps.get("scale")
            if scale is not None:
                plan.dt_mean = None if scale.mean_ is None else np.asarray(scale.mean_, dtype=np.float32)
                plan.dt_scale = None if scale.scale_ is None else np.asarray(scale.scale_, dtype=np.float32)
        else:
            raise CompileError(f"unknown features block {name!r}")
    if order != sorted(order, key=["num", "cat", "dt"].index):
        raise CompileError(f"features blocks in an unexpected order: {order}")
    plan.width = (len(plan.num_idx) + len(plan.num_indicator) + len(plan.cat_idx)
                  + sum(len(p) for p in plan.dt_parts))
    if plan.width != len(plan.names):
        raise CompileError(f"compiled {plan.width} feature columns, the pipeline makes {len(plan.names)}")
    return plan


def _date_parts(value: DateValue | None, parts: list[str]) -> list[float]:
    if value is None:
        return [math.nan] * len(parts)
    when = value.when
    out = []
    for part in parts:
        if part == "year":
            out.append(when.year)
        elif part == "month":
            out.append(when.month)
        elif part == "day":
            out.append(when.day)
        elif part == "dayofweek":
            out.append(when.weekday())
        elif part == "hour":
            out.append(when.hour)
        else:  # days_since_epoch, as numpy divides an int64 count of nanoseconds
            out.append(float(value.ns) / _NS_PER_DAY)
    return out


def _transform(plan: _FeaturePlan, rows: list[list[Any]]) -> np.ndarray:
    n = len(rows)
    blocks = []
    if plan.num_idx:
        x = np.array([[row[i] for i in plan.num_idx] for row in rows], dtype=np.float64)
        missing = np.isnan(x)
        if plan.num_mean is not None:
            x -= plan.num_mean
        if plan.num_scale is not None:
            x /= plan.num_scale
        if missing.any():
            x = np.where(missing, plan.num_fill, x)
        blocks.append(x)
        if plan.num_indicator:
            blocks.append(missing[:, plan.num_indicator].astype(np.float64))
    if plan.cat_idx:
        blocks.append(np.array(
            [[m.get(row[i], math.nan) if row[i] is not None else math.nan
              for i, m in zip(plan.cat_idx, plan.cat_maps, strict=True)] for row in rows],
            dtype=np.float64,
        ))
    if plan.dt_idx:
        parts = np.array(
            [[v for i, p in zip(plan.dt_idx, plan.dt_parts, strict=True) for v in _date_parts(row[i], p)]
             for row in rows],
            dtype=np.float32,
        )
        # In float32, the parts' dtype, to which StandardScaler.transform casts its mean and
        # scale: the same roundings as the pipeline.
        if plan.dt_mean is not None:
            parts -= plan.dt_mean
        if plan.dt_scale is not None:
            parts /= plan.dt_scale
        blocks.append(np.where(np.isnan(parts), plan.dt_fill, parts))
    out = np.empty((n, plan.width), dtype=np.float32)
    start = 0
    for block in blocks:
        out[:, start : start + block.shape[1]] = block
        start += block.shape[1]
    return out


# --- heads --------------------------------------------------------------------------------


def _split_head(head: Any) -> tuple[Any | None, Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(head, Pipeline):
        if len(head.steps) != 2:
            raise CompileError("the model head has an unexpected number of steps")
        return head.steps[0][1], head.steps[1][1]
    return None, head


def _is_passthrough(transformer: Any) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    if isinstance(transformer, str):
        return transformer == "passthrough"
    # A fitted ColumnTransformer keeps a passthrough remainder as an identity function.
    return isinstance(transformer, FunctionTransformer) and transformer.func is None


def _prepare_plan(
    prep: Any, names: list[str]
) -> tuple[list[int], list[list[float] | None], list[int], float | None]:
    """The head's ColumnTransformer (fill categorical codes with -1, optionally one-hot
    them; pass the rest through) as (cat positions, one-hot levels or None, rest positions)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if not isinstance(prep, ColumnTransformer):
        raise CompileError("the head's first step is not a ColumnTransformer")
    position = {c: i for i, c in enumerate(names)}
    cat_pos: list[int] = []
    levels: list[list[float] | None] = []
    rest: list[int] = []
    fill_value = None
    for name, transformer, cols in prep.transformers_:
        if name == "remainder":
            if _is_passthrough(transformer):
                rest = [position[str(c)] if not isinstance(c, (int, np.integer)) else int(c) for c in cols]
            elif not (isinstance(transformer, str) and transformer == "drop") and len(cols):
                raise CompileError("the head's remainder is neither passthrough nor drop")
            continue
        if name != "cat":
            raise CompileError(f"unknown head block {name!r}")
        fill, onehot = (transformer, None)
        if isinstance(transformer, Pipeline):
            fill, onehot = transformer.steps[0][1], transformer.steps[1][1]
        if not isinstance(fill, SimpleImputer) or fill.strategy != "constant":
            raise CompileError("the head's categorical fill is not a constant SimpleImputer")
        fill_value = float(fill.fill_value)
        cat_pos = [position[str(c)] for c in cols]
        if onehot is not None:
            if not isinstance(onehot, OneHotEncoder) or onehot.drop_idx_ is not None or onehot.handle_unknown != "ignore":
                raise CompileError("the head's one-hot encoder has settings this module does not compile")
            if getattr(onehot, "_infrequent_enabled", False):
                raise CompileError("the head's one-hot encoder pools infrequent levels")
            levels = [list(map(float, c)) for c in onehot.categories_]
        else:
            levels = [None] * len(cat_pos)
    return cat_pos, levels, rest, fill_value


class _Prepared:
    """Replays the head's ColumnTransformer on the features output (float32)."""

    def __init__(self, prep: Any, names: list[str]):
        self.cat_pos, self.levels, self.rest, self.fill = _prepare_plan(prep, names)
        self.onehot = any(lv is not None for lv in self.levels)
        self.lookup = [None if lv is None else {v: k for k, v in enumerate(lv)} for lv in self.levels]
        self.width = (sum(len(lv) for lv in self.levels) if self.onehot else len(self.cat_pos)) + len(self.rest)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        cats = x[:, self.cat_pos].astype(np.float64)
        cats[np.isnan(cats)] = self.fill
        if not self.onehot:
            return np.hstack([cats, x[:, self.rest]]).astype(x.dtype)
        out = np.zeros((n, self.width), dtype=np.float64)
        offset = 0
        for j, table in enumerate(self.lookup):
            for r in range(n):
                k = table.get(float(cats[r, j]))
                if k is not None:
                    out[r, offset + k] = 1.0
            offset += len(self.levels[j])
        out[:, offset:] = x[:, self.rest]
        return out


class _Linear:
    kind = "linear"

    def __init__(self, model: Any, classification: bool):
        # A model fitted on float32 inputs keeps float32 coefficients (Ridge does) and
        # predicts in float32; the same dtype here keeps the same rounding.
        self.dtype = np.float32 if np.asarray(model.coef_).dtype == np.float32 else np.float64
        self.coef = np.asarray(model.coef_, dtype=self.dtype)
        self.intercept = np.asarray(model.intercept_, dtype=self.dtype)
        self.classification = classification
        self.binary = classification and len(model.classes_) <= 2

    def __call__(self, x: np.ndarray) -> np.ndarray:
        coef = self.coef.reshape(-1, x.shape[1])
        if self.dtype == np.float32:
            # float32 sums round at every step, so the order matters: scipy's sparse
            # product adds column after column from zero; do the same.
            xs = x.astype(np.float32)
            acc = np.zeros((x.shape[0], coef.shape[0]), dtype=np.float32)
            for j in range(x.shape[1]):
                acc += xs[:, j : j + 1] * coef[:, j]
            decision = acc + self.intercept
        else:
            decision = x.astype(np.float64) @ coef.T + self.intercept
        if not self.classification:
            return decision.reshape(-1).astype(np.float64)
        if self.binary:
            p = expit(decision.reshape(-1))
            return np.stack([1 - p, p], axis=1)
        return softmax(decision, axis=1)


class _Forest:
    """Every tree at once: one numpy step per tree level for all rows and trees."""

    kind = "forest"

    def __init__(self, model: Any, classification: bool):
        trees = [e.tree_ for e in model.estimators_]
        if any(t.n_outputs != 1 for t in trees):
            raise CompileError("multi-output forests are not compiled")
        sizes = np.array([t.node_count for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.roots = offsets.astype(np.intp)
        left = np.concatenate([t.children_left for t in trees]).astype(np.intp)
        right = np.concatenate([t.children_right for t in trees]).astype(np.intp)
        leaf = left == -1
        node_offsets = np.repeat(offsets, sizes)
        self.left = np.where(leaf, np.arange(len(left)), left + node_offsets)
        self.right = np.where(leaf, np.arange(len(left)), right + node_offsets)
        self.feature = np.where(leaf, 0, np.concatenate([t.feature for t in trees])).astype(np.intp)
        self.threshold = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        self.depth = int(max(t.max_depth for t in trees))
        self.classification = classification
        if classification:
            n_classes = int(model.n_classes_)
            self.value = np.concatenate([t.value[:, 0, :n_classes] for t in trees]).astype(np.float64)
        else:
            self.value = np.concatenate([t.value[:, 0, 0] for t in trees]).astype(np.float64)
        self.n_trees = len(trees)
        self.sklearn = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.isnan(x).any():
            # Trees may route missing values by a learned side; leave that to scikit-learn.
            return self._sklearn(x)
        x64 = x.astype(np.float32).astype(np.float64)  # the trees compare float32 inputs
        n = x.shape[0]
        rows = np.arange(n)[:, None]
        node = np.broadcast_to(self.roots, (n, self.n_trees)).copy()
        for _ in range(self.depth):
            go_left = x64[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        leaves = self.value[node]  # (n, trees[, classes])
        total = leaves[:, 0].copy()
        for t in range(1, self.n_trees):  # tree order, as scikit-learn accumulates
            total += leaves[:, t]
        return total / self.n_trees

    def _sklearn(self, x: np.ndarray) -> np.ndarray:
        if self.classification:
            return self.sklearn.predict_proba(x.astype(np.float32))
        return self.sklearn.predict(x.astype(np.float32))


class _HistGradientBoosting:
    """scikit-learn's compiled tree predictors, called directly with one thread.

    With categorical features the estimator keeps its own preprocessor: an
    OrdinalEncoder over the category codes (unknown -> NaN) and the numeric columns
    after them; replayed here with a dict per categorical column.
    """

    kind = "hist_gradient_boosting"

    def __init__(self, model: Any, classification: bool):
        prep = getattr(model, "_preprocessor", None)
        self.cat_pos: list[int] = []
        self.num_pos: list[int] = []
        self.tables: list[dict[float, float]] = []
        if prep is not None:
            mask = np.asarray(model.is_categorical_, dtype=bool)
            encoder = prep.named_transformers_["encoder"]
            if getattr(encoder, "_infrequent_enabled", False):
                raise CompileError("HistGradientBoosting's encoder pools infrequent levels")
            self.cat_pos = [int(i) for i in np.flatnonzero(mask)]
            self.num_pos = [int(i) for i in np.flatnonzero(~mask)]
            self.tables = [
                {float(v): float(k) for k, v in enumerate(cats) if not np.isnan(v)}
                for cats in encoder.categories_
            ]
            if len(self.tables) != len(self.cat_pos):
                raise CompileError("HistGradientBoosting's encoder does not match its categorical mask")
        self.model = model
        self.classification = classification
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
        self.k = int(model.n_trees_per_iteration_)
        known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        # Every tree's nodes in one table (leaves point at themselves), walked for all
        # rows and trees at once; decisions as in scikit-learn's _predictor.pyx.
        trees = [p for iteration in model._predictors for p in iteration]
        self.n_trees = len(trees)
        sizes = np.array([len(p.nodes) for p in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        nodes = np.concatenate([p.nodes for p in trees])
        node_offsets = np.repeat(offsets, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(len(nodes))
        self.roots = offsets
        self.left = np.where(leaf, own, nodes["left"].astype(np.intp) + node_offsets)
        self.right = np.where(leaf, own, nodes["right"].astype(np.intp) + node_offsets)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.is_cat = nodes["is_categorical"].astype(bool) & ~leaf
        self.value = nodes["value"].astype(np.float64)
        self.depth = int(max(int(p.nodes["depth"].max()) for p in trees)) if trees else 0
        self.has_cat = bool(self.is_cat.any())
        if self.has_cat:
            bit_offsets = np.concatenate([[0], np.cumsum([len(p.raw_left_cat_bitsets) for p in trees])[:-1]])
            self.raw_bits = np.concatenate([p.raw_left_cat_bitsets for p in trees]).astype(np.int64)
            self.bitset = nodes["bitset_idx"].astype(np.intp) + np.repeat(bit_offsets, sizes).astype(np.intp)
            self.known_bits = np.asarray(known, dtype=np.int64)
            self.f_idx_map = np.asarray(f_idx_map, dtype=np.intp)

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        if not self.tables:
            return np.asarray(x, dtype=np.float64)
        cats = np.array(
            [[table.get(float(v), math.nan) for v, table in zip(row, self.tables, strict=True)]
             for row in x[:, self.cat_pos]],
            dtype=np.float64,
        ).reshape(x.shape[0], len(self.cat_pos))
        return np.hstack([cats, x[:, self.num_pos].astype(np.float64)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        X = self._inputs(x)
        n = X.shape[0]
        rows = np.arange(n)[:, None]
        node = np.broadcast_to(self.roots, (n, self.n_trees)).copy()
        for _ in range(self.depth):
            value = X[rows, self.feature[node]]
            missing = np.isnan(value)
            go_left = value <= self.threshold[node]
            if self.has_cat:
                cat = self.is_cat[node]
                if cat.any():
                    code = np.where(missing | (value < 0), 0, value).astype(np.int64) & 255
                    word, bit = code >> 5, code & 31
                    in_left = (self.raw_bits[self.bitset[node], word] >> bit) & 1
                    known = (self.known_bits[self.f_idx_map[self.feature[node]], word] >> bit) & 1
                    cat_left = np.where(value < 0, self.missing_left[node],
                                        np.where(in_left == 1, True,
                                                 np.where(known == 1, False, self.missing_left[node])))
                    go_left = np.where(cat, cat_left, go_left)
            go_left = np.where(missing, self.missing_left[node], go_left)
            node = np.where(go_left, self.left[node], self.right[node])
        leaves = self.value[node]  # (n, trees): iteration-major, class-minor
        raw = np.empty((n, self.k), dtype=np.float64)
        raw[:] = self.baseline
        for t in range(self.n_trees):  # tree order, as scikit-learn adds them up
            raw[:, t % self.k] += leaves[:, t]
        if self.classification:
            return self.model._loss.predict_proba(raw)
        return self.model._loss.link.inverse(raw.ravel())


class _SklearnHead:
    """Fallback: scikit-learn's own predict on a DataFrame of the features output."""

    kind = "sklearn"

    def __init__(self, head: Any, names: list[str], classification: bool):
        self.head, self.names, self.classification = head, names, classification

    def __call__(self, x: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(x, columns=self.names)
        if self.classification:
            return self.head.predict_proba(frame)
        return np.asarray(self.head.predict(frame), dtype=np.float64)


def single_threaded(model: Any) -> None:
    """Forests predict one row on one thread: a joblib fan-out over 100 trees costs more
    than it saves for small batches (and oversubscribes the pod's cores)."""
    from sklearn.pipeline import Pipeline

    steps = model.steps if isinstance(model, Pipeline) else [(None, model)]
    for _, step in steps:
        if isinstance(step, Pipeline):
            single_threaded(step)
        elif hasattr(step, "n_jobs") and hasattr(step, "estimators_"):
            step.set_params(n_jobs=1)


def _compile_head(head: Any, names: list[str], classification: bool) -> tuple[Any, Any]:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    prep, model = _split_head(head)
    prepared = _Prepared(prep, names) if prep is not None else None
    if isinstance(model, (LogisticRegression, Ridge)):
        return prepared, _Linear(model, classification)
    if isinstance(model, (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)):
        return prepared, _Forest(model, classification)
    if isinstance(model, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)) and prep is None:
        return None, _HistGradientBoosting(model, classification)
    raise CompileError(f"no compiled path for {type(model).__name__}")


# --- the compiled model ------------------------------------------------------------------


class _SklearnPipeline:
    """Fallback for a whole pipeline this module cannot compile: a DataFrame of the
    checked rows through the saved pipeline, scikit-learn's own path end to end."""

    kind = "sklearn_pipeline"

    def __init__(self, pipeline: Any, schema: RequestSchema, classification: bool):
        self.pipeline, self.schema, self.classification = pipeline, schema, classification

    def frame(self, rows: list[list[Any]]) -> pd.DataFrame:
        def plain(value: Any) -> Any:
            return value.when if isinstance(value, DateValue) else value

        frame = pd.DataFrame([[plain(v) for v in row] for row in rows], columns=list(self.schema.names))
        for f in self.schema.features:
            if f.kind == "datetime":
                frame[f.name] = pd.to_datetime(frame[f.name])
            elif f.kind == "numeric":
                frame[f.name] = frame[f.name].astype(np.float64)
        return frame

    def __call__(self, rows: list[list[Any]]) -> np.ndarray:
        frame = self.frame(rows)
        if self.classification:
            return self.pipeline.predict_proba(frame)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)


class CompiledModel:
    """``predict(rows) -> (class indices or values, probabilities or None)`` on checked rows.

    ``head_kind`` names the path in use: ``linear``, ``forest``,
    ``hist_gradient_boosting`` (compiled), ``sklearn`` (compiled features, the
    head through scikit-learn) or ``sklearn_pipeline`` (nothing compiled);
    ``fallback_reason`` says why a fallback was taken.
    """

    def __init__(self, pipeline: Any, schema: RequestSchema, *, task: str, labels: list[Any] | None = None):
        from sklearn.pipeline import Pipeline

        if not isinstance(pipeline, Pipeline) or [n for n, _ in pipeline.steps] != ["features", "model"]:
            raise CompileError("the model is not kubeloop's features + model pipeline")
        single_threaded(pipeline)
        self.pipeline = pipeline
        self.classification = task == "classification"
        features, head = pipeline.named_steps["features"], pipeline.named_steps["model"]
        if self.classification:
            self.classes = list(getattr(head, "classes_", getattr(pipeline, "classes_", [])))
            if labels is not None and [str(c) for c in self.classes] != [str(c) for c in labels]:
                raise CompileError(f"the model's classes {self.classes} differ from kubeloop.json labels {labels}")
        else:
            self.classes = []
        self.whole: _SklearnPipeline | None = None
        self.prepare: Any = None
        self.fallback_reason: str | None = None
        try:
            self.plan = _compile_features(features, schema)
        except (CompileError, AttributeError, KeyError, TypeError, ValueError) as exc:
            self.fallback_reason = f"features step: {exc}"
            self.whole = _SklearnPipeline(pipeline, schema, self.classification)
            self.head: Any = self.whole
            return
        try:
            self.prepare, self.head = _compile_head(head, self.plan.names, self.classification)
        except (CompileError, AttributeError, KeyError, TypeError, ValueError) as exc:
            self.fallback_reason = str(exc)
            self.prepare, self.head = None, _SklearnHead(head, self.plan.names, self.classification)

    @property
    def head_kind(self) -> str:
        return self.head.kind

    def features(self, rows: list[list[Any]]) -> np.ndarray:
        """The features step's output (float32) for checked rows."""
        if self.whole is not None:
            return np.asarray(self.pipeline.named_steps["features"].transform(self.whole.frame(rows)),
                              dtype=np.float32)
        return _transform(self.plan, rows)

    def predict(self, rows: list[list[Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        if self.whole is not None:
            out = self.whole(rows)
        else:
            x = _transform(self.plan, rows)
            if self.prepare is not None:
                x = self.prepare(x)
            out = self.head(x)
        if not self.classification:
            return np.asarray(out, dtype=np.float64).reshape(-1), None
        proba = np.asarray(out, dtype=np.float64)
        return proba.argmax(axis=1), proba
