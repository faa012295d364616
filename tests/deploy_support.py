"""Test support for the deploy and canary tests.

``unknown_fields`` and ``to_model`` check an object against the KServe SDK's
own generated models (and the Kubernetes client's, for the core types they
embed): every key must be an attribute the model declares, and constructing the
models runs their client-side validation (required fields, enums).
"""

from __future__ import annotations

import re
from typing import Any

import kserve.models as kserve_models
import kubernetes.client.models as k8s_models
from kubernetes.client import ApiClient

_PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object,
               "datetime": str, "date": str}


def model_class(name: str) -> Any:
    for module in (kserve_models, k8s_models):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(f"no model class {name} in kserve or kubernetes")


def unknown_fields(data: Any, type_name: str, path: str = "") -> list[str]:
    """Paths in ``data`` that ``type_name`` (an SDK type string) does not declare,
    and values of the wrong primitive type."""
    problems: list[str] = []
    if data is None:
        return problems
    m = re.fullmatch(r"list\[(.*)\]", type_name)
    if m:
        if not isinstance(data, list):
            return [f"{path}: expected a list, got {type(data).__name__}"]
        for i, item in enumerate(data):
            problems += unknown_fields(item, m.group(1), f"{path}[{i}]")
        return problems
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name)
    if m:
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping, got {type(data).__name__}"]
        for k, v in data.items():
            problems += unknown_fields(v, m.group(2), f"{path}.{k}")
        return problems
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        if expected is not object and (not isinstance(data, expected) or
                                       (type_name == "int" and isinstance(data, bool))):
            problems.append(f"{path}: expected {type_name}, got {data!r}")
        return problems
    cls = model_class(type_name)
    if not isinstance(data, dict):
        return [f"{path}: expected an object ({type_name}), got {data!r}"]
    json_to_attr = {v: k for k, v in cls.attribute_map.items()}
    for key, value in data.items():
        if key not in json_to_attr:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        problems += unknown_fields(value, cls.openapi_types[json_to_attr[key]], f"{path}.{key}")
    return problems


def to_model(data: Any, type_name: str) -> Any:
    """Construct the SDK model objects for ``data`` (runs their validation)."""
    if data is None:
        return None
    m = re.fullmatch(r"list\[(.*)\]", type_name)
    if m:
        return [to_model(x, m.group(1)) for x in data]
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name)
    if m:
        return {k: to_model(v, m.group(2)) for k, v in data.items()}
    if type_name in _PRIMITIVES:
        return data
    cls = model_class(type_name)
    json_to_attr = {v: k for k, v in cls.attribute_map.items()}
    # Keys the model does not declare are dropped, as a generated client drops them.
    kwargs = {json_to_attr[k]: to_model(v, cls.openapi_types[json_to_attr[k]])
              for k, v in data.items() if k in json_to_attr}
    return cls(**kwargs)


def roundtrip(data: dict[str, Any], type_name: str = "V1beta1InferenceService") -> Any:
    """``data`` through the SDK models and back to JSON: equal to ``data`` only if
    every field is known and kept."""
    back = ApiClient().sanitize_for_serialization(to_model(data, type_name))
    return _without_added_blanks(back, data)


def _without_added_blanks(back: Any, original: Any) -> Any:
    # Container-based models default ``name`` to "" when it is not given; that
    # is the generated constructor's filler, not a field the object carried.
    if isinstance(back, dict) and isinstance(original, dict):
        return {k: _without_added_blanks(v, original.get(k)) for k, v in back.items()
                if not (v == "" and k not in original)}
    if isinstance(back, list) and isinstance(original, list):
        return [_without_added_blanks(b, o) for b, o in zip(back, original, strict=False)] + back[len(original):]
    return back


def check_isvc(obj: dict[str, Any]) -> None:
    problems = unknown_fields(obj, "V1beta1InferenceService")
    assert not problems, problems
    assert roundtrip(obj) == obj
