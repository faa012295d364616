"""``kubeloop drift``: which columns of the current data drifted from the reference."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kubeloop.errors import UserError


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "drift",
        help="compare current data with a reference (data or a registered model's profile)",
        description=(
            "Drift of every column of CURRENT against REFERENCE. Each is a CSV or Parquet "
            "file or a prefix of them (local or s3://), a profile .json file, or "
            "model:NAME[@VERSION|@ALIAS] (a registered version's profile; alias default "
            "production). A column drifts when an effect size (PSI, normalised Wasserstein, "
            "KS statistic; PSI, Jensen-Shannon, unseen categories; missing-rate change) "
            "reaches its threshold (plus the sampling noise of samples that size) in the config's "
            "monitoring: section and its test rejects "
            "after a Benjamini-Hochberg correction over all of the run's tests at "
            "monitoring.false_alarm_rate. Between two data files the KS statistic is scipy's "
            "on all the values while they fit in memory (else the report states its bound). "
            "Exit 0 whether or not anything drifted."
        ),
    )
    p.add_argument("--reference", required=True, help="data URI, profile .json, or model:NAME[@VERSION|@ALIAS]")
    p.add_argument("--current", required=True, help="data URI (file or prefix), profile .json, or model:...")
    p.add_argument("--registry", help="registry URI for model: references (default: $KUBELOOP_REGISTRY, else the config's)")
    p.add_argument("--report", help="also write the HTML report to this path")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common(p)
    p.set_defaults(func=cmd_drift)


def _config(args: argparse.Namespace) -> Any:
    from kubeloop.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if args.s3_endpoint:
        cfg.storage.endpoint_url = args.s3_endpoint
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    return cfg


def cmd_drift(args: argparse.Namespace) -> int:
    from kubeloop.monitoring.drift import drift

    cfg = _config(args)
    registry = args.registry or os.environ.get("KUBELOOP_REGISTRY") or cfg.registry
    report = drift(args.reference, args.current, cfg, registry=registry)
    if args.report:
        from kubeloop.monitoring.report import drift_html
        from kubeloop.storage import write_bytes

        write_bytes(args.report, drift_html(report).encode(), cfg.storage)
        print(f"report: {args.report}", file=sys.stderr)
    if args.json:
        print(summary_text(report), file=sys.stderr)
        print(json.dumps(report, allow_nan=False))
    else:
        print(summary_text(report))
    return 0


def summary_text(report: dict[str, Any]) -> str:
    lines = [f"{'column':<28} {'kind':<12} {'drift':<6} scores"]
    for name, r in report["columns"].items():
        if r.get("absent"):
            scores = "absent from the current data"
        elif r["kind"] == "numeric":
            scores = _scores(r, ("ks_statistic", "psi", "wasserstein_norm"))
        else:
            scores = _scores(r, ("jensen_shannon", "psi", "unseen_rate"))
        lines.append(f"{name:<28} {r['kind']:<12} {'YES' if r['drifted'] else 'no':<6} {scores}")
    if report.get("prediction"):
        r = report["prediction"]
        lines.append(f"{'(prediction)':<28} {r['kind']:<12} {'YES' if r['drifted'] else 'no':<6}")
    for name, why in (report.get("skipped") or {}).items():
        lines.append(f"{name:<28} {'skipped':<12} {'-':<6} {why}")
    lines.append("")
    approx = {name: r["ks_error_bound"] for name, r in report["columns"].items()
              if r.get("ks_method") not in (None, "exact") and r.get("ks_error_bound")}
    if approx:
        # Too many values to keep and sort: the KS statistic is a sketch's, within this bound.
        worst = max(approx.values())
        sampled = any(report["columns"][c].get("ks_method") == "sample" for c in approx)
        how = "a uniform sample of the reference" if sampled else "the reference's quantile points"
        lines.append(f"KS within {worst:.2g} of its exact value (against {how}) for "
                     f"{len(approx)} column(s): {', '.join(sorted(approx))}")
    n = report["n_columns"]
    lines.append(f"{len(report['drifted_columns'])} of {n} columns drifted: {', '.join(report['drifted_columns']) or 'none'}")
    return "\n".join(lines)


def _scores(r: dict[str, Any], names: tuple[str, ...]) -> str:
    parts = []
    for k in names:
        v = r.get(k)
        parts.append(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}=-")
    return " ".join(parts)
