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
3. Rollback when any bound is broken, with every broken bound as a reason:
   error rate, rejection rate (each an absolute increase over the primary's),
   latency p50/p95/p99 (a ratio of the primary's, with an absolute slack so a
   0.3 ms model is not judged on jitter), and the model metric on labelled
   rows (accuracy for classification, MAE for regression) once both versions
   have ``min_labeled_rows`` labels.
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

PROMOTE, HOLD, ROLLBACK = "promote", "hold", "rollback"
# Two-sided 95 % for the interval on the difference of the model metric.
METRIC_Z = 1.96
# Rates and metrics are floats: a difference exactly at a bound must pass.
_EPS = 1e-9
# PSI takes logs of shares; an empty bin on one side gets this share instead of 0.
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class VersionSummary:
    """One version's traffic over the analysis window."""

    version: str
    rows: int                       # scored rows, rejected ones included
    errors: int = 0                 # rows that failed inside the predictor
    rejections: int = 0             # rows refused as bad input
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    # Predictions per class (classification) or per bin of shared edges (regression).
    prediction_counts: dict[str, int] = field(default_factory=dict)
    labeled_rows: int = 0
    # Brier score from the logged probabilities (classification), else accuracy; MAE
    # for regression. ``metric_se``: its standard error over the labelled rows.
    metric: float | None = None
    metric_name: str | None = None
    metric_se: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.rows if self.rows else 0.0

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
    # False while the evidence cannot yet tell pass from fail (the metric's interval
    # spans the bound): the verdict holds.
    settled: bool = True


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


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}{unit}"


def _rate_check(name: str, canary: float, primary: float, bound: float) -> Check:
    passed = canary - primary <= bound + _EPS
    return Check(name, passed,
                 f"{name} {canary:.2%} vs primary {primary:.2%} (may be higher by at most {bound:.2%})",
                 canary, primary, primary + bound)


def _latency_check(q: str, canary: float | None, primary: float | None, ratio: float,
                   slack: float) -> Check | None:
    if canary is None or primary is None:
        return None
    limit = max(primary * ratio, primary + slack)
    passed = canary <= limit + _EPS
    return Check(f"latency_{q}", passed,
                 f"latency {q} {canary:.1f} ms vs primary {primary:.1f} ms "
                 f"(limit {limit:.1f} ms: x{ratio:g} or +{slack:g} ms)", canary, primary, limit)


def _higher_is_better(metric_name: str | None) -> bool:
    return metric_name not in ("mae", "rmse", "log_loss", "brier_score")


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

    # 3. Bounds.
    checks = [
        _rate_check("error rate", canary.error_rate, primary.error_rate, cfg.max_error_rate_increase),
        _rate_check("rejection rate", canary.rejection_rate, primary.rejection_rate,
                    cfg.max_rejection_rate_increase),
    ]
    for q, ratio in (("p50", cfg.max_latency_p50_ratio), ("p95", cfg.max_latency_p95_ratio),
                     ("p99", cfg.max_latency_p99_ratio)):
        c = _latency_check(q, getattr(canary, f"latency_{q}_ms"), getattr(primary, f"latency_{q}_ms"),
                           ratio, cfg.latency_slack_ms)
        if c is not None:
            checks.append(c)

    labels_ok = (primary.labeled_rows >= cfg.min_labeled_rows and canary.labeled_rows >= cfg.min_labeled_rows
                 and primary.metric is not None and canary.metric is not None)
    metric_check: Check | None = None
    if labels_ok:
        name = canary.metric_name or primary.metric_name or "metric"
        up = _higher_is_better(name)
        gain = (canary.metric - primary.metric) if up else (primary.metric - canary.metric)
        # The two versions score different rows, so the difference carries the noise
        # of both samples: a canary as good as the primary must not be rolled back on
        # an unlucky draw, and one clearly worse must be.
        se = math.hypot(canary.metric_se or 0.0, primary.metric_se or 0.0)
        low, high = gain - METRIC_Z * se, gain + METRIC_Z * se
        worse_for_sure = high < -cfg.max_metric_degradation - _EPS
        passed = low >= -cfg.max_metric_degradation - _EPS
        metric_check = Check(
            f"metric {name}", not worse_for_sure,
            f"{name} on labelled rows {canary.metric:.4f} vs primary {primary.metric:.4f} "
            f"({'higher' if up else 'lower'} is better; canary's gain {gain:+.4f}, 95% interval "
            f"{low:+.4f} to {high:+.4f}; may be worse by at most {cfg.max_metric_degradation:g}; "
            f"{canary.labeled_rows} and {primary.labeled_rows} labelled rows)",
            canary.metric, primary.metric, settled=passed or worse_for_sure)
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
    if metric_check is not None and not metric_check.settled:
        return verdict(HOLD, [metric_check.detail + ": the interval still spans the bound; "
                              "more labelled rows will settle it"], checks)

    # 5. No worse on everything compared.
    reasons = [f"canary {cv} is within every bound against {pv} on {canary.rows} and {primary.rows} rows"]
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
