"""``kubeloop profile``: the mergeable statistics of a table, on one pod or fanned out."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kubeloop.errors import UserError


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="profile a table (counts, moments, quantile points, categories), fanned out by partition",
        description=(
            "The profile of every numeric and categorical column of DATA (a CSV or Parquet file "
            "or a prefix of them, local or s3://), as monitoring stores it. With more rows than "
            "scale.partition_rows (or --partition-rows), it runs the profiling pipeline through "
            "the KFP local runner as one step per partition and a merge step; the statistics "
            "equal one step's within the sketches' stated error (counts and moments exactly)."
        ),
    )
    p.add_argument("--data", required=True, help="data URI (file or prefix)")
    p.add_argument("--partition-rows", type=int, help="rows per partition (default: the config's scale.partition_rows)")
    p.add_argument("--output", help="also write the profile JSON to this path (local or s3://)")
    p.add_argument("--in-process", action="store_true",
                   help="run the same partition and merge functions in this process, without the KFP runner")
    p.add_argument("--work-dir", default=".kubeloop", help="where local pipeline runs and logs go (default: .kubeloop)")
    p.add_argument("--json", action="store_true", help="print the profile as one JSON object on stdout")
    common(p)
    p.set_defaults(func=cmd_profile)


def _config(args: argparse.Namespace) -> Any:
    # The config file and --s3-endpoint as drift reads them, then --partition-rows.
    from kubeloop.commands.drift import _config as file_config
    from kubeloop.config import Config, ConfigError

    cfg = file_config(args)
    if args.partition_rows is None:
        return cfg
    try:
        return Config.from_dict({**cfg.to_dict(), "scale": {**cfg.scale.model_dump(),
                                                            "partition_rows": args.partition_rows}})
    except ConfigError as exc:
        raise UserError(f"--partition-rows: {exc}") from None


def cmd_profile(args: argparse.Namespace) -> int:
    cfg = _config(args)
    data = args.data if "://" in args.data else os.path.abspath(args.data)
    if args.in_process:
        from kubeloop.components.partitions import profile_data

        profile, _ = profile_data(data, cfg, storage=cfg.storage)
    else:
        profile = _run_pipeline(data, cfg, args.work_dir)
    if args.output:
        from kubeloop.monitoring.profile import dumps
        from kubeloop.storage import write_bytes

        write_bytes(args.output, dumps(profile), cfg.storage)
        print(f"profile: {args.output}", file=sys.stderr)
    if args.json:
        print(json.dumps(profile, allow_nan=False))
    else:
        print(summary_text(profile))
    return 0


def _run_pipeline(data: str, cfg: Any, work_dir: str) -> dict[str, Any]:
    from kubeloop.components.partitions import PROFILE_FILE
    from kubeloop.local_run import PipelineFailed, run_pipeline
    from kubeloop.pipelines.profiling import build_profiling_pipeline
    from kubeloop.progress import format_line

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "progress":
            print(format_line(payload), file=sys.stderr)

    try:
        run = run_pipeline(build_profiling_pipeline(cfg), {"data_uri": data, "config": cfg.to_params()},
                           work_dir=work_dir, on_event=on_event)
    except PipelineFailed as exc:
        raise UserError("; ".join(f"{e['stage']}: {e['message']}" for e in exc.errors) or str(exc)) from None
    return json.loads(Path(run.outputs.path, PROFILE_FILE).read_text())


def summary_text(profile: dict[str, Any]) -> str:
    lines = [f"{profile.get('rows_total', profile['n_rows'])} rows", f"{'column':<28} {'kind':<12} summary"]
    for name, e in profile["columns"].items():
        missing = f"missing {e['missing_rate']:.2%}"
        if e["kind"] == "numeric":
            if e.get("mean") is None:
                text = f"no values; {missing}"
            else:
                how = f"points from a {e['sample']}-row sample, rank error {e['rank_error']:.2g}" if e.get("sample") else "every value"
                text = f"min {e['min']:.6g} max {e['max']:.6g} mean {e['mean']:.6g} std {e['std']:.6g}; {missing}; {how}"
        else:
            top = ", ".join(f"{k} {v}" for k, v in list(e["counts"].items())[:3])
            err = f"; counts within {e['count_error']}" if e.get("count_error") else ""
            text = f"{e['levels']} levels ({top}); {missing}{err}"
        lines.append(f"{name:<28} {e['kind']:<12} {text}")
    return "\n".join(lines)
