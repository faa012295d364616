"""Row fingerprints: which rows a model was trained and validated on, in a form that scales.

A fingerprint is a 64-bit hash of one row's values in a chosen list of columns
(the features and the target). It is computed from a *canonical form* defined
here, not from ``pandas.util.hash_pandas_object``, whose output depends on the
dtype (int 3 and float 3.0 hash differently) and is not promised stable across
pandas versions. The same values give the same fingerprint in any process, on
any machine, with any pandas or numpy version.

Canonical form of one value (``CANONICAL_VERSION`` 1):

- missing (None, NaN, NaT, pd.NA): one fixed code, whatever the dtype;
- a number (bool, int, float, or text that reads as a finite number, e.g. ``"3"``
  or ``" 3.0 "``): the IEEE-754 bits of its float64 value, with -0.0 as 0.0, so
  ``True``, ``1``, ``1.0`` and ``"1"`` are equal. An integer beyond 2**53 (where
  float64 is not exact) keeps its own 64-bit integer instead;
- the texts ``true``/``false`` (any case): as the numbers 1 and 0, since a CSV
  reader may give either;
- a date or time: nanoseconds since 1970-01-01 UTC (naive times are read as UTC);
- any other value: the BLAKE2b-64 of its UTF-8 text (``str(value)``).

Each code is tagged with its kind and mixed with splitmix64 (exact integer
arithmetic, so no platform can round differently). A row's fingerprint folds the
column codes in the order of the sorted column names, each seeded with the hash
of its name, so column order does not matter but column names do. Two different
rows share a fingerprint with probability about n**2 / 2**65.

A ``FingerprintSet`` holds the fingerprints of a model's rows: an exact sorted
uint64 array up to ``exact_limit`` rows (8 bytes a row), above that a Bloom filter
sized for the stated false-positive rate (1.8 bytes a row at 0.1 %). A false
positive only makes a test row look seen, so it is left out of the comparison:
the shared test set shrinks at random, it is never contaminated. ``to_bytes`` /
``from_bytes`` store it as a small ``.npz`` file (no pickle).

With an id column (``id_column`` in the schema: the split keeps each id's rows
together) the set also holds the fingerprints of the ids, and a test row counts
as seen when its id is one the model trained on, whatever its values: the same
customer with a changed feature is still a customer the model has seen, and on
low-cardinality data matching by value would call most unseen rows seen. Rows
with no id fall back to matching by value.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.errors import UserError

CANONICAL_VERSION = 1
FORMAT = "kubeloop-row-fingerprints"
# Where a registry version keeps the fingerprints of its training and validation rows.
REGISTRY_FILE = "rows/fingerprints.npz"
DEFAULT_EXACT_LIMIT = 1_000_000
DEFAULT_FALSE_POSITIVE_RATE = 0.001

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Kind tags keep e.g. the number 5 and the time 5 ns apart.
_TAG_MISSING = np.uint64(0x6D697373696E6721)
_TAG_NUMBER = np.uint64(0x1)
_TAG_BIGINT = np.uint64(0x2)
_TAG_TIME = np.uint64(0x3)
_TAG_TEXT = np.uint64(0x4)
_EXACT_FLOAT_INT = 2**53


class FingerprintError(UserError, ValueError):
    """Rows cannot be fingerprinted or a stored set cannot be read; the message says why."""


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array (wrapping arithmetic, bit-exact everywhere)."""
    z = z.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _tagged(tag: np.uint64, bits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(bits.astype(np.uint64) ^ (tag * _GOLDEN))


SIGNIFICANT_DIGITS = 15


def _round_significant(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to 15 significant digits: what R's write.csv, Excel and
    most CSV writers keep of a float64 (pandas and Parquet keep all 17), so the same
    row exported by two tools hashes alike. Numbers that differ only in the 16th or
    17th digit (and integers between 1e15 and 2**53) share a code: like a Bloom
    filter's false positive, that can only leave a row out of the comparison."""
    v = values.astype(np.float64, copy=True)
    finite = np.isfinite(v) & (v != 0.0)
    if finite.any():
        x = v[finite]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            shift = SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(np.abs(x)))
            # Powers of ten up to 1e22 are exact floats, so an integer divided or
            # multiplied by one is the float nearest the decimal, as parsing it gives.
            power = np.power(10.0, np.abs(shift))
            up = shift >= 0
            scaled = np.where(up, x * power, x / power)
            whole = np.rint(scaled)
            rounded = np.where(up, whole / power, whole * power)
        # The scaling is off by an ulp, which matters only where the 16th digit is a
        # 5 (a tie) or at a power of ten: there, and beyond exact powers, the exact
        # decimal rounding a CSV writer does is used (a few values in a thousand, so
        # the vectorised path stays the fast one).
        frac = np.abs(scaled - np.floor(scaled) - 0.5)
        exact = ~np.isfinite(rounded) | (np.abs(shift) > 22) | (frac < 1e-3)
        exact |= np.abs(np.abs(scaled) - 10.0 ** (SIGNIFICANT_DIGITS - 1)) < 1.0
        if exact.any():
            rounded[exact] = [float(f"{value:.{SIGNIFICANT_DIGITS}g}") for value in x[exact]]
        v[finite] = rounded
    return v


def _float_codes(values: np.ndarray) -> np.ndarray:
    """Codes of float64 values (NaN -> missing), at 15 significant digits."""
    v = _round_significant(np.asarray(values, dtype=np.float64))
    v = np.where(v == 0.0, 0.0, v)  # -0.0 is 0.0
    missing = np.isnan(v)
    codes = _tagged(_TAG_NUMBER, np.where(missing, 0.0, v).view(np.uint64))
    codes[missing] = _MISSING_CODE
    return codes


def _int_codes(values: np.ndarray) -> np.ndarray:
    ints = values.astype(np.int64, copy=False)
    big = (ints > _EXACT_FLOAT_INT) | (ints < -_EXACT_FLOAT_INT)
    codes = _float_codes(ints.astype(np.float64))
    if big.any():
        codes[big] = _tagged(_TAG_BIGINT, ints[big].view(np.uint64))
    return codes


def _time_codes(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = values.to_numpy().astype("datetime64[ns]").view(np.int64)
    missing = ns == np.iinfo(np.int64).min
    codes = _tagged(_TAG_TIME, ns.view(np.uint64))
    codes[missing] = _MISSING_CODE
    return codes


def _scalar_code(value: Any) -> int:
    """The code of one value of an object column (the slow path, once per distinct value)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return int(_MISSING_CODE)
    if isinstance(value, (bool, np.bool_)):
        return int(_float_codes(np.array([float(value)]))[0])
    if isinstance(value, (int, np.integer)):
        return (
            int(_int_codes(np.array([int(value)], dtype=np.int64))[0])
            if abs(int(value)) < 2**63
            else _big_text(value)
        )
    if isinstance(value, (float, np.floating)):
        return int(_float_codes(np.array([float(value)]))[0])
    if isinstance(value, (pd.Timestamp, _dt.datetime, np.datetime64, _dt.date)):
        ts = pd.Timestamp(value)
        if ts is pd.NaT:
            return int(_MISSING_CODE)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return int(
            _tagged(_TAG_TIME, np.array([ts.as_unit("ns").value], dtype=np.int64).view(np.uint64))[
                0
            ]
        )
    text = str(value)
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return int(_float_codes(np.array([1.0 if lowered == "true" else 0.0]))[0])
    try:
        number = float(stripped)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        if (
            number.is_integer()
            and abs(number) > _EXACT_FLOAT_INT
            and stripped.lstrip("+-").isdigit()
        ):
            exact = int(stripped)
            if abs(exact) < 2**63:
                return int(_int_codes(np.array([exact], dtype=np.int64))[0])
        return int(_float_codes(np.array([number]))[0])
    return int(_tagged(_TAG_TEXT, np.array([_text_hash(text)], dtype=np.uint64))[0])


def _big_text(value: Any) -> int:
    return int(_tagged(_TAG_TEXT, np.array([_text_hash(str(value))], dtype=np.uint64))[0])


_MISSING_CODE = _mix(np.array([_TAG_MISSING], dtype=np.uint64))[0]


def column_codes(values: pd.Series) -> np.ndarray:
    """One uint64 code per value of a column, from the canonical form (module docstring)."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = [_scalar_code(c) for c in dtype.categories]
        lookup = np.array(cats + [int(_MISSING_CODE)], dtype=np.uint64)
        return lookup[values.cat.codes.to_numpy()]  # code -1 picks the trailing missing
    if pd.api.types.is_bool_dtype(dtype):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        return _float_codes(numbers)
    if pd.api.types.is_integer_dtype(dtype):
        if values.hasnans:
            # Nullable integers with gaps: exact where present.
            present = values.notna().to_numpy()
            codes = np.full(len(values), _MISSING_CODE, dtype=np.uint64)
            codes[present] = _int_codes(values[present].to_numpy(dtype="int64"))
            return codes
        return _int_codes(values.to_numpy(dtype="int64"))
    if pd.api.types.is_float_dtype(dtype):
        return _float_codes(values.to_numpy(dtype="float64", na_value=np.nan))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return _time_codes(values)
    # Object, string and anything else: one canonical code per distinct value.
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = np.array([_scalar_code(u) for u in uniques] + [int(_MISSING_CODE)], dtype=np.uint64)
    return lookup[codes]


def row_fingerprints(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The uint64 fingerprint of each row of ``df`` over ``columns`` (order does not matter)."""
    names = sorted(dict.fromkeys(str(c) for c in columns))
    if not names:
        raise FingerprintError("row fingerprints need at least one column")
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise FingerprintError(
            f"cannot fingerprint rows: column(s) {missing} are not in the data "
            f"(columns: {[str(c) for c in df.columns][:20]})"
        )
    h = np.full(len(df), np.uint64(CANONICAL_VERSION), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in names:
            values = df[name]
            if isinstance(values, pd.DataFrame):
                raise FingerprintError(f"column {name!r} appears more than once in the data")
            seed = np.uint64(_text_hash(name))
            h = _mix(h * _GOLDEN + _mix(column_codes(values) ^ seed))
    return h


# --- the set ------------------------------------------------------------------------------


def bloom_parameters(n: int, false_positive_rate: float) -> tuple[int, int]:
    """Bits ``m`` and hash count ``k`` of a Bloom filter for ``n`` items at the rate."""
    n = max(int(n), 1)
    m = math.ceil(-n * math.log(false_positive_rate) / (math.log(2) ** 2))
    m = max(64, (m + 63) // 64 * 64)
    k = max(1, round(m / n * math.log(2)))
    return m, k


def _bloom_positions(hashes: np.ndarray, m: int, k: int) -> np.ndarray:
    """Bit positions (n, k) by double hashing (Kirsch-Mitzenmacher) of the fingerprints."""
    h1 = _mix(hashes ^ np.uint64(0x5851F42D4C957F2D))
    h2 = _mix(hashes ^ np.uint64(0x14057B7EF767814F)) | np.uint64(1)
    steps = np.arange(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (h1[:, None] + steps[None, :] * h2[:, None]) % np.uint64(m)


@dataclass
class FingerprintSet:
    """The fingerprints of a set of rows; ``contains`` answers membership for many at once."""

    columns: list[str]
    kind: str  # "exact" | "bloom"
    n_rows: int
    hashes: np.ndarray | None = None  # exact: sorted unique uint64
    bits: np.ndarray | None = None  # bloom: packed uint8, little bit order
    m: int = 0
    k: int = 0
    false_positive_rate: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    # The fingerprints of the rows' ids (a set over the one id column), when there is one.
    ids: FingerprintSet | None = None

    @classmethod
    def from_hashes(
        cls,
        hashes: np.ndarray,
        columns: Sequence[str],
        *,
        exact_limit: int = DEFAULT_EXACT_LIMIT,
        false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE,
    ) -> FingerprintSet:
        if not 0 < false_positive_rate < 1:
            raise FingerprintError(
                f"false_positive_rate must be in (0, 1), got {false_positive_rate}"
            )
        unique = np.unique(np.asarray(hashes, dtype=np.uint64))
        cols = sorted(dict.fromkeys(str(c) for c in columns))
        if unique.size <= exact_limit:
            return cls(cols, "exact", int(unique.size), hashes=unique)
        m, k = bloom_parameters(unique.size, false_positive_rate)
        bits = np.zeros(m // 8, dtype=np.uint8)
        # Hot for millions of rows: positions in chunks keep memory at n*k*8 bytes per chunk.
        for start in range(0, unique.size, 1 << 20):
            pos = _bloom_positions(unique[start : start + (1 << 20)], m, k).ravel()
            np.bitwise_or.at(
                bits,
                (pos >> np.uint64(3)).astype(np.int64),
                (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)),
            )
        return cls(
            cols,
            "bloom",
            int(unique.size),
            bits=bits,
            m=m,
            k=k,
            false_positive_rate=float(false_positive_rate),
        )

    @classmethod
    def from_frames(
        cls, frames: Iterable[pd.DataFrame], columns: Sequence[str], **kwargs: Any
    ) -> FingerprintSet:
        """The set of every row of ``frames`` (e.g. the train and valid splits)."""
        parts = [row_fingerprints(f, columns) for f in frames]
        hashes = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
        return cls.from_hashes(hashes, columns, **kwargs)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: is each fingerprint in the set (Bloom: may be a false positive)."""
        h = np.asarray(hashes, dtype=np.uint64)
        if self.kind == "exact":
            assert self.hashes is not None
            if self.hashes.size == 0:
                return np.zeros(h.shape, dtype=bool)
            at = np.searchsorted(self.hashes, h)
            return self.hashes[np.minimum(at, self.hashes.size - 1)] == h
        assert self.bits is not None
        out = np.ones(h.shape, dtype=bool)
        for start in range(0, h.size, 1 << 20):
            pos = _bloom_positions(h[start : start + (1 << 20)], self.m, self.k)
            byte = self.bits[(pos >> np.uint64(3)).astype(np.int64)]
            hit = (byte >> (pos & np.uint64(7)).astype(np.uint8)) & np.uint8(1)
            out[start : start + (1 << 20)] = hit.all(axis=1)
        return out

    @property
    def id_column(self) -> str | None:
        return None if self.ids is None else self.ids.columns[0]

    def contains_rows(self, df: pd.DataFrame) -> np.ndarray:
        """``contains`` for the rows of ``df``: by id when the set has ids and ``df``
        the id column (rows without an id: by value), else on this set's own columns."""
        id_col = self.id_column
        if id_col is None or id_col not in df.columns:
            return self.contains(row_fingerprints(df, self.columns))
        seen = self.ids.contains(row_fingerprints(df, [id_col]))
        no_id = df[id_col].isna().to_numpy()
        if no_id.any():
            seen[no_id] = self.contains(row_fingerprints(df[no_id], self.columns))
        return seen

    def describe(self) -> dict[str, Any]:
        """What the set holds, for reports (JSON-able)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "n_rows": self.n_rows,
            "columns": list(self.columns),
            "canonical_version": CANONICAL_VERSION,
        }
        if self.kind == "bloom":
            out.update(false_positive_rate=self.false_positive_rate, bits=self.m, hashes=self.k)
        else:
            out["false_positive_rate"] = 0.0
        return out

    def to_bytes(self) -> bytes:
        header = {**self.describe(), "format": FORMAT, **self.meta}
        if self.ids is not None:
            header["ids"] = self.ids.describe()
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        }
        if self.kind == "exact":
            arrays["hashes"] = self.hashes
        else:
            arrays["bits"] = self.bits
        if self.ids is not None:
            arrays["id_" + ("hashes" if self.ids.kind == "exact" else "bits")] = (
                self.ids.hashes if self.ids.kind == "exact" else self.ids.bits
            )
        buf = io.BytesIO()
        # Fingerprints are random bits: compression would not shrink them, but a
        # Bloom filter of a small set is mostly zeros.
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FingerprintSet:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                arrays = {name: z[name] for name in z.files if name != "header"}
        except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
            raise FingerprintError(f"not a row-fingerprint file: {exc}") from None
        if header.get("format") != FORMAT:
            raise FingerprintError(f"not a row-fingerprint file (format {header.get('format')!r})")
        if header.get("canonical_version") != CANONICAL_VERSION:
            raise FingerprintError(
                f"row fingerprints of canonical form v{header.get('canonical_version')} cannot be "
                f"compared with this version's v{CANONICAL_VERSION}"
            )
        known = {
            "kind",
            "n_rows",
            "columns",
            "canonical_version",
            "format",
            "false_positive_rate",
            "bits",
            "hashes",
            "ids",
        }
        meta = {k: v for k, v in header.items() if k not in known}
        try:
            out = cls._from_parts(header, arrays, "")
            if header.get("ids"):
                out.ids = cls._from_parts(header["ids"], arrays, "id_")
        except KeyError as exc:
            raise FingerprintError(f"row-fingerprint file lacks {exc}") from None
        out.meta = meta
        return out

    @classmethod
    def _from_parts(cls, header: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> FingerprintSet:
        if header["kind"] == "exact":
            return cls(
                header["columns"],
                "exact",
                int(header["n_rows"]),
                hashes=arrays[prefix + "hashes"].astype(np.uint64),
            )
        return cls(
            header["columns"],
            "bloom",
            int(header["n_rows"]),
            bits=arrays[prefix + "bits"],
            m=int(header["bits"]),
            k=int(header["hashes"]),
            false_positive_rate=float(header["false_positive_rate"]),
        )


def fingerprint_columns(schema: dict[str, Any]) -> list[str]:
    """The columns a model's rows are identified by: its input features and the target."""
    from kubeloop.schema import feature_columns

    return sorted(set(feature_columns(schema)) | {schema["target"]})


def rows_file(
    frames: Iterable[pd.DataFrame],
    schema: dict[str, Any],
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE,
) -> bytes:
    """The file a registry version stores as ``REGISTRY_FILE``: the fingerprints of every
    row of ``frames`` (the train and valid splits) over the schema's features and target,
    and of their ids when the schema has an id column."""
    kw = {"exact_limit": exact_limit, "false_positive_rate": false_positive_rate}
    columns, id_col = fingerprint_columns(schema), schema.get("id_column")
    row_parts: list[np.ndarray] = []
    id_parts: list[np.ndarray] | None = [] if id_col else None
    # One frame at a time, keeping only its fingerprints: ``frames`` may be a
    # file's batches (``tables.iter_frames``), never held together.
    for frame in frames:
        row_parts.append(row_fingerprints(frame, columns))
        if id_parts is not None:
            if id_col in frame.columns:
                id_parts.append(row_fingerprints(frame[frame[id_col].notna()], [id_col]))
            else:
                id_parts = None

    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)

    rows = FingerprintSet.from_hashes(joined(row_parts), columns, **kw)
    if id_parts:
        rows.ids = FingerprintSet.from_hashes(joined(id_parts), [id_col], **kw)
    return rows.to_bytes()
