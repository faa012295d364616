"""What ``kubeloop deploy`` and ``kubeloop canary`` share: flags, config, cluster,
registry, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kubeloop.errors import UserError


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_cluster_flags(p: argparse.ArgumentParser, *, changes: bool = True) -> None:
    p.add_argument("-n", "--namespace", help="namespace of the InferenceService (default: canary.namespace, kubeloop)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    p.add_argument("--registry", help="registry URI (default: $KUBELOOP_REGISTRY, else the config's registry)")
    if changes:
        p.add_argument("--dry-run", action="store_true",
                       help="print the exact object or patch (YAML; JSON with --json) and change nothing")
        p.add_argument("--no-wait", action="store_true",
                       help="return once the API server has accepted the change")
        p.add_argument("--timeout", type=float, help="seconds to wait for Ready (default: canary.wait_timeout_seconds)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def load_cfg(args: argparse.Namespace) -> Any:
    """The config as the file gives it. Its ``storage.endpoint_url`` is the one pods
    use, and the objects sent to the cluster get that one; ``--s3-endpoint`` is how
    this machine reaches the same storage (a port-forward, say) and is passed only
    to this process's own reads and writes (``local_endpoint``), never through the
    process environment."""
    from kubeloop.config import ConfigError, load_config

    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def local_endpoint(args: argparse.Namespace) -> str | None:
    """The S3 endpoint this process talks to (``--s3-endpoint``; None: the
    environment's, else the config's)."""
    return getattr(args, "s3_endpoint", None) or None


def open_registry(args: argparse.Namespace, cfg: Any, *, required: bool) -> Any:
    """The registry from --registry, $KUBELOOP_REGISTRY or the config; None (with a
    note) when it is optional and the configured local path does not exist."""
    from kubeloop.registry import Registry

    explicit = args.registry or os.environ.get("KUBELOOP_REGISTRY")
    uri = explicit or cfg.registry
    if "://" not in uri and not Path(uri).is_dir():
        if required or explicit:
            raise UserError(f"no registry at {Path(uri).resolve()} (give --registry or set $KUBELOOP_REGISTRY)")
        err(f"note: no registry at {Path(uri).resolve()}; registry aliases are not checked or moved")
        return None
    return Registry(uri, cfg.storage, endpoint_url=local_endpoint(args))


def cluster(args: argparse.Namespace, *, dry_run: bool) -> Any:
    """The InferenceServices client; with --dry-run, None when no cluster is configured."""
    from kubeloop.deploy.kube import KubeError, connect

    try:
        return connect(context=args.context, kubeconfig=args.kubeconfig)
    except KubeError as exc:
        if not dry_run:
            raise
        err(f"note: {exc}; working without a cluster")
        return None


def probe(isvcs: Any, name: str, namespace: str, *, dry_run: bool) -> Any:
    """For a dry run, drop a configured cluster that cannot be reached (a dry run
    must work with no cluster); otherwise return ``isvcs`` as it is."""
    from kubeloop.deploy.kube import KubeError

    if isvcs is None or not dry_run:
        return isvcs
    try:
        isvcs.get(name, namespace)
    except KubeError as exc:
        err(f"note: {exc}; working without a cluster")
        return None
    return isvcs


def dump(doc: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(doc, allow_nan=False)
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip()


def print_result(res: Any, as_json: bool) -> None:
    """Dry run: the exact object or patch on stdout. Otherwise a summary (or the
    result as JSON)."""
    if res.dry_run:
        what = {"object": "create this object", "patch": "send this JSON merge patch"}.get(res.kind, "send nothing")
        err(f"dry run: would {what} ({res.namespace}/{res.name}); nothing was changed")
        for note in res.notes:
            err(f"note: {note}")
        print(dump(res.sent or {}, as_json))
        return
    for note in res.notes:
        err(f"note: {note}")
    if as_json:
        print(json.dumps(res.to_dict(), allow_nan=False, default=str))
        return
    print(describe_state(res.action, res.namespace, res.name, res.state))
    for move in res.registry:
        print(f"registry: {move['alias']} {move['from'] or '(none)'} -> {move['to']}")
    if res.status:
        print(describe_status(res.status))


def describe_state(action: str, ns: str, name: str, state: dict[str, Any]) -> str:
    head = f"{action}: {ns}/{name}"
    if state.get("canary_version"):
        return (f"{head}: primary {state['primary_version']} {state['primary_percent']}%, "
                f"canary {state['canary_version']} {state['canary_percent']}% ({state['mode']})")
    return f"{head}: {state.get('primary_version') or '?'} serves 100% ({state.get('mode')})"


def describe_status(st: dict[str, Any]) -> str:
    lines = [f"ready: {st['ready']}" + (f"  url: {st['url']}" if st.get("url") else "")]
    for c in st.get("conditions") or []:
        extra = f" ({c.get('reason')}: {c.get('message', '')})" if c.get("reason") else ""
        lines.append(f"  condition {c['type']}={c['status']}{extra}")
    for t in st.get("traffic") or []:
        lines.append(f"  traffic {t.get('percent', '?')}% -> {t.get('revisionName')}"
                     + (f" (tag {t['tag']})" if t.get("tag") else "")
                     + (f" {t['url']}" if t.get("url") else ""))
    for c in st.get("canaries") or []:
        lines.append(f"  canary {c.get('name')} {c.get('trafficPercent')}% ready={c.get('ready')}")
    for why in st.get("pending") or []:
        lines.append(f"  waiting: {why}")
    return "\n".join(lines)
