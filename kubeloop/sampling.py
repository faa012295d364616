"""Seeded draws of row positions that keep each class's share: the training sample
and the split's stratified cuts draw with the same function."""

from __future__ import annotations

import numpy as np


def stratified_positions(y: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``max_rows`` rows, each class's share rounded by largest
    remainder and at least one row of every class (``y`` holds the class of each
    row). Unlike scikit-learn's ``train_test_split`` it never builds the left-out
    side, nor the per-class index lists of ``StratifiedShuffleSplit``: on 10M
    labels those cost hundreds of MiB."""
    inverse, counts = _classes(np.asarray(y))
    exact = counts * (max_rows / y.size)
    take = np.maximum(np.floor(exact).astype(np.int64), 1)
    # Largest remainders first get the rows left; the largest classes give back
    # what the one-row floor took.
    spare = max_rows - int(take.sum())
    for k in np.argsort(-(exact - np.floor(exact)), kind="stable") if spare > 0 else ():
        if spare == 0:
            break
        if take[k] < counts[k]:
            take[k] += 1
            spare -= 1
    # Down to one row a class, largest first; with more classes than rows, the
    # smallest shares go without.
    for floor, order in ((1, np.argsort(-take, kind="stable")), (0, np.argsort(exact, kind="stable"))):
        for k in order:
            if spare >= 0:
                break
            give = min(-spare, int(take[k]) - floor)
            take[k] -= give
            spare += give
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    chosen = [by_class[starts[k] + rng.choice(counts[k], take[k], replace=False)]
              for k in range(counts.size)]
    return np.sort(np.concatenate(chosen))


def _classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's class index (0..k-1, in sorted order of the classes) and the classes'
    row counts: ``np.unique(y, return_inverse=True, return_counts=True)`` without
    its sorted copy and argsort when ``y`` already holds small codes (a split's
    strata, most labels): about 16 bytes a row less."""
    if y.dtype.kind in "iu" and y.size and 0 <= y.min() and y.max() < 2**16:
        per_code = np.bincount(y)
        present = per_code > 0
        index = (np.cumsum(present) - 1).astype(np.intp)
        return index[y], per_code[present]
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts
