"""Drift benchmark: `kubeloop drift` against Evidently's DataDriftPreset.

Both run as whole processes (imports, reading the files, computing, printing) on
the same 1M-row x 20-column reference and current Parquet files (10 numeric, 10
categorical columns; drift injected in six known columns). Reported: wall time
of each and their ratio, peak memory, and whether each flagged exactly the
injected columns. Then `kubeloop drift` alone on a 10M-row current file, whose
peak memory must stay under 1 GB (it reads in batches; Evidently needs the whole
table in pandas and is not run there).

    make bench-drift                     # needs the bench extra: pip install -e '.[bench]'
    python bench/bench_drift.py --rows 200000 --big-rows 0   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUMERIC = [f"n{i}" for i in range(10)]
CATEGORICAL = [f"c{i}" for i in range(10)]
DRIFTED = {"n2", "n5", "n8", "c3", "c6", "c9"}


def _levels(i: int) -> list[str]:
    return [f"L{i}_{j}" for j in range(3 + 3 * i)]


def make_table(n: int, seed: int, drift: bool) -> pa.Table:
    """Ten numeric columns of different shapes, ten categorical of 3 to 30 levels;
    with ``drift``: n2 mean +0.5 sd, n5 spread x1.6, n8 a fifth of rows moved 3 sd,
    c3 its two commonest levels swapped, c6 an unseen level on 10 % of rows,
    c9 a rare level grown to a fifth."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    for i, name in enumerate(NUMERIC):
        kind = i % 4
        if kind == 0:
            x = rng.normal(i, 1 + i / 5, n)
        elif kind == 1:
            x = rng.lognormal(0, 0.6, n)
        elif kind == 2:
            x = rng.integers(0, 50, n).astype(np.float64)
        else:
            x = rng.gamma(2 + i / 3, 1.0, n)
        if drift and name == "n2":
            x = x + 0.5 * x.std()
        if drift and name == "n5":
            x = x.mean() + (x - x.mean()) * 1.6
        if drift and name == "n8":
            moved = rng.random(n) < 0.2
            x = np.where(moved, x + 3 * x.std(), x)
        x[rng.random(n) < 0.01] = np.nan
        cols[name] = pa.array(x, from_pandas=True)
    for i, name in enumerate(CATEGORICAL):
        levels = _levels(i)
        p = 1.0 / np.arange(1, len(levels) + 1)
        p /= p.sum()
        if drift and name == "c3":
            p[[0, 1]] = p[[1, 0]]
        if drift and name == "c9":
            p = p * 0.8
            p[-1] += 0.2
        idx = rng.choice(len(levels), n, p=p)
        values = np.array(levels, dtype=object)[idx]
        if drift and name == "c6":
            values[rng.random(n) < 0.10] = "NEW"
        cols[name] = pa.array(values, pa.string())
    return pa.table(cols)


def write_big(path: Path, rows: int, seed: int, chunk: int = 1_000_000) -> None:
    writer = None
    done = 0
    while done < rows:
        t = make_table(min(chunk, rows - done), seed + done, drift=True)
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=256_000)
        done += t.num_rows
    writer.close()


EVIDENTLY = r"""
import json, sys
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
num = [c for c in ref.columns if c.startswith("n")]; cat = [c for c in ref.columns if c.startswith("c")]
dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd),
                                       Dataset.from_pandas(ref, data_definition=dd))
drifted = []
for m in snap.dict()["metrics"]:
    cfg = m.get("config") or {}
    if not cfg.get("type", "").endswith("ValueDrift"):
        continue
    value, threshold, method = m["value"], cfg["threshold"], cfg["method"]
    # p-value tests drift below the threshold, distances at or above it
    hit = value < threshold if "p_value" in method else value >= threshold
    if hit:
        drifted.append(cfg["column"])
print(json.dumps({"drifted_columns": sorted(drifted)}))
"""


# A `kubeloop drift` process up to its first read: the CLI and what drift imports.
START_UP = "import kubeloop.cli, kubeloop.monitoring.drift, scipy.special, pyarrow.parquet"
# The read as drift does it: text columns as Arrow dictionaries.
READ = ("import sys, pyarrow as pa, pyarrow.parquet as pq; [pq.read_table(p, read_dictionary="
        "[f.name for f in pq.read_schema(p) if pa.types.is_string(f.type)]) for p in sys.argv[1:]]")


def start_bare() -> float:
    """Seconds of a bare interpreter with pyarrow.parquet imported (READ's own start-up)."""
    return run_timed([sys.executable, "-c", "import pyarrow.parquet"])[0]


def run_timed(cmd: list[str]) -> tuple[float, float, str, str, int]:
    """(seconds, peak RSS MiB, stdout, stderr, exit code) of one process, its peak
    read from its own rusage (wait4), not the high-water mark of all children."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return seconds, usage.ru_maxrss / 1024, out.read(), err.read(), proc.returncode


def kubeloop_cmd() -> list[str]:
    script = Path(sys.executable).with_name("kubeloop")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kubeloop.cli"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the large current file (0: skip)")
    ap.add_argument("--dir", help="where the data goes (default: a temporary directory)")
    ap.add_argument("--skip-evidently", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="kubeloop-bench-drift-") if not args.dir else None
    root = Path(args.dir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    ref, cur, big = root / "reference.parquet", root / "current.parquet", root / "current-big.parquet"
    print(f"generating {args.rows:,} x 20 reference and current ...", file=sys.stderr)
    pq.write_table(make_table(args.rows, 1, drift=False), ref, row_group_size=256_000)
    pq.write_table(make_table(args.rows, 2, drift=True), cur, row_group_size=256_000)

    results: dict[str, object] = {"rows": args.rows, "columns": 20, "injected": sorted(DRIFTED)}
    # One run each, kubeloop first (the page cache then favours neither: both read the files once before).
    for path in (ref, cur):
        path.read_bytes()
    sec, peak, out, err, code = run_timed(kubeloop_cmd() + ["drift", "--reference", str(ref), "--current", str(cur), "--json"])
    if code != 0:
        print(err, file=sys.stderr)
        return 1
    k_cols = set(json.loads(out)["drifted_columns"])
    results["kubeloop"] = {"seconds": round(sec, 2), "peak_mib": round(peak), "flagged": sorted(k_cols),
                           "exact": k_cols == DRIFTED}
    print(f"kubeloop drift: {sec:.2f} s, peak {peak:.0f} MiB, flagged {sorted(k_cols)}", file=sys.stderr)
    # Where the time goes: the process with its imports and nothing else, and reading
    # both files whole (what any tool must do), each as a process of its own.
    start, _, _, _, _ = run_timed([sys.executable, "-c", START_UP])
    read, _, _, _, _ = run_timed([sys.executable, "-c", READ, str(ref), str(cur)])
    results["kubeloop"]["breakdown_s"] = {"start_up_and_imports": round(start, 2), "parquet_read": round(read - start_bare(), 2),
                                          "statistics_and_rest": round(sec - start - (read - start_bare()), 2)}
    print(f"  of which: start-up and imports {start:.2f} s, reading both files {read - start_bare():.2f} s", file=sys.stderr)

    if not args.skip_evidently:
        script = root / "evidently_drift.py"
        script.write_text(EVIDENTLY)
        # Evidently lives in its own venv (make bench-drift makes it), so its
        # dependencies never change the locked ones kubeloop is tested with.
        python = os.environ.get("EVIDENTLY_PYTHON", sys.executable)
        sec_e, peak_e, out_e, err_e, code_e = run_timed([python, str(script), str(ref), str(cur)])
        if code_e != 0:
            print(err_e[-3000:], file=sys.stderr)
            print("Evidently failed (is the bench extra installed? pip install -e '.[bench]')", file=sys.stderr)
            return 1
        e_cols = set(json.loads(out_e.strip().splitlines()[-1])["drifted_columns"])
        results["evidently"] = {"seconds": round(sec_e, 2), "peak_mib": round(peak_e), "flagged": sorted(e_cols),
                                "exact": e_cols == DRIFTED}
        results["speedup"] = round(sec_e / sec, 1)
        results["same_columns"] = e_cols == k_cols
        print(f"Evidently DataDriftPreset: {sec_e:.2f} s, flagged {sorted(e_cols)}", file=sys.stderr)

    if args.big_rows:
        print(f"generating {args.big_rows:,}-row current file ...", file=sys.stderr)
        write_big(big, args.big_rows, seed=100)
        sec_b, peak_b, body, err_b, code_b = run_timed(
            kubeloop_cmd() + ["drift", "--reference", str(ref), "--current", str(big), "--json"])
        if code_b != 0:
            print(err_b[-3000:], file=sys.stderr)
            return 1
        b_cols = set(json.loads(body)["drifted_columns"])
        results["big"] = {"rows": args.big_rows, "seconds": round(sec_b, 2), "peak_mib": round(peak_b),
                          "under_1gb": peak_b < 1024, "flagged": sorted(b_cols), "exact": b_cols == DRIFTED}
        print(f"kubeloop drift, {args.big_rows:,} current rows: {sec_b:.1f} s, peak {peak_b:.0f} MiB", file=sys.stderr)

    print(json.dumps(results, indent=2))
    if tmp:
        tmp.cleanup()
    ok = results["kubeloop"]["exact"] and results.get("same_columns", True) and results.get("big", {}).get("under_1gb", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
