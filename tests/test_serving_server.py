"""The real predictor process on loopback: answers, 400s, a fuzz of bad requests,
metrics, shadow scoring and the prediction log read back after SIGTERM.

One server (HistGradientBoosting v1 of ``churn``, shadowed by the linear v2,
logging to a directory) is shared by the module; every request carries its own
``x-request-id`` so the last test can check that each one is in the log exactly
once. A second server, started with ``kubeloop serve``, logs to a bucket that does
not exist (a storage outage).
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import free_port, get, register, rows_of, start_server, trained

from kubeloop.registry import Registry
from kubeloop.serving.logs import read_logs

pytestmark = pytest.mark.slow

MODEL = "churn"
MAX_ROWS = 50
MAX_BODY = 200_000
FUZZ_EXAMPLES = 1100


class Client:
    """Keeps one connection open and records every request id it sends."""

    def __init__(self, url: str):
        self.host, self.port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
        self.sent: list[str] = []

    def post(self, path: str, body: Any, *, raw: bool = False, request_id: str | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = body if raw else json.dumps(body).encode()
        rid = request_id or uuid.uuid4().hex
        self.sent.append(rid)
        headers = {"Content-Type": content_type, "x-request-id": rid}
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server may close a kept-alive connection after an error; reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
                if attempt:
                    raise
        try:
            return resp.status, json.loads(payload)
        except ValueError:
            return resp.status, payload.decode(errors="replace")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    registry = Registry(root / "registry")
    primary = trained("hist_gradient_boosting", "classification")
    v1 = register(registry, primary)
    v2 = register(registry, trained("linear", "classification"), promote=False)
    logs = root / "logs"
    grpc_port = free_port()
    server = start_server(
        ["kubeloop.serving", f"--model_name={MODEL}", f"--model_dir={registry.model_uri(MODEL, v1)}",
         f"--grpc_port={grpc_port}"],
        env={"KUBELOOP_LOG_URI": str(logs), "KUBELOOP_SHADOW_URI": registry.model_uri(MODEL, v2),
             "KUBELOOP_LOG_FLUSH_SECONDS": "0.5", "KUBELOOP_MAX_ROWS": str(MAX_ROWS),
             "KUBELOOP_MAX_BODY_BYTES": str(MAX_BODY)},
    )
    client = Client(server.url)
    yield {"server": server, "client": client, "registry": registry, "root": root, "logs": logs,
           "model": primary, "v1": v1, "v2": v2, "grpc_port": grpc_port}
    server.stop(signal.SIGKILL)
    server.log_path.unlink(missing_ok=True)


V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"


def _rows(model, n, start=0):
    return rows_of(model.test[model.features].iloc[start : start + n], model.features)


def test_v1_answers_predictions_probabilities_model_and_version(setup):
    model, client = setup["model"], setup["client"]
    frame = model.test[model.features].head(25)
    status, body = client.post(V1, {"instances": _rows(model, 25)})
    assert status == 200, body
    assert body["model"] == MODEL and body["version"] == setup["v1"]
    assert body["request_id"] == client.sent[-1]
    assert body["predictions"] == list(model.pipeline.predict(frame))
    got = np.array([[p["no"], p["yes"]] for p in body["probabilities"]])
    np.testing.assert_allclose(got, model.pipeline.predict_proba(frame), atol=1e-6, rtol=0)


def test_v2_named_inputs(setup):
    model, client = setup["model"], setup["client"]
    rows = _rows(model, 7, start=30)
    frame = model.test[model.features].iloc[30:37]
    inputs = [{"name": f, "shape": [7], "datatype": "BYTES", "data": [r[f] for r in rows]} for f in model.features]
    status, body = client.post(V2, {"id": "ignored-when-header-set", "inputs": inputs})
    assert status == 200, body
    assert body["model_name"] == MODEL and body["model_version"] == setup["v1"]
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    assert outputs["prediction"] == list(model.pipeline.predict(frame))
    np.testing.assert_allclose(outputs["proba_yes"], model.pipeline.predict_proba(frame)[:, 1], atol=1e-6)


def _grpc_infer(setup, inputs):
    """One gRPC ModelInfer call with its own request id (recorded as sent)."""
    import asyncio

    from kserve import InferenceGRPCClient, InferRequest

    async def call():
        grpc_client = InferenceGRPCClient(f"127.0.0.1:{setup['grpc_port']}", timeout=10, retries=2)
        rid = uuid.uuid4().hex
        setup["client"].sent.append(rid)
        try:
            return await grpc_client.infer(InferRequest(model_name=MODEL, infer_inputs=inputs, request_id=rid),
                                           headers=(("x-request-id", rid),))
        finally:
            await grpc_client._channel.close()

    return asyncio.run(call())


def test_v2_over_grpc(setup):

    import grpc
    from kserve import InferInput

    model = setup["model"]
    frame = model.test[model.features].dropna().head(3)
    rows = rows_of(frame, model.features)
    kinds = {f: model.schema["columns"][f]["kind"] for f in model.features}

    def column(name):
        values = [r[name] for r in rows]
        if kinds[name] == "numeric":
            return InferInput(name, [len(rows)], "FP64", [float(v) for v in values])
        return InferInput(name, [len(rows)], "BYTES", [str(v).encode() for v in values])

    def call(inputs):
        return _grpc_infer(setup, inputs)

    response = call([column(f) for f in model.features])
    assert response.model_version == setup["v1"]
    outputs = {o.name: o.data for o in response.outputs}
    labels = [p.decode() if isinstance(p, bytes) else p for p in outputs["prediction"]]
    assert labels == list(model.pipeline.predict(frame))
    np.testing.assert_allclose(outputs["proba_yes"], model.pipeline.predict_proba(frame)[:, 1], atol=1e-6)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        call([column(f) for f in model.features[1:]])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"field '{model.features[0]}'" in info.value.details()


def _binary_columns(model, frame):
    """Each feature as a binary tensor: FP64 little-endian for numbers, else BYTES
    (a 4-byte little-endian length before each UTF-8 value), as the KServe v2
    binary data extension and gRPC's raw_input_contents carry them."""
    import struct

    rows = rows_of(frame, model.features)
    kinds = {f: model.schema["columns"][f]["kind"] for f in model.features}
    out = []
    for f in model.features:
        values = [r[f] for r in rows]
        if kinds[f] == "numeric":
            out.append((f, "FP64", np.asarray(values, dtype="<f8").tobytes()))
        else:
            out.append((f, "BYTES", b"".join(struct.pack("<I", len(str(v).encode())) + str(v).encode()
                                              for v in values)))
    return out


def test_v2_binary_tensors_over_rest(setup):
    model, client = setup["model"], setup["client"]
    frame = model.test[model.features].dropna().head(4)
    columns = _binary_columns(model, frame)
    header = json.dumps({"inputs": [{"name": n, "shape": [len(frame)], "datatype": d,
                                     "parameters": {"binary_data_size": len(raw)}} for n, d, raw in columns]}).encode()
    body = header + b"".join(raw for _, _, raw in columns)
    rid = uuid.uuid4().hex
    client.sent.append(rid)
    host, port = setup["server"].url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", V2, body=body, headers={"Content-Type": "application/octet-stream",
                                                      "Inference-Header-Content-Length": str(len(header)),
                                                      "x-request-id": rid})
        resp = conn.getresponse()
        status, payload = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 200, payload[:500]
    outputs = {o["name"]: o["data"] for o in json.loads(payload)["outputs"]}
    assert outputs["prediction"] == list(model.pipeline.predict(frame))
    np.testing.assert_allclose(outputs["proba_yes"], model.pipeline.predict_proba(frame)[:, 1], atol=1e-6)


def test_v2_raw_input_contents_over_grpc(setup):

    from kserve import InferInput

    model = setup["model"]
    frame = model.test[model.features].dropna().head(3)
    inputs = []
    for name, datatype, raw in _binary_columns(model, frame):
        i = InferInput(name, [len(frame)], datatype)
        i._raw_data = raw  # what InferInput.set_data_from_numpy(..., binary_data=True) sets
        inputs.append(i)

    response = _grpc_infer(setup, inputs)
    outputs = {o.name: (o.as_numpy() if o.data is None else o.data) for o in response.outputs}
    labels = [p.decode() if isinstance(p, bytes) else p for p in list(outputs["prediction"])]
    assert labels == list(model.pipeline.predict(frame))
    np.testing.assert_allclose(np.asarray(outputs["proba_yes"], dtype=float),
                               model.pipeline.predict_proba(frame)[:, 1], atol=1e-6)


def test_health_and_model_metadata(setup):
    url = setup["server"].url
    assert get(url + "/v2/health/ready")[0] == 200
    assert get(url + f"/v1/models/{MODEL}")[0] == 200
    status, text = get(url + f"/v2/models/{MODEL}")
    assert status == 200
    assert {i["name"] for i in json.loads(text)["inputs"]} == set(setup["model"].features)


def _bad_cases(model):
    good = _rows(model, 1)[0]
    numeric = next(f for f in model.features if model.schema["columns"][f]["kind"] == "numeric")
    dated = next(f for f in model.features if model.schema["columns"][f]["kind"] == "datetime")
    return [
        ("malformed json", V1, b'{"instances": [{"age": 4', True, []),
        ("not json at all", V1, b"\x00\xff garbage", True, []),
        ("v2 malformed json", V2, b'{"inputs": [', True, []),
        ("empty batch", V1, {"instances": []}, False, []),
        ("too many rows", V1, {"instances": [good] * (MAX_ROWS + 1)}, False, []),
        ("oversized body", V1, b'{"instances": ["' + b"x" * (MAX_BODY + 10) + b'"]}', True, []),
        ("positional row", V1, {"instances": [list(good.values())]}, False, ["row 0"]),
        ("missing field", V1, {"instances": [good, {k: v for k, v in good.items() if k != numeric}]}, False,
         [f"row 1, field '{numeric}'"]),
        ("unknown field", V1, {"instances": [dict(good, zipcode="12345")]}, False, ["row 0, field 'zipcode'"]),
        ("wrong type", V1, {"instances": [good, good, dict(good, **{numeric: "lots"})]}, False,
         [f"row 2, field '{numeric}'"]),
        ("bad date", V1, {"instances": [dict(good, **{dated: "not a date"})]}, False, [f"row 0, field '{dated}'"]),
        ("two problems", V1, {"instances": [dict(good, **{numeric: [1]}), dict(good, **{dated: 12})]}, False,
         [f"row 0, field '{numeric}'", f"row 1, field '{dated}'"]),
        ("v2 unknown input", V2, {"inputs": [{"name": "zipcode", "shape": [1], "datatype": "BYTES",
                                              "data": ["1"]}]}, False, ["field 'zipcode'"]),
        ("v2 not a request", V2, {"inputs": 5}, False, ["inputs"]),
        ("v2 missing inputs", V2, {"inputs": [{"name": numeric, "shape": [1], "datatype": "FP64", "data": [1.0]}]},
         False, ["row 0, field"]),
    ]


def test_bad_requests_get_a_400_naming_row_and_field(setup):
    client = setup["client"]
    failures = []
    for name, path, body, raw, fragments in _bad_cases(setup["model"]):
        status, answer = client.post(path, body, raw=raw)
        message = answer.get("error", "") if isinstance(answer, dict) else str(answer)
        if status != 400 or not all(f in message for f in fragments):
            failures.append((name, status, message[:300]))
    assert not failures


# --- fuzz ---------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_not_a_number = st.text(max_size=10) | st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)


@st.composite
def bad_requests(draw, model):
    """(path, body bytes) of requests that must all be refused."""
    good = _rows(model, 3)
    kinds = {f: model.schema["columns"][f]["kind"] for f in model.features}
    numeric = [f for f, k in kinds.items() if k == "numeric"]
    choice = draw(st.integers(0, 7))
    rows = [dict(r) for r in draw(st.lists(st.sampled_from(good), min_size=1, max_size=4))]
    r = draw(st.integers(0, len(rows) - 1))
    if choice == 0:  # any JSON that is not a request
        body = draw(_json.filter(lambda v: not isinstance(v, dict) or not ({"instances", "inputs"} & set(v))))
        return draw(st.sampled_from([V1, V2])), json.dumps(body).encode()
    if choice == 1:  # arbitrary bytes
        return draw(st.sampled_from([V1, V2])), draw(st.binary(max_size=64)).replace(b"{", b"")
    if choice == 2:  # a numeric field holding something else
        rows[r][draw(st.sampled_from(numeric))] = draw(_not_a_number)
    elif choice == 3:  # a field missing
        del rows[r][draw(st.sampled_from(model.features))]
    elif choice == 4:  # an extra field
        rows[r][draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in kinds))] = draw(_json)
    elif choice == 5:  # a row that is not an object
        rows[r] = draw(_json.filter(lambda v: not isinstance(v, dict)))
    elif choice == 6:  # v2 with broken structure
        feature = draw(st.sampled_from(model.features))
        item = {"name": feature, "shape": draw(st.lists(st.integers(-2, 5), max_size=3)),
                "datatype": draw(st.sampled_from(["FP64", "BYTES", "BOOL", "FP16", "nonsense", ""])),
                "data": draw(st.lists(_json, max_size=5))}
        return V2, json.dumps({"inputs": [item]}).encode()
    else:  # a datetime or categorical field with a wrong type
        target = draw(st.sampled_from([f for f, k in kinds.items() if k in ("datetime", "categorical")]))
        rows[r][target] = draw(st.lists(st.integers(), min_size=1, max_size=2) | st.dictionaries(
            st.text(max_size=3), st.integers(), min_size=1, max_size=2) if kinds[target] == "categorical"
            else st.integers() | st.booleans() | st.just("31/31/2024x"))
    return V1, json.dumps({"instances": rows}).encode()


def test_fuzz_bad_requests_all_get_400_and_the_server_stays_healthy(setup):
    client, model = setup["client"], setup["model"]
    statuses: dict[int, int] = {}
    slow: list[float] = []

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(bad_requests(model))
    def check(request):
        path, body = request
        t0 = time.monotonic()
        status, answer = client.post(path, body, raw=True)
        if time.monotonic() - t0 > 5:
            slow.append(time.monotonic() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        assert status == 400, (path, body[:200], answer)
        assert isinstance(answer, dict) and answer.get("error")

    check()
    assert sum(statuses.values()) >= 1000
    assert set(statuses) == {400}
    assert not slow
    assert get(setup["server"].url + "/v2/health/ready")[0] == 200
    status, _ = client.post(V1, {"instances": _rows(model, 1)})
    assert status == 200


def _chunked(setup, body: bytes, rid: str) -> tuple[int, Any]:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length) on its own connection."""
    host, port = setup["server"].url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    setup["client"].sent.append(rid)
    try:
        pieces = (body[i:i + 8192] for i in range(0, len(body), 8192))
        conn.request("POST", V1, body=pieces, encode_chunked=True,
                     headers={"Content-Type": "application/json", "x-request-id": rid})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_the_body_limit_counts_the_bytes_read_chunked_included(setup):
    rows = _rows(setup["model"], 1)
    small = json.dumps({"instances": rows}).encode()
    assert _chunked(setup, small, "chunked-small")[0] == 200
    big = b'{"instances": ["' + b"x" * (MAX_BODY + 10) + b'"]}'
    status, body = _chunked(setup, big, "chunked-big")
    assert status == 400 and f"more than {MAX_BODY} bytes" in body["error"]
    assert setup["client"].post(V1, {"instances": rows})[0] == 200


def test_prometheus_metrics(setup):
    status, text = get(setup["server"].url + "/metrics")
    assert status == 200
    v1 = setup["v1"]
    expected = [
        rf'kubeloop_requests_total\{{model="churn",outcome="ok",protocol="v1",role="primary",version="{v1}"\}} [1-9]',
        r'kubeloop_requests_total\{model="churn",outcome="rejected",protocol="v1"',
        r'kubeloop_rejections_total\{model="churn",reason="wrong_type",version="v1"\} [1-9]',
        r'kubeloop_rejections_total\{model="churn",reason="invalid_input"',
        r'kubeloop_request_latency_seconds_bucket\{le="0.001",model="churn",protocol="v1"',
        r'kubeloop_predictions_total\{label="(no|yes)",model="churn",role="primary",version="v1"\} [1-9]',
        r'kubeloop_predicted_class_probability_count\{model="churn",role="primary",version="v1"\} [1-9]',
        r'kubeloop_rows_scored_total\{model="churn",role="shadow",version="v2"\} [1-9]',
        r'kubeloop_log_rows_written_total\{model="churn"\} [1-9]',
        r'kubeloop_model_info\{head="hist_gradient_boosting",model="churn",role="primary",version="v1"\} 1',
        r"request_predict_seconds",  # KServe's own
    ]
    missing = [p for p in expected if not re.search(p, text)]
    assert not missing, missing


def test_every_request_is_logged_exactly_once_after_sigterm(setup):
    server, client = setup["server"], setup["client"]
    for i in range(5):  # a few more, answered just before the signal
        assert client.post(V1, {"instances": _rows(setup["model"], 2, start=i)})[0] == 200
    code = server.stop(signal.SIGTERM, timeout=30)
    assert code is not None
    assert not re.search(r'HTTP/1.1" 5[0-9][0-9]', server.log())  # no 5xx, ever
    df = read_logs(setup["logs"], MODEL)
    primary = df[df["role"] == "primary"]
    sent = set(client.sent)
    assert len(sent) == len(client.sent)  # ids are unique
    logged = set(primary["request_id"])
    assert sent == logged, (len(sent - logged), len(logged - sent))
    assert not primary.duplicated(["request_id", "row"]).any()
    # rows of a request are 0..n-1, or -1 alone for a request refused as a whole
    for _, rows in primary.groupby("request_id")["row"]:
        values = sorted(rows)
        assert values == [-1] or values == list(range(len(values)))
    ok = primary[primary["status"] == "ok"]
    assert len(ok) > 0 and ok["prediction"].isin(["no", "yes"]).all()
    assert set(primary.loc[primary["status"] != "ok", "status"]) <= {
        "invalid_input", "malformed_json", "empty_batch", "too_many_rows", "missing_field",
        "unknown_field", "wrong_type", "out_of_range", "rejected_with_request"}
    assert (primary["version"] == setup["v1"]).all()
    # the shadow scored every answered request, under the same ids
    shadow = df[df["role"] == "shadow"]
    assert set(ok["request_id"]) == set(shadow["request_id"])
    assert (shadow["version"] == setup["v2"]).all()
    assert not shadow.duplicated(["request_id", "row"]).any()
    assert list(df.columns[:6]) == ["request_id", "row", "time", "model", "version", "role"]
    assert str(df["time"].dtype) == "datetime64[us, UTC]" or str(df["time"].dtype).endswith("UTC]")


def test_kubeloop_serve_survives_a_storage_outage(setup, s3_endpoint):
    """``kubeloop serve`` with the log on a bucket that does not exist: every request
    is answered, the dropped rows are counted and named in the server's log."""
    registry_dir = Path(setup["registry"].uri)
    server = start_server(
        ["kubeloop.cli", "serve", "--model", f"{MODEL}@{setup['v1']}", "--registry", str(registry_dir),
         "--log-to", "s3://no-such-bucket-kubeloop/logs", "--json"],
        env={"AWS_ENDPOINT_URL": s3_endpoint, "KUBELOOP_LOG_FLUSH_SECONDS": "0.3"},
        port_flag="--port",
    )
    try:
        client = Client(server.url)
        for i in range(10):
            status, body = client.post(V1, {"instances": _rows(setup["model"], 1, start=i)})
            assert status == 200 and body["version"] == setup["v1"]
        deadline = time.monotonic() + 20
        dropped = 0.0
        while time.monotonic() < deadline:
            text = get(server.url + "/metrics")[1]
            m = re.search(r'kubeloop_log_rows_dropped_total\{model="churn",reason="storage_error"\} ([0-9.e+]+)', text)
            dropped = float(m.group(1)) if m else 0.0
            if dropped >= 10:
                break
            time.sleep(0.3)
        assert dropped >= 10
        assert get(server.url + "/v2/health/ready")[0] == 200
    finally:
        server.stop(signal.SIGTERM)
    log = server.log()
    server.log_path.unlink(missing_ok=True)
    assert "could not write" in log and "dropped" in log
