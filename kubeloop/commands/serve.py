"""``kubeloop serve``: a registered model behind the same predictor the cluster runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kubeloop.errors import UserError

DESCRIPTION = """\
Serve a registered model locally with kubeloop's KServe predictor (the process an
InferenceService runs): KServe v1 at /v1/models/NAME:predict, v2 at
/v2/models/NAME/infer, health at /v2/health/ready, Prometheus metrics at /metrics.

NOTE: KServe's model server listens on ALL network interfaces (0.0.0.0); it has no
option to bind only 127.0.0.1. On a shared network, use a firewall or serve inside
a container.
"""


def split_ref(text: str, default: str = "production") -> tuple[str, str]:
    """``NAME[@VERSION|@ALIAS]`` -> (name, version or alias)."""
    name, _, ref = text.partition("@")
    if not name or (_ and not ref):
        raise UserError(f"--model {text!r}: expected NAME, NAME@VERSION (v3) or NAME@ALIAS (production)")
    return name, ref or default


def resolve(registry: Any, name: str, ref: str) -> tuple[str, str]:
    """(version, model/ folder URI) of ``name@ref``, with the folder's kubeloop.json
    checked against the registry manifest (the predictor then checks the model file
    against kubeloop.json before unpickling it)."""
    from kubeloop.storage import NotFound

    info = registry.info(name, ref)
    try:
        meta = json.loads(registry.read_bytes(name, info.version, "model/kubeloop.json"))
    except NotFound:
        raise UserError(f"{name} {info.version} has no model/kubeloop.json; it cannot be served") from None
    if meta.get("sha256") != info.sha256:
        raise UserError(
            f"{name} {info.version}: model/kubeloop.json records sha256 {meta.get('sha256')} but the "
            f"registry manifest records {info.sha256}; refusing to serve it"
        )
    return info.version, registry.model_uri(name, info.version)


def predictor_command(name: str, model_uri: str, port: int, grpc_port: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "kubeloop.serving", f"--model_name={name}", f"--model_dir={model_uri}",
           f"--http_port={port}"]
    cmd += [f"--grpc_port={grpc_port}"] if grpc_port else ["--enable_grpc=false"]
    return cmd


def cmd_serve(args: argparse.Namespace) -> int:
    from kubeloop.cli import _registry

    name, ref = split_ref(args.model)
    registry = _registry(args)
    version, uri = resolve(registry, name, ref)
    env = dict(os.environ)
    env["KUBELOOP_ROLE"] = "primary"
    shadow = None
    if args.shadow:
        shadow_version, shadow_uri = resolve(registry, name, args.shadow)
        if shadow_version == version:
            raise UserError(f"--shadow {args.shadow} is {version}, the version being served; choose another")
        env["KUBELOOP_SHADOW_URI"] = shadow_uri
        shadow = shadow_version
    else:
        env.pop("KUBELOOP_SHADOW_URI", None)
    if args.log_to:
        env["KUBELOOP_LOG_URI"] = args.log_to if "://" in args.log_to else os.path.abspath(args.log_to)
    else:
        env.pop("KUBELOOP_LOG_URI", None)
    base = f"http://localhost:{args.port}"
    summary = {
        "model": name, "version": version, "shadow_version": shadow, "model_uri": uri,
        "log_uri": env.get("KUBELOOP_LOG_URI"), "listen": f"0.0.0.0:{args.port}",
        "endpoints": {"v1": f"{base}/v1/models/{name}:predict", "v2": f"{base}/v2/models/{name}/infer",
                      "ready": f"{base}/v2/health/ready", "metrics": f"{base}/metrics"},
    }
    if args.json:
        print(json.dumps(summary), flush=True)
    print(f"kubeloop serve: {name} {version} from {uri}" + (f", shadow {shadow}" if shadow else "")
          + (f", prediction log {summary['log_uri']}" if summary["log_uri"] else ""), file=sys.stderr)
    print(f"  listening on ALL interfaces, port {args.port}; POST {summary['endpoints']['v1']}",
          file=sys.stderr, flush=True)
    # The predictor replaces this process: signals (Ctrl-C, SIGTERM) reach it directly,
    # so the prediction log is flushed on the way out.
    cmd = predictor_command(name, uri, args.port, args.grpc_port)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser("serve", help="serve a registered model locally (KServe v1/v2; binds all interfaces)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="NAME, NAME@VERSION or NAME@ALIAS (default alias: production)")
    p.add_argument("--registry", help="registry URI (default: $KUBELOOP_REGISTRY or ./registry)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port, on all interfaces (default 8080)")
    p.add_argument("--grpc-port", type=int, help="also serve KServe's gRPC API on this port (default: off)")
    p.add_argument("--shadow", metavar="VERSION|ALIAS",
                   help="score this version too on every request; answers come from the served one only")
    p.add_argument("--log-to", metavar="URI", help="write prediction logs under this directory or s3:// prefix")
    p.add_argument("--json", action="store_true", help="print one JSON line describing the server, then serve")
    common(p)
    p.set_defaults(func=cmd_serve)
