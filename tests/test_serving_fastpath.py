"""The compiled model agrees with the saved scikit-learn pipeline on every test row,
for every model family and both tasks, one row at a time and in batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_support import rows_of, trained
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from kubeloop.components.train import FAMILIES
from kubeloop.serving.fastpath import CompiledModel
from kubeloop.serving.schema import RequestSchema, validate

TOLERANCE = 1e-6
CASES = [(family, task) for task in ("classification", "regression") for family in FAMILIES]
EXPECTED_HEAD = {"linear": "linear", "hist_gradient_boosting": "hist_gradient_boosting",
                 "random_forest": "forest", "extra_trees": "forest"}


def _compiled(model):
    schema = RequestSchema.from_metadata(model.metadata)
    return CompiledModel(model.pipeline, schema, task=model.task, labels=model.metadata["labels"]), schema


def _reference(model, frame):
    if model.task == "classification":
        return model.pipeline.predict(frame), model.pipeline.predict_proba(frame)
    return model.pipeline.predict(frame), None


@pytest.mark.parametrize("family, task", CASES, ids=[f"{f}-{t}" for f, t in CASES])
def test_compiled_model_matches_the_saved_pipeline_on_every_test_row(family, task):
    model = trained(family, task)
    compiled, schema = _compiled(model)
    assert compiled.head_kind == EXPECTED_HEAD[family], compiled.fallback_reason
    frame = model.test[model.features]
    checked = validate(rows_of(frame, model.features), schema)
    ref_pred, ref_proba = _reference(model, frame)
    assert len(frame) > 50

    # the features step alone, exactly
    expected_x = model.pipeline.named_steps["features"].transform(frame).to_numpy()
    np.testing.assert_array_equal(compiled.features(checked.rows), expected_x)

    batch_pred, batch_proba = compiled.predict(checked.rows)
    one = [compiled.predict([row]) for row in checked.rows]
    if task == "classification":
        labels = np.asarray(compiled.classes)
        one_proba = np.vstack([p for _, p in one])
        np.testing.assert_allclose(batch_proba, ref_proba, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(one_proba, ref_proba, rtol=0, atol=TOLERANCE)
        assert list(labels[batch_pred]) == list(ref_pred)
        assert list(labels[np.concatenate([i for i, _ in one])]) == list(ref_pred)
    else:
        one_pred = np.concatenate([v for v, _ in one])
        # Ridge fits float32 coefficients on float32 inputs: compare at float32's own
        # resolution relative to the price (1e-6 of it), as the pipeline computes them.
        np.testing.assert_allclose(batch_pred, ref_pred, rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(one_pred, ref_pred, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
def test_missing_values_and_unseen_categories_agree(family):
    model = trained(family, "classification")
    compiled, schema = _compiled(model)
    frame = model.test[model.features].head(40).copy()
    rows = rows_of(frame, model.features)
    # Blank every other field in turn and give categorical fields a level never seen.
    kinds = {f.name: f.kind for f in schema.features}
    for i, row in enumerate(rows):
        name = model.features[i % len(model.features)]
        row[name] = "never-seen-level" if kinds[name] == "categorical" and i % 2 else None
    as_frame = pd.DataFrame(rows, columns=model.features)
    for name, kind in kinds.items():
        if kind == "datetime":
            as_frame[name] = pd.to_datetime(as_frame[name], utc=True)
    ref = model.pipeline.predict_proba(as_frame)
    _, proba = compiled.predict(validate(rows, schema).rows)
    np.testing.assert_allclose(proba, ref, rtol=0, atol=TOLERANCE)


def test_forests_predict_on_one_thread():
    model = trained("random_forest", "classification")
    _compiled(model)
    forest = model.pipeline.named_steps["model"].steps[-1][1]
    assert forest.n_jobs == 1


def test_an_unknown_head_falls_back_to_scikit_learn():
    model = trained("linear", "classification")
    features = model.pipeline.named_steps["features"]
    frame = model.test[model.features]
    train_x = features.transform(frame)
    y = model.pipeline.predict(frame)
    dummy = Pipeline([("features", features), ("model", DummyClassifier(strategy="prior").fit(train_x, y))])
    schema = RequestSchema.from_metadata(model.metadata)
    compiled = CompiledModel(dummy, schema, task="classification", labels=model.metadata["labels"])
    assert compiled.head_kind == "sklearn" and compiled.fallback_reason
    _, proba = compiled.predict(validate(rows_of(frame, model.features), schema).rows)
    np.testing.assert_allclose(proba, dummy.predict_proba(frame), rtol=0, atol=TOLERANCE)


def test_an_unknown_features_step_falls_back_to_the_whole_pipeline():
    model = trained("hist_gradient_boosting", "classification")
    wrapped = Pipeline([("features", Pipeline([("inner", model.pipeline.named_steps["features"])])),
                        ("model", model.pipeline.named_steps["model"])])
    schema = RequestSchema.from_metadata(model.metadata)
    compiled = CompiledModel(wrapped, schema, task="classification", labels=model.metadata["labels"])
    assert compiled.head_kind == "sklearn_pipeline" and "features step" in compiled.fallback_reason
    frame = model.test[model.features]
    _, proba = compiled.predict(validate(rows_of(frame, model.features), schema).rows)
    np.testing.assert_allclose(proba, model.pipeline.predict_proba(frame), rtol=0, atol=TOLERANCE)
