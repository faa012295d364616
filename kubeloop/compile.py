"""Compile the pipelines to the YAML a KFP cluster runs.

A compiled pipeline must run as compiled: its registry is one a pod can reach
(``s3://``), the S3 endpoint and region the pods use are written into its
``config`` default (resolved here from the flag, ``AWS_ENDPOINT_URL`` and the
config, in that order; the project's in-cluster MinIO when none is given), every
step names the image, and no credential is ever in the text.
"""

import os
import re
from pathlib import Path

import yaml

from kubeloop.config import Config
from kubeloop.errors import UserError

# Values that must never end up in a compiled pipeline.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")

# The project's manifests (manifests/base) install MinIO here, with this bucket.
CLUSTER_REGISTRY = "s3://models/registry"
CLUSTER_ENDPOINT = "http://minio.kubeloop-storage.svc:9000"
CLUSTER_REGION = "us-east-1"
LOCAL_REGISTRY_DEFAULT = Config().registry


class CompileError(UserError, ValueError):
    pass


def set_image(spec: dict, image: str) -> int:
    """Point every step of a compiled pipeline at ``image``; returns how many."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    n = 0
    for ex in executors.values():
        container = ex.get("container")
        if container is not None:
            container["image"] = image
            n += 1
    return n


def assert_no_credentials(text: str) -> None:
    """Refuse to write a pipeline that holds a credential from this environment."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8 and value in text:
            raise CompileError(f"the compiled pipeline would contain the value of {name}; refusing to write it")
    if re.search(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}", text):
        raise CompileError("the compiled pipeline contains what looks like a secret access key")


def cluster_config(cfg: Config, *, image: str | None = None) -> tuple[Config, list[str]]:
    """``cfg`` made runnable in a pod, and notes on each default filled in.

    Refuses a registry a pod cannot reach (a local path); fills in the project's
    MinIO when no registry, endpoint or region was given anywhere.
    """
    notes = []
    registry = cfg.registry
    if registry == LOCAL_REGISTRY_DEFAULT:
        registry = CLUSTER_REGISTRY
        notes.append(f"registry: {registry} (the project's MinIO; set --registry to change)")
    elif not registry.startswith("s3://"):
        raise CompileError(
            f"registry {registry!r} is not reachable from a pipeline pod (a pod's disk is "
            "gone when the step ends): give an s3:// URI, e.g. --registry s3://models/registry"
        )
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or cfg.storage.endpoint_url)
    if not endpoint:
        endpoint = CLUSTER_ENDPOINT
        notes.append(f"storage.endpoint_url: {endpoint} (the project's MinIO)")
    region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or cfg.storage.region or CLUSTER_REGION)
    storage = cfg.storage.model_copy(update={"endpoint_url": endpoint, "region": region})
    update = {"registry": registry, "storage": storage}
    if image:
        update["image"] = image
    return cfg.model_copy(update=update), notes


def compile_training(cfg: Config, output: str | Path, *, image: str | None = None) -> Path:
    """Write the training pipeline for a cluster; returns the path written."""
    path, _ = compile_training_with_notes(cfg, output, image=image)
    return path


def compile_training_with_notes(
    cfg: Config, output: str | Path, *, image: str | None = None
) -> tuple[Path, list[str]]:
    return compile_pipeline_with_notes("training", cfg, output, image=image)


PIPELINES = ("training", "monitoring", "profiling", "drift")


def _builder(which: str):
    if which == "training":
        from kubeloop.pipelines.training import build_training_pipeline

        return build_training_pipeline
    if which == "monitoring":
        from kubeloop.pipelines.monitoring import build_monitoring_pipeline

        return build_monitoring_pipeline
    if which in ("profiling", "drift"):
        from kubeloop.pipelines import profiling

        return profiling.build_profiling_pipeline if which == "profiling" else profiling.build_drift_pipeline
    raise CompileError(f"unknown pipeline {which!r}; choose one of {', '.join(PIPELINES)}")


def compile_pipeline_with_notes(
    which: str, cfg: Config, output: str | Path, *, image: str | None = None
) -> tuple[Path, list[str]]:
    """Write the ``training``, ``monitoring``, ``profiling`` or ``drift`` pipeline for a cluster."""
    from kfp import compiler

    build = _builder(which)
    cfg, notes = cluster_config(Config.from_dict(cfg.to_params()), image=image)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the output and renamed into place, so a failed compile never
    # leaves a half-written file where a deploy script expects a pipeline.
    tmp = out.with_name(f".{out.stem}.tmp.yaml")
    compiler.Compiler().compile(build(cfg, on_cluster=True), str(tmp))
    docs = list(yaml.safe_load_all(tmp.read_text()))
    set_image(docs[0], cfg.image)
    text = yaml.safe_dump_all(docs, sort_keys=False)
    try:
        assert_no_credentials(text)
    except CompileError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.write_text(text)
    os.replace(tmp, out)
    return out, notes
