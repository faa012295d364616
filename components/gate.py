"""Gate stage: does the challenger replace the production model?

The decision is a pure function of *paired* comparisons made by the evaluate
step: the challenger and the champion scored on the same test rows (minus every
row the champion was trained or validated on), or, with no champion, the
challenger and the trivial baseline on all test rows. Each comparison carries,
per metric, the improvement on those rows and its bootstrap interval at
``gate.confidence`` (``kubeloop.paired``). Every check is returned with its
numbers, so the reason printed to a user is the one the code acted on.

Rules, in order:
1. A production model that could not be loaded or scored (``champion_error``):
   ``gate.on_champion_error: block`` rejects; ``compare_to_baseline`` (the
   default) judges the challenger against the baseline as if there were no
   champion, and the decision says so.
2. The challenger's primary metric, and the reference's, must be numbers on the
   compared rows (a missing or undefined metric never promotes).
3. Fewer compared rows than ``gate.min_test_rows`` never promote ("too few rows").
4. The lower end of the improvement's interval must be > 0 and >=
   ``min_improvement`` (champion; with ``min_improvement_relative``, that fraction
   of the champion's value) or ``min_lift_over_baseline`` (baseline). With an id
   column the interval comes from resampling ids, and the reason says so. An
   estimate above 0 whose interval reaches below that is "better but within
   noise"; a tie never promotes, so two equally good runs do not churn production.
5. With a champion: for each guardrail the estimated change may lose at most the
   tolerance (the estimate, not the worse end of its interval: on a small test set
   a log-loss interval's worse end would block better challengers too); relative
   tolerances are fractions of the champion's value on the same rows. A guardrail
   the champion has no value for is skipped and said so.
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kubeloop.config import GateConfig, GuardrailConfig
from kubeloop.metric_names import higher_is_better, primary_metric

PROMOTE = "promote"
REJECT = "reject"
# Metrics arrive as floats: 0.8015 - 0.8 is 0.00149999..., so a threshold met exactly
# must not fail on representation error, and a difference this small is a tie.
_EPS = 1e-9


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


def gate_metrics(task: str, policy: GateConfig) -> list[str]:
    """The metrics the gate compares: the primary metric, then the guardrails'."""
    rails = policy.guardrails if policy.guardrails is not None else default_guardrails(task)
    return list(
        dict.fromkeys([primary_metric(task, policy.primary_metric)] + [r.metric for r in rails])
    )


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    challenger: float | None = None
    reference: float | None = None
    improvement: float | None = None
    low: float | None = None
    high: float | None = None
    n_rows: int | None = None


@dataclass(frozen=True)
class GateDecision:
    decision: str
    reason: str
    primary_metric: str
    compared_with: str  # "champion" | "baseline" | "nothing"
    checks: list[Check] = field(default_factory=list)
    confidence: float | None = None
    n_rows: int | None = None
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    champion_version: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _interval(p: dict[str, Any], confidence: float) -> str:
    groups = p.get("n_groups")
    # A cluster bootstrap says so: its interval rests on the groups, not the rows.
    unit = "" if groups is None else f" in {int(groups):,} ids, resampled by id"
    return (
        f"{_signed(_number(p.get('estimate')))} ({confidence:.0%} interval "
        f"{_signed(_number(p.get('low')))} to {_signed(_number(p.get('high')))}, "
        f"{int(p.get('n_rows') or 0):,} rows{unit})"
    )


def _paired(comparison: dict[str, Any] | None, metric: str) -> dict[str, Any] | None:
    if not comparison:
        return None
    return (comparison.get("paired") or {}).get(metric)


def _guardrail_check(rail: GuardrailConfig, comparison: dict[str, Any], confidence: float) -> Check:
    name = f"guardrail:{rail.metric}"
    p = _paired(comparison, rail.metric)
    if p is None:
        return Check(name, False, f"no paired estimate of {rail.metric} on the compared rows")
    mine, theirs = _number(p.get("challenger")), _number(p.get("reference"))
    n = int(p.get("n_rows") or 0)
    if theirs is None:
        return Check(name, True, "skipped: the champion has no value for it", mine, None, n_rows=n)
    if mine is None:
        return Check(name, False, "the challenger has no value for it", None, theirs, n_rows=n)
    gain, low, high = _number(p.get("estimate")), _number(p.get("low")), _number(p.get("high"))
    allowed = rail.tolerance * abs(theirs) if rail.relative else rail.tolerance
    # Judged on the estimate, not the worse end of its interval: on a small test set
    # a heavy-tailed metric (log loss) has an interval so wide that its worse end
    # would block every challenger, better ones included. The primary metric is
    # where noise must be cleared; a guardrail blocks a change whose most likely
    # effect is a loss beyond its tolerance.
    passed = gain is not None and gain >= -allowed - _EPS
    how = (
        f"{rail.tolerance:.1%} of the champion's ({allowed:.4f})"
        if rail.relative
        else f"{rail.tolerance:g}"
    )
    detail = (
        f"{rail.metric} {_fmt(mine)} vs champion {_fmt(theirs)}, change {_interval(p, confidence)} "
        f"({'higher' if higher_is_better(rail.metric) else 'lower'} is better; the estimated change "
        f"may lose at most {how})"
    )
    return Check(name, passed, detail, mine, theirs, gain, low, high, n)


def decide(
    *,
    task: str,
    policy: GateConfig,
    champion: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    champion_version: str | None = None,
    champion_error: str | None = None,
) -> GateDecision:
    """Promote or reject from the paired comparisons with the champion and the baseline.

    ``champion`` and ``baseline`` are comparisons as the evaluate step writes them:
    ``{"n_rows": int, "paired": {metric: PairedEstimate.to_dict()}, "note": str?}``;
    ``champion`` is None when there is no production model (or it failed: then
    ``champion_error`` says why).
    """
    metric = primary_metric(task, policy.primary_metric)
    conf = policy.confidence
    notes: list[str] = []
    pre: list[Check] = []
    who = f"champion {champion_version}" if champion_version else "champion"

    def reject(
        reason: str, against: str, checks: list[Check], p: dict[str, Any] | None = None
    ) -> GateDecision:
        return _decision(REJECT, reason, metric, against, checks, conf, p, champion_version, notes)

    if champion_error is not None:
        what = (
            f"the production model {champion_version or ''} could not be loaded or scored".replace(
                "  ", " "
            )
        )
        if policy.on_champion_error == "block":
            reason = (
                f"{what} ({champion_error}); gate.on_champion_error is block, so no challenger is "
                "promoted until `production` points at a version that loads and scores"
            )
            return reject(reason, "champion", [Check("champion", False, reason)])
        note = (
            f"{what} ({champion_error}); compared with the baseline instead "
            "(gate.on_champion_error: compare_to_baseline)"
        )
        notes.append(note)
        pre.append(Check("champion", True, note))
        champion = None
    elif champion is not None and champion.get("note"):
        notes.append(str(champion["note"]))

    comparison, against = (champion, "champion") if champion is not None else (baseline, "baseline")
    label = who if against == "champion" else "baseline"
    if comparison is None:
        reason = "no production model and no baseline to compare with"
        return reject(reason, "nothing", pre + [Check(f"baseline:{metric}", False, reason)])

    name = f"{'primary' if against == 'champion' else 'baseline'}:{metric}"
    p = _paired(comparison, metric)
    mine = _number(p.get("challenger")) if p else None
    theirs = _number(p.get("reference")) if p else None
    n_rows = int(comparison.get("n_rows") or (p or {}).get("n_rows") or 0)
    if n_rows < policy.min_test_rows:
        excluded = comparison.get("n_excluded")
        why = (
            f" after leaving out {int(excluded):,} the champion was trained or validated on"
            if against == "champion" and excluded
            else ""
        )
        reason = (
            f"too few rows to decide: {n_rows:,} test rows compared with the {label}{why}; "
            f"gate.min_test_rows is {policy.min_test_rows:,}"
        )
        return reject(reason, against, pre + [Check("rows", False, reason, n_rows=n_rows)], p)

    if mine is None:
        check = Check(name, False, f"the challenger has no value for {metric}", n_rows=n_rows)
        return reject(check.detail, against, pre + [check], p)
    if theirs is None:
        reason = (
            f"the production model has no {metric} on the compared rows"
            if against == "champion"
            else f"no production model and the baseline has no {metric} to compare with"
        )
        return reject(reason, against, pre + [Check(name, False, reason, mine, n_rows=n_rows)], p)

    gain, low, high = _number(p.get("estimate")), _number(p.get("low")), _number(p.get("high"))
    needed = policy.min_improvement if against == "champion" else policy.min_lift_over_baseline
    if against == "champion" and policy.min_improvement_relative:
        # A fraction of the champion's value on the same rows (rmse's scale is the target's).
        needed = policy.min_improvement * abs(theirs)
    need_text = f"{needed:g}" + (
        f" ({policy.min_improvement:.1%} of the champion's)"
        if against == "champion" and policy.min_improvement_relative
        else ""
    )
    primary_ok = low is not None and low > _EPS and low >= needed - _EPS
    word = "improvement" if against == "champion" else "lift"
    primary = Check(
        name,
        primary_ok,
        f"{metric} {_fmt(mine)} vs {label} {_fmt(theirs)}: {word} {_interval(p, conf)} "
        f"(the interval's lower end must be > 0 and >= {need_text})",
        mine,
        theirs,
        gain,
        low,
        high,
        n_rows,
    )
    checks = pre + [primary]
    if against == "champion":
        rails = policy.guardrails if policy.guardrails is not None else default_guardrails(task)
        checks += [_guardrail_check(r, comparison, conf) for r in rails if r.metric != metric]
    failed = [c for c in checks if not c.passed]
    if not failed:
        if against == "champion":
            reason = (
                f"beats the {who} on {metric} by {_interval(p, conf)} and holds every guardrail"
            )
        else:
            reason = (
                f"no production model yet; beats the baseline on {metric} by {_interval(p, conf)}"
            )
            if champion_error is not None:
                reason = f"production could not be scored; beats the baseline on {metric} by {_interval(p, conf)}"
        return _decision(PROMOTE, reason, metric, against, checks, conf, p, champion_version, notes)
    if not primary_ok:
        if gain is not None and gain > _EPS:
            reason = (
                f"better than the {label} but within noise: {metric} {_fmt(mine)} vs {_fmt(theirs)}, "
                f"{word} {_interval(p, conf)}; the interval's lower end must be > 0 and >= {need_text}"
            )
        else:
            reason = (
                f"does not beat the {label}: {metric} {_fmt(mine)} vs {_fmt(theirs)}, "
                f"{word} {_interval(p, conf)} (the interval's lower end must be > 0 and >= {need_text})"
            )
    else:
        reason = (
            f"beats the {who} on {metric} by {_interval(p, conf)} but fails guardrail "
            + "; ".join(c.detail for c in failed)
        )
    return reject(reason, against, checks, p)


def _decision(
    decision: str,
    reason: str,
    metric: str,
    against: str,
    checks: list[Check],
    confidence: float,
    p: dict[str, Any] | None,
    champion_version: str | None,
    notes: list[str],
) -> GateDecision:
    p = p or {}
    return GateDecision(
        decision=decision,
        reason=reason,
        primary_metric=metric,
        compared_with=against,
        checks=checks,
        confidence=confidence,
        n_rows=None if p.get("n_rows") is None else int(p["n_rows"]),
        estimate=_number(p.get("estimate")),
        low=_number(p.get("low")),
        high=_number(p.get("high")),
        champion_version=champion_version,
        notes=notes,
    )


def decide_from_evaluation(evaluation: dict[str, Any], policy: GateConfig) -> GateDecision:
    """``decide`` on the document the evaluate step writes (``evaluation.json``)."""
    decision = decide(
        task=evaluation["task"],
        policy=policy,
        champion=evaluation.get("champion_comparison"),
        baseline=evaluation.get("baseline_comparison"),
        champion_version=evaluation.get("champion_version"),
        champion_error=evaluation.get("champion_error"),
    )
    note = positive_label_note(evaluation)
    if note:
        decision.notes.append(note)
    return decision


def positive_label_note(evaluation: dict[str, Any]) -> str | None:
    """A champion registered with another positive label (the minority rule of earlier
    releases) is compared on the challenger's class: the evaluate step scores both
    models on the same test rows for the same label, and the decision says so."""
    theirs, ours = evaluation.get("champion_positive_label"), evaluation.get("positive_label")
    if theirs is None or ours is None or str(theirs) == str(ours):
        return None
    version = evaluation.get("champion_version") or "the champion"
    return (
        f"{version} was registered with positive label {theirs!r}; both models were scored "
        f"for {ours!r} on the same test rows, so the comparison is of the same class "
        f"(its registered metrics, for {theirs!r}, are not comparable with this run's)"
    )


def decision_markdown(decision: GateDecision, *, model_name: str) -> str:
    icon = "PROMOTE" if decision.promote else "REJECT"
    lines = [
        f"# Gate: {icon} `{model_name}`",
        "",
        f"**{decision.reason}**",
        "",
        f"Primary metric `{decision.primary_metric}`, compared with the {decision.compared_with}"
        + (
            f" ({decision.champion_version})"
            if decision.compared_with == "champion" and decision.champion_version
            else ""
        )
        + (f" on {decision.n_rows:,} shared test rows" if decision.n_rows is not None else "")
        + (
            f"; intervals are paired bootstrap {decision.confidence:.0%} intervals of the change, "
            "positive is better."
            if decision.confidence is not None
            else "."
        ),
        "",
        "| check | result | challenger | reference | change | interval low | interval high | rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in decision.checks:
        rows = "" if c.n_rows is None else f"{c.n_rows:,}"
        lines.append(
            f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {_fmt(c.challenger)} | "
            f"{_fmt(c.reference)} | {'' if c.improvement is None else _signed(c.improvement)} | "
            f"{'' if c.low is None else _signed(c.low)} | {'' if c.high is None else _signed(c.high)} | {rows} |"
        )
    if decision.notes:
        lines += [""] + [f"- {n}" for n in decision.notes]
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

    from kubeloop.components.gate import decide_from_evaluation, decision_markdown
    from kubeloop.config import Config
    from kubeloop.progress import stage

    with stage("gate") as st:
        cfg = Config.from_dict(config)
        ev = json.loads(open(evaluation.path).read())
        d = decide_from_evaluation(ev, cfg.gate)
        with open(decision.path, "w") as f:
            json.dump(d.to_dict(), f, indent=2)
        with open(report.path, "w") as f:
            f.write(decision_markdown(d, model_name=model_name))
        decision.metadata["decision"] = d.decision
        st.result = f"{d.decision.upper()}: {d.reason}"
        st.details = {"decision": d.decision}
    return d.decision
