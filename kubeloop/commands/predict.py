"""``kubeloop predict``: score a CSV or Parquet dataset with a registered model, in batches."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kubeloop.errors import UserError


def cmd_predict(args: argparse.Namespace) -> int:
    from kubeloop.cli import _load_config, _registry
    from kubeloop.commands.serve import resolve, split_ref
    from kubeloop.components.predict import PredictError, predict_step
    from kubeloop.serving.loader import load_version

    name, ref = split_ref(args.model)
    cfg = _load_config(args)
    registry = _registry(args)
    version, uri = resolve(registry, name, ref)
    print(f"kubeloop predict: {name} {version} on {args.data}", file=sys.stderr, flush=True)
    loaded = load_version(uri, name=name, storage_cfg=cfg.storage)
    keep = [c.strip() for c in (args.keep_columns or "").split(",") if c.strip()]
    try:
        summary = predict_step(loaded, args.data, args.out, rejects_uri=args.rejects, keep_columns=keep,
                               batch_rows=args.batch_rows, storage_cfg=cfg.storage)
    except PredictError as exc:
        raise UserError(str(exc)) from None
    text = (f"{summary['scored']:,} of {summary['rows']:,} rows scored by {name} {version} -> {summary['out']}\n"
            f"{summary['rejected']:,} rejected -> {summary['rejects']}")
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(summary))
    else:
        print(text)
    return 0


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser("predict", help="score a dataset with a registered model (streaming batches)",
                       description="Score a CSV or Parquet file (local or s3://) with a registered model. "
                       "Rows that break the model's input contract go to a rejects file with their reasons.")
    p.add_argument("--model", required=True, help="NAME, NAME@VERSION or NAME@ALIAS (default alias: production)")
    p.add_argument("--data", required=True, help="CSV or Parquet file: local path or s3://bucket/key")
    p.add_argument("--out", required=True, help="predictions Parquet file: local path or s3://")
    p.add_argument("--rejects", help="rejected rows Parquet file (default: OUT with .rejects.parquet)")
    p.add_argument("--keep-columns", help="comma-separated input columns copied to the output (e.g. an id)")
    p.add_argument("--batch-rows", type=int, default=10_000, help="rows per batch; bounds memory (default 10000)")
    p.add_argument("--registry", help="registry URI (default: $KUBELOOP_REGISTRY or ./registry)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    common(p)
    p.set_defaults(func=cmd_predict)
