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

PIPELINE_NAME = "kubeloop-profiling"


def build_profiling_pipeline(config: Config | None = None, *, parallelism: int = 2) -> Any:
    """The pipeline, with ``config``'s values as the ``config`` parameter's default;
    ``parallelism`` bounds how many partitions are sketched at once."""
    default_config = (config or Config()).to_params()

    @dsl.pipeline(name=PIPELINE_NAME, description="Profile a table, one step per partition, then merge")
    def profiling(data_uri: str, config: dict = default_config) -> Artifact:
        plan = plan_op(data_uri=data_uri, config=config)
        with dsl.ParallelFor(plan.output, parallelism=parallelism) as partition:
            sketch = sketch_op(data_uri=data_uri, partition=partition, config=config)
        merge = merge_op(sketches=dsl.Collected(sketch.outputs["sketch"]), partitions=plan.output, config=config)
        return merge.outputs["profile"]

    return profiling


def build_drift_pipeline(config: Config | None = None, *, parallelism: int = 2) -> Any:
    """Drift of a table against a reference profile (a profile .json or
    model:NAME[@REF]), one step per partition of ``scale.partition_rows`` rows,
    then one comparison of the merged accumulators (the report, as a file)."""
    default_config = (config or Config()).to_params()

    @dsl.pipeline(name="kubeloop-drift", description="Drift of a table, one step per partition, then merge")
    def drift(data_uri: str, reference_uri: str, config: dict = default_config) -> Artifact:
        plan = plan_op(data_uri=data_uri, config=config)
        with dsl.ParallelFor(plan.output, parallelism=parallelism) as partition:
            part = drift_part_op(data_uri=data_uri, reference_uri=reference_uri, partition=partition, config=config)
        merge = drift_merge_op(parts=dsl.Collected(part.outputs["part"]), reference_uri=reference_uri, config=config)
        return merge.outputs["report"]

    return drift
