"""Picking the best family and composing the one served model."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from kubeloop.components.train.base import (
    BASELINE,
    FAMILIES,
    TrainError,
    _plain,
    _usable_score,
)
from kubeloop.components.train.families import (
    _final_estimator,
)
from kubeloop.components.train.search import CandidateResult
from kubeloop.metric_names import higher_is_better


def candidate_to_dict(result: CandidateResult) -> dict[str, Any]:
    """Everything about a candidate but the fitted model, JSON-able (NaN as None)."""
    return _plain(
        {
            "family": result.family,
            "task": result.task,
            "metric": result.metric,
            "valid_score": result.valid_score,
            "params": result.params,
            "fit_seconds": result.fit_seconds,
            "search_seconds": result.search_seconds,
            "n_train_rows": result.n_train_rows,
            "n_valid_rows": result.n_valid_rows,
            "n_search_rows": result.n_search_rows,
            "n_search_valid_rows": result.n_search_valid_rows,
            "search": result.search,
            "warnings": result.warnings,
        }
    )


def select_best(results: list[dict[str, Any]], metric: str) -> int:
    """Index of the best non-baseline candidate by ``valid_score`` in the metric's
    direction. Ties (equal to 12 decimals) go to the earlier family in ``FAMILIES``,
    then to the shorter fit; a missing or NaN score never wins."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    ranked: list[tuple[float, int, float, int]] = []
    skipped: list[str] = []
    for index, result in enumerate(results):
        family = result.get("family")
        if family == BASELINE:
            continue
        scored_with = result.get("metric", metric)
        if scored_with != metric:
            raise TrainError(
                f"candidate {index} ({family}) was scored with {scored_with!r}, not "
                f"{metric!r}; every candidate must be scored with the selection metric"
            )
        value = _usable_score(result.get("valid_score"))
        if value is None:
            reason = result.get("error") or f"score {result.get('valid_score')!r}"
            skipped.append(f"{family}: {reason}")
            continue
        order = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
        seconds = _usable_score(result.get("fit_seconds"))
        ranked.append(
            (-sign * round(value, 12), order, math.inf if seconds is None else seconds, index)
        )
    if not ranked:
        detail = f" (unusable: {'; '.join(skipped)})" if skipped else ""
        raise TrainError(
            f"no model family produced a usable {metric} score{detail}; check the "
            "families' errors and that the validation split holds every class"
        )
    return min(ranked)[3]


def _check_fitted(step: Any, what: str) -> None:
    # A Pipeline counts as fitted when its last step is, and a stateless last step
    # (the features step's float32 cast) always is: check every step.
    parts = [s for _, s in step.steps] if isinstance(step, Pipeline) else [step]
    try:
        for part in parts:
            if part is not None and not (isinstance(part, str) and part == "passthrough"):
                check_is_fitted(part)
    except (NotFittedError, TypeError) as exc:
        raise TrainError(f"the {what} must be fitted before composing the model: {exc}") from None


def compose_model(feature_transformer: Any, head: Any) -> Pipeline:
    """The served model: the fitted features step then the fitted head, not refitted."""
    _check_fitted(feature_transformer, "features step")
    _check_fitted(head, "model")
    expected = getattr(_final_estimator(head), "feature_names_in_", None)
    if isinstance(head, Pipeline):
        expected = getattr(head, "feature_names_in_", expected)
    if expected is not None and hasattr(feature_transformer, "get_feature_names_out"):
        produced = [str(c) for c in feature_transformer.get_feature_names_out()]
        wanted = [str(c) for c in expected]
        if produced != wanted:
            missing = [c for c in wanted if c not in set(produced)]
            raise TrainError(
                "the model was trained on other columns than the features step produces "
                f"(model needs {missing or wanted[:10]}); train on this features step's output"
            )
    return Pipeline([("features", feature_transformer), ("model", head)])


def leaderboard(results: Iterable[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Candidates (dicts) best first, for the reports; unusable scores last. Ties are
    ordered as ``select_best`` breaks them, so the chosen family ranks first."""
    items = list(results)
    sign = 1.0 if higher_is_better(metric) else -1.0

    def key(item: dict[str, Any]) -> tuple[int, float, int, float]:
        value = _usable_score(item.get("valid_score"))
        if value is None:
            return (1, 0.0, 0, 0.0)
        family = item.get("family")
        order = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
        seconds = _usable_score(item.get("fit_seconds"))
        return (0, -sign * round(value, 12), order, math.inf if seconds is None else seconds)

    return sorted(items, key=key)
