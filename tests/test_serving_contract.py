"""The predictor's contract at its edges, in process: rows exactly as in the training
file, a shadow that cannot load, the model hashed where it lies, values a float32
model cannot take."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading

import pytest
from serving_support import register, rows_of, trained

from kubeloop.registry import Registry
from kubeloop.serving.model import INLINE_ROWS, KubeloopModel, Rejected

MODEL = "churn"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("contract") / "registry")
    register(reg, trained("linear", "classification"))
    return reg


def _model(registry, **kw) -> KubeloopModel:
    m = KubeloopModel(MODEL, registry.model_uri(MODEL, "v1"), **kw)
    assert m.load()
    return m


def test_a_row_exactly_as_in_the_training_file_is_scored(registry):
    model = trained("linear", "classification")
    m = _model(registry)
    extra = [c for c in model.test.columns if c not in model.features]
    assert {"customer_id", "churned"} <= set(extra)  # the id and the target
    rows = rows_of(model.test.head(5), list(model.test.columns))
    answer = m.score({"instances": rows}, {"x-request-id": "training-rows"})
    expected = m.score({"instances": rows_of(model.test.head(5), model.features)})
    assert answer["predictions"] == expected["predictions"]
    assert answer["probabilities"] == expected["probabilities"]
    # A field that is in no training column is still refused, naming it.
    with pytest.raises(Rejected) as info:
        m.score({"instances": [{**rows[0], "custmer_id": "x"}]})
    assert [(p["field"], p["reason"]) for p in info.value.body["problems"]] == [("custmer_id", "unknown_field")]


def test_values_beyond_float32_are_a_400(registry):
    model = trained("linear", "classification")
    m = _model(registry)
    numeric = next(f.name for f in m.version.schema.features if f.kind == "numeric")
    row = {**rows_of(model.test.head(1), model.features)[0], numeric: 1e39}
    with pytest.raises(Rejected) as info:
        m.score({"instances": [row]})
    assert Rejected.status_code == 400
    assert info.value.body["problems"][0]["reason"] == "out_of_range"
    assert "float32" in info.value.body["problems"][0]["message"]


def test_a_shadow_that_cannot_load_never_takes_the_primary_down(registry, tmp_path, caplog):
    broken = tmp_path / "shadow-model"
    broken.mkdir()
    (broken / "kubeloop.json").write_text(json.dumps({"task": "classification", "sha256": "0" * 64,
                                                      "features": []}))
    with caplog.at_level(logging.ERROR, logger="kubeloop.serving"):
        m = _model(registry, shadow_uri=str(broken))
    assert m.ready and m.shadow is None
    assert any("shadow" in r.getMessage() and "cannot be loaded" in r.getMessage() for r in caplog.records)
    model = trained("linear", "classification")
    assert m.score({"instances": rows_of(model.test.head(2), model.features)})["predictions"]
    m.close()


def test_the_model_is_hashed_where_it_lies(registry, monkeypatch, tmp_path):
    """No copy into a temporary directory: with none usable, a local model still loads
    (a pod's /tmp may be small or read-only)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    m = _model(registry)
    assert m.version is not None and m.version.version == "v1"


def test_large_requests_are_scored_off_the_event_loop(registry):
    """A big batch on the scoring threads, a small one in place: the loop stays free to
    answer other requests (and health checks) while a large batch is scored."""
    model = trained("linear", "classification")
    m = _model(registry)
    threads = []
    scorer = m.version.compiled.predict

    def recording(rows):
        threads.append(threading.get_ident())
        return scorer(rows)

    m.version.compiled.predict = recording

    async def both():
        loop_thread = threading.get_ident()
        small = await m.predict({"instances": rows_of(model.test.head(2), model.features)})
        big = await m.predict({"instances": rows_of(model.test.head(INLINE_ROWS + 1), model.features)})
        return loop_thread, small, big

    loop_thread, small, big = asyncio.run(both())
    assert threads[0] == loop_thread and threads[1] != loop_thread
    assert len(small["predictions"]) == 2 and len(big["predictions"]) == INLINE_ROWS + 1


def test_a_refused_request_holds_no_more_than_its_log_rows(registry, tmp_path):
    """A 400 for a huge unknown field and over-long text: the queued log rows keep the
    features only, so they fit a small byte-bounded queue and are written."""
    from kubeloop.serving.logs import read_logs

    model = trained("linear", "classification")
    logs = tmp_path / "logs"
    m = _model(registry, log_uri=str(logs), log_options={"max_queue_bytes": 20_000, "flush_seconds": 60})
    row = rows_of(model.test.head(1), model.features)[0]
    categorical = next(f.name for f in m.version.schema.features if f.kind == "categorical")
    for i, bad in enumerate([{**row, "blob": "x" * 200_000}, {**row, categorical: "y" * 200_000}]):
        with pytest.raises(Rejected):
            m.score({"instances": [bad]}, {"x-request-id": f"refused-{i}"})
    m.close()
    logged = read_logs(logs, MODEL)
    assert set(logged["request_id"]) == {"refused-0", "refused-1"}
    assert set(logged["status"]) == {"unknown_field", "out_of_range"}
