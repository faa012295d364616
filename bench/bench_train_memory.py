"""Memory of fitting each family's head on 1M rows x 20 columns (the features step's
float32 output): the peak resident set above the process's size just before the fit,
as a multiple of the float32 matrix itself.

Each family fits in its own subprocess, so one family's freed memory cannot hide
another's peak. A ratio of 1 would be one extra copy of the data in float32; a
float64 copy of the whole split adds 2. ``stock_hist_gradient_boosting`` is
scikit-learn's estimator itself, beside the family's (which cuts its early-stopping
holdout in float32): the same model, in the same run. The ratios, not the seconds,
are the result.

    python bench/bench_train_memory.py [--rows 1000000] [--columns 20] [--families ...]
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np, pandas as pd
from kubeloop.components.train import make_head

rows, columns, family, task = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.standard_normal((rows, columns), dtype=np.float32),
                 columns=[f"num__x{i}" for i in range(columns)], copy=False)
score = X.to_numpy()[:, :5].sum(axis=1)
y = (score + rng.standard_normal(rows, dtype=np.float32) > 0).astype(int) if task == "classification" else score
# Bounded work: memory is set by the data's copies, not by the number of iterations.
params = {"max_iter": 10} if "hist_gradient_boosting" in family else (
    {"n_estimators": 10} if family in ("random_forest", "extra_trees") else {})
if family == "stock_hist_gradient_boosting":
    # scikit-learn's own estimator, as the family used it before its float32 holdout.
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    stock = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    head = stock(random_state=0, max_iter=10)
else:
    head = make_head(family, task, [], params, 0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
head.fit(X, y)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"family": family, "task": task, "data_mib": X.values.nbytes / 2**20,
                  "extra_mib": (peak - before) / 2**20}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--families", nargs="+",
                        default=["linear", "hist_gradient_boosting", "stock_hist_gradient_boosting",
                                 "random_forest"])
    parser.add_argument("--tasks", nargs="+", default=["classification", "regression"])
    args = parser.parse_args()
    print(f"{'family':<30} {'task':<15} {'data MiB':>9} {'extra MiB':>10} {'ratio':>6}")
    for task in args.tasks:
        for family in args.families:
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.rows), str(args.columns),
                                  family, task], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{family:<30} {task:<15} {r['data_mib']:>9.0f} {r['extra_mib']:>10.0f} "
                  f"{r['extra_mib'] / r['data_mib']:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
