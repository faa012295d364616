"""One family's random search and the refit of its winner."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.components.features import categorical_output_columns
from kubeloop.components.train.base import (
    _MAX_MESSAGE_CHARS,
    _MAX_WARNINGS,
    TrainError,
    _check_family,
    _check_metric,
    _check_task,
    _plain,
    _short,
)
from kubeloop.components.train.families import (
    make_head,
    search_settings,
)
from kubeloop.components.train.inputs import _check_inputs
from kubeloop.components.train.sample import (
    _rows,
    subsample_rows,
)
from kubeloop.components.train.scoring import _threads, score
from kubeloop.config import TrainConfig
from kubeloop.metric_names import higher_is_better


@dataclass
class CandidateResult:
    """One family's tuned, fitted head and how it got there.

    ``search`` lists every setting tried: ``{"params", "score", "fit_seconds"}`` plus
    ``"error"`` for a setting that failed and ``"warnings"`` when the fit warned.
    ``fit_seconds`` is the final fit on all of ``X_train`` (the training sample).
    """

    family: str
    params: dict[str, Any]
    estimator: Any
    valid_score: float
    metric: str
    search: list[dict[str, Any]]
    fit_seconds: float
    n_train_rows: int
    task: str = ""
    n_valid_rows: int = 0
    n_search_rows: int = 0
    n_search_valid_rows: int = 0
    search_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _fit(head: Any, X: pd.DataFrame, y: np.ndarray) -> tuple[float, list[str]]:
    """Fit ``head``; its seconds and the distinct warnings it raised (kept for the
    report rather than printed)."""
    with _threads(X), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        head.fit(X, y)
        seconds = time.perf_counter() - start
    messages: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}"
        text = text[:_MAX_MESSAGE_CHARS]
        if text not in messages:
            messages.append(text)
    return seconds, messages[:_MAX_WARNINGS]


def _improves(metric: str, new: float, old: float) -> bool:
    """Strictly better, so that on a tie the earlier setting (the defaults) stays."""
    if not math.isfinite(new):
        return False
    if not math.isfinite(old):
        return True
    return new > old if higher_is_better(metric) else new < old


def search_family(
    family: str,
    X_train: pd.DataFrame,
    y_train: Any,
    X_valid: pd.DataFrame,
    y_valid: Any,
    *,
    task: str,
    metric: str,
    cfg: TrainConfig,
    positive_label: Any = None,
    space: dict[str, Any] | None = None,
) -> CandidateResult:
    """Random search for one family, then the winner refitted on all of ``X_train``.

    The first setting is the family's defaults, and a later one wins only with a
    strictly better search score, so the search never does worse than the defaults
    on validation. ``space`` replaces the family's search distributions. A setting
    that raises is recorded with its error and skipped; ``TrainError`` when all do.
    """
    _check_family(family)
    _check_task(task)
    _check_metric(metric, task)
    X_train, y_tr, X_valid, y_va = _check_inputs(X_train, y_train, X_valid, y_valid, task)
    classification = task == "classification"
    cats = categorical_output_columns(X_train.columns)
    # Every training label, so a subsample that misses a rare class still scores
    # (and is penalized) on it.
    labels = list(np.unique(y_tr)) if classification else None

    train_rows = subsample_rows(y_tr, cfg.search_max_rows, stratify=classification, seed=cfg.seed)
    valid_rows = subsample_rows(
        y_va, cfg.search_valid_max_rows, stratify=classification, seed=cfg.seed
    )
    X_s, y_s = _rows(X_train, y_tr, train_rows)
    X_sv, y_sv = _rows(X_valid, y_va, valid_rows)

    settings = search_settings(family, task, cfg.search_iterations, cfg.seed, space)
    search: list[dict[str, Any]] = []
    best: int | None = None
    best_head: Any = None
    started = time.perf_counter()
    for index, params in enumerate(settings):
        entry: dict[str, Any] = {"params": _plain(params), "score": None, "fit_seconds": None}
        try:
            head = make_head(family, task, cats, params, cfg.seed)
            seconds, caught = _fit(head, X_s, y_s)
            entry["fit_seconds"] = seconds
            if caught:
                entry["warnings"] = caught
            entry["score"] = score(
                metric, head, X_sv, y_sv, task=task, labels=labels, positive_label=positive_label
            )
        except Exception as exc:  # any failure of one setting must not end the search
            entry["error"] = _short(exc)
            search.append(entry)
            continue
        search.append(entry)
        if best is None or _improves(metric, entry["score"], search[best]["score"]):
            best = index
            # With no subsample the search model is the final model: keep it.
            best_head = head if train_rows is None else None
    search_seconds = time.perf_counter() - started

    if best is None:
        first = next(e["error"] for e in search if "error" in e)
        raise TrainError(
            f"{family}: all {len(search)} settings failed; the first error: {first}"
        )

    params = settings[best]
    if best_head is not None:
        head, fit_seconds = best_head, search[best]["fit_seconds"]
        refit_warnings = search[best].get("warnings", [])
    else:
        head = make_head(family, task, cats, params, cfg.seed)
        try:
            fit_seconds, refit_warnings = _fit(head, X_train, y_tr)
        except Exception as exc:
            raise TrainError(
                f"{family}: refitting the best settings {_plain(params)} on all "
                f"{len(X_train)} training rows failed: {_short(exc)}"
            ) from exc
    if valid_rows is None and best_head is not None:
        valid_score = search[best]["score"]
    else:
        valid_score = score(
            metric, head, X_valid, y_va, task=task, labels=labels, positive_label=positive_label
        )
    return CandidateResult(
        family=family,
        params=_plain(params),
        estimator=head,
        valid_score=float(valid_score),
        metric=metric,
        search=search,
        fit_seconds=float(fit_seconds),
        n_train_rows=len(X_train),
        task=task,
        n_valid_rows=len(X_valid),
        n_search_rows=len(X_s),
        n_search_valid_rows=len(X_sv),
        search_seconds=search_seconds,
        warnings=list(refit_warnings),
    )
