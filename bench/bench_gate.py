"""The gate's two hot parts against the stock way of doing the same, in one run.

1. Paired bootstrap of ROC-AUC and log loss (1000 replicates): ``kubeloop.paired``
   (weighted metrics over blocks of replicates, one sort of the scores) against a
   loop that resamples the rows and calls ``sklearn.metrics`` for both models.
2. Row fingerprints of a mixed-type frame: ``kubeloop.fingerprints.row_fingerprints``
   (a canonical form, stable across dtypes and versions) against
   ``pandas.util.hash_pandas_object`` (not stable, the fastest stock hash).

Prints wall times and ratios; ``--rows`` sets the test rows of part 1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from kubeloop.fingerprints import FingerprintSet, row_fingerprints
from kubeloop.paired import paired_bootstrap


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_paired(n: int, replicates: int) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.3).astype(int)
    pa = 1 / (1 + np.exp(-(1.0 * (2 * y - 1) + rng.normal(size=n))))
    pb = 1 / (1 + np.exp(-(0.9 * (2 * y - 1) + rng.normal(size=n))))
    a, b = np.column_stack([1 - pa, pa]), np.column_stack([1 - pb, pb])

    def ours():
        return paired_bootstrap(
            "classification", y, a, b, ["roc_auc", "log_loss"], positive=1, n_bootstrap=replicates
        )

    def stock():
        draws = np.random.default_rng(0)
        deltas = []
        for _ in range(replicates):
            idx = draws.integers(0, n, n)
            deltas.append(
                (
                    roc_auc_score(y[idx], pa[idx]) - roc_auc_score(y[idx], pb[idx]),
                    log_loss(y[idx], pb[idx], labels=[0, 1])
                    - log_loss(y[idx], pa[idx], labels=[0, 1]),
                )
            )
        d = np.array(deltas)
        return np.quantile(d, [0.025, 0.975], axis=0)

    t_ours, est = _timed(ours)
    t_stock, q = _timed(stock)
    print(f"paired bootstrap, {n:,} rows x {replicates} replicates, roc_auc + log_loss")
    print(
        f"  kubeloop.paired          {t_ours:7.2f} s   roc_auc interval "
        f"{est['roc_auc'].low:+.4f} to {est['roc_auc'].high:+.4f}"
    )
    print(
        f"  loop over sklearn.metrics {t_stock:6.2f} s   roc_auc interval "
        f"{q[0, 0]:+.4f} to {q[1, 0]:+.4f}"
    )
    print(f"  ratio (stock / ours)     {t_stock / t_ours:7.1f}x")


def bench_large(n: int) -> None:
    """Above gate.bootstrap_max_rows the replicates come from a sample (bounded time)."""
    rng = np.random.default_rng(2)
    y = (rng.random(n) < 0.3).astype(int)
    pa = 1 / (1 + np.exp(-(1.0 * (2 * y - 1) + rng.normal(size=n))))
    pb = 1 / (1 + np.exp(-(0.9 * (2 * y - 1) + rng.normal(size=n))))
    a, b = np.column_stack([1 - pa, pa]), np.column_stack([1 - pb, pb])
    t, est = _timed(
        lambda: paired_bootstrap(
            "classification", y, a, b, ["roc_auc", "log_loss", "f1"], positive=1
        )
    )
    e = est["roc_auc"]
    print(f"paired bootstrap, {n:,} rows (replicates on 20,000), roc_auc + log_loss + f1")
    print(f"  kubeloop.paired          {t:7.2f} s   roc_auc {e.interval_text()}")


def bench_fingerprints(n: int) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {f"x{i}": rng.normal(size=n) for i in range(12)}
        | {f"k{i}": rng.integers(0, 1000, n) for i in range(4)}
        | {f"c{i}": rng.choice([f"level{j}" for j in range(50)], n) for i in range(3)}
        | {"t": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), "s")}
    )
    cols = list(frame.columns)
    t_ours, hashes = _timed(lambda: row_fingerprints(frame, cols))
    t_stock, _ = _timed(lambda: pd.util.hash_pandas_object(frame, index=False).to_numpy())
    t_set, s = _timed(lambda: FingerprintSet.from_hashes(hashes, cols, exact_limit=0))
    t_query, _ = _timed(lambda: s.contains(hashes))
    print(f"row fingerprints, {n:,} rows x {len(cols)} columns (numbers, integers, text, times)")
    print(f"  kubeloop.fingerprints    {t_ours:7.2f} s")
    print(f"  hash_pandas_object       {t_stock:7.2f} s")
    print(f"  ratio (ours / stock)     {t_ours / t_stock:7.2f}x")
    print(
        f"  Bloom filter at 0.1%: build {t_set:.2f} s, query {t_query:.2f} s, "
        f"{len(s.to_bytes()) / n:.2f} bytes a row (exact set: 8)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=20_000, help="test rows of the bootstrap")
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--fingerprint-rows", type=int, default=1_000_000)
    ap.add_argument("--large-rows", type=int, default=150_000,
                    help="test rows of the sampled bootstrap (above gate.bootstrap_max_rows)")
    args = ap.parse_args()
    bench_paired(args.rows, args.replicates)
    bench_large(args.large_rows)
    bench_fingerprints(args.fingerprint_rows)


if __name__ == "__main__":
    main()
