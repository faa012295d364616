"""The training pipeline: wiring only; every step's logic lives in components/.

    settings -> ingest -> validate -> [blocked: stop, report kept]
             -> split -> features -> {baseline, one task per model family}
             -> select -> evaluate (vs baseline and production) -> gate -> register

The run parameters (``data_uri``, ``target``, ``task``, ``time_column``,
``id_column``, ``model_name``, ``registry``) are what a person fills in the KFP
UI; ``config`` holds the rest. The settings step merges them once, and every
later step reads its output, so each value has one source.

Validate does not fail on bad data: it stores its report and returns a verdict,
and the pipeline stops under ``dsl.If`` with a step that says why in plain words.
KFP drops the outputs of a failed task, so this is how the anomalies report
reaches the UI. The register step stores every completed run as a registry
version and moves ``production`` only when the gate promotes, with a
compare-and-swap.

On a cluster (``on_cluster=True``, what ``kubeloop compile`` builds), every step
declares CPU and memory from ``resources``, its thread pools follow its CPU
limit, steps that are safe to repeat retry with backoff, and steps that touch
storage get the S3 keys as environment variables from the Kubernetes Secret
named in ``storage.credentials_secret``: no credential is ever a pipeline
parameter or part of the compiled YAML. Run locally, each step's thread pools get
its share of this machine's cores instead (``local_thread_budgets``).
"""

import inspect
from typing import Any

from kfp import dsl, kubernetes

from kubeloop.components.deploy import deploy_op
from kubeloop.components.evaluate import evaluate_op
from kubeloop.components.features import features_op
from kubeloop.components.gate import gate_op
from kubeloop.components.ingest import ingest_op
from kubeloop.components.register import register_op
from kubeloop.components.settings import RUN_PARAMETERS, compile_time_values, settings_op
from kubeloop.components.split import split_op
from kubeloop.components.train import baseline_op, select_op, train_op
from kubeloop.components.validate import blocked_op, validate_op
from kubeloop.config import Config, ResourcesConfig, StepResources
from kubeloop.local_run import machine_cores, thread_budget, thread_environment

PIPELINE_NAME = "kubeloop-training"

# Keys the steps read from the credentials Secret (MinIO accepts the AWS names).
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
# Thread pools sized from the CPU limit: a pod sees every core of its node, and
# OpenMP, OpenBLAS and joblib would otherwise start one thread per node core.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LOKY_MAX_CPU_COUNT")


def with_credentials(task: Any, secret_name: str) -> Any:
    """Give ``task`` the S3 keys from the Kubernetes Secret ``secret_name`` as env."""
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=SECRET_KEYS)
    return task


def size_pod(task: Any, r: StepResources, sizes: ResourcesConfig, *, retry: bool = True) -> Any:
    """A cluster step's pod: CPU and memory requests and limits, thread pools sized to
    the CPU limit, and the retry policy (``sizes``: the config's ``resources``)."""
    task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
    task.set_memory_request(r.memory_request).set_memory_limit(r.memory_limit)
    for var in THREAD_VARIABLES:
        task.set_env_variable(var, str(r.cpu_limit_cores()))
    # The retry policy: KFP v2's set_retry (kfp 2.17) repeats a task with the
    # same pod spec, on any failure, with no larger memory. So retries are for
    # what a second attempt can cure (an evicted pod, a lost node, a storage
    # error); memory is handled where the rows are held: a train step sizes
    # its sample to its cgroup limit and fails at once, naming the limit and
    # resources.train.memory_limit, when nothing useful fits (kubeloop.memory).
    if retry and sizes.retries:
        task.set_retry(num_retries=sizes.retries,
                       backoff_duration=f"{sizes.retry_backoff_seconds}s", backoff_factor=2.0)
    return task


def run_config(cfg: Config) -> dict[str, Any]:
    """The ``config`` parameter's default: everything but the run parameters (which
    are parameters of their own) and the keys fixed at compile time."""
    params = cfg.to_params()
    for key in RUN_PARAMETERS:
        params.pop(key, None)
    params.pop("image", None)
    params.pop("resources", None)
    params["train"].pop("parallelism", None)
    params["storage"].pop("credentials_secret", None)
    return params


def local_thread_budgets(cfg: Config, parallelism: int) -> dict[str, int]:
    """Threads per step on this machine: ``train`` for the model families (``parallelism``
    of them, at most one per family, run at once), ``default`` for every other step (one
    at a time). A ``resources.train`` CPU limit other than the default is the families'
    budget instead, as it sizes their pools on a cluster."""
    cores = machine_cores()
    at_once = max(1, min(parallelism, len(cfg.train.families)))
    limit = cfg.resources.train
    given = limit.cpu_limit != ResourcesConfig().train.cpu_limit
    return {
        "train": thread_budget(cores=cores, concurrent_steps=at_once,
                               cpu_limit=limit.cpu_limit_cores() if given else None),
        "default": thread_budget(cores=cores),
    }


def build_training_pipeline(
    config: Config | None = None, *, parallelism: int | None = None, on_cluster: bool = False
) -> Any:
    """The pipeline, with ``config``'s values as its parameters' defaults.

    ``parallelism`` bounds how many model families train at once (default:
    ``train.parallelism``); the local runner honours it too. ``on_cluster`` adds
    what only a cluster reads (pod sizes, thread limits, retries) and makes the
    settings step refuse a registry a pod cannot reach.
    """
    cfg = config or Config()
    parallelism = parallelism or cfg.train.parallelism
    secret = cfg.storage.credentials_secret
    compiled = compile_time_values(cfg)
    sizes = cfg.resources
    default_config = run_config(cfg)

    local_threads = local_thread_budgets(cfg, parallelism)

    def step(task: Any, resources: StepResources | None = None, *, storage: bool = False,
             retry: bool = True, cache: bool = True, parallel: bool = False) -> Any:
        if not on_cluster:
            # Locally nothing else sizes the pools: each step gets its share of the cores
            # (``parallel``: one of the model families that train at once).
            threads = local_threads["train" if parallel else "default"]
            for var, value in thread_environment(threads).items():
                task.set_env_variable(var, value)
        if not cache:
            # Result depends on more than the inputs (the data behind a URI, the
            # registry's production model): never served from cache.
            task.set_caching_options(False)
        if storage:
            with_credentials(task, secret)
        if on_cluster:
            size_pod(task, resources or sizes.default, sizes, retry=retry)
        return task

    def training_pipeline(
        data_uri: str,
        target: str = cfg.target or "",
        task: str = cfg.task or "",
        time_column: str = cfg.time_column or "",
        id_column: str = cfg.id_column or "",
        model_name: str = cfg.model_name,
        registry: str = cfg.registry,
        config: dict = default_config,  # noqa: B006 (a KFP parameter default, never mutated)
        deploy: bool = False,
    ) -> str:
        settings = step(settings_op(
            config=config, target=target, task=task, time_column=time_column,
            id_column=id_column, model_name=model_name, registry=registry,
            compiled=compiled, on_cluster=on_cluster,
        ))
        cfgp = settings.outputs["config"]
        ingest = step(ingest_op(data_uri=data_uri, config=cfgp), storage=True, cache=False)
        validate = step(validate_op(dataset=ingest.outputs["dataset"], profile=ingest.outputs["profile"],
                                    config=cfgp),
                        storage=True, cache=False)

        with dsl.If(validate.outputs["Output"] == "blocked", name="data-blocked"):
            blocked = step(blocked_op(anomalies=validate.outputs["anomalies"]), retry=False)
        with dsl.Else(name="data-valid"):
            registered = _train_evaluate_register(
                step, settings, ingest, validate, data_uri=data_uri, parallelism=parallelism,
                train_size=sizes.train, deploy=deploy, on_cluster=on_cluster,
            )
        return dsl.OneOf(blocked.output, registered.outputs["summary"])

    if not cfg.target:
        # No target in the config: the parameter gets no default, so the KFP UI and
        # API ask for it before a run starts instead of a pod failing later.
        sig = inspect.signature(training_pipeline)
        training_pipeline.__signature__ = sig.replace(parameters=[
            p.replace(default=inspect.Parameter.empty) if p.name == "target" else p
            for p in sig.parameters.values()
        ])
    return dsl.pipeline(
        training_pipeline,
        name=PIPELINE_NAME,
        description="kubeloop: ingest, validate, split, features, train, evaluate, gate, register",
    )


def _train_evaluate_register(step, settings, ingest, validate, *, data_uri, parallelism, train_size,
                             deploy, on_cluster):
    cfgp = settings.outputs["config"]
    registry, model_name = settings.outputs["registry"], settings.outputs["model_name"]
    schema = validate.outputs["schema"]
    split = step(split_op(dataset=ingest.outputs["dataset"], schema=schema, config=cfgp))
    features = step(features_op(train=split.outputs["train"], schema=schema, config=cfgp))
    common = dict(
        train=split.outputs["train"],
        valid=split.outputs["valid"],
        transformer=features.outputs["transformer"],
        schema=schema,
        config=cfgp,
    )
    baseline = step(baseline_op(**common))
    with dsl.ParallelFor(settings.outputs["families"], parallelism=parallelism) as family:
        candidate = step(train_op(family=family, **common), train_size, parallel=True)

    select = step(select_op(candidates=dsl.Collected(candidate.outputs["model"]), schema=schema, config=cfgp))
    evaluate = step(evaluate_op(
        model=select.outputs["best"],
        baseline=baseline.outputs["model"],
        test=split.outputs["test"],
        train=split.outputs["train"],
        schema=schema,
        registry=registry,
        model_name=model_name,
        config=cfgp,
    ), train_size, storage=True, cache=False)
    gate = step(gate_op(evaluation=evaluate.outputs["evaluation"], model_name=model_name, config=cfgp),
                cache=False)
    register = step(register_op(
        model=select.outputs["best"],
        schema=schema,
        evaluation=evaluate.outputs["evaluation"],
        decision=gate.outputs["decision"],
        profile=ingest.outputs["profile"],
        split_summary=split.outputs["summary"],
        train=split.outputs["train"],
        valid=split.outputs["valid"],
        test=split.outputs["test"],
        validation_report=validate.outputs["report"],
        evaluation_report=evaluate.outputs["report"],
        gate_report=gate.outputs["report"],
        leaderboard=select.outputs["leaderboard"],
        data_uri=data_uri,
        config=cfgp,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        deploy=deploy,
        on_cluster=on_cluster,
    ), storage=True, retry=False, cache=False)

    # On a cluster with deploy on, a promoted version goes out: the first one with
    # all the traffic, later ones as a canary beside production.
    with dsl.If(deploy == True, name="deploy-on"):  # noqa: E712 (a KFP condition, not a bool)
        with dsl.If(gate.outputs["Output"] == "promote", name="promoted"):
            # The run's service account (kubeloop submit --service-account, default
            # kubeloop-pipeline) is what may patch InferenceServices.
            step(deploy_op(registry=registry, model_name=model_name, config=cfgp,
                           version=register.outputs["version"]), storage=True, cache=False)
    return register


# Stage names as they appear in the compiled YAML (tests check each is present).
STAGES = (
    "deploy-op",
    "settings-op",
    "ingest-op",
    "validate-op",
    "blocked-op",
    "split-op",
    "features-op",
    "baseline-op",
    "train-op",
    "select-op",
    "evaluate-op",
    "gate-op",
    "register-op",
)
