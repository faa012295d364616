"""Request parsing and validation against kubeloop.json, as pure functions (tables of cases)."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from kubeloop.serving.schema import (
    DateValue,
    RequestRejected,
    RequestSchema,
    check_value,
    parse_json,
    parse_v1,
    parse_v2,
    validate,
)

META = {
    "features": [
        {"name": "age", "kind": "numeric", "categories": None},
        {"name": "plan", "kind": "categorical", "categories": ["basic", "pro", "3"]},
        {"name": "paperless", "kind": "boolean", "categories": ["False", "True"]},
        {"name": "signup", "kind": "datetime", "categories": None},
    ]
}
SCHEMA = RequestSchema.from_metadata(META, max_rows=3)
GOOD = {"age": 41, "plan": "pro", "paperless": True, "signup": "2024-05-31T12:00:00Z"}


def _problems(fn, *args):
    with pytest.raises(RequestRejected) as info:
        fn(*args)
    return [(p.row, p.field, p.reason) for p in info.value.problems], str(info.value)


# --- envelopes --------------------------------------------------------------------------

V1_BAD = [
    ("not an object", [GOOD], [(None, None, "invalid_input")]),
    ("no instances", {"rows": [GOOD]}, [(None, None, "invalid_input")]),
    ("both keys", {"instances": [GOOD], "inputs": [GOOD]}, [(None, None, "invalid_input")]),
    ("instances not a list", {"instances": GOOD}, [(None, None, "invalid_input")]),
    ("empty", {"instances": []}, [(None, None, "empty_batch")]),
    ("too many rows", {"instances": [GOOD] * 4}, [(None, None, "too_many_rows")]),
    ("positional row", {"instances": [GOOD, [41, "pro", True, "2024-01-01"]]}, [(1, None, "invalid_input")]),
    ("null row", {"instances": [None]}, [(0, None, "invalid_input")]),
    ("malformed json", b'{"instances": [', [(None, None, "malformed_json")]),
    ("NaN literal", b'{"instances": [{"age": NaN}]}', [(None, None, "malformed_json")]),
]


@pytest.mark.parametrize("case, payload, expected", V1_BAD, ids=[c[0] for c in V1_BAD])
def test_v1_envelope_rejections(case, payload, expected):
    problems, message = _problems(parse_v1, payload, SCHEMA)
    assert problems == expected
    assert message.startswith("invalid request")


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_v1_accepts_instances_and_inputs_with_several_rows(key):
    rows = parse_v1({key: [GOOD, dict(GOOD, age=7)]}, SCHEMA)
    assert [r["age"] for r in rows] == [41, 7]
    assert parse_v1(b'{"instances": [{"age": 1}]}', SCHEMA) == [{"age": 1}]


def test_v1_columnar_inputs():
    rows = parse_v1({"inputs": {"age": [41, 7], "plan": ["pro", "basic"]}}, SCHEMA)
    assert rows == [{"age": 41, "plan": "pro"}, {"age": 7, "plan": "basic"}]
    for bad in ({"age": [1, 2], "plan": ["pro"]}, {"age": 5}, {}):
        problems, _ = _problems(parse_v1, {"inputs": bad}, SCHEMA)
        assert problems[0][2] in ("invalid_input", "empty_batch")


def _v2(name, data, datatype="FP64", shape=None):
    return {"name": name, "datatype": datatype, "shape": shape if shape is not None else [len(data)], "data": data}


GOOD_V2 = [
    _v2("age", [41, None]),
    _v2("plan", ["pro", "basic"], "BYTES"),
    _v2("paperless", [True, False], "BOOL"),
    _v2("signup", ["2024-05-31", "2024-06-01T00:00:00+02:00"], "BYTES"),
]

V2_BAD = [
    ("inputs not a list", {"a": 1}, [(None, None, "invalid_input")]),
    ("empty inputs", [], [(None, None, "empty_batch")]),
    ("unknown input", GOOD_V2 + [_v2("zip", [1, 2])], [(None, "zip", "unknown_field")]),
    ("duplicate input", GOOD_V2 + [_v2("age", [1, 2])], [(None, "age", "invalid_input")]),
    ("bad datatype", [_v2("age", [1, 2], "FP99")] + GOOD_V2[1:], [(None, "age", "wrong_type")]),
    ("shape mismatch", [_v2("age", [1, 2], shape=[3])] + GOOD_V2[1:], [(None, "age", "invalid_input")]),
    ("nested data", [_v2("age", [[1, 2], [3, 4]], shape=[2])] + GOOD_V2[1:], [(None, "age", "invalid_input")]),
    ("data not a list", [dict(_v2("age", [1]), data=5)] + GOOD_V2[1:], [(None, "age", "invalid_input")]),
    ("ragged columns", [_v2("age", [1])] + GOOD_V2[1:], [(None, None, "invalid_input")]),
    ("zero rows", [_v2(n, [], "BYTES") for n in SCHEMA.names], [(None, None, "empty_batch")]),
    ("too many rows", [_v2(n, [None] * 4, "BYTES") for n in SCHEMA.names], [(None, None, "too_many_rows")]),
    ("no name", [{"shape": [1], "data": [1], "datatype": "FP64"}], [(None, None, "invalid_input")]),
]


@pytest.mark.parametrize("case, inputs, expected", V2_BAD, ids=[c[0] for c in V2_BAD])
def test_v2_envelope_rejections(case, inputs, expected):
    problems, _ = _problems(parse_v2, inputs, SCHEMA)
    assert problems == expected


def test_v2_one_input_per_feature_becomes_rows():
    rows = parse_v2(GOOD_V2, SCHEMA)
    assert rows[0] == {"age": 41, "plan": "pro", "paperless": True, "signup": "2024-05-31"}
    assert rows[1]["age"] is None
    # [n, 1] shapes and tuples (KServe's InferInput) read the same
    tuples = [(i["name"], [2, 1], i["datatype"], [[v] for v in i["data"]]) for i in GOOD_V2]
    assert parse_v2(tuples, SCHEMA) == rows
    checked = validate(rows, SCHEMA)
    assert checked.rows[1][0] != checked.rows[1][0]  # null -> NaN
    assert checked.rows[1][3].when == datetime(2024, 5, 31, 22, 0)  # +02:00 -> UTC


def test_v2_bytes_values_as_grpc_sends_them():
    tuples = [(i["name"], i["shape"], i["datatype"],
               [v.encode() if isinstance(v, str) else v for v in i["data"]]) for i in GOOD_V2]
    assert parse_v2(tuples, SCHEMA) == parse_v2(GOOD_V2, SCHEMA)
    problems, _ = _problems(parse_v2, [("plan", [1], "BYTES", [b"\xff"])], SCHEMA)
    assert problems == [(None, "plan", "invalid_input")]


def test_v2_missing_input_is_reported_per_row():
    rows = parse_v2(GOOD_V2[:3], SCHEMA)
    problems, _ = _problems(validate, rows, SCHEMA)
    assert problems == [(0, "signup", "missing_field"), (1, "signup", "missing_field")]


# --- values -----------------------------------------------------------------------------

VALUES = [
    # kind, value, normalized (or None), reason
    ("numeric", 3, 3.0, None),
    ("numeric", -2.5, -2.5, None),
    ("numeric", None, math.nan, None),
    ("numeric", "3", None, "wrong_type"),
    ("numeric", True, None, "wrong_type"),
    ("numeric", [1], None, "wrong_type"),
    ("numeric", float("inf"), None, "out_of_range"),
    ("numeric", 10**400, None, "out_of_range"),
    ("categorical", "pro", "pro", None),
    ("categorical", "brand-new", "brand-new", None),  # unseen: accepted, encoded as unknown
    ("categorical", 3, "3", None),
    ("categorical", 3.0, "3", None),
    ("categorical", False, "False", None),
    ("categorical", None, None, None),
    ("categorical", {"a": 1}, None, "wrong_type"),
    ("categorical", "x" * 2000, None, "out_of_range"),
    ("boolean", True, "True", None),
    ("boolean", 0, "False", None),
    ("boolean", " Yes ", "True", None),
    ("boolean", "n", "False", None),
    ("boolean", "maybe", None, "out_of_range"),
    ("boolean", 2, None, "out_of_range"),
    ("boolean", [True], None, "wrong_type"),
    ("datetime", "2024-05-31", datetime(2024, 5, 31), None),
    ("datetime", "2024-05-31T12:00:00Z", datetime(2024, 5, 31, 12), None),
    ("datetime", "2024-05-31 12:00:00-01:00", datetime(2024, 5, 31, 13), None),
    ("datetime", "May 31 2024", datetime(2024, 5, 31), None),  # pandas' fallback, as training
    ("datetime", 1717156800, None, "wrong_type"),
    ("datetime", "yesterday-ish", None, "out_of_range"),
    ("datetime", "2024-13-45", None, "out_of_range"),
    ("datetime", "3000-01-01", None, "out_of_range"),
    ("text", "hello", "hello", None),
    ("text", 5, None, "wrong_type"),
]


@pytest.mark.parametrize("kind, value, normalized, reason", VALUES,
                         ids=[f"{k}-{str(v)[:20]}" for k, v, *_ in VALUES])
def test_check_value(kind, value, normalized, reason):
    from kubeloop.serving.schema import Feature

    got, why, message = check_value(Feature("f", kind), value)
    assert why == reason
    if reason is None:
        if isinstance(normalized, float) and math.isnan(normalized):
            assert math.isnan(got)
        elif isinstance(got, DateValue):
            assert got.when == normalized
        else:
            assert got == normalized
    else:
        assert message and got is None


def test_every_problem_names_row_and_field():
    rows = [
        GOOD,
        {"age": "old", "plan": "pro", "paperless": "perhaps", "signup": "2024-01-01", "zip": 12345},
        {"plan": ["x"], "paperless": None, "signup": 5},
    ]
    problems, message = _problems(validate, rows, SCHEMA)
    assert problems == [
        (1, "zip", "unknown_field"),
        (1, "age", "wrong_type"),
        (1, "paperless", "out_of_range"),
        (2, "age", "missing_field"),
        (2, "plan", "wrong_type"),
        (2, "signup", "wrong_type"),
    ]
    for fragment in ("row 1, field 'zip'", "row 1, field 'age'", "row 2, field 'age'", "row 2, field 'signup'"):
        assert fragment in message
    assert "6 problems" in message


def test_long_problem_lists_are_summarized():
    schema = RequestSchema.from_metadata(META, max_rows=100)
    _, message = _problems(validate, [{"age": "x"}] * 30, schema)
    assert "and " in message and "more" in message


def test_unseen_categories_are_noted_not_rejected():
    checked = validate([GOOD, dict(GOOD, plan="enterprise")], SCHEMA)
    assert checked.unseen == [(1, "plan")]


def test_rejection_keeps_rows_and_reasons_per_row():
    with pytest.raises(RequestRejected) as info:
        validate([GOOD, dict(GOOD, age="x")], SCHEMA)
    assert info.value.rows[1]["age"] == "x"
    assert info.value.row_reasons() == {1: "wrong_type"}
    assert info.value.bad_fields() == {1: {"age"}}


@pytest.mark.parametrize("meta", [{}, {"features": []}, {"features": [{"name": "a", "kind": "blob"}]},
                                  {"features": [{"kind": "numeric"}]}])
def test_schema_refuses_a_broken_kubeloop_json(meta):
    with pytest.raises(ValueError):
        RequestSchema.from_metadata(meta)


def test_parse_json():
    assert parse_json(b"[1]") == [1]
    problems, _ = _problems(parse_json, b"\xff\xfe")
    assert problems == [(None, None, "malformed_json")]


# --- training columns the model does not use; the float32 head ----------------------------

WITH_IGNORED = RequestSchema.from_metadata({**META, "ignored_columns": ["customer_id", "churned", "country"]})


def test_training_columns_the_model_does_not_use_are_accepted_and_ignored():
    row = {**GOOD, "customer_id": "C-0042", "churned": "yes", "country": "NL"}
    checked = validate([row], WITH_IGNORED)
    assert checked.rows == validate([GOOD], WITH_IGNORED).rows
    rows = parse_v2([{"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": ["C-1"]}]
                    + [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else
                        ("BOOL" if isinstance(v, bool) else "FP64"), "data": [v]} for k, v in GOOD.items()],
                    WITH_IGNORED)
    assert validate(rows, WITH_IGNORED).rows == checked.rows
    # Without the list (older kubeloop.json), or for a name not in it: still refused.
    problems, _ = _problems(validate, [row], SCHEMA)
    assert {p[1] for p in problems} == {"customer_id", "churned", "country"}
    problems, _ = _problems(validate, [{**GOOD, "custmer_id": 1}], WITH_IGNORED)
    assert problems == [(0, "custmer_id", "unknown_field")]


@pytest.mark.parametrize("value", [3.5e38, -1e39, 1e300])
def test_values_beyond_float32_are_out_of_range(value):
    problems, message = _problems(validate, [{**GOOD, "age": value}], SCHEMA)
    assert problems == [(0, "age", "out_of_range")] and "float32" in message
    assert validate([{**GOOD, "age": 3.4e38}], SCHEMA).rows[0][0] == 3.4e38
