"""Stepping a canary through a traffic schedule, with recorded actions instead of a cluster."""

from __future__ import annotations

import pytest

from kubeloop.deploy.rollout import step_through
from kubeloop.deploy.verdict import HOLD, PROMOTE, ROLLBACK, Verdict
from kubeloop.errors import UserError


def run(steps, decisions):
    actions, queue = [], list(decisions)

    def judge(share):
        actions.append(("judge", share))
        return Verdict(queue.pop(0), ["because"])

    final, history = step_through(
        steps, set_share=lambda s: actions.append(("set", s)), judge=judge,
        promote_now=lambda: actions.append(("promote",)), rollback_now=lambda: actions.append(("rollback",)),
        interval=5, sleep=lambda s: actions.append(("sleep", s)))
    return final, actions, [s for s, _ in history]


@pytest.mark.parametrize("steps,decisions,final,actions", [
    ([10, 50, 100], [PROMOTE, PROMOTE], PROMOTE,
     [("set", 10), ("sleep", 5), ("judge", 10), ("set", 50), ("sleep", 5), ("judge", 50), ("promote",)]),
    ([10, 50, 100], [PROMOTE, ROLLBACK], ROLLBACK,
     [("set", 10), ("sleep", 5), ("judge", 10), ("set", 50), ("sleep", 5), ("judge", 50), ("rollback",)]),
    ([10, 50, 100], [ROLLBACK], ROLLBACK, [("set", 10), ("sleep", 5), ("judge", 10), ("rollback",)]),
    ([10, 50, 100], [HOLD], HOLD, [("set", 10), ("sleep", 5), ("judge", 10)]),
    ([10, 50], [PROMOTE, PROMOTE], HOLD,
     [("set", 10), ("sleep", 5), ("judge", 10), ("set", 50), ("sleep", 5), ("judge", 50)]),
    ([100], [PROMOTE], PROMOTE, [("judge", None), ("promote",)]),
    ([100], [ROLLBACK], ROLLBACK, [("judge", None), ("rollback",)]),
])
def test_schedule_table(steps, decisions, final, actions):
    got_final, got_actions, _ = run(steps, decisions)
    assert got_final == final and got_actions == actions


@pytest.mark.parametrize("steps", [[], [50, 10], [10, 10], [0, 120]])
def test_bad_schedules_are_refused_before_acting(steps):
    with pytest.raises(UserError):
        run(steps, [])
