"""Register stage: store the run as an immutable registry version, and move the
``production`` alias only when the gate says so.

Every run that gets this far is registered (a rejected challenger is still worth
keeping for audit and comparison); only a promoted one becomes production. The
alias moves with a compare-and-swap against the champion the gate compared with,
so when two runs finish together the second learns it lost instead of silently
replacing a model it never beat.

The pure parts build the documents stored with the model: the model card, the
lineage record, and ``model/kubeloop.json``, which is what the predictor reads
to check requests against the training schema.
"""

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from kubeloop.config import Config
from kubeloop.environment import code_version, pickle_versions, runtime_environment
from kubeloop.errors import UserError
from kubeloop.schema import Schema, feature_columns
from kubeloop.storage import sha256_file


class RegisterError(UserError, ValueError):
    """The run cannot be registered as it is; the message says what is wrong."""


def predictor_metadata(
    schema: Schema, *, model_name: str, sha256: str, version: str | None = None
) -> dict[str, Any]:
    """What the serving predictor needs besides the model: the request contract."""
    cols = schema["columns"]
    return {
        "format": "kubeloop/v1",
        "model_name": model_name,
        "version": version,
        "model_file": "model.joblib",
        "sha256": sha256,
        "task": schema["task"],
        "target": schema["target"],
        "labels": schema.get("labels"),
        "positive_label": schema.get("positive_label"),
        "features": [
            {"name": c, "kind": cols[c]["kind"], "categories": cols[c].get("categories")}
            for c in feature_columns(schema)
        ],
        # The training file's other columns (target, id, constant, ...): a request may
        # carry them, as a row of the training file does; the predictor ignores them.
        "ignored_columns": [c for c in cols if c not in set(feature_columns(schema))],
        "sklearn_version": pickle_versions()["scikit-learn"],
        # Checked before unpickling: another version of these may load it differently.
        "packages": pickle_versions(),
    }


def lineage(
    *,
    data_uri: str,
    profile: dict[str, Any],
    config: dict[str, Any],
    candidate: dict[str, Any],
    split_summary: dict[str, Any] | None,
    run_id: str | None = None,
) -> dict[str, Any]:
    environment = runtime_environment()
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id,
        "data": {
            "uri": data_uri,
            "sha256": profile.get("sha256"),
            "size_bytes": profile.get("size_bytes"),
            "n_rows": profile.get("n_rows"),
            "n_columns": profile.get("n_columns"),
        },
        "split": split_summary,
        "model": {
            "family": candidate.get("family"),
            "params": candidate.get("params"),
            "valid_score": candidate.get("valid_score"),
            "metric": candidate.get("metric"),
            "warnings": candidate.get("warnings") or [],
            "vs_baseline": candidate.get("vs_baseline"),
            "learning_note": candidate.get("learning_note"),
            # The training sample and its learning curve, for a candidate trained on one.
            **{key: candidate[key] for key in ("n_train_rows", "n_split_rows", "max_rows", "learning_curve")
               if "n_split_rows" in candidate and key in candidate},
        },
        "config": config,
        "seeds": {"split": (config.get("split") or {}).get("seed"),
                  "train": (config.get("train") or {}).get("seed")},
        "packages": environment["packages"],
        "environment": environment,
        "code_version": code_version(),
    }


def _metric_rows(evaluation: dict[str, Any]) -> list[str]:
    champ = evaluation.get("champion_metrics") or {}
    base = evaluation.get("baseline_metrics") or {}
    rows = ["| metric | this model | production | baseline |", "|---|---|---|---|"]
    for name, value in (evaluation.get("metrics") or {}).items():
        rows.append(f"| {_cell(name)} | {_f(value)} | {_f(champ.get(name))} | {_f(base.get(name))} |")
    return rows


def _f(x: Any) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def _cell(text: Any) -> str:
    # Column names and category values are user data: keep them from breaking a table.
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _disparity_rows(disparity: dict[str, Any], metric: str | None) -> list[str]:
    def side(d: Any) -> str:
        return f"{_cell(d.get('value'))} ({_f(d.get('score'))})" if d else "-"

    rows = [
        f"| column | slices | {_cell(metric or 'metric')} gap | worst | best | positive-rate gap "
        "| positive-rate ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for col, d in disparity.items():
        rows.append(
            f"| {_cell(col)} | {_f(d.get('n_slices'))} | {_f(d.get('gap'))} | {side(d.get('worst'))} "
            f"| {side(d.get('best'))} | {_f(d.get('positive_rate_gap'))} | {_f(d.get('positive_rate_ratio'))} |"
        )
        if d.get("note"):
            notes.append(f"- `{col}`: {d['note']}")
    return rows + ([""] + notes if notes else [])


def _training_notes(cand: dict[str, Any]) -> list[str]:
    from kubeloop.components.train import candidate_notes

    notes = [cand["learning_note"]] if cand.get("learning_note") else []
    return notes + candidate_notes(cand)


def _sample_text(cand: dict[str, Any]) -> str | None:
    from kubeloop.components.train import sample_text

    return sample_text(cand)


def _candidate_lines(cand: dict[str, Any]) -> list[str]:
    # A model that did not learn, or whose fit warned, says so where it is described;
    # every model says how many rows it trained on and what its learning curve showed.
    sample = _sample_text(cand)
    return ([f"- **Training rows**: {sample}"] if sample else []) + [
        f"- **Note**: {note}" for note in _training_notes(cand)
    ]


def model_card(
    *,
    model_name: str,
    version: str,
    schema: Schema,
    evaluation: dict[str, Any],
    gate: dict[str, Any],
    lineage_doc: dict[str, Any],
    sensitive_columns: list[str],
) -> str:
    """The model card (Markdown): intended use, data, metrics, slices, limitations."""
    task = schema["task"]
    cols = schema["columns"]
    features = feature_columns(schema)
    ignored = [f"`{c}` ({v.get('reason', v['kind'])})" for c, v in cols.items() if v["role"] == "ignored"]
    data = lineage_doc["data"]
    split = lineage_doc.get("split") or {}
    cand = lineage_doc["model"]
    what = (
        f"predicts `{schema['target']}` (classes: {', '.join(map(str, schema.get('labels') or []))})"
        if task == "classification"
        else f"predicts the value of `{schema['target']}`"
    )
    lines = [
        f"# Model card: {model_name} {version}",
        "",
        "## Intended use",
        "",
        f"A {task} model that {what} from {len(features)} tabular features. "
        "It is meant to score rows drawn from the same population and time range as its "
        "training data, through the kubeloop predictor, which rejects requests that do not "
        "match the training schema. It is not meant for decisions about individuals without "
        "human review, nor for data from another population.",
        "",
        "## Data",
        "",
        f"- Source: `{data['uri']}` (sha256 `{str(data.get('sha256'))[:16]}...`, "
        f"{data.get('n_rows')} rows, {data.get('n_columns')} columns)",
        f"- Split: {split.get('strategy', 'n/a')}; rows train/valid/test = "
        f"{'/'.join(str((split.get('rows') or {}).get(k, '?')) for k in ('train', 'valid', 'test'))}",
        f"- Features: {', '.join(f'`{c}`' for c in features)}",
    ]
    if schema.get("time_column"):
        lines.append(f"- Time column: `{schema['time_column']}` (split is temporal: the test set is the newest data)")
    if ignored:
        lines.append(f"- Not used: {', '.join(ignored)}")
    lines += [
        "",
        "## Model",
        "",
        f"- Family: {cand.get('family')}, chosen on validation {cand.get('metric')} = {_f(cand.get('valid_score'))}",
        f"- Parameters: `{cand.get('params')}`",
        *_candidate_lines(cand),
        "",
        "## Metrics (held-out test set)",
        "",
        *_metric_rows(evaluation),
        "",
        f"Gate: **{gate.get('decision')}**: {gate.get('reason')}",
        "",
    ]
    stab = evaluation.get("stability")
    if stab:
        lines += [
            f"Stability: {stab.get('metric')} over {len(stab.get('values') or [])} seeds: "
            f"mean {_f(stab.get('mean'))}, std {_f(stab.get('std'))}.",
            "",
        ]
    slices = evaluation.get("slices") or []
    primary = evaluation.get("primary_metric")
    if slices and primary:
        scored = [s for s in slices if (s.get("metrics") or {}).get(primary) is not None]
        worst = sorted(scored, key=lambda s: s["metrics"][primary])
        if primary in ("rmse", "mae", "log_loss", "brier_score", "calibration_error"):
            worst = worst[::-1]
        lines += ["## Slices (worst first)", "", f"| column | value | rows | {primary} |", "|---|---|---|---|"]
        for s in worst[:10]:
            lines.append(
                f"| {_cell(s['column'])} | {_cell(s['value'])} | {s['n']} | {_f(s['metrics'][primary])} |"
            )
        lines.append("")
    disp = evaluation.get("disparity") or {}
    if disp:
        lines += ["## Disparity across sensitive columns", "", *_disparity_rows(disp, primary), ""]
    lines += [
        "## Limitations",
        "",
        "- Metrics hold for data like the test set; a shift in the inputs (see the monitoring "
        "reference stored with this version) makes them stale.",
        "- Categories unseen in training are treated as unknown; values outside the training "
        "range are extrapolated by the model family's own rules.",
    ]
    if not sensitive_columns:
        lines.append(
            "- No columns were declared sensitive (evaluation.sensitive_columns), so no fairness "
            "disparity was measured."
        )
    lines += [
        "",
        "## Lineage",
        "",
        f"- Code version: `{lineage_doc['code_version']}`",
        f"- Packages: {', '.join(f'{k} {v}' for k, v in lineage_doc['packages'].items())}",
        f"- Created: {lineage_doc['created_at']}",
        "",
    ]
    return "\n".join(lines)


# --- glue: one run into the registry --------------------------------------------------

REFERENCE_ROWS = 10_000
# Concurrent runs taking the version number this one proposed; far beyond any real race.
_MAX_VERSION_ATTEMPTS = 20


def _non_finite(obj: Any, path: str = "") -> list[str]:
    """Where ``obj`` holds NaN or infinity (JSON has no such numbers)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path or "(the value)"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list | tuple):
        return [p for i, v in enumerate(obj) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def _json_doc(model_name: str, name: str, obj: Any) -> bytes:
    bad = _non_finite(obj)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise RegisterError(
            f"cannot register {model_name}: {name} would hold NaN or infinity at "
            f"{', '.join(bad[:5])}{more}; an undefined value must be null. Nothing was registered."
        )
    return json.dumps(obj, indent=2, default=str, allow_nan=False).encode()


def reference_sample(train_df: Any, schema: Schema, *, rows: int = REFERENCE_ROWS, seed: int = 0) -> bytes:
    """A sample of the training split (features and target) as Parquet bytes: the
    reference the monitoring pipeline compares live traffic with (the register step
    draws the same rows from the file: ``register_data.reference_rows``)."""
    from kubeloop.components.register_data import parquet_bytes

    cols = [c for c in feature_columns(schema) + [schema["target"]] if c in train_df.columns]
    sample = train_df[cols]
    if len(sample) > rows:
        sample = sample.sample(n=rows, random_state=seed)
    return parquet_bytes(sample)


def register_run(
    registry: Any,
    *,
    model_name: str,
    model_dir: str,
    schema: Schema,
    evaluation: dict[str, Any],
    decision: dict[str, Any],
    lineage_doc: dict[str, Any],
    reports: dict[str, str],
    reference: bytes | None,
    sensitive_columns: list[str],
    deploy: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Store the run as a new version; move ``production`` if the gate promoted.

    With ``deploy``, a promoted version does not move ``production`` here: the
    deploy step that follows moves ``canary`` (or ``production`` for a first
    deployment), so the registry's aliases follow the traffic.
    Returns the run summary ``kubeloop run --json`` prints.
    """
    from kubeloop.registry import AliasConflict, VersionTaken

    model_path = os.path.join(model_dir, "model.joblib")
    sha = sha256_file(model_path)
    with open(os.path.join(model_dir, "candidate.json")) as f:
        candidate = json.load(f)
    dumps = lambda name, obj: _json_doc(model_name, name, obj)  # noqa: E731
    files: dict[str, Any] = {
        "model/model.joblib": model_path,
        "schema.json": dumps("schema.json", schema),
        "evaluation.json": dumps("evaluation.json", evaluation),
        "metrics.json": dumps("metrics.json", evaluation["metrics"]),
        "gate.json": dumps("gate.json", decision),
        "lineage.json": dumps("lineage.json", lineage_doc),
        "candidate.json": dumps("candidate.json", candidate),
    }
    for name, path in reports.items():
        files[f"reports/{name}.md"] = path
    files.update(extra_files or {})
    if reference is not None:
        files["monitoring/reference.parquet"] = reference
    metadata = {
        "task": schema["task"],
        "family": candidate.get("family"),
        "metrics": evaluation["metrics"],
        "gate": {"decision": decision["decision"], "reason": decision["reason"]},
        "data_sha256": lineage_doc["data"].get("sha256"),
        "code_version": lineage_doc.get("code_version"),
    }
    # The model card names its version, so the number is claimed exactly: if a
    # concurrent run takes it first, the card is written again for the next one.
    for _ in range(_MAX_VERSION_ATTEMPTS):
        version = registry.next_version(model_name)
        # Only model/ reaches a serving pod, so it names its own version.
        files["model/kubeloop.json"] = dumps(
            "model/kubeloop.json",
            predictor_metadata(schema, model_name=model_name, sha256=sha, version=version),
        )
        files["model_card.md"] = model_card(
            model_name=model_name, version=version, schema=schema, evaluation=evaluation, gate=decision,
            lineage_doc=lineage_doc, sensitive_columns=sensitive_columns,
        ).encode()
        try:
            info = registry.register(model_name, files, version=version, metadata=metadata, exact=True)
            break
        except VersionTaken:
            continue
    else:
        raise RegisterError(
            f"cannot register {model_name}: other runs kept taking the next version number "
            f"({_MAX_VERSION_ATTEMPTS} attempts)"
        )
    champion = evaluation.get("champion_version")
    if decision["decision"] == "promote" and not deploy:
        # Compare-and-swap against the champion the gate compared with: if another
        # run promoted meanwhile, this one must not replace a model it never beat.
        try:
            registry.set_alias(model_name, "production", info.version, expected_version=champion,
                               reason=f"gate: {decision['reason']}")
        except AliasConflict:
            now = registry.get_alias(model_name, "production")
            raise AliasConflict(
                f"{model_name} {info.version} is registered, but production was not moved to it: "
                f"the gate compared it with {champion or 'no production model'}, and production "
                f"now points at {now or 'nothing'} (another run moved it meanwhile); run again "
                f"to gate against {now or 'the current state'}"
            ) from None
    production = registry.get_alias(model_name, "production")
    uri = lambda rel: registry.file_uri(model_name, info.version, rel)  # noqa: E731
    return {
        "model": model_name,
        "version": info.version,
        "task": schema["task"],
        "family": candidate.get("family"),
        # A model that learnt nothing, or whose fit warned, is said so in the summary.
        "training_notes": _training_notes(candidate),
        # How many rows the model trained on and whether more would likely help.
        "training_sample": _sample_text(candidate),
        "learning_curve": candidate.get("learning_curve"),
        "metrics": evaluation["metrics"],
        "baseline_metrics": evaluation.get("baseline_metrics"),
        "champion_metrics": evaluation.get("champion_metrics"),
        "champion_version": champion,
        # The decision with the evidence it rests on: the paired estimate of the
        # improvement on the primary metric, its interval, and the rows compared.
        "gate": {k: decision.get(k) for k in (
            "decision", "reason", "primary_metric", "compared_with", "estimate", "low", "high",
            "confidence", "n_rows", "champion_version", "notes")},
        "promoted": decision["decision"] == "promote",
        "deploy": "pending" if deploy and decision["decision"] == "promote" else None,
        "production_version": production,
        "sha256": sha,
        "artifacts": {
            "model": registry.model_uri(model_name, info.version),
            # What a KServe InferenceService's storageUri takes (trailing "/").
            "serving_uri": registry.serving_uri(model_name, info.version),
            "model_card": uri("model_card.md"),
            "evaluation": uri("evaluation.json"),
            "schema": uri("schema.json"),
            "lineage": uri("lineage.json"),
            **{f"{name}_report": uri(f"reports/{name}.md") for name in reports},
        },
    }



# --- the step: lineage, reference sample, registration ---------------------------------


@dataclass
class RunArtifacts:
    """Where the earlier steps left what the register step stores (local paths)."""

    model_dir: str
    schema: str
    evaluation: str
    decision: str
    profile: str
    split_summary: str
    train: str
    reports: dict[str, str]
    valid: str | None = None
    test: str | None = None


def undeployed_note(summary: dict[str, Any], *, on_cluster: bool) -> str | None:
    """What a run on a cluster with deploy off must say when its gate promoted: the
    registry now names a version KServe does not serve."""
    if not (on_cluster and summary.get("promoted") and not summary.get("deploy")):
        return None
    return (f"NOTHING WAS DEPLOYED (deploy is off): production is {summary['version']} in the registry "
            f"while KServe still serves the previous version, until `kubeloop deploy "
            f"{summary['model']}@{summary['version']}` (or run with deploy on)")


def register_step(
    art: RunArtifacts, cfg: Config, *, data_uri: str, run_id: str | None = None,
    registry: Any = None, deploy: bool = False,
) -> dict[str, Any]:
    """Store the run in ``cfg.registry`` (or ``registry``) with its lineage; the summary.

    The splits are read from their files in batches and samples
    (``register_data``), never whole."""
    from kubeloop.components.register_data import parquet_bytes, reference_rows
    from kubeloop.registry import Registry

    def load(path: str) -> Any:
        with open(path) as f:
            return json.load(f)

    sch = load(art.schema)
    evaluation = load(art.evaluation)
    lin = lineage(
        data_uri=data_uri, profile=load(art.profile), config=cfg.to_params(),
        candidate=load(os.path.join(art.model_dir, "candidate.json")),
        split_summary=load(art.split_summary), run_id=run_id or None,
    )
    return register_run(
        registry or Registry(cfg.registry, cfg.storage),
        model_name=cfg.model_name, model_dir=art.model_dir, schema=sch,
        evaluation=evaluation, decision=load(art.decision), lineage_doc=lin,
        reports=art.reports, reference=parquet_bytes(reference_rows(art.train, sch, rows=REFERENCE_ROWS)),
        sensitive_columns=cfg.evaluation.sensitive_columns, deploy=deploy,
        extra_files=_monitoring_and_row_files(art, cfg, sch, evaluation),
    )


def _monitoring_and_row_files(
    art: RunArtifacts, cfg: Config, schema: Schema, evaluation: dict[str, Any],
) -> dict[str, bytes]:
    """What later runs read instead of the training data: the fingerprints of every row
    the model trained or validated on (the gate leaves them out when this version is
    the champion), and the reference profile monitoring compares traffic with."""
    import joblib

    from kubeloop.components.register_data import scored_rows, split_fingerprints, training_sketch
    from kubeloop.fingerprints import REGISTRY_FILE
    from kubeloop.monitoring.profile import registration_profile

    fingerprints = split_fingerprints([p for p in (art.train, art.valid) if p], schema, cfg)
    model = joblib.load(os.path.join(art.model_dir, "model.joblib"))
    scored = scored_rows(art.test, art.train, max_rows=cfg.scale.sample_rows)
    profile = registration_profile(None, schema, model=model, test_df=scored,
                                   metrics=evaluation.get("metrics"), cfg=cfg.monitoring,
                                   sketch=training_sketch(art.train, schema, cfg))
    return {
        REGISTRY_FILE: fingerprints,
        "monitoring/profile.json": _json_doc(cfg.model_name, "monitoring/profile.json", profile),
    }


# --- KFP adapter -------------------------------------------------------------------

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model  # noqa: E402

from kubeloop.component import component  # noqa: E402


@component
def register_op(
    model: Input[Model],
    schema: Input[Artifact],
    evaluation: Input[Artifact],
    decision: Input[Artifact],
    profile: Input[Artifact],
    split_summary: Input[Artifact],
    train: Input[Dataset],
    valid: Input[Dataset],
    test: Input[Dataset],
    validation_report: Input[Markdown],
    evaluation_report: Input[Markdown],
    gate_report: Input[Markdown],
    leaderboard: Input[Markdown],
    data_uri: str,
    config: dict,
    run_id: str,
    deploy: bool = False,
    on_cluster: bool = False,
) -> NamedTuple("Registered", summary=str, version=str):  # noqa: F821
    """Register the run as an immutable version; move production if the gate promoted
    (with ``deploy``, the deploy step moves the aliases as the traffic moves)."""
    import json
    from collections import namedtuple

    from kubeloop.components.register import RunArtifacts, register_step, undeployed_note
    from kubeloop.config import Config
    from kubeloop.progress import stage

    with stage("register") as st:
        cfg = Config.from_dict(config)
        art = RunArtifacts(
            model_dir=model.path, schema=schema.path, evaluation=evaluation.path,
            decision=decision.path, profile=profile.path, split_summary=split_summary.path,
            train=train.path, valid=valid.path, test=test.path,
            reports={"validation": validation_report.path, "evaluation": evaluation_report.path,
                     "gate": gate_report.path, "leaderboard": leaderboard.path},
        )
        summary = register_step(art, cfg, data_uri=data_uri, run_id=run_id, deploy=deploy)
        moved = "production -> " + summary["version"] if summary["promoted"] else "production unchanged"
        if summary["deploy"]:
            moved = "the deploy step moves the aliases"
        note = undeployed_note(summary, on_cluster=on_cluster)
        if note:
            summary["deploy"] = "off"
            moved += f"; {note}"
        st.result = f"{cfg.model_name} {summary['version']} registered; {moved}"
    return namedtuple("Registered", "summary version")(json.dumps(summary, allow_nan=False), summary["version"])
