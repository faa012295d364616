"""``make demo``: the whole training loop twice on generated data, no servers.

1. Generates eighteen months of customer-churn data with kubeloop's seeded generator
   (numeric and categorical features, missing values, timestamps, imbalance).
2. ``kubeloop run`` on it: no production model yet, so the challenger must beat
   the trivial baseline; it becomes production.
3. Newer data arrives; ``kubeloop run`` again: now the gate compares
   the new challenger with the champion on the same test set.
4. Prints where to look next.

Every step is the command a user would type, printed before it runs.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from kubeloop.datagen import make_churn


def _run(cmd: list[str]) -> dict:
    print(f"\n$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo: the command above failed with exit code {proc.returncode}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="demo", help="where the data, registry and runs go")
    ap.add_argument("--rows", type=int, default=6000, help="rows in the first dataset")
    args = ap.parse_args(argv)

    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    registry = root / "registry"
    t0 = time.perf_counter()

    # Eighteen months of sign-ups, then the same history plus newer customers whose
    # behaviour has shifted a little: the second run trains on more (and newer)
    # data, as a scheduled retrain would, and the gate compares it with run 1's model.
    first = make_churn(n_rows=args.rows, seed=7, start="2024-07-01")
    later = make_churn(n_rows=args.rows // 2, seed=8, start="2025-10-01", drift=0.3)
    data1 = root / "churn-2025.csv"
    data2 = root / "churn-2025-2026q1.parquet"
    first.to_csv(data1, index=False)
    pd.concat([first, later], ignore_index=True).to_parquet(data2, index=False)
    print(f"demo: wrote {data1.name} ({len(first):,} rows) and {data2.name} "
          f"({len(first) + len(later):,} rows) in {root}", file=sys.stderr)

    base = [
        sys.executable, "-m", "kubeloop.cli", "run", "--target", "churned", "--time-column", "signup_date",
        "--model-name", "churn", "--registry", str(registry), "--work-dir", str(root / ".kubeloop"), "--json",
    ]
    s1 = _run(base[:4] + ["--data", str(data1)] + base[4:])
    s2 = _run(base[:4] + ["--data", str(data2)] + base[4:])

    def line(s: dict) -> str:
        m = s["metrics"]
        return (f"{s['version']:<4} {s.get('family', ''):<24} roc_auc {m.get('roc_auc', float('nan')):.3f}  "
                f"f1 {m.get('f1', float('nan')):.3f}  gate: {s['gate']['decision']}")

    # The venv is not activated under `make demo`: show the command by its path.
    kl = os.path.relpath(Path(sys.executable).parent / "kubeloop")
    print(f"""
kubeloop demo finished in {time.perf_counter() - t0:.0f}s

  run 1  {line(s1)}
         {s1['gate']['reason']}
  run 2  {line(s2)}
         {s2['gate']['reason']}

  production is now {s2.get('production_version')} of model 'churn'.

Where to look next:
  model card        {s2['artifacts']['model_card']}
  evaluation        {s2['artifacts'].get('evaluation_report', '')}
  the registry      {kl} registry list churn --registry {registry}
  alias history     {kl} registry history churn --registry {registry}
  your own data     {kl} run --data FILE.csv --target COLUMN
  on a cluster      make compile   (then upload dist/training-pipeline.yaml to Kubeflow Pipelines)
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
