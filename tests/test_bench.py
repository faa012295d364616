"""Every benchmark runs at a tiny size, so a change to the code they call cannot
leave them broken until the next time someone measures.

These are smoke tests: the script completes and prints its ratios. The figures
themselves are never asserted (speed is measured by ``make bench``, not by tests),
and at these sizes a benchmark may well miss its own targets, which only sets its
exit status to 1; a crash (a traceback, or a side that failed) is what fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, timeout: float = 900, env: dict | None = None):
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def test_bench_overhead_runs_both_sides_quiet_and_busy_and_prints_its_ratios(tmp_path):
    proc = run_bench("bench_overhead.py", "--rows", "3000", "--columns", "6", "--busy",
                     "--keep", str(tmp_path))
    out = proc.stdout
    # Exit 1 only for a missed target (printed as such), never for a failed side.
    assert proc.returncode == 0 or "FAIL: a target was missed" in out, proc.stderr[-3000:]
    for line in ("plain script:", "kubeloop run:", "time   kubeloop / plain",
                 "memory kubeloop (peak - floor) / data", "thread budget:",
                 "time   kubeloop / plain beside a busy process"):
        assert line in out
    # Every side registered a model from the same data.
    for name in ("registry-plain", "registry-kubeloop", "busy-registry-plain",
                 "busy-registry-kubeloop"):
        assert (tmp_path / name / "wide").is_dir(), name


def test_bench_gate_prints_its_ratios():
    proc = run_bench("bench_gate.py", "--rows", "2000", "--replicates", "200",
                     "--fingerprint-rows", "20000", "--large-rows", "30000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x" in proc.stdout and proc.stdout.strip()


def test_bench_storage_round_trips_small_objects():
    proc = run_bench("bench_storage.py", "--sizes", "1,2")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "peak RSS growth" in proc.stdout and "vs boto3 defaults" in proc.stdout


def test_bench_serving_prints_its_latency_ratio():
    proc = run_bench("bench_serving.py", "--requests", "30", "--warmup", "5", "--rows", "600")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["ratio"]) == {"p50_ms", "p99_ms"}


def _has_evidently(python: str) -> bool:
    return subprocess.run([python, "-c", "import evidently"], capture_output=True).returncode == 0


def test_bench_drift_runs_the_kubeloop_side(tmp_path, capsys):
    python = os.environ.get("EVIDENTLY_PYTHON", sys.executable)
    args = ["--rows", "5000", "--big-rows", "20000", "--dir", str(tmp_path)]
    if not _has_evidently(python):
        # Evidently lives in its own venv (make bench-drift makes it): compared there.
        with capsys.disabled():
            print("\nbench_drift: Evidently is not installed here; only the kubeloop side runs")
        args.append("--skip-evidently")
    proc = run_bench("bench_drift.py", *args)
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert "kubeloop" in result and "big" in result, proc.stderr[-3000:]
    assert result["kubeloop"]["flagged"] is not None
    if "--skip-evidently" not in args:
        assert "speedup" in result


def test_bench_engines_runs_the_pyarrow_side(tmp_path):
    # DuckDB and Polars live in .venv-bench only; pyarrow is a dependency.
    proc = run_bench("bench_engines.py", "--rows", "20000", "--engines", "pyarrow",
                     "--dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert [(r["engine"], r["job"]) for r in results] == [("pyarrow", "csv"), ("pyarrow", "stats")]
    assert results[0]["answer"] == {"rows": 20000}
    assert results[1]["answer"]["columns"] == 20 and results[1]["answer"]["s0_levels"] == 50


def test_bench_scale_runs_each_size_from_disk_and_s3_under_a_cap_and_prints_its_targets(tmp_path, capsys):
    results = tmp_path / "results.json"
    proc = run_bench("bench_scale.py", "--sizes", "2000,4000", "--dir", str(tmp_path), "--json", str(results))
    out = proc.stdout
    with capsys.disabled():
        print("\n" + out[out.index("import floor"):])
    assert proc.returncode == 0 or "FAIL: a target was missed" in out, proc.stderr[-3000:]
    saved = json.loads(results.read_text())
    assert [(r["rows"], r["storage"]) for r in saved["runs"]] == [
        (2000, "local"), (2000, "s3"), (4000, "local"), (4000, "s3")]
    for run in saved["runs"]:
        assert run["status"] == "ok", run["message"]
        assert 0.5 < run["value"] <= 1, run
        stages = [s["stage"] for s in run["steps"]]
        assert {"ingest", "validate", "evaluate", "register"} <= set(stages), stages
        assert all(s["wall_s"] > 0 and s["peak_rss_mib"] > 0 for s in run["steps"])
    for line in ("[local] time 4k / 2k", "[s3] time 4k / 2k", "[local] memory at 2k", "under the cap"):
        assert line in out
    # The tables are kept; the Parquet files are reused by a second run.
    assert (tmp_path / "scale-4k.parquet").is_file()


def test_bench_scale_reports_a_step_killed_by_its_cap_instead_of_crashing(tmp_path):
    # 0.3 GiB is less than a step that imports scikit-learn and pandas needs beside the
    # process driving the run: some step must be killed by the cap, or (a step that
    # sizes its work to the limit, as training does) refuse at once, and the bench
    # must say which and how. Which one happens first depends on the machine.
    proc = run_bench("bench_scale.py", "--sizes", "2000", "--storage", "local", "--cap-gib", "0.3",
                     "--dir", str(tmp_path), "--json", str(tmp_path / "results.json"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    if run["message"].endswith("cap not enforced: no cgroup v1 memory controller here"):
        pytest.skip(run["message"])
    assert run["status"] in ("killed", "refused"), run
    assert run["failed_task"] and f"in task '{run['failed_task']}' at 2k rows" in run["message"]
    if run["status"] == "killed":
        assert run["oom_kills"] >= 1, run
        assert "KILLED by the cap" in proc.stdout and "MISSED: killed by the 0.3 GiB cap" in proc.stdout
    else:
        assert "raise resources.train.memory_limit" in run["message"], run
        assert "REFUSED for memory" in proc.stdout and "MISSED: refused for memory" in proc.stdout


def test_a_step_refusing_its_memory_limit_is_read_from_the_log(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from bench_scale import memory_refusal

    said = ('    [kubeloop:error] {"stage": "baseline", "error": "MemoryLimitError", "message": '
            '"the training sample cannot fit; raise resources.train.memory_limit"}\n')
    assert memory_refusal("noise\n" + said) == "the training sample cannot fit; raise resources.train.memory_limit"
    assert memory_refusal(said.replace("MemoryLimitError", "DataError")) is None
    assert memory_refusal("[kubeloop:error] {not json}") is None


def test_bench_train_memory_prints_each_familys_ratio():
    proc = run_bench("bench_train_memory.py", "--rows", "20000", "--columns", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for family in ("linear", "hist_gradient_boosting", "stock_hist_gradient_boosting", "random_forest"):
        assert family in proc.stdout
