"""Stepping a canary through a traffic schedule, with recorded actions instead of a cluster."""

from __future__ import annotations

import pytest

from kubeloop.deploy.rollout import Observed, last_writer, step_through, what_moved
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


# -- what a step acts on -------------------------------------------------------------------

def _obj(rv="10", generation=3, *, canary="v2", percent=10, primary="v1", managers=()):
    from kubeloop.deploy.inferenceservice import ServingSettings, Target, build_inference_service

    def t(v):
        return Target("churn", v, f"s3://models/registry/churn/versions/{v}/model/")

    if canary is None:
        obj = build_inference_service(t(primary), ServingSettings())
    else:
        obj = build_inference_service(t(canary), ServingSettings(), primary=t(primary), canary_percent=percent)
    obj["metadata"].update(resourceVersion=rv, generation=generation,
                           managedFields=[{"manager": m, "operation": "Update", "time": when} for m, when in managers])
    return obj


SEEN = Observed("10", 3, "v1", "v2", 10)


@pytest.mark.parametrize("obj,moved", [
    (_obj(), []),
    # KServe's status writes move the resourceVersion, never the generation: not a move
    (_obj(rv="57"), []),
    (_obj(rv="60", generation=4, percent=0), ["the canary's share is 0%, not 10%"]),
    (_obj(rv="61", generation=4, canary="v3"), ["the canary is v3, not v2"]),
    (_obj(rv="62", generation=4, canary=None, primary="v2"),
     ["the primary is v2, not v1", "there is no canary any more (v2 was promoted or rolled back)"]),
    (_obj(rv="63", generation=4), ["its spec changed (generation 3 -> 4)"]),
], ids=["same", "status-write", "rolled-back", "new-canary", "promoted", "other-spec-change"])
def test_what_moved_table(obj, moved):
    assert what_moved(SEEN, obj) == moved


def test_last_writer_is_the_latest_manager_that_is_not_a_status_write():
    obj = _obj(managers=[("kubeloop", "2026-12-01T08:00:00Z"), ("kubectl-patch", "2026-12-01T09:00:00Z")])
    obj["metadata"]["managedFields"].append({"manager": "manager", "operation": "Update", "subresource": "status",
                                             "time": "2026-12-01T10:00:00Z"})
    assert last_writer(obj) == "kubectl-patch at 2026-12-01T09:00:00Z"
    assert last_writer(_obj()) is None
