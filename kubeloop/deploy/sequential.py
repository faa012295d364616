"""Intervals that stay honest however often the canary is looked at.

``kubeloop canary analyze`` is re-run on cumulative traffic: once per step of
``--steps``, and again whenever someone asks. A fixed 95 % interval re-computed
at each look is wrong 5 % of the time *per look*; over ten looks a canary exactly
at a bound passes one of them about 10 % of the time (measured: 2.5 % on one
look, 7.1 % on five, 9.6 % on ten, one-sided). So every bound is judged on a
**confidence sequence**: an interval that covers the true difference at every
look at once with probability at least ``1 - alpha``, whatever the number of
looks and whenever the looker stops.

Why a confidence sequence and not alpha spending: spending needs the number and
timing of the looks planned in advance (the steps, and how much traffic each
step brings), while people re-run the analysis at any time and the traffic per
interval is not known. A confidence sequence needs neither.

The boundary is the normal mixture (Robbins 1970; Howard, Ramdas, McAuliffe and
Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Ann. Statist. 2021, eq. (14); with estimated variances it is the asymptotic
confidence sequence of Waudby-Smith et al., "Time-uniform central limit theory
and asymptotic confidence sequences", Ann. Statist. 2024). For an estimate with
standard error ``se`` (its information is ``1/se**2``) and a mixing scale ``tau``
on the difference, the half-width is::

    se * sqrt((1 + se**2 / tau**2) * (2 * log(1 / alpha) + log(1 + tau**2 / se**2)))

A mixture is tightest where ``se`` is about ``tau / 2.7`` and wide far from it.
Two sequences are intersected, each at ``alpha / 2`` (the intersection covers
at every look with probability at least ``1 - alpha``): one with ``tau`` the
tolerance of the bound being judged, tightest where the evidence is just enough
to tell "within the bound" from "beyond it"; one with ten times it, so that a
canary far beyond the bound (a tenth of its requests failing against a 1 %
bound) is rolled back on the first few hundred requests instead of waiting for
the evidence a fine distinction needs.

Standard errors come from a bootstrap that resamples **requests**, not rows: the
rows of one request share its latency, fail together and come from one client,
so treating them as independent would understate every interval
(``cluster_bootstrap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kubeloop.paired import resample_counts

DEFAULT_ALPHA = 0.05
BOOTSTRAP_REPLICATES = 200
# Fixed: the same logs give the same verdict.
BOOTSTRAP_SEED = 20261203
# Replicates x requests held at once (float64): 2M cells is 16 MB.
_BLOCK_CELLS = 2_000_000
_TAU_FLOOR = 1e-12


# Mixing scales, as multiples of the bound's tolerance (see the module docstring).
MIXING_SCALES = (1.0, 10.0)


def _mixture_half_width(se: float, tau: float, alpha: float) -> float:
    ratio = (tau / se) ** 2
    return se * math.sqrt((1 + 1 / ratio) * (2 * math.log(1 / alpha) + math.log1p(ratio)))


def half_width(se: float, tau: float, alpha: float = DEFAULT_ALPHA) -> float:
    """Half-width of the confidence sequence at this look (two-sided, level
    ``1 - alpha`` over all looks together)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if se <= 0 or not math.isfinite(se):
        return 0.0 if se == 0 else math.inf
    tau = max(tau, _TAU_FLOOR)
    share = alpha / len(MIXING_SCALES)
    return min(_mixture_half_width(se, tau * k, share) for k in MIXING_SCALES)


@dataclass(frozen=True)
class Bound:
    """``excess``: how far the estimate is beyond what the bound allows (negative:
    inside it), with its confidence-sequence half-width. Judged at every look:
    ``broken`` when even the low end is beyond the bound, ``held`` when even the
    high end is inside it, otherwise not yet settled."""

    excess: float
    half_width: float

    @property
    def low(self) -> float:
        return self.excess - self.half_width

    @property
    def high(self) -> float:
        return self.excess + self.half_width

    @property
    def broken(self) -> bool:
        return self.low > 0

    @property
    def held(self) -> bool:
        return self.high <= 0

    @property
    def settled(self) -> bool:
        return self.broken or self.held


def judge(excess: float, se: float, tolerance: float, alpha: float = DEFAULT_ALPHA) -> Bound:
    """A bound ``excess <= 0`` whose estimate has standard error ``se``; ``tolerance``
    (the slack the bound allows, in the same units) is the mixing scale."""
    return Bound(excess, half_width(se, tolerance, alpha))


def cluster_bootstrap(groups: list[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray], *,
                      replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> float | None:
    """Standard deviation over bootstrap replicates of ``statistic``, resampling the
    clusters (requests): ``groups`` are arrays with one entry per request (for example
    rows and failed rows per request); ``statistic`` takes them weighted by a block of
    multinomial counts ``(replicates, n)`` and returns one value per replicate.
    None with fewer than two requests."""
    n = len(groups[0]) if groups else 0
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    block = max(1, min(replicates, _BLOCK_CELLS // n))
    done = 0
    while done < replicates:
        size = min(block, replicates - done)
        counts = resample_counts(rng, size, n)
        values.append(np.asarray(statistic([counts, *groups]), dtype=np.float64))
        done += size
    out = np.concatenate(values)
    out = out[np.isfinite(out)]
    return float(out.std(ddof=1)) if out.size > 1 else None


def ratio_se(num: np.ndarray, den: np.ndarray, **kw: int) -> float | None:
    """Bootstrap standard error of ``sum(num) / sum(den)`` over requests (a rate or a
    mean loss per row, each request contributing its rows together)."""
    num = np.asarray(num, dtype=float)
    if num.size >= 2 and not num.any():
        return 0.0  # every replicate is 0 (the verdict puts a floor under a rate's)

    def stat(g: list[np.ndarray]) -> np.ndarray:
        w, a, b = g
        total = w @ b
        return np.divide(w @ a, total, out=np.full(len(total), np.nan), where=total > 0)

    return cluster_bootstrap([num, np.asarray(den, dtype=float)], stat, **kw)


def quantile_se(per_request: np.ndarray, q: float) -> float | None:
    """Standard error of the ``q`` quantile of per-request values (latency) under the
    bootstrap that resamples requests, computed exactly instead of by drawing: in a
    resample of the n requests, the number at or below the i-th smallest value is
    Binomial(n, i/n), so the resample's quantile (inverted CDF) is the i-th value
    with probability P(Binomial(n, i/n) >= k) - P(Binomial(n, (i-1)/n) >= k),
    k = ceil(q n). Only the ranks within 10 standard deviations of k matter."""
    from scipy.stats import binom

    x = np.sort(np.asarray(per_request, dtype=float))
    n = x.size
    if n < 2:
        return None
    k = max(1, math.ceil(q * n))
    spread = 10 * math.sqrt(n * q * (1 - q)) + 2
    ranks = np.arange(max(1, int(k - spread)), min(n, int(k + spread)) + 1)
    at_most = binom.sf(k - 1, n, ranks / n)  # P(J <= i)
    below = binom.sf(k - 1, n, (ranks - 1) / n)
    p = np.clip(at_most - below, 0, None)
    if p.sum() <= 0:
        return None
    p = p / p.sum()
    values = x[ranks - 1]
    mean = float(p @ values)
    return float(math.sqrt(max(p @ (values - mean) ** 2, 0.0)))
