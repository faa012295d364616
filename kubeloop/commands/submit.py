"""``kubeloop submit``: one training run on a Kubeflow Pipelines endpoint.

    kubeloop submit --host http://localhost:8080 --data s3://data/churn.csv --target churned \\
        --model-name churn --image kind.local/kubeloop:0.1.0

Compiles the training pipeline with the configured image (every step runs on
it), creates the run (with `kfp.Client.create_run_from_pipeline_package`, in an
experiment it creates if missing) as the ServiceAccount
``kubeloop-pipeline`` and prints the run's URL. Everything that can be checked
here (flags, URIs, the pipeline's required parameters) is checked before
anything is sent.

The pieces ``kubeloop schedule`` shares (pipeline flags, compiling, arguments)
live here too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from kubeloop.errors import UserError

DEFAULT_EXPERIMENT = "kubeloop"
DEFAULT_SERVICE_ACCOUNT = "kubeloop-pipeline"
# What pipeline pods use when the config names no storage: the in-cluster MinIO
# of manifests/ and the registry bucket the bucket Job creates.
CLUSTER_S3_ENDPOINT = "http://minio.kubeloop-storage.svc:9000"
CLUSTER_REGISTRY = "s3://models/registry"
PIPELINES = ("training", "monitoring")


def add_pipeline_flags(p: argparse.ArgumentParser, *, data_required: bool) -> None:
    p.add_argument("--host", required=True,
                   help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080 after "
                        "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`")
    p.add_argument("--data", required=data_required, help="training data: an s3:// URI the cluster can read")
    p.add_argument("--target", help="the column to predict (or target: in --config)")
    p.add_argument("--task", choices=["classification", "regression"])
    p.add_argument("--time-column", help="split by time on this column")
    p.add_argument("--id-column", help="keep all rows of one id in the same split")
    p.add_argument("--model-name", help="registry name of the model (default: model)")
    p.add_argument("--registry", help=f"registry URI as the pods see it (default: {CLUSTER_REGISTRY})")
    p.add_argument("--image", help="image for every step (default: image: in --config, else the release image)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set any other pipeline parameter (repeatable; VALUE is read as JSON when it parses)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (created if missing)")
    p.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT,
                   help="Kubernetes ServiceAccount the pipeline pods run as ('' for KFP's default)")
    p.add_argument("--namespace", help="KFP namespace (multi-user Kubeflow only)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "submit", help="start a training run on a Kubeflow Pipelines endpoint",
        description="Compile the training pipeline with the configured image and start one run on a "
                    "Kubeflow Pipelines (v2) endpoint; prints the run's URL.",
    )
    add_pipeline_flags(p, data_required=True)
    p.add_argument("--run-name", help="name shown in the KFP UI (default: MODEL training <UTC time>)")
    p.add_argument("--deploy", action="store_true",
                   help="deploy a promoted version to KServe (first: all traffic; later: a canary)")
    common(p)
    p.set_defaults(func=cmd_submit)


# --- pure pieces ----------------------------------------------------------------------


def require_cluster_uri(flag: str, uri: str) -> str:
    """Pipeline pods see neither this machine's files nor its relative paths."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise UserError(
            f"{flag} {uri!r} must be an s3:// URI the cluster can read: pipeline pods cannot see this "
            f"machine's files (copy the data into MinIO first, e.g. `mc cp FILE kubeloop/data/`)"
        )
    return uri


def cluster_config(args: argparse.Namespace) -> Any:
    """The run's Config: --config, then flags, then the in-cluster storage defaults."""
    from kubeloop.config import Config, ConfigError, load_config

    try:
        cfg = load_config(
            getattr(args, "config", None), target=args.target, task=args.task, time_column=args.time_column,
            id_column=args.id_column, model_name=args.model_name, registry=args.registry,
        )
        if getattr(args, "s3_endpoint", None):
            cfg.storage.endpoint_url = args.s3_endpoint
        elif not cfg.storage.endpoint_url:
            cfg.storage.endpoint_url = CLUSTER_S3_ENDPOINT
        if not cfg.storage.region:
            cfg.storage.region = "us-east-1"
        if cfg.registry == Config.model_fields["registry"].default:
            # The local default means nothing in a pod: use the cluster's registry bucket.
            cfg = cfg.with_overrides(registry=CLUSTER_REGISTRY)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    require_cluster_uri("--registry", cfg.registry)
    return cfg


def parse_params(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; VALUE as JSON when it parses (numbers, lists, objects), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--param {item!r}: expected NAME=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[name.strip()] = value
    return out


def pipeline_parameters(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's input parameters: name -> {type, optional}."""
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {
        name: {"type": p.get("parameterType"), "optional": bool(p.get("isOptional")) or "defaultValue" in p}
        for name, p in params.items()
    }


def build_arguments(spec: dict[str, Any], values: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a run: ``values`` (what kubeloop fills in from its flags and
    config; None = not set) and ``extra`` (``--param``), each checked against the
    parameters the compiled pipeline declares, and every required one present.

    A value the pipeline does not declare is an error, never dropped: a flag that
    silently went nowhere is how a scheduled run ends up without its data."""
    declared = pipeline_parameters(spec)
    known = ", ".join(sorted(declared))
    unknown = sorted(set(extra) - set(declared))
    if unknown:
        raise UserError(f"--param {', '.join(unknown)}: the pipeline has no such parameter "
                        f"(its parameters: {known})")
    args = {k: v for k, v in values.items() if v is not None}
    undeclared = sorted(set(args) - set(declared))
    if undeclared:
        raise UserError(f"the compiled pipeline declares no parameter {', '.join(undeclared)}, which this "
                        f"command would send (its parameters: {known}); is the image's kubeloop the same "
                        f"release as this one?")
    args.update(extra)
    missing = sorted(n for n, p in declared.items() if not p["optional"] and n not in args)
    if missing:
        raise UserError(f"the pipeline needs {', '.join(missing)}; give it with --param NAME=VALUE")
    return args


def load_monitoring_builder() -> Any:
    """The monitoring pipeline's builder, imported only when asked for."""
    try:
        from kubeloop.pipelines import monitoring
    except ImportError as exc:
        raise UserError(
            "this kubeloop installation has no monitoring pipeline (kubeloop.pipelines.monitoring "
            f"could not be imported: {exc}); install a release that includes it"
        ) from None
    builder = getattr(monitoring, "build_monitoring_pipeline", None)
    if builder is None:
        raise UserError("kubeloop.pipelines.monitoring has no build_monitoring_pipeline(config)")
    return builder


def compile_package(which: str, cfg: Any, image: str, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Compile the ``training`` or ``monitoring`` pipeline with every step on ``image``."""
    out = out_dir / f"{which}-pipeline.yaml"
    if which == "training":
        from kubeloop.compile import compile_training

        compile_training(cfg, out, image=image)
    elif which == "monitoring":
        from kfp import compiler

        from kubeloop.compile import assert_no_credentials, set_image

        pipeline = load_monitoring_builder()(cfg, on_cluster=True)
        tmp = out_dir / ".monitoring.tmp.yaml"
        compiler.Compiler().compile(pipeline, str(tmp))
        docs = list(yaml.safe_load_all(tmp.read_text()))
        set_image(docs[0], image)
        text = yaml.safe_dump_all(docs, sort_keys=False)
        assert_no_credentials(text)
        out.write_text(text)
    else:
        raise UserError(f"unknown pipeline {which!r}; choose one of {', '.join(PIPELINES)}")
    return out, next(yaml.safe_load_all(out.read_text()))


def run_values(cfg: Any, args: argparse.Namespace, pipeline: str = "training") -> dict[str, Any]:
    """The values kubeloop fills in, by the pipeline's parameter names (None: not
    set, the pipeline's default applies)."""
    from kubeloop.pipelines.training import run_config

    data = require_cluster_uri("--data", args.data) if args.data else None
    # Run parameters are parameters of their own; config holds the rest (each value
    # has one source, and the settings step refuses a run parameter inside config).
    common = {"target": cfg.target or "", "task": cfg.task or "",
              "time_column": cfg.time_column or "", "id_column": cfg.id_column or "",
              "registry": cfg.registry, "model_name": cfg.model_name, "config": run_config(cfg),
              "deploy": bool(getattr(args, "deploy", False))}
    if pipeline == "monitoring":
        logs = getattr(args, "logs", None)
        labels = getattr(args, "labels", None)
        window = getattr(args, "window_hours", None)
        return {**common,
                "logs_uri": require_cluster_uri("--logs", logs) if logs else None,
                "labels_uri": require_cluster_uri("--labels", labels) if labels else None,
                "retrain_data_uri": data,
                "window_hours": float(window) if window is not None else None}
    return {"data_uri": data, **common}


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(result) if as_json else text)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the command ----------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from kubeloop.kfp_client import Endpoint, normalize_host

    host = normalize_host(args.host)
    cfg = cluster_config(args)
    if not cfg.target:
        raise UserError("--target is required (or target: in the --config file)")
    values = run_values(cfg, args)
    extra = parse_params(args.param)
    image = args.image or cfg.image
    with tempfile.TemporaryDirectory(prefix="kubeloop-submit-") as tmp:
        package, spec = compile_package("training", cfg, image, Path(tmp))
        arguments = build_arguments(spec, values, extra)
        _err(f"kubeloop submit: training '{cfg.model_name}' on {host} (image {image})")
        endpoint = Endpoint.connect(host, namespace=args.namespace)
        run_name = args.run_name or f"{cfg.model_name} training {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S}"
        run = endpoint.create_run(str(package), arguments=arguments, run_name=run_name, experiment=args.experiment,
                                  namespace=args.namespace, service_account=args.service_account or None)
    result = {
        "pipeline": "training", "host": endpoint.host, "experiment": args.experiment,
        "run_name": run_name, **run, "image": image,
        "service_account": args.service_account or None,
        # The config travels as the pipeline's default; the summary shows what was set here.
        "arguments": {k: v for k, v in arguments.items() if k != "config"},
    }
    emit(result, args.json, run["run_url"])
    return 0
