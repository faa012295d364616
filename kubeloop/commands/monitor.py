"""``kubeloop monitor``: run the monitoring pipeline locally through the KFP local runner."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kubeloop.errors import UserError


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "monitor",
        help="run the monitoring pipeline locally (drift, decay, retrain when needed)",
        description=(
            "Compare the production version's prediction logs (and labels) with the profile "
            "stored at training time, write the report, and when the retraining policy says "
            "so run the training pipeline on --retrain-data, whose gate decides whether the "
            "challenger replaces production. The training settings (target, task, ...) come "
            "from the production version unless --config gives them."
        ),
    )
    p.add_argument("--model", required=True, help="registry name of the model")
    p.add_argument("--logs", required=True, help="prediction-log root or the model's log folder (local or s3://)")
    p.add_argument("--labels", default="", help="ground-truth labels: Parquet/CSV file or prefix (request_id,row,label,labeled_at)")
    p.add_argument("--registry", help="registry URI (default: $KUBELOOP_REGISTRY, else the config's)")
    p.add_argument("--retrain-data", default="", help="fresh training data (CSV/Parquet) for the retraining branch")
    p.add_argument("--window-hours", type=float, default=0.0,
                   help="drift: only logs of the last N hours (default: monitoring.drift_window_hours, a week)")
    p.add_argument("--deploy", action="store_true",
                   help="a retrain the gate promotes goes out on KServe as a canary (through the current "
                        "kubeconfig context); only the canary's promotion moves production")
    p.add_argument("--report-dir", help="where the report goes (default: <work-dir>/monitoring/<model>-<time>/)")
    p.add_argument("--work-dir", default=".kubeloop", help="where local pipeline runs and logs go (default: .kubeloop)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    common(p)
    p.set_defaults(func=cmd_monitor)


def _abs(uri: str) -> str:
    return uri if not uri or "://" in uri else str(Path(uri).resolve())


def monitoring_config(args: argparse.Namespace, registry: str) -> Any:
    """The user's config, with the training settings of the production version filled in."""
    from kubeloop.config import Config, ConfigError, load_config
    from kubeloop.registry import Registry

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if args.s3_endpoint:
        cfg.storage.endpoint_url = args.s3_endpoint
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    reg = Registry(registry, cfg.storage)
    try:
        trained = reg.read_json(args.model, "production", "lineage.json").get("config") or {}
    except UserError as exc:
        raise UserError(f"{args.model}: cannot read the production version from {registry}: {exc}") from None
    base = Config.from_dict(trained).to_dict() if trained else {}
    mine = cfg.to_dict()
    explicit = set((load_raw(args.config) or {}).keys())
    merged = {**base, **{k: v for k, v in mine.items() if k in explicit}}
    merged.update(model_name=args.model, registry=registry)
    try:
        return Config.from_dict(merged)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def load_raw(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    import yaml

    return yaml.safe_load(Path(path).read_text()) or {}


def cmd_monitor(args: argparse.Namespace) -> int:
    registry = _abs(args.registry or os.environ.get("KUBELOOP_REGISTRY") or "registry")
    if "://" not in registry and not Path(registry).is_dir():
        raise UserError(f"no registry at {registry} (give --registry or set $KUBELOOP_REGISTRY)")
    cfg = monitoring_config(args, registry)
    logs, labels, fresh = _abs(args.logs), _abs(args.labels), _abs(args.retrain_data)
    for what, uri in (("--logs", logs), ("--labels", labels), ("--retrain-data", fresh)):
        if uri and "://" not in uri and not Path(uri).exists():
            raise UserError(f"{what}: {uri} does not exist")
    report_dir = _abs(args.report_dir or str(Path(args.work_dir) / "monitoring" / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"))

    from kubeloop.local_run import PipelineFailed, run_pipeline
    from kubeloop.pipelines.monitoring import build_monitoring_pipeline
    from kubeloop.pipelines.training import run_config
    from kubeloop.progress import format_line

    print(f"kubeloop monitor: {args.model} in {registry}, logs {logs}", file=sys.stderr)
    pipeline = build_monitoring_pipeline(cfg, parallelism=1)
    stages: list[dict[str, Any]] = []

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "progress":
            stages.append(payload)
            print(format_line(payload), file=sys.stderr)

    try:
        run = run_pipeline(
            pipeline,
            {"logs_uri": logs, "registry": registry, "model_name": args.model, "labels_uri": labels,
             "retrain_data_uri": fresh, "window_hours": float(args.window_hours), "report_uri": report_dir,
             "target": cfg.target or "", "task": cfg.task or "", "time_column": cfg.time_column or "",
             "id_column": cfg.id_column or "", "config": run_config(cfg), "deploy": bool(args.deploy)},
            work_dir=args.work_dir,
            on_event=on_event,
        )
    except PipelineFailed as exc:
        for e in exc.errors or [{"stage": "pipeline", "message": str(exc)}]:
            print(f"error in {e['stage']}: {e['message']}", file=sys.stderr)
        print(f"(full log: {exc.log_path})", file=sys.stderr)
        return 3 if any(e.get("error") == "AliasConflict" for e in exc.errors) else (2 if exc.errors else 1)

    monitor = next((s for s in stages if s["stage"] == "monitor"), {})
    verdict = monitor.get("verdict") or {}
    register = next((s for s in stages if s["stage"] == "register"), None)
    summary = {
        "model": args.model,
        "version": verdict.get("version"),
        "retrain": bool(verdict.get("retrain")),
        "retrained": register is not None,
        "training": {"stages": [s["stage"] for s in stages if s["stage"] != "monitor"],
                     "result": register.get("result") if register else None},
        "verdict": verdict,
        "report": str(Path(report_dir) / "report.html") if "://" not in report_dir else f"{report_dir}/report.html",
        "seconds": round(run.seconds, 1),
    }
    text = _text(summary)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(summary, allow_nan=False))
    else:
        print(text)
    return 0


def _text(s: dict[str, Any]) -> str:
    v = s["verdict"]
    lines = [
        "",
        f"model      {s['model']} {s.get('version') or ''}",
        f"drift      {', '.join(v.get('drifted_columns') or []) or 'none'}",
    ]
    if v.get("metric_value") is not None:
        lines.append(f"{v['metric']:<10} {v['metric_value']:.4f} live vs {v.get('metric_training') or float('nan'):.4f} at training "
                     f"({v.get('n_labeled')} labelled rows)")
    lines.append(f"decision   {'RETRAIN' if s['retrain'] else 'no retraining'}: {'; '.join(v.get('reasons') or []) or 'no trigger'}")
    if v.get("blocked_by"):
        lines.append(f"held back  {'; '.join(v['blocked_by'])}")
    for alert in v.get("alerts") or []:
        lines.append(f"ALERT      {alert}")
    if s["retrained"]:
        lines.append(f"retrained  {s['training']['result']}")
    lines += [f"report     {s['report']}", f"finished in {s['seconds']:.1f}s"]
    return "\n".join(lines)
