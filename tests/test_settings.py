"""The settings step: run parameters and config become one effective config."""

from __future__ import annotations

import pytest

from kubeloop.components.settings import (
    RUN_PARAMETERS,
    SettingsError,
    compile_time_values,
    resolve_settings,
)
from kubeloop.config import Config
from kubeloop.errors import UserError


def test_parameters_fill_the_config_and_empty_means_unset():
    cfg, warnings = resolve_settings(
        {"split": {"seed": 7}}, target="churned", task="", time_column="signup_date",
        id_column="", model_name="churn", registry="s3://models/registry",
    )
    assert (cfg.target, cfg.task, cfg.time_column, cfg.id_column) == ("churned", None, "signup_date", None)
    assert (cfg.model_name, cfg.registry, cfg.split.seed) == ("churn", "s3://models/registry", 7)
    assert warnings == []


@pytest.mark.parametrize("key", RUN_PARAMETERS)
def test_a_run_parameter_inside_config_is_refused_naming_it(key):
    value = {"task": "regression", "model_name": "m"}.get(key, "x")
    with pytest.raises(SettingsError, match=repr(key)):
        resolve_settings({key: value}, target="y")


@pytest.mark.parametrize(
    "params,words",
    [
        ({}, "'target' is empty"),
        ({"target": "y", "task": "clustering"}, "task"),
        ({"target": "y", "model_name": "Bad_Name"}, "model name"),
    ],
)
def test_missing_or_bad_parameters_are_user_errors(params, words):
    with pytest.raises(UserError, match=words):
        resolve_settings({}, **params)


@pytest.mark.parametrize(
    "registry,ok",
    [("s3://models/registry", True), ("registry", False), ("/data/registry", False),
     ("file:///srv/registry", False)],
)
def test_on_a_cluster_the_registry_must_be_s3(registry, ok):
    if ok:
        assert resolve_settings({}, target="y", registry=registry, on_cluster=True)[0].registry == registry
    else:
        with pytest.raises(SettingsError, match="not reachable from a pod"):
            resolve_settings({}, target="y", registry=registry, on_cluster=True)
    # Locally any path is fine.
    assert resolve_settings({}, target="y", registry=registry)[0].registry == registry


def test_compile_time_keys_set_in_a_run_warn_and_keep_the_compiled_value():
    compiled = compile_time_values(Config(image="reg.example/kubeloop:1", train={"parallelism": 3}))
    run_cfg = {"image": "other:2", "train": {"parallelism": 8, "search_iterations": 2},
               "storage": {"credentials_secret": "mine", "region": "eu-west-1"}}
    cfg, warnings = resolve_settings(run_cfg, target="y", compiled=compiled)
    assert cfg.image == "reg.example/kubeloop:1"
    assert cfg.train.parallelism == 3
    assert cfg.storage.credentials_secret == "kubeloop-s3-pipeline"
    # Run-time keys next to them still apply.
    assert cfg.train.search_iterations == 2 and cfg.storage.region == "eu-west-1"
    joined = "\n".join(warnings)
    for key in ("'image'", "'train.parallelism'", "'storage.credentials_secret'"):
        assert key in joined
    assert len(warnings) == 3


def test_a_compile_time_key_equal_to_the_compiled_value_does_not_warn():
    compiled = compile_time_values(Config())
    _, warnings = resolve_settings({"train": {"parallelism": Config().train.parallelism}},
                                   target="y", compiled=compiled)
    assert warnings == []


def test_kfp_floats_for_integers_are_accepted():
    # A dict parameter comes back from KFP with every number a float.
    cfg, _ = resolve_settings({"split": {"seed": 42.0}, "train": {"search_iterations": 3.0}}, target="y")
    assert cfg.split.seed == 42 and cfg.train.search_iterations == 3
