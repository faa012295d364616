"""Shadow scoring: a second version scores every request, nobody sees its answers.

KServe has no shadow traffic of its own, and a service mesh is a lot to install
for it. The predictor hands each request's rows to ``Shadow.submit`` after it has
answered from its own computation; one background thread validates them against
the shadow version's own schema, scores them and writes them to the prediction
log with ``role="shadow"`` under the same ``request_id``. The queue is bounded: a
shadow that cannot keep up skips requests (counted), it never slows the primary.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from typing import Any

from kubeloop.serving import metrics
from kubeloop.serving.loader import LoadedVersion
from kubeloop.serving.logs import Entry, PredictionLog
from kubeloop.serving.schema import RequestRejected, validate

log = logging.getLogger("kubeloop.serving")

SHADOW = "shadow"
DEFAULT_QUEUE_REQUESTS = 1_000


def score(version: LoadedVersion, rows: list[dict[str, Any]]) -> tuple[list[str], list[Any] | None, Any]:
    """``(statuses, predictions, proba)`` of ``version`` on ``rows`` (rejections as statuses)."""
    try:
        checked = validate(rows, version.schema)
    except RequestRejected as exc:
        reasons = exc.row_reasons()
        return [reasons.get(i, "rejected_with_request") for i in range(len(rows))], None, None
    index, proba = version.compiled.predict(checked.rows)
    if version.task == "classification":
        classes = version.compiled.classes
        return ["ok"] * len(rows), [classes[i] for i in index], proba
    return ["ok"] * len(rows), list(index), None


class Shadow:
    def __init__(self, version: LoadedVersion, model: str, plog: PredictionLog | None,
                 *, max_queue: int = DEFAULT_QUEUE_REQUESTS):
        self.version = version
        self.model = model
        self.log = plog
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._dropped = metrics.SHADOW_DROPPED.labels(model)
        self._rows = metrics.ROWS.labels(model, version.version, SHADOW)
        self._thread = threading.Thread(target=self._run, name="kubeloop-shadow", daemon=True)
        self._thread.start()

    def submit(self, request_id: str, when: datetime, rows: list[dict[str, Any]]) -> bool:
        try:
            self._queue.put_nowait((request_id, when, rows))
            return True
        except queue.Full:
            self._dropped.inc()
            return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request_id, when, rows = item
            t0 = time.perf_counter()
            try:
                statuses, predictions, proba = score(self.version, rows)
            except Exception:  # noqa: BLE001 - a broken shadow must not stop the predictor
                log.exception("shadow %s failed on request %s", self.version.version, request_id)
                continue
            latency = (time.perf_counter() - t0) * 1000
            if predictions is not None:
                self._rows.inc(len(rows))
            if self.log is not None:
                self.log.record(Entry(request_id, when, self.version.version, SHADOW, rows, statuses,
                                      latency, predictions, proba))

    def close(self, timeout: float = 10.0) -> None:
        """Score what is queued, then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
