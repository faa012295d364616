"""The profiling and drift pipelines: wiring only (components/partitions.py has the logic).

    plan -> ParallelFor(partitions, one pod each): sketch -> merge (dsl.Collected)

A table of at most ``scale.partition_rows`` rows is one partition: the same
steps on one pod. More rows fan out, and the merge step combines the sketches
into the profile (its output: profile.json and the merged sketch.json), equal to the
one-pod result within the sketches' stated error.
"""

from typing import Any

from kfp import dsl
from kfp.dsl import Artifact

from kubeloop.components.partitions import (
    drift_merge_op,
    drift_part_op,
    merge_op,
    plan_op,
    sketch_op,
)
from kubeloop.config import Config
from kubeloop.pipelines.training import size_pod, with_credentials

PIPELINE_NAME = "kubeloop-profiling"


def _steps(cfg: Config, on_cluster: bool) -> Any:
    """What every step here gets: never cached (the data behind a URI changes), and on
    a cluster the S3 keys from the credentials Secret, the default pod size (thread
    pools sized to its CPU limit) and retries (every step is safe to repeat)."""
    sizes = cfg.resources

    def step(task: Any) -> Any:
        task.set_caching_options(False)
        if on_cluster:
            with_credentials(task, cfg.storage.credentials_secret)
            size_pod(task, sizes.default, sizes)
        return task

    return step


def build_profiling_pipeline(config: Config | None = None, *, parallelism: int | None = None,
                             on_cluster: bool = False) -> Any:
    """The pipeline, with ``config``'s values as the ``config`` parameter's default;
    ``parallelism`` bounds how many partitions are sketched at once (default:
    ``train.parallelism``)."""
    cfg = config or Config()
    default_config = cfg.to_params()
    step = _steps(cfg, on_cluster)
    parallelism = parallelism or cfg.train.parallelism

    @dsl.pipeline(name=PIPELINE_NAME, description="Profile a table, one step per partition, then merge")
    def profiling(data_uri: str, config: dict = default_config) -> Artifact:
        plan = step(plan_op(data_uri=data_uri, config=config))
        with dsl.ParallelFor(plan.output, parallelism=parallelism) as partition:
            sketch = step(sketch_op(data_uri=data_uri, partition=partition, config=config))
        merge = step(merge_op(sketches=dsl.Collected(sketch.outputs["sketch"]), partitions=plan.output,
                              config=config))
        return merge.outputs["profile"]

    return profiling


def build_drift_pipeline(config: Config | None = None, *, parallelism: int | None = None,
                         on_cluster: bool = False) -> Any:
    """Drift of a table against a reference profile (a profile .json or
    model:NAME[@REF]), one step per partition of ``scale.partition_rows`` rows,
    then one comparison of the merged accumulators (the report, as a file)."""
    cfg = config or Config()
    default_config = cfg.to_params()
    step = _steps(cfg, on_cluster)
    parallelism = parallelism or cfg.train.parallelism

    @dsl.pipeline(name="kubeloop-drift", description="Drift of a table, one step per partition, then merge")
    def drift(data_uri: str, reference_uri: str, config: dict = default_config) -> Artifact:
        plan = step(plan_op(data_uri=data_uri, config=config))
        with dsl.ParallelFor(plan.output, parallelism=parallelism) as partition:
            part = step(drift_part_op(data_uri=data_uri, reference_uri=reference_uri, partition=partition,
                                      config=config))
        merge = step(drift_merge_op(parts=dsl.Collected(part.outputs["part"]), reference_uri=reference_uri,
                                    config=config))
        return merge.outputs["report"]

    return drift
