"""The predictor: a ``kserve.Model`` that serves one registry version.

KServe's model server does the HTTP (v1 ``/v1/models/NAME:predict``, v2
``/v2/models/NAME/infer``, health, ``/metrics``); this class sees decoded bodies
only. Per request it parses the body (``schema.parse_v1``/``parse_v2``), checks
every row against the version's ``kubeloop.json`` (``schema.validate``), scores
the rows with the compiled model (``fastpath``), answers predictions, class
probabilities, the model name and version, and hands the rows to the prediction
log and the shadow version, both on background threads.

Every request the predictor handles is logged with its outcome: ``ok``, the
rejection reason, or ``failed``. Errors map to status codes here and only here:
a ``RequestRejected`` becomes a ``Rejected`` (KServe's ``InvalidInput``: 400)
whose JSON body lists every problem with its row and field; an exception while
scoring becomes a ``Failed`` (KServe's ``InferenceError``: 500) naming the
request id, logged with its traceback, and the server keeps serving. KServe's
own handlers (``kserve/errors.py``, registered in ``kserve/protocol/rest/
server.py``) would answer both, but without the request id and without the
log row. ``install`` adds the handler that writes both bodies, a 400 for
bodies FastAPI refuses before the model sees them (KServe would answer 422),
and a middleware that logs and counts requests KServe refuses or fails before
they reach the model (malformed JSON, model not ready) and runs a large body's
request (above ``OFFLOAD_BYTES``: decoding, scoring, encoding) on a worker
thread, so health probes and small requests are answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import kserve
from kserve.errors import InferenceError, InvalidInput

from kubeloop.serving import metrics
from kubeloop.serving.loader import LoadedVersion, load_version
from kubeloop.serving.logs import Entry, PredictionLog
from kubeloop.serving.schema import (
    DEFAULT_MAX_ROWS,
    FAILED,
    INVALID_INPUT,
    MAX_TEXT_CHARS,
    OK,
    Problem,
    RequestRejected,
    parse_v1,
    parse_v2,
    validate,
)
from kubeloop.serving.shadow import Shadow

log = logging.getLogger("kubeloop.serving")

ROLES = ("primary", "canary")
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Set by the middleware for each HTTP request; the model marks it handled, so the
# middleware knows which 400s never reached the model.
_request_state: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "kubeloop_request_state", default=None
)


class Rejected(InvalidInput):
    """A 400 with the problems, the model and version, and the request id."""

    def __init__(self, exc: RequestRejected, *, model: str, version: str, request_id: str):
        super().__init__(exc.message)
        self.body = {
            "error": exc.message,
            "problems": [p.to_dict() for p in exc.problems[:100]],
            "model": model,
            "version": version,
            "request_id": request_id,
        }


class Failed(InferenceError):
    """A 500: scoring raised. The body names the request id to find it in the log."""

    status_code = 500

    def __init__(self, exc: BaseException, *, model: str, version: str, request_id: str):
        super().__init__(f"the model failed on this request ({type(exc).__name__})")
        self.body = {"error": self.reason, "model": model, "version": version, "request_id": request_id}


Rejected.status_code = 400


def _request_id(headers: dict[str, str] | None, fallback: Any = None) -> str:
    for candidate in ((headers or {}).get("x-request-id"), fallback):
        if isinstance(candidate, str) and _REQUEST_ID.fullmatch(candidate):
            return candidate
    return uuid.uuid4().hex


def _v2_columns(payload: kserve.InferRequest) -> list[tuple[Any, Any, Any, Any]]:
    """(name, shape, datatype, data) per input. Binary tensors (REST's binary data
    extension, gRPC's ``raw_input_contents``) arrive as raw bytes that KServe keeps
    beside the input; ``as_numpy`` decodes them (4-byte-length-prefixed BYTES, or the
    datatype's little-endian array)."""
    out = []
    for i in payload.inputs:
        data = i.as_numpy() if getattr(i, "_raw_data", None) is not None else i.data
        out.append((i.name, i.shape, i.datatype, data))
    return out


def _loggable(rows: list[Any], version: LoadedVersion) -> list[Any]:
    """What the log keeps of a request's rows while they wait to be written: the
    features only, text past what validation accepts dropped (its cell is null in the
    log either way), so a refused or oversized request holds no more than its log rows."""
    names = version.schema.names
    return [{n: (None if isinstance(v, str) and len(v) > MAX_TEXT_CHARS else v)
             for n, v in ((n, r.get(n)) for n in names)} if isinstance(r, dict) else None for r in rows]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# Requests of up to this many rows are scored on the event loop (well under a
# millisecond of model time); larger ones on the scoring threads.
INLINE_ROWS = 64
SCORING_THREADS = 2
# Bodies larger than this are decoded, validated, scored and encoded on a worker
# thread with an event loop of its own (``_Edge``): decoding 16 MiB of JSON takes
# the event loop 50-100 ms, during which no health probe or small request would
# be answered. Below it, decoding costs well under a millisecond.
OFFLOAD_BYTES = 256 * 1024
OFFLOAD_THREADS = 2
_pools: dict[str, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()


def _pool(name: str, workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"kubeloop-{name}")
        return _pools[name]


def _scoring_pool() -> ThreadPoolExecutor:
    return _pool("score", SCORING_THREADS)


def _rows_in(payload: Any) -> int:
    """How many rows a decoded request claims, without checking it (0 if unclear)."""
    if isinstance(payload, kserve.InferRequest):
        shape = payload.inputs[0].shape if payload.inputs else None
        return int(shape[0]) if shape and isinstance(shape[0], int) else 0
    if isinstance(payload, dict):
        rows = payload.get("instances", payload.get("inputs"))
        return len(rows) if isinstance(rows, list) else 0
    return 0


class KubeloopModel(kserve.Model):
    """Serves the version at ``model_dir`` under ``name`` (the URL's model name)."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        *,
        log_uri: str | None = None,
        shadow_uri: str | None = None,
        role: str = "primary",
        max_rows: int = DEFAULT_MAX_ROWS,
        storage_cfg: Any = None,
        log_options: dict[str, Any] | None = None,
    ):
        super().__init__(name)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.model_dir = model_dir
        self.log_uri = log_uri or None
        self.shadow_uri = shadow_uri or None
        self.role = role
        self.max_rows = max_rows
        self.storage_cfg = storage_cfg
        self.log_options = log_options or {}
        self.version: LoadedVersion | None = None
        self.shadow: Shadow | None = None
        self.plog: PredictionLog | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> bool:
        v = load_version(self.model_dir, name=self.name, storage_cfg=self.storage_cfg, max_rows=self.max_rows)
        self.version = v
        features = list(v.schema.features)
        labels = [str(c) for c in v.labels]
        if self.log_uri:
            self.plog = PredictionLog(self.log_uri, self.name, features, v.task, labels,
                                      storage_cfg=self.storage_cfg, **self.log_options)
        if self.shadow_uri:
            self._load_shadow()
        metrics.MODEL_INFO.labels(self.name, v.version, self.role, v.compiled.head_kind).set(1)
        self._bind_metrics()
        if v.compiled.fallback_reason:
            log.warning("%s %s: scikit-learn path for the model head (%s)", self.name, v.version,
                        v.compiled.fallback_reason)
        log.info("%s %s loaded from %s (%s, %s head)%s%s", self.name, v.version, v.uri, v.task,
                 v.compiled.head_kind, f"; shadow {self.shadow.version.version}" if self.shadow else "",
                 f"; prediction log {self.log_uri}" if self.log_uri else "")
        self.ready = True
        return True

    def _load_shadow(self) -> None:
        """Load the shadow version; one that cannot be loaded is logged and counted, and
        the primary serves without it (a shadow answers nobody)."""
        try:
            sv = load_version(self.shadow_uri, name=self.name, storage_cfg=self.storage_cfg, max_rows=self.max_rows)
            slog = None
            if self.log_uri:
                slog = PredictionLog(self.log_uri, self.name, list(sv.schema.features), sv.task,
                                     [str(c) for c in sv.labels], storage_cfg=self.storage_cfg,
                                     **self.log_options)
            self.shadow = Shadow(sv, self.name, slog)
            metrics.MODEL_INFO.labels(self.name, sv.version, "shadow", sv.compiled.head_kind).set(1)
        except Exception as exc:  # noqa: BLE001 - no shadow problem may stop the primary
            self.shadow = None
            metrics.SHADOW_LOAD_FAILURES.labels(self.name).inc()
            log.error("%s: the shadow %s cannot be loaded (%s: %s); serving without a shadow",
                      self.name, self.shadow_uri, type(exc).__name__, exc)

    def _bind_metrics(self) -> None:
        v = self.version
        assert v is not None
        name, ver, role = self.name, v.version, self.role
        self._m_ok = {p: metrics.REQUESTS.labels(name, ver, role, p, "ok") for p in ("v1", "v2")}
        self._m_rejected = {p: metrics.REQUESTS.labels(name, ver, role, p, "rejected") for p in ("v1", "v2")}
        self._m_failed = {p: metrics.REQUESTS.labels(name, ver, role, p, FAILED) for p in ("v1", "v2")}
        self._m_latency = {p: metrics.LATENCY.labels(name, ver, p) for p in ("v1", "v2")}
        self._m_rows = metrics.ROWS.labels(name, ver, role)
        self._m_labels = {str(c): metrics.PREDICTIONS.labels(name, ver, role, str(c)) for c in v.labels}
        self._m_proba = metrics.PREDICTED_PROBABILITY.labels(name, ver, role)
        self._m_value = metrics.PREDICTED_VALUE.labels(name, ver, role)
        self._classes = [_plain(c) for c in v.labels]
        self._class_names = [str(c) for c in v.labels]

    def stop(self) -> None:
        """Shutdown (KServe unloads the model on SIGTERM): score queued shadow requests,
        then write every queued prediction-log row."""
        self.close()
        super().stop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.shadow is not None:
            self.shadow.close()
            if self.shadow.log is not None:
                self.shadow.log.close()
        if self.plog is not None:
            self.plog.close()

    # -- requests ----------------------------------------------------------------------------

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """KServe's entry point (awaited on its event loop): small requests are scored
        in place, large ones on a scoring thread so that one big batch does not stall
        every other request's answer, health checks included."""
        state = _request_state.get()
        if _rows_in(payload) <= INLINE_ROWS or (state is not None and state.get("offloaded")):
            # Small, or already off the server's event loop (a large body, see _Edge).
            return self.score(payload, headers)
        loop = asyncio.get_running_loop()
        # The request's context (the edge middleware's state) goes with it.
        call = functools.partial(contextvars.copy_context().run, self.score, payload, headers)
        return await loop.run_in_executor(_scoring_pool(), call)

    def score(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Parse, check and score one decoded request; the answer, or Rejected / Failed."""
        t0 = time.perf_counter()
        state = _request_state.get()
        if state is not None:
            state["handled"] = True
        v2 = isinstance(payload, kserve.InferRequest)
        protocol = "v2" if v2 else "v1"
        request_id = _request_id(headers, payload.id if v2 else None)
        when = datetime.now(timezone.utc)
        version = self.version
        assert version is not None
        rows: list[dict[str, Any]] | None = None
        try:
            try:
                if v2:
                    rows = parse_v2(_v2_columns(payload), version.schema)
                else:
                    rows = parse_v1(payload, version.schema)
                checked = validate(rows, version.schema)
            except RequestRejected:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever a body holds, it is a 400
                log.warning("request %s could not be read: %r", request_id, exc)
                raise RequestRejected([Problem(INVALID_INPUT, f"the request could not be read ({type(exc).__name__})")]) from None
        except RequestRejected as exc:
            self._reject(exc, request_id, when, protocol, rows if exc.rows is None else exc.rows, t0)
            raise Rejected(exc, model=self.name, version=version.version, request_id=request_id) from None

        try:
            index, proba = version.compiled.predict(checked.rows)
            if version.task == "classification":
                predictions = [self._classes[i] for i in index]
                names = [self._class_names[i] for i in index]
            else:
                predictions = [float(x) for x in index]
            if len(predictions) != len(checked.rows):
                raise ValueError(f"the model answered {len(predictions)} predictions for {len(checked.rows)} rows")
            latency = time.perf_counter() - t0
            # Answer first; everything below is bookkeeping that costs microseconds.
            if v2:
                response = self._v2_response(request_id, predictions, proba)
            else:
                response = {"predictions": predictions, "model": self.name, "version": version.version,
                            "request_id": request_id}
                if proba is not None:
                    response["probabilities"] = [dict(zip(self._class_names, map(float, p), strict=True))
                                                 for p in proba]
        except Exception as exc:  # noqa: BLE001 - whatever scoring raises, it is this request's 500
            log.exception("request %s failed in %s %s", request_id, self.name, version.version)
            self._fail(request_id, when, protocol, rows, t0)
            raise Failed(exc, model=self.name, version=version.version, request_id=request_id) from None
        n = len(checked.rows)
        self._m_ok[protocol].inc()
        self._m_latency[protocol].observe(latency)
        self._m_rows.inc(n)
        if proba is not None:
            for name in names:
                self._m_labels[name].inc()
            for p in proba.max(axis=1):
                self._m_proba.observe(float(p))
        else:
            for x in predictions:
                self._m_value.observe(x)
        for _, feature in checked.unseen:
            metrics.UNSEEN_CATEGORIES.labels(self.name, version.version, feature).inc()
        if self.plog is not None:
            self.plog.record(Entry(request_id, when, version.version, self.role, _loggable(rows, version),
                                   [OK] * n,
                                   latency * 1000, predictions, proba))
        if self.shadow is not None:
            self.shadow.submit(request_id, when, rows)
        return response

    def _v2_response(self, request_id: str, predictions: list[Any], proba: Any) -> kserve.InferResponse:
        """KServe's own response type, so REST (JSON) and gRPC (protobuf) both encode it."""
        n = len(predictions)
        version = self.version
        assert version is not None
        if proba is None:
            outputs = [kserve.InferOutput("prediction", [n], "FP64", [float(p) for p in predictions])]
        else:
            outputs = [kserve.InferOutput("prediction", [n], "BYTES", [str(p) for p in predictions])]
            outputs += [kserve.InferOutput(f"proba_{label}", [n], "FP64", [float(x) for x in proba[:, k]])
                        for k, label in enumerate(self._class_names)]
        return kserve.InferResponse(response_id=request_id, model_name=self.name, infer_outputs=outputs,
                                    model_version=version.version)

    def _reject(self, exc: RequestRejected, request_id: str, when: datetime, protocol: str,
                rows: list[Any] | None, t0: float) -> None:
        version = self.version
        assert version is not None
        self._m_rejected[protocol].inc()
        metrics.REJECTIONS.labels(self.name, version.version, exc.reason).inc()
        if self.plog is None:
            return
        latency = (time.perf_counter() - t0) * 1000
        if rows is None or not isinstance(rows, list) or not rows or not any(p.row is not None for p in exc.problems):
            # Refused as a whole (unreadable, empty, too large): one row, index -1.
            self.plog.record(Entry(request_id, when, version.version, self.role, None, [exc.reason], latency))
            return
        reasons = exc.row_reasons()
        statuses = [reasons.get(i, "rejected_with_request") for i in range(len(rows))]
        self.plog.record(Entry(request_id, when, version.version, self.role, _loggable(rows, version), statuses,
                               latency))

    def _fail(self, request_id: str, when: datetime, protocol: str, rows: list[Any] | None, t0: float) -> None:
        version = self.version
        assert version is not None
        self._m_failed[protocol].inc()
        if self.plog is None:
            return
        latency = (time.perf_counter() - t0) * 1000
        rows = _loggable(rows, version) if isinstance(rows, list) and rows else None
        self.plog.record(Entry(request_id, when, version.version, self.role, rows,
                               [FAILED] * (len(rows) if rows else 1), latency))

    def fail_unread(self, request_id: str, protocol: str) -> None:
        """A request that got a 5xx before the model saw it (KServe's own handlers)."""
        self._fail(request_id, datetime.now(timezone.utc), protocol, None, time.perf_counter())

    def reject_unread(self, request_id: str, protocol: str, reason: str) -> None:
        """A request KServe refused before the model saw it (its body was not JSON)."""
        self._reject(RequestRejected([Problem(reason, "refused before reaching the model")]), request_id,
                     datetime.now(timezone.utc), protocol, None, time.perf_counter())

    def get_input_types(self) -> list[dict[str, Any]]:
        types = {"numeric": "FP64", "boolean": "BOOL"}
        assert self.version is not None
        return [{"name": f.name, "datatype": types.get(f.kind, "BYTES"), "shape": [-1]}
                for f in self.version.schema.features]

    def get_output_types(self) -> list[dict[str, Any]]:
        assert self.version is not None
        if self.version.task == "regression":
            return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        return [{"name": "prediction", "datatype": "BYTES", "shape": [-1]}] + [
            {"name": f"proba_{c}", "datatype": "FP64", "shape": [-1]} for c in self._class_names
        ]


# --- the HTTP edge --------------------------------------------------------------------------


def install(app: Any, model: KubeloopModel, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
            offload_bytes: int = OFFLOAD_BYTES) -> None:
    """Add the 400 handlers and the request middleware to KServe's FastAPI app (before
    the server starts: Starlette fixes both when it builds its middleware stack)."""
    import orjson
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import Response

    def json_400(body: dict[str, Any]) -> Response:
        return Response(orjson.dumps(body), status_code=400, media_type="application/json")

    async def answered(_request: Any, exc: Rejected | Failed) -> Any:
        # The one place a typed error becomes a status code (each class names its own).
        return Response(orjson.dumps(exc.body), status_code=exc.status_code, media_type="application/json")

    async def unreadable(_request: Any, exc: RequestValidationError) -> Any:
        problems = []
        for err in exc.errors()[:20]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {err.get('msg')}")
        message = "invalid request: " + ("; ".join(problems) or "the body does not match the v2 inference request")
        return json_400({"error": message})

    async def http_error(request: Any, exc: HTTPException) -> Any:
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, not JSON)
            return json_400({"error": f"invalid request: {exc.detail}"})
        return await http_exception_handler(request, exc)

    app.add_exception_handler(Rejected, answered)
    app.add_exception_handler(Failed, answered)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, unreadable)
    app.add_middleware(_Edge, model=model, max_body_bytes=max_body_bytes, offload_bytes=offload_bytes)


def _replaying(body: dict[str, Any], then: Any) -> Any:
    """An ASGI ``receive`` that gives the body already read, then defers to ``then``."""
    replayed = False

    async def receive() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return body
        return await then()

    return receive


class _Edge:
    """Pure ASGI middleware on the predict paths: refuses oversized bodies with a 400
    (announced, before reading them; or as soon as the bytes read pass the limit),
    hands a large body's whole request (KServe's decoding and validation, scoring,
    encoding) to a worker thread, and logs and counts 4xx and 5xx answers that
    never reached the model."""

    def __init__(self, app: Any, model: KubeloopModel, max_body_bytes: int, offload_bytes: int = OFFLOAD_BYTES):
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.offload_bytes = offload_bytes
        self.v1 = f"/v1/models/{model.name}:predict"
        self.v2 = (f"/v2/models/{model.name}/infer", f"/v2/models/{model.name}/versions/")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        protocol = "v1" if path == self.v1 else "v2" if path.startswith(self.v2) else None
        if protocol is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = _request_id(headers)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await self._refuse(send, 400, {"error": f"invalid request: the body holds {length} bytes, "
                                                    f"more than {self.max_body_bytes}; split the batch"})
            self.model.reject_unread(request_id, protocol, "too_many_rows")
            return
        # Count the bytes actually read (a chunked body has no content-length, and a
        # client may send more than it announced): at most max_body_bytes are held.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send, 400, {"error": f"invalid request: the body holds more than "
                                                        f"{self.max_body_bytes} bytes; split the batch"})
                self.model.reject_unread(request_id, protocol, "too_many_rows")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        chunks = []
        replay = _replaying(body, receive)
        state: dict[str, Any] = {"handled": False, "status": None, "offloaded": size > self.offload_bytes}
        token = _request_state.set(state)

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            if state["offloaded"]:
                await self._offloaded(scope, body, capture)
            else:
                await self.app(scope, replay, capture)
        except Exception:
            # Starlette's outermost handler answers it 500; the log still gets the row.
            if not state["handled"] and self.model.version is not None:
                self.model.fail_unread(request_id, protocol)
            raise
        finally:
            _request_state.reset(token)
        if state["handled"] or state["status"] is None or self.model.version is None:
            return
        if 400 <= state["status"] < 500:
            self.model.reject_unread(request_id, protocol, INVALID_INPUT)
        elif state["status"] >= 500:
            self.model.fail_unread(request_id, protocol)

    async def _offloaded(self, scope: dict[str, Any], body: dict[str, Any], send: Any) -> None:
        """The rest of the app for this request, on a worker thread with an event loop
        of its own, so that KServe's synchronous decoding (``orjson.loads`` of a v1
        body; FastAPI's ``json.loads`` and the pydantic model of a v2 one), the
        scoring and the encoding of the answer leave the server's loop free. The
        body is already read; the answer's messages are collected there and sent
        from here, since the server's ``send`` belongs to this loop."""
        sent: list[dict[str, Any]] = []

        async def disconnected() -> dict[str, Any]:
            return {"type": "http.disconnect"}  # nothing more will come from over there

        async def collect(message: dict[str, Any]) -> None:
            sent.append(message)

        # The request's context (the state above) goes along.
        call = self.app(scope, _replaying(body, disconnected), collect)
        run = functools.partial(contextvars.copy_context().run, asyncio.run, call)
        await asyncio.get_running_loop().run_in_executor(_pool("request", OFFLOAD_THREADS), run)
        for message in sent:
            await send(message)

    @staticmethod
    async def _refuse(send: Any, status: int, body: dict[str, Any]) -> None:
        import orjson

        payload = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
