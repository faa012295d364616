"""Gate stage: does the challenger replace the production model?

The decision is a pure function of the challenger's, champion's and baseline's
metrics on the same held-out test set and a policy (one primary metric, guardrail
metrics, a minimum improvement). With no champion the challenger must beat the
trivial baseline instead. Every check is returned with its numbers, so the reason
printed to a user is the one the code acted on.

Rules, in order:
1. The challenger's primary metric must be a number (a missing or undefined
   metric never promotes).
2. With a champion: the improvement on the primary metric (in the metric's own
   direction) must be > 0 and >= ``min_improvement``; a tie never promotes, so two
   equally good runs do not churn production.
3. With a champion: no guardrail may degrade by more than its tolerance.
   A guardrail the champion lacks (older model, other task) is skipped and said so.
4. With no champion (or a champion that could not be scored on this test set
   when ``champion_error`` is set, which rejects): the improvement over the
   baseline must be > 0 and >= ``min_lift_over_baseline``.
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kubeloop.config import GateConfig, GuardrailConfig
from kubeloop.metric_names import higher_is_better, improvement, primary_metric

PROMOTE = "promote"
# Metrics arrive as floats: 0.8015 - 0.8 is 0.00149999..., so a threshold met exactly
# must not fail on representation error, and a difference this small is a tie.
_EPS = 1e-9
REJECT = "reject"


def default_guardrails(task: str) -> list[GuardrailConfig]:
    """Guardrails used when the configuration names none.

    Classification guards calibration-sensitive log loss (relative, since its scale
    depends on the class balance) and F1 at the default threshold; regression
    guards MAE relative to the champion's (its scale is the target's).
    """
    if task == "classification":
        return [
            GuardrailConfig(metric="log_loss", tolerance=0.05, relative=True),
            GuardrailConfig(metric="f1", tolerance=0.02),
        ]
    return [GuardrailConfig(metric="mae", tolerance=0.05, relative=True)]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    challenger: float | None = None
    reference: float | None = None
    improvement: float | None = None


@dataclass(frozen=True)
class GateDecision:
    decision: str
    reason: str
    primary_metric: str
    compared_with: str  # "champion" | "baseline"
    checks: list[Check] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(metrics: dict[str, Any] | None, name: str) -> float | None:
    if not metrics:
        return None
    value = metrics.get(name)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _guardrail_check(
    rail: GuardrailConfig, challenger: dict[str, Any], champion: dict[str, Any]
) -> Check:
    mine, theirs = _number(challenger, rail.metric), _number(champion, rail.metric)
    if theirs is None:
        return Check(f"guardrail:{rail.metric}", True, "skipped: the champion has no value for it")
    if mine is None:
        return Check(
            f"guardrail:{rail.metric}", False, "the challenger has no value for it", None, theirs
        )
    gain = improvement(rail.metric, mine, theirs)
    allowed = rail.tolerance * abs(theirs) if rail.relative else rail.tolerance
    passed = -gain <= allowed + _EPS
    how = f"{rail.tolerance:.1%} of the champion's" if rail.relative else f"{rail.tolerance:g}"
    detail = (
        f"{rail.metric} {_fmt(mine)} vs champion {_fmt(theirs)} "
        f"({'higher' if higher_is_better(rail.metric) else 'lower'} is better; "
        f"may degrade by at most {how})"
    )
    return Check(f"guardrail:{rail.metric}", passed, detail, mine, theirs, gain)


def decide(
    *,
    task: str,
    challenger: dict[str, Any],
    baseline: dict[str, Any] | None,
    champion: dict[str, Any] | None,
    policy: GateConfig,
    champion_version: str | None = None,
    champion_error: str | None = None,
) -> GateDecision:
    """Compare the challenger with the champion (or the baseline when there is none)."""
    metric = primary_metric(task, policy.primary_metric)
    mine = _number(challenger, metric)
    if mine is None:
        check = Check(f"primary:{metric}", False, f"the challenger has no value for {metric}")
        return GateDecision(REJECT, check.detail, metric, "champion" if champion else "baseline", [check])

    if champion_error is not None:
        reason = (
            f"the production model {champion_version or ''} could not be scored on this test set "
            f"({champion_error}); refusing to replace a model we cannot compare with"
        ).replace("  ", " ")
        return GateDecision(REJECT, reason, metric, "champion", [Check("champion", False, reason)])

    if champion is None:
        return _against_baseline(metric, mine, baseline, policy)

    theirs = _number(champion, metric)
    if theirs is None:
        reason = f"the production model has no {metric} on this test set"
        return GateDecision(REJECT, reason, metric, "champion", [Check(f"primary:{metric}", False, reason)])

    gain = improvement(metric, mine, theirs)
    primary_ok = gain > _EPS and gain >= policy.min_improvement - _EPS
    primary = Check(
        f"primary:{metric}",
        primary_ok,
        f"{metric} {_fmt(mine)} vs champion {_fmt(theirs)}: improvement {gain:+.4f} "
        f"(needs > 0 and >= {policy.min_improvement:g})",
        mine,
        theirs,
        gain,
    )
    rails = policy.guardrails if policy.guardrails is not None else default_guardrails(task)
    checks = [primary] + [_guardrail_check(r, challenger, champion) for r in rails if r.metric != metric]
    failed = [c for c in checks if not c.passed]
    who = f"champion {champion_version}" if champion_version else "champion"
    if not failed:
        reason = f"beats the {who} on {metric} by {gain:+.4f} and holds every guardrail"
        return GateDecision(PROMOTE, reason, metric, "champion", checks)
    if not primary_ok:
        reason = (
            f"does not beat the {who}: {metric} {_fmt(mine)} vs {_fmt(theirs)} "
            f"(improvement {gain:+.4f}, needs > 0 and >= {policy.min_improvement:g})"
        )
    else:
        reason = "fails guardrail " + "; ".join(c.detail for c in failed)
    return GateDecision(REJECT, reason, metric, "champion", checks)


def _against_baseline(
    metric: str, mine: float, baseline: dict[str, Any] | None, policy: GateConfig
) -> GateDecision:
    ref = _number(baseline, metric)
    if ref is None:
        # A baseline without the metric (e.g. a constant predictor's ROC-AUC is 0.5 but
        # some metrics are undefined) cannot vouch for the challenger.
        reason = f"no production model and the baseline has no {metric} to compare with"
        return GateDecision(REJECT, reason, metric, "baseline", [Check(f"baseline:{metric}", False, reason)])
    gain = improvement(metric, mine, ref)
    ok = gain > _EPS and gain >= policy.min_lift_over_baseline - _EPS
    check = Check(
        f"baseline:{metric}",
        ok,
        f"{metric} {_fmt(mine)} vs baseline {_fmt(ref)}: lift {gain:+.4f} "
        f"(needs > 0 and >= {policy.min_lift_over_baseline:g})",
        mine,
        ref,
        gain,
    )
    if ok:
        reason = f"no production model yet; beats the baseline on {metric} by {gain:+.4f}"
        return GateDecision(PROMOTE, reason, metric, "baseline", [check])
    reason = f"no production model yet and it does not beat the baseline: {check.detail}"
    return GateDecision(REJECT, reason, metric, "baseline", [check])


def decision_markdown(decision: GateDecision, *, model_name: str) -> str:
    icon = "PROMOTE" if decision.promote else "REJECT"
    lines = [
        f"# Gate: {icon} `{model_name}`",
        "",
        f"**{decision.reason}**",
        "",
        f"Primary metric `{decision.primary_metric}`, compared with the {decision.compared_with}.",
        "",
        "| check | result | challenger | reference | improvement |",
        "|---|---|---|---|---|",
    ]
    for c in decision.checks:
        gain = "" if c.improvement is None else f"{c.improvement:+.4f}"
        lines.append(
            f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {_fmt(c.challenger)} | "
            f"{_fmt(c.reference)} | {gain} |"
        )
    return "\n".join(lines) + "\n"


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import Artifact, Input, Markdown, Output  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def gate_op(
    evaluation: Input[Artifact],
    model_name: str,
    config: dict,
    decision: Output[Artifact],
    report: Output[Markdown],
) -> str:
    """Decide promote/reject from the evaluation; returns the decision, so later
    steps (deploy) can branch on it; the register step acts on it."""
    import json

    from kubeloop.components.gate import decide, decision_markdown
    from kubeloop.config import Config
    from kubeloop.progress import stage

    with stage("gate") as st:
        cfg = Config.from_dict(config)
        ev = json.loads(open(evaluation.path).read())
        d = decide(
            task=ev["task"],
            challenger=ev["metrics"],
            baseline=ev.get("baseline_metrics"),
            champion=ev.get("champion_metrics"),
            policy=cfg.gate,
            champion_version=ev.get("champion_version"),
            champion_error=ev.get("champion_error"),
        )
        with open(decision.path, "w") as f:
            json.dump(d.to_dict(), f, indent=2)
        with open(report.path, "w") as f:
            f.write(decision_markdown(d, model_name=model_name))
        decision.metadata["decision"] = d.decision
        st.result = f"{d.decision.upper()}: {d.reason}"
        st.details = {"decision": d.decision}
    return d.decision
