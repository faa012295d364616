"""The compiled training pipeline runs on a cluster as compiled.

Read the way KFP reads it: every input of every step is bound (a pipeline
parameter, another step's output, or a constant), the run parameters are what a
person fills in the UI, the registry is one a pod can reach, storage endpoint,
region and image are there, every step is sized, safe steps retry, and no
credential is in the text.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubeloop import cli
from kubeloop.compile import CLUSTER_ENDPOINT, CLUSTER_REGISTRY, cluster_config
from kubeloop.config import Config
from kubeloop.errors import UserError

RUN_PARAMETERS = {"data_uri", "target", "task", "time_column", "id_column", "model_name",
                  "registry", "config", "deploy"}
NOT_RETRIED = {"register-op", "blocked-op"}


def _compile(tmp_path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = tmp_path / "pipeline.yaml"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        assert cli.main(["compile", "--output", str(out), *args]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    return {"spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}, "text": out.read_text()}


@pytest.fixture(scope="module")
def defaults(tmp_path_factory) -> dict[str, Any]:
    """Compiled with no flags, no config and no S3 environment at all."""
    return _compile(tmp_path_factory.mktemp("defaults"))


def _dags(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [("root", spec["root"])]
    out += [(name, c) for name, c in spec["components"].items() if "dag" in c]
    return out


def test_run_parameters_are_what_the_ui_asks_for(defaults):
    params = defaults["spec"]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == RUN_PARAMETERS
    required = {k for k, p in params.items() if not p.get("isOptional")}
    # No target in the config: every run must name it; the UI refuses to start without.
    assert required == {"data_uri", "target"}
    assert params["registry"]["defaultValue"] == CLUSTER_REGISTRY
    config = params["config"]["defaultValue"]
    assert not RUN_PARAMETERS & set(config), "a run parameter also sits inside config"
    assert params["deploy"]["defaultValue"] is False
    assert config["storage"]["endpoint_url"] == CLUSTER_ENDPOINT
    assert config["storage"]["region"]
    # Fixed at compile time, so not offered where changing them would do nothing.
    assert "image" not in config and "resources" not in config
    assert "parallelism" not in config["train"]
    assert "credentials_secret" not in config["storage"]


def test_a_target_given_at_compile_time_becomes_the_default(tmp_path):
    c = _compile(tmp_path, "--target", "churned", "--time-column", "signup_date")
    params = c["spec"]["root"]["inputDefinitions"]["parameters"]
    assert params["target"]["defaultValue"] == "churned" and params["target"]["isOptional"]
    assert params["time_column"]["defaultValue"] == "signup_date"


def test_every_step_input_is_bound(defaults):
    spec = defaults["spec"]
    unbound = []
    for dag_name, dag_component in _dags(spec):
        for task_name, task in dag_component["dag"]["tasks"].items():
            component = spec["components"][task["componentRef"]["name"]]
            inputs = component.get("inputDefinitions", {})
            given = task.get("inputs", {})
            for kind in ("parameters", "artifacts"):
                for name, definition in inputs.get(kind, {}).items():
                    if name in given.get(kind, {}) or definition.get("isOptional"):
                        continue
                    if name.startswith("pipelinechannel--") or task.get("parameterIterator"):
                        continue  # loop items and channels the DAG passes itself
                    unbound.append(f"{dag_name}/{task_name}.{name}")
    assert not unbound, f"inputs with no value at run time: {unbound}"


def test_bad_data_stops_under_a_condition_with_the_report_kept(defaults):
    spec = defaults["spec"]
    tasks = {n: t for _, d in _dags(spec) for n, t in d["dag"]["tasks"].items()}
    conditions = [t["triggerPolicy"]["condition"] for t in tasks.values() if "triggerPolicy" in t]
    assert any("validate-op" in c and "blocked" in c for c in conditions), conditions
    # validate returns its verdict and its report as outputs of a step that succeeds.
    validate = spec["components"][tasks["validate-op"]["componentRef"]["name"]]
    outputs = validate["outputDefinitions"]
    assert "Output" in outputs["parameters"]
    assert {"report", "anomalies", "schema"} <= set(outputs["artifacts"])


def test_every_step_is_sized_and_thread_pools_follow_the_cpu_limit(defaults):
    executors = defaults["spec"]["deploymentSpec"]["executors"]
    cfg = Config()
    for name, ex in executors.items():
        res = ex["container"].get("resources", {})
        for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
            assert key in res or key.replace("cpu", "resourceCpu").replace("memory", "resourceMemory") in res, (name, key)
        env = {e["name"]: e["value"] for e in ex["container"].get("env", [])}
        assert env.get("OMP_NUM_THREADS") in {
            str(cfg.resources.default.cpu_limit_cores()), str(cfg.resources.train.cpu_limit_cores())
        }, name
        assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["LOKY_MAX_CPU_COUNT"]


def test_safe_steps_retry_and_register_does_not(defaults):
    spec = defaults["spec"]
    tasks = {n: t for _, d in _dags(spec) for n, t in d["dag"]["tasks"].items()
             if not n.startswith("condition") and not n.startswith("for-loop")}
    for name, task in tasks.items():
        if name in NOT_RETRIED:
            assert "retryPolicy" not in task, name
        elif "componentRef" in task and "dag" not in spec["components"][task["componentRef"]["name"]]:
            assert task["retryPolicy"]["maxRetryCount"] == Config().resources.retries, name


def test_register_records_the_kfp_run_id(defaults):
    tasks = {n: t for _, d in _dags(defaults["spec"]) for n, t in d["dag"]["tasks"].items()}
    run_id = tasks["register-op"]["inputs"]["parameters"]["run_id"]
    assert "pipeline_job_uuid" in str(run_id) or "PIPELINE_JOB" in str(run_id).upper()


def test_endpoint_comes_from_the_environment_when_set(tmp_path):
    c = _compile(tmp_path, env={"AWS_ENDPOINT_URL": "http://minio.storage.svc:9000",
                                "AWS_REGION": "eu-central-1"})
    config = c["spec"]["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config["storage"]["endpoint_url"] == "http://minio.storage.svc:9000"
    assert config["storage"]["region"] == "eu-central-1"


def test_the_flag_outranks_the_environment(tmp_path):
    c = _compile(tmp_path, "--s3-endpoint", "http://flag:9000",
                 env={"AWS_ENDPOINT_URL": "http://env:9000"})
    config = c["spec"]["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config["storage"]["endpoint_url"] == "http://flag:9000"


@pytest.mark.parametrize("registry", ["registry-dir", "/srv/registry", "file:///srv/registry"])
def test_a_registry_a_pod_cannot_reach_is_refused(tmp_path, capsys, registry):
    out = tmp_path / "p.yaml"
    assert cli.main(["compile", "--output", str(out), "--registry", registry]) == 2
    err = capsys.readouterr().err
    assert "s3://" in err and registry in err and "Traceback" not in err
    assert not out.exists()


def test_cluster_config_keeps_what_the_user_set():
    cfg = Config(registry="s3://team/reg", storage={"endpoint_url": "http://m:9000", "region": "r1"})
    resolved, notes = cluster_config(cfg, image="img:1")
    assert (resolved.registry, resolved.storage.endpoint_url, resolved.storage.region) == (
        "s3://team/reg", "http://m:9000", "r1")
    assert resolved.image == "img:1" and notes == []
    with pytest.raises(UserError):
        cluster_config(Config(registry="./reg"))


def test_deploy_runs_only_when_asked_and_the_gate_promoted(defaults):
    spec = defaults["spec"]
    tasks = {n: t for _, d in _dags(spec) for n, t in d["dag"]["tasks"].items()}
    conditions = " ".join(t["triggerPolicy"]["condition"] for t in tasks.values() if "triggerPolicy" in t)
    assert "pipelinechannel--deploy" in conditions
    assert "gate-op-Output" in conditions and "promote" in conditions
    deploy = tasks["deploy-op"]["inputs"]["parameters"]
    # The version just registered, not whatever production is when the step runs.
    assert "register-op-version" in str(deploy["version"])
    assert "deploy" in tasks["register-op"]["inputs"]["parameters"]


@pytest.mark.slow
def test_the_compiled_yaml_itself_runs_through_the_local_runner(tmp_path, s3_endpoint, bucket, monkeypatch):
    """Not the Python pipeline: the YAML a cluster gets, loaded back and run, with a
    registry on a real S3 server and the values a person types in the KFP UI."""
    import json

    from kfp import components, local

    from kubeloop.datagen import make_churn
    from kubeloop.registry import Registry

    data = tmp_path / "churn.csv"
    make_churn(600, seed=2).to_csv(data, index=False)
    registry = f"s3://{bucket}/registry"
    c = _compile(tmp_path, "--registry", registry)
    pipeline = components.load_component_from_file(str(tmp_path / "pipeline.yaml"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the runner's per-step temp directories
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    config = c["spec"]["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    config = {**config, "train": {"families": ["linear"], "search_iterations": 1},
              "evaluation": {"stability_seeds": 0},
              "storage": {**config["storage"], "endpoint_url": s3_endpoint}}
    task = pipeline(data_uri=str(data), target="churned", model_name="churn", config=config)
    summary = json.loads(task.output)
    assert (summary["model"], summary["version"]) == ("churn", "v1")
    reg = Registry(registry, endpoint_url=s3_endpoint)
    lineage = reg.read_json("churn", "v1", "lineage")
    assert lineage["run_id"]  # the KFP run id, resolved by the runner
    assert lineage["config"]["target"] == "churned" and lineage["config"]["registry"] == registry
    assert lineage["config"]["image"] == Config().image  # the image the steps were compiled for


def test_the_monitoring_pipeline_compiles_for_a_cluster_too(tmp_path):
    c = _compile(tmp_path, "--pipeline", "monitoring", "--image", "registry.example/kubeloop:1")
    spec = c["spec"]
    assert spec["pipelineInfo"]["name"] == "kubeloop-monitoring"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["registry"]["defaultValue"] == CLUSTER_REGISTRY
    assert params["config"]["defaultValue"]["storage"]["endpoint_url"] == CLUSTER_ENDPOINT
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/kubeloop:1"}
    # The retraining branch is the training pipeline, compiled in.
    assert any(name.startswith("comp-kubeloop-training") for name in spec["components"])


def test_an_unknown_pipeline_is_refused(tmp_path):
    from kubeloop.compile import CompileError, compile_pipeline_with_notes

    with pytest.raises(CompileError, match="unknown pipeline"):
        compile_pipeline_with_notes("nightly", Config(), tmp_path / "x.yaml")
