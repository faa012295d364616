"""The monitoring pipeline: wiring only.

    monitor (drift + decay of the version serving, report, decision)
      -> if it says retrain: the training pipeline on the fresh data, as a sub-pipeline,
         whose gate decides whether the challenger replaces production (with
         ``deploy``: whether it goes out as a canary beside it)

Run it on a schedule (a KFP recurring run) and the loop closes inside KFP.
"""

from typing import Any

from kfp import dsl

from kubeloop.components.monitor import monitor_op
from kubeloop.config import Config
from kubeloop.pipelines.training import build_training_pipeline, run_config, with_credentials

PIPELINE_NAME = "kubeloop-monitoring"


def build_monitoring_pipeline(config: Config | None = None, *, parallelism: int | None = None,
                              on_cluster: bool = False) -> Any:
    cfg = config or Config()
    training = build_training_pipeline(cfg, parallelism=parallelism, on_cluster=on_cluster)
    defaults = run_config(cfg)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="kubeloop: drift and decay of the production model; retrain when the evidence says so",
    )
    def monitoring_pipeline(
        logs_uri: str,
        registry: str = cfg.registry,
        model_name: str = cfg.model_name,
        labels_uri: str = "",
        retrain_data_uri: str = "",
        window_hours: float = 0.0,
        report_uri: str = "",
        target: str = cfg.target or "",
        task: str = cfg.task or "",
        time_column: str = cfg.time_column or "",
        id_column: str = cfg.id_column or "",
        config: dict = defaults,
        deploy: bool = False,
    ) -> bool:
        monitor = monitor_op(
            model_name=model_name, registry=registry, logs_uri=logs_uri, labels_uri=labels_uri,
            retrain_data_uri=retrain_data_uri, window_hours=window_hours, report_uri=report_uri,
            config=config,
        ).set_caching_options(False)
        with_credentials(monitor, cfg.storage.credentials_secret)
        with dsl.If(monitor.outputs["Output"] == True, name="retrain"):  # noqa: E712 (a KFP condition, not a Python test)
            # The training pipeline as a sub-pipeline: its gate decides what the
            # retrained model becomes. With deploy on, a promoted challenger goes out
            # as a canary and only the canary's promotion moves production, so the
            # registry keeps saying what serves.
            training(data_uri=retrain_data_uri, target=target, task=task, time_column=time_column,
                     id_column=id_column, registry=registry, model_name=model_name, config=config,
                     deploy=deploy)
        return monitor.outputs["Output"]

    return monitoring_pipeline


def compile_monitoring(cfg: Config, output: str, *, image: str | None = None) -> str:
    """Write the monitoring pipeline's YAML (every step on ``image``), refusing one
    that would hold a credential of this environment."""
    import os
    from pathlib import Path

    import yaml
    from kfp import compiler

    from kubeloop.compile import assert_no_credentials, set_image

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")
    compiler.Compiler().compile(build_monitoring_pipeline(cfg), str(tmp))
    docs = list(yaml.safe_load_all(tmp.read_text()))
    if image:
        set_image(docs[0], image)
    text = yaml.safe_dump_all(docs, sort_keys=False)
    assert_no_credentials(text)
    tmp.write_text(text)
    os.replace(tmp, out)
    return str(out)
