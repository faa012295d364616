"""Mergeable column statistics: computed per batch or per partition, then combined.

A ``TableSketch`` takes Arrow batches and keeps, per column, only what the
profiles need; two sketches of disjoint rows merge into the sketch of their
union, so a step can run on one pod or fan out over many and merge.

- ``Moments``: count, min, max, mean and variance, merged with Chan et al.'s
  pairwise formula (exact up to floating-point rounding).
- ``RowSample`` (numeric columns): a bottom-k sample. Each row gets a priority,
  a 64-bit hash of its global row number, and the ``k`` rows of smallest
  priority are kept. The bottom-k of a union is the bottom-k of the parts'
  bottom-k's, so the merged sample is *the same sample* one pass over all rows
  keeps, in any merge order. While a column has at most ``k`` values it keeps
  them all (exact). Beyond, it is a uniform sample of ``k`` of them; by the
  Dvoretzky-Kiefer-Wolfowitz inequality (which holds for sampling without
  replacement too, Bardenet & Maillard 2015) its CDF is within
  ``sqrt(ln(2/delta) / 2k)`` of the column's everywhere with probability
  ``1 - delta`` (``rank_error``): 0.0046 at k = 200,000 and delta = 0.1 %.
- ``CategoryCounts``: exact counts of up to ``cap`` levels. With more levels it
  becomes a Misra-Gries summary (mergeable as in Agarwal et al. 2012): every
  count is at most ``(n - sum of counts) / (cap + 1)`` below the true one
  (``count_error``), the rest of the rows are in ``other``. Levels are counted
  exactly while under the cap, and by a k-minimum-values distinct-count sketch
  beyond it (relative standard error ``1 / sqrt(k - 2)``: 1.6 % at k = 4096).

Why a hand-written bottom-k sample rather than a KLL sketch (Apache
DataSketches' ``kll_doubles_sketch``), measured on 2M lognormal values here:
KLL k=2000 took 0.10 s, 47 kB, stated rank error 0.14 % (measured 0.07 %);
this sample at k=200,000 took 0.07 s, 3.2 MB, stated 0.44 % (measured 0.30 %).
KLL is smaller for its error, but the sample wins for this use: its merge is
*identical* to the single pass in any order (KLL's result depends on the merge
order), it is exact (every value) for columns up to ``k`` values, the profile
needs sorted support points with exact weights (``profile.numeric_entry``),
which a sample is, and drift already states its p-values and KS bound for a
sample of this size; and it adds no dependency to the locks.

Serialised as JSON (``dumps``/``loads``: arrays as base64 of little-endian
bytes) so partitions hand them over as KFP artifacts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import numpy as np

from kubeloop.monitoring.columns import CATEGORICAL, NUMERIC, category_counts, numeric_values

FORMAT = "kubeloop/sketch/v1"
DEFAULT_SAMPLE = 200_000
DEFAULT_CATEGORY_CAP = 10_000
DEFAULT_DISTINCT_K = 4096
# The DKW bound is stated at this failure probability.
RANK_ERROR_DELTA = 1e-3

_U64 = np.uint64
_MAX_U64 = float(2**64)


class SketchError(ValueError):
    """Sketches that cannot be built, merged or read; the message says why."""


# --------------------------------------------------------------------------- hashing


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit mixing of integers (splitmix64's finaliser): row numbers to priorities."""
    with np.errstate(over="ignore"):
        z = x.astype(_U64) + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def row_priorities(row_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    return _splitmix64(np.asarray(row_ids, dtype=np.int64).astype(_U64) ^ _splitmix64(np.array([seed]))[0])


def _text_hashes(levels: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in levels],
                    dtype=_U64)


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def _unb64(s: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=dtype).copy()


# --------------------------------------------------------------------------- moments


class Moments:
    """Count, min, max, mean and the sum of squared deviations (M2) of finite values."""

    __slots__ = ("n", "mean", "m2", "min", "max")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0, lo: float = math.inf, hi: float = -math.inf):
        self.n, self.mean, self.m2, self.min, self.max = int(n), float(mean), float(m2), float(lo), float(hi)

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        if x.size == 0:
            return cls()
        mean = float(x.mean())
        return cls(x.size, mean, float(((x - mean) ** 2).sum()), float(x.min()), float(x.max()))

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return Moments(self.n, self.mean, self.m2, self.min, self.max)
        if self.n == 0:
            return Moments(other.n, other.mean, other.m2, other.min, other.max)
        n = self.n + other.n
        delta = other.mean - self.mean
        # Chan, Golub & LeVeque (1979): stable for partitions of any sizes.
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n, mean, m2, min(self.min, other.min), max(self.max, other.max))

    @property
    def std(self) -> float:
        """Population standard deviation (numpy's default, as the profiles use)."""
        return math.sqrt(max(self.m2, 0.0) / self.n) if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n": 0}
        return {"n": self.n, "mean": self.mean, "m2": self.m2, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        if not d.get("n"):
            return cls()
        return cls(d["n"], d["mean"], d["m2"], d["min"], d["max"])


# --------------------------------------------------------------------------- numeric sample


class RowSample:
    """The ``k`` values of smallest row priority (all of them while at most ``k``)."""

    def __init__(self, k: int = DEFAULT_SAMPLE):
        if k < 1:
            raise SketchError(f"sample size must be at least 1, got {k}")
        self.k = int(k)
        self.keys = np.empty(0, dtype=_U64)
        self.values = np.empty(0, dtype=np.float64)
        self.seen = 0  # values offered (finite ones)

    def add(self, values: np.ndarray, keys: np.ndarray) -> None:
        self.seen += int(values.size)
        if values.size == 0:
            return
        if self.keys.size == self.k:
            # Full: only keys below the current largest kept one can enter.
            top = self.keys.max()
            sel = keys < top
            values, keys = values[sel], keys[sel]
            if values.size == 0:
                return
        self._keep(np.concatenate([self.keys, keys]), np.concatenate([self.values, values]))

    def _keep(self, keys: np.ndarray, values: np.ndarray) -> None:
        if keys.size > self.k:
            idx = np.argpartition(keys, self.k - 1)[: self.k]
            keys, values = keys[idx], values[idx]
        self.keys, self.values = keys, values

    def merge(self, other: RowSample) -> RowSample:
        if other.k != self.k:
            raise SketchError(f"cannot merge samples of different sizes ({self.k} and {other.k})")
        out = RowSample(self.k)
        out.seen = self.seen + other.seen
        out._keep(np.concatenate([self.keys, other.keys]), np.concatenate([self.values, other.values]))
        return out

    @property
    def exact(self) -> bool:
        return self.seen <= self.k

    def sorted_values(self) -> np.ndarray:
        """The kept values, sorted (ties in row-priority order, so the result is unique)."""
        order = np.lexsort((self.keys, self.values))
        return self.values[order]

    def rank_error(self, delta: float = RANK_ERROR_DELTA) -> float:
        """With probability ``1 - delta``, the sample's CDF is within this of the column's."""
        if self.exact:
            return 0.0
        return math.sqrt(math.log(2 / delta) / (2 * self.values.size))

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "seen": self.seen, "keys": _b64(self.keys, "<u8"), "values": _b64(self.values, "<f8")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RowSample:
        out = cls(d["k"])
        out.seen = int(d["seen"])
        out.keys, out.values = _unb64(d["keys"], "<u8"), _unb64(d["values"], "<f8")
        if out.keys.size != out.values.size or out.keys.size > out.k:
            raise SketchError("a sample's keys and values do not match")
        return out


# --------------------------------------------------------------------------- categories


class DistinctCount:
    """k-minimum-values sketch of distinct 64-bit hashes (Bar-Yossef et al. 2002)."""

    def __init__(self, k: int = DEFAULT_DISTINCT_K):
        self.k = int(k)
        self.hashes = np.empty(0, dtype=_U64)

    def add_hashes(self, h: np.ndarray) -> None:
        u = np.unique(np.concatenate([self.hashes, h.astype(_U64)]))
        self.hashes = u[: self.k]

    def merge(self, other: DistinctCount) -> DistinctCount:
        out = DistinctCount(min(self.k, other.k))
        out.add_hashes(np.concatenate([self.hashes, other.hashes]))
        return out

    @property
    def exact(self) -> bool:
        return self.hashes.size < self.k

    def estimate(self) -> float:
        if self.exact:
            return float(self.hashes.size)
        return (self.k - 1) / ((float(self.hashes[-1]) + 1.0) / _MAX_U64)

    def relative_error(self) -> float:
        """Relative standard error of ``estimate`` (0 while exact)."""
        return 0.0 if self.exact else 1.0 / math.sqrt(self.k - 2)


class CategoryCounts:
    """Counts per level: exact up to ``cap`` levels, a Misra-Gries summary beyond."""

    def __init__(self, cap: int = DEFAULT_CATEGORY_CAP, distinct_k: int = DEFAULT_DISTINCT_K):
        if cap < 1:
            raise SketchError(f"category cap must be at least 1, got {cap}")
        self.cap = int(cap)
        self.counts: dict[str, int] = {}
        self.n = 0
        self.distinct: DistinctCount | None = None  # made when the levels pass the cap
        self._distinct_k = int(distinct_k)

    def add_counts(self, counts: dict[str, int]) -> None:
        self.n += int(sum(counts.values()))
        merged = dict(self.counts)
        for k, c in counts.items():
            merged[k] = merged.get(k, 0) + int(c)
        if self.distinct is None and len(merged) > self.cap:
            self.distinct = DistinctCount(self._distinct_k)
            self.distinct.add_hashes(_text_hashes(list(self.counts)))
        if self.distinct is not None:
            self.distinct.add_hashes(_text_hashes(list(counts)))
        self.counts = self._shrink(merged)

    def _shrink(self, counts: dict[str, int]) -> dict[str, int]:
        if len(counts) <= self.cap:
            return counts
        # Misra-Gries: subtract the (cap+1)-th largest count from all, keep the positive.
        cut = sorted(counts.values(), reverse=True)[self.cap]
        return {k: c - cut for k, c in counts.items() if c > cut}

    def merge(self, other: CategoryCounts) -> CategoryCounts:
        if other.cap != self.cap:
            raise SketchError(f"cannot merge category counts of different caps ({self.cap} and {other.cap})")
        out = CategoryCounts(self.cap, self._distinct_k)
        out.n = self.n + other.n
        merged = dict(self.counts)
        for k, c in other.counts.items():
            merged[k] = merged.get(k, 0) + c
        if self.distinct is not None or other.distinct is not None or len(merged) > self.cap:
            parts = [d for d in (self.distinct, other.distinct) if d is not None]
            d = DistinctCount(self._distinct_k)
            for p in parts:
                d = d.merge(p)
            # exact summaries know all their levels
            for s in (self, other):
                if s.distinct is None:
                    d.add_hashes(_text_hashes(list(s.counts)))
            out.distinct = d
        out.counts = out._shrink(merged)
        return out

    @property
    def exact(self) -> bool:
        return self.distinct is None

    @property
    def other(self) -> int:
        """Rows not in ``counts`` (0 while exact)."""
        return self.n - sum(self.counts.values())

    def levels(self) -> int:
        return len(self.counts) if self.distinct is None else max(len(self.counts), round(self.distinct.estimate()))

    def count_error(self) -> float:
        """Every count is at most this much below the true count (0 while exact)."""
        return self.other / (self.cap + 1)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cap": self.cap, "n": self.n, "counts": self.counts, "distinct_k": self._distinct_k}
        if self.distinct is not None:
            d["distinct"] = _b64(self.distinct.hashes, "<u8")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoryCounts:
        out = cls(d["cap"], d.get("distinct_k", DEFAULT_DISTINCT_K))
        out.n = int(d["n"])
        out.counts = {str(k): int(v) for k, v in d["counts"].items()}
        if "distinct" in d:
            out.distinct = DistinctCount(out._distinct_k)
            out.distinct.hashes = _unb64(d["distinct"], "<u8")
        return out


# --------------------------------------------------------------------------- columns and tables


class ColumnSketch:
    """One column: rows, missing values, and its kind's statistics."""

    def __init__(self, kind: str, *, sample: int = DEFAULT_SAMPLE, category_cap: int = DEFAULT_CATEGORY_CAP):
        if kind not in (NUMERIC, CATEGORICAL):
            raise SketchError(f"unknown column kind {kind!r}")
        self.kind = kind
        self.rows = 0
        self.missing = 0
        self.moments = Moments() if kind == NUMERIC else None
        self.sample = RowSample(sample) if kind == NUMERIC else None
        self.cats = CategoryCounts(category_cap) if kind == CATEGORICAL else None

    def add(self, arr: Any, keys: np.ndarray, name: str = "column") -> None:
        """Add an Arrow array whose rows have priorities ``keys``."""
        self.rows += len(arr)
        if self.kind == NUMERIC:
            try:
                x = numeric_values(arr)
            except ValueError as exc:
                raise SketchError(f"column {name!r}: {exc}") from None
            finite = np.isfinite(x)
            self.missing += int(x.size - finite.sum())
            x, k = (x, keys) if finite.all() else (x[finite], keys[finite])
            self.moments = self.moments.merge(Moments.of(x))
            self.sample.add(x, k)
        else:
            counts, missing = category_counts(arr)
            self.missing += missing
            self.cats.add_counts(counts)

    def merge(self, other: ColumnSketch) -> ColumnSketch:
        if other.kind != self.kind:
            raise SketchError(f"cannot merge a {self.kind} column with a {other.kind} one")
        out = ColumnSketch.__new__(ColumnSketch)
        out.kind, out.rows, out.missing = self.kind, self.rows + other.rows, self.missing + other.missing
        out.moments = self.moments.merge(other.moments) if self.moments is not None else None
        out.sample = self.sample.merge(other.sample) if self.sample is not None else None
        out.cats = self.cats.merge(other.cats) if self.cats is not None else None
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "rows": self.rows, "missing": self.missing}
        if self.kind == NUMERIC:
            d.update(moments=self.moments.to_dict(), sample=self.sample.to_dict())
        else:
            d["categories"] = self.cats.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnSketch:
        out = cls.__new__(cls)
        out.kind, out.rows, out.missing = d["kind"], int(d["rows"]), int(d["missing"])
        out.moments = Moments.from_dict(d["moments"]) if out.kind == NUMERIC else None
        out.sample = RowSample.from_dict(d["sample"]) if out.kind == NUMERIC else None
        out.cats = CategoryCounts.from_dict(d["categories"]) if out.kind == CATEGORICAL else None
        return out


class TableSketch:
    """Sketches of the columns of a table, from Arrow batches of consecutive rows.

    Row priorities come from the global row number (``first_row`` + position), so
    partitions that know where they start give, merged, what one pass gives.
    """

    def __init__(self, kinds: dict[str, str], *, sample: int = DEFAULT_SAMPLE,
                 category_cap: int = DEFAULT_CATEGORY_CAP, seed: int = 0):
        self.kinds = dict(kinds)
        self.seed = int(seed)
        self.n_rows = 0
        self.columns = {c: ColumnSketch(k, sample=sample, category_cap=category_cap) for c, k in kinds.items()}

    def add_batch(self, batch: Any, first_row: int) -> None:
        """Add a ``pyarrow.RecordBatch`` or ``Table`` whose first row is row ``first_row``."""
        names = batch.schema.names
        absent = [c for c in self.columns if c not in names]
        if absent:
            raise SketchError(f"the data lacks columns {absent}")
        keys = row_priorities(np.arange(first_row, first_row + batch.num_rows), self.seed)
        for c, sk in self.columns.items():
            sk.add(batch.column(names.index(c)), keys, c)
        self.n_rows += batch.num_rows

    def add_frame(self, df: Any, first_row: int = 0, batch_rows: int = 131_072) -> None:
        """Add a pandas DataFrame, ``batch_rows`` at a time."""
        import pyarrow as pa

        for start in range(0, len(df), batch_rows):
            part = df.iloc[start:start + batch_rows][list(self.columns)]
            self.add_batch(pa.Table.from_pandas(part, preserve_index=False), first_row + start)

    def merge(self, other: TableSketch) -> TableSketch:
        if other.kinds != self.kinds:
            raise SketchError(f"cannot merge sketches of different columns ({sorted(self.kinds)} and {sorted(other.kinds)})")
        if other.seed != self.seed:
            raise SketchError("cannot merge sketches made with different seeds")
        out = TableSketch.__new__(TableSketch)
        out.kinds, out.seed, out.n_rows = dict(self.kinds), self.seed, self.n_rows + other.n_rows
        out.columns = {c: sk.merge(other.columns[c]) for c, sk in self.columns.items()}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "seed": self.seed, "n_rows": self.n_rows,
                "columns": {c: sk.to_dict() for c, sk in self.columns.items()}}

    @classmethod
    def from_dict(cls, d: Any, where: str = "sketch") -> TableSketch:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise SketchError(f"{where} is not a kubeloop sketch (expected format {FORMAT!r})")
        out = cls.__new__(cls)
        out.seed, out.n_rows = int(d["seed"]), int(d["n_rows"])
        out.columns = {c: ColumnSketch.from_dict(v) for c, v in d["columns"].items()}
        out.kinds = {c: sk.kind for c, sk in out.columns.items()}
        return out


def merge_all(sketches: list[TableSketch]) -> TableSketch:
    """The merge of one or more sketches (pairwise, so the cost is that of a tree)."""
    if not sketches:
        raise SketchError("no sketches to merge")
    parts = list(sketches)
    while len(parts) > 1:
        parts = [parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def dumps(sketch: TableSketch) -> bytes:
    return json.dumps(sketch.to_dict(), allow_nan=False, separators=(",", ":")).encode()


def loads(data: bytes | str, where: str = "sketch") -> TableSketch:
    try:
        d = json.loads(data)
    except ValueError as exc:
        raise SketchError(f"{where} is not JSON ({exc})") from None
    return TableSketch.from_dict(d, where)
