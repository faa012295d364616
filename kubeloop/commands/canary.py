"""``kubeloop canary status|set|promote|rollback|analyze NAME``: move and judge a canary.

    status    which registry version is primary and which canary, shares, conditions, traffic
    set       give the canary --percent N of the traffic
    promote   all traffic to the canary; the registry's production alias follows
    rollback  all traffic back to the primary (production moves back if it had moved)
    analyze   judge the canary from the prediction logs (promote, hold or rollback);
              with --steps 10,50,100, step the traffic and roll back on the first failure

Each does what the equivalent ``kubectl patch --type merge`` does (``--dry-run``
prints that patch); the README shows both side by side.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

ACTIONS = ["status", "set", "promote", "rollback", "analyze"]


def register(sub: Any, common: Any) -> None:
    from kubeloop.deploy.cmdutil import add_cluster_flags

    p = sub.add_parser("canary", help="status, set, promote, roll back or analyze a model's canary",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("name", help="model name (= InferenceService name)")
    p.add_argument("--percent", type=int, help="set: the canary's share of traffic, 0-100")
    p.add_argument("--logs", help="analyze: prediction-log root (default: canary.log_uri, else "
                                  "s3://<storage.logs_bucket>/predictions, where deploy points the predictor)")
    p.add_argument("--labels", help="analyze: ground-truth labels, a Parquet/CSV file or a folder of them")
    p.add_argument("--since", help="analyze: only rows logged at or after this UTC time (ISO 8601; "
                                   "default: when the canary was deployed, as the InferenceService records it)")
    p.add_argument("--primary", metavar="VERSION", help="analyze: primary version (default: from the cluster)")
    p.add_argument("--canary", metavar="VERSION", help="analyze: canary version (default: from the cluster)")
    p.add_argument("--steps", help="analyze: traffic schedule, e.g. 10,50,100 (default: judge only)")
    p.add_argument("--interval", type=float, default=None,
                   help="analyze --steps: seconds of traffic at each step before judging it (default 300)")
    add_cluster_flags(p)
    common(p)
    p.set_defaults(func=cmd_canary)


def _assumed(registry: Any, name: str, settings: Any, initial: int) -> dict[str, Any]:
    """With --dry-run and no cluster: the object the registry's aliases describe
    (production as primary, canary as canary), to compute the patch against."""
    from kubeloop.deploy import rollout
    from kubeloop.deploy.inferenceservice import build_inference_service
    from kubeloop.errors import UserError

    if registry is None or registry.get_alias(name, rollout.CANARY) is None:
        raise UserError(f"no cluster and no 'canary' alias for {name} in the registry: "
                        "nothing to compute the patch against")
    primary = rollout.resolve_target(registry, name, rollout.PRODUCTION)
    canary = rollout.resolve_target(registry, name, rollout.CANARY)
    return build_inference_service(canary, settings, primary=primary, canary_percent=initial)


def cmd_canary(args: argparse.Namespace) -> int:
    from kubeloop.deploy import rollout
    from kubeloop.deploy.cmdutil import (
        cluster,
        describe_state,
        describe_status,
        err,
        load_cfg,
        open_registry,
        print_result,
        probe,
    )
    from kubeloop.deploy.inferenceservice import check_name, check_percent, settings_from_config
    from kubeloop.errors import UserError

    name = check_name(args.name)
    if args.action == "set":
        if args.percent is None:
            raise UserError("kubeloop canary set NAME --percent N: the share (0-100) is required")
        check_percent(args.percent)
    elif args.percent is not None:
        raise UserError(f"--percent applies to `canary set`, not `canary {args.action}`")
    cfg = load_cfg(args)
    settings = settings_from_config(cfg, namespace=args.namespace)
    ns = settings.namespace
    dry_run = getattr(args, "dry_run", False)
    registry = open_registry(args, cfg, required=False)
    timeout = args.timeout or cfg.canary.wait_timeout_seconds
    wait = not args.no_wait

    if args.action == "analyze":
        return _analyze(args, cfg, registry, settings)

    if args.action == "status":
        isvcs = cluster(args, dry_run=False)
        out = rollout.status(isvcs, name, ns, registry=registry)
        if args.json:
            print(json.dumps(out, default=str))
        else:
            print(describe_state("status", ns, name, out["state"]))
            print(describe_status(out["status"]))
            if "registry" in out:
                print("registry: " + ", ".join(f"{a} {v or '-'}" for a, v in out["registry"].items()))
            for note in out["notes"]:
                print(f"note: {note}")
        return 0

    isvcs = probe(cluster(args, dry_run=dry_run), name, ns, dry_run=dry_run)
    current = None
    if isvcs is None:
        current = _assumed(registry, name, settings, cfg.canary.initial_percent)
        err(f"note: patch computed against the state the registry describes ({current['metadata']['annotations']})")
    common = dict(current=current, dry_run=dry_run, wait=wait, timeout=timeout, on_progress=err)
    if args.action == "set":
        res = rollout.set_percent(isvcs, name, ns, args.percent, **common)
    elif args.action == "promote":
        res = rollout.promote(isvcs, name, ns, registry=None if dry_run else registry, **common)
    else:
        res = rollout.rollback(isvcs, name, ns, registry=None if dry_run else registry, **common)
    print_result(res, args.json)
    return 0


def _parse_steps(text: str) -> list[int]:
    from kubeloop.deploy.inferenceservice import check_percent
    from kubeloop.errors import UserError

    try:
        return [check_percent(int(x), "traffic step") for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--steps {text!r}: give whole percentages separated by commas, e.g. 10,50,100") from None


def _analyze(args: argparse.Namespace, cfg: Any, registry: Any, settings: Any) -> int:
    from kubeloop.deploy import rollout
    from kubeloop.deploy.cmdutil import cluster, dump, err, local_endpoint, probe
    from kubeloop.errors import UserError

    name, ns = args.name, settings.namespace
    logs = cfg.prediction_log_root(args.logs)
    if not logs:
        raise UserError("kubeloop canary analyze: prediction logs are off (canary.log_uri: off); "
                        "give --logs URI where the predictor writes them")
    since = None
    if args.since:
        try:
            since = rollout.parse_time(args.since)
        except UserError as exc:
            raise UserError(f"--since {exc}") from None
    steps = _parse_steps(args.steps) if args.steps else None
    dry_run = args.dry_run
    isvcs = current = None
    if steps is not None or not (args.primary and args.canary):
        # Judging alone works offline (versions then come from the registry).
        isvcs = probe(cluster(args, dry_run=dry_run or steps is None), name, ns,
                      dry_run=dry_run or steps is None)
    if steps is not None and isvcs is None:
        current = _assumed(registry, name, settings, cfg.canary.initial_percent)
    out = rollout.analyze_and_step(
        isvcs, name, ns, cfg, logs=logs, steps=steps, labels=args.labels, since=since,
        primary=args.primary, canary=args.canary, current=current,
        registry=registry, endpoint_url=local_endpoint(args), interval=300.0 if args.interval is None else args.interval, dry_run=dry_run,
        wait=not args.no_wait, timeout=args.timeout or cfg.canary.wait_timeout_seconds, on_progress=err,
    )
    if dry_run and steps is not None:
        err("dry run: nothing was changed; the patches each step would send follow")
        print(dump([s["patch"] for s in out["sent"]], args.json))
    elif args.json:
        print(json.dumps(out, allow_nan=False, default=str))
    else:
        last = out["analyses"][-1]
        print(f"{name}: canary {out['canary']} vs primary {out['primary']}: {out['decision'].upper()}")
        for r in last["verdict"]["reasons"]:
            print(f"  - {r}")
        print(f"  ({last['rows']} rows from {last['files']} log files; "
              f"primary {last['primary']['rows']}, canary {last['canary']['rows']})")
    return 0
