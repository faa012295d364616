"""Which versions are really answering, and whether the registry agrees.

Monitoring must watch what serves, not what the registry says: a gate promote
on a cluster without a deploy step moves ``production`` while KServe keeps
serving the old version, and a run that kept only the rows of the registry's
production would see nothing and stay quiet. Two witnesses:

- the prediction logs (``version`` of every answered, non-shadow row, with its
  time): the versions answering lately and their shares;
- the InferenceService, when a cluster is reachable (read only, through
  ``kubeloop.deploy.kube``): its primary and canary versions.

The cluster wins where both speak (the logs lag); ``serving_state`` and
``alerts`` are pure functions of what was read.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from kubeloop.monitoring.stream import iter_batches, served_rows

LOG_COLUMNS = ["version", "time", "role", "status"]


def version_counts(logs_uri: str, *, storage: Any = None, since: datetime | None = None,
                   until: datetime | None = None, recent_rows: int = 1000) -> dict[str, Any]:
    """Answered, non-shadow rows per version in ``[since, until)``, and per version
    among the newest ``recent_rows`` of them (what answers *now*: a version promoted
    an hour ago already holds them, a 10 % canary holds a tenth):
    ``{"rows": {v: n}, "recent": {v: n}, "newest": datetime | None}``."""
    import pyarrow as pa

    keep = served_rows(None, since, until)
    rows: dict[str, int] = {}
    tail: pa.Table | None = None  # the newest rows so far: version, time
    for batch in iter_batches(logs_uri, LOG_COLUMNS, storage=storage, since=since, until=until):
        names = batch.schema.names
        if "version" not in names:
            continue
        batch = keep(batch)
        if not batch.num_rows:
            continue
        v = batch.column(names.index("version")).cast(pa.string())
        for item in pc.value_counts(v).to_pylist():
            key = str(item["values"])
            rows[key] = rows.get(key, 0) + int(item["counts"])
        if "time" not in names:
            continue
        t = batch.column(names.index("time"))
        part = pa.table({"version": v, "time": t})
        if tail is not None and tail.schema != part.schema:
            part = part.cast(tail.schema)
        tail = part if tail is None else pa.concat_tables([tail, part])
        if tail.num_rows > 2 * recent_rows:
            order = pc.sort_indices(tail, sort_keys=[("time", "descending")])
            tail = tail.take(order[:recent_rows])
    recent: dict[str, int] = {}
    newest = None
    if tail is not None and tail.num_rows:
        order = pc.sort_indices(tail, sort_keys=[("time", "descending")])
        tail = tail.take(order[:recent_rows])
        newest = tail.column("time")[0].as_py()
        for item in pc.value_counts(tail.column("version")).to_pylist():
            recent[str(item["values"])] = int(item["counts"])
    else:
        recent = dict(rows)
    return {"rows": rows, "recent": recent, "newest": newest}


def serving_state(counts: dict[str, Any] | None, cluster: dict[str, Any] | None) -> dict[str, Any]:
    """The versions serving now: ``{"primary", "canary", "source", "answering"}``.

    ``cluster`` is the InferenceService's rollout state (``primary_version``,
    ``canary_version``) or None; without it the primary is the version with the
    most answers lately in the logs, and any other version answering lately is
    taken as a canary. ``source`` says which witness decided (``cluster``,
    ``logs`` or None when neither knows)."""
    answering = dict((counts or {}).get("recent") or {})
    if cluster and cluster.get("primary_version"):
        return {"primary": cluster["primary_version"], "canary": cluster.get("canary_version"),
                "source": "cluster", "answering": answering}
    if not answering:
        return {"primary": None, "canary": None, "source": None, "answering": answering}
    ranked = sorted(answering.items(), key=lambda kv: (-kv[1], kv[0]))
    canary = ranked[1][0] if len(ranked) > 1 else None
    return {"primary": ranked[0][0], "canary": canary, "source": "logs", "answering": answering}


def alerts(*, production: str | None, canary_alias: str | None, serving: dict[str, Any],
           n_rows: int, model: str) -> list[str]:
    """What a person must look at: the registry disagreeing with what serves, or
    nothing answering at all (monitoring would be blind)."""
    out: list[str] = []
    primary, source = serving.get("primary"), serving.get("source")
    if primary is None:
        out.append(f"no answered requests of {model} in the window: nothing to monitor "
                   "(is the predictor logging, and is the log root right?)")
        return out
    witness = "the InferenceService" if source == "cluster" else "the prediction logs"
    if production and primary != production:
        if canary_alias == primary:
            out.append(f"registry: production is {production} but {witness} show {primary} (the canary) taking "
                       f"the primary share: promote it in the registry too (`kubeloop canary promote {model}`)")
        else:
            out.append(f"registry: production is {production} but {witness} show {primary} serving: "
                       f"{production} was never deployed, or the rollout was changed by hand")
    canary = serving.get("canary")
    if canary and canary_alias and canary != canary_alias and canary != production:
        out.append(f"registry: canary is {canary_alias} but {witness} show {canary} as the canary")
    if n_rows == 0:
        out.append(f"no answered requests of the serving version {model} {primary} in the window")
    return out


def read_cluster(model: str, namespace: str, *, isvcs: Any = None) -> tuple[dict[str, Any] | None, str | None]:
    """(the InferenceService's rollout state, a note): read only. With no client
    given, one is made only where a cluster is configured (a kubeconfig, or a pod's
    service account); anything that goes wrong is a note, never a failure."""
    from kubeloop.deploy.patches import read_state
    from kubeloop.errors import UserError

    if isvcs is None:
        configured = (os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST")
                      or os.path.exists(os.path.expanduser("~/.kube/config")))
        if not configured:
            return None, None
        from kubeloop.deploy.kube import connect

        try:
            isvcs = connect()
        except UserError as exc:
            return None, f"cluster not read: {exc}"
    try:
        obj = isvcs.get(model, namespace)
    except UserError as exc:
        return None, f"InferenceService {namespace}/{model} not read: {exc}"
    if obj is None:
        return None, f"no InferenceService {namespace}/{model} on the cluster"
    return read_state(obj).to_dict(), None
