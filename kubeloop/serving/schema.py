"""Request parsing and validation: plain values in, checked rows or typed errors out.

Nothing here sees HTTP. The predictor hands the decoded body (or raw bytes) to
``parse_v1``/``parse_v2`` and the rows to ``validate``; a ``RequestRejected``
carries every ``Problem`` found (row, field, reason code, message), and the
predictor maps it to a 400 in one place.

The contract is ``model/kubeloop.json``'s ``features`` (name, kind, categories):

- every feature must be present in every row (``missing_field``); ``null`` is an
  explicit missing value, which the trained pipeline imputes;
- fields not in the schema are refused (``unknown_field``): a typo must not turn
  into a silently imputed value; columns the training data had that the model
  does not use (an id, the target, a constant column: ``ignored_columns`` in
  ``kubeloop.json``) are accepted and ignored, so a row exactly as in the
  training file is scored, as batch scoring does;
- ``numeric``: a JSON number, finite (``wrong_type`` for text or booleans,
  ``out_of_range`` non-finite or beyond float32, the type the model is fed);
- ``categorical``: text, a number or a boolean (as training saw them: 3, 3.0 and
  "3" are one level). A category never seen in training is **accepted**: the
  features step encodes it as "unknown" (``OrdinalEncoder(handle_unknown=
  "use_encoded_value", unknown_value=nan)``), exactly like a missing value, and
  every model family handles that code; the predictor counts such values per
  feature in a metric instead of refusing a customer because of a new region;
- ``boolean``: true/false, 0/1, or the words training read as booleans
  (yes/no, y/n, t/f, true/false); anything else is ``out_of_range``;
- ``datetime``: ISO 8601 text (``2024-05-31T12:00:00Z``; no timezone means UTC),
  between the years 1678 and 2261 (pandas' range); a bare number is
  ``wrong_type`` (no agreed unit), unparseable text ``out_of_range``;
- ``text``: text or null.

Text values longer than ``MAX_TEXT_CHARS`` are ``out_of_range``. A request holds
1 to ``max_rows`` rows (``empty_batch``, ``too_many_rows``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from kubeloop.components.features import _boolean_level, _level

DEFAULT_MAX_ROWS = 1000
MAX_TEXT_CHARS = 1024
# Largest finite float32 (numpy.finfo(numpy.float32).max): the dtype the features step outputs.
FLOAT32_MAX = 3.4028234663852886e38
# Problems listed in one message; the rest are counted ("and 12 more").
MAX_LISTED_PROBLEMS = 20

# Outcomes in the prediction log's ``status`` column besides the rejection reasons:
# answered, or failed inside the predictor (answered 500).
OK = "ok"
FAILED = "failed"
# Reason codes, as they appear in the 400 body, the metrics and the prediction logs.
MALFORMED_JSON = "malformed_json"
INVALID_INPUT = "invalid_input"
EMPTY_BATCH = "empty_batch"
TOO_MANY_ROWS = "too_many_rows"
MISSING_FIELD = "missing_field"
UNKNOWN_FIELD = "unknown_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"

KINDS = ("numeric", "categorical", "boolean", "datetime", "text")

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
# The ISO 8601 shapes Python's datetime.fromisoformat and pandas' ISO8601 parser both
# read the same way; other text goes through pandas (the training code's parser).
_ISO_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:\d{2})?"
)
_MIN_YEAR, _MAX_YEAR = 1678, 2261  # inside pandas' nanosecond timestamp range
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request. ``row`` is None for the request as a whole."""

    reason: str
    message: str
    row: int | None = None
    field: str | None = None

    def text(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return (", ".join(where) + ": " if where else "") + self.message

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason, "message": self.message}


class RequestRejected(ValueError):
    """The request breaks the contract; ``problems`` names each field and row.

    ``rows`` holds what could be read of the rows (for the prediction log), or None
    when the request could not be read as rows at all.
    """

    def __init__(self, problems: list[Problem], rows: list[dict[str, Any]] | None = None):
        self.problems = problems
        self.rows = rows
        super().__init__(self.message)

    @property
    def message(self) -> str:
        shown = [p.text() for p in self.problems[:MAX_LISTED_PROBLEMS]]
        more = len(self.problems) - len(shown)
        head = "invalid request" if len(self.problems) == 1 else f"invalid request ({len(self.problems)} problems)"
        return head + ": " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    @property
    def reason(self) -> str:
        """The first problem's code: the request's rejection reason in metrics."""
        return self.problems[0].reason if self.problems else INVALID_INPUT

    def row_reasons(self) -> dict[int, str]:
        """First reason per row (rows with a problem only)."""
        out: dict[int, str] = {}
        for p in self.problems:
            if p.row is not None and p.row not in out:
                out[p.row] = p.reason
        return out

    def bad_fields(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for p in self.problems:
            if p.row is not None and p.field is not None:
                out.setdefault(p.row, set()).add(p.field)
        return out


def _reject(reason: str, message: str) -> RequestRejected:
    return RequestRejected([Problem(reason, message)])


# --- the contract -----------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    categories: frozenset[str] | None = None


@dataclass(frozen=True)
class RequestSchema:
    """What a request must look like, read from ``kubeloop.json``."""

    features: tuple[Feature, ...]
    max_rows: int = DEFAULT_MAX_ROWS
    # Training columns the model does not use: accepted in a request, never read.
    ignored: frozenset[str] = frozenset()
    names: tuple[str, ...] = field(init=False)
    by_name: dict[str, Feature] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(f.name for f in self.features))
        object.__setattr__(self, "by_name", {f.name: f for f in self.features})

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], *, max_rows: int = DEFAULT_MAX_ROWS) -> RequestSchema:
        raw = meta.get("features")
        if not isinstance(raw, list) or not raw:
            raise ValueError("kubeloop.json has no 'features' list; it is not a kubeloop model")
        feats = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError(f"kubeloop.json features[{i}] has no name")
            kind = item.get("kind")
            if kind not in KINDS:
                raise ValueError(f"kubeloop.json feature {item['name']!r} has unknown kind {kind!r}")
            cats = item.get("categories")
            feats.append(Feature(item["name"], kind, frozenset(str(c) for c in cats) if cats else None))
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        ignored = meta.get("ignored_columns") or []
        if not isinstance(ignored, list) or not all(isinstance(c, str) for c in ignored):
            raise ValueError("kubeloop.json ignored_columns must be a list of column names")
        names = {f.name for f in feats}
        return cls(tuple(feats), max_rows=max_rows, ignored=frozenset(c for c in ignored if c not in names))


# --- envelopes ------------------------------------------------------------------------


def parse_json(body: bytes | str) -> Any:
    """JSON text to values; malformed text (or NaN/Infinity literals) is a RequestRejected."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _reject(MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None


def _check_batch(rows: Any, where: str, max_rows: int) -> list[Any]:
    if not isinstance(rows, list):
        raise _reject(INVALID_INPUT, f"{where} must be a list of rows, got {_type_name(rows)}")
    if not rows:
        raise _reject(EMPTY_BATCH, f"{where} is empty; send at least one row")
    if len(rows) > max_rows:
        raise _reject(
            TOO_MANY_ROWS, f"{where} holds {len(rows)} rows; at most {max_rows} per request (split the batch)"
        )
    return rows


def parse_v1(payload: Any, schema: RequestSchema) -> list[dict[str, Any]]:
    """Rows of a KServe v1 body: ``{"instances": [{feature: value}, ...]}`` (or ``inputs``,
    also in TF Serving's columnar form ``{"inputs": {feature: [value, ...]}}``).

    Every row must be a JSON object keyed by feature name; positional lists are
    refused, because a column order is easy to get silently wrong.
    """
    if isinstance(payload, (bytes, bytearray, str)):
        payload = parse_json(payload)
    if not isinstance(payload, dict):
        raise _reject(
            INVALID_INPUT,
            f'the body must be a JSON object like {{"instances": [{{...}}]}}, got {_type_name(payload)}',
        )
    keys = [k for k in ("instances", "inputs") if k in payload]
    if len(keys) != 1:
        found = "both 'instances' and 'inputs'" if len(keys) == 2 else f"keys {sorted(payload)[:10]}"
        raise _reject(INVALID_INPUT, f"the body must hold exactly one of 'instances' or 'inputs', got {found}")
    data = payload[keys[0]]
    if keys[0] == "inputs" and isinstance(data, dict):
        data = _columns_to_rows(data)
    rows = _check_batch(data, repr(keys[0]), schema.max_rows)
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise RequestRejected(
            [
                Problem(INVALID_INPUT, f"must be an object of feature: value, got {_type_name(rows[i])}", row=i)
                for i in bad
            ]
        )
    return rows


def _columns_to_rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """TF Serving's columnar form, ``{"inputs": {"feature": [v, ...], ...}}``, as rows."""
    bad = [k for k, v in columns.items() if not isinstance(v, list)]
    if bad:
        raise RequestRejected([
            Problem(INVALID_INPUT, "columnar 'inputs' need a list of values per feature", field=str(k)[:100])
            for k in bad[:MAX_LISTED_PROBLEMS]
        ])
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        sizes = {str(k)[:100]: len(v) for k, v in list(columns.items())[:20]}
        raise _reject(INVALID_INPUT, f"columnar 'inputs' must all hold the same number of values, got {sizes}")
    n = lengths.pop() if lengths else 0
    return [{k: v[r] for k, v in columns.items()} for r in range(n)]


# v2 datatypes by what they can carry.
_V2_NUMBER = frozenset({"FP64", "FP32", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"})
_V2_TYPES = _V2_NUMBER | {"BOOL", "BYTES"}


def parse_v2(inputs: Any, schema: RequestSchema) -> list[dict[str, Any]]:
    """Rows of a KServe v2 request with one named input per feature.

    ``inputs`` is a list of ``(name, shape, datatype, data)`` tuples or dicts with
    those keys. Every input is one column: shape ``[n]`` (or ``[n, 1]``), data a
    flat list of ``n`` values (nested ``[[v], [v]]`` is accepted too), all inputs the
    same ``n``. Text goes as ``BYTES``, numbers as ``FP64``/``INT64`` (any FP/INT),
    booleans as ``BOOL``; ``null`` is a missing value. Each value is then checked
    against the feature's kind like a v1 value.
    """
    if not isinstance(inputs, list):
        raise _reject(INVALID_INPUT, f"'inputs' must be a list of named inputs, got {_type_name(inputs)}")
    if not inputs:
        raise _reject(EMPTY_BATCH, "'inputs' is empty; send one input per feature")
    problems: list[Problem] = []
    columns: dict[str, list[Any]] = {}
    for i, item in enumerate(inputs):
        if isinstance(item, dict):
            name, shape, datatype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
        elif isinstance(item, (tuple, list)) and len(item) == 4:
            name, shape, datatype, data = item
        else:
            problems.append(Problem(INVALID_INPUT, f"inputs[{i}] must be an object with name, shape, datatype, data"))
            continue
        if not isinstance(name, str):
            problems.append(Problem(INVALID_INPUT, f"inputs[{i}] has no name"))
            continue
        if name in columns:
            problems.append(Problem(INVALID_INPUT, "appears more than once in 'inputs'", field=name))
            continue
        if name in schema.ignored:
            continue
        if name not in schema.by_name:
            problems.append(Problem(UNKNOWN_FIELD, f"is not a feature of this model; features: {list(schema.names)}", field=name))
            continue
        if not isinstance(datatype, str) or datatype.upper() not in _V2_TYPES:
            problems.append(Problem(WRONG_TYPE, f"datatype {datatype!r} is not one of {sorted(_V2_TYPES)}", field=name))
            continue
        if hasattr(data, "tolist") and not isinstance(data, list):  # binary tensor data, decoded
            data = data.tolist()
        if not isinstance(data, list):
            problems.append(Problem(INVALID_INPUT, f"'data' must be a list, got {_type_name(data)}", field=name))
            continue
        values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
        if any(isinstance(v, bytes) for v in values):  # gRPC carries BYTES as bytes
            try:
                values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
            except UnicodeDecodeError:
                problems.append(Problem(INVALID_INPUT, "BYTES data must be UTF-8 text", field=name))
                continue
        if any(isinstance(v, (list, dict)) for v in values):
            problems.append(Problem(INVALID_INPUT, "'data' must be a flat list of values, one per row", field=name))
            continue
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
            or shape[0] != len(values)
            or any(s != 1 for s in shape[1:])
        ):
            problems.append(
                Problem(INVALID_INPUT, f"shape {shape!r} does not match its {len(values)} data values (use [{len(values)}])", field=name)
            )
            continue
        columns[name] = values
    if problems:
        raise RequestRejected(problems)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        sizes = {k: len(v) for k, v in columns.items()}
        raise _reject(INVALID_INPUT, f"inputs must all hold the same number of rows, got {sizes}")
    n = lengths.pop()
    if n == 0:
        raise _reject(EMPTY_BATCH, "the inputs hold no rows")
    if n > schema.max_rows:
        raise _reject(TOO_MANY_ROWS, f"the inputs hold {n} rows; at most {schema.max_rows} per request")
    # Missing inputs are reported per row by validate(), like a missing v1 field.
    return [{k: v[r] for k, v in columns.items()} for r in range(n)]


# --- values -------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class DateValue:
    """A checked timestamp: naive UTC, as the features step sees it."""

    when: datetime

    @property
    def ns(self) -> int:
        delta = self.when - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def parse_date(text: str) -> datetime | None:
    """Naive UTC datetime from ISO 8601 text, or None when it cannot be read."""
    if _ISO_RE.fullmatch(text):
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        from kubeloop.dates import parse_datetimes

        try:
            parsed = parse_datetimes([text])[0]
        except (ValueError, TypeError, OverflowError):
            return None
        if parsed is None or parsed != parsed:  # NaT
            return None
        when = parsed.to_pydatetime()
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def check_value(feature: Feature, value: Any) -> tuple[Any, str | None, str | None]:
    """``(normalized, reason, message)``: the value as the model takes it, or why not.

    Normalized: numeric -> float (nan for null); categorical -> level text (None for
    null); boolean -> "True"/"False" (None); datetime -> DateValue (None); text -> text.
    """
    if value is None:
        return (math.nan if feature.kind == "numeric" else None), None, None
    kind = feature.kind
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, WRONG_TYPE, f"must be a number (or null), got {_type_name(value)} {_show(value)}"
        try:
            number = float(value)
        except OverflowError:
            return None, OUT_OF_RANGE, f"{_show(value)} is beyond the float64 range"
        if not math.isfinite(number):
            return None, OUT_OF_RANGE, f"must be a finite number, got {_show(value)}"
        if abs(number) > FLOAT32_MAX:
            # The features step hands the model float32: beyond it the value is infinite.
            return None, OUT_OF_RANGE, f"{_show(value)} is beyond the model's float32 range (+-{FLOAT32_MAX:.7g})"
        return number, None, None
    if kind == "categorical":
        if isinstance(value, str):
            if len(value) > MAX_TEXT_CHARS:
                return None, OUT_OF_RANGE, f"text longer than {MAX_TEXT_CHARS} characters"
            return value, None, None
        if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            return _level(value), None, None
        return None, WRONG_TYPE, f"must be text, a number or a boolean, got {_type_name(value)} {_show(value)}"
    if kind == "boolean":
        if isinstance(value, bool):
            return ("True" if value else "False"), None, None
        if isinstance(value, (int, float)) and value in (0, 1):
            return ("True" if value == 1 else "False"), None, None
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE or word in _FALSE:
                return _boolean_level(value), None, None
            return None, OUT_OF_RANGE, f"must be true or false (or yes/no), got {_show(value)}"
        if isinstance(value, (int, float)):
            return None, OUT_OF_RANGE, f"must be true or false (or 0/1), got {_show(value)}"
        return None, WRONG_TYPE, f"must be true or false, got {_type_name(value)} {_show(value)}"
    if kind == "datetime":
        if not isinstance(value, str):
            return None, WRONG_TYPE, (
                f"must be an ISO 8601 date text (e.g. 2024-05-31T12:00:00Z), got {_type_name(value)} {_show(value)}"
            )
        if len(value) > 64:
            return None, OUT_OF_RANGE, "a date text is at most 64 characters"
        when = parse_date(value)
        if when is None:
            return None, OUT_OF_RANGE, f"{_show(value)} is not a date (use ISO 8601, e.g. 2024-05-31T12:00:00Z)"
        if not _MIN_YEAR <= when.year <= _MAX_YEAR:
            return None, OUT_OF_RANGE, f"{_show(value)} is outside the years {_MIN_YEAR}-{_MAX_YEAR}"
        return DateValue(when), None, None
    # text (carried by the contract, not used by the model)
    if not isinstance(value, str):
        return None, WRONG_TYPE, f"must be text, got {_type_name(value)} {_show(value)}"
    if len(value) > MAX_TEXT_CHARS:
        return None, OUT_OF_RANGE, f"text longer than {MAX_TEXT_CHARS} characters"
    return value, None, None


@dataclass
class Checked:
    """A valid batch: one list of normalized values per row, in schema order."""

    rows: list[list[Any]]
    raw: list[dict[str, Any]]
    unseen: list[tuple[int, str]] = field(default_factory=list)  # (row, feature) of new categories


def validate(rows: list[dict[str, Any]], schema: RequestSchema) -> Checked:
    """Check every row against the schema; all problems at once, or the normalized rows."""
    problems: list[Problem] = []
    out: list[list[Any]] = []
    unseen: list[tuple[int, str]] = []
    features = schema.features
    by_name = schema.by_name
    ignored = schema.ignored
    n_features = len(features)
    for r, row in enumerate(rows):
        values: list[Any] = []
        if len(row) != n_features or any(k not in by_name for k in row):
            for key in row:
                if key not in by_name and key not in ignored:
                    problems.append(Problem(UNKNOWN_FIELD, "is not a feature of this model", row=r, field=str(key)[:100]))
        for feat in features:
            if feat.name not in row:
                problems.append(Problem(MISSING_FIELD, f"is required ({feat.kind}; send null for a missing value)", row=r, field=feat.name))
                values.append(None)
                continue
            value, reason, message = check_value(feat, row[feat.name])
            if reason is not None:
                problems.append(Problem(reason, message, row=r, field=feat.name))
            elif feat.categories is not None and feat.kind == "categorical" and value is not None and value not in feat.categories:
                unseen.append((r, feat.name))
            values.append(value)
        out.append(values)
    if problems:
        raise RequestRejected(problems, rows)
    return Checked(out, rows, unseen)
