"""The register stage: the documents stored with a model (model card, lineage,
predictor metadata, monitoring reference) and ``register_run``, which stores a
run as a registry version and moves ``production`` only when the gate promoted,
with a compare-and-swap against the champion the gate compared with.

The inputs are real: a small churn table (and a house-price table for
regression) goes through ingest, validate, split and features, a small model is
fitted, and the evaluate and gate stages produce the documents ``register_run``
receives in a pipeline run.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import platform
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sklearn
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from kubeloop import storage
from kubeloop.components.evaluate import evaluate, predict, score
from kubeloop.components.features import fit_features
from kubeloop.components.gate import decide_from_evaluation
from kubeloop.components.ingest import ingest
from kubeloop.components.register import (
    REFERENCE_ROWS,
    RegisterError,
    lineage,
    model_card,
    predictor_metadata,
    reference_sample,
    register_run,
)
from kubeloop.components.split import split_dataset
from kubeloop.components.validate import infer_schema
from kubeloop.config import Config
from kubeloop.datagen import make_churn, make_house_prices
from kubeloop.environment import code_version
from kubeloop.metric_names import CLASSIFICATION_METRICS, REGRESSION_METRICS
from kubeloop.registry import AliasConflict, Registry
from kubeloop.schema import feature_columns

MODEL = "churn"
CANDIDATE_PARAMS = {"learning_rate": 0.1, "max_iter": 20, "max_leaf_nodes": 15}


# ----------------------------------------------------------------- realistic inputs


@dataclass
class Case:
    """One run's worth of register inputs, as the earlier stages produce them."""

    task: str
    data_path: Path
    cfg: Config
    schema: dict[str, Any]
    profile: dict[str, Any]
    split_summary: dict[str, Any]
    train: pd.DataFrame
    test: pd.DataFrame
    model: Any
    evaluation: dict[str, Any]
    decision: dict[str, Any]
    candidate: dict[str, Any]
    lineage_doc: dict[str, Any]
    model_dir: Path
    reports: dict[str, str]


def _build_case(root: Path, task: str) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    if task == "classification":
        frame, target, time_col = make_churn(600, seed=0), "churned", "signup_date"
        head, base = HistGradientBoostingClassifier(max_iter=20, random_state=0), DummyClassifier()
        sensitive, metric = ["region"], "roc_auc"
    else:
        frame, target, time_col = make_house_prices(500, seed=0), "price", "listed_at"
        head, base = HistGradientBoostingRegressor(max_iter=20, random_state=0), DummyRegressor()
        sensitive, metric = ["neighborhood"], "rmse"
    data_path = root / "data.csv"
    frame.to_csv(data_path, index=False)
    # Small slices are scored too, so the card has slices and a disparity to show.
    cfg = Config.from_dict(
        {"evaluation": {"stability_seeds": 0, "sensitive_columns": sensitive, "min_slice_rows": 5}}
    )
    df, profile = ingest(data_path)
    schema = infer_schema(df, target=target, time_column=time_col, cfg=cfg.validation)
    splits = split_dataset(df, schema, cfg.split)
    y = splits.train[target]
    model = Pipeline([("features", fit_features(splits.train, schema)), ("model", head)]).fit(splits.train, y)
    baseline = Pipeline([("features", fit_features(splits.train, schema)), ("model", base)]).fit(splits.train, y)
    evaluation = evaluate(
        model, splits.test, schema, cfg.evaluation, primary_metric=metric, baseline=baseline,
    ).to_dict()
    evaluation["champion_version"] = None
    decision = decide_from_evaluation(evaluation, cfg.gate).to_dict()
    candidate = {"family": "hist_gradient_boosting", "task": task, "metric": metric,
                 "valid_score": 0.8123, "params": CANDIDATE_PARAMS}
    model_dir = root / "model"
    model_dir.mkdir()
    joblib.dump(model, model_dir / "model.joblib")
    (model_dir / "candidate.json").write_text(json.dumps(candidate))
    reports = {}
    for name in ("validation", "evaluation", "gate", "leaderboard"):
        path = root / f"{name}.md"
        path.write_text(f"# {name} report\n")
        reports[name] = str(path)
    lin = lineage(data_uri=str(data_path), profile=profile, config=cfg.to_dict(), candidate=candidate,
                  split_summary=splits.summary, run_id="run-1")
    return Case(task, data_path, cfg, schema, profile, splits.summary, splits.train, splits.test, model,
                evaluation, decision, candidate, lin, model_dir, reports)


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Case:
    return _build_case(tmp_path_factory.mktemp("register-clf"), "classification")


@pytest.fixture(scope="module")
def reg_case(tmp_path_factory) -> Case:
    return _build_case(tmp_path_factory.mktemp("register-reg"), "regression")


def card_of(case: Case, *, evaluation: dict | None = None, decision: dict | None = None,
            lineage_doc: dict | None = None, sensitive: list[str] | None = None,
            version: str = "v7") -> str:
    return model_card(
        model_name=MODEL, version=version, schema=case.schema,
        evaluation=case.evaluation if evaluation is None else evaluation,
        gate=case.decision if decision is None else decision,
        lineage_doc=case.lineage_doc if lineage_doc is None else lineage_doc,
        sensitive_columns=case.cfg.evaluation.sensitive_columns if sensitive is None else sensitive,
    )


# ----------------------------------------------------------------- Markdown helpers

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def cells(row: str) -> list[str]:
    """The cells of one Markdown table row (``\\|`` is a literal pipe inside a cell)."""
    assert row.startswith("|") and row.endswith("|"), row
    return [c.strip() for c in _UNESCAPED_PIPE.split(row)[1:-1]]


def section(card: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## ``."""
    m = re.search(rf"^## {re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", card, re.S | re.M)
    assert m, f"no section {heading!r} in:\n{card}"
    return m.group(1)


def table(text: str) -> list[list[str]]:
    """The first table in ``text``: header then rows (the --- line dropped). Every
    row must have as many cells as the header."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 2, text
    header, rule, *rows = lines
    assert set(rule.replace("|", "")) == {"-"}, rule
    parsed = [cells(header)] + [cells(r) for r in rows]
    widths = {len(r) for r in parsed}
    assert widths == {len(parsed[0])}, f"rows of unequal width {widths}:\n" + "\n".join(lines)
    return parsed


def every_table_is_well_formed(card: str) -> int:
    """Check each table of the card; returns how many there are."""
    count = 0
    for block in re.split(r"\n\s*\n", card):
        if block.lstrip().startswith("|"):
            table(block)
            count += 1
    return count


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


# ----------------------------------------------------------------- model card


SECTIONS = ("Intended use", "Data", "Model", "Metrics", "Slices", "Limitations", "Lineage")


def test_card_of_a_classifier_has_every_section_in_order(clf):
    card = card_of(clf)
    assert card.startswith(f"# Model card: {MODEL} v7\n")
    positions = [card.index(f"\n## {s}") for s in SECTIONS]
    assert positions == sorted(positions)
    assert "## Disparity across sensitive columns" in card
    intended = section(card, "Intended use")
    assert "classification model" in intended and "`churned`" in intended
    assert "classes: no, yes" in intended
    assert f"from {len(feature_columns(clf.schema))} tabular features" in intended
    assert every_table_is_well_formed(card) == 3  # metrics, slices, disparity
    assert "?" not in card, card


def test_card_data_section_names_source_hash_and_split_counts(clf):
    data = section(card_of(clf), "Data")
    assert f"`{clf.data_path}`" in data
    sha = hashlib.sha256(clf.data_path.read_bytes()).hexdigest()
    assert clf.profile["sha256"] == sha
    assert f"sha256 `{sha[:16]}...`" in data
    assert f"{clf.profile['n_rows']} rows, {clf.profile['n_columns']} columns" in data
    rows = clf.split_summary["rows"]
    counts = f"{rows['train']}/{rows['valid']}/{rows['test']}"
    assert sum(rows[k] for k in ("train", "valid", "test")) == 600
    split_line = next(ln for ln in data.splitlines() if ln.startswith("- Split:"))
    assert split_line == f"- Split: temporal; rows train/valid/test = {counts}"
    assert "- Time column: `signup_date`" in data
    assert "`customer_id` (free text or identifier)" in data  # the column it does not use
    for col in feature_columns(clf.schema):
        assert f"`{col}`" in data


def test_card_metrics_table_has_challenger_champion_and_baseline(clf):
    champion = {name: (value - 0.01 if value is not None else None)
                for name, value in clf.evaluation["metrics"].items()}
    evaluation = {**clf.evaluation, "champion_metrics": champion, "champion_version": "v6"}
    header, *rows = table(section(card_of(clf, evaluation=evaluation), "Metrics"))
    assert header == ["metric", "this model", "production", "baseline"]
    assert [r[0] for r in rows] == list(CLASSIFICATION_METRICS)
    base = clf.evaluation["baseline_metrics"]
    for name, mine, theirs, baseline in rows:
        assert mine == fmt(clf.evaluation["metrics"][name])
        assert theirs == fmt(champion[name])
        assert baseline == fmt(base[name])
    # Without a champion the column says so instead of inventing values.
    _, *rows = table(section(card_of(clf), "Metrics"))
    assert {r[2] for r in rows} == {"-"}


def test_card_gate_and_model_sections(clf):
    card = card_of(clf)
    assert f"Gate: **{clf.decision['decision']}**: {clf.decision['reason']}" in card
    model = section(card, "Model")
    assert "Family: hist_gradient_boosting, chosen on validation roc_auc = 0.8123" in model
    for key, value in CANDIDATE_PARAMS.items():
        assert f"'{key}': {value}" in model


def test_card_says_when_the_model_did_not_learn_or_its_fit_warned(clf):
    assert "**Note**" not in section(card_of(clf), "Model")
    model = {
        **clf.lineage_doc["model"],
        "warnings": ["ConvergenceWarning: lbfgs failed to converge after 500 iteration(s)"],
        "vs_baseline": {"metric": "roc_auc", "within_noise": True, "baseline_score": 0.5,
                        "estimate": 0.002, "low": -0.01, "high": 0.014, "confidence": 0.95},
        "learning_note": "the only allowed family, linear, learnt nothing: ...",
    }
    text = section(card_of(clf, lineage_doc={**clf.lineage_doc, "model": model}), "Model")
    assert "**Note**: the only allowed family, linear, learnt nothing" in text
    assert "within noise of the baseline: roc_auc" in text
    assert "fit warned: ConvergenceWarning: lbfgs failed to converge" in text


def test_card_slices_are_worst_first(clf, reg_case):
    for case, worst_is_low in ((clf, True), (reg_case, False)):
        header, *rows = table(section(card_of(case), "Slices"))
        metric = case.evaluation["primary_metric"]
        assert header == ["column", "value", "rows", metric]
        assert 1 <= len(rows) <= 10
        values = [float(r[3]) for r in rows]
        assert values == sorted(values, reverse=not worst_is_low)
        known = {(s["column"], s["value"]): s for s in case.evaluation["slices"]}
        for column, value, n, shown in rows:
            s = known[(column, value)]
            assert int(n) == s["n"] and shown == fmt(s["metrics"][metric])


def test_card_reports_disparity_of_the_sensitive_column(clf):
    disp = clf.evaluation["disparity"]["region"]
    assert disp["gap"] is not None, "the fixture should score at least two region slices"
    text = section(card_of(clf), "Disparity across sensitive columns")
    header, *rows = table(text)
    assert header[:3] == ["column", "slices", "roc_auc gap"]
    assert len(rows) == 1
    row = dict(zip(header, rows[0], strict=True))
    assert row["column"] == "region"
    assert row["slices"] == str(disp["n_slices"])
    assert row["roc_auc gap"] == fmt(disp["gap"])
    assert row["worst"] == f"{disp['worst']['value']} ({fmt(disp['worst']['score'])})"
    assert row["best"] == f"{disp['best']['value']} ({fmt(disp['best']['score'])})"
    assert row["positive-rate gap"] == fmt(disp["positive_rate_gap"])
    assert "{" not in text, "the disparity must be readable, not a dict dump"
    assert "No columns were declared sensitive" not in section(card_of(clf), "Limitations")


def test_card_without_sensitive_columns_says_no_disparity_was_measured(clf):
    evaluation = {**clf.evaluation, "disparity": {}}
    card = card_of(clf, evaluation=evaluation, sensitive=[])
    assert "## Disparity" not in card
    assert "No columns were declared sensitive" in section(card, "Limitations")


def test_card_of_a_regressor(reg_case):
    card = card_of(reg_case)
    intended = section(card, "Intended use")
    assert "regression model that predicts the value of `price`" in intended
    assert "classes" not in intended
    _, *rows = table(section(card, "Metrics"))
    assert [r[0] for r in rows] == list(REGRESSION_METRICS)
    for name, mine, _, baseline in rows:
        assert mine == fmt(reg_case.evaluation["metrics"][name])
        assert baseline == fmt(reg_case.evaluation["baseline_metrics"][name])
    rows_ = reg_case.split_summary["rows"]
    assert f"rows train/valid/test = {rows_['train']}/{rows_['valid']}/{rows_['test']}" in card
    assert "neighborhood" in section(card, "Disparity across sensitive columns")
    assert every_table_is_well_formed(card) == 3
    assert "?" not in card, card


def test_card_with_stability_reports_mean_and_spread(clf):
    stab = {"metric": "roc_auc", "values": [0.81, 0.83, 0.82], "mean": 0.82, "std": 0.01}
    card = card_of(clf, evaluation={**clf.evaluation, "stability": stab})
    assert "Stability: roc_auc over 3 seeds: mean 0.8200, std 0.0100." in card


def test_user_strings_with_pipes_and_newlines_do_not_break_tables(clf):
    evaluation = copy.deepcopy(clf.evaluation)
    evaluation["slices"][0]["column"] = "plan|tier"
    evaluation["slices"][0]["value"] = "gold | platinum\nvip"
    evaluation["slices"][0]["metrics"]["roc_auc"] = 0.0  # the worst: shown first
    evaluation["disparity"] = {"reg|ion": {**evaluation["disparity"]["region"]}}
    evaluation["disparity"]["reg|ion"]["worst"] = {"value": "north|east", "n": 9, "score": 0.5}
    card = card_of(clf, evaluation=evaluation, sensitive=["reg|ion"])
    assert every_table_is_well_formed(card) == 3
    _, *rows = table(section(card, "Slices"))
    assert rows[0][:2] == ["plan\\|tier", "gold \\| platinum vip"]
    _, *rows = table(section(card, "Disparity across sensitive columns"))
    assert rows[0][0] == "reg\\|ion" and rows[0][3] == "north\\|east (0.5000)"


def test_card_without_a_split_summary_still_renders(clf):
    lin = {**clf.lineage_doc, "split": None}
    data = section(card_of(clf, lineage_doc=lin), "Data")
    assert "- Split: n/a; rows train/valid/test = ?/?/?" in data


# ----------------------------------------------------------------- lineage


def test_lineage_records_data_model_environment_and_code(clf):
    lin = clf.lineage_doc
    assert lin["run_id"] == "run-1"
    assert lin["data"] == {
        "uri": str(clf.data_path),
        "sha256": hashlib.sha256(clf.data_path.read_bytes()).hexdigest(),
        "size_bytes": clf.data_path.stat().st_size,
        "n_rows": 600,
        "n_columns": clf.profile["n_columns"],
    }
    assert lin["split"] == clf.split_summary
    assert lin["model"] == {"family": "hist_gradient_boosting", "params": CANDIDATE_PARAMS,
                            "valid_score": 0.8123, "metric": "roc_auc", "warnings": [],
                            "vs_baseline": None, "learning_note": None}
    assert lin["config"] == clf.cfg.to_dict()
    packages = lin["packages"]
    assert packages["python"] == platform.python_version()
    assert packages["scikit-learn"] == sklearn.__version__
    assert packages["pandas"] == pd.__version__
    assert packages["numpy"] == np.__version__
    assert packages["kfp"] == importlib_metadata.version("kfp")
    assert packages["pyarrow"] == importlib_metadata.version("pyarrow")
    assert packages["kubeloop"] == importlib_metadata.version("kubeloop")
    assert isinstance(lin["code_version"], str) and lin["code_version"]
    created = datetime.fromisoformat(lin["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0


def test_lineage_is_plain_json(clf):
    text = json.dumps(clf.lineage_doc, allow_nan=False)  # no default=: every value is JSON already
    assert json.loads(text) == clf.lineage_doc


def test_code_version_prefers_the_image_value_then_git_then_the_package(monkeypatch):
    monkeypatch.setenv("KUBELOOP_CODE_VERSION", "abc123def456")
    assert code_version() == "abc123def456"
    monkeypatch.delenv("KUBELOOP_CODE_VERSION")
    monkeypatch.setenv("PATH", "")  # no git to ask
    assert code_version() == "kubeloop-" + importlib_metadata.version("kubeloop")


# ----------------------------------------------------------------- predictor metadata


def test_predictor_metadata_is_the_schema_contract_in_order(clf):
    meta = predictor_metadata(clf.schema, model_name=MODEL, sha256="ab" * 32)
    names = feature_columns(clf.schema)
    assert [f["name"] for f in meta["features"]] == names
    assert [f["kind"] for f in meta["features"]] == [clf.schema["columns"][c]["kind"] for c in names]
    for f in meta["features"]:
        assert f["categories"] == clf.schema["columns"][f["name"]].get("categories")
    region = next(f for f in meta["features"] if f["name"] == "region")
    assert region["kind"] == "categorical" and region["categories"]
    assert "customer_id" not in names and "churned" not in names
    assert (meta["task"], meta["target"], meta["labels"], meta["positive_label"]) == (
        "classification", "churned", ["no", "yes"], "yes")
    assert (meta["model_file"], meta["sha256"], meta["model_name"]) == ("model.joblib", "ab" * 32, MODEL)
    assert meta["sklearn_version"] == sklearn.__version__
    json.dumps(meta, allow_nan=False)
    # The contract is enough to score: a request with exactly these columns, in order.
    proba = clf.model.predict_proba(clf.test[names])
    assert proba.shape == (len(clf.test), 2)


def test_predictor_metadata_of_a_regressor(reg_case):
    meta = predictor_metadata(reg_case.schema, model_name="houses", sha256="0" * 64)
    names = feature_columns(reg_case.schema)
    assert [f["name"] for f in meta["features"]] == names
    assert meta["task"] == "regression" and meta["labels"] is None
    assert len(reg_case.model.predict(reg_case.test[names])) == len(reg_case.test)


# ----------------------------------------------------------------- reference sample


def _frame(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas()


def test_reference_sample_keeps_features_and_target_only(clf):
    data = reference_sample(clf.train, clf.schema)
    ref = _frame(data)
    assert list(ref.columns) == feature_columns(clf.schema) + ["churned"]
    # Fewer rows than the limit: every row, in order.
    assert len(ref) == len(clf.train) < REFERENCE_ROWS
    pd.testing.assert_frame_equal(
        ref, clf.train[list(ref.columns)].reset_index(drop=True), check_dtype=False,
        check_categorical=False,
    )


def test_reference_sample_is_bounded_and_deterministic(clf):
    big = pd.concat([clf.train] * (REFERENCE_ROWS // len(clf.train) + 2), ignore_index=True)
    assert len(big) > REFERENCE_ROWS
    a, b = reference_sample(big, clf.schema, seed=3), reference_sample(big, clf.schema, seed=3)
    assert a == b
    ref = _frame(a)
    assert len(ref) == REFERENCE_ROWS
    assert list(ref.columns) == feature_columns(clf.schema) + ["churned"]
    other = _frame(reference_sample(big, clf.schema, seed=4))
    assert len(other) == REFERENCE_ROWS and not other.equals(ref)
    small = _frame(reference_sample(big, clf.schema, rows=25, seed=0))
    assert len(small) == 25
    assert pq.ParquetFile(io.BytesIO(a)).metadata.num_rows == REFERENCE_ROWS


# ----------------------------------------------------------------- register_run


def run(case: Case, registry: Registry, *, decision: str | None = None,
        champion_version: str | None = None, evaluation: dict | None = None,
        reference: bool = True) -> dict[str, Any]:
    ev = dict(case.evaluation if evaluation is None else evaluation)
    ev["champion_version"] = champion_version
    dec = dict(case.decision)
    if decision:
        dec["decision"] = decision
        dec["reason"] = f"test says {decision}"
    return register_run(
        registry, model_name=MODEL, model_dir=str(case.model_dir), schema=case.schema,
        evaluation=ev, decision=dec, lineage_doc=case.lineage_doc, reports=case.reports,
        reference=reference_sample(case.train, case.schema) if reference else None,
        sensitive_columns=case.cfg.evaluation.sensitive_columns,
    )


@pytest.fixture
def reg(store_uri) -> Registry:
    return Registry(store_uri)


def test_first_promoted_run_is_v1_and_production(clf, reg):
    s = run(clf, reg, decision="promote")
    json.dumps(s, allow_nan=False)
    assert {"model", "version", "task", "metrics", "gate", "artifacts"} <= set(s)
    assert (s["model"], s["version"], s["task"], s["family"]) == (MODEL, "v1", "classification",
                                                                  "hist_gradient_boosting")
    assert s["metrics"] == clf.evaluation["metrics"]
    assert s["baseline_metrics"] == clf.evaluation["baseline_metrics"]
    assert (s["gate"]["decision"], s["gate"]["reason"]) == ("promote", "test says promote")
    assert s["promoted"] is True and s["production_version"] == "v1"
    assert s["champion_version"] is None
    assert s["sha256"] == hashlib.sha256((clf.model_dir / "model.joblib").read_bytes()).hexdigest()
    assert reg.get_alias(MODEL, "production") == "v1"
    assert reg.verify(MODEL, "v1") == []
    assert reg.incomplete_versions(MODEL) == []


def test_artifacts_exist_and_hold_the_run(clf, reg):
    s = run(clf, reg, decision="promote")
    art = s["artifacts"]
    assert {"model", "model_card", "evaluation", "schema", "lineage"} <= set(art)
    assert {f"{name}_report" for name in clf.reports} <= set(art)
    remote = reg.uri.startswith("s3://")
    for uri in art.values():
        assert uri.startswith("s3://") == remote, uri
    card = storage.read_bytes(art["model_card"]).decode()
    assert card.startswith(f"# Model card: {MODEL} v1\n")
    assert json.loads(storage.read_bytes(art["evaluation"])) == {**clf.evaluation, "champion_version": None}
    assert json.loads(storage.read_bytes(art["schema"])) == clf.schema
    assert json.loads(storage.read_bytes(art["lineage"])) == clf.lineage_doc
    assert storage.read_bytes(art["gate_report"]) == b"# gate report\n"
    meta = json.loads(storage.read_bytes(storage.join(art["model"], "kubeloop.json")))
    assert meta["sha256"] == s["sha256"]
    # KServe fetches by prefix: the serving URI must end at the model folder.
    assert art["serving_uri"] == art["model"] + "/"
    assert [f["name"] for f in meta["features"]] == feature_columns(clf.schema)
    assert reg.read_json(MODEL, "v1", "metrics") == clf.evaluation["metrics"]
    assert reg.read_json(MODEL, "v1", "candidate") == clf.candidate
    ref = _frame(reg.read_bytes(MODEL, "v1", "monitoring/reference.parquet"))
    assert list(ref.columns) == feature_columns(clf.schema) + ["churned"]
    info = reg.info(MODEL, "v1")
    assert info.metadata["gate"] == {"decision": "promote", "reason": "test says promote"}
    assert info.metadata["data_sha256"] == clf.profile["sha256"]
    assert info.metadata["metrics"] == clf.evaluation["metrics"]
    # What is stored is the model that was evaluated.
    model, _ = reg.load_model(MODEL, "production")
    again = score(predict(model, clf.test, clf.schema), bins=clf.cfg.evaluation.calibration_bins)
    assert again == clf.evaluation["metrics"]


def test_reject_stores_the_version_and_leaves_production(clf, reg):
    run(clf, reg, decision="promote")
    s = run(clf, reg, decision="reject", champion_version="v1")
    assert (s["version"], s["promoted"], s["production_version"]) == ("v2", False, "v1")
    assert s["gate"]["decision"] == "reject"
    assert reg.get_alias(MODEL, "production") == "v1"
    assert [v.version for v in reg.list_versions(MODEL)] == ["v1", "v2"]
    assert [(h["alias"], h["version"]) for h in reg.history(MODEL)] == [("production", "v1")]
    assert reg.verify(MODEL, "v2") == []


def test_reject_on_an_empty_registry_sets_no_production(clf, reg):
    s = run(clf, reg, decision="reject", reference=False)
    assert (s["version"], s["promoted"], s["production_version"]) == ("v1", False, None)
    assert reg.aliases(MODEL) == {}
    assert "monitoring/reference.parquet" not in reg.info(MODEL, "v1").files


def test_promote_moves_production_from_the_champion_it_beat(clf, reg):
    run(clf, reg, decision="promote")
    s = run(clf, reg, decision="promote", champion_version="v1")
    assert (s["version"], s["promoted"], s["production_version"]) == ("v2", True, "v2")
    assert reg.get_alias(MODEL, "production") == "v2"
    assert reg.get_alias(MODEL, "previous") == "v1"


@pytest.mark.parametrize("champion_version", ["v1", None])
def test_promote_against_a_stale_champion_conflicts_but_keeps_the_version(clf, reg, champion_version):
    if champion_version is None:
        # The gate saw no production model, but a concurrent run promoted one since.
        run(clf, reg, decision="promote")
        moved_to = "v1"
    else:
        run(clf, reg, decision="promote")
        run(clf, reg, decision="promote", champion_version="v1")  # another run moved it to v2
        moved_to = "v2"
    with pytest.raises(AliasConflict) as info:
        run(clf, reg, decision="promote", champion_version=champion_version)
    mine = f"v{int(moved_to[1:]) + 1}"
    msg = str(info.value)
    assert f"{MODEL} {mine} is registered" in msg
    assert f"production now points at {moved_to}" in msg
    assert reg.get_alias(MODEL, "production") == moved_to
    versions = [v.version for v in reg.list_versions(MODEL)]
    assert versions[-1] == mine
    assert reg.verify(MODEL, mine) == []
    assert reg.incomplete_versions(MODEL) == []
    assert reg.read_bytes(MODEL, mine, "model_card.md").decode().startswith(f"# Model card: {MODEL} {mine}\n")


def test_a_version_taken_meanwhile_gets_a_card_naming_the_version_it_got(clf, reg, monkeypatch):
    """Another run claims the number this run proposed between the proposal and
    the claim: the run takes the next number, and its card names that number."""
    other = Registry(reg.uri)
    proposal = reg.next_version

    def stale_proposal(model: str) -> str:
        version = proposal(model)
        if not other.list_versions(model):
            other.register(model, {"model/model.joblib": b"another run's model"}, version=version)
        return version

    monkeypatch.setattr(reg, "next_version", stale_proposal)
    s = run(clf, reg, decision="promote")
    assert s["version"] == "v2" and s["production_version"] == "v2"
    assert reg.read_bytes(MODEL, "v1", "model/model.joblib") == b"another run's model"
    card = reg.read_bytes(MODEL, "v2", "model_card.md").decode()
    assert card.startswith(f"# Model card: {MODEL} v2\n")
    assert reg.incomplete_versions(MODEL) == []


@pytest.mark.parametrize(
    "where, change",
    [
        ("roc_auc", lambda ev: ev["metrics"].__setitem__("roc_auc", math.nan)),
        ("log_loss", lambda ev: ev["metrics"].__setitem__("log_loss", math.inf)),
        ("slices[0].metrics.accuracy", lambda ev: ev["slices"][0]["metrics"].__setitem__("accuracy", math.nan)),
    ],
)
def test_non_finite_numbers_are_refused_before_anything_is_stored(clf, reg, where, change):
    evaluation = copy.deepcopy(clf.evaluation)
    change(evaluation)
    with pytest.raises(RegisterError) as info:
        run(clf, reg, decision="promote", evaluation=evaluation)
    msg = str(info.value)
    assert where in msg and "NaN or infinity" in msg and "Nothing was registered" in msg
    # A kubeloop error: the pipeline step reports it as a message, not a traceback.
    assert type(info.value).__module__.startswith("kubeloop")
    assert reg.store.list() == []  # not even a claimed version number


@pytest.mark.parametrize(
    "promoted, deploy, on_cluster, says",
    [
        (True, None, True, True),  # a cluster run with deploy off that promoted
        (True, "pending", True, False),  # the deploy step follows
        (False, None, True, False),  # nothing promoted: nothing to deploy
        (True, None, False, False),  # locally production is what `kubeloop serve` loads
    ],
)
def test_a_promotion_on_a_cluster_without_deploy_says_nothing_was_deployed(promoted, deploy, on_cluster, says):
    from kubeloop.components.register import undeployed_note

    note = undeployed_note({"model": "churn", "version": "v4", "promoted": promoted, "deploy": deploy},
                           on_cluster=on_cluster)
    assert (note is not None) is says
    if says:
        assert "NOTHING WAS DEPLOYED" in note and "kubeloop deploy churn@v4" in note
