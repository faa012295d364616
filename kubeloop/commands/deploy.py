"""``kubeloop deploy NAME[@VERSION|@ALIAS]``: create or update a model's InferenceService.

The first deployment serves the version with all traffic; later versions go
out as a canary beside the current primary at ``--canary-percent`` (default
``canary.initial_percent``; 100 is a full rollout, 0 a blue-green launch).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "deploy", help="deploy a registered version to KServe (first: all traffic; later: as a canary)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("target", metavar="NAME[@VERSION|@ALIAS]",
                   help="model name, optionally @v3 or @alias (default: @production)")
    p.add_argument("--canary-percent", type=int, help="share of traffic for the new version, 0-100")
    p.add_argument("--mode", choices=["serverless", "standard"], help="KServe deployment mode (default: canary.mode)")
    p.add_argument("--tag-routing", action="store_true",
                   help="serverless: give each revision a tag URL (prev-/latest-), for blue-green")
    p.add_argument("--log-uri", help="prediction-log root the predictor writes to (default: canary.log_uri, "
                                     "else s3://<storage.logs_bucket>/predictions; 'off': no logs)")
    p.add_argument("--shadow", metavar="VERSION|ALIAS", help="also score every request with this version, logged as shadow")
    from kubeloop.deploy.cmdutil import add_cluster_flags

    add_cluster_flags(p)
    common(p)
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    from kubeloop.deploy import rollout
    from kubeloop.deploy.cmdutil import cluster, err, load_cfg, open_registry, print_result, probe
    from kubeloop.deploy.inferenceservice import check_name, check_percent, settings_from_config
    from kubeloop.errors import UserError

    name, _, ref = args.target.partition("@")
    check_name(name)
    if args.target.endswith("@"):
        raise UserError(f"{args.target}: give a version or alias after '@' (e.g. {name}@v3)")
    if args.canary_percent is not None:
        check_percent(args.canary_percent)
    cfg = load_cfg(args)
    registry = open_registry(args, cfg, required=True)
    target = rollout.resolve_target(registry, name, ref or None)
    shadow_uri = rollout.resolve_target(registry, name, args.shadow).storage_uri if args.shadow else None
    settings = settings_from_config(
        cfg, namespace=args.namespace, mode=args.mode, tag_routing=args.tag_routing or None,
        log_uri=args.log_uri, shadow_uri=shadow_uri,
    )
    isvcs = probe(cluster(args, dry_run=args.dry_run), name, settings.namespace, dry_run=args.dry_run)
    err(f"kubeloop deploy: {name} {target.version} ({target.storage_uri}) -> "
        f"{settings.namespace}/{name}, prediction logs {settings.log_uri or 'off'}"
        + (" [dry run]" if args.dry_run else ""))
    res = rollout.deploy(
        isvcs, target, settings, canary_percent=args.canary_percent,
        default_percent=cfg.canary.initial_percent, registry=None if args.dry_run else registry,
        dry_run=args.dry_run, wait=not args.no_wait,
        timeout=args.timeout or cfg.canary.wait_timeout_seconds, on_progress=err,
    )
    print_result(res, args.json)
    return 0
