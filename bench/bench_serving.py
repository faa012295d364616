"""Serving latency: kubeloop's predictor against a stock KServe model, one row per request.

Both servers serve the same scikit-learn pipeline, trained by kubeloop's own stages
on generated churn data (``kubeloop.datagen``):

- **kubeloop**: ``python -m kubeloop.serving`` on the registered version, with
  request validation and the prediction log on (Parquet files in a temporary
  directory);
- **stock**: a ``kserve.Model`` that ``joblib.load``s the same ``model.joblib`` and
  answers ``pipeline.predict_proba(pd.DataFrame(instances))``; KServe's per-request
  latency log line is off on both, so the difference is the model work.

The client sends one-row v1 requests over loopback, alternating one by one
between the two servers (so both see the same machine load), on kept-alive
connections, and reports p50 and p99 of the client-side latency and their ratios.

    python bench/bench_serving.py [--requests 2000] [--family hist_gradient_boosting]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the stock server ------------------------------------------------------------------------


def stock_server(model_dir: str, name: str, port: int) -> None:
    import joblib
    import kserve
    import pandas as pd

    class StockModel(kserve.Model):
        def load(self) -> bool:
            self.pipeline = joblib.load(os.path.join(model_dir, "model.joblib"))
            self.ready = True
            return True

        def predict(self, payload, headers=None):
            frame = pd.DataFrame(payload["instances"])
            return {"predictions": self.pipeline.predict_proba(frame).tolist()}

    model = StockModel(name)
    model.load()
    kserve.ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False).start([model])


# --- setup ------------------------------------------------------------------------------------


def _train(work: Path, family: str, rows: int) -> tuple[str, list[dict]]:
    """Train with kubeloop's stage functions, register; returns (model/ URI, request rows)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_support import register, rows_of, trained

    from kubeloop.registry import Registry

    model = trained(family, "classification", rows=rows, seed=1)
    registry = Registry(work / "registry")
    version = register(registry, model)
    return registry.model_uri(model.metadata["model_name"], version), rows_of(model.test, model.features)


def _start(cmd: list[str], port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--family", default="hist_gradient_boosting")
    ap.add_argument("--rows", type=int, default=3000, help="rows of generated training data")
    ap.add_argument("--stock-server", nargs=3, metavar=("MODEL_DIR", "NAME", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stock_server:
        stock_server(args.stock_server[0], args.stock_server[1], int(args.stock_server[2]))
        return 0

    work = Path(tempfile.mkdtemp(prefix="kubeloop-bench-serving-"))
    print(f"training {args.family} on {args.rows} generated rows ...", file=sys.stderr, flush=True)
    model_uri, rows = _train(work, args.family, args.rows)
    ours_port, stock_port = _free_port(), _free_port()
    procs = []
    try:
        procs.append(_start(
            [sys.executable, "-m", "kubeloop.serving", "--model_name=churn", f"--model_dir={model_uri}",
             f"--http_port={ours_port}", "--enable_grpc=false"],
            ours_port, work / "kubeloop.log", {"KUBELOOP_LOG_URI": str(work / "logs")}))
        procs.append(_start(
            [sys.executable, __file__, "--stock-server", model_uri, "churn", str(stock_port)],
            stock_port, work / "stock.log", {}))
        conns = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                 for name, port in (("kubeloop", ours_port), ("stock", stock_port))}
        bodies = [json.dumps({"instances": [r]}).encode() for r in rows]
        times: dict[str, list[float]] = {"kubeloop": [], "stock": []}
        headers = {"Content-Type": "application/json"}
        total = args.warmup + args.requests
        for i in range(total):
            body = bodies[i % len(bodies)]
            order = ("kubeloop", "stock") if i % 2 == 0 else ("stock", "kubeloop")
            for name in order:
                conn = conns[name]
                t0 = time.perf_counter()
                conn.request("POST", "/v1/models/churn:predict", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                elapsed = time.perf_counter() - t0
                if resp.status != 200:
                    raise SystemExit(f"{name} answered {resp.status}: {payload[:300]!r}")
                if i >= args.warmup:
                    times[name].append(elapsed * 1000)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(work, ignore_errors=True)
    stats = {name: {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                    "mean_ms": float(np.mean(t))} for name, t in times.items()}
    ratio = {k: stats["kubeloop"][k] / stats["stock"][k] for k in ("p50_ms", "p99_ms")}
    print(f"\none-row v1 requests over loopback, {args.requests} per server, alternated; model: {args.family}")
    print(f"{'':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name in ("stock", "kubeloop"):
        s = stats[name]
        print(f"{name:<10} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['mean_ms']:>8.2f}")
    print(f"{'ratio':<10} {ratio['p50_ms']:>7.2f}x {ratio['p99_ms']:>7.2f}x   (kubeloop / stock; target <= 0.5x)")
    print(json.dumps({"family": args.family, "requests": args.requests, "stats": stats, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
