"""The whole loop on one machine, every part real: ``kubeloop run`` trains and
promotes churn v1; ``kubeloop serve --log-to`` answers KServe v1 requests built
from held-out rows and logs them; ``kubeloop monitor`` reads those logs.

Drifted traffic (two important columns shifted in place, every other column
kept) must run the retraining branch: a challenger trained on the fresh data
reaches the gate and is registered, whatever the gate decides. Undrifted traffic
must start no retraining and leave the registry byte for byte as it was.
``kubeloop drift`` against the production profile must flag exactly the shifted
columns of the logged drifted traffic.

One training run is shared; each traffic case serves and monitors its own copy
of the registry.
"""

from __future__ import annotations

import json
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_cli import (
    MODEL,
    copy_registry,
    run_args,
    run_cli,
    tree_digest,
    write_config,
    write_csv,
)
from serving_support import post, rows_of, start_server

from kubeloop.datagen import make_churn
from kubeloop.registry import Registry
from kubeloop.serving.logs import read_logs

pytestmark = pytest.mark.slow

# A 5000-row training table leaves a 3500-row reference profile. Against it, 2000
# undrifted rows flagged no column in 20 of 20 seeds; 1000 rows against the
# 1400-row reference of a 2000-row table flagged a stable column in 4 of 20
# (normalised Wasserstein just over 0.1 with the KS test rejecting): sampling noise
# of both sides, not drift.
TRAIN_ROWS = 5000
TRAFFIC_ROWS = 2000  # per case
FRESH_ROWS = 1000
ROWS_PER_REQUEST = 100
# Cool-down 0: the production version was registered a minute ago. No labels are
# sent, so none can arrive: drift and the fresh data are the evidence.
MONITORING = """\
monitoring:
  cooldown_hours: 0
  min_labeled_rows: 0
"""
SERVER_START_TIMEOUT = 90.0
STEP_TIMEOUT = 300.0


@dataclass
class Loop:
    root: Path
    registry: Path  # churn v1 in production; never written to
    monitor_config: Path
    fresh: Path
    features: list[str]  # as in model/kubeloop.json, request order
    profiled: list[str]  # the columns the stored monitoring profile compares
    injected: list[str]  # the columns shifted in the drifted traffic
    traffic: dict[str, pd.DataFrame]


def shift(frame: pd.DataFrame, numeric: str, categorical: str, seed: int) -> pd.DataFrame:
    """``frame`` with ``numeric`` moved up by one standard deviation (integers stay
    integers) and half the rows of ``categorical`` moved to its rarest level; no
    other column changes."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    col = out[numeric]
    moved = col + col.std()
    out[numeric] = moved.round() if np.allclose(col.dropna() % 1, 0) else moved
    levels = out[categorical].value_counts()
    rarest = levels.index[-1]
    pick = rng.random(len(out)) < 0.5
    cat = out[categorical].astype(object)
    cat[pick] = rarest
    out[categorical] = cat
    return out


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Loop:
    root = tmp_path_factory.mktemp("loop")
    data = write_csv(make_churn(TRAIN_ROWS, seed=0), root / "train.csv")
    config = write_config(root / "fast.yaml")
    registry = root / "registry"
    proc = run_cli(run_args(data, registry, config), cwd=root, timeout=STEP_TIMEOUT)
    assert proc.returncode == 0, f"training failed:\n{proc.stderr}"
    assert json.loads(proc.stdout)["gate"]["decision"] == "promote"

    reg = Registry(str(registry))
    meta = json.loads(reg.read_bytes(MODEL, "production", "model/kubeloop.json"))
    features = [f["name"] for f in meta["features"]]
    kinds = {f["name"]: f["kind"] for f in meta["features"]}
    profile = reg.read_json(MODEL, "production", "monitoring/profile.json")
    profiled = list(profile["columns"])
    # Shift the model's most important numeric and categorical features, so the
    # retraining policy (drift on a top feature) has a reason to act.
    ranked = sorted(profile["importance"].items(), key=lambda kv: (-kv[1], kv[0]))
    numeric = next(c for c, _ in ranked if kinds.get(c) == "numeric" and c in profiled)
    categorical = next(c for c, _ in ranked if kinds.get(c) == "categorical" and c in profiled)

    held_out = make_churn(TRAFFIC_ROWS, seed=7)
    traffic = {
        "undrifted": held_out,
        "drifted": shift(make_churn(TRAFFIC_ROWS, seed=8), numeric, categorical, seed=8),
    }
    fresh = write_csv(make_churn(FRESH_ROWS, seed=9, drift=1.0), root / "fresh.csv")
    monitor_config = root / "monitor.yaml"
    monitor_config.write_text(MONITORING)
    return Loop(root, registry, monitor_config, fresh, features, profiled, [numeric, categorical], traffic)


@dataclass
class Served:
    registry: Path  # this case's own copy
    logs: Path
    sent: int


def serve_and_send(loop: Loop, case: str, workdir: Path) -> Served:
    """Serve production from a copy of the registry with ``kubeloop serve --log-to``,
    send the case's traffic as v1 requests, stop with SIGTERM (the log flushes)."""
    registry = copy_registry(loop.registry, workdir / "registry")
    logs = workdir / "predictions"
    server = start_server(
        ["kubeloop.cli", "serve", "--model", MODEL, "--registry", str(registry), "--log-to", str(logs)],
        port_flag="--port", timeout=SERVER_START_TIMEOUT,
    )
    frame = loop.traffic[case]
    rows = rows_of(frame, loop.features)
    url = f"{server.url}/v1/models/{MODEL}:predict"
    try:
        for start in range(0, len(rows), ROWS_PER_REQUEST):
            batch = rows[start:start + ROWS_PER_REQUEST]
            rid = f"{case}-{start // ROWS_PER_REQUEST:04d}-{uuid.uuid4().hex[:6]}"
            status, body = post(url, {"instances": batch}, headers={"x-request-id": rid}, timeout=30)
            assert status == 200, body
            assert len(body["predictions"]) == len(batch) and set(body["predictions"]) <= {"no", "yes"}
            assert body["version"] == "v1"
    finally:
        code = server.stop(signal.SIGTERM, timeout=30)
        log = server.log()
        server.log_path.unlink(missing_ok=True)
    assert code == 0, log  # a clean shutdown, which is what flushes the last log batch
    logged = read_logs(logs, MODEL)
    assert len(logged) == len(rows), f"{len(logged)} logged rows for {len(rows)} sent:\n{log[-3000:]}"
    assert (logged["status"] == "ok").all() and (logged["version"] == "v1").all()
    return Served(registry, logs, len(rows))


@pytest.fixture(scope="module")
def served(loop, tmp_path_factory):
    """Per traffic case, made on first use: its registry copy and the logs."""
    made: dict[str, Served] = {}

    def get(case: str) -> Served:
        if case not in made:
            made[case] = serve_and_send(loop, case, tmp_path_factory.mktemp(case))
        return made[case]

    return get


def monitor(loop: Loop, s: Served, cwd: Path) -> tuple[dict, str]:
    proc = run_cli(
        ["monitor", "--model", MODEL, "--logs", str(s.logs), "--retrain-data", str(loop.fresh),
         "--registry", str(s.registry), "--config", str(loop.monitor_config),
         "--work-dir", str(cwd / "work"), "--report-dir", str(cwd / "report"), "--json"],
        cwd=cwd, timeout=STEP_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def registry_listing(registry: Path, cwd: Path) -> str:
    """What ``kubeloop registry list churn --json`` prints, byte for byte."""
    proc = run_cli(["registry", "list", MODEL, "--registry", str(registry), "--json"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_drifted_traffic_runs_the_retraining_branch_to_the_gate(loop, served, tmp_path):
    s = served("drifted")
    before = [v.version for v in Registry(str(s.registry)).list_versions(MODEL)]
    assert before == ["v1"]

    out, stderr = monitor(loop, s, tmp_path)

    verdict = out["verdict"]
    assert verdict["n_current"] == s.sent
    assert sorted(verdict["drifted_columns"]) == sorted(loop.injected), verdict
    assert out["retrain"] is True and out["retrained"] is True, stderr
    assert any("drift" in r for r in verdict["reasons"]), verdict["reasons"]
    assert verdict["blocked_by"] == []
    # the challenger went through the whole training pipeline up to the gate
    stages = out["training"]["stages"]
    assert {"ingest", "validate", "train linear", "evaluate", "gate", "register"} <= set(stages), stages
    assert stages.index("gate") < stages.index("register")
    after = Registry(str(s.registry)).list_versions(MODEL)
    assert [v.version for v in after] == ["v1", "v2"]
    gate = (after[-1].metadata or {}).get("gate") or {}
    assert gate.get("decision") in ("promote", "reject"), after[-1].metadata
    assert Path(out["report"]).is_file()


def test_undrifted_traffic_starts_no_retraining(loop, served, tmp_path):
    s = served("undrifted")
    before = tree_digest(s.registry)
    listing = registry_listing(s.registry, tmp_path)

    out, stderr = monitor(loop, s, tmp_path)

    verdict = out["verdict"]
    assert verdict["n_current"] == s.sent
    assert verdict["drifted_columns"] == [], verdict
    assert verdict["reasons"] == [], verdict
    assert out["retrain"] is False and out["retrained"] is False, stderr
    assert out["training"]["stages"] == []
    assert registry_listing(s.registry, tmp_path) == listing
    assert tree_digest(s.registry) == before
    assert Path(out["report"]).is_file()


@pytest.mark.parametrize("case", ["drifted", "undrifted"])
def test_drift_command_flags_exactly_the_injected_columns(loop, served, tmp_path, case):
    s = served(case)
    before = tree_digest(loop.registry)
    proc = run_cli(
        ["drift", "--reference", f"model:{MODEL}@production", "--current", str(s.logs),
         "--registry", str(loop.registry), "--json"],
        cwd=tmp_path, timeout=STEP_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    expected = sorted(loop.injected) if case == "drifted" else []
    assert sorted(report["drifted_columns"]) == expected, proc.stderr
    # every profiled column was compared, and each record agrees with the list
    assert set(loop.profiled) <= set(report["columns"])
    flagged = sorted(c for c, r in report["columns"].items() if r.get("drifted"))
    assert flagged == expected
    assert tree_digest(loop.registry) == before
