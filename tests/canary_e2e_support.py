"""Pieces of the local canary end-to-end test: versions that are bad the way real
versions go bad, a traffic harness that splits requests between two predictor
processes, and a labels file in the contract's shape.

Models come from kubeloop's own stage functions (as in ``serving_support``),
fitted on a changed copy of the churn table: labels swapped ("yes" and "no"
exchanged upstream, a model that predicts the opposite of the truth), labels
shuffled (a model that has learnt nothing), or one feature left out (a version
whose request schema no longer accepts what clients send), or wrapped so that
its head raises on a share of the rows it scores (a version that fails in
production: ``failing``).
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from serving_support import Server, Trained, _die_with_parent, _workdir, free_port, rows_of

from kubeloop.components.features import fit_features
from kubeloop.components.ingest import ingest
from kubeloop.components.register import predictor_metadata
from kubeloop.components.split import split_dataset
from kubeloop.components.train import train_candidate
from kubeloop.components.validate import infer_schema
from kubeloop.config import Config, TrainConfig
from kubeloop.datagen import make_churn
from kubeloop.storage import sha256_file

MODEL = "churn"
TARGET = "churned"
TIME_COLUMN = "signup_date"


@functools.cache
def variant(family: str, *, rows: int, seed: int = 0, labels: str = "true", drop: str | None = None) -> Trained:
    """A churn model fitted on ``make_churn(rows, seed)`` with its ``labels`` "true",
    "swapped" (yes <-> no) or "shuffled", and without the column ``drop``; one
    setting, no search."""
    root = _workdir() / f"variant-{family}-{rows}-{seed}-{labels}-{drop or 'all'}"
    root.mkdir(parents=True, exist_ok=True)
    frame = make_churn(rows, seed=seed)
    if labels == "swapped":
        frame[TARGET] = frame[TARGET].map({"yes": "no", "no": "yes"})
    elif labels == "shuffled":
        frame[TARGET] = np.random.default_rng(seed + 1).permutation(frame[TARGET].to_numpy())
    elif labels != "true":
        raise ValueError(f"labels must be true, swapped or shuffled, got {labels!r}")
    if drop:
        frame = frame.drop(columns=[drop])
    data = root / "data.csv"
    frame.to_csv(data, index=False)
    cfg = Config()
    df, _ = ingest(data)
    schema = infer_schema(df, target=TARGET, time_column=TIME_COLUMN, cfg=cfg.validation)
    splits = split_dataset(df, schema, cfg.split)
    transformer = fit_features(splits.train, schema)
    train_cfg = TrainConfig(families=[family], search_iterations=1, seed=seed)
    pipeline, _ = train_candidate(family, splits.train, splits.valid, transformer, schema, train_cfg,
                                  metric="roc_auc")
    model_dir = root / "model"
    model_dir.mkdir(exist_ok=True)
    model_path = model_dir / "model.joblib"
    joblib.dump(pipeline, model_path)
    meta = predictor_metadata(schema, model_name=MODEL, sha256=sha256_file(model_path))
    return Trained(family, "classification", pipeline, schema, splits.test.reset_index(drop=True),
                   model_path, meta)


class FailsOnSomeRows:
    """A classifier head that raises on a share of the rows it scores, decided by a
    checksum of each row's features (the same row always fails, in any process), and
    otherwise answers as the head it wraps. Pickled by reference to this module: a
    server process needs this directory on its PYTHONPATH."""

    def __init__(self, head: Any, share: float):
        self.head, self.share = head, share
        self.classes_ = head.classes_

    def _fails(self, x: Any) -> bool:
        values = np.round(np.asarray(x, dtype=np.float64), 6)
        return any(zlib.crc32(row.tobytes()) % 1000 < self.share * 1000 for row in values)

    def predict_proba(self, x: Any) -> Any:
        if self._fails(x):
            raise RuntimeError("the model cannot score this row")
        return self.head.predict_proba(x)

    def predict(self, x: Any) -> Any:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


def failing(base: Trained, share: float) -> Trained:
    """``base`` with its head wrapped in ``FailsOnSomeRows(share)``: stored and hashed
    like any trained model, so the registry and the predictor load it normally."""
    import copy

    root = _workdir() / f"failing-{base.family}-{share:g}-{id(base)}"
    (root / "model").mkdir(parents=True, exist_ok=True)
    pipeline = copy.deepcopy(base.pipeline)
    pipeline.steps[-1] = ("model", FailsOnSomeRows(pipeline.steps[-1][1], share))
    model_path = root / "model" / "model.joblib"
    joblib.dump(pipeline, model_path)
    meta = dict(base.metadata, sha256=sha256_file(model_path))
    return Trained(base.family, base.task, pipeline, base.schema, base.test, model_path, meta)


# --------------------------------------------------------------------------- servers


def start_servers(specs: dict[str, dict[str, Any]], servers: dict[str, Server], *,
                  timeout: float = 60.0) -> dict[str, Server]:
    """Start one ``python -m kubeloop.serving`` per spec (``args``, ``env``) at once and
    wait until each answers ready on loopback. Servers go into ``servers`` as soon as
    they exist, so the caller's cleanup finds every one, even after a failure here."""
    for key, spec in specs.items():
        port = free_port()
        log_path = Path(tempfile.mkstemp(prefix="kubeloop-serve-", suffix=".log")[1])
        cmd = [sys.executable, "-m", *spec["args"], f"--http_port={port}", "--enable_grpc=false"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **spec.get("env", {})}, preexec_fn=_die_with_parent)
        servers[key] = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    waiting = dict(servers)
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"servers {sorted(waiting)} not ready within {timeout:g}s:\n"
                               + "\n".join(s.log()[-2000:] for s in waiting.values()))
        for key, server in list(waiting.items()):
            if server.process.poll() is not None:
                raise RuntimeError(f"server {key} exited with {server.process.returncode}:\n{server.log()}")
            try:
                with urllib.request.urlopen(server.url + "/v2/health/ready", timeout=1) as resp:
                    if resp.status == 200:
                        del waiting[key]
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
        time.sleep(0.1)
    return servers


def stop_servers(servers: dict[str, Server], *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> dict[str, int]:
    """Signal every server at once, then wait for each (SIGKILL after ``timeout``)."""
    for server in servers.values():
        if server.process.poll() is None:
            server.process.send_signal(sig)
    deadline = time.monotonic() + timeout
    for server in servers.values():
        try:
            # Wait without signalling again: a second SIGTERM cuts a graceful shutdown short.
            server.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
    return {key: server.process.returncode for key, server in servers.items()}


# --------------------------------------------------------------------------- traffic


class Client:
    """One kept-alive connection to one predictor process."""

    def __init__(self, url: str, timeout: float = 10.0):
        host, port = url.removeprefix("http://").split(":")
        self._addr = (host, int(port))
        self._timeout = timeout
        self._conn = http.client.HTTPConnection(*self._addr, timeout=timeout)

    def predict(self, rows: list[dict[str, Any]], request_id: str) -> tuple[int, Any]:
        body = json.dumps({"instances": rows}).encode()
        headers = {"Content-Type": "application/json", "x-request-id": request_id}
        for attempt in range(2):
            try:
                self._conn.request("POST", f"/v1/models/{MODEL}:predict", body=body, headers=headers)
                resp = self._conn.getresponse()
                payload = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # A server may close a kept-alive connection after a 400: reconnect once.
                self._conn.close()
                self._conn = http.client.HTTPConnection(*self._addr, timeout=self._timeout)
                if attempt:
                    raise
        try:
            return resp.status, json.loads(payload)
        except ValueError:
            return resp.status, payload.decode(errors="replace")

    def close(self) -> None:
        self._conn.close()


@dataclass
class Sent:
    """What the harness sent: per request, which side got it and what came back."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def rows_to(self, side: str) -> int:
        return sum(len(r["rows"]) for r in self.requests if r["side"] == side)

    def statuses(self, side: str) -> list[int]:
        return [r["status"] for r in self.requests if r["side"] == side]


def split_traffic(primary: Client, canary: Client, pool: pd.DataFrame, features: list[str], *,
                  requests: int, rows_per_request: int, canary_share: float, seed: int,
                  sent: Sent | None = None,
                  on_answer: Callable[[str, int, Any], None] | None = None) -> Sent:
    """Send ``requests`` v1 requests of ``rows_per_request`` rows drawn from ``pool``
    (held-out rows, with their index kept for the labels); each goes to the canary
    with probability ``canary_share`` (a seeded draw per request), else to the primary,
    the way a weighted router splits traffic."""
    rng = np.random.default_rng(seed)
    sent = sent or Sent()
    for _ in range(requests):
        picks = rng.choice(len(pool), size=rows_per_request, replace=False)
        side = "canary" if rng.random() < canary_share else "primary"
        rid = uuid.uuid4().hex
        frame = pool.iloc[picks]
        status, body = (canary if side == "canary" else primary).predict(rows_of(frame, features), rid)
        sent.requests.append({"request_id": rid, "side": side, "rows": list(frame.index), "status": status})
        if on_answer is not None:
            on_answer(side, status, body)
    return sent


def write_labels(path: Path, sent: Sent, truth: pd.Series, *, delay: dt.timedelta = dt.timedelta(days=1)) -> Path:
    """Ground truth for every row sent, as the contract's CSV: request_id, row, label,
    labeled_at (``row`` is the index within the request; ``truth`` is indexed like the pool)."""
    labeled_at = (dt.datetime.now(dt.timezone.utc) + delay).isoformat()
    records = [{"request_id": r["request_id"], "row": i, "label": str(truth.loc[idx]), "labeled_at": labeled_at}
               for r in sent.requests for i, idx in enumerate(r["rows"])]
    pd.DataFrame(records, columns=["request_id", "row", "label", "labeled_at"]).to_csv(path, index=False)
    return path
