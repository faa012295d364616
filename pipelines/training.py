"""The training pipeline: wiring only; every step's logic lives in components/.

    ingest -> validate -> split -> features -> {baseline, one task per model family}
           -> select -> evaluate (vs baseline and production) -> gate -> register

Bad data stops the run at validate, before anything is trained or registered.
The register step stores every completed run as a registry version and moves the
``production`` alias only when the gate promotes, with a compare-and-swap.

On a cluster, every step that touches storage gets the S3 keys as environment
variables from the Kubernetes Secret named in ``storage.credentials_secret``, so
no credential is ever a pipeline parameter or part of the compiled YAML.
"""


from typing import Any

from kfp import dsl, kubernetes

from kubeloop.components.evaluate import evaluate_op
from kubeloop.components.features import features_op
from kubeloop.components.gate import gate_op
from kubeloop.components.ingest import ingest_op
from kubeloop.components.register import register_op
from kubeloop.components.split import split_op
from kubeloop.components.train import baseline_op, select_op, train_op
from kubeloop.components.validate import validate_op
from kubeloop.config import DEFAULT_FAMILIES, Config

PIPELINE_NAME = "kubeloop-training"

# Keys the steps read from the credentials Secret (MinIO accepts the AWS names).
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}


def _with_credentials(task: Any, secret_name: str) -> Any:
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=SECRET_KEYS)
    return task


def build_training_pipeline(config: Config | None = None, *, parallelism: int | None = None) -> Any:
    """The pipeline, with ``config`` as the default of its ``config`` parameter.

    ``parallelism`` bounds how many model families train at once (default:
    ``train.parallelism``); the local runner honours it too.
    """
    cfg = config or Config()
    parallelism = parallelism or cfg.train.parallelism
    secret = cfg.storage.credentials_secret
    defaults = cfg.to_params()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="kubeloop: ingest, validate, split, features, train, evaluate, gate, register",
    )
    def training_pipeline(
        data_uri: str,
        registry: str = cfg.registry,
        model_name: str = cfg.model_name,
        config: dict = defaults,
        families: list = list(cfg.train.families or DEFAULT_FAMILIES),  # noqa: B006 (a KFP parameter default, never mutated)
    ) -> str:
        # Steps whose result depends on more than their inputs (the data behind a
        # URI, the registry's production model) must never be served from cache.
        ingest = ingest_op(data_uri=data_uri, config=config).set_caching_options(False)
        _with_credentials(ingest, secret)

        validate = validate_op(
            dataset=ingest.outputs["dataset"], registry=registry, model_name=model_name, config=config
        ).set_caching_options(False)
        _with_credentials(validate, secret)
        schema = validate.outputs["schema"]

        split = split_op(dataset=ingest.outputs["dataset"], schema=schema, config=config)
        features = features_op(train=split.outputs["train"], schema=schema)

        common = dict(
            train=split.outputs["train"],
            valid=split.outputs["valid"],
            transformer=features.outputs["transformer"],
            schema=schema,
            config=config,
        )
        baseline = baseline_op(**common)
        with dsl.ParallelFor(families, parallelism=parallelism) as family:
            candidate = train_op(family=family, **common)
            candidate.set_cpu_request("1").set_memory_request("2G").set_memory_limit("8G")

        select = select_op(candidates=dsl.Collected(candidate.outputs["model"]), schema=schema, config=config)

        evaluate = evaluate_op(
            model=select.outputs["best"],
            baseline=baseline.outputs["model"],
            test=split.outputs["test"],
            train=split.outputs["train"],
            schema=schema,
            registry=registry,
            model_name=model_name,
            config=config,
        ).set_caching_options(False)
        _with_credentials(evaluate, secret)

        gate = gate_op(evaluation=evaluate.outputs["evaluation"], model_name=model_name, config=config)
        gate.set_caching_options(False)

        register = register_op(
            model=select.outputs["best"],
            schema=schema,
            evaluation=evaluate.outputs["evaluation"],
            decision=gate.outputs["decision"],
            profile=ingest.outputs["profile"],
            split_summary=split.outputs["summary"],
            train=split.outputs["train"],
            validation_report=validate.outputs["report"],
            evaluation_report=evaluate.outputs["report"],
            gate_report=gate.outputs["report"],
            leaderboard=select.outputs["leaderboard"],
            registry=registry,
            model_name=model_name,
            data_uri=data_uri,
            config=config,
        ).set_caching_options(False)
        _with_credentials(register, secret)
        return register.output

    return training_pipeline


# Stage names as they appear in the compiled YAML (tests check each is present).
STAGES = (
    "ingest-op",
    "validate-op",
    "split-op",
    "features-op",
    "baseline-op",
    "train-op",
    "select-op",
    "evaluate-op",
    "gate-op",
    "register-op",
)
