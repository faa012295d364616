"""``make demo`` end to end, once, on small data: train, serve, shadow, drifted
traffic, drift, monitor and the retraining branch, as real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

ROWS_PER_REQUEST = 4
REQUESTS = 50
# The columns kubeloop.datagen's drift moves (data usage follows the move to mobile),
# and some it leaves alone.
DRIFTING = {"age", "monthly_charges", "total_charges", "support_calls", "contract", "device", "data_usage_gb"}
STABLE = {"region", "plan", "payment_method", "paperless_billing", "num_products", "tenure_months"}


@pytest.mark.slow
def test_demo_runs_the_whole_loop(tmp_path):
    root = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop.demo", "--dir", str(root), "--rows", "1000",
         "--requests", str(REQUESTS), "--rows-per-request", str(ROWS_PER_REQUEST), "--json"],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # stdout holds the JSON summary and nothing else
    summary = json.loads(lines[0])
    steps = summary["steps"]
    sent = REQUESTS * ROWS_PER_REQUEST

    # 1. The first model beats the baseline and becomes production.
    train = steps["train"]
    assert (train["version"], train["decision"], train["production"]) == ("v1", "promote", "v1")

    # 2. Production answered every request; the bad one got a 400 naming each problem.
    serve = steps["serve"]
    assert serve["versions"] == ["v1"] and (serve["requests"], serve["rows"]) == (REQUESTS, sent)
    assert serve["rejected_status"] == 400
    assert set(serve["rejected_reasons"]) == {"unknown_field", "wrong_type", "missing_field"}

    # 3. The challenger reached the gate, whose interval holds its estimate, and it
    # scored every request of the shadow round next to v1.
    retrain = steps["retrain"]
    assert retrain["version"] == "v2" and retrain["decision"] in {"promote", "reject"}
    assert retrain["low"] <= retrain["estimate"] <= retrain["high"]
    assert retrain["production"] == ("v2" if retrain["decision"] == "promote" else "v1")
    assert retrain["shadow"]["rows"] == sent and 0 <= retrain["shadow"]["agreement"] <= 1

    # 4. The drifted customers went to whatever production was then.
    drifted = steps["drifted_traffic"]
    assert drifted["versions"] == [retrain["production"]] and drifted["rows"] == sent

    # 5. Drift found in the columns the generator moved, none of the stable ones; the
    # policy retrained and a third version reached the gate.
    flagged = set(steps["drift"]["drifted_columns"])
    assert flagged and flagged <= DRIFTING and not flagged & STABLE
    mon = steps["monitor"]
    assert mon["retrain"] and mon["retrained"]
    assert mon["version"] == "v3" and mon["decision"] in {"promote", "reject"}
    assert summary["production_version"] == ("v3" if mon["decision"] == "promote" else retrain["production"])
    assert (root / "drift.html").read_text().lstrip().lower().startswith("<!doctype html")

    # The prediction log holds every answered row (SIGTERM flushed each server's last
    # batch), and the shadow's answers share the served answers' request ids.
    from kubeloop.serving.logs import read_logs

    log = read_logs(root / "logs", "churn")
    ok = log[log["status"] == "ok"]
    served = ok[ok["role"] != "shadow"]
    shadow = ok[ok["role"] == "shadow"]
    assert len(served) == 1 + 3 * sent  # the curl example and three rounds of traffic
    assert (shadow["version"] == "v2").all() and len(shadow) == sent
    assert set(shadow["request_id"]) <= set(served[served["version"] == "v1"]["request_id"])
    assert (log["status"] != "ok").any()  # the rejected request is logged too

    # No server is left behind: its port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", serve["port"])) != 0


def test_demo_refuses_a_directory_with_an_earlier_demo(tmp_path, capsys):
    from kubeloop.demo import main

    (tmp_path / "registry" / "churn").mkdir(parents=True)
    assert main(["--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "earlier demo" in err and str(tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry"]  # nothing written
