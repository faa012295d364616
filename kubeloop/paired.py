"""How much better one model is than another on the same rows, with its uncertainty.

Two models scored on the same test rows are compared *paired*: each bootstrap
replicate draws the rows once (with replacement, multinomial counts) and scores
both models on that same draw, so the noise the two share (which rows happen to
be easy) cancels and only the difference between the models is left. The result
for each metric is the improvement on all rows (positive is better, in the
metric's own direction from ``kubeloop.metric_names``), a percentile interval at
the requested confidence, and the rows it rests on.

When the rows come in groups that the split keeps together (several rows per
customer under ``id_column``), rows of one group are not independent draws, and
resampling rows would give an interval far too narrow. ``groups`` then makes it
a cluster bootstrap: each replicate draws whole groups with replacement, and a
row's weight is the number of times its group was drawn.

Every metric the gate can use is computed here for a whole block of replicates at
once as a weighted metric (the bootstrap counts are the weights): numpy matrix
products for the means and counts, and for ROC-AUC and PR-AUC one sort of the
scores shared by all replicates (see ``_Ranking``). A loop over 1000 replicates calling the
metric functions would cost 1000 sorts and Python calls per metric; this is the
hot part of the gate, so it is written by hand. With all weights 1 each metric
equals ``components.evaluate.score`` (the tests check it).

Classification inputs are class indices ``y`` and probabilities (n, k) in the
model's class order; regression inputs are targets and predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.errors import UserError
from kubeloop.metric_names import CLASSIFICATION_METRICS, REGRESSION_METRICS, higher_is_better

DEFAULT_CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 1000
# Rows the replicates are drawn from at most (see paired_bootstrap).
DEFAULT_MAX_ROWS = 20_000
# Replicates x rows held in memory per block (float64): 2M cells is 16 MB.
_BLOCK_CELLS = 2_000_000


class PairedError(UserError, ValueError):
    """The two sets of predictions cannot be compared; the message says why."""


@dataclass(frozen=True)
class PairedEstimate:
    """The improvement of the challenger over the reference on ``metric``.

    ``estimate``/``low``/``high`` are in the metric's own direction (positive:
    the challenger is better); ``challenger`` and ``reference`` are the metric's
    values on the same ``n_rows`` rows. None where the metric is undefined.
    """

    metric: str
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    n_rows: int
    challenger: float | None
    reference: float | None
    higher_is_better: bool
    n_bootstrap: int
    n_undefined: int = 0
    # Groups the replicates resampled (a cluster bootstrap); None: rows were resampled.
    n_groups: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def interval_text(self) -> str:
        if self.estimate is None:
            return f"{self.metric}: undefined on these {self.n_rows:,} rows"
        unit = "" if self.n_groups is None else f" resampled as {self.n_groups:,} groups"
        return (
            f"{self.estimate:+.4f} ({self.confidence:.0%} interval {self.low:+.4f} to "
            f"{self.high:+.4f}, {self.n_rows:,} rows{unit})"
        )


# --- weighted metrics: W is (replicates, n) -------------------------------------------------


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


class _Ranking:
    """One class's scores, sorted once; weighted ROC-AUC and average precision per replicate.

    The rows are split into positives and negatives, each sorted by score. For each
    positive the number of negatives (and positives) scored strictly below it, and
    the negatives tied with it, are fixed positions in those sorted lists, found
    once with ``searchsorted``. A replicate then needs only two cumulative sums of
    its weights and gathers at those positions: no sort, no grouping per replicate.
    """

    def __init__(self, hit: np.ndarray, score: np.ndarray) -> None:
        pos, neg = np.flatnonzero(hit), np.flatnonzero(~hit)
        self.pos = pos[np.argsort(score[pos], kind="mergesort")]
        self.neg = neg[np.argsort(score[neg], kind="mergesort")]
        sp, sn = score[self.pos], score[self.neg]
        # Positions into the cumulative sums with a leading 0: "how many strictly below".
        self.neg_below = np.searchsorted(sn, sp, side="left")
        self.neg_upto = np.searchsorted(sn, sp, side="right")
        self.pos_below = np.searchsorted(sp, sp, side="left")

    @staticmethod
    def _cumulative(w: np.ndarray) -> np.ndarray:
        out = np.zeros((w.shape[0], w.shape[1] + 1))
        np.cumsum(w, axis=1, out=out[:, 1:])
        return out

    def scores(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # np.take rather than W[:, idx]: the same gather, about 2.5x faster.
        wp, wn = np.take(W, self.pos, axis=1), np.take(W, self.neg, axis=1)
        cp, cn = self._cumulative(wp), self._cumulative(wn)
        n_pos, n_neg = cp[:, -1], cn[:, -1]
        below = np.take(cn, self.neg_below, axis=1)
        tied = np.take(cn, self.neg_upto, axis=1) - below
        # ROC-AUC as Mann-Whitney: each positive beats the negatives scored below it,
        # ties count half (the trapezoid of roc_curve's points).
        auc = _div(np.einsum("ij,ij->i", wp, below + 0.5 * tied), n_pos * n_neg)
        # Average precision: at each positive's score, the precision of "score >= it"
        # (tied rows included), weighted by that positive.
        tp = n_pos[:, None] - np.take(cp, self.pos_below, axis=1)
        fp = n_neg[:, None] - below
        ap = _div(np.einsum("ij,ij->i", wp, tp / np.maximum(tp + fp, 1e-300)), n_pos)
        return auc, ap


class _Classification:
    def __init__(self, y: np.ndarray, proba: np.ndarray, positive: int | None, bins: int) -> None:
        n, k = proba.shape
        self.k, self.positive, self.bins = k, positive, bins
        rows = np.arange(n)
        pred = proba.argmax(axis=1)
        self.correct = (pred == y).astype(np.float64)
        eps = np.finfo(np.float64).eps
        self.loss = -np.log(np.clip(proba[rows, y], eps, 1.0 - eps))
        if positive is not None:
            truth, said = y == positive, pred == positive
            self.tp = (truth & said).astype(np.float64)
            self.fp = (~truth & said).astype(np.float64)
            self.fn = (truth & ~said).astype(np.float64)
            score = proba[:, positive]
            self.brier = (score - truth) ** 2
            confidence, outcome = score, truth.astype(np.float64)
            self.rankings = [_Ranking(truth, score)]
        else:
            self.y1 = np.eye(k)[y]
            self.p1 = np.eye(k)[pred]
            self.brier = (proba**2).sum(axis=1) - 2.0 * proba[rows, y] + 1.0
            confidence, outcome = proba[rows, pred], self.correct
            self.rankings = [_Ranking(y == c, proba[:, c]) for c in range(k)]
        edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        onehot = np.eye(bins)[np.searchsorted(edges, confidence, side="right")]
        self.cal_gap = onehot * (outcome - confidence)[:, None]  # (n, bins)

    def metrics(self, W: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        total = W.sum(axis=1)
        out: dict[str, np.ndarray] = {}
        wanted = set(names)
        if "accuracy" in wanted:
            out["accuracy"] = _div(W @ self.correct, total)
        if "log_loss" in wanted:
            out["log_loss"] = _div(W @ self.loss, total)
        if "brier_score" in wanted:
            out["brier_score"] = _div(W @ self.brier, total)
        if "calibration_error" in wanted:
            out["calibration_error"] = _div(np.abs(W @ self.cal_gap).sum(axis=1), total)
        if wanted & {"precision", "recall", "f1"}:
            if self.positive is not None:
                tp, fp, fn = W @ self.tp, W @ self.fp, W @ self.fn
                out["precision"] = _div(tp, tp + fp)
                out["recall"] = _div(tp, tp + fn)
                out["f1"] = _div(2 * tp, 2 * tp + fp + fn)
            else:
                truth, said = W @ self.y1, W @ self.p1
                tp = W @ (self.y1 * self.p1)
                with np.errstate(invalid="ignore"):
                    out["precision"] = _nanmean(_div(tp, said))
                    out["recall"] = _nanmean(_div(tp, truth))
                    out["f1"] = _nanmean(_div(2 * tp, said + truth))
        if wanted & {"roc_auc", "pr_auc"}:
            pairs = [r.scores(W) for r in self.rankings]
            if self.positive is not None:
                out["roc_auc"], out["pr_auc"] = pairs[0]
            else:
                counts = np.stack([W @ r_hit for r_hit in self.y1.T], axis=1)  # (c, k)
                present = counts > 0
                aucs = np.stack([a for a, _ in pairs], axis=1)
                aps = np.stack([p for _, p in pairs], axis=1)
                weighted = np.where(present, np.nan_to_num(aucs) * counts, 0.0).sum(axis=1)
                out["roc_auc"] = np.where(present.sum(axis=1) >= 2, _div(weighted, total), np.nan)
                out["pr_auc"] = _nanmean(np.where(present, aps, np.nan))
        return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(values)
    count = defined.sum(axis=1)
    return _div(np.where(defined, values, 0.0).sum(axis=1), count.astype(np.float64))


class _Regression:
    def __init__(self, y: np.ndarray, pred: np.ndarray) -> None:
        err = pred - y
        self.abs_err, self.sq_err = np.abs(err), err * err
        # Centred on the mean so the weighted total sum of squares keeps its precision.
        self.yc = y - y.mean()

    def metrics(self, W: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        total = W.sum(axis=1)
        out: dict[str, np.ndarray] = {}
        sse = W @ self.sq_err
        out["mae"] = _div(W @ self.abs_err, total)
        out["rmse"] = np.sqrt(_div(sse, total))
        sst = W @ (self.yc**2) - _div((W @ self.yc) ** 2, total)
        scale = W @ (self.yc**2)
        defined = sst > 1e-12 * np.maximum(scale, 1e-300)
        out["r2"] = np.where(defined, 1.0 - _div(sse, np.where(defined, sst, 1.0)), np.nan)
        return {name: out[name] for name in names if name in out}


def _scorer(task: str, y: np.ndarray, output: np.ndarray, positive: int | None, bins: int) -> Any:
    if task == "classification":
        return _Classification(y, output, positive, bins)
    return _Regression(y, output)


def weighted_metrics(
    task: str,
    y: Any,
    output: Any,
    metrics: list[str],
    weights: Any = None,
    *,
    positive: int | None = None,
    bins: int = 10,
) -> dict[str, np.ndarray]:
    """Each metric under each row of ``weights`` (replicates, n); all ones when None."""
    y_arr, out = _check(task, y, output, None)
    W = np.ones((1, y_arr.size)) if weights is None else np.atleast_2d(np.asarray(weights, float))
    return _scorer(task, y_arr, out, positive, bins).metrics(W, list(metrics))


# --- the paired bootstrap ------------------------------------------------------------------


def _check(task: str, y: Any, a: Any, b: Any) -> tuple[np.ndarray, ...]:
    if task not in ("classification", "regression"):
        raise PairedError(f"task must be 'classification' or 'regression', got {task!r}")
    arrays = [np.asarray(y)] + [np.asarray(x, dtype=np.float64) for x in (a, b) if x is not None]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    for x in arrays[1:]:
        if x.shape[0] != n:
            raise PairedError(f"the predictions cover {x.shape[0]} rows but there are {n} labels")
        if not np.isfinite(x).all():
            raise PairedError("predictions hold NaN or infinite values")
    if task == "classification":
        arrays[0] = arrays[0].astype(np.int64)
        for x in arrays[1:]:
            if x.ndim != 2:
                raise PairedError("classification needs probabilities of shape (rows, classes)")
    else:
        arrays[0] = arrays[0].astype(np.float64)
        arrays[1:] = [x.reshape(-1) for x in arrays[1:]]
    return tuple(arrays)


def resample_counts(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """Multinomial bootstrap counts (replicates, n): each row of draws, counted."""
    draws = rng.integers(0, n, size=(replicates, n)) + (np.arange(replicates) * n)[:, None]
    return (
        np.bincount(draws.ravel(), minlength=replicates * n)
        .reshape(replicates, n)
        .astype(np.float64)
    )


def group_index(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """(group number of each row, number of groups) of the labels in ``groups``;
    a missing label is a group of its own row (nothing ties it to another)."""
    labels = pd.Series(np.asarray(groups, dtype=object) if not isinstance(groups, pd.Series) else groups)
    if len(labels) != n:
        raise PairedError(f"the groups cover {len(labels)} rows but there are {n} labels")
    codes, uniques = pd.factorize(labels, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    lone = codes < 0
    if lone.any():
        codes[lone] = len(uniques) + np.arange(int(lone.sum()))
    return codes, int(codes.max()) + 1 if n else 0


def _signed_delta(metric: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a - b if higher_is_better(metric) else b - a


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def paired_bootstrap(
    task: str,
    y: Any,
    challenger: Any,
    reference: Any,
    metrics: list[str],
    *,
    positive: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    bins: int = 10,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    groups: Any = None,
) -> dict[str, PairedEstimate]:
    """The challenger's improvement over the reference on each of ``metrics``.

    ``challenger`` and ``reference`` are the two models' outputs on the same rows
    (probabilities for classification, predictions for regression). The interval
    is the central ``confidence`` percentile interval of the paired bootstrap
    (``n_bootstrap`` replicates, seeded). Replicates where a metric is undefined
    (e.g. ROC-AUC on a draw with one class) are left out of its interval and counted
    in ``n_undefined``.

    Above ``max_rows`` rows the replicates are drawn from a seeded sample of
    ``max_rows`` rows and their spread is scaled by sqrt(max_rows / n) around the
    estimate on all rows (the m-out-of-n bootstrap: the metrics here are smooth
    averages, whose spread shrinks as 1/sqrt(rows)). The cost stays bounded, and
    with that many rows the interval is already far narrower than any useful
    ``min_improvement``.

    ``groups`` (one label per row, e.g. the id column): a cluster bootstrap that
    draws whole groups (module docstring); above ``max_rows`` rows, a seeded
    sample of the groups holding about that many rows, scaled by
    sqrt(sampled groups / groups) in the same way.
    """
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise PairedError(f"cannot compare on {unknown}: {task} metrics are {list(known)}")
    if not 0 < confidence < 1:
        raise PairedError(f"confidence must be between 0 and 1, got {confidence}")
    if n_bootstrap < 1:
        raise PairedError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    y_arr, a, b = _check(task, y, challenger, reference)
    if task == "classification" and a.shape != b.shape:
        raise PairedError(f"probabilities of shapes {a.shape} and {b.shape} cannot be paired")
    n = y_arr.size
    names = list(dict.fromkeys(metrics))
    if n == 0:
        return {
            m: PairedEstimate(
                m, None, None, None, confidence, 0, None, None, higher_is_better(m), 0
            )
            for m in names
        }
    sa, sb = _scorer(task, y_arr, a, positive, bins), _scorer(task, y_arr, b, positive, bins)
    ones = np.ones((1, n))
    full_a, full_b = sa.metrics(ones, names), sb.metrics(ones, names)

    rng = np.random.default_rng(seed)
    gidx, n_groups = (None, None) if groups is None else group_index(groups, n)
    m_rows, scale, centre = n, 1.0, None
    if max_rows is not None and n > max_rows:
        if gidx is None:
            sample = np.sort(rng.choice(n, size=max_rows, replace=False))
            scale = float(np.sqrt(max_rows / n))
        else:
            k = max(2, min(n_groups, int(np.ceil(n_groups * max_rows / n))))
            chosen = np.zeros(n_groups, dtype=bool)
            chosen[rng.choice(n_groups, size=k, replace=False)] = True
            sample = np.flatnonzero(chosen[gidx])
            _, gidx = np.unique(gidx[sample], return_inverse=True)
            scale = float(np.sqrt(k / n_groups))
        y_s = y_arr[sample]
        sa = _scorer(task, y_s, a[sample], positive, bins)
        sb = _scorer(task, y_s, b[sample], positive, bins)
        ones_s = np.ones((1, sample.size))
        sub_a, sub_b = sa.metrics(ones_s, names), sb.metrics(ones_s, names)
        centre = {m: _signed_delta(m, sub_a[m], sub_b[m])[0] for m in names}
        m_rows = int(sample.size)
    m_groups = None if gidx is None else int(gidx.max()) + 1
    block = max(1, min(n_bootstrap, _BLOCK_CELLS // max(m_rows, 1)))
    deltas: dict[str, list[np.ndarray]] = {m: [] for m in names}
    done = 0
    from threadpoolctl import threadpool_limits

    # The products here are matrix-vector ones, bound by memory, not arithmetic: BLAS
    # threads only contend (10x slower on a busy 2-core machine than one thread).
    with threadpool_limits(limits=1, user_api="blas"):
        while done < n_bootstrap:
            size = min(block, n_bootstrap - done)
            if gidx is None:
                W = resample_counts(rng, size, m_rows)
            else:  # whole groups: each row weighs as often as its group was drawn
                W = np.take(resample_counts(rng, size, m_groups), gidx, axis=1)
            ra, rb = sa.metrics(W, names), sb.metrics(W, names)
            for m in names:
                sign = 1.0 if higher_is_better(m) else -1.0
                deltas[m].append(sign * (ra[m] - rb[m]))
            done += size

    result = {}
    tail = (1.0 - confidence) / 2.0
    for m in names:
        d = np.concatenate(deltas[m])
        defined = d[~np.isnan(d)]
        va, vb = _value(full_a[m][0]), _value(full_b[m][0])
        estimate = (
            None if va is None or vb is None else (va - vb if higher_is_better(m) else vb - va)
        )
        low = high = None
        # One group is one draw: no spread to estimate from, so no interval.
        if estimate is not None and defined.size and (n_groups is None or n_groups >= 2):
            q_low, q_high = (float(q) for q in np.quantile(defined, [tail, 1.0 - tail]))
            if centre is None:
                low, high = q_low, q_high
            elif not np.isnan(centre[m]):
                low = estimate + scale * (q_low - centre[m])
                high = estimate + scale * (q_high - centre[m])
        result[m] = PairedEstimate(
            metric=m,
            estimate=estimate,
            low=low,
            high=high,
            confidence=confidence,
            n_rows=int(n),
            challenger=va,
            reference=vb,
            higher_is_better=higher_is_better(m),
            n_bootstrap=int(n_bootstrap),
            n_undefined=int(d.size - defined.size),
            n_groups=n_groups,
        )
    return result
