"""What the framework costs: ``kubeloop run`` against a plain script.

Both sides train the same models on the same data (``make_wide``: 1M rows x 20
columns by default) with the same configuration, calling the same pure functions
of ``kubeloop.components``. The plain script does it in one Python process with
the data in memory; ``kubeloop run`` goes through the KFP local runner: one
subprocess per step, every hand-off written to and read from Parquet/joblib, the
registry written as it would be on a cluster.

Reported, measured in this one run on this machine:

* wall time of each side and their ratio (target: at most 1.3x);
* peak memory of each side: the largest resident set of any one process in it
  (steps run one at a time locally, so that is the peak), against the in-memory
  size of the data. Importing pandas, scikit-learn, pyarrow and kfp alone takes
  about 280 MiB whatever the data, so the target (at most 3x) is applied to the
  working memory: the peak minus that import floor, measured here too.

With ``--busy`` both sides run a second time beside a busy process (one core
spinning): the local runner gives each step a thread budget (its share of the
cores, ``kubeloop.local_run.thread_budget``), so the ratio stays near the quiet
figure instead of the steps' pools fighting the neighbour for every core.

    python bench/bench_overhead.py [--rows 1000000] [--columns 20] [--busy] [--keep DIR]

Exit status 1 when a target is missed, so the numbers cannot quietly regress.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MAX_TIME_RATIO = 1.3
MAX_MEMORY_RATIO = 3.0


def plain_loop(data: str, registry: str, config_path: str) -> dict:
    """The whole loop as one script: what a user would write without kubeloop."""
    from kubeloop.components.evaluate import evaluate
    from kubeloop.components.features import fit_features
    from kubeloop.components.gate import decide_from_evaluation
    from kubeloop.components.ingest import ingest
    from kubeloop.components.register import lineage, reference_sample, register_run
    from kubeloop.components.split import split_dataset
    from kubeloop.components.train import BASELINE, select_best, train_candidate
    from kubeloop.components.validate import validate
    from kubeloop.config import load_config
    from kubeloop.metric_names import primary_metric
    from kubeloop.registry import Registry

    cfg = load_config(config_path)
    df, profile = ingest(data, storage=cfg.storage)
    result = validate(df, target=cfg.target, task=cfg.task, cfg=cfg.validation)
    result.raise_if_blocking()
    schema = result.schema
    splits = split_dataset(df, schema, cfg.split)
    del df
    features = fit_features(splits.train, schema)
    metric = primary_metric(schema["task"], cfg.gate.primary_metric)
    baseline, _ = train_candidate(BASELINE, splits.train, splits.valid, features, schema, cfg.train, metric=metric)
    trained = [
        train_candidate(f, splits.train, splits.valid, features, schema, cfg.train, metric=metric)
        for f in cfg.train.families
    ]
    best_model, best_record = trained[select_best([r for _, r in trained], metric)]
    ev = evaluate(
        best_model, splits.test, schema, cfg.evaluation, primary_metric=metric,
        baseline=baseline, train_df=splits.train, gate=cfg.gate,
    ).to_dict()
    ev["champion_version"] = None
    decision = decide_from_evaluation(ev, cfg.gate).to_dict()

    import joblib

    with tempfile.TemporaryDirectory() as model_dir:
        joblib.dump(best_model, os.path.join(model_dir, "model.joblib"))
        Path(model_dir, "candidate.json").write_text(json.dumps(best_record))
        return register_run(
            Registry(registry, cfg.storage), model_name=cfg.model_name, model_dir=model_dir,
            schema=schema, evaluation=ev, decision=decision,
            lineage_doc=lineage(data_uri=data, profile=profile, config=cfg.to_dict(),
                                candidate=best_record, split_summary=splits.summary),
            reports={}, reference=reference_sample(splits.train, schema),
            sensitive_columns=cfg.evaluation.sensitive_columns,
        )


def _timed_child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process ``cmd`` ran.

    Each side runs in a child of its own, started from a fresh helper process, so
    RUSAGE_CHILDREN there covers exactly that side's process tree."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        f"rc = subprocess.run({cmd!r}, stdout=subprocess.DEVNULL).returncode\n"
        "dt = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': rc, 'seconds': dt, 'rss_mib': rss}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        sys.exit(f"bench: {' '.join(cmd[:4])} ... failed with exit code {res['rc']}")
    return res["seconds"], res["rss_mib"]


def import_floor_mib() -> float:
    """Peak RSS (MiB) of a process that only imports what every step imports."""
    _, floor = _timed_child([sys.executable, "-c", "import kfp.dsl, kubeloop.components.train, "
                             "kubeloop.components.evaluate, kubeloop.components.validate, kubeloop.registry"])
    return floor


BUSY_LOOP = "while True:\n    pass\n"


def _beside_a_busy_process(cmd: list[str]) -> tuple[float, float]:
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        return _timed_child(cmd)
    finally:
        busy.kill()
        busy.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--columns", type=int, default=20)
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temp dir)")
    ap.add_argument("--busy", action="store_true",
                    help="also run both sides beside a busy process (one core spinning)")
    ap.add_argument("--plain", nargs=3, metavar=("DATA", "REGISTRY", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.plain:  # the plain side, in its own process
        summary = plain_loop(*args.plain)
        print(json.dumps({"version": summary["version"], "metrics": summary["metrics"]}))
        return 0

    from kubeloop.components.ingest import read_parquet
    from kubeloop.datagen import make_wide
    from kubeloop.local_run import machine_cores

    work = Path(args.keep or tempfile.mkdtemp(prefix="kubeloop-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"wide-{args.rows}x{args.columns}.parquet"
    t0 = time.perf_counter()
    make_wide(args.rows, args.columns, seed=0).to_parquet(data, index=False)
    in_memory = read_parquet(data).memory_usage(deep=True).sum() / 2**20
    print(f"data: {args.rows:,} rows x {args.columns} columns, {data.stat().st_size / 2**20:.0f} MiB Parquet, "
          f"{in_memory:.0f} MiB in memory (generated in {time.perf_counter() - t0:.0f}s)", flush=True)

    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"target": "label", "task": "classification", "model_name": "wide"}))
    kubeloop = [sys.executable, "-m", "kubeloop.cli", "run", "--data", str(data), "--config", str(config),
                "--registry", str(work / "registry-kubeloop"), "--work-dir", str(work / ".kubeloop"), "--json"]
    plain = [sys.executable, __file__, "--plain", str(data), str(work / "registry-plain"), str(config)]

    # Plain first: it also warms the page cache for the data file, which only
    # helps kubeloop's side and so can only flatter the ratio against us less.
    floor = import_floor_mib()
    print(f"import floor:           peak RSS {floor:6.0f} MiB (the libraries alone)", flush=True)
    plain_s, plain_rss = _timed_child(plain)
    print(f"plain script:  {plain_s:7.1f}s  peak RSS {plain_rss:6.0f} MiB", flush=True)
    kl_s, kl_rss = _timed_child(kubeloop)
    print(f"kubeloop run:  {kl_s:7.1f}s  peak RSS {kl_rss:6.0f} MiB", flush=True)

    time_ratio = kl_s / plain_s
    mem_ratio = (kl_rss - floor) / in_memory
    print()
    print(f"time   kubeloop / plain                     {time_ratio:5.2f}x  (target <= {MAX_TIME_RATIO}x)")
    print(f"memory kubeloop (peak - floor) / data       {mem_ratio:5.2f}x  (target <= {MAX_MEMORY_RATIO}x)")
    print(f"memory plain    (peak - floor) / data       {(plain_rss - floor) / in_memory:5.2f}x")
    print(f"memory kubeloop peak / data, floor included {kl_rss / in_memory:5.2f}x")
    print(f"memory kubeloop peak / plain peak           {kl_rss / plain_rss:5.2f}x")
    ok = time_ratio <= MAX_TIME_RATIO and mem_ratio <= MAX_MEMORY_RATIO
    if args.busy:
        from kubeloop.config import load_config
        from kubeloop.pipelines.training import local_thread_budgets

        budgets = local_thread_budgets(load_config(str(config)), 1)
        print(f"\nthread budget: {budgets['train']} per training step, {budgets['default']} per other step "
              f"({machine_cores()} cores)", flush=True)
        # Fresh registries and work directory: no champion to compare with, no cached step.
        fresh = {str(work / "registry-plain"): str(work / "busy-registry-plain"),
                 str(work / "registry-kubeloop"): str(work / "busy-registry-kubeloop"),
                 str(work / ".kubeloop"): str(work / ".kubeloop-busy")}
        busy_plain, _ = _beside_a_busy_process([fresh.get(a, a) for a in plain])
        print(f"plain script beside a busy process:  {busy_plain:7.1f}s", flush=True)
        busy_kl, _ = _beside_a_busy_process([fresh.get(a, a) for a in kubeloop])
        print(f"kubeloop run beside a busy process:  {busy_kl:7.1f}s", flush=True)
        busy_ratio = busy_kl / busy_plain
        print(f"time   kubeloop / plain beside a busy process {busy_ratio:5.2f}x  (quiet: {time_ratio:.2f}x)")
        ok = ok and busy_ratio <= MAX_TIME_RATIO
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
