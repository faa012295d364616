"""The training pipeline as a whole: compiled for a cluster, and run end to end locally.

The compile test reads the YAML a KFP cluster would run. The end-to-end tests run
``kubeloop run`` as a user does and hold it to its contract: exit code, one JSON
object on stdout, one progress line per stage on stderr, the registry's versions
and aliases, and a registered model that scores raw rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from helpers_cli import (
    MODEL,
    PROGRESS_STAGES,
    TARGET,
    GoodRun,
    copy_registry,
    good_churn_run,
    progress_lines,
    run_args,
    run_cli,
    write_config,
    write_csv,
)

from kubeloop import cli
from kubeloop.datagen import make_churn, make_house_prices
from kubeloop.pipelines.training import STAGES
from kubeloop.registry import Registry

SUMMARY_KEYS = {"model", "version", "task", "metrics", "gate", "artifacts"}
CLASSIFICATION_METRICS = {
    "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier_score",
    "calibration_error",
}  # fmt: skip
REGRESSION_METRICS = {"mae", "rmse", "r2"}


# --- compile -------------------------------------------------------------------------

IMAGE = "registry.example.org/team/kubeloop:test-1"
SECRET_NAME = "team-s3-credentials"
# Recognizable values: if either shows up in the YAML, a credential leaked.
SECRET_VALUE = "kubeloopCompileTestSecret/0123456789abcdefXYZ"
ACCESS_KEY = "AKIAKUBELOOPCOMPILE7"
CREDENTIAL_STAGES = ("ingest-op", "validate-op", "evaluate-op", "register-op")
UNCACHED_STAGES = ("ingest-op", "validate-op", "evaluate-op", "gate-op", "register-op")


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the pipeline, including those inside loops, by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _executor(spec: dict[str, Any], task: dict[str, Any]) -> str:
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[str, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("compile")
    config = tmp / "cluster.yaml"
    config.write_text(f"storage:\n  credentials_secret: {SECRET_NAME}\n")
    out = tmp / "pipeline.yaml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        code = cli.main(
            ["compile", "--output", str(out), "--image", IMAGE, "--config", str(config)]
        )
    assert code == 0
    text = out.read_text()
    return text, list(yaml.safe_load_all(text))


def test_compile_has_every_stage_as_a_task(compiled):
    _, docs = compiled
    tasks = _tasks(docs[0])
    missing = [s for s in STAGES if s not in tasks]
    assert not missing, f"stages missing from the compiled pipeline: {missing}"


def test_compile_puts_every_step_on_the_given_image_without_installing_anything(compiled):
    text, docs = compiled
    executors = docs[0]["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values()]
    assert len(containers) >= len(STAGES)
    assert {c["image"] for c in containers} == {IMAGE}
    for c in containers:
        script = " ".join(c.get("command", []) + c.get("args", []))
        assert "pip install" not in script
    assert "pip install" not in text


def test_compile_gives_storage_steps_the_configured_secret_and_never_its_value(compiled):
    text, docs = compiled
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    for stage in CREDENTIAL_STAGES:
        secrets = platform[_executor(spec, tasks[stage])]["secretAsEnv"]
        assert [s["secretName"] for s in secrets] == [SECRET_NAME], stage
        env = {k["envVar"] for k in secrets[0]["keyToEnv"]}
        assert env == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, stage
    assert SECRET_VALUE not in text
    assert ACCESS_KEY not in text


def test_compile_never_caches_steps_that_read_the_outside_world(compiled):
    _, docs = compiled
    tasks = _tasks(docs[0])
    for stage in UNCACHED_STAGES:
        assert not tasks[stage].get("cachingOptions", {}).get("enableCache", False), stage
    # The field read above is the one KFP uses: pure steps do have it on.
    assert tasks["split-op"]["cachingOptions"]["enableCache"] is True


# --- end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> GoodRun:
    """The first churn run, on an empty registry (shared with test_cli.py)."""
    return good_churn_run(tmp_path_factory)


def _check_contract(proc, task: str, metrics: set[str]) -> dict[str, Any]:
    """Exit 0, exactly one JSON object on stdout, one progress line per stage."""
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and proc.stdout.count("\n") == 1, proc.stdout
    summary = json.loads(proc.stdout)
    assert isinstance(summary, dict)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["task"] == task
    assert metrics <= set(summary["metrics"])
    assert set(summary["gate"]) >= {"decision", "reason"}
    assert summary["gate"]["decision"] in ("promote", "reject")
    assert summary["gate"]["reason"]
    stages = progress_lines(proc.stderr)
    assert sorted(stages) == sorted(PROGRESS_STAGES), proc.stderr
    # Baseline and the families run in whichever order the runner picks; the rest
    # is fixed by the data flow.
    assert stages[:5] == ["settings", "ingest", "validate", "split", "features"]
    assert stages[-3:] == ["evaluate", "gate", "register"]
    for path in summary["artifacts"].values():
        assert Path(path).exists(), path
    return summary


@pytest.mark.slow
def test_first_run_promotes_and_registers_v1(first: GoodRun):
    s = _check_contract(first.proc, "classification", CLASSIFICATION_METRICS)
    assert (s["model"], s["version"]) == (MODEL, "v1")
    assert all(isinstance(s["metrics"][m], float) for m in CLASSIFICATION_METRICS)
    assert 0.5 < s["metrics"]["roc_auc"] <= 1.0
    assert s["gate"]["decision"] == "promote"
    assert "no production model yet" in s["gate"]["reason"]
    assert s["champion_version"] is None

    card = Path(s["artifacts"]["model_card"]).read_text()
    for heading in ("## Intended use", "## Metrics", "## Limitations"):
        assert heading in card
    assert "roc_auc" in card
    # Every row of this small split is in the sample, and the learning curve says
    # whether more would help, in the summary and on the card.
    assert s["training_sample"].startswith("trained on all ")
    assert s["learning_curve"]["verdict"] in s["training_sample"]
    assert f"**Training rows**: {s['training_sample']}" in card

    reg = Registry(str(first.registry))
    assert reg.get_alias(MODEL, "production") == "v1"
    assert [v.version for v in reg.list_versions(MODEL)] == ["v1"]
    assert reg.verify(MODEL, "v1") == []


@pytest.mark.slow
def test_registered_model_predicts_raw_rows(first: GoodRun):
    model, info = Registry(str(first.registry)).load_model(MODEL, "production")
    assert info.version == "v1"
    # Rows as a request carries them: plain JSON values, timestamps as ISO text,
    # null for missing, and the identifier column the model does not use.
    rows = json.loads(
        make_churn(25, seed=7).drop(columns=[TARGET]).to_json(orient="records", date_format="iso")
    )
    frame = pd.DataFrame.from_records(rows)
    predicted = model.predict(frame)
    assert len(predicted) == 25
    assert set(predicted) <= {"no", "yes"}
    proba = model.predict_proba(frame)
    assert proba.shape == (25, 2)
    assert ((proba >= 0) & (proba <= 1)).all()


@pytest.mark.slow
def test_second_run_is_gated_against_the_champion(first: GoodRun, tmp_path):
    registry = copy_registry(first.registry, tmp_path / "registry")
    data = write_csv(make_churn(1500, seed=1), tmp_path / "churn-more.csv")
    config = write_config(tmp_path / "fast.yaml")

    proc = run_cli(run_args(data, registry, config), cwd=tmp_path)

    s = _check_contract(proc, "classification", CLASSIFICATION_METRICS)
    assert s["version"] == "v2"
    assert s["champion_version"] == "v1"
    assert CLASSIFICATION_METRICS <= set(s["champion_metrics"])
    reg = Registry(str(registry))
    assert [v.version for v in reg.list_versions(MODEL)] == ["v1", "v2"]
    history = [(h["alias"], h["previous_version"], h["version"]) for h in reg.history(MODEL)]
    if s["gate"]["decision"] == "promote":
        assert s["promoted"] is True
        assert reg.get_alias(MODEL, "production") == "v2"
        assert reg.get_alias(MODEL, "previous") == "v1"
        assert ("production", "v1", "v2") in history
    else:
        assert s["promoted"] is False
        assert reg.get_alias(MODEL, "production") == "v1"
        assert history == [("production", None, "v1")]
    assert s["production_version"] == reg.get_alias(MODEL, "production")


@pytest.mark.slow
def test_regression_run_reports_regression_metrics(tmp_path):
    data = write_csv(make_house_prices(700, seed=0), tmp_path / "houses.csv")
    config = write_config(tmp_path / "fast.yaml")
    registry = tmp_path / "registry"

    proc = run_cli(
        ["run", "--data", str(data), "--target", "price", "--time-column", "listed_at",
         "--model-name", "houses", "--registry", str(registry), "--config", str(config), "--json"],
        cwd=tmp_path,
    )  # fmt: skip

    s = _check_contract(proc, "regression", REGRESSION_METRICS)
    assert (s["model"], s["version"]) == ("houses", "v1")
    assert s["metrics"]["r2"] > 0.5
    assert 0 < s["metrics"]["mae"] <= s["metrics"]["rmse"]
    assert s["gate"]["decision"] == "promote"
    assert Registry(str(registry)).get_alias("houses", "production") == "v1"
