"""Drift between two sources, each a data file or prefix, a profile JSON file, or
``model:NAME[@VERSION|@ALIAS]`` (a registered version's profile)."""

from __future__ import annotations

import json
import re
from typing import Any

from kubeloop.errors import UserError
from kubeloop.monitoring.profile import ProfileError, check_profile, load_profile
from kubeloop.monitoring.stats import compare
from kubeloop.monitoring.stream import (
    accumulate_uri,
    accumulators_from_profile,
    infer_kinds,
    profile_uri,
    served_rows,
)

_MODEL_RE = re.compile(r"model:(?P<name>[^@\s]+)(@(?P<ref>[^@\s]+))?")


def is_model_ref(uri: str) -> bool:
    return uri.startswith("model:")


def load_source_profile(uri: str, cfg: Any, *, registry: str | None = None, columns: list[str] | None = None) -> dict[str, Any]:
    """The profile ``uri`` stands for (``cfg`` is the whole Config)."""
    if is_model_ref(uri):
        m = _MODEL_RE.fullmatch(uri)
        if not m:
            raise UserError(f"{uri!r}: expected model:NAME, model:NAME@VERSION or model:NAME@ALIAS")
        if not registry:
            raise UserError(f"{uri}: no registry given (--registry or $KUBELOOP_REGISTRY)")
        import os

        from kubeloop.registry import Registry

        if "://" not in registry and not os.path.isdir(registry):
            # Reading never creates a registry: a mistyped path is an error, not "no models".
            raise UserError(f"{uri}: no registry at {os.path.abspath(registry)} (give --registry or set $KUBELOOP_REGISTRY)")
        try:
            return load_profile(Registry(registry, cfg.storage), m["name"], m["ref"] or "production")
        except ProfileError as exc:
            raise UserError(str(exc)) from None
    if uri.lower().endswith(".json"):
        from kubeloop.storage import read_bytes

        try:
            return check_profile(json.loads(read_bytes(uri, cfg.storage)), uri)
        except (ProfileError, json.JSONDecodeError) as exc:
            raise UserError(f"{uri}: {exc}") from None
    return profile_uri(uri, cfg.monitoring, storage=cfg.storage, columns=columns)


def drift(reference: str, current: str, cfg: Any, *, registry: str | None = None) -> dict[str, Any]:
    """The drift report of ``current`` against ``reference``."""
    ref = load_source_profile(reference, cfg, registry=registry)
    if not ref["columns"]:
        raise UserError(f"{reference}: no numeric or categorical columns to compare")
    mon = cfg.monitoring
    if is_model_ref(current) or current.lower().endswith(".json"):
        cur = load_source_profile(current, cfg, registry=registry)
        accs = accumulators_from_profile(ref, cur)
        report = compare(ref, accs, mon, columns_seen=set(cur["columns"]), n_current=cur.get("n_rows"))
    else:
        pred_col = "prediction" if ref.get("prediction") and "prediction" not in ref["columns"] else None
        log_columns = {"request_id", "row", "status", "role"}
        is_log = log_columns <= set(infer_kinds(current, cfg.storage))
        accs, n_rows, seen = accumulate_uri(
            current, ref, storage=cfg.storage, batch_rows=mon.batch_rows, prediction_column=pred_col,
            # Prediction logs: only the rows a model answered, not shadow copies.
            row_filter=served_rows() if is_log else None,
            extra_columns=["status", "role"] if is_log else None,
        )
        if n_rows == 0:
            raise UserError(f"{current}: no rows")
        report = compare(ref, accs, mon, columns_seen=seen, n_current=n_rows)
    report["reference"] = reference
    report["current"] = current
    return report
