"""Retrain attempts, kept in the registry beside the model's versions.

A retrain that fails (bad data, a crashed pod, a gate that never ran) registers
no version, so a cool-down that counted only registrations would start the same
retrain again on every scheduled run. The monitoring step records each retrain
it starts, before the training branch runs, under
``<registry>/<model>/retrains/<UTC time>.json``; the next run reads the newest.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from kubeloop.storage import NotFound, StorageError

PREFIX = "retrains/"


def record_attempt(registry: Any, model: str, *, at: datetime, data_uri: str, data_sha256: str | None,
                   serving_version: str | None, reasons: list[str]) -> str:
    """Write one attempt record; returns its key."""
    stamp = at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    key = f"{model}/{PREFIX}{stamp}.json"
    doc = {"at": at.astimezone(timezone.utc).isoformat(timespec="microseconds"), "data_uri": data_uri,
           "data_sha256": data_sha256, "serving_version": serving_version, "reasons": reasons}
    registry.store.write_bytes(key, json.dumps(doc, indent=2).encode())
    return key


def attempts(registry: Any, model: str) -> list[dict[str, Any]]:
    """Every readable attempt record of ``model``, oldest first."""
    out = []
    try:
        keys = registry.store.list(f"{model}/{PREFIX}")
    except StorageError:
        return []
    for key in sorted(keys):
        if not key.endswith(".json"):
            continue
        try:
            doc = json.loads(registry.store.read_bytes(key))
        except (NotFound, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("at"):
            out.append(doc)
    return out


def last_attempt_at(registry: Any, model: str) -> datetime | None:
    times = []
    for doc in attempts(registry, model):
        try:
            t = datetime.fromisoformat(str(doc["at"]).replace("Z", "+00:00"))
        except ValueError:
            continue
        times.append(t if t.tzinfo else t.replace(tzinfo=timezone.utc))
    return max(times) if times else None
