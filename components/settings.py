"""Settings: the first step of a run, where the pipeline's parameters and its
``config`` become the one effective configuration every later step reads.

The run parameters a person fills in the KFP UI (``target``, ``task``,
``time_column``, ``id_column``, ``model_name``, ``registry``) have one source:
the parameter. Inside ``config`` they are refused, so a value can never be set in
two places and silently lose. Keys fixed when the pipeline was compiled
(the image, pod sizes, the credentials Secret, how many families train at once)
do nothing when changed in a run's ``config``: the step says so, naming the key,
instead of ignoring them quietly.

The effective configuration is this step's output and is what lineage records.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kubeloop.config import Config, ConfigError

RUN_PARAMETERS = ("target", "task", "time_column", "id_column", "model_name", "registry")

# Keys read when the pipeline is compiled, and where to change them instead.
COMPILE_TIME_KEYS = {
    "image": "kubeloop compile --image",
    "train.parallelism": "train.parallelism in the config given to kubeloop compile",
    "storage.credentials_secret": "storage.credentials_secret at compile time",
    "resources": "resources in the config given to kubeloop compile",
}


class SettingsError(ConfigError):
    """A run parameter is missing or contradicts the config."""


def _has_key(config: dict[str, Any], dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def compile_time_values(cfg: Config) -> dict[str, Any]:
    """The part of ``cfg`` that is fixed when the pipeline is compiled."""
    full = cfg.to_params()
    return {
        "image": full["image"],
        "train": {"parallelism": full["train"]["parallelism"]},
        "storage": {"credentials_secret": full["storage"]["credentials_secret"]},
        "resources": full["resources"],
    }


def compile_time_warnings(config: dict[str, Any], compiled: dict[str, Any]) -> list[str]:
    """A warning per compile-time key that a run's config sets to another value."""
    out = []
    mine = Config.from_dict(config).to_dict()
    theirs = Config.from_dict(_deep_merge(config, compiled)).to_dict()
    for key, where in COMPILE_TIME_KEYS.items():
        if not _has_key(config, key):
            continue
        a, b = mine, theirs
        for part in key.split("."):
            a, b = a[part], b[part]
        if a != b:
            out.append(
                f"config key '{key}' has no effect in a run: it was fixed when the "
                f"pipeline was compiled (set it with {where})"
            )
    return out


def resolve_settings(
    config: dict[str, Any],
    *,
    target: str = "",
    task: str = "",
    time_column: str = "",
    id_column: str = "",
    model_name: str = "",
    registry: str = "",
    compiled: dict[str, Any] | None = None,
    on_cluster: bool = False,
) -> tuple[Config, list[str]]:
    """The effective Config of a run and the warnings to show.

    Empty strings are unset parameters (a KFP parameter cannot be null).
    ``compiled`` holds the compile-time values (image, resources, ...) that
    replace whatever the run's config says about them.
    """
    config = dict(config or {})
    doubled = [k for k in RUN_PARAMETERS if k in config]
    if doubled:
        raise SettingsError(
            f"{', '.join(repr(k) for k in doubled)} must be given as pipeline parameter(s), "
            "not inside config (each setting has one source)"
        )
    warnings = compile_time_warnings(config, compiled or {}) if compiled is not None else []
    params = {
        "target": target, "task": task, "time_column": time_column, "id_column": id_column,
        "model_name": model_name, "registry": registry,
    }
    data = _deep_merge(config, compiled or {})
    data.update({k: v for k, v in params.items() if v not in ("", None)})
    cfg = Config.from_dict(data)
    if not cfg.target:
        raise SettingsError(
            "the pipeline parameter 'target' is empty: name the column to predict"
        )
    if on_cluster and not cfg.registry.startswith("s3://"):
        raise SettingsError(
            f"registry {cfg.registry!r} is not reachable from a pod: give an s3:// URI "
            "(for example s3://models/registry on the project's MinIO)"
        )
    return cfg, warnings


# --------------------------------------------------------------------------- KFP adapter

from kubeloop.component import component  # noqa: E402


@component
def settings_op(
    config: dict,
    target: str,
    task: str,
    time_column: str,
    id_column: str,
    model_name: str,
    registry: str,
    compiled: dict,
    on_cluster: bool,
) -> NamedTuple("Settings", config=dict, registry=str, model_name=str, families=list):  # noqa: F821
    """Merge the run parameters into the config; every later step reads the result."""
    from collections import namedtuple

    from kubeloop.components.settings import resolve_settings
    from kubeloop.progress import stage

    with stage("settings") as st:
        cfg, warnings = resolve_settings(
            config, target=target, task=task, time_column=time_column, id_column=id_column,
            model_name=model_name, registry=registry, compiled=compiled, on_cluster=on_cluster,
        )
        for w in warnings:
            print(f"warning: {w}", flush=True)
        st.result = f"target {cfg.target}, model {cfg.model_name}, registry {cfg.registry}"
        st.details = {"warnings": warnings}
    out = namedtuple("Settings", "config registry model_name families")
    return out(cfg.to_params(), cfg.registry, cfg.model_name, list(cfg.train.families))

