"""The learning-curve check: does the winner still gain from more rows?

The chosen settings are refitted on a seeded half of the training sample (the same
stratification or id groups) and both fits are scored on the whole validation
split. The rule: more rows would likely help when the full sample beats the half
beyond validation noise, i.e. when the lower end of the paired bootstrap's 95 %
interval of the improvement (``kubeloop.paired``, the same judgement as "within
noise of the baseline") is above 0, and by a gain worth having: at least
``MIN_RELATIVE_GAIN`` of the half sample's score (on a large validation split a
gain of a thousandth is already beyond noise). A score that stops rising between
half and all of the sample is taken as flat: doubling again is unlikely to add more.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kubeloop.components.features import categorical_output_columns
from kubeloop.components.train.base import (
    _fmt,
    _plain,
    _short,
)
from kubeloop.components.train.baseline import (
    NOISE_CONFIDENCE,
    paired_improvement,
)
from kubeloop.components.train.families import (
    make_head,
)
from kubeloop.components.train.sample import (
    _rows,
    sample_rows,
)
from kubeloop.components.train.scoring import score
from kubeloop.components.train.search import CandidateResult, _fit

MORE_ROWS = "more rows would likely help (raise train.max_rows)"
MORE_DATA = "more rows would likely help (every training row was used: collect more data)"
LARGE_ENOUGH = "the sample is large enough"
UNDEFINED = "the learning curve could not be measured"

# Below this many rows in the half sample the check says nothing useful (and a
# tree family's early stopping cannot hold out a validation fraction).
MIN_HALF_ROWS = 50
# Half a percent of the score: on ROC-AUC 0.80, a gain of 0.004 from doubling the rows.
MIN_RELATIVE_GAIN = 0.005


def curve_verdict(
    low: float | None, improvement: float | None, half_score: float | None, *, capped: bool
) -> str:
    """The rule above: ``improvement`` is the full sample's gain over the half in the
    metric's better direction, ``low`` its interval's lower end, ``half_score`` the
    half's score; ``capped`` says the sample left training rows out (so raising
    ``train.max_rows`` can add rows)."""
    if low is None or improvement is None or half_score is None:
        return UNDEFINED
    if low > 0.0 and improvement >= MIN_RELATIVE_GAIN * abs(half_score):
        return MORE_ROWS if capped else MORE_DATA
    return LARGE_ENOUGH


def learning_curve(
    result: CandidateResult,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    *,
    positive_label: Any = None,
    seed: int = 0,
    groups: Any = None,
    capped: bool = False,
) -> dict[str, Any]:
    """The candidate's validation score at half and all of its training sample, the
    improvement's interval and the verdict (``curve_verdict``)."""
    task, metric = result.task, result.metric
    classification = task == "classification"
    half_rows = len(X_train) // 2
    record: dict[str, Any] = {"metric": metric, "n_rows": len(X_train), "n_half_rows": half_rows,
                              "full_score": result.valid_score, "capped": capped}
    if half_rows < MIN_HALF_ROWS:
        return _plain({**record, "verdict": UNDEFINED,
                       "error": f"the sample has fewer than {2 * MIN_HALF_ROWS} rows"})
    try:
        positions = sample_rows(y_train, half_rows, classification=classification, seed=seed + 1,
                                groups=groups)
        X_h, y_h = _rows(X_train, y_train, positions)
        head = make_head(result.family, task, categorical_output_columns(X_train.columns),
                         result.params, seed)
        _fit(head, X_h, y_h)
        labels = list(np.unique(y_train)) if classification else []
        record["half_score"] = score(metric, head, X_valid, y_valid, task=task,
                                     labels=labels or None, positive_label=positive_label)
        estimate = paired_improvement(result.estimator, head, X_valid, y_valid, labels, task=task,
                                      metric=metric, positive_label=positive_label, seed=seed)
    except Exception as exc:  # the candidate stands; only the check is missing
        return _plain({**record, "verdict": UNDEFINED, "error": _short(exc)})
    record.update(n_half_rows=len(X_h), improvement=estimate.estimate, low=estimate.low,
                  high=estimate.high, confidence=NOISE_CONFIDENCE,
                  verdict=curve_verdict(estimate.low, estimate.estimate, record["half_score"],
                                        capped=capped))
    return _plain(record)


def curve_note(record: dict[str, Any]) -> str | None:
    """One line for the leaderboard, the model card and the run summary."""
    curve = record.get("learning_curve") or {}
    if not curve.get("verdict"):
        return None
    if curve.get("half_score") is None:
        return f"learning curve: {curve['verdict']} ({curve.get('error', 'no score')})"
    return (
        f"learning curve: {curve['verdict']}: {curve['metric']} {_fmt(curve['half_score'])} on "
        f"{curve['n_half_rows']:,} rows, {_fmt(curve.get('full_score'))} on {curve['n_rows']:,} "
        f"(improvement {_fmt_or_na(curve.get('improvement'))}, {curve['confidence']:.0%} interval "
        f"{_fmt_or_na(curve.get('low'))} to {_fmt_or_na(curve.get('high'))})"
    )


def _fmt_or_na(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.4f}"
