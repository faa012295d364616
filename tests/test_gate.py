"""The gate decision, as a table of cases."""

from __future__ import annotations

import pytest

from kubeloop.components.gate import PROMOTE, REJECT, decide, decision_markdown, default_guardrails
from kubeloop.config import GateConfig, GuardrailConfig

BASE_CLS = {"roc_auc": 0.5, "log_loss": 0.69, "f1": 0.0}
CHAMP_CLS = {"roc_auc": 0.80, "log_loss": 0.45, "f1": 0.60}


def cls(**over):
    return {**CHAMP_CLS, **over}


NO_RAILS = GateConfig(guardrails=[])

CASES = [
    # id, task, challenger, champion, baseline, policy, expected decision, words in reason
    ("better-than-champion", "classification", cls(roc_auc=0.82), CHAMP_CLS, BASE_CLS, GateConfig(), PROMOTE, "beats the champion"),
    ("tie-never-promotes", "classification", cls(), CHAMP_CLS, BASE_CLS, GateConfig(min_improvement=0.0), REJECT, "does not beat"),
    ("improvement-below-minimum", "classification", cls(roc_auc=0.8005), CHAMP_CLS, BASE_CLS, GateConfig(min_improvement=0.001), REJECT, "needs > 0 and >= 0.001"),
    ("improvement-exactly-minimum", "classification", cls(roc_auc=0.8015), CHAMP_CLS, BASE_CLS, GateConfig(min_improvement=0.0015), PROMOTE, "beats"),
    ("worse-than-champion", "classification", cls(roc_auc=0.78), CHAMP_CLS, BASE_CLS, GateConfig(), REJECT, "does not beat"),
    ("guardrail-log-loss-breaks", "classification", cls(roc_auc=0.85, log_loss=0.50), CHAMP_CLS, BASE_CLS, GateConfig(), REJECT, "log_loss"),
    ("guardrail-within-relative-tolerance", "classification", cls(roc_auc=0.85, log_loss=0.46), CHAMP_CLS, BASE_CLS, GateConfig(), PROMOTE, "holds every guardrail"),
    ("guardrail-f1-absolute", "classification", cls(roc_auc=0.85, f1=0.55), CHAMP_CLS, BASE_CLS, GateConfig(), REJECT, "f1"),
    ("guardrails-off", "classification", cls(roc_auc=0.85, f1=0.10, log_loss=2.0), CHAMP_CLS, BASE_CLS, NO_RAILS, PROMOTE, "beats"),
    ("guardrail-champion-lacks-metric", "classification", cls(roc_auc=0.85), {"roc_auc": 0.8}, BASE_CLS, GateConfig(), PROMOTE, "beats"),
    ("guardrail-challenger-lacks-metric", "classification", {"roc_auc": 0.85}, CHAMP_CLS, BASE_CLS, GateConfig(), REJECT, "fails guardrail"),
    ("no-champion-beats-baseline", "classification", cls(), None, BASE_CLS, GateConfig(), PROMOTE, "no production model yet; beats the baseline"),
    ("no-champion-equals-baseline", "classification", cls(roc_auc=0.5), None, BASE_CLS, GateConfig(), REJECT, "does not beat the baseline"),
    ("no-champion-below-required-lift", "classification", cls(roc_auc=0.52), None, BASE_CLS, GateConfig(min_lift_over_baseline=0.05), REJECT, "does not beat the baseline"),
    ("no-champion-no-baseline-metric", "classification", cls(), None, {}, GateConfig(), REJECT, "baseline has no roc_auc"),
    ("challenger-metric-missing", "classification", {"f1": 0.9}, CHAMP_CLS, BASE_CLS, GateConfig(), REJECT, "no value for roc_auc"),
    ("challenger-metric-nan", "classification", cls(roc_auc=float("nan")), CHAMP_CLS, BASE_CLS, GateConfig(), REJECT, "no value for roc_auc"),
    ("champion-metric-missing", "classification", cls(roc_auc=0.9), {"f1": 0.5}, BASE_CLS, GateConfig(), REJECT, "production model has no roc_auc"),
    # Lower-is-better primary metrics: a smaller number is the improvement.
    ("rmse-lower-promotes", "regression", {"rmse": 9.0, "mae": 7.0}, {"rmse": 10.0, "mae": 7.0}, {"rmse": 20.0}, GateConfig(), PROMOTE, "+1.0000"),
    ("rmse-higher-rejects", "regression", {"rmse": 11.0, "mae": 7.0}, {"rmse": 10.0, "mae": 7.0}, {"rmse": 20.0}, GateConfig(), REJECT, "-1.0000"),
    ("rmse-tie-rejects", "regression", {"rmse": 10.0, "mae": 7.0}, {"rmse": 10.0, "mae": 7.0}, {"rmse": 20.0}, GateConfig(min_improvement=0), REJECT, "does not beat"),
    ("rmse-no-champion-beats-mean", "regression", {"rmse": 10.0}, None, {"rmse": 20.0}, GateConfig(), PROMOTE, "lift +10.0000"),
    ("rmse-no-champion-worse-than-mean", "regression", {"rmse": 25.0}, None, {"rmse": 20.0}, GateConfig(), REJECT, "lift -5.0000"),
    ("mae-guardrail-relative", "regression", {"rmse": 9.0, "mae": 7.5}, {"rmse": 10.0, "mae": 7.0}, {"rmse": 20.0}, GateConfig(), REJECT, "mae"),
    ("log-loss-as-primary", "classification", cls(log_loss=0.40), CHAMP_CLS, BASE_CLS, GateConfig(primary_metric="log_loss", guardrails=[]), PROMOTE, "log_loss"),
    ("log-loss-as-primary-worse", "classification", cls(log_loss=0.50), CHAMP_CLS, BASE_CLS, GateConfig(primary_metric="log_loss", guardrails=[]), REJECT, "log_loss"),
    ("custom-guardrail-higher-is-better", "classification", cls(roc_auc=0.9, accuracy=0.70), cls(accuracy=0.80), BASE_CLS,
     GateConfig(guardrails=[GuardrailConfig(metric="accuracy", tolerance=0.05)]), REJECT, "accuracy"),
]


@pytest.mark.parametrize(
    "task,challenger,champion,baseline,policy,expected,words",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_gate_table(task, challenger, champion, baseline, policy, expected, words):
    d = decide(task=task, challenger=challenger, champion=champion, baseline=baseline, policy=policy)
    assert d.decision == expected, d.reason
    assert words in d.reason or any(words in c.detail for c in d.checks), d.reason
    assert d.compared_with == ("champion" if champion is not None else "baseline")
    # The reason is the one the checks support: a promotion has no failed check.
    assert d.promote == all(c.passed for c in d.checks)


def test_champion_that_cannot_be_scored_rejects_and_says_why():
    d = decide(
        task="classification",
        challenger=cls(roc_auc=0.99),
        champion=None,
        baseline=BASE_CLS,
        policy=GateConfig(),
        champion_version="v3",
        champion_error="missing feature columns ['plan']",
    )
    assert d.decision == REJECT
    assert "v3" in d.reason and "plan" in d.reason


def test_default_guardrails_differ_by_task():
    assert {g.metric for g in default_guardrails("classification")} == {"log_loss", "f1"}
    assert {g.metric for g in default_guardrails("regression")} == {"mae"}


def test_decision_is_json_able_and_renders():
    import json

    d = decide(task="classification", challenger=cls(roc_auc=0.9), champion=CHAMP_CLS, baseline=BASE_CLS,
               policy=GateConfig(), champion_version="v2")
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data["decision"] == "promote" and "v2" in data["reason"]
    md = decision_markdown(d, model_name="churn")
    assert "PROMOTE" in md and "primary:roc_auc" in md and "guardrail:log_loss" in md
