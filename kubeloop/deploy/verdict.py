"""The canary verdict: promote, hold or rollback, from summaries of both versions' traffic.

A pure function of two ``VersionSummary`` objects (what ``analysis.py`` reads
from the prediction logs) and the thresholds of the ``canary:`` config section.
The question it answers is "is the canary no worse than the primary on the
traffic both have served?", not "is it better" (the gate asked that before the
deploy), so a tie promotes.

Rules, in order:

1. Fail fast: if the canary's errors already exceed what the error bound allows
   at the minimum sample size, more traffic cannot save it: rollback, however
   few rows there are.
2. Too few scored rows for either version (``min_rows``): hold.
3. Every bound is judged on a confidence sequence (``sequential.py``): an
   interval on "how far beyond the bound" that holds over every look at once,
   so re-running the analysis as traffic grows does not raise the chance of
   passing a canary that is at a bound. A bound is *broken* when the whole
   interval is beyond it (rollback, every broken bound a reason), *held* when the
   whole interval is inside it, otherwise *not yet settled* (hold). The bounds:
   error rate and rejection rate (an absolute increase over the primary's),
   latency p50/p95/p99 (a ratio of the primary's, with an absolute slack so a
   0.3 ms model is not judged on jitter; a percentile is judged once both
   versions have 10 requests beyond it), and the model metric on labelled rows
   (Brier score of the positive class as ``evaluate`` computes it, accuracy, or
   MAE; absolute and relative tolerances) once both versions have
   ``min_labeled_rows`` labels.
4. Hold when the predictions diverge (PSI above ``max_psi``) and labels cannot
   yet say which side is right, or when ``require_labels`` is set and they have
   not arrived.
5. Otherwise promote; the reasons say what was compared and what was not
   (for example, "labels not yet arrived").

Every comparison is reported as a ``Check`` with its numbers, so the printed
reason is the one the code acted on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kubeloop.config import CanaryConfig
from kubeloop.deploy.sequential import Bound, judge
from kubeloop.metric_names import higher_is_better

PROMOTE, HOLD, ROLLBACK = "promote", "hold", "rollback"
# Rates and metrics are floats: a difference exactly at a bound must pass.
_EPS = 1e-9
# PSI takes logs of shares; an empty bin on one side gets this share instead of 0.
_PSI_FLOOR = 1e-4
# A percentile is judged once both versions have this many requests beyond it.
_TAIL_REQUESTS = 10


@dataclass(frozen=True)
class VersionSummary:
    """One version's traffic over the analysis window.

    The ``*_se`` fields are standard errors from resampling requests (``analysis``);
    None where unknown (a rate's then comes from its counts; a latency or metric
    without one is compared as a point)."""

    version: str
    rows: int                       # scored rows, rejected and failed ones included
    errors: int = 0                 # rows that failed (predictor 500s, queue-proxy 5xx)
    rejections: int = 0             # rows refused as bad input
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    # Predictions per class (classification) or per bin of shared edges (regression).
    prediction_counts: dict[str, int] = field(default_factory=dict)
    labeled_rows: int = 0
    # Brier score from the logged probabilities (classification), else accuracy; MAE
    # for regression. ``metric_se``: its standard error over the labelled requests.
    metric: float | None = None
    metric_name: str | None = None
    metric_se: float | None = None
    requests: int = 0               # requests behind ``rows`` (0: unknown, rows are used)
    error_rate_se: float | None = None
    rejection_rate_se: float | None = None
    latency_p50_se_ms: float | None = None
    latency_p95_se_ms: float | None = None
    latency_p99_se_ms: float | None = None
    # Where errors and latency come from: "logs", or "prometheus" (queue-proxy metrics).
    source: str = "logs"

    @property
    def error_base(self) -> int:
        """What ``errors`` are counted in: requests for Prometheus, logged rows else."""
        return self.requests if self.source == "prometheus" else self.rows

    @property
    def error_rate(self) -> float:
        return self.errors / self.error_base if self.error_base else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rejections / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    canary: float | None = None
    primary: float | None = None
    limit: float | None = None
    # False while the evidence cannot yet tell pass from fail (the interval spans the
    # bound): the verdict holds.
    settled: bool = True
    # The confidence sequence on "beyond the bound by" (positive: beyond it).
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Verdict:
    decision: str
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)
    primary_version: str | None = None
    canary_version: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reason"] = self.reason
        return out


# --------------------------------------------------------------------------- divergence


def _shares(counts: dict[str, int], keys: list[str]) -> list[float]:
    total = sum(counts.get(k, 0) for k in keys)
    if total == 0:
        return [0.0] * len(keys)
    return [max(counts.get(k, 0) / total, _PSI_FLOOR) for k in keys]


def psi(expected: dict[str, int], actual: dict[str, int]) -> float | None:
    """Population stability index of ``actual`` against ``expected`` (counts per
    category or bin); None when either side is empty."""
    keys = sorted(set(expected) | set(actual))
    if not keys or not sum(expected.values()) or not sum(actual.values()):
        return None
    e, a = _shares(expected, keys), _shares(actual, keys)
    return float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True)))


def jensen_shannon(p_counts: dict[str, int], q_counts: dict[str, int]) -> float | None:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint); None when a side is empty."""
    keys = sorted(set(p_counts) | set(q_counts))
    tp, tq = sum(p_counts.values()), sum(q_counts.values())
    if not keys or not tp or not tq:
        return None
    p = [p_counts.get(k, 0) / tp for k in keys]
    q = [q_counts.get(k, 0) / tq for k in keys]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m, strict=True) if xi > 0)

    return float(0.5 * kl(p) + 0.5 * kl(q))


# --------------------------------------------------------------------------- checks


def _interval(bound: Bound) -> str:
    return f"beyond the bound by {bound.excess:+.4g} (interval {bound.low:+.4g} to {bound.high:+.4g})"


def _check(name: str, detail: str, bound: Bound, canary: float | None, primary: float | None,
           limit: float | None) -> Check:
    state = "broken" if bound.broken else "held" if bound.held else "not yet settled"
    return Check(name, not bound.broken, f"{detail}; {_interval(bound)}: {state}", canary, primary, limit,
                 settled=bound.settled, low=bound.low, high=bound.high)


def rate_se(count: int, rows: int, given: float | None = None) -> float:
    """A rate's standard error: the one given (requests resampled), but never below the
    binomial one with one event more (Laplace's rule), so 0 failures in 200 rows is
    not taken as a rate known to be 0."""
    if rows <= 0:
        return 0.0
    p = (count + 1) / (rows + 2)
    floor = math.sqrt(p * (1 - p) / rows)
    return max(floor, given or 0.0)


def _rate_check(name: str, canary: VersionSummary, primary: VersionSummary, bound: float,
                alpha: float) -> Check:
    kind = "error" if name.startswith("error") else "rejection"
    c, p = getattr(canary, f"{kind}_rate"), getattr(primary, f"{kind}_rate")
    def se_of(s: VersionSummary) -> float:
        if kind == "error":
            return rate_se(s.errors, s.error_base, s.error_rate_se)
        return rate_se(s.rejections, s.rows, s.rejection_rate_se)

    se = math.hypot(se_of(canary), se_of(primary))
    b = judge(c - p - bound - _EPS, se, bound, alpha)
    return _check(name, f"{name} {c:.2%} vs primary {p:.2%} (may be higher by at most {bound:.2%})",
                  b, c, p, p + bound)


def _latency_check(q: str, canary: VersionSummary, primary: VersionSummary, ratio: float, slack: float,
                   alpha: float) -> Check | None:
    c, p = getattr(canary, f"latency_{q}_ms"), getattr(primary, f"latency_{q}_ms")
    if c is None or p is None:
        return None
    share = int(q[1:]) / 100
    need = math.ceil(_TAIL_REQUESTS / (1 - share))
    have = min(canary.requests or canary.rows, primary.requests or primary.rows)
    relative = p * (ratio - 1) >= slack
    allowed = p * (ratio - 1) if relative else slack
    limit = p + allowed
    rule = f"limit {limit:.1f} ms: x{ratio:g} or +{slack:g} ms"
    if have < need:
        return Check(f"latency_{q}", True, f"latency {q} {c:.1f} ms vs primary {p:.1f} ms ({rule}): not "
                     f"judged below {need} requests per version ({have})", c, p, limit)
    se_c, se_p = getattr(canary, f"latency_{q}_se_ms"), getattr(primary, f"latency_{q}_se_ms")
    # Beyond the bound: c - p * ratio (relative) or c - p - slack; p's noise counts ratio-fold.
    se = math.hypot(se_c or 0.0, (ratio if relative else 1.0) * (se_p or 0.0))
    b = judge(c - limit - _EPS, se, allowed, alpha)
    point = "" if se_c is not None and se_p is not None else " (no interval: compared as points)"
    return _check(f"latency_{q}", f"latency {q} {c:.1f} ms vs primary {p:.1f} ms ({rule}){point}",
                  b, c, p, limit)


def _metric_check(canary: VersionSummary, primary: VersionSummary, cfg: CanaryConfig) -> Check:
    name = canary.metric_name or primary.metric_name or "metric"
    c, p = float(canary.metric), float(primary.metric)  # type: ignore[arg-type]
    up = higher_is_better(name)
    r, a = cfg.max_metric_degradation_ratio, cfg.max_metric_degradation
    allowed = a + r * abs(p)
    # The canary may be worse than the primary by ``allowed``; the primary's value is
    # itself an estimate, so its noise enters scaled by its weight in the limit.
    k = (1 - r) if up else (1 + r)
    excess = (p - c - allowed) if up else (c - p - allowed)
    se = math.hypot(canary.metric_se or 0.0, k * (primary.metric_se or 0.0))
    b = judge(excess - _EPS, se, allowed, cfg.alpha)
    tolerance = f"{a:g}" + (f" + {r:.0%} of the primary's" if r else "")
    return _check(f"metric {name}",
                  f"{name} on labelled rows {c:.4f} vs primary {p:.4f} ({'higher' if up else 'lower'} is "
                  f"better; may be worse by at most {tolerance} = {allowed:.4g}; {canary.labeled_rows} and "
                  f"{primary.labeled_rows} labelled rows)", b, c, p, (p - allowed) if up else (p + allowed))


def decide(primary: VersionSummary, canary: VersionSummary, cfg: CanaryConfig | None = None) -> Verdict:
    """Compare the canary with the primary; see the module docstring for the rules."""
    cfg = cfg or CanaryConfig()
    pv, cv = primary.version, canary.version

    def verdict(decision: str, reasons: list[str], checks: list[Check]) -> Verdict:
        return Verdict(decision, reasons, checks, pv, cv)

    # 1. Fail fast on errors that no amount of further traffic could dilute.
    allowed_errors = (primary.error_rate + cfg.max_error_rate_increase) * cfg.min_rows
    if canary.rows < cfg.min_rows and canary.errors > allowed_errors + _EPS:
        check = Check("errors", False,
                      f"canary {cv} failed {canary.errors} of {canary.rows} rows: more than the "
                      f"{allowed_errors:.1f} the error bound allows even at {cfg.min_rows} rows",
                      canary.error_rate, primary.error_rate)
        return verdict(ROLLBACK, [check.detail], [check])

    # 2. Enough evidence?
    short = [f"{role} {s.version} has {s.rows} scored rows (< {cfg.min_rows})"
             for role, s in (("primary", primary), ("canary", canary)) if s.rows < cfg.min_rows]
    if short:
        check = Check("samples", False, "too few samples: " + ", ".join(short),
                      float(canary.rows), float(primary.rows), float(cfg.min_rows))
        return verdict(HOLD, [check.detail], [check])

    # 3. Bounds, each on its confidence sequence.
    checks = [
        _rate_check("error rate", canary, primary, cfg.max_error_rate_increase, cfg.alpha),
        _rate_check("rejection rate", canary, primary, cfg.max_rejection_rate_increase, cfg.alpha),
    ]
    for q, ratio in (("p50", cfg.max_latency_p50_ratio), ("p95", cfg.max_latency_p95_ratio),
                     ("p99", cfg.max_latency_p99_ratio)):
        c = _latency_check(q, canary, primary, ratio, cfg.latency_slack_ms, cfg.alpha)
        if c is not None:
            checks.append(c)

    labels_ok = (primary.labeled_rows >= cfg.min_labeled_rows and canary.labeled_rows >= cfg.min_labeled_rows
                 and primary.metric is not None and canary.metric is not None)
    metric_check = _metric_check(canary, primary, cfg) if labels_ok else None
    if metric_check is not None:
        checks.append(metric_check)

    divergence = psi(primary.prediction_counts, canary.prediction_counts)
    js = jensen_shannon(primary.prediction_counts, canary.prediction_counts)
    div_check = None
    if divergence is not None:
        div_check = Check("prediction divergence", divergence <= cfg.max_psi + _EPS,
                          f"prediction distributions: PSI {divergence:.3f} (limit {cfg.max_psi:g}), "
                          f"Jensen-Shannon {js:.3f} bits", divergence, None, cfg.max_psi)
        checks.append(div_check)

    failed = [c for c in checks if not c.passed and c is not div_check]
    if failed:
        return verdict(ROLLBACK, [c.detail for c in failed], checks)

    # 4. Hold when the evidence cannot settle it yet.
    if not labels_ok:
        missing = (f"labels not yet arrived: {canary.labeled_rows} and {primary.labeled_rows} labelled rows "
                   f"(< {cfg.min_labeled_rows}); model metric not compared")
    else:
        missing = None
    if div_check is not None and not div_check.passed and not labels_ok:
        return verdict(HOLD, [div_check.detail + " and no labels yet to tell which side is right", missing], checks)
    if cfg.require_labels and not labels_ok:
        return verdict(HOLD, [missing + " (canary.require_labels is set)"], checks)
    open_checks = [c for c in checks if not c.settled]
    if open_checks:
        return verdict(HOLD, [c.detail + ": the interval still spans the bound; more traffic will settle it"
                              for c in open_checks], checks)

    # 5. No worse on everything compared.
    reasons = [f"canary {cv} is within every bound against {pv} on {canary.rows} and {primary.rows} rows "
               f"(each bound on a {1 - cfg.alpha:.0%} confidence sequence)"]
    if canary.source == "logs" and primary.source == "logs":
        reasons.append("errors and latency judged from the prediction logs alone (no Prometheus given): "
                       "failures the predictor never saw (queue-proxy 502/503, timeouts) are not counted")
    slower = [c for c in checks if c.name.startswith("latency") and c.canary is not None
              and c.primary is not None and c.canary > c.primary + _EPS]
    if slower:
        reasons.append("slower but within bounds: " + ", ".join(c.detail for c in slower))
    if div_check is not None and not div_check.passed:
        reasons.append(div_check.detail + ", but the labelled rows show the canary no worse")
    if metric_check is not None:
        reasons.append(metric_check.detail)
    if missing:
        reasons.append(missing)
    return verdict(PROMOTE, reasons, checks)
