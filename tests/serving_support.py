"""Real models for the serving tests, trained by kubeloop's own stage functions.

``trained(family, task)`` runs ingest, schema inference, split, features and the
family's training (one setting, no search) on a small generated table, once per
test session, and keeps the test split. ``registry_with(...)`` stores such models
as complete registry versions, the way ``kubeloop run`` does, so serving loads
them exactly as it would load a pipeline's output.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from kubeloop.components.features import fit_features
from kubeloop.components.ingest import ingest
from kubeloop.components.register import predictor_metadata
from kubeloop.components.split import split_dataset
from kubeloop.components.train import train_candidate
from kubeloop.components.validate import infer_schema
from kubeloop.config import Config, TrainConfig
from kubeloop.datagen import make_churn, make_house_prices
from kubeloop.registry import Registry
from kubeloop.schema import feature_columns
from kubeloop.storage import sha256_file

MODEL = "churn"
HOUSES = "houses"


@dataclass
class Trained:
    family: str
    task: str
    pipeline: Any
    schema: dict[str, Any]
    test: pd.DataFrame
    model_path: Path
    metadata: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return feature_columns(self.schema)


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="kubeloop-serving-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def trained(family: str, task: str = "classification", rows: int = 700, seed: int = 0) -> Trained:
    root = _workdir() / f"{family}-{task}-{rows}-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    if task == "classification":
        frame, target, time_col = make_churn(rows, seed=seed), "churned", "signup_date"
    else:
        frame, target, time_col = make_house_prices(rows, seed=seed), "price", "listed_at"
    data = root / "data.csv"
    frame.to_csv(data, index=False)
    cfg = Config()
    df, _ = ingest(data)
    schema = infer_schema(df, target=target, time_column=time_col, cfg=cfg.validation)
    splits = split_dataset(df, schema, cfg.split)
    transformer = fit_features(splits.train, schema)
    metric = "roc_auc" if task == "classification" else "rmse"
    train_cfg = TrainConfig(families=[family], search_iterations=1, seed=seed)
    pipeline, _ = train_candidate(family, splits.train, splits.valid, transformer, schema, train_cfg, metric=metric)
    model_dir = root / "model"
    model_dir.mkdir(exist_ok=True)
    model_path = model_dir / "model.joblib"
    joblib.dump(pipeline, model_path)
    meta = predictor_metadata(schema, model_name=MODEL if task == "classification" else HOUSES,
                              sha256=sha256_file(model_path))
    return Trained(family, task, pipeline, schema, splits.test.reset_index(drop=True), model_path, meta)


def register(registry: Registry, model: Trained, *, name: str | None = None, promote: bool = True) -> str:
    """Store ``model`` as the next version of ``name``; move production to it."""
    name = name or model.metadata["model_name"]
    meta = dict(model.metadata, model_name=name)
    info = registry.register(
        name,
        {"model/model.joblib": model.model_path, "model/kubeloop.json": json.dumps(meta, indent=2).encode()},
        metadata={"task": model.task, "family": model.family},
    )
    if promote:
        registry.set_alias(name, "production", info.version, reason="test")
    return info.version


def json_value(value: Any) -> Any:
    """A DataFrame cell as a client would send it in JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def rows_of(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return [{c: json_value(v) for c, v in zip(columns, values, strict=True)}
            for values in frame[columns].itertuples(index=False, name=None)]


# --- a real server process ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_server(args: list[str], *, env: dict[str, str] | None = None, ready_path: str = "/v2/health/ready",
                 timeout: float = 40.0, port_flag: str = "--http_port") -> Server:
    """``python -m ARGS`` (``kubeloop.serving ...`` or ``kubeloop.cli serve ...``) on a free
    port; waits for ``ready_path`` on loopback to answer 200."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="kubeloop-serve-", suffix=".log")[1])
    cmd = [sys.executable, "-m", *args, f"{port_flag}={port}"]
    if args[0] == "kubeloop.serving" and not any(a.startswith("--grpc_port") for a in args):
        cmd.append("--enable_grpc=false")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + ready_path, timeout=1) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not become ready within {timeout:g}s:\n{server.log()}")


def post(url: str, body: bytes | dict | list, *, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
