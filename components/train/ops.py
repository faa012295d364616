"""The train stage's KFP adapters: a few lines each over ``step``."""

from __future__ import annotations

from typing import List  # noqa: UP035 (KFP reads typing.List in artifact lists)

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from kubeloop.component import component


@component
def train_op(
    family: str,
    train: Input[Dataset],
    valid: Input[Dataset],
    transformer: Input[Model],
    schema: Input[Artifact],
    config: dict,
    model: Output[Model],
):
    """Tune one model family; one task per family, in parallel on a cluster."""
    from kubeloop.components.train import _score_text, train_step
    from kubeloop.progress import stage

    with stage(f"train {family}") as st:
        record = train_step(family, train.path, valid.path, transformer.path, schema.path, config, model.path)
        model.metadata.update({"family": family, "valid_score": record["valid_score"], "metric": record["metric"]})
        st.result = _score_text(record)
        st.details = {"family": family, "valid_score": record["valid_score"]}


@component
def baseline_op(
    train: Input[Dataset],
    valid: Input[Dataset],
    transformer: Input[Model],
    schema: Input[Artifact],
    config: dict,
    model: Output[Model],
):
    """The trivial model (class priors or the mean) every candidate must beat."""
    from kubeloop.components.train import BASELINE, _score_text, train_step
    from kubeloop.progress import stage

    with stage("baseline") as st:
        record = train_step(BASELINE, train.path, valid.path, transformer.path, schema.path, config, model.path)
        st.result = _score_text(record)


@component
def select_op(
    candidates: Input[List[Model]],  # noqa: UP006 (KFP documents typing.List here)
    schema: Input[Artifact],
    config: dict,
    best: Output[Model],
    leaderboard: Output[Markdown],
):
    """Pick the best family on validation; its directory becomes the challenger."""
    import json
    import os
    import shutil

    from kubeloop.components.train import leaderboard_markdown, learning_note, select_best
    from kubeloop.config import Config
    from kubeloop.metric_names import primary_metric
    from kubeloop.progress import stage

    with stage("select") as st:
        cfg = Config.from_dict(config)
        sch = json.loads(open(schema.path).read())
        metric = primary_metric(sch["task"], cfg.gate.primary_metric)
        records = [json.loads(open(os.path.join(c.path, "candidate.json")).read()) for c in candidates]
        index = select_best(records, metric)
        chosen = records[index]
        note = learning_note(records, cfg.train.families)
        shutil.copytree(candidates[index].path, best.path, dirs_exist_ok=True)
        if note:
            # The chosen record travels to the model card and the run summary.
            chosen["learning_note"] = note
            with open(os.path.join(best.path, "candidate.json"), "w") as f:
                json.dump(chosen, f, indent=2, allow_nan=False)
        with open(leaderboard.path, "w") as f:
            f.write(leaderboard_markdown(records, metric, chosen=chosen["family"]))
        best.metadata.update({"family": chosen["family"], "valid_score": chosen["valid_score"]})
        st.result = f"{chosen['family']} (valid {metric} {chosen['valid_score']:.4f})"
        if note:
            st.result += f"; WARNING: {note}"
        st.details = {"family": chosen["family"]}
