"""Column type evidence gathered batch by batch, and the pure rule that turns it into a kind.

Streaming ingest cannot look at a whole column at once, so the first pass keeps,
per column, only counts and capped sets (``Evidence``) that merge across batches
(or partitions) into the evidence of the whole column; ``decide`` then applies
ingest's rules (see ``kubeloop.components.ingest``) to that evidence:

- a string column is numeric (datetime) when at least ``PARSE_THRESHOLD`` of its
  non-missing values parse as numbers (ISO datetimes), counted over every value
  rather than on a sample first;
- boolean when its distinct values are one true/false pair;
- text when it has more than ``max_categories`` distinct values and more than
  ``max_category_fraction`` of the rows, else categorical with its sorted levels.

Distinct values are kept exactly up to ``LEVEL_CAP``; past it a k-minimum-values
sketch (``DistinctCount``, 1.6 % relative error) estimates how many there are. A
column with more than ``LEVEL_CAP`` distinct strings is text even when the estimate
is under the row fraction: its levels are not kept, so it cannot be a category.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from kubeloop.monitoring.sketch import DistinctCount

# Most distinct strings a column's evidence keeps; also the most levels a
# streamed category can have.
LEVEL_CAP = 100_000
PARSE_THRESHOLD = 0.99
BOOLEAN_PAIRS = (("true", "false"), ("yes", "no"), ("t", "f"), ("y", "n"))


def hash_values(values: pa.Array) -> np.ndarray:
    """64-bit hashes of the values (the same value, the same hash, in any batch)."""
    return pd.util.hash_array(np.asarray(values.to_numpy(zero_copy_only=False), dtype=object))


@dataclass
class Evidence:
    """What one column's batches showed. ``native`` is the Arrow type family of a
    column that is not strings (``"int"``, ``"float"``, ...), None for strings."""

    native: str | None = None
    n_rows: int = 0
    n_null: int = 0  # nulls as read
    n_missing: int = 0  # nulls and missing markers
    n_number: int = 0  # non-missing strings that parse as numbers
    n_datetime: int = 0  # non-missing strings that parse as ISO datetimes
    levels: set[Any] | None = field(default_factory=set)  # None once past LEVEL_CAP
    declared: set[str] = field(default_factory=set)  # a category column's labels, used or not
    distinct: DistinctCount | None = None  # made when the levels pass the cap
    # Row-number evidence: every value an integer, none missing, each one more than
    # the last across batches; first and last value seen.
    sequence: bool = True
    first: Any = None
    last: Any = None

    def add_levels(self, uniques: pa.Array) -> None:
        """Merge one batch's distinct non-missing values."""
        if self.levels is not None:
            self.levels.update(uniques.to_pylist())
            if len(self.levels) <= LEVEL_CAP:
                return
            self.distinct = DistinctCount()
            self.distinct.add_hashes(hash_values(pa.array(sorted(self.levels, key=str), type=uniques.type)))
            self.levels = None
            return
        assert self.distinct is not None
        self.distinct.add_hashes(hash_values(uniques))

    def add_sequence(self, values: pa.Array) -> None:
        """Track whether the values so far count 0..n-1 or 1..n without a gap."""
        if not self.sequence or len(values) == 0:
            return
        if not pa.types.is_integer(values.type) or values.null_count:
            self.sequence = False
            return
        v = values.to_numpy()
        start_ok = v[0] in (0, 1) if self.last is None else v[0] == self.last + 1
        self.sequence = bool(start_ok and np.all(np.diff(v) == 1))
        if self.first is None:
            self.first = int(v[0])
        self.last = int(v[-1])

    def merge(self, other: Evidence) -> Evidence:
        """The evidence of this column's rows followed by ``other``'s."""
        out = Evidence(native=self.native if self.native == other.native else _wider(self.native, other.native),
                       n_rows=self.n_rows + other.n_rows, n_null=self.n_null + other.n_null,
                       n_missing=self.n_missing + other.n_missing, declared=self.declared | other.declared,
                       n_number=self.n_number + other.n_number, n_datetime=self.n_datetime + other.n_datetime)
        if self.levels is not None and other.levels is not None and len(self.levels | other.levels) <= LEVEL_CAP:
            out.levels = self.levels | other.levels
        else:
            out.levels = None
            out.distinct = DistinctCount()
            for part in (self, other):
                if part.levels is not None:
                    if part.levels:
                        out.distinct.add_hashes(hash_values(pa.array(list(part.levels))))
                else:
                    out.distinct = out.distinct.merge(part.distinct)
        empty = (self.first is None, other.first is None)
        out.sequence = self.sequence and other.sequence and (
            any(empty) or other.first == self.last + 1)
        out.first = self.first if self.first is not None else other.first
        out.last = other.last if other.last is not None else self.last
        return out

    @property
    def n_present(self) -> int:
        return self.n_rows - self.n_missing

    def n_distinct(self) -> float:
        """Distinct non-missing values: exact under the cap, else the sketch's estimate."""
        return float(len(self.levels)) if self.levels is not None else self.distinct.estimate()


def _wider(a: str | None, b: str | None) -> str | None:
    return "float" if {a, b} == {"int", "float"} else None


@dataclass(frozen=True)
class Kind:
    """The decision for one column: its kind, how the values are written, and the
    sorted levels of a boolean or categorical column."""

    kind: str  # numeric, boolean, datetime, categorical, text
    levels: tuple[str, ...] = ()
    lower: bool = False  # lower-case the values first (a boolean with mixed spellings)
    integer: bool = False  # integers with nothing missing stay integers
    reason: str = ""


def boolean_labels(uniques: list[str]) -> bool | None:
    """None if the values are not one true/false pair; else whether to lower-case them."""
    lowered = {u.lower() for u in uniques}
    if not lowered or not any(lowered <= set(pair) for pair in BOOLEAN_PAIRS):
        return None
    return len(set(uniques)) > len(lowered)


def is_text(n_unique: float, n_rows: int, max_categories: int, max_fraction: float) -> bool:
    return n_unique > max_categories and n_unique > max_fraction * n_rows


def decide(ev: Evidence, max_categories: int, max_fraction: float) -> Kind:
    """The kind of a column from its evidence: ingest's rules, one column at a time."""
    if ev.native is not None:
        if ev.native == "bool":
            return Kind("boolean", ("False", "True"))
        if ev.native == "datetime":
            return Kind("datetime")
        if ev.native == "dict":
            return _decide_labels(ev, max_categories, max_fraction)
        # Integers with a missing value become floats (scikit-learn wants NaN).
        return Kind("numeric", integer=ev.native == "int" and ev.n_missing == 0)
    n_present = ev.n_present
    if n_present == 0:
        return Kind("numeric", reason="every value is missing")
    if ev.n_number >= PARSE_THRESHOLD * n_present:
        return Kind("numeric")
    if ev.levels is not None and len(ev.levels) <= 2 * len(BOOLEAN_PAIRS[0]):
        lower = boolean_labels(list(ev.levels))
        if lower is not None:
            values = {v.lower() for v in ev.levels} if lower else ev.levels
            return Kind("boolean", tuple(sorted(values)), lower=lower)
    if ev.n_datetime >= PARSE_THRESHOLD * n_present:
        return Kind("datetime")
    if ev.levels is None:
        reason = (f"about {ev.n_distinct():,.0f} distinct values" if is_text(
            ev.n_distinct(), ev.n_rows, max_categories, max_fraction)
            else f"more than {LEVEL_CAP:,} distinct values, too many levels to keep")
        return Kind("text", reason=reason)
    if is_text(len(ev.levels), ev.n_rows, max_categories, max_fraction):
        return Kind("text", reason=f"{len(ev.levels):,} distinct values")
    return Kind("categorical", tuple(sorted(ev.levels)))


def _decide_labels(ev: Evidence, max_categories: int, max_fraction: float) -> Kind:
    """A category column with clean string labels: its used labels decide, and a
    category keeps every declared label (as the in-memory rule does)."""
    if ev.n_present == 0:
        return Kind("numeric", reason="every value is missing")
    used = ev.levels if ev.levels is not None else set()
    if ev.levels is not None and len(used) <= 2 * len(BOOLEAN_PAIRS[0]):
        lower = boolean_labels(list(used))
        if lower is not None:
            if lower:
                return Kind("boolean", tuple(sorted({v.lower() for v in used})), lower=True)
            # Declared but unseen labels of the same pair are kept.
            keep = ev.declared if boolean_labels(list(ev.declared)) is False else used
            return Kind("boolean", tuple(sorted(keep)))
    if ev.levels is None or is_text(len(used), ev.n_rows, max_categories, max_fraction):
        return Kind("text", reason=f"about {ev.n_distinct():,.0f} distinct values")
    return Kind("categorical", tuple(sorted(ev.declared)))


def is_unique(ev: Evidence) -> bool:
    """Whether the column's values are all different (what row names are). Past the
    cap and not a sequence, judged by the sketch: within 3 standard errors of the rows."""
    if ev.sequence and ev.first is not None:
        return True
    if ev.n_missing > 1:
        return False
    if ev.levels is not None:
        return len(ev.levels) + ev.n_missing == ev.n_rows
    return ev.distinct.estimate() >= ev.n_present * (1 - 3 * ev.distinct.relative_error())
