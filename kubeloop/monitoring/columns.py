"""Arrow columns as monitoring sees them: numbers as float64 with NaN for missing,
categories as text with counts.

Reference and current data go through these same functions, so a category is
spelled the same on both sides whatever the file format: booleans as
``true``/``false``, whole numbers without a trailing ``.0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMERIC, CATEGORICAL = "numeric", "categorical"


def kind_of(arrow_type: pa.DataType) -> str | None:
    """``numeric``, ``categorical``, or None for what drift does not compare (dates, binary)."""
    if pa.types.is_dictionary(arrow_type):
        return kind_of(arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return CATEGORICAL
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return NUMERIC
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return CATEGORICAL
    if pa.types.is_null(arrow_type):
        return None
    return None


def numeric_values(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 values, NaN where missing. In a text column, text that is not a
    number counts as missing (a data-quality problem shows as a missing-rate
    change rather than stopping the comparison of every other column)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_floating(arr.type) or arr.type != pa.float64():
        try:
            arr = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                raise ValueError(f"values are not numbers ({exc})") from None
            import pandas as pd

            return pd.to_numeric(pd.Series(arr.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(np.float64)
    return arr.to_numpy(zero_copy_only=False)


def as_text(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type) if hasattr(arr, "cast") else pc.cast(arr, t.value_type)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr
    if pa.types.is_floating(t):
        # 3.0 and 3 are the same category (a float column only because of nulls).
        values = arr.to_numpy(zero_copy_only=False)
        finite = values[np.isfinite(values)]
        if finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() < 2**53:
            arr = pc.cast(arr, pa.int64(), safe=False)
    return pc.cast(arr, pa.string())


def category_counts(arr: pa.Array | pa.ChunkedArray) -> tuple[dict[str, int], int]:
    """({category: count}, number missing)."""
    if pa.types.is_dictionary(arr.type):
        return _dictionary_counts(arr)
    text = as_text(arr)
    missing = text.null_count
    counts = pc.value_counts(text)
    return _merge_counts(counts.field("values").to_pylist(), counts.field("counts").to_pylist()), int(missing)


def _dictionary_counts(arr: pa.Array | pa.ChunkedArray) -> tuple[dict[str, int], int]:
    """category_counts of a dictionary array: a bincount of its codes per chunk,
    then the (few) dictionary values as text."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out: dict[str, int] = {}
    missing = 0
    for chunk in chunks:
        missing += chunk.null_count
        dictionary = chunk.dictionary
        codes = chunk.indices
        if chunk.null_count:
            codes = codes.drop_null()
        n = np.bincount(codes.to_numpy(zero_copy_only=False), minlength=len(dictionary))
        # A null inside the dictionary itself is missing too.
        null_in_dict = dictionary.is_null().to_numpy(zero_copy_only=False)
        missing += int(n[null_in_dict].sum())
        for v, c in _merge_counts(as_text(dictionary).to_pylist(), n.tolist()).items():
            out[v] = out.get(v, 0) + c
    return out, int(missing)


def _merge_counts(values: list[Any], n: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v, c in zip(values, n, strict=True):
        if v is None:
            continue
        # Booleans read from Parquet are true/false; pandas writes True/False to CSV.
        v = _BOOL_TEXT.get(v, v)
        if c:
            out[v] = out.get(v, 0) + c
    return out


_BOOL_TEXT = {"True": "true", "TRUE": "true", "False": "false", "FALSE": "false"}


def to_arrow(values: Any) -> pa.Array:
    """A pandas Series, numpy array or list as an Arrow array."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    try:
        import pandas as pd

        if isinstance(values, pd.Series):
            if isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype(object).where(values.notna(), None)
            return pa.array(values, from_pandas=True)
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return pa.array(np.asarray(values) if not isinstance(values, list) else values, from_pandas=True)
