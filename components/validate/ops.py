"""KFP adapters of the validate stage: a few lines each over ``validate_step``."""

from __future__ import annotations

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from kubeloop.component import component


@component
def validate_op(
    dataset: Input[Dataset],
    profile: Input[Artifact],
    config: dict,
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    report: Output[Markdown],
) -> str:
    """Check the data against production's schema; returns "pass" or "blocked"."""
    import json

    from kubeloop.components.validate import validate_step
    from kubeloop.config import Config
    from kubeloop.progress import stage
    from kubeloop.registry import Registry

    with stage("validate") as st:
        cfg = Config.from_dict(config)
        registry = Registry(cfg.registry, cfg.storage)
        with open(profile.path) as f:
            ingest_profile = json.load(f)
        # The path, not a frame: the step reads one column at a time.
        outcome = validate_step(dataset.path, cfg, registry=registry,
                                ingest_profile=ingest_profile)
        outcome.write(schema_path=schema.path, anomalies_path=anomalies.path,
                      report_path=report.path, name=cfg.model_name)
        st.result, st.details = outcome.summary(), {"verdict": outcome.verdict}
    return outcome.verdict


@component
def blocked_op(anomalies: Input[Artifact]) -> str:
    """Stop a run whose data validation blocked, saying why in plain words.

    Declared to return a string only so the pipeline can name either branch's
    result (``dsl.OneOf``); it always raises."""
    import json

    from kubeloop.components.validate import ValidationBlocked, blocked_message
    from kubeloop.progress import stage

    with stage("validate"), open(anomalies.path) as f:
        raise ValidationBlocked(blocked_message(json.load(f)))
