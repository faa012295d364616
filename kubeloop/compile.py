"""Compile the pipelines to the YAML a KFP cluster runs."""

import os
import re
from pathlib import Path

import yaml

from kubeloop.config import Config

# Values that must never end up in a compiled pipeline.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


class CompileError(ValueError):
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


def compile_training(cfg: Config, output: str | Path, *, image: str | None = None) -> Path:
    from kfp import compiler

    from kubeloop.pipelines.training import build_training_pipeline

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the output and renamed into place, so a failed compile never
    # leaves a half-written file where a deploy script expects a pipeline.
    tmp = out.with_name(f".{out.stem}.tmp.yaml")
    compiler.Compiler().compile(build_training_pipeline(cfg), str(tmp))
    docs = list(yaml.safe_load_all(tmp.read_text()))
    if image:
        set_image(docs[0], image)
    text = yaml.safe_dump_all(docs, sort_keys=False)
    assert_no_credentials(text)
    tmp.write_text(text)
    os.replace(tmp, out)
    return out
