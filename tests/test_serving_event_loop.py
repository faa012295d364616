"""A large request does not stall the server: while KServe decodes a big JSON body
(held at a barrier, ``held_decoding_support``), the real model server still answers
its health probe and small requests, v1 and v2."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from serving_support import get, post, register, rows_of, start_server, trained

from kubeloop.registry import Registry
from kubeloop.serving.model import OFFLOAD_BYTES

pytestmark = pytest.mark.slow

MODEL = "churn"
ROWS = 6000
HOLD_BYTES = 500_000  # decoding of bodies above this is held (both test bodies are)
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("event-loop")
    registry = Registry(root / "registry")
    model = trained("linear", "classification")
    version = register(registry, model)
    barrier = root / "barrier"
    barrier.mkdir()
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    srv = start_server(
        ["held_decoding_support", f"--model_name={MODEL}", f"--model_dir={registry.model_uri(MODEL, version)}",
         "--enable_grpc=false"],
        env={"PYTHONPATH": path, "KUBELOOP_TEST_BARRIER": str(barrier), "KUBELOOP_TEST_HOLD_BYTES": str(HOLD_BYTES),
             "KUBELOOP_MAX_ROWS": str(ROWS)},
    )
    yield {"url": srv.url, "model": model, "barrier": barrier}
    srv.stop(signal.SIGKILL)
    srv.log_path.unlink(missing_ok=True)


def _v1(model, n):
    return {"instances": rows_of(model.test[model.features].sample(n, replace=True, random_state=0),
                                 model.features)}


def _v2(model, n):
    frame = model.test[model.features].sample(n, replace=True, random_state=0)
    inputs = []
    for name in model.features:
        values = rows_of(frame[[name]], [name])
        column = [r[name] for r in values]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column if v is not None)
        inputs.append({"name": name, "shape": [n], "datatype": "FP64" if numeric else "BYTES", "data": column})
    return {"inputs": inputs}


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_health_and_small_requests_answer_while_a_large_body_is_decoded(server, protocol):
    import json

    url, model, barrier = server["url"], server["model"], server["barrier"]
    for name in ("decoding", "release"):
        (barrier / name).unlink(missing_ok=True)
    path = f"/v1/models/{MODEL}:predict" if protocol == "v1" else f"/v2/models/{MODEL}/infer"
    big = (_v1 if protocol == "v1" else _v2)(model, ROWS)
    assert len(json.dumps(big)) > max(OFFLOAD_BYTES, HOLD_BYTES)
    answer: dict = {}
    large = threading.Thread(target=lambda: answer.update(result=post(url + path, big, timeout=120)))
    large.start()
    try:
        deadline = time.monotonic() + 60
        while not (barrier / "decoding").exists():
            assert time.monotonic() < deadline and large.is_alive(), f"the large request never got decoded: {answer}"
            time.sleep(0.02)
        # The large body's decoding is held: everything else must still be answered.
        assert get(url + "/v2/health/ready", timeout=15)[0] == 200
        assert get(url + "/v2/health/live", timeout=15)[0] == 200
        status, body = post(url + path, (_v1 if protocol == "v1" else _v2)(model, 3), timeout=15)
        assert status == 200, body
        assert large.is_alive() and "result" not in answer  # still held
    finally:
        (barrier / "release").touch()
        large.join(120)
    status, body = answer["result"]
    assert status == 200, body
    n = len(body["predictions"]) if protocol == "v1" else body["outputs"][0]["shape"][0]
    assert n == ROWS


def test_a_large_bad_request_is_still_a_400_naming_the_field(server):
    """Off the event loop the answers are the same: a refused row in a large body."""
    url, model, barrier = server["url"], server["model"], server["barrier"]
    (barrier / "release").touch()  # nothing held here
    big = _v1(model, ROWS)
    big["instances"][17] = {**big["instances"][17], "custmer_id": "x"}
    status, body = post(url + f"/v1/models/{MODEL}:predict", big, timeout=120, headers={"x-request-id": "big-bad"})
    assert status == 400, body
    assert body["request_id"] == "big-bad"
    assert [(p["row"], p["field"], p["reason"]) for p in body["problems"]] == [(17, "custmer_id", "unknown_field")]
