"""``kubeloop schedule training|monitoring``: a recurring run on a KFP endpoint.

    kubeloop schedule monitoring --cron "0 0 6 * * *" --host http://localhost:8080 --model-name churn \
        --target churned --logs s3://logs/predictions --data s3://data/churn-latest.parquet --deploy

KFP's cron has six fields, seconds first (robfig/cron):
``SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK``. A five-field Unix
cron line would be read one field off, so an expression that is not six valid
fields is refused here, before anything is sent.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

from kubeloop.commands.submit import (
    PIPELINES,
    add_pipeline_flags,
    build_arguments,
    cluster_config,
    compile_package,
    emit,
    parse_params,
    run_values,
)
from kubeloop.errors import UserError


def _warn(msg: str) -> None:
    import sys

    print(f"kubeloop schedule: note: {msg}", file=sys.stderr, flush=True)

CRON_HELP = (
    "KFP's cron has SIX fields, seconds first: SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK "
    "(e.g. '0 0 * * * *' hourly, '0 30 2 * * *' daily at 02:30, '0 0 6 * * MON' Mondays at 06:00)"
)

# (name, lowest, highest, names usable instead of numbers)
_FIELDS = (
    ("seconds", 0, 59, {}),
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}),
)
_TERM = re.compile(r"^(?:(\*|\?)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?$")


def validate_cron(expression: str) -> str:
    """The expression, normalised to single spaces, if it is six valid KFP cron fields;
    otherwise a UserError naming the field that is wrong."""
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        hint = ""
        if len(fields) == 5:
            hint = f" (a five-field Unix cron? add seconds first: '0 {' '.join(fields)}')"
        raise UserError(f"--cron {expression!r} has {len(fields)} fields{hint}. {CRON_HELP}")
    for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for term in text.split(","):
            problem = _term_problem(term, low, high, names, name)
            if problem:
                raise UserError(f"--cron {expression!r}: {name} field {text!r}: {problem}. {CRON_HELP}")
    return " ".join(fields)


def _term_problem(term: str, low: int, high: int, names: dict[str, int], field: str) -> str | None:
    m = _TERM.match(term)
    if not m:
        return f"{term!r} is not a value, range, list or step"
    star, start, end, step = m.groups()
    if star == "?" and field not in ("day of month", "day of week"):
        return "'?' is allowed only in the day fields"
    if step is not None and int(step) == 0:
        return "a step of 0"
    if star:
        return None
    values = []
    for raw in (start, end):
        if raw is None:
            continue
        value = names.get(raw.upper()) if not raw.isdigit() else int(raw)
        if value is None:
            return f"{raw!r} is not a number" + (f" or one of {', '.join(names)}" if names else "")
        if not low <= value <= high:
            return f"{value} is outside {low}-{high}"
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        return f"range {start}-{end} runs backwards"
    return None


def register(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "schedule", help="create a recurring run (training or monitoring) on a KFP endpoint",
        description="Compile a pipeline with the configured image and create a recurring run of it on "
                    f"a Kubeflow Pipelines (v2) endpoint. {CRON_HELP}.",
    )
    p.add_argument("pipeline", choices=PIPELINES, help="which pipeline to run on the schedule")
    p.add_argument("--cron", required=True, metavar="EXPR", help=CRON_HELP)
    add_pipeline_flags(p, data_required=False)
    p.add_argument("--logs", metavar="URI",
                   help="monitoring: the prediction-log root the predictor writes to (s3://, required)")
    p.add_argument("--labels", metavar="URI", help="monitoring: ground-truth labels, a file or prefix (s3://)")
    p.add_argument("--window-hours", type=float, metavar="N",
                   help="monitoring: only log rows of the last N hours (default: monitoring.drift_window_hours)")
    p.add_argument("--deploy", action="store_true",
                   help="a promoted version goes out on KServe (a retrain as a canary; only its promotion "
                        "moves production)")
    p.add_argument("--name", help="name of the recurring run (default: MODEL PIPELINE)")
    p.add_argument("--max-concurrency", type=int, default=1,
                   help="runs of this schedule allowed at once (default: 1)")
    p.add_argument("--catch-up", action="store_true",
                   help="after a pause, start every missed run (default: only the latest)")
    common(p)
    p.set_defaults(func=cmd_schedule)


def cmd_schedule(args: argparse.Namespace) -> int:
    from kubeloop.kfp_client import Endpoint, normalize_host

    cron = validate_cron(args.cron)
    if not 1 <= args.max_concurrency <= 10:
        raise UserError(f"--max-concurrency {args.max_concurrency}: choose 1 to 10")
    host = normalize_host(args.host)
    cfg = cluster_config(args)
    if args.pipeline == "training":
        if not args.data:
            raise UserError("kubeloop schedule training needs --data (an s3:// URI the cluster can read)")
        for flag, value in (("--logs", args.logs), ("--labels", args.labels), ("--window-hours", args.window_hours)):
            if value is not None:
                raise UserError(f"{flag} is for `kubeloop schedule monitoring`; the training pipeline takes no logs")
    else:
        if not args.logs:
            raise UserError("kubeloop schedule monitoring needs --logs: the prediction-log root the predictor "
                            "writes to (canary.log_uri), e.g. s3://logs/predictions")
        if not args.data:
            _warn("without --data the scheduled runs report drift and decay but never retrain "
                  "(the retraining policy holds back with no fresh training data)")
    if (args.pipeline == "training" or args.data) and not cfg.target:
        # Found now, not when a retrain finally triggers weeks later.
        raise UserError("--target is required to retrain (or target: in the --config file)")
    values = run_values(cfg, args, args.pipeline)
    extra = parse_params(args.param)
    image = args.image or cfg.image
    name = args.name or f"{cfg.model_name} {args.pipeline}"
    with tempfile.TemporaryDirectory(prefix="kubeloop-schedule-") as tmp:
        package, spec = compile_package(args.pipeline, cfg, image, Path(tmp))
        arguments = build_arguments(spec, values, extra)
        endpoint = Endpoint.connect(host, namespace=args.namespace)
        experiment_id = endpoint.experiment_id(args.experiment, args.namespace)
        job = endpoint.create_recurring_run(
            str(package), arguments=arguments, name=name, experiment_id=experiment_id, cron=cron,
            service_account=args.service_account or None, max_concurrency=args.max_concurrency,
            catch_up=args.catch_up,
        )
    result = {
        "pipeline": args.pipeline, "host": endpoint.host, "experiment": args.experiment,
        "experiment_id": experiment_id, "name": name, "cron": cron, **job, "image": image,
        "service_account": args.service_account or None, "max_concurrency": args.max_concurrency,
        "catch_up": args.catch_up,
        "arguments": {k: v for k, v in arguments.items() if k not in ("config", "families")},
    }
    emit(result, args.json, job["recurring_run_url"])
    return 0
