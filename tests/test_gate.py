"""The gate decision over paired estimates, as a table of cases."""

from __future__ import annotations

import json

import pytest

from kubeloop.components.gate import (
    PROMOTE,
    REJECT,
    decide,
    decide_from_evaluation,
    decision_markdown,
    default_guardrails,
    gate_metrics,
)
from kubeloop.config import GateConfig, GuardrailConfig
from kubeloop.metric_names import improvement


def pe(metric: str, mine: float | None, theirs: float | None, width: float = 0.01, n: int = 500):
    """A paired estimate: the change is ``mine`` vs ``theirs``, +/- ``width`` around it."""
    est = None if mine is None or theirs is None else improvement(metric, mine, theirs)
    return {
        "metric": metric,
        "estimate": est,
        "low": None if est is None else est - width,
        "high": None if est is None else est + width,
        "confidence": 0.95,
        "n_rows": n,
        "challenger": mine,
        "reference": theirs,
    }


def comp(n: int = 500, width: float = 0.01, **pairs):
    """A comparison: metric=(challenger, reference) for each metric."""
    return {
        "n_rows": n,
        "paired": {m: pe(m, a, b, width, n) for m, (a, b) in pairs.items()},
    }


# Champion comparison with the default guardrails held (log_loss and f1 unchanged).
def champ(roc=(0.82, 0.80), log_loss=(0.45, 0.45), f1=(0.60, 0.60), n=500, width=0.01, **more):
    pairs = {"roc_auc": roc, "log_loss": log_loss, "f1": f1, **more}
    return comp(n, width, **{k: v for k, v in pairs.items() if v is not None})


BASE = comp(500, 0.01, roc_auc=(0.82, 0.5))
NO_RAILS = GateConfig(guardrails=[])

CASES = [
    # id, task, champion comparison, baseline comparison, policy, expected, words in reason
    (
        "clearly-better",
        "classification",
        champ(),
        BASE,
        GateConfig(),
        PROMOTE,
        "beats the champion",
    ),
    (
        "better-but-within-noise",
        "classification",
        champ(roc=(0.805, 0.80)),
        BASE,
        GateConfig(),
        REJECT,
        "within noise",
    ),
    (
        "lower-end-below-min-improvement",
        "classification",
        champ(roc=(0.815, 0.80)),
        BASE,
        GateConfig(min_improvement=0.01),
        REJECT,
        "within noise",
    ),
    (
        "lower-end-exactly-min-improvement",
        "classification",
        champ(roc=(0.8115, 0.80), width=0.01),
        BASE,
        GateConfig(min_improvement=0.0015),
        PROMOTE,
        "beats",
    ),
    (
        "tie-never-promotes",
        "classification",
        champ(roc=(0.80, 0.80), width=0.0),
        BASE,
        GateConfig(min_improvement=0.0),
        REJECT,
        "does not beat",
    ),
    (
        "worse",
        "classification",
        champ(roc=(0.78, 0.80)),
        BASE,
        GateConfig(),
        REJECT,
        "does not beat",
    ),
    (
        "too-few-rows",
        "classification",
        champ(n=30),
        BASE,
        GateConfig(min_test_rows=50),
        REJECT,
        "too few rows",
    ),
    (
        "rows-exactly-minimum",
        "classification",
        champ(n=50),
        BASE,
        GateConfig(min_test_rows=50),
        PROMOTE,
        "beats",
    ),
    # Guardrails: the estimated change must stay within tolerance. A noisy interval
    # alone does not block (on a small test set the worse end of a log-loss interval
    # would block every challenger, better ones included).
    # log loss 0.48 vs 0.45: the change -0.03 is beyond 5% of 0.45 (0.0225).
    (
        "guardrail-log-loss-estimate-breaks",
        "classification",
        champ(roc=(0.85, 0.80), log_loss=(0.48, 0.45)),
        BASE,
        GateConfig(),
        REJECT,
        "log_loss",
    ),
    # log loss 0.465 vs 0.45: the change -0.015 is within 0.0225, though the
    # interval's worse end (-0.025) is not: noise, not harm.
    (
        "guardrail-log-loss-within-but-noisy-interval",
        "classification",
        champ(roc=(0.85, 0.80), log_loss=(0.465, 0.45)),
        BASE,
        GateConfig(),
        PROMOTE,
        "holds every guardrail",
    ),
    (
        "guardrail-log-loss-worse-end-within",
        "classification",
        champ(roc=(0.85, 0.80), log_loss=(0.45, 0.45)),
        BASE,
        GateConfig(),
        PROMOTE,
        "holds every guardrail",
    ),
    (
        "guardrail-f1-absolute",
        "classification",
        champ(roc=(0.85, 0.80), f1=(0.57, 0.60), width=0.015),
        BASE,
        GateConfig(),
        REJECT,
        "f1",
    ),
    (
        "guardrail-f1-within-tolerance",
        "classification",
        champ(roc=(0.85, 0.80), f1=(0.59, 0.60), width=0.015),
        BASE,
        GateConfig(),
        PROMOTE,
        "holds every guardrail",
    ),
    (
        "guardrails-off",
        "classification",
        champ(roc=(0.85, 0.80), f1=(0.1, 0.6), log_loss=(2.0, 0.45)),
        BASE,
        NO_RAILS,
        PROMOTE,
        "beats",
    ),
    (
        "guardrail-champion-lacks-metric",
        "classification",
        champ(roc=(0.85, 0.80), f1=(0.6, None)),
        BASE,
        GateConfig(),
        PROMOTE,
        "beats",
    ),
    (
        "guardrail-challenger-lacks-metric",
        "classification",
        champ(roc=(0.85, 0.80), f1=(None, 0.6)),
        BASE,
        GateConfig(),
        REJECT,
        "fails guardrail",
    ),
    (
        "guardrail-not-estimated",
        "classification",
        champ(roc=(0.85, 0.80), f1=None),
        BASE,
        GateConfig(),
        REJECT,
        "no paired estimate of f1",
    ),
    # No champion: the baseline, with the same rules on the interval.
    (
        "no-champion-beats-baseline",
        "classification",
        None,
        BASE,
        GateConfig(),
        PROMOTE,
        "beats the baseline",
    ),
    (
        "no-champion-equals-baseline",
        "classification",
        None,
        comp(roc_auc=(0.5, 0.5)),
        GateConfig(),
        REJECT,
        "does not beat the baseline",
    ),
    (
        "no-champion-within-noise",
        "classification",
        None,
        comp(width=0.05, roc_auc=(0.53, 0.5)),
        GateConfig(),
        REJECT,
        "within noise",
    ),
    (
        "no-champion-below-required-lift",
        "classification",
        None,
        comp(roc_auc=(0.52, 0.5)),
        GateConfig(min_lift_over_baseline=0.05),
        REJECT,
        "lower end must be > 0 and >= 0.05",
    ),
    (
        "no-champion-too-few-rows",
        "classification",
        None,
        comp(n=8, roc_auc=(0.9, 0.5)),
        GateConfig(),
        REJECT,
        "too few rows",
    ),
    (
        "no-champion-no-baseline-metric",
        "classification",
        None,
        comp(roc_auc=(0.8, None)),
        GateConfig(),
        REJECT,
        "baseline has no roc_auc",
    ),
    ("nothing-to-compare-with", "classification", None, None, GateConfig(), REJECT, "no baseline"),
    (
        "challenger-metric-missing",
        "classification",
        champ(roc=(None, 0.8)),
        BASE,
        GateConfig(),
        REJECT,
        "no value for roc_auc",
    ),
    (
        "champion-metric-missing",
        "classification",
        champ(roc=(0.9, None)),
        BASE,
        GateConfig(),
        REJECT,
        "production model has no roc_auc",
    ),
    # Lower-is-better primary metrics: a smaller number is the improvement.
    (
        "rmse-lower-promotes",
        "regression",
        comp(rmse=(9.0, 10.0), mae=(7.0, 7.0)),
        comp(rmse=(9.0, 20.0)),
        GateConfig(),
        PROMOTE,
        "+1.0000",
    ),
    (
        "rmse-higher-rejects",
        "regression",
        comp(rmse=(11.0, 10.0), mae=(7.0, 7.0)),
        comp(rmse=(11.0, 20.0)),
        GateConfig(),
        REJECT,
        "-1.0000",
    ),
    (
        "rmse-lower-within-noise",
        "regression",
        comp(width=2.0, rmse=(9.0, 10.0), mae=(7.0, 7.0)),
        comp(rmse=(9.0, 20.0)),
        GateConfig(),
        REJECT,
        "within noise",
    ),
    (
        "rmse-tie-rejects",
        "regression",
        comp(width=0.0, rmse=(10.0, 10.0), mae=(7.0, 7.0)),
        comp(rmse=(10.0, 20.0)),
        GateConfig(min_improvement=0),
        REJECT,
        "does not beat",
    ),
    (
        "rmse-no-champion-beats-mean",
        "regression",
        None,
        comp(rmse=(10.0, 20.0)),
        GateConfig(),
        PROMOTE,
        "+10.0000",
    ),
    (
        "rmse-no-champion-worse-than-mean",
        "regression",
        None,
        comp(rmse=(25.0, 20.0)),
        GateConfig(),
        REJECT,
        "-5.0000",
    ),
    (
        "mae-guardrail-relative",
        "regression",
        comp(rmse=(9.0, 10.0), mae=(7.5, 7.0)),
        comp(rmse=(9.0, 20.0)),
        GateConfig(),
        REJECT,
        "mae",
    ),
    (
        "log-loss-as-primary",
        "classification",
        comp(log_loss=(0.40, 0.45)),
        BASE,
        GateConfig(primary_metric="log_loss", guardrails=[]),
        PROMOTE,
        "log_loss",
    ),
    (
        "log-loss-as-primary-worse",
        "classification",
        comp(log_loss=(0.50, 0.45)),
        BASE,
        GateConfig(primary_metric="log_loss", guardrails=[]),
        REJECT,
        "log_loss",
    ),
    (
        "custom-guardrail-higher-is-better",
        "classification",
        champ(roc=(0.9, 0.8), accuracy=(0.70, 0.80)),
        BASE,
        GateConfig(guardrails=[GuardrailConfig(metric="accuracy", tolerance=0.05)]),
        REJECT,
        "accuracy",
    ),
]


@pytest.mark.parametrize(
    "task,champion,baseline,policy,expected,words",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_gate_table(task, champion, baseline, policy, expected, words):
    d = decide(task=task, champion=champion, baseline=baseline, policy=policy)
    assert d.decision == expected, d.reason
    assert words in d.reason or any(words in c.detail for c in d.checks), d.reason
    want = (
        "champion" if champion is not None else ("baseline" if baseline is not None else "nothing")
    )
    assert d.compared_with == want
    # The reason is the one the checks support: a promotion has no failed check.
    assert d.promote == all(c.passed for c in d.checks)


def test_reason_names_the_estimate_interval_and_rows():
    d = decide(
        task="classification",
        champion=champ(n=1234),
        baseline=BASE,
        policy=GateConfig(),
        champion_version="v2",
    )
    assert d.promote
    assert (
        "v2" in d.reason and "+0.0200" in d.reason and "95% interval +0.0100 to +0.0300" in d.reason
    )
    assert "1,234 rows" in d.reason
    assert (d.estimate, d.n_rows, d.confidence) == (pytest.approx(0.02), 1234, 0.95)
    assert d.low == pytest.approx(0.01) and d.high == pytest.approx(0.03)


def test_too_few_rows_says_how_many_were_left_out():
    c = champ(n=20)
    c["n_excluded"] = 480
    d = decide(
        task="classification", champion=c, baseline=BASE, policy=GateConfig(min_test_rows=50)
    )
    assert (
        d.decision == REJECT
        and "20 test rows" in d.reason
        and "480" in d.reason
        and "50" in d.reason
    )


@pytest.mark.parametrize(
    "mode,expected,against,words",
    [
        ("compare_to_baseline", PROMOTE, "baseline", "could not be loaded or scored"),
        ("block", REJECT, "champion", "gate.on_champion_error is block"),
    ],
)
def test_champion_that_cannot_be_scored_has_an_explicit_outcome(mode, expected, against, words):
    d = decide(
        task="classification",
        champion=None,
        baseline=BASE,
        policy=GateConfig(on_champion_error=mode),
        champion_version="v3",
        champion_error="ModuleNotFoundError: No module named 'old_lib'",
    )
    assert d.decision == expected and d.compared_with == against
    text = d.reason + " ".join(d.notes)
    assert words in text and "v3" in text and "old_lib" in text


def test_champion_error_against_a_weak_baseline_still_needs_the_interval():
    d = decide(
        task="classification",
        champion=None,
        baseline=comp(width=0.05, roc_auc=(0.52, 0.5)),
        policy=GateConfig(),
        champion_error="boom",
    )
    assert d.decision == REJECT and "within noise" in d.reason


def test_champion_note_is_carried():
    c = champ()
    c["note"] = "v1 has no row fingerprints"
    d = decide(task="classification", champion=c, baseline=BASE, policy=GateConfig())
    assert "v1 has no row fingerprints" in d.notes
    assert "v1 has no row fingerprints" in decision_markdown(d, model_name="m")


def test_default_guardrails_differ_by_task():
    assert {g.metric for g in default_guardrails("classification")} == {"log_loss", "f1"}
    assert {g.metric for g in default_guardrails("regression")} == {"mae"}
    assert gate_metrics("classification", GateConfig()) == ["roc_auc", "log_loss", "f1"]
    assert gate_metrics("regression", GateConfig(primary_metric="mae")) == ["mae"]


def test_decision_is_json_able_and_renders():
    ev = {
        "task": "classification",
        "champion_comparison": champ(),
        "baseline_comparison": BASE,
        "champion_version": "v2",
        "champion_error": None,
    }
    d = decide_from_evaluation(ev, GateConfig())
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data["decision"] == "promote" and "v2" in data["reason"]
    assert data["n_rows"] == 500 and data["low"] == pytest.approx(0.01)
    md = decision_markdown(d, model_name="churn")
    assert "PROMOTE" in md and "primary:roc_auc" in md and "guardrail:log_loss" in md
    assert "500 shared test rows" in md and "95%" in md


def test_no_rows_left_is_too_few_rows_not_a_missing_metric():
    empty = {"n_rows": 0, "n_excluded": 700, "paired": {"roc_auc": pe("roc_auc", None, None, n=0)}}
    d = decide(task="classification", champion=empty, baseline=BASE, policy=GateConfig())
    assert d.decision == REJECT and "too few rows" in d.reason and "700" in d.reason


@pytest.mark.parametrize(
    "theirs,ours,noted",
    [
        ("no", "yes", True),  # registered under the minority rule, now the conventional label
        ("yes", "yes", False),
        (None, "yes", False),  # a champion with no recorded label: nothing to say
        (1, "1", False),  # the same label, as the schema and the config spell it
    ],
)
def test_a_champion_with_another_positive_label_is_compared_on_the_same_class(theirs, ours, noted):
    from kubeloop.components.gate import positive_label_note

    ev = {
        "task": "classification",
        "champion_comparison": champ(),
        "baseline_comparison": BASE,
        "champion_version": "v2",
        "champion_positive_label": theirs,
        "positive_label": ours,
    }
    d = decide_from_evaluation(ev, GateConfig())
    note = positive_label_note(ev)
    assert (note is not None) is noted
    if noted:
        assert note in d.notes and "v2 was registered with positive label 'no'" in note
        assert "scored for 'yes' on the same test rows" in note
    else:
        assert not any("positive label" in n for n in d.notes)
