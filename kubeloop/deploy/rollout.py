"""Deploy, set, promote, roll back, step through a schedule: builders + cluster + registry.

The commands (``kubeloop deploy``, ``kubeloop canary ...``) and the pipeline
steps call these. Each reads the InferenceService, asks the pure builders in
``inferenceservice.py``/``patches.py`` what to send, sends it (or only returns
it with ``dry_run``), optionally waits for Ready, and keeps the registry's
aliases in step with the traffic ("registry aliases follow the traffic"):

- a full rollout (first version, or 100 %) points ``production`` at the version;
- a canary points ``canary`` at the new version;
- promote points ``production`` at the canary (``previous`` keeps the old one);
- rollback points ``production`` back at the primary if it had moved.

Alias moves are compare-and-swaps against what was read, and the registry is
checked before the cluster is touched, so a disagreement stops the command
before anything changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeloop.deploy.inferenceservice import (
    ServingSettings,
    Target,
    build_inference_service,
    check_percent,
    is_loopback,
)
from kubeloop.deploy.kube import InferenceServices, KubeError, expect, last_writer, summarize_status
from kubeloop.deploy.patches import (
    apply_merge_patch,
    deploy_patch,
    promote_patch,
    read_state,
    rollback_patch,
    set_percent_patch,
)
from kubeloop.deploy.verdict import HOLD, PROMOTE, ROLLBACK, Verdict
from kubeloop.errors import Conflict, UserError

PRODUCTION, CANARY = "production", "canary"


@dataclass
class Result:
    """What a rollout command did (or, with dry_run, would do)."""

    action: str                     # created, updated, unchanged, set, promoted, rolled-back
    name: str
    namespace: str
    dry_run: bool = False
    kind: str | None = None         # "object" (created) or "patch"; None when nothing was sent
    sent: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    registry: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    # The object as the API server answered the write (not part of the summary).
    applied: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        return self.sent is not None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "name": self.name, "namespace": self.namespace,
                "dry_run": self.dry_run, "changed": self.changed, "kind": self.kind, "sent": self.sent,
                "state": self.state, "status": self.status, "registry": self.registry,
                "notes": self.notes, "verdicts": self.verdicts}


def resolve_target(registry: Any, model: str, ref: str | None) -> Target:
    """A registry version (``vN``) or alias (default ``production``) as a Target."""
    version = registry.resolve(model, ref or PRODUCTION)
    return Target(model, version, registry.serving_uri(model, version))


def sibling(target: Target, version: str) -> Target:
    """Another version of the same model in the same registry."""
    uri = re.sub(r"/versions/v[0-9]+/", f"/versions/{version}/", target.storage_uri, count=1)
    return Target(target.model, version, uri)


def _move_alias(registry: Any, model: str, alias: str, version: str, *, expected: Any, reason: str,
                moves: list[dict[str, Any]]) -> None:
    if registry is None:
        return
    before = registry.get_alias(model, alias)
    if before == version:
        return
    registry.set_alias(model, alias, version, expected_version=expected, reason=reason)
    moves.append({"alias": alias, "from": before, "to": version})


def _wait(isvcs: InferenceServices | None, res: Result, *, wait: bool, timeout: float,
          on_progress: Callable[[str], None] | None, before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None) -> None:
    """With ``wait``, poll until the object serves ``after`` (what was sent on
    top of ``before``, the object as read before the change)."""
    if isvcs is None or res.dry_run:
        return
    if wait and res.changed and after is not None:
        if on_progress:
            on_progress(f"waiting up to {timeout:g}s for {res.namespace}/{res.name} to be Ready")
        applied = (res.applied or {}).get("metadata") or {}
        res.status = isvcs.wait_ready(res.name, res.namespace, timeout=timeout, expected=expect(before, after),
                                      generation=applied.get("generation")).to_dict()
    else:
        obj = isvcs.get(res.name, res.namespace)
        res.status = summarize_status(obj).to_dict() if obj else None


# --------------------------------------------------------------------------- deploy


def deploy(
    isvcs: InferenceServices | None,
    target: Target,
    settings: ServingSettings,
    *,
    canary_percent: int | None = None,
    default_percent: int = 10,
    registry: Any = None,
    current: dict[str, Any] | None = None,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 300.0,
    on_progress: Callable[[str], None] | None = None,
    now: str | None = None,
) -> Result:
    """Create the InferenceService for ``target``, or move the existing one to it.

    First deployment: ``target`` takes all traffic. Later: ``target`` becomes a
    canary beside the current primary at ``canary_percent`` (default
    ``default_percent``; 100 is a full rollout). ``current`` stands in for the
    cluster's object when ``isvcs`` is None (a dry run with no cluster).
    A canary records ``now`` (default: the current UTC time) as the start of
    its analysis window (``kubeloop.dev/canary-since``).
    """
    name, ns = target.model, settings.namespace
    if isvcs is not None:
        current = isvcs.get(name, ns)
    res = Result("unchanged", name, ns, dry_run=dry_run)
    primary = None
    percent = None if canary_percent is None else check_percent(canary_percent)
    since = now or utc_now()
    if current is not None:
        state = read_state(current)
        if state.canary_version == target.version and state.canary_since:
            since = state.canary_since  # the same canary again: its window goes on
        if state.mode != settings.mode:
            raise UserError(
                f"{ns}/{name} runs in {state.mode} mode, but the configuration asks for {settings.mode}: "
                "KServe cannot switch an InferenceService's mode in place"
            )
        if state.primary_version and state.primary_version != target.version:
            primary = sibling(target, state.primary_version)
            percent = default_percent if percent is None else percent
    elif percent not in (None, 100):
        res.notes.append(f"first deployment of {name}: {target.version} takes all traffic "
                         f"(--canary-percent {percent} applies from the next version on)")
    desired = build_inference_service(target, settings, primary=primary, canary_percent=percent,
                                      canary_since=since)
    if not settings.log_uri:
        res.notes.append("prediction logs are off (canary.log_uri or --log-uri 'off'): the predictor "
                         "writes no logs, so `kubeloop canary analyze` and monitoring have nothing to read")
    if settings.s3_endpoint and is_loopback(settings.s3_endpoint):
        res.notes.append(f"storage endpoint {settings.s3_endpoint} is this machine's, not the cluster's: "
                         "left out of the InferenceService (the ServingRuntime's AWS_ENDPOINT_URL applies); "
                         "set storage.endpoint_url to the address pods use")

    if current is None:
        res.action, res.kind, res.sent = "created", "object", desired
        after = desired
    else:
        patch = deploy_patch(current, desired)
        if patch:
            res.action, res.kind, res.sent = "updated", "patch", patch
        after = apply_merge_patch(current, patch)
    res.state = read_state(after).to_dict()
    if dry_run or not res.changed:
        if not res.changed:
            res.notes.append(f"{ns}/{name} already serves this; nothing sent")
        if not dry_run:
            _wait(isvcs, res, wait=False, timeout=timeout, on_progress=on_progress)
        return res

    is_canary = res.state["canary_version"] == target.version
    # Read before the cluster changes: the alias moves only if nobody moved it meanwhile.
    prod_before = registry.get_alias(name, PRODUCTION) if registry is not None else None
    if current is None:
        res.applied = isvcs.create(desired)
    else:
        res.applied = isvcs.patch(name, ns, res.sent)
    if registry is not None:
        if is_canary:
            _move_alias(registry, name, CANARY, target.version, expected=...,
                        reason=f"deployed as canary at {res.state['canary_percent']}%", moves=res.registry)
        else:
            _move_alias(registry, name, PRODUCTION, target.version, expected=prod_before,
                        reason="deployed with all traffic", moves=res.registry)
    _wait(isvcs, res, wait=wait, timeout=timeout, on_progress=on_progress, before=current, after=after)
    return res


def parse_time(text: str) -> Any:
    """An ISO 8601 time (``Z`` or an offset; naive means UTC) as an aware datetime."""
    import datetime as dt

    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{text!r}: not an ISO 8601 time (e.g. 2026-11-30T08:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def utc_now() -> str:
    """The current UTC time as recorded in the InferenceService (ISO 8601, seconds)."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- canary moves


def _get(isvcs: InferenceServices | None, name: str, ns: str, current: dict[str, Any] | None) -> dict[str, Any]:
    if isvcs is not None:
        current = isvcs.get(name, ns)
        if current is None:
            raise KubeError(f"no InferenceService {ns}/{name}; deploy it first with `kubeloop deploy {name}`")
    if current is None:
        raise UserError(f"no InferenceService {ns}/{name} to act on")
    return current


def _patch_result(action: str, isvcs: InferenceServices | None, name: str, ns: str, current: dict[str, Any],
                  patch: dict[str, Any], *, dry_run: bool) -> Result:
    res = Result(action if patch else "unchanged", name, ns, dry_run=dry_run,
                 kind="patch" if patch else None, sent=patch or None)
    res.state = read_state(apply_merge_patch(current, patch)).to_dict()
    if not patch:
        res.notes.append("already in that state; nothing sent")
    elif not dry_run:
        res.applied = isvcs.patch(name, ns, patch)
    return res


def set_percent(isvcs: InferenceServices | None, name: str, ns: str, percent: Any, *,
                current: dict[str, Any] | None = None, dry_run: bool = False, wait: bool = True,
                timeout: float = 300.0, on_progress: Callable[[str], None] | None = None) -> Result:
    current = _get(isvcs, name, ns, current)
    res = _patch_result("set", isvcs, name, ns, current, set_percent_patch(current, percent), dry_run=dry_run)
    _wait(isvcs, res, wait=wait, timeout=timeout, on_progress=on_progress, before=current,
          after=apply_merge_patch(current, res.sent or {}))
    return res


def promote(isvcs: InferenceServices | None, name: str, ns: str, *, registry: Any = None,
            current: dict[str, Any] | None = None, dry_run: bool = False, wait: bool = True,
            timeout: float = 300.0, on_progress: Callable[[str], None] | None = None) -> Result:
    """All traffic to the canary; ``production`` follows (compare-and-swap)."""
    current = _get(isvcs, name, ns, current)
    state = read_state(current)
    patch = promote_patch(current)
    prod = registry.get_alias(name, PRODUCTION) if registry is not None else None
    if patch and registry is not None and prod not in (None, state.primary_version, state.canary_version):
        raise Conflict(
            f"{name}: the registry's production alias points at {prod}, but the cluster's primary is "
            f"{state.primary_version} and its canary {state.canary_version}; nothing was changed. "
            "Reconcile them first (kubeloop registry set-alias)"
        )
    res = _patch_result("promoted", isvcs, name, ns, current, patch, dry_run=dry_run)
    if not patch:
        res.notes = [f"no canary in progress: {state.primary_version} already serves all traffic"]
    if patch and not dry_run:
        _move_alias(registry, name, PRODUCTION, state.canary_version, expected=prod,
                    reason=f"canary {state.canary_version} promoted over {state.primary_version}",
                    moves=res.registry)
    _wait(isvcs, res, wait=wait, timeout=timeout, on_progress=on_progress, before=current,
          after=apply_merge_patch(current, res.sent or {}))
    return res


def rollback(isvcs: InferenceServices | None, name: str, ns: str, *, registry: Any = None,
             current: dict[str, Any] | None = None, dry_run: bool = False, wait: bool = True,
             timeout: float = 300.0, on_progress: Callable[[str], None] | None = None) -> Result:
    """All traffic back to the primary; ``production`` moves back if it had followed the canary."""
    current = _get(isvcs, name, ns, current)
    state = read_state(current)
    patch = rollback_patch(current)
    res = _patch_result("rolled-back", isvcs, name, ns, current, patch, dry_run=dry_run)
    if registry is not None and not dry_run and state.primary_version:
        prod = registry.get_alias(name, PRODUCTION)
        if prod == state.canary_version:
            _move_alias(registry, name, PRODUCTION, state.primary_version, expected=prod,
                        reason=f"canary {state.canary_version} rolled back", moves=res.registry)
    _wait(isvcs, res, wait=wait, timeout=timeout, on_progress=on_progress, before=current,
          after=apply_merge_patch(current, res.sent or {}))
    return res


def status(isvcs: InferenceServices, name: str, ns: str, *, registry: Any = None) -> dict[str, Any]:
    """State (which version is primary, which canary, shares), conditions and traffic,
    and the registry's aliases with any disagreement spelled out."""
    obj = isvcs.get(name, ns)
    if obj is None:
        raise KubeError(f"no InferenceService {ns}/{name}; deploy it first with `kubeloop deploy {name}`")
    state = read_state(obj).to_dict()
    out: dict[str, Any] = {"state": state, "status": summarize_status(obj).to_dict(), "notes": []}
    if registry is not None:
        aliases = {a: registry.get_alias(name, a) for a in (PRODUCTION, CANARY, "previous")}
        out["registry"] = aliases
        if aliases[PRODUCTION] and aliases[PRODUCTION] != state["primary_version"]:
            out["notes"].append(f"the registry's production is {aliases[PRODUCTION]} but the cluster's "
                                f"primary is {state['primary_version']}")
    return out


# --------------------------------------------------------------------------- schedule


def pause(seconds: float) -> None:
    """The wait between steps (one name, so a test can stand in for the clock)."""
    time.sleep(seconds)


@dataclass(frozen=True)
class Observed:
    """What a stepper action was decided on: the object's resourceVersion and
    generation as read, and the versions and share that were judged."""

    resource_version: str | None
    generation: int | None
    primary: str | None
    canary: str | None
    percent: int | None

    @classmethod
    def of(cls, obj: dict[str, Any], *, primary: str | None = None, canary: str | None = None) -> Observed:
        st = read_state(obj)
        return cls(st.resource_version, st.generation, primary or st.primary_version,
                   canary or st.canary_version, st.canary_percent)


def what_moved(seen: Observed, obj: dict[str, Any]) -> list[str]:
    """Pure: how ``obj`` differs from what was judged ([] when nothing that
    matters moved). The resourceVersion alone does not count: KServe's
    controller moves it with every status write; the generation moves only
    with the spec."""
    now = Observed.of(obj)
    out = []
    if now.primary != seen.primary:
        out.append(f"the primary is {now.primary or 'unknown'}, not {seen.primary}")
    if now.canary != seen.canary:
        out.append(f"the canary is {now.canary}, not {seen.canary}" if now.canary else
                   f"there is no canary any more ({seen.canary} was promoted or rolled back)")
    elif now.percent != seen.percent:
        out.append(f"the canary's share is {now.percent}%, not {seen.percent}%")
    if not out and now.generation != seen.generation:
        out.append(f"its spec changed (generation {seen.generation} -> {now.generation})")
    return out


def step_through(
    steps: list[int],
    *,
    set_share: Callable[[int], Any],
    judge: Callable[[int | None], Verdict],
    promote_now: Callable[[], Any],
    rollback_now: Callable[[], Any],
    interval: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, list[tuple[int | None, Verdict]]]:
    """Move the canary through ``steps`` (percentages), judging after each.

    At each step below 100: set the share, let traffic flow for ``interval``
    seconds, judge. Rollback: roll back at once and stop. Hold: stop there,
    leaving the share as it is (a person, or a later run, decides). Promote:
    next step. A final step of 100 is the promotion itself (after the last
    share below it passed); a schedule that ends below 100 ends in "hold" at
    that share. ``judge(None)`` means "at the current share" (a schedule of
    just [100]). Returns the final decision and each step's verdict.
    """
    if not steps:
        raise UserError("the traffic schedule is empty")
    for s in steps:
        check_percent(s, "traffic step")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise UserError(f"traffic steps must increase, got {steps}")
    history: list[tuple[int | None, Verdict]] = []

    def judged(share: int | None) -> str:
        v = judge(share)
        history.append((share, v))
        if v.decision == ROLLBACK:
            rollback_now()
        return v.decision

    for share in steps:
        if share == 100:
            break
        set_share(share)
        if interval:
            sleep(interval)
        decision = judged(share)
        if decision != PROMOTE:
            return decision, history
    if steps[-1] != 100:
        return HOLD, history
    if not history:
        # A schedule of just [100]: judge the canary at its current share first;
        # nothing is promoted unseen.
        decision = judged(None)
        if decision != PROMOTE:
            return decision, history
    promote_now()
    return PROMOTE, history


def analyze_and_step(
    isvcs: InferenceServices | None,
    name: str,
    ns: str,
    cfg: Any,
    *,
    logs: str,
    steps: list[int] | None = None,
    labels: str | None = None,
    since: Any = None,
    primary: str | None = None,
    canary: str | None = None,
    current: dict[str, Any] | None = None,
    registry: Any = None,
    endpoint_url: str | None = None,
    interval: float = 300.0,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 300.0,
    sleep: Callable[[float], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Judge the canary from its prediction logs; with ``steps``, move its traffic
    through them and act on each verdict (``step_through``).

    ``cfg`` is the whole Config (its ``canary`` thresholds and ``storage``
    settings; ``endpoint_url``, the S3 endpoint this process reads the logs
    through, e.g. a port-forward's). Versions come from ``primary``/``canary``, else the cluster's
    object, else the registry's production and canary aliases. With
    ``dry_run`` nothing is sent: each step's patch is computed on a local copy.
    With no ``since``, the window starts when the deploy put the canary in
    place (``kubeloop.dev/canary-since``), when the object records it.
    Each step acts only if the object still serves what was judged (``what_moved``);
    otherwise it stops with ``Conflict``.
    Returns the decision, each step's verdict and analysis, and what was sent.
    """
    from kubeloop.deploy.analysis import analyze, revision_names

    say = on_progress or (lambda _msg: None)
    sleep = sleep or pause
    if isvcs is not None:
        current = isvcs.get(name, ns)
        if current is None and (steps is not None or not (primary and canary)):
            raise KubeError(f"no InferenceService {ns}/{name}; deploy it first with `kubeloop deploy {name}`")
    if current is not None:
        state = read_state(current)
        if since is None and state.canary_since and canary in (None, state.canary_version):
            # The canary's own window: from when the deploy put it in place.
            since = parse_time(state.canary_since)
            say(f"analysis window: since {state.canary_since}, when canary {state.canary_version} was deployed")
        primary, canary = primary or state.primary_version, canary or state.canary_version
    if registry is not None and not (primary and canary):
        primary = primary or registry.get_alias(name, PRODUCTION)
        canary = canary or registry.get_alias(name, CANARY)
    if not (primary and canary):
        raise UserError(f"{name}: which versions to compare? Give the primary and canary versions "
                        "(no canary in progress on the cluster, and none in the registry's aliases)")
    analyses: list[dict[str, Any]] = []

    def judge(share: int | None) -> Verdict:
        a = analyze(logs, name, primary, canary, cfg.canary, labels_uri=labels, since=since,
                    storage_cfg=cfg.storage, endpoint_url=endpoint_url,
                    revisions=revision_names(current, primary, canary))
        for note in a.notes:
            say(f"note: {note}")
        say(f"analysis at {'the current share' if share is None else f'{share}%'}: "
            f"{a.verdict.decision.upper()}: {a.verdict.reason}")
        analyses.append({"share": share, **a.to_dict()})
        return a.verdict

    out: dict[str, Any] = {"name": name, "namespace": ns, "primary": primary, "canary": canary,
                           "since": since.isoformat() if since is not None else None,
                           "dry_run": dry_run, "sent": [], "analyses": analyses}
    if steps is None:
        out["decision"] = judge(None).decision
        return out
    if current is None:
        raise UserError(f"stepping traffic needs the InferenceService {ns}/{name} (a cluster, or its object)")
    box = {"obj": current, "seen": Observed.of(current, primary=primary, canary=canary)}

    def act(fn: Callable[..., Result], *args: Any, **kw: Any) -> None:
        # Act only on what was judged: re-read, and stop if anyone moved the
        # versions, the share or the spec since. The patch then carries the
        # resourceVersion of this read, so a change in between is a 409.
        if not dry_run:
            fresh = isvcs.get(name, ns)
            if fresh is None:
                raise Conflict(f"{ns}/{name} was deleted while the canary was being stepped; nothing was sent")
            moved = what_moved(box["seen"], fresh)
            if moved:
                who = last_writer(fresh)
                raise Conflict(
                    f"{ns}/{name} changed since the stepper judged canary {canary} against primary {primary} "
                    f"(resourceVersion {box['seen'].resource_version} -> {fresh['metadata'].get('resourceVersion')}"
                    + (f", last written by {who}" if who else "") + "): " + "; ".join(moved)
                    + f". Nothing was sent; look with `kubeloop canary status {name}` and analyze again")
            box["obj"] = fresh
        res = fn(None if dry_run else isvcs, name, ns, *args, current=box["obj"], dry_run=dry_run,
                 wait=wait, timeout=timeout, on_progress=say, **kw)
        if res.sent:
            out["sent"].append({"action": res.action, "patch": res.sent, "registry": res.registry,
                                "resource_version": (box["obj"].get("metadata") or {}).get("resourceVersion"),
                                "primary": primary, "canary": canary})
            # What the write itself produced: a change by anyone while it
            # rolled out then shows at the next step as a new generation.
            box["obj"] = apply_merge_patch(box["obj"], res.sent) if dry_run else (
                res.applied or isvcs.get(name, ns))
        box["seen"] = Observed.of(box["obj"], primary=primary, canary=canary)
        say(f"{res.action}: {res.state}")

    decision, history = step_through(
        steps,
        set_share=lambda s: act(set_percent, s),
        judge=judge,
        promote_now=lambda: act(promote, registry=None if dry_run else registry),
        rollback_now=lambda: act(rollback, registry=None if dry_run else registry),
        interval=0.0 if dry_run else interval,
        sleep=sleep,
    )
    out["decision"] = decision
    out["steps"] = [{"share": s, "decision": v.decision, "reason": v.reason} for s, v in history]
    return out
