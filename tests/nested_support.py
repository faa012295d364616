"""Comparing nested results (profiles, drift reports) computed in two shapes."""

from __future__ import annotations

import pytest


def assert_nested_close(a, b, where: str = "result") -> None:
    """Equal, floats within rounding: sums over batches or partitions add in another order."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_nested_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_nested_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where
