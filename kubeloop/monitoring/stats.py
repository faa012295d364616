"""Drift statistics, computed from per-column sufficient statistics.

The current data is never held whole. Each column has an accumulator that takes
batches and keeps only what the statistics need:

- numeric: the reference profile gives ``k`` sorted support points ``u`` with
  weights (the whole reference when it is small enough, else quantile points).
  For every current value the accumulator records which gap or point of ``u`` it
  falls in (``2k + 1`` cells) and the sum of the values per cell. From that:
  * the two-sample Kolmogorov-Smirnov statistic is EXACT against the reference
    points: both CDFs are known at every point and at every left limit, and the
    largest gap of two step functions is at one of those places;
  * the PSI on the reference's quantile bins is exact (bin edges are points);
  * the Wasserstein-1 distance is exact wherever the two CDFs do not cross inside
    one gap (the current mass in a gap is represented by its mean, which
    reproduces the integral of its CDF there); where they cross, the error is at
    most the current mass in that gap times its width, and that bound is reported.
  When the profile holds quantile points rather than the whole reference, its
  CDF is within 1/points of the reference's, so KS is within that of the
  full-data value. A data reference small enough to keep whole keeps its sorted
  values too, the accumulator then keeps the current ones, and KS is that of all
  the values (``ks_exact_sorted``), as scipy's ``ks_2samp`` computes it.
- categorical: counts per category.

The verdict of a run (``compare``) corrects for its many tests: each column's
p-values join one Benjamini-Hochberg family at ``false_alarm_rate``, so with no
drift at most that share of runs flags anything, however many columns.

This is the hot path of a drift run (every value of every numeric column goes
through it), so it is written by hand in vectorised numpy: one ``searchsorted``
and two ``bincount`` per column and batch, memory bounded by the number of
reference points whatever the size of the current data. No library keeps a
streaming two-sample KS against a fixed reference; a sort-based one would need
the whole current column in memory.

p-values come from scipy itself (``kstwo``, ``chi2_contingency``), with the same
rules scipy's ``ks_2samp`` uses to choose between its exact and asymptotic
methods; when both samples are small (scipy's exact regime) the accumulator has
kept the current values and scipy's ``ks_2samp`` is called on them directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# scipy.stats.ks_2samp computes exact p-values up to this sample size ("auto").
SCIPY_EXACT_MAX_N = 10_000
# In-memory keys of a data reference's entry (never in a stored profile): every
# value of the column, sorted, and how many current values to keep for exact KS.
SORTED_VALUES = "_sorted"
KEEP_CURRENT = "_keep_current"
# Proportions are floored at this value in PSI (an empty bin would make it infinite).
PSI_EPSILON = 1e-4


# --------------------------------------------------------------------------- accumulators


class NumericAccumulator:
    """Sufficient statistics of one numeric column against reference points."""

    def __init__(self, points: Any, keep_values: int = SCIPY_EXACT_MAX_N):
        self.points = np.asarray(points, dtype=np.float64)
        if self.points.ndim != 1 or len(self.points) == 0:
            raise ValueError("reference points must be a non-empty 1-d array")
        k = len(self.points)
        # Cell 2j: values strictly between points j-1 and j (cell 2k: above the last);
        # cell 2j+1: values equal to point j.
        self._counts = np.zeros(2 * k + 1, dtype=np.float64)
        self._sums = np.zeros(2 * k + 1, dtype=np.float64)
        self.n = 0.0
        self.missing = 0.0
        self.total = 0.0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._keep = keep_values
        self._values: list[np.ndarray] | None = [] if keep_values > 0 else None
        self._kept = 0
        # Keeping many values (for exact KS): they are counted once, sorted together,
        # at the end, rather than each batch sorted on its own and then all again.
        self._defer = keep_values > SCIPY_EXACT_MAX_N
        self._uncounted = 0  # trailing arrays of _values not counted yet

    def add(self, values: Any, weights: Any = None) -> None:
        """Add a batch; NaN (and infinities) count as missing."""
        x = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(x)
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        n_total = float(x.size if w is None else w.sum())
        if not finite.all():
            x = x[finite]
            if w is not None:
                w = w[finite]
        n = float(x.size if w is None else w.sum())
        self.total += n_total
        self.missing += n_total - n
        if x.size == 0:
            return
        keep = self._values is not None and w is None and self._kept + x.size <= self._keep
        if keep and self._defer:
            self._values.append(x.copy())
            self._uncounted += 1
        else:
            self._flush()
            if w is None:
                self._count_sorted(np.sort(x))
            else:
                u = self.points
                k = len(u)
                pos = np.searchsorted(u, x, side="left")
                equal = u[np.minimum(pos, k - 1)] == x
                equal &= pos < k
                cell = 2 * pos + equal
                self._counts += np.bincount(cell, weights=w, minlength=2 * k + 1)
                self._sums += np.bincount(cell, weights=x * w, minlength=2 * k + 1)
            if self._values is not None:
                if keep:
                    self._values.append(x.copy())
                else:
                    self._values = None  # too many (or weighted): the exact copy is dropped
        if keep:
            self._kept += x.size
        self.n += n
        self.sum += float(x.sum() if w is None else (x * w).sum())
        self.sumsq += float((x * x).sum() if w is None else (x * x * w).sum())
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))

    def _count_sorted(self, xs: np.ndarray) -> None:
        # Look the k points up in the sorted values (k log n), rather than each of the
        # n values among the points (n log k, a cache miss each): about 3x faster, and
        # the sums per cell come from one running sum.
        u = self.points
        k = len(u)
        left = np.searchsorted(xs, u, side="left")  # values < point j
        right = np.searchsorted(xs, u, side="right")  # values <= point j
        edges = np.empty(2 * k + 2, dtype=np.int64)
        edges[0], edges[-1] = 0, xs.size
        edges[1:-1:2], edges[2:-1:2] = left, right
        run = np.concatenate([[0.0], np.cumsum(xs)])
        self._counts += np.diff(edges)
        self._sums += np.diff(run[edges])

    def _flush(self) -> None:
        """Count the values kept but not counted yet (sorted once, kept sorted)."""
        if not self._uncounted or self._values is None:
            return
        pending = self._values[-self._uncounted:]
        xs = np.concatenate(pending) if len(pending) > 1 else pending[0]
        xs.sort()
        self._count_sorted(xs)
        self._values[-self._uncounted:] = [xs]
        self._uncounted = 0

    @property
    def counts(self) -> np.ndarray:
        self._flush()
        return self._counts

    @property
    def sums(self) -> np.ndarray:
        self._flush()
        return self._sums

    @property
    def values(self) -> np.ndarray | None:
        """Every current value, when there were few enough to keep; else None."""
        self._flush()
        if self._values is None:
            return None
        if len(self._values) == 1:
            return self._values[0].copy()
        return np.concatenate(self._values) if self._values else np.empty(0)

    def merge(self, other: NumericAccumulator) -> NumericAccumulator:
        """The accumulator of both batches' values (partitions of one column, against
        the same reference points): counts and sums add, kept values join while
        their total stays within what either would keep."""
        if other.points.shape != self.points.shape or not np.array_equal(other.points, self.points):
            raise ValueError("cannot merge accumulators of different reference points")
        out = NumericAccumulator(self.points, keep_values=self._keep)
        out._counts, out._sums = self.counts + other.counts, self.sums + other.sums
        for name in ("n", "missing", "total", "sum", "sumsq"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.min, out.max = min(self.min, other.min), max(self.max, other.max)
        mine, theirs = self.values, other.values
        if mine is None or theirs is None or mine.size + theirs.size > self._keep:
            out._values = None
        else:
            out._values = [np.concatenate([mine, theirs])]
            out._kept = mine.size + theirs.size
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (floats as lists; kept values, when any, as a list)."""
        values = self.values
        return {"kind": "numeric", "points": self.points.tolist(), "keep": self._keep,
                "counts": self.counts.tolist(), "sums": self.sums.tolist(),
                "n": self.n, "missing": self.missing, "total": self.total, "sum": self.sum,
                "sumsq": self.sumsq, "min": None if self.n == 0 else self.min,
                "max": None if self.n == 0 else self.max,
                "values": None if values is None else values.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericAccumulator:
        out = cls(d["points"], keep_values=int(d["keep"]))
        out._counts = np.asarray(d["counts"], dtype=np.float64)
        out._sums = np.asarray(d["sums"], dtype=np.float64)
        if out._counts.shape != (2 * len(out.points) + 1,) or out._sums.shape != out._counts.shape:
            raise ValueError("an accumulator's counts do not match its points")
        for name in ("n", "missing", "total", "sum", "sumsq"):
            setattr(out, name, float(d[name]))
        out.min = math.inf if d["min"] is None else float(d["min"])
        out.max = -math.inf if d["max"] is None else float(d["max"])
        if d["values"] is None:
            out._values = None
        else:
            out._values = [np.asarray(d["values"], dtype=np.float64)]
            out._kept = len(d["values"])
        return out

    # cumulative counts of current values below / at each reference point
    def cdf_counts(self) -> tuple[np.ndarray, np.ndarray]:
        between = self.counts[0::2]  # k + 1 gaps
        at = self.counts[1::2]  # k points
        before = np.concatenate([[0.0], np.cumsum(between[:-1] + at)[:-1]])  # <= point j-1, per j
        less = before + between[:-1]
        return less, less + at

    def moments(self) -> dict[str, float | None]:
        if self.n <= 0:
            return {"mean": None, "std": None, "min": None, "max": None}
        mean = self.sum / self.n
        var = max(self.sumsq / self.n - mean * mean, 0.0)
        return {"mean": mean, "std": math.sqrt(var), "min": self.min, "max": self.max}


class CategoricalAccumulator:
    """Counts per category (as text) and of missing values."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.missing = 0.0
        self.total = 0.0

    def add_counts(self, counts: dict[str, float], missing: float = 0.0) -> None:
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0.0) + float(value)
        self.missing += float(missing)
        self.total += float(sum(counts.values())) + float(missing)

    @property
    def n(self) -> float:
        return self.total - self.missing

    def merge(self, other: CategoricalAccumulator) -> CategoricalAccumulator:
        out = CategoricalAccumulator()
        out.add_counts(self.counts, self.missing)
        out.add_counts(other.counts, other.missing)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "counts": self.counts, "missing": self.missing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalAccumulator:
        out = cls()
        out.add_counts({str(k): float(v) for k, v in d["counts"].items()}, float(d["missing"]))
        return out


def merge_accumulators(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-column accumulators of several partitions merged, column by column."""
    if not parts:
        raise ValueError("no accumulators to merge")
    names = set(parts[0])
    for p in parts[1:]:
        if set(p) != names:
            raise ValueError(f"partitions accumulated different columns ({sorted(names)} and {sorted(p)})")
    out = dict(parts[0])
    for p in parts[1:]:
        out = {name: acc.merge(p[name]) for name, acc in out.items()}
    return out


def accumulators_to_dict(accs: dict[str, Any]) -> dict[str, Any]:
    return {name: acc.to_dict() for name, acc in accs.items()}


def accumulators_from_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {name: (NumericAccumulator if a["kind"] == "numeric" else CategoricalAccumulator).from_dict(a)
            for name, a in d.items()}


# --------------------------------------------------------------------------- numeric statistics


def ks_from_counts(ref_weights: np.ndarray, acc: NumericAccumulator) -> float:
    """sup |F_ref - F_cur| over the real line (see the module docstring)."""
    w = np.asarray(ref_weights, dtype=np.float64)
    n_ref = w.sum()
    ref_le = np.cumsum(w)
    ref_less = ref_le - w
    less, le = acc.cdf_counts()
    d_at = np.abs(ref_le / n_ref - le / acc.n)
    d_before = np.abs(ref_less / n_ref - less / acc.n)
    return float(min(1.0, max(d_at.max(), d_before.max())))


def ks_exact_sorted(ref_sorted: np.ndarray, cur_sorted: np.ndarray, points: np.ndarray,
                    ref_weights: np.ndarray, acc: NumericAccumulator) -> float:
    """The two-sample KS statistic of all the values, equal to scipy's ks_2samp, from
    the sorted columns and the accumulator's counts at the reference ``points``.

    The sup of |F_ref - F_cur| at the points (and their left limits) comes from the
    counts and the sorted reference. Inside a gap between two points each CDF lies between its values at the
    gap's ends, which bounds the difference there; only gaps whose bound exceeds the
    sup so far can hold a larger one, and in those the difference is evaluated at
    every reference value (and its left limit), where the sup is reached (F_ref is
    constant between its values, F_cur monotone). Two sorts and a few hundred small
    look-ups, instead of a search of every value in the other column."""
    n1, n2 = float(ref_sorted.size), float(cur_sorted.size)
    less, le = acc.cdf_counts()
    ref_le = np.cumsum(np.asarray(ref_weights, dtype=np.float64))
    # Quantile points carry the values since the previous point: the reference's
    # left limit at a point is counted in the sorted values.
    at_right = np.searchsorted(ref_sorted, points, side="right")
    at_left = np.searchsorted(ref_sorted, points, side="left")
    d = float(max(np.abs(ref_le / n1 - le / n2).max(), np.abs(at_left / n1 - less / n2).max()))
    # Gap j lies between point j-1 and point j (gap 0 below the first, gap k above the last).
    lo_ref = np.concatenate([[0.0], ref_le]) / n1  # F at the gap's left end
    hi_ref = np.concatenate([at_left, [n1]]) / n1  # F just before its right end
    lo_cur = np.concatenate([[0.0], le]) / n2
    hi_cur = np.concatenate([less, [n2]]) / n2
    bound = np.maximum(hi_ref - lo_cur, hi_cur - lo_ref)
    gaps = np.flatnonzero(bound > d)
    if gaps.size:
        # Reference values inside the candidate gaps (one vectorised gather).
        starts = np.concatenate([[0], at_right])[gaps]
        stops = np.concatenate([at_left, [ref_sorted.size]])[gaps]
        sizes = np.maximum(stops - starts, 0)
        if sizes.sum():
            offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
            t = ref_sorted[np.arange(int(sizes.sum())) + offsets]
            f_le = np.searchsorted(ref_sorted, t, side="right") / n1
            f_less = np.searchsorted(ref_sorted, t, side="left") / n1
            g_le = np.searchsorted(cur_sorted, t, side="right") / n2
            g_less = np.searchsorted(cur_sorted, t, side="left") / n2
            d = max(d, float(np.abs(f_le - g_le).max()), float(np.abs(f_less - g_less).max()))
    return float(min(d, 1.0))


# Beyond this effective sample size n*m/(n+m), scipy's exact-in-n distribution
# (kstwo) costs up to a second per column; the limiting Kolmogorov distribution
# with Vrbik's finite-n correction is then within 0.1 % of it for p > 1e-9.
KSTWO_MAX_EN = 100_000


def ks_pvalue(d: float, n_ref: int, n_cur: int) -> float:
    """Two-sided p-value as scipy's ks_2samp computes it in its asymptotic regime,
    ``kstwo.sf(d, round(n*m/(n+m)))``, up to an effective size of KSTWO_MAX_EN;
    beyond, ``kolmogorov(x + 1/(6 sqrt(en)) + (x - 1)/(4 en))`` with
    ``x = d sqrt(en)`` (Vrbik 2018). At such sizes the p-value decides nothing
    (effect sizes do); it is reported."""
    en = float(np.round(n_ref * n_cur / (n_ref + n_cur)))
    if en <= KSTWO_MAX_EN:
        from scipy.stats import kstwo

        return float(np.clip(kstwo.sf(d, en), 0, 1))
    from scipy.special import kolmogorov

    x = d * math.sqrt(en)
    return float(np.clip(kolmogorov(x + 1 / (6 * math.sqrt(en)) + (x - 1) / (4 * en)), 0, 1))


def wasserstein_from_counts(points: np.ndarray, ref_weights: np.ndarray, acc: NumericAccumulator) -> tuple[float, float]:
    """(W1 distance, an upper bound of its error), see the module docstring."""
    u = np.asarray(points, dtype=np.float64)
    w = np.asarray(ref_weights, dtype=np.float64)
    k = len(u)
    n = acc.n
    F = np.cumsum(w) / w.sum()  # reference CDF at each point, constant until the next
    less, le = acc.cdf_counts()
    between = acc.counts[0::2]
    gap_sum = acc.sums[0::2]
    # tails: below the first point the reference CDF is 0, above the last it is 1
    total = (between[0] * u[0] - gap_sum[0]) / n + (gap_sum[k] - between[k] * u[-1]) / n
    if k == 1:
        return float(total), 0.0
    a = F[:-1]  # reference CDF on gap j (between points j and j+1)
    b0 = le[:-1] / n  # current CDF at the left end of the gap
    b1 = less[1:] / n  # ... and just before its right end
    left, right = u[:-1], u[1:]
    cnt = between[1:k]
    mean = np.where(cnt > 0, gap_sum[1:k] / np.where(cnt > 0, cnt, 1), left)
    mean = np.clip(mean, left, right)
    total += float((np.abs(a - b0) * (mean - left) + np.abs(a - b1) * (right - mean)).sum())
    crossing = (a > b0) & (a < b1)
    bound = float(((b1 - b0) * (right - left))[crossing].sum())
    return float(total), bound


def psi(ref_counts: Any, cur_counts: Any, eps: float = PSI_EPSILON) -> float:
    """Population stability index: sum over bins of (q - p) * ln(q / p)."""
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    if r.sum() <= 0 or c.sum() <= 0:
        return 0.0
    p = np.maximum(r / r.sum(), eps)
    q = np.maximum(c / c.sum(), eps)
    return float(((q - p) * np.log(q / p)).sum())


def numeric_stats(entry: dict[str, Any], acc: NumericAccumulator) -> dict[str, Any]:
    """Every statistic of a numeric column, reference profile ``entry`` vs ``acc``."""
    points = np.asarray(entry["points"], dtype=np.float64)
    weights = np.asarray(entry["weights"], dtype=np.float64)
    n_ref = int(entry["n"])
    # A sampled reference is a sample of its size: the test and the noise margins
    # count what was compared, not the rows it stands for.
    n_ref_compared = int(entry.get("sample") or n_ref)
    out: dict[str, Any] = {"kind": "numeric", "n_reference": n_ref, "n_current": int(acc.n),
                           "n_reference_compared": n_ref_compared}
    out.update(_missing(entry, acc.missing, acc.total))
    out["current"] = {k: _num(v) for k, v in acc.moments().items()}
    out["reference"] = {k: _num(entry.get(k)) for k in ("mean", "std", "min", "max")}
    if acc.n <= 0 or n_ref <= 0:
        out.update(ks_statistic=None, ks_pvalue=None, psi=None, wasserstein=None, wasserstein_norm=None)
        return out
    cur_values = acc.values
    exact_small = (
        cur_values is not None and entry.get("exact") and max(n_ref, int(acc.n)) <= SCIPY_EXACT_MAX_N
    )
    if exact_small:
        # scipy's exact regime: the same call on the same data.
        from scipy.stats import ks_2samp, wasserstein_distance

        ref_values = np.repeat(points, weights.astype(np.int64))
        res = ks_2samp(ref_values, cur_values)
        d, p = float(res.statistic), float(res.pvalue)
        wd, w_err = float(wasserstein_distance(ref_values, cur_values)), 0.0
    else:
        ref_sorted = entry.get(SORTED_VALUES)
        if ref_sorted is not None and cur_values is not None:
            # A data reference kept whole and current values kept: KS of all of them.
            cur_values.sort()
            d = ks_exact_sorted(ref_sorted, cur_values, points, weights, acc)
        else:
            d = ks_from_counts(weights, acc)
        p = ks_pvalue(d, n_ref_compared, int(round(acc.n)))
        wd, w_err = wasserstein_from_counts(points, weights, acc)
    exact_ks = exact_small or (entry.get(SORTED_VALUES) is not None and cur_values is not None) or bool(entry.get("exact"))
    # PSI bins: (-inf, e1], (e1, e2], ..., (e_last, inf); every edge is a reference point.
    edges = np.asarray(entry["bins"]["edges"], dtype=np.float64)
    _, le = acc.cdf_counts()
    idx = np.searchsorted(points, edges)
    cum = np.concatenate([[0.0], le[idx], [acc.n]])
    cur_bins = np.diff(cum)
    scale = _scale(entry)
    out.update(
        ks_statistic=d,
        ks_pvalue=p,
        ks_error_bound=0.0 if exact_ks else ks_error_bound(entry),
        ks_method="exact" if exact_ks else ("sample" if entry.get("sample") else "quantile points"),
        psi=psi(entry["bins"]["counts"], cur_bins),
        wasserstein=wd,
        wasserstein_norm=wd / scale,
        wasserstein_error_bound=w_err / scale,
        bins={"edges": edges.tolist(), "reference": list(entry["bins"]["counts"]), "current": cur_bins.tolist()},
    )
    return out


def ks_error_bound(entry: dict[str, Any]) -> float:
    """How far the KS statistic against this profile can be from the one against the
    full reference: 0 when exact; 1/points for quantile points of all the values;
    for points of a uniform sample, plus the sample's own deviation from the data
    (Dvoretzky-Kiefer-Wolfowitz, 99 % confidence)."""
    if entry.get("exact"):
        return 0.0
    bound = 1.0 / max(len(entry["points"]), 1) if entry.get("quantiles", True) else 0.0
    if entry.get("sample"):
        bound += math.sqrt(math.log(2 / 0.01) / (2 * entry["sample"]))
    return bound


def _scale(entry: dict[str, Any]) -> float:
    std = entry.get("std") or 0.0
    if std > 0:
        return float(std)
    return float(abs(entry.get("mean") or 0.0) or 1.0)


# --------------------------------------------------------------------------- categorical statistics


# A level is tested on its own when the current sample expects at least this many
# rows of it (the rule of thumb under which Pearson's chi-square holds); rarer
# levels, the levels a profile pooled and levels the reference never had share
# one "(other)" cell. The choice uses the reference's shares only, so it does
# not look at the current data it tests.
MIN_EXPECTED = 5.0
OTHER = "(other)"


def reference_levels(entry: dict[str, Any]) -> int:
    """The reference's true number of levels (profiles before ``levels`` was
    stored: the stored ones, plus one for the pooled rest)."""
    if entry.get("levels") is not None:
        return int(entry["levels"])
    return len(entry.get("counts") or {}) + (1 if float(entry.get("other") or 0.0) > 0 else 0)


def pooled_table(ref: dict[str, float], other: float, cur: dict[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(cells, reference counts, current counts) of the table the test compares."""
    n_ref, n_cur = sum(ref.values()) + other, sum(cur.values())
    keep = [k for k, v in sorted(ref.items(), key=lambda kv: (-kv[1], kv[0]))
            if n_ref > 0 and v / n_ref * n_cur >= MIN_EXPECTED]
    r = [ref[k] for k in keep]
    c = [cur.get(k, 0.0) for k in keep]
    r_other = n_ref - sum(r)
    c_other = n_cur - sum(c)
    if r_other > 0 or c_other > 0:
        keep = [*keep, OTHER]
        r.append(r_other)
        c.append(c_other)
    return keep, np.asarray(r, float), np.asarray(c, float)


def categorical_stats(entry: dict[str, Any], acc: CategoricalAccumulator) -> dict[str, Any]:
    ref = {str(k): float(v) for k, v in (entry.get("counts") or {}).items()}
    other = float(entry.get("other") or 0.0)
    cur = dict(acc.counts)
    n_ref, n_cur = sum(ref.values()) + other, sum(cur.values())
    out: dict[str, Any] = {"kind": "categorical", "n_reference": int(n_ref), "n_current": int(n_cur),
                           "levels_reference": reference_levels(entry)}
    out.update(_missing(entry, acc.missing, acc.total))
    if n_ref <= 0 or n_cur <= 0:
        out.update(chi2_statistic=None, chi2_pvalue=None, psi=None, jensen_shannon=None, unseen_rate=None)
        return out
    cells, r, c = pooled_table(ref, other, cur)
    chi2, p = chi2_homogeneity(r, c)
    # Unseen: current levels the reference never had. Once a profile pooled its rare
    # levels, an unlisted level may be one of them, so none counts as unseen.
    unseen_names = [] if other > 0 else sorted((k for k in cur if k not in ref), key=lambda k: (-cur[k], k))
    unseen = float(sum(cur[k] for k in unseen_names) / n_cur)
    # The report's table: every stored level (and the pooled rest), most frequent first.
    shown = dict(ref)
    shown_cur = {k: v for k, v in cur.items() if k in ref or other <= 0}
    if other > 0:
        shown[OTHER] = other
        shown_cur[OTHER] = n_cur - sum(shown_cur.values())
    names = sorted(set(shown) | set(shown_cur), key=lambda k: (-shown.get(k, 0.0), -shown_cur.get(k, 0.0), k))
    out.update(
        chi2_statistic=chi2,
        chi2_pvalue=p,
        cells=len(cells),
        psi=psi(r, c),
        jensen_shannon=jensen_shannon(r, c),
        unseen_rate=unseen,
        unseen_categories=unseen_names[:20],
        categories={"names": names[:50], "reference": [shown.get(k, 0.0) for k in names[:50]],
                    "current": [shown_cur.get(k, 0.0) for k in names[:50]]},
    )
    return out


def chi2_homogeneity(ref_counts: Any, cur_counts: Any) -> tuple[float, float]:
    """Pearson's chi-square test that both rows of the 2 x K table share one
    distribution: what ``scipy.stats.chi2_contingency(table, correction=False)``
    computes, written out so a drift run need not import scipy.stats (a second
    of start-up): the statistic from the expected counts, the p-value from the
    chi-square survival function (``scipy.special.chdtrc``, which scipy's own
    ``chi2.sf`` calls)."""
    from scipy.special import chdtrc

    table = np.vstack([np.asarray(ref_counts, float), np.asarray(cur_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return stat, float(chdtrc(dof, stat))


def jensen_shannon(ref_counts: Any, cur_counts: Any) -> float:
    """Jensen-Shannon distance in base 2 (0 = same, 1 = disjoint), as
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``."""
    p = np.asarray(ref_counts, float)
    q = np.asarray(cur_counts, float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return float(math.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def _missing(entry: dict[str, Any], cur_missing: float, cur_total: float) -> dict[str, Any]:
    ref_missing = float(entry.get("missing") or 0.0)
    ref_total = float(entry.get("n") or 0.0) + ref_missing
    ref_rate = ref_missing / ref_total if ref_total else 0.0
    cur_rate = cur_missing / cur_total if cur_total else 0.0
    p = None
    if ref_total and cur_total and (ref_missing + cur_missing) > 0 and (ref_missing + cur_missing) < ref_total + cur_total:
        _, p = chi2_homogeneity([ref_total - ref_missing, ref_missing], [cur_total - cur_missing, cur_missing])
    return {
        "missing_rate_reference": ref_rate,
        "missing_rate_current": cur_rate,
        "missing_rate_change": cur_rate - ref_rate,
        "missing_pvalue": p,
    }


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- the verdict


# The Kolmogorov distribution's mean plus one standard deviation: how far
# sqrt(n m / (n + m)) * D typically strays from 0 with no drift.
KS_TYPICAL = 0.8687 + 0.2603


def sampling_noise(name: str, n_reference: int, n_current: int, cells: int) -> float:
    """How far ``name`` typically strays from 0 from sampling alone, with no drift,
    for samples of these sizes (``cells``: PSI bins or categories compared).

    On small samples the effect sizes are biased upwards: two samples of 1,000 rows
    of one skewed distribution give a normalised Wasserstein distance of 0.1 now and
    then. The threshold a column must clear is its configured value above this noise,
    which vanishes as the samples grow (large samples are where p-values alone cry
    wolf, small ones are where effect sizes do). Every statistic gets its typical
    value under no drift: a chi-square's mean plus one sd for PSI and
    Jensen-Shannon, the Kolmogorov distribution's for KS.
    """
    if n_reference <= 0 or n_current <= 0:
        return 0.0
    h = 1.0 / n_reference + 1.0 / n_current
    dof = max(cells - 1, 1)
    chi2_typical = dof + math.sqrt(2.0 * dof)  # a chi-square's mean plus one sd
    if name == "psi":  # ~ chi-square(dof) * h under no drift
        return chi2_typical * h
    if name == "jensen_shannon":  # the squared distance, in bits: ~ chi-square * h / (8 ln 2)
        return chi2_typical * h / (8.0 * math.log(2.0))
    if name == "wasserstein_norm":  # ~ sqrt(h) in units of the reference's sd
        return 1.5 * math.sqrt(h)
    if name == "ks_statistic":  # ~ Kolmogorov * sqrt(h)
        return KS_TYPICAL * math.sqrt(h)
    return 0.0


def column_pvalues(stats: dict[str, Any]) -> tuple[float | None, float | None]:
    """(p-value of the distribution test, p-value of the missing-rate test) of a column."""
    p = stats.get("ks_pvalue") if stats.get("kind") == "numeric" else stats.get("chi2_pvalue")
    return p, stats.get("missing_pvalue")


def decide(stats: dict[str, Any], cfg: Any, *, rejected: tuple[bool, bool] | None = None) -> tuple[bool, list[str]]:
    """Drifted or not, and why: an effect size at or above its threshold plus the
    sampling noise of samples this size (``sampling_noise``), confirmed by the test
    (``cfg`` is a ``MonitoringConfig``).

    ``rejected``: whether the distribution and missing-rate tests were rejected by
    the run's multiple-testing correction (``compare``); alone, a column's test
    rejects at ``cfg.false_alarm_rate``."""
    reasons: list[str] = []
    n_ref = int(stats.get("n_reference_compared") or stats.get("n_reference") or 0)
    n_cur = int(stats.get("n_current") or 0)
    if stats["kind"] == "numeric":
        cells = len((stats.get("bins") or {}).get("reference") or []) or cfg.psi_bins
    else:
        cells = int(stats.get("cells") or 0) or len((stats.get("categories") or {}).get("names") or []) or 2

    def over(name: str, threshold: float) -> bool:
        value = stats.get(name)
        if value is None or not math.isfinite(value):
            return False
        noise = sampling_noise(name, n_ref, n_cur, cells)
        if name == "jensen_shannon":  # a distance: squares add, not the distances
            return value * value >= threshold * threshold + noise
        return value >= threshold + noise

    if stats["kind"] == "numeric":
        effects = [
            ("psi", cfg.psi_threshold),
            ("wasserstein_norm", cfg.wasserstein_threshold),
            ("ks_statistic", cfg.ks_threshold),
        ]
    else:
        effects = [("psi", cfg.psi_threshold), ("jensen_shannon", cfg.js_threshold), ("unseen_rate", cfg.unseen_threshold)]
    p, mp = column_pvalues(stats)
    level = min(cfg.p_value, cfg.false_alarm_rate)
    if rejected is None:
        rejected = (p is not None and p < level, mp is not None and mp < level)
    # The per-column guard still applies: no alarm from a test above p_value.
    significant = rejected[0] and p is not None and p < cfg.p_value
    for name, threshold in effects:
        if over(name, threshold) and significant:
            reasons.append(f"{name} {stats[name]:.3g} >= {threshold:g}")
    change = stats.get("missing_rate_change") or 0.0
    if abs(change) >= cfg.missing_rate_threshold and rejected[1] and mp is not None and mp < cfg.p_value:
        reasons.append(f"missing rate {stats['missing_rate_reference']:.3g} -> {stats['missing_rate_current']:.3g}")
    return bool(reasons), reasons


def column_stats(entry: dict[str, Any], acc: Any) -> dict[str, Any]:
    return numeric_stats(entry, acc) if entry["kind"] == "numeric" else categorical_stats(entry, acc)


def column_drift(entry: dict[str, Any], acc: Any, cfg: Any) -> dict[str, Any]:
    """One column on its own (its tests at ``cfg.false_alarm_rate``)."""
    stats = column_stats(entry, acc)
    drifted, reasons = decide(stats, cfg)
    stats["drifted"] = drifted
    stats["reasons"] = reasons
    return stats


def benjamini_hochberg(pvalues: list[float | None], rate: float) -> list[bool]:
    """Which tests the Benjamini-Hochberg procedure rejects at ``rate`` (None: no
    test, never rejected). With no drift anywhere every rejection is false, so the
    chance of any alarm in a run is at most ``rate`` (independent or positively
    dependent tests)."""
    present = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    out = [False] * len(pvalues)
    if not present:
        return out
    # The adjusted p-values of scipy.stats.false_discovery_control(method="bh"),
    # written out: importing scipy.stats costs a drift run a second of start-up.
    p = np.clip(np.asarray([pvalues[i] for i in present], dtype=np.float64), 0.0, 1.0)
    order = np.argsort(p)
    m = p.size
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    for i, q in zip(present, adjusted, strict=True):
        out[i] = bool(q <= rate)
    return out


def compare(profile: dict[str, Any], accs: dict[str, Any], cfg: Any, *, columns_seen: set[str] | None = None,
            n_current: int | None = None) -> dict[str, Any]:
    """The drift report of every profiled column (and the prediction, when the
    accumulators hold ``"__prediction__"``).

    Every test of the run (each column's distribution and missing-rate tests, and
    the prediction's) is one family, corrected with Benjamini-Hochberg at
    ``cfg.false_alarm_rate``: with nothing drifted, at most that share of runs
    report any drift, however many columns there are."""
    columns: dict[str, Any] = {}
    tested: dict[str, dict[str, Any]] = {}
    for name, entry in profile["columns"].items():
        if columns_seen is not None and name not in columns_seen:
            columns[name] = {"kind": entry["kind"], "drifted": True, "absent": True,
                             "reasons": ["absent from the current data"]}
            continue
        acc = accs[name]
        if entry["kind"] == "numeric" and not entry.get("points"):
            columns[name] = {"kind": "numeric", "drifted": False, "reasons": [],
                             "note": "no reference values (all missing)"}
            continue
        columns[name] = tested[name] = column_stats(entry, acc)
    prediction = None
    if "__prediction__" in accs and profile.get("prediction"):
        prediction = column_stats(profile["prediction"], accs["__prediction__"])
    family = [*tested.values(), *([prediction] if prediction is not None else [])]
    pvalues = [p for stats in family for p in column_pvalues(stats)]
    rejected = benjamini_hochberg(pvalues, cfg.false_alarm_rate)
    for i, stats in enumerate(family):
        stats["drifted"], stats["reasons"] = decide(stats, cfg, rejected=(rejected[2 * i], rejected[2 * i + 1]))
    importance = profile.get("importance") or {}
    for name, rec in columns.items():
        if name in importance:
            rec["importance"] = importance[name]
    drifted = [c for c, r in columns.items() if r["drifted"]]
    return {
        "drifted_columns": drifted,
        "n_columns": len(columns),
        "share_drifted": len(drifted) / len(columns) if columns else 0.0,
        "prediction_drifted": bool(prediction and prediction["drifted"]),
        "n_reference": profile.get("n_rows"),
        "n_current": n_current,
        "columns": columns,
        "prediction": prediction,
        "skipped": dict(profile.get("skipped") or {}),
        "correction": {"method": "benjamini-hochberg", "tests": sum(p is not None for p in pvalues),
                       "false_alarm_rate": cfg.false_alarm_rate},
        "thresholds": {k: getattr(cfg, k) for k in (
            "psi_threshold", "wasserstein_threshold", "ks_threshold", "js_threshold",
            "unseen_threshold", "missing_rate_threshold", "p_value", "false_alarm_rate")},
    }
