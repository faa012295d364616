"""Batch scoring: predict_step on CSV and Parquet (local and S3), rejects with reasons,
and the ``kubeloop predict`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from serving_support import register, trained

from kubeloop.components.predict import PredictError, predict_step, rejects_uri_for
from kubeloop.registry import Registry
from kubeloop.serving.loader import load_version


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("predict") / "registry")
    v = register(registry, trained("random_forest", "classification"))
    return load_version(registry.model_uri("churn", v)), registry


def _dataset(n=None):
    model = trained("random_forest", "classification")
    frame = model.test if n is None else model.test.head(n)
    return model, frame.reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_scores_every_row_like_the_pipeline_in_small_batches(version, tmp_path, fmt):
    loaded, _ = version
    model, frame = _dataset()
    data = tmp_path / f"data.{fmt}"
    frame.to_csv(data, index=False) if fmt == "csv" else frame.to_parquet(data, index=False)
    out = tmp_path / "pred.parquet"
    summary = predict_step(loaded, str(data), str(out), batch_rows=17, keep_columns=["customer_id"])
    assert summary["rows"] == len(frame) == summary["scored"] and summary["rejected"] == 0
    result = pq.read_table(out).to_pandas()
    assert list(result.columns) == ["row", "customer_id", "prediction", "proba_no", "proba_yes", "model", "version"]
    assert list(result["row"]) == list(range(len(frame)))
    assert list(result["customer_id"]) == list(frame["customer_id"].astype(str))
    expected = model.pipeline.predict_proba(frame[model.features])
    np.testing.assert_allclose(result[["proba_no", "proba_yes"]].to_numpy(), expected, atol=1e-6, rtol=0)
    assert list(result["prediction"]) == list(model.pipeline.predict(frame[model.features]))
    assert set(result["version"]) == {"v1"}


def test_invalid_rows_go_to_rejects_with_reasons(version, tmp_path):
    loaded, _ = version
    model, frame = _dataset(30)
    frame = frame.astype({"age": object, "signup_date": object})
    frame.loc[3, "age"] = "forty"
    frame.loc[7, "signup_date"] = "not a date"
    frame.loc[8, "age"] = "old"
    frame.loc[8, "signup_date"] = "31/31/31"
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "pred.parquet"
    summary = predict_step(loaded, str(data), str(out), batch_rows=8)
    assert (summary["scored"], summary["rejected"]) == (27, 3)
    rejects = pq.read_table(rejects_uri_for(str(out))).to_pandas()
    assert list(rejects["row"]) == [3, 7, 8]
    # the first problem in schema order (signup_date comes before age)
    assert list(rejects["reason"]) == ["wrong_type", "out_of_range", "out_of_range"]
    assert "age" in rejects["problems"][2] and "signup_date" in rejects["problems"][2]
    assert json.loads(rejects["input"][0])["age"] == "forty"
    scored = pq.read_table(out).to_pandas()
    assert 3 not in set(scored["row"]) and len(scored) == 27
    good = frame.drop(index=[3, 7, 8])
    good = good.astype({"age": float, "signup_date": "datetime64[ns]"})
    np.testing.assert_allclose(scored["proba_yes"], model.pipeline.predict_proba(good[model.features])[:, 1],
                               atol=1e-6, rtol=0)


def test_missing_feature_column_stops_the_job(version, tmp_path):
    loaded, _ = version
    _, frame = _dataset(5)
    data = tmp_path / "data.parquet"
    frame.drop(columns=["age"]).to_parquet(data)
    with pytest.raises(PredictError, match="lacks column"):
        predict_step(loaded, str(data), str(tmp_path / "out.parquet"))


def test_s3_in_and_out(version, store_uri, tmp_path):
    loaded, _ = version
    _, frame = _dataset(40)
    if store_uri.startswith("s3://"):
        from kubeloop.storage import put_file

        local = tmp_path / "data.parquet"
        frame.to_parquet(local)
        data = store_uri + "/in/data.parquet"
        put_file(local, data)
    else:
        data = str(tmp_path / "data.parquet")
        frame.to_parquet(data)
    out = store_uri + "/out/pred.parquet"
    summary = predict_step(loaded, data, out, batch_rows=16)
    assert summary["scored"] == 40
    import io

    from kubeloop.storage import read_bytes

    table = pq.read_table(io.BytesIO(read_bytes(out)))
    assert table.num_rows == 40


def test_kubeloop_predict_command(version, tmp_path):
    _, registry = version
    _, frame = _dataset(12)
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "p.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop.cli", "predict", "--model", "churn@production", "--data", str(data),
         "--out", str(out), "--registry", str(registry.uri), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["version"], summary["scored"], summary["rejected"]) == ("v1", 12, 0)
    assert len(pd.read_parquet(out)) == 12
    bad = subprocess.run(
        [sys.executable, "-m", "kubeloop.cli", "predict", "--model", "churn@v9", "--data", str(data),
         "--out", str(out), "--registry", str(registry.uri)],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "v9" in bad.stderr and "Traceback" not in bad.stderr


def test_kubeloop_serve_help_and_refusals(version, tmp_path):
    _, registry = version
    helptext = subprocess.run([sys.executable, "-m", "kubeloop.cli", "serve", "--help"],
                              capture_output=True, text=True, timeout=60)
    assert helptext.returncode == 0 and "ALL network interfaces" in helptext.stdout
    for model, shadow, fragment in [("churn@v9", None, "v9"), ("churn@", None, "NAME@VERSION"),
                                    ("churn", "v1", "the version being served"),
                                    ("nosuch", None, "nosuch")]:
        cmd = [sys.executable, "-m", "kubeloop.cli", "serve", "--model", model, "--registry", str(registry.uri),
               "--port", "1"]
        cmd += ["--shadow", shadow] if shadow else []
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_kfp_adapter_compiles(tmp_path):
    from kfp import compiler

    from kubeloop.components.predict import predict_op

    out = tmp_path / "predict.yaml"
    compiler.Compiler().compile(predict_op, str(out))
    text = out.read_text()
    assert "predict_step" in text and "model_uri" in text


def test_regression_batch(tmp_path):
    model = trained("extra_trees", "regression")
    registry = Registry(tmp_path / "registry")
    loaded = load_version(registry.model_uri("houses", register(registry, model)))
    data = tmp_path / "houses.parquet"
    model.test.to_parquet(data)
    out = tmp_path / "p.parquet"
    summary = predict_step(loaded, str(data), str(out), batch_rows=25)
    assert summary["scored"] == len(model.test) and summary["rejected"] == 0
    result = pq.read_table(out).to_pandas()
    assert list(result.columns) == ["row", "prediction", "model", "version"]
    np.testing.assert_allclose(result["prediction"], model.pipeline.predict(model.test[model.features]),
                               rtol=1e-6, atol=1e-6)
