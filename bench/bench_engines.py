"""Which engine should kubeloop's data steps use? pyarrow, DuckDB and Polars on the
project's own jobs, each job in its own process (wall time and peak RSS).

Jobs, on a seeded table of ROWS x 20 columns (12 float with 1 % missing, 4 integer,
4 string columns of 50 levels):
- csv: the CSV file -> one Parquet file (snappy);
- stats: per-column statistics over that Parquet file: count, nulls, min/max,
  mean/variance, distinct values up to a cap, and value counts of the strings.

Engines: pyarrow (csv.open_csv streaming into ParquetWriter; dataset batches and
compute kernels merged in Python), DuckDB (COPY ... TO parquet; one SQL query),
Polars' streaming engine (scan_csv().sink_parquet(); scan_parquet() collected
with engine="streaming"). Each engine may use the cores the step has (--threads).

DuckDB and Polars are not kubeloop dependencies: `make bench-engines` installs
pinned versions into .venv-bench and runs this script there. The script imports
nothing from kubeloop, so it runs in that venv as it is.

    python bench/bench_engines.py --rows 10000000 --dir /tmp/engines
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_FLOAT, N_INT, N_STR = 12, 4, 4
LEVELS = 50
DISTINCT_CAP = 1000
ENGINES = ("pyarrow", "duckdb", "polars")
JOBS = ("csv", "stats")


def float_cols() -> list[str]:
    return [f"f{i}" for i in range(N_FLOAT)]


def int_cols() -> list[str]:
    return [f"i{i}" for i in range(N_INT)]


def str_cols() -> list[str]:
    return [f"s{i}" for i in range(N_STR)]


def generate_csv(path: Path, rows: int, seed: int = 19) -> None:
    """The seeded table as CSV, written 500k rows at a time (never whole in memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(seed)
    levels = pa.array([f"level_{k:02d}" for k in range(LEVELS)])
    writer = None
    try:
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            cols = {}
            for name in float_cols():
                values = rng.normal(size=n)
                cols[name] = pa.array(values, mask=rng.random(n) < 0.01)
            for name in int_cols():
                cols[name] = pa.array(rng.integers(0, 1_000_000, size=n))
            for name in str_cols():
                cols[name] = levels.take(pa.array(rng.integers(0, LEVELS, size=n)))
            table = pa.table(cols)
            if writer is None:
                writer = pa_csv.CSVWriter(str(path), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


# --------------------------------------------------------------------------- jobs


def pyarrow_csv(src: Path, dst: Path, threads: int) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    pa.set_cpu_count(threads)
    rows = 0
    with pa_csv.open_csv(str(src), read_options=pa_csv.ReadOptions(block_size=16 << 20)) as reader:
        with pq.ParquetWriter(str(dst), reader.schema, compression="snappy") as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    return {"rows": rows}


def pyarrow_stats(src: Path, threads: int) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    pa.set_cpu_count(threads)
    dataset = ds.dataset(str(src), format="parquet")
    acc: dict[str, dict] = {}
    # As kubeloop.tables reads: no readahead, no pre-buffering (which keeps the
    # fetched column chunks for the whole scan).
    scan = ds.ParquetFragmentScanOptions(pre_buffer=False)
    for batch in dataset.to_batches(batch_size=131_072, batch_readahead=0, fragment_readahead=0,
                                    fragment_scan_options=scan):
        for name in batch.schema.names:
            col = batch.column(name)
            a = acc.setdefault(name, {"count": 0, "nulls": 0, "min": None, "max": None,
                                      "sum": 0.0, "sumsq": 0.0, "distinct": set(), "counts": {}})
            a["count"] += len(col) - col.null_count
            a["nulls"] += col.null_count
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                vc = pc.value_counts(col)
                for value, count in zip(vc.field("values").to_pylist(),
                                        vc.field("counts").to_pylist(), strict=True):
                    a["counts"][value] = a["counts"].get(value, 0) + count
                continue
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            a["min"] = lo if a["min"] is None else min(a["min"], lo)
            a["max"] = hi if a["max"] is None else max(a["max"], hi)
            as_float = col.cast(pa.float64())
            a["sum"] += pc.sum(as_float).as_py() or 0.0
            a["sumsq"] += pc.sum(pc.multiply(as_float, as_float)).as_py() or 0.0
            if len(a["distinct"]) <= DISTINCT_CAP:
                a["distinct"].update(pc.unique(col).drop_null().to_pylist()[: DISTINCT_CAP + 1])
    out = {}
    for name, a in acc.items():
        n = a["count"]
        mean = a["sum"] / n if n else None
        var = (a["sumsq"] - n * mean * mean) / (n - 1) if n > 1 else None
        distinct = len(a["counts"]) if a["counts"] else min(len(a["distinct"]), DISTINCT_CAP + 1)
        out[name] = {"count": n, "nulls": a["nulls"], "mean": mean, "var": var,
                     "distinct": distinct}
    return {"columns": len(out), "f0_mean": out["f0"]["mean"], "s0_levels": out["s0"]["distinct"]}


def duckdb_csv(src: Path, dst: Path, threads: int) -> dict:
    import duckdb

    con = duckdb.connect(config={"threads": threads})
    con.execute(f"COPY (SELECT * FROM read_csv('{src}')) TO '{dst}' (FORMAT parquet, COMPRESSION snappy)")
    return {"rows": con.execute(f"SELECT count(*) FROM '{dst}'").fetchone()[0]}


def duckdb_stats(src: Path, threads: int) -> dict:
    import duckdb

    con = duckdb.connect(config={"threads": threads})
    parts = []
    for c in float_cols() + int_cols():
        parts += [f"count({c})", f"count(*) - count({c})", f"min({c})", f"max({c})",
                  f"avg({c})", f"var_samp({c})",
                  f"least(count(DISTINCT {c}), {DISTINCT_CAP + 1})"]
    row = con.execute(f"SELECT {', '.join(parts)} FROM '{src}'").fetchone()
    levels = {}
    for c in str_cols():
        counts = con.execute(f"SELECT {c}, count(*) FROM '{src}' GROUP BY {c}").fetchall()
        levels[c] = len(counts)
    return {"columns": N_FLOAT + N_INT + N_STR, "f0_mean": row[4], "s0_levels": levels["s0"]}


def polars_csv(src: Path, dst: Path, threads: int) -> dict:
    import polars as pl

    pl.scan_csv(src).sink_parquet(dst, compression="snappy")
    return {"rows": pl.scan_parquet(dst).select(pl.len()).collect().item()}


def polars_stats(src: Path, threads: int) -> dict:
    import polars as pl

    lf = pl.scan_parquet(src)
    exprs = []
    for c in float_cols() + int_cols():
        col = pl.col(c)
        exprs += [col.count().alias(f"{c}_count"), col.null_count().alias(f"{c}_nulls"),
                  col.min().alias(f"{c}_min"), col.max().alias(f"{c}_max"),
                  col.mean().alias(f"{c}_mean"), col.var().alias(f"{c}_var"),
                  col.n_unique().clip(upper_bound=DISTINCT_CAP + 1).alias(f"{c}_distinct")]
    row = lf.select(exprs).collect(engine="streaming")
    levels = {c: lf.group_by(c).agg(pl.len()).collect(engine="streaming").height for c in str_cols()}
    return {"columns": N_FLOAT + N_INT + N_STR, "f0_mean": row["f0_mean"][0], "s0_levels": levels["s0"]}


def run_job(engine: str, job: str, work: Path, threads: int) -> dict:
    # Each engine may use `threads` cores; polars reads its pool size from the env at import.
    if job == "csv":
        dst = work / f"{engine}.parquet"
        dst.unlink(missing_ok=True)
        return globals()[f"{engine}_csv"](work / "table.csv", dst, threads)
    return globals()[f"{engine}_stats"](work / "table.parquet", threads)


# --------------------------------------------------------------------------- driver


def measure(engine: str, job: str, work: Path, threads: int) -> dict:
    """Run one job in a fresh process: wall time, its own peak RSS, and its answer."""
    env = dict(os.environ, POLARS_MAX_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", engine, job, "--dir", str(work), "--threads", str(threads)],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} {job} failed with exit {proc.returncode}")
    # ru_maxrss is in KiB on Linux.
    return {"engine": engine, "job": job, "wall_s": round(wall, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "answer": json.loads(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kubeloop-bench-engines"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="cores each engine may use (a step's CPU limit)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help="comma-separated subset of " + ", ".join(ENGINES) + " (pyarrow must be one)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--child", nargs=2, metavar=("ENGINE", "JOB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_job(*args.child, args.dir, args.threads), default=str))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    if "pyarrow" not in engines or set(engines) - set(ENGINES):
        p.error(f"--engines: a subset of {', '.join(ENGINES)} with pyarrow in it (its Parquet "
                "file is what every engine's statistics read)")
    args.dir.mkdir(parents=True, exist_ok=True)
    csv = args.dir / "table.csv"
    marker = args.dir / f"rows-{args.rows}"
    if not marker.exists():
        print(f"generating {args.rows:,} rows x 20 columns -> {csv}", file=sys.stderr)
        for old in args.dir.glob("rows-*"):
            old.unlink()
        generate_csv(csv, args.rows)
        marker.touch()
    results = []
    for job in JOBS:
        for engine in engines:
            print(f"{engine} {job} ...", file=sys.stderr)
            results.append(measure(engine, job, args.dir, args.threads))
        if job == "csv":
            # Every engine's stats read the same file: pyarrow's conversion.
            os.replace(args.dir / "pyarrow.parquet", args.dir / "table.parquet")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    size = csv.stat().st_size / 2**20
    print(f"{args.rows:,} rows x 20 columns, CSV {size:,.0f} MiB, {args.threads} threads per engine\n")
    print("| job | engine | wall s | peak RSS MiB | answer |")
    print("| --- | --- | ---: | ---: | --- |")
    for r in results:
        print(f"| {r['job']} | {r['engine']} | {r['wall_s']} | {r['peak_rss_mib']} | {json.dumps(r['answer'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
